//! The broadcast: JetStream stream and subject names, and the CloudEvents NATS binding.
//!
//! Subject scheme, version 1 (see `nats/README.md`):
//! - `{prefix}.v1.events.{aggregate}.{EventType}`: every stored event, published once, in global
//!   order, into the stream `{PREFIX}_EVENTS_V1`, where stream sequence N carries position N.
//! - `{prefix}.v1.appended`: a core-NATS nudge after a commit, so a sequencer on another host wakes.
//! - `{prefix}.v1.readmodel.{projection}`: a core-NATS message after a projection committed a
//!   change, carrying the changed read-model rows (live subscriptions are fed from it).

use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use chrono::{DateTime, SecondsFormat, Utc};
use devart_domain::{Actor, ActorKind, EventMeta, Position, StreamId};
use uuid::Uuid;

use crate::codec;
use crate::store::Recorded;

/// The stream configuration, versioned beside the code.
const STREAM_V1: &str = include_str!("../../nats/streams/events-v1.json");
/// The durable consumer each projection reads through.
const PROJECTION_CONSUMER: &str = include_str!("../../nats/consumers/projection.json");

/// Names derived from a prefix (`devart` by default), so instances can share one NATS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusNames {
    prefix: String,
}

impl BusNames {
    pub fn new(prefix: &str) -> Result<BusNames, String> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(BusNames { prefix: prefix.to_owned() })
        } else {
            Err(format!("bus prefix `{prefix}` must be 1 to 32 of a-z, 0-9, _"))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn stream(&self) -> String {
        format!("{}_EVENTS_V1", self.prefix.to_ascii_uppercase())
    }

    pub fn events_wildcard(&self) -> String {
        format!("{}.v1.events.>", self.prefix)
    }

    pub fn event_subject(&self, aggregate: &str, event_type: &str) -> String {
        format!("{}.v1.events.{aggregate}.{event_type}", self.prefix)
    }

    pub fn appended(&self) -> String {
        format!("{}.v1.appended", self.prefix)
    }

    pub fn readmodel(&self, projection: &str) -> String {
        format!("{}.v1.readmodel.{projection}", self.prefix)
    }

    pub fn projection_consumer(&self, projection: &str) -> String {
        format!("{}_projection_{projection}", self.prefix)
    }

    pub fn stream_config(&self) -> stream::Config {
        let mut config: stream::Config = serde_json::from_str(STREAM_V1).expect("nats/streams/events-v1.json is valid");
        config.name = self.stream();
        config.subjects = vec![self.events_wildcard()];
        config
    }

    pub fn projection_consumer_config(&self, projection: &str) -> consumer::pull::Config {
        let mut config: consumer::pull::Config =
            serde_json::from_str(PROJECTION_CONSUMER).expect("nats/consumers/projection.json is valid");
        config.durable_name = Some(self.projection_consumer(projection));
        config.description = config.description.map(|d| d.replace("NAME", projection));
        config
    }
}

/// A connection to NATS with its JetStream context and names.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub names: BusNames,
}

