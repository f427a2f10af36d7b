//! Budget alerts, recorded: the consumer that fills the `alert_deliveries` outbox.
//!
//! It reads the global order with its own durable consumer and checkpoint, like every reactor, and
//! for every budget event worth telling someone about (`BudgetThresholdCrossed`,
//! `ServiceSuspended`, `ServiceReactivated`) inserts one row per configured channel, in the
//! transaction that moves its checkpoint. A batch applied again (a redelivery after a crash between
//! commit and acknowledgement, a checkpoint set back) inserts nothing twice: rows are unique on
//! (event id, channel). So each alert is recorded exactly once per channel, and nothing else
//! happens here: sending is the delivery loop's business, outside this transaction and outside any
//! command. It is a [`Reactor`], never rebuilt.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use devart_commands::Recorded;
use devart_domain::service::{Service, ServiceEvent};
use devart_domain::{Aggregate, Event};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{ApplyError, Reactor};

/// Where alerts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// A Telegram chat, through the Bot API.
    Telegram,
    /// An HTTP endpoint receiving each alert as a signed CloudEvent.
    Webhook,
}

impl Channel {
    /// Its name in `alert_deliveries.channel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Telegram => "telegram",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "telegram" => Some(Channel::Telegram),
            "webhook" => Some(Channel::Webhook),
            _ => None,
        }
    }
}

/// An alert as a structured-mode CloudEvent: the event that raised it, with what a reader needs
/// to understand it (the service's name and currency). What a webhook receives, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub specversion: String,
    /// The event's id: receivers deduplicate on it.
    pub id: Uuid,
    pub source: String,
    /// The event's CloudEvents type, `devart.BudgetThresholdCrossed.v1` and the like.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The service's stream, `service-<uuid>`.
    pub subject: String,
    pub time: DateTime<Utc>,
    /// The event's global position (decimal).
    pub position: String,
    pub datacontenttype: String,
    pub data: AlertData,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertData {
    pub service_id: Uuid,
    pub service_name: String,
    pub currency: String,
    #[serde(flatten)]
    pub kind: AlertKind,
}

/// What happened. Amounts are decimal strings (`"80.00"`), as everywhere money leaves devart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "alert", rename_all = "camelCase")]
pub enum AlertKind {
    /// Settled spend reached `threshold` percent of the budget in `period`.
    #[serde(rename_all = "camelCase")]
    ThresholdCrossed { threshold: u32, period: String, spent: String, budget: String },
    /// The budget is spent: requests go to the fallback, or are refused.
    #[serde(rename_all = "camelCase")]
    Suspended { period: String, spent: String, budget: String },
    /// Back after a suspension: a new month, or a budget increase.
    #[serde(rename_all = "camelCase")]
    Reactivated { reason: String },
}

impl AlertKind {
    /// The alert `event` raises, if any.
    pub fn of(event: &Event) -> Option<AlertKind> {
        match event {
            Event::Service(ServiceEvent::BudgetThresholdCrossed { threshold, period, spent, budget }) => {
                Some(AlertKind::ThresholdCrossed {
                    threshold: *threshold,
                    period: period.to_string(),
                    spent: spent.to_string(),
                    budget: budget.to_string(),
                })
            }
            Event::Service(ServiceEvent::Suspended { period, spent, budget }) => Some(AlertKind::Suspended {
                period: period.to_string(),
                spent: spent.to_string(),
                budget: budget.to_string(),
            }),
            Event::Service(ServiceEvent::Reactivated { reason }) => {
                Some(AlertKind::Reactivated { reason: reason.clone() })
            }
            _ => None,
        }
    }
}

impl Alert {
    /// The alert `recorded` raises, if any; `names` holds each service's (name, currency).
    pub fn of(recorded: &Recorded, names: &HashMap<Uuid, (String, String)>) -> Option<Alert> {
        let kind = AlertKind::of(&recorded.event)?;
        let meta = &recorded.meta;
        let service_id = meta.stream_id.id_of(Service::KIND)?;
        // Every append to a service's stream rewrites its snapshot in the same transaction, so the
        // snapshot exists for any sequenced event; the id stands in for a name only if it did not.
        let (service_name, currency) =
            names.get(&service_id).cloned().unwrap_or_else(|| (service_id.to_string(), String::new()));
        Some(Alert {
            specversion: "1.0".into(),
            id: meta.event_id,
            source: "/devart".into(),
            event_type: devart_commands::bus::ce_type(&meta.event_type, meta.schema_version),
            subject: meta.stream_id.as_str().to_owned(),
            time: meta.occurred_at,
            position: meta.position.map(|p| p.to_string()).unwrap_or_default(),
            datacontenttype: "application/json".into(),
            data: AlertData { service_id, service_name, currency, kind },
        })
    }
}

