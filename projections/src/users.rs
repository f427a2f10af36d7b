//! The users read model: one row per person, with their role and activation. No credentials.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use devart_commands::Recorded;
use devart_domain::user::{User, UserRole, UserState, UserStatus};
use devart_domain::{Aggregate, Event};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::rows::{rows_by_id, HasId};
use crate::{ApplyError, Projection, Target};

/// A row of `users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    /// `viewer`, `supervisor` or `admin`.
    pub role: String,
    pub active: bool,
    pub version: i64,
    pub position: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl HasId for UserRow {
    fn id(&self) -> Uuid {
        self.id
    }
}

pub const COLUMNS: &str = "id, email, role, active, version, position, created_at, updated_at";

pub struct UsersProjection;

impl Projection for UsersProjection {
    fn name(&self) -> &'static str {
        "users"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["users"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: Target,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, ApplyError>> {
        apply(conn, target.table("users"), events).boxed()
    }
}

async fn apply(
    conn: &mut PgConnection,
    table: String,
    events: &[Recorded],
) -> Result<Vec<serde_json::Value>, ApplyError> {
    let ids: Vec<Uuid> = events
        .iter()
        .filter(|r| matches!(r.event, Event::User(_)))
        .filter_map(|r| r.meta.stream_id.id_of(User::KIND))
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let existing: HashMap<Uuid, UserRow> = rows_by_id(conn, &table, "id", COLUMNS, &ids).await?;
    let mut states: HashMap<Uuid, (UserState, UserRow)> = existing
        .into_values()
        .map(|r| {
            let state = UserState {
                id: r.id,
                status: if r.active { UserStatus::Active } else { UserStatus::Inactive },
                email: r.email.clone(),
                role: UserRole::parse(&r.role).unwrap_or_default(),
            };
            (r.id, (state, r))
        })
        .collect();
    let mut changed: Vec<Uuid> = Vec::new();
    for recorded in events {
        let meta = &recorded.meta;
        let (Some(id), Event::User(event)) = (meta.stream_id.id_of(User::KIND), &recorded.event) else { continue };
        let (state, row) = states.entry(id).or_insert_with(|| {
            let row = UserRow {
                id,
                email: String::new(),
                role: String::new(),
                active: false,
                version: 0,
                position: 0,
                created_at: meta.occurred_at,
                updated_at: meta.occurred_at,
            };
            (UserState::default(), row)
        });
        *state = User::evolve(std::mem::take(state), event);
        row.email = state.email.clone();
        row.role = state.role.as_str().to_owned();
        row.active = state.status == UserStatus::Active;
        row.version = meta.stream_version as i64;
        row.position = meta.position.map_or(row.position, |p| p.0 as i64);
        row.updated_at = meta.occurred_at;
        if !changed.contains(&id) {
            changed.push(id);
        }
    }
    let rows: Vec<&UserRow> = changed.iter().map(|id| &states[id].1).collect();
    sqlx::query(&format!(
        "insert into {table} ({COLUMNS}) \
         select * from unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::bigint[], $6::bigint[], \
                              $7::timestamptz[], $8::timestamptz[]) \
         on conflict (id) do update set email = excluded.email, role = excluded.role, active = excluded.active, \
             version = excluded.version, position = excluded.position, updated_at = excluded.updated_at"
    ))
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.email.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.role.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.active).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(rows.iter().map(|r| serde_json::to_value(r).expect("rows serialize")).collect())
}