impl Bus {
    /// Connects lazily: the returned bus works once NATS is reachable, and reconnects forever.
    pub async fn connect(url: &str, names: BusNames) -> Result<Bus, async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .name("devart")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(url)
            .await?;
        let jetstream = jetstream::new(client.clone());
        Ok(Bus { client, jetstream, names })
    }

    /// Creates or updates the event stream to the versioned configuration.
    pub async fn ensure_stream(&self) -> Result<stream::Stream, async_nats::Error> {
        let config = self.names.stream_config();
        match self.jetstream.get_stream(&config.name).await {
            Ok(_) => {
                self.jetstream.update_stream(&config).await?;
                Ok(self.jetstream.get_stream(&config.name).await?)
            }
            Err(_) => {
                // The server may refuse a create for a moment (its storage directory is removed as
                // the last other stream is deleted); a few short retries ride that out.
                let mut delay = std::time::Duration::from_millis(50);
                loop {
                    match self.jetstream.create_stream(config.clone()).await {
                        Ok(stream) => return Ok(stream),
                        Err(error) if delay < std::time::Duration::from_secs(1) => {
                            tracing::warn!(%error, "creating the JetStream stream: retrying");
                            tokio::time::sleep(delay).await;
                            delay *= 2;
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
            }
        }
    }

    /// Creates or updates a projection's durable consumer.
    ///
    /// A new consumer starts after `checkpoint`, the position its read model already reflects.
    pub async fn ensure_projection_consumer(
        &self,
        projection: &str,
        checkpoint: Position,
    ) -> Result<consumer::Consumer<consumer::pull::Config>, async_nats::Error> {
        let stream = self.ensure_stream().await?;
        let mut config = self.names.projection_consumer_config(projection);
        config.deliver_policy = consumer::DeliverPolicy::ByStartSequence { start_sequence: checkpoint.0 + 1 };
        let name = config.durable_name.clone().expect("projection consumers are durable");
        match stream.get_consumer::<consumer::pull::Config>(&name).await {
            Ok(existing) => {
                // Everything but the start policy may change on a running consumer.
                let mut update = config.clone();
                update.deliver_policy = existing.cached_info().config.deliver_policy;
                Ok(stream.update_consumer(update).await?)
            }
            Err(_) => Ok(stream.create_consumer(config).await?),
        }
    }

    /// Wakes sequencers on other hosts; best effort (they also poll).
    pub async fn nudge_appended(&self) {
        self.notify(self.names.appended(), bytes::Bytes::new()).await;
    }

    /// A fire-and-forget core-NATS message. Never waits on a NATS that is away: a command or a
    /// projection must not stall on a notification.
    pub async fn notify(&self, subject: String, payload: bytes::Bytes) {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        let publish = self.client.publish(subject, payload);
        let _ = tokio::time::timeout(std::time::Duration::from_millis(50), publish).await;
    }
}

pub const CE_TYPE_PREFIX: &str = "devart.";

/// The CloudEvents `type` of an event: `devart.TaskCreated.v1`.
pub fn ce_type(event_type: &str, schema_version: u16) -> String {
    format!("{CE_TYPE_PREFIX}{event_type}.v{schema_version}")
}

fn parse_ce_type(ce_type: &str) -> Option<(String, u16)> {
    let rest = ce_type.strip_prefix(CE_TYPE_PREFIX)?;
    let (event_type, version) = rest.rsplit_once(".v")?;
    Some((event_type.to_owned(), version.parse().ok()?))
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The CloudEvents binary-mode headers of an event (NATS protocol binding), plus `Nats-Msg-Id`.
pub fn headers(meta: &EventMeta) -> HeaderMap {
    let position = meta.position.expect("only sequenced events are broadcast");
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", meta.event_id.to_string().as_str());
    h.insert("ce-specversion", "1.0");
    h.insert("ce-id", meta.event_id.to_string().as_str());
    h.insert("ce-source", "/devart");
    h.insert("ce-type", ce_type(&meta.event_type, meta.schema_version).as_str());
    h.insert("ce-subject", meta.stream_id.as_str());
    h.insert("ce-time", time(meta.occurred_at).as_str());
    h.insert("content-type", "application/json");
    h.insert("ce-position", position.to_string().as_str());
    h.insert("ce-streamversion", meta.stream_version.to_string().as_str());
    h.insert("ce-actorkind", meta.actor.kind.as_str());
    h.insert("ce-actorid", meta.actor.id.as_str());
    h.insert("ce-correlationid", meta.correlation_id.to_string().as_str());
    if let Some(causation) = meta.causation_id {
        h.insert("ce-causationid", causation.to_string().as_str());
    }
    h
}

#[derive(Debug, thiserror::Error)]
#[error("not a devart event message: {0}")]
pub struct MessageError(String);

/// Reads a broadcast message back into an event (what every consumer does).
pub fn decode_message(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<Recorded, MessageError> {
    let headers = headers.ok_or_else(|| MessageError("no headers".into()))?;
    let get = |name: &str| {
        headers.get(name).map(|v| v.as_str().to_owned()).ok_or_else(|| MessageError(format!("missing header {name}")))
    };
    let uuid = |name: &str| {
        get(name).and_then(|v| Uuid::parse_str(&v).map_err(|_| MessageError(format!("{name} is not a uuid"))))
    };
    let (event_type, schema_version) =
        parse_ce_type(&get("ce-type")?).ok_or_else(|| MessageError("ce-type is not devart's".into()))?;
    let event = codec::from_json(&event_type, schema_version, payload).map_err(|e| MessageError(e.to_string()))?;
    let position: Position = get("ce-position")?.parse().map_err(MessageError)?;
    let meta = EventMeta {
        event_id: uuid("ce-id")?,
        stream_id: StreamId::parse(&get("ce-subject")?).map_err(MessageError)?,
        stream_version: get("ce-streamversion")?.parse().map_err(|_| MessageError("bad ce-streamversion".into()))?,
        position: Some(position),
        event_type,
        schema_version,
        occurred_at: DateTime::parse_from_rfc3339(&get("ce-time")?)
            .map_err(|_| MessageError("bad ce-time".into()))?
            .with_timezone(&Utc),
        actor: Actor {
            kind: ActorKind::parse(&get("ce-actorkind")?).ok_or_else(|| MessageError("bad ce-actorkind".into()))?,
            id: get("ce-actorid")?,
        },
        correlation_id: uuid("ce-correlationid")?,
        causation_id: headers
            .get("ce-causationid")
            .map(|v| Uuid::parse_str(v.as_str()).map_err(|_| MessageError("ce-causationid is not a uuid".into())))
            .transpose()?,
    };
    Ok(Recorded { meta, event })
}

/// An event as a structured-mode CloudEvent (JSON), the form of `events tail --json` and exports.
pub fn cloudevent_json(recorded: &Recorded) -> serde_json::Value {
    let m = &recorded.meta;
    serde_json::json!({
        "specversion": "1.0",
        "id": m.event_id,
        "source": "/devart",
        "type": ce_type(&m.event_type, m.schema_version),
        "subject": m.stream_id.as_str(),
        "time": time(m.occurred_at),
        "datacontenttype": "application/json",
        "position": m.position.map(|p| p.to_string()),
        "streamversion": m.stream_version,
        "actorkind": m.actor.kind.as_str(),
        "actorid": m.actor.id,
        "correlationid": m.correlation_id,
        "causationid": m.causation_id,
        "data": codec::to_json(&recorded.event),
    })
}

/// Reads a structured-mode CloudEvent (as [`cloudevent_json`] writes it) back into an event.
pub fn from_cloudevent_json(value: &serde_json::Value) -> Result<Recorded, MessageError> {
    let field = |name: &str| value.get(name).ok_or_else(|| MessageError(format!("missing `{name}`")));
    let text = |name: &str| {
        field(name)?.as_str().map(str::to_owned).ok_or_else(|| MessageError(format!("`{name}` is not a string")))
    };
    let uuid = |name: &str| {
        text(name).and_then(|v| Uuid::parse_str(&v).map_err(|_| MessageError(format!("`{name}` is not a uuid"))))
    };
    let (event_type, schema_version) =
        parse_ce_type(&text("type")?).ok_or_else(|| MessageError("`type` is not devart's".into()))?;
    let data = serde_json::to_vec(field("data")?).map_err(|e| MessageError(e.to_string()))?;
    let event = codec::from_json(&event_type, schema_version, &data).map_err(|e| MessageError(e.to_string()))?;
    let position = match value.get("position").and_then(|p| p.as_str()) {
        Some(p) => Some(p.parse::<Position>().map_err(MessageError)?),
        None => None,
    };
    let meta = EventMeta {
        event_id: uuid("id")?,
        stream_id: StreamId::parse(&text("subject")?).map_err(MessageError)?,
        stream_version: field("streamversion")?.as_u64().ok_or_else(|| MessageError("bad `streamversion`".into()))?,
        position,
        event_type,
        schema_version,
        occurred_at: DateTime::parse_from_rfc3339(&text("time")?)
            .map_err(|_| MessageError("bad `time`".into()))?
            .with_timezone(&Utc),
        actor: Actor {
            kind: ActorKind::parse(&text("actorkind")?).ok_or_else(|| MessageError("bad `actorkind`".into()))?,
            id: text("actorid")?,
        },
        correlation_id: uuid("correlationid")?,
        causation_id: match value.get("causationid") {
            None | Some(serde_json::Value::Null) => None,
            Some(_) => Some(uuid("causationid")?),
        },
    };
    Ok(Recorded { meta, event })
}