/// The alerts consumer: records each alert once per channel in `alert_deliveries`.
pub struct Alerts {
    channels: Vec<Channel>,
}

impl Alerts {
    pub const NAME: &'static str = "alerts";

    /// Records alerts for `channels`; with none, it only keeps its checkpoint up with the order,
    /// so that a channel configured later starts from then, not from the past.
    pub fn new(channels: Vec<Channel>) -> Alerts {
        Alerts { channels }
    }
}

/// A reactor, not a read model: the outbox is never rebuilt, since replaying it would send alerts
/// again.
impl Reactor for Alerts {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn react<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        async move { Ok(record(conn, &self.channels, events).await?) }.boxed()
    }
}

async fn record(conn: &mut PgConnection, channels: &[Channel], events: &[Recorded]) -> Result<(), sqlx::Error> {
    let raising: Vec<&Recorded> = events.iter().filter(|r| AlertKind::of(&r.event).is_some()).collect();
    if channels.is_empty() || raising.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<Uuid> = raising.iter().filter_map(|r| r.meta.stream_id.id_of(Service::KIND)).collect();
    ids.sort();
    ids.dedup();
    // The service as it is now: a service renamed since the event is named by its new name, the one
    // a reader would look for.
    let names: Vec<(Uuid, String, String)> = sqlx::query_as(
        "select service_id, state->>'name', state->>'currency' from service_budgets where service_id = any($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let names: HashMap<Uuid, (String, String)> =
        names.into_iter().map(|(id, name, currency)| (id, (name, currency))).collect();
    for recorded in raising {
        let Some(alert) = Alert::of(recorded, &names) else { continue };
        let position = recorded.meta.position.map_or(0, |p| p.0 as i64);
        for channel in channels {
            sqlx::query(
                "insert into alert_deliveries (event_id, channel, position, alert) values ($1, $2, $3, $4) \
                 on conflict (event_id, channel) do nothing",
            )
            .bind(alert.id)
            .bind(channel.as_str())
            .bind(position)
            .bind(Json(&alert))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use devart_domain::money::Money;
    use devart_domain::service::Period;
    use devart_domain::{Actor, EventMeta, Position, StreamId};

    #[test]
    fn an_alert_is_a_cloudevent_with_the_service_and_decimal_amounts() {
        let service = Uuid::from_u128(7);
        let money = |s| Money::parse("amount", s).unwrap();
        let recorded = Recorded {
            meta: EventMeta {
                event_id: Uuid::from_u128(1),
                stream_id: StreamId::new(Service::KIND, service),
                stream_version: 4,
                position: Some(Position(42)),
                event_type: "BudgetThresholdCrossed".into(),
                schema_version: 1,
                occurred_at: DateTime::parse_from_rfc3339("2026-11-05T10:00:00Z").unwrap().with_timezone(&Utc),
                actor: Actor::agent("a"),
                correlation_id: Uuid::from_u128(2),
                causation_id: None,
            },
            event: Event::Service(ServiceEvent::BudgetThresholdCrossed {
                threshold: 80,
                period: Period { year: 2026, month: 11 },
                spent: money("80.5"),
                budget: money("100"),
            }),
        };
        let names = HashMap::from([(service, ("gpt".to_owned(), "USD".to_owned()))]);
        let alert = Alert::of(&recorded, &names).unwrap();
        let json = serde_json::to_value(&alert).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "specversion": "1.0",
                "id": Uuid::from_u128(1),
                "source": "/devart",
                "type": "devart.BudgetThresholdCrossed.v1",
                "subject": format!("service-{service}"),
                "time": "2026-11-05T10:00:00Z",
                "position": "42",
                "datacontenttype": "application/json",
                "data": {
                    "serviceId": service,
                    "serviceName": "gpt",
                    "currency": "USD",
                    "alert": "thresholdCrossed",
                    "threshold": 80,
                    "period": "2026-11",
                    "spent": "80.50",
                    "budget": "100.00",
                },
            })
        );
        assert_eq!(serde_json::from_value::<Alert>(json).unwrap(), alert);
        let activated = Recorded {
            event: Event::Service(ServiceEvent::Activated),
            meta: EventMeta { event_type: "ServiceActivated".into(), ..recorded.meta.clone() },
        };
        assert_eq!(Alert::of(&activated, &names), None, "only budget alerts");
    }
}
