//! The stored shape of a service's snapshot (`service_budgets.state`), apart from the domain's.
//!
//! The domain's `ServiceState` may change as the aggregate does; rows written before must still
//! read, and SQL reads some fields by name (`fallback_service_id` where an authorization walks
//! the fallback chain, `name` and `currency` for alerts). So the row has a layout of its own,
//! numbered by `version`, converted to and from the state explicitly, and a row that does not
//! read as its layout is an error naming the service, never a default state.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use devart_domain::money::Money;
use devart_domain::service::{Period, Reservation, ServiceState, ServiceStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::StoreError;

/// The layout `write` writes.
pub const VERSION: u32 = 1;

/// Layout 1: the fields of the state as they were first kept (amounts in millionths, the period
/// as year and month), plus `version`. Migration 0013 added `version` to the rows written before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateV1 {
    pub version: u32,
    pub id: Uuid,
    /// `ACTIVE`, `SUSPENDED`, `INACTIVE` (or `ABSENT`).
    pub status: ServiceStatus,
    pub name: String,
    pub currency: String,
    pub monthly_budget: Money,
    pub fallback_service_id: Option<Uuid>,
    pub unit_prices: BTreeMap<String, Money>,
    pub period: Period,
    pub spent: Money,
    pub reserved: Money,
    pub reservations: BTreeMap<Uuid, ReservationV1>,
    pub crossed: BTreeSet<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationV1 {
    pub amount: Money,
    pub expires_at: DateTime<Utc>,
    pub task_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
}

impl From<&ServiceState> for StateV1 {
    fn from(state: &ServiceState) -> Self {
        // Every field by name: a field the state gains does not compile until the layout has it.
        let ServiceState {
            id,
            status,
            name,
            currency,
            monthly_budget,
            fallback_service_id,
            unit_prices,
            period,
            spent,
            reserved,
            reservations,
            crossed,
        } = state.clone();
        StateV1 {
            version: VERSION,
            id,
            status,
            name,
            currency,
            monthly_budget,
            fallback_service_id,
            unit_prices,
            period,
            spent,
            reserved,
            reservations: reservations
                .into_iter()
                .map(|(id, r)| {
                    let Reservation { amount, expires_at, task_id, agent_id } = r;
                    (id, ReservationV1 { amount, expires_at, task_id, agent_id })
                })
                .collect(),
            crossed,
        }
    }
}

impl TryFrom<StateV1> for ServiceState {
    type Error = String;
    fn try_from(s: StateV1) -> Result<Self, String> {
        if s.version != 1 {
            return Err(format!("layout {} read as layout 1", s.version));
        }
        Ok(ServiceState {
            id: s.id,
            status: s.status,
            name: s.name,
            currency: s.currency,
            monthly_budget: s.monthly_budget,
            fallback_service_id: s.fallback_service_id,
            unit_prices: s.unit_prices,
            period: s.period,
            spent: s.spent,
            reserved: s.reserved,
            reservations: s
                .reservations
                .into_iter()
                .map(|(id, r)| {
                    (
                        id,
                        Reservation {
                            amount: r.amount,
                            expires_at: r.expires_at,
                            task_id: r.task_id,
                            agent_id: r.agent_id,
                        },
                    )
                })
                .collect(),
            crossed: s.crossed,
        })
    }
}

/// The row's JSON for `state`, in the newest layout.
pub fn encode(state: &ServiceState) -> sqlx::types::Json<StateV1> {
    sqlx::types::Json(StateV1::from(state))
}

/// Service `id`'s state from its row's JSON, whichever layout it is in.
pub fn decode(id: Uuid, json: serde_json::Value) -> Result<ServiceState, StoreError> {
    let undecodable =
        |message: String| StoreError::Undecodable { table: "service_budgets", key: id.to_string(), message };
    let state = match json.get("version").and_then(serde_json::Value::as_u64) {
        Some(1) => serde_json::from_value::<StateV1>(json).map_err(|e| e.to_string()).and_then(ServiceState::try_from),
        Some(other) => Err(format!("snapshot layout {other} is not one this version reads")),
        None => Err("the snapshot has no layout version".to_owned()),
    }
    .map_err(undecodable)?;
    if state.id != id {
        return Err(undecodable(format!("the snapshot is of service {}", state.id)));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state() -> ServiceState {
        let m = |s: &str| Money::parse("amount", s).unwrap();
        ServiceState {
            id: Uuid::from_u128(7),
            status: ServiceStatus::Suspended,
            name: "llm".into(),
            currency: "USD".into(),
            monthly_budget: m("100"),
            fallback_service_id: Some(Uuid::from_u128(8)),
            unit_prices: [("token".to_owned(), m("0.000015"))].into(),
            period: Period { year: 2026, month: 11 },
            spent: m("99.5"),
            reserved: m("0.5"),
            reservations: [(
                Uuid::from_u128(9),
                Reservation {
                    amount: m("0.5"),
                    expires_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
                    task_id: None,
                    agent_id: Some(Uuid::from_u128(10)),
                },
            )]
            .into(),
            crossed: [50, 80].into(),
        }
    }

    /// Layout 1 as the rows hold it: the fields SQL reads by name stay where they were.
    #[test]
    fn layout_1_is_the_state_as_first_kept_plus_its_version() {
        let json = serde_json::to_value(encode(&state()).0).unwrap();
        assert_eq!(
            json,
            json!({
                "version": 1, "id": Uuid::from_u128(7), "status": "SUSPENDED", "name": "llm", "currency": "USD",
                "monthly_budget": 100_000_000, "fallback_service_id": Uuid::from_u128(8),
                "unit_prices": { "token": 15 }, "period": { "year": 2026, "month": 11 },
                "spent": 99_500_000, "reserved": 500_000,
                "reservations": { Uuid::from_u128(9).to_string(): {
                    "amount": 500_000, "expires_at": "2027-01-15T08:00:00Z", "task_id": null,
                    "agent_id": Uuid::from_u128(10) } },
                "crossed": [50, 80]
            })
        );
        assert_eq!(decode(Uuid::from_u128(7), json).unwrap(), state());
    }

    #[test]
    fn a_row_that_does_not_read_is_an_error_naming_the_service() {
        let id = Uuid::from_u128(7);
        let good = serde_json::to_value(encode(&state()).0).unwrap();
        let with = |key: &str, value: serde_json::Value| {
            let mut json = good.clone();
            json[key] = value;
            json
        };
        let mut unversioned = good.clone();
        unversioned.as_object_mut().unwrap().remove("version");
        for bad in [
            unversioned,
            with("version", json!(2)),
            with("spent", json!(-5)),
            with("status", json!("ON_FIRE")),
            with("period", json!({ "year": 2026, "month": 13 })),
            with("surprise", json!(true)),
        ] {
            let error = decode(id, bad.clone()).unwrap_err().to_string();
            assert!(error.starts_with(&format!("undecodable service_budgets row {id}: ")), "{bad}: {error}");
        }
        assert!(decode(Uuid::from_u128(1), good).is_err(), "another service's snapshot");
    }
}
