//! The services read model: each service with its budget, spend and status, as its events leave it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use devart_commands::Recorded;
use devart_domain::service::{Service, ServiceState};
use devart_domain::{Aggregate, Event};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::rows::{rows_by_id, HasId};
use crate::{ApplyError, Projection, Target};

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

pub struct ServicesProjection;

impl Projection for ServicesProjection {
    fn name(&self) -> &'static str {
        "services"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["services"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: Target,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, ApplyError>> {
        apply(conn, target.table("services"), events).boxed()
    }
}

async fn apply(
    conn: &mut PgConnection,
    table: String,
    events: &[Recorded],
) -> Result<Vec<serde_json::Value>, ApplyError> {
    let ids: Vec<Uuid> = events.iter().filter_map(|r| r.meta.stream_id.id_of(Service::KIND)).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows: HashMap<Uuid, ServiceRow> = rows_by_id(conn, &table, "id", COLUMNS, &ids).await?;
    let mut changed: Vec<Uuid> = Vec::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    for recorded in events {
        let (Some(id), Event::Service(event)) = (recorded.meta.stream_id.id_of(Service::KIND), &recorded.event) else {
            continue;
        };
        let meta = &recorded.meta;
        let row = rows.entry(id).or_insert_with(|| ServiceRow {
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
            updated_at: meta.occurred_at,
        });
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
        if seen.insert(id) {
            changed.push(id);
        }
    }
    let mut notifications = Vec::with_capacity(changed.len());
    for id in changed {
        let r = &rows[&id];
        sqlx::query(&format!(
            "insert into {table} ({COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             on conflict (id) do update set name = excluded.name, status = excluded.status, \
                 monthly_budget_micros = excluded.monthly_budget_micros, spent_micros = excluded.spent_micros, \
                 reserved_micros = excluded.reserved_micros, period = excluded.period, state = excluded.state, \
                 version = excluded.version, position = excluded.position, updated_at = excluded.updated_at"
        ))
        .bind(r.id)
        .bind(&r.name)
        .bind(&r.status)
        .bind(r.monthly_budget_micros)
        .bind(r.spent_micros)
        .bind(r.reserved_micros)
        .bind(&r.period)
        .bind(&r.state)
        .bind(r.version)
        .bind(r.position)
        .bind(r.updated_at)
        .execute(&mut *conn)
        .await?;
        notifications.push(serde_json::to_value(r).expect("rows serialize"));
    }
    Ok(notifications)
}
