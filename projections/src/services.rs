//! The services read model: each service with its budget, spend and status, as its events leave it.

use chrono::{DateTime, Utc};
use devart_commands::Recorded;
use devart_domain::service::{Service, ServiceState};
use devart_domain::{Aggregate, Event};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::Postgres;
use uuid::Uuid;

use crate::announce::Announced;
use crate::rows::{column, AggregateRows, HasId, Sql};
use crate::ColumnError;

/// A row of `services`, and the payload of a `serviceUpdates` notification. Amounts are exact
/// millionths of the currency unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRow {
    pub id: Uuid,
    pub name: String,
    /// `ACTIVE`, `SUSPENDED` or `INACTIVE`.
    pub status: String,
    pub monthly_budget_micros: i64,
    pub spent_micros: i64,
    pub reserved_micros: i64,
    pub period: String,
    /// The folded state, for the next batch to continue from.
    pub state: Json<ServiceState>,
    pub version: i64,
    pub position: i64,
    pub updated_at: DateTime<Utc>,
}

impl HasId for ServiceRow {
    fn id(&self) -> Uuid {
        self.id
    }
}

pub const COLUMNS: &str =
    "id, name, status, monthly_budget_micros, spent_micros, reserved_micros, period, state, version, position, updated_at";

/// The read model's name.
const NAME: &str = "services";

/// What it announces: services' rows.
pub const ANNOUNCED: Announced<ServiceRow> = Announced::new(NAME);

#[derive(Default)]
pub struct ServicesProjection;

/// The row keeps the folded state (`state`), which the next batch continues from.
impl AggregateRows for ServicesProjection {
    type Row = ServiceRow;
    type Folded = ServiceRow;

    const TABLE: &'static str = "services";
    const COLUMNS: &'static [(&'static str, Sql)] = &[
        ("id", Sql::Uuid),
        ("name", Sql::Text),
        ("status", Sql::Text),
        ("monthly_budget_micros", Sql::BigInt),
        ("spent_micros", Sql::BigInt),
        ("reserved_micros", Sql::BigInt),
        ("period", Sql::Text),
        ("state", Sql::Jsonb),
        ("version", Sql::BigInt),
        ("position", Sql::BigInt),
        ("updated_at", Sql::Timestamptz),
    ];

    fn row_of(&self, recorded: &Recorded) -> Option<Uuid> {
        match recorded.event {
            Event::Service(_) => recorded.meta.stream_id.id_of(Service::KIND),
            _ => None,
        }
    }

    fn open(&self, row: ServiceRow) -> Result<ServiceRow, ColumnError> {
        Ok(row)
    }

    fn start(&self, id: Uuid, recorded: &Recorded) -> Option<ServiceRow> {
        Some(ServiceRow {
            id,
            name: String::new(),
            status: String::new(),
            monthly_budget_micros: 0,
            spent_micros: 0,
            reserved_micros: 0,
            period: String::new(),
            state: Json(ServiceState::default()),
            version: 0,
            position: 0,
            updated_at: recorded.meta.occurred_at,
        })
    }

    fn fold(&mut self, row: &mut ServiceRow, recorded: &Recorded) -> bool {
        let Event::Service(event) = &recorded.event else { return false };
        let meta = &recorded.meta;
        let state = Service::evolve(std::mem::take(&mut row.state.0), event);
        row.name = state.name.clone();
        row.status = state.status.as_str().to_owned();
        row.monthly_budget_micros = state.monthly_budget.micros();
        row.spent_micros = state.spent.micros();
        row.reserved_micros = state.reserved.micros();
        row.period = state.period.to_string();
        row.state = Json(state);
        row.version = meta.stream_version as i64;
        row.position = meta.position.map_or(row.position, |p| p.0 as i64);
        row.updated_at = meta.occurred_at;
        true
    }

    fn close(&self, row: ServiceRow) -> ServiceRow {
        row
    }

    fn bind<'q>(rows: &[&'q ServiceRow], query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(column(rows, |r| r.id))
            .bind(column(rows, |r| r.name.as_str()))
            .bind(column(rows, |r| r.status.as_str()))
            .bind(column(rows, |r| r.monthly_budget_micros))
            .bind(column(rows, |r| r.spent_micros))
            .bind(column(rows, |r| r.reserved_micros))
            .bind(column(rows, |r| r.period.as_str()))
            .bind(column(rows, |r| Json(&r.state.0)))
            .bind(column(rows, |r| r.version))
            .bind(column(rows, |r| r.position))
            .bind(column(rows, |r| r.updated_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::column_list;

    #[test]
    fn the_columns_read_are_the_columns_written() {
        assert_eq!(COLUMNS, column_list(ServicesProjection::COLUMNS));
    }
}
