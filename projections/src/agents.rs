//! The agents read model: one row per registered agent.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use devart_commands::Recorded;
use devart_domain::agent::{Agent, AgentState, AgentStatus};
use devart_domain::task::{Task, TaskEvent};
use devart_domain::{ActorKind, Aggregate, Event};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::rows::{rows_by_id, HasId};
use crate::{ApplyError, Projection, Target};

/// A row of `agents`, and the payload of its change notifications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct AgentRow {
    pub id: Uuid,
    pub name: String,
    pub capabilities: Vec<String>,
    pub active: bool,
    /// The public id of the agent's current key.
    pub key_id: String,
    pub version: i64,
    pub position: i64,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the agent last claimed, heartbeated or reported.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The task it claimed last, while it holds it.
    pub current_task_id: Option<Uuid>,
    pub tasks_claimed: i64,
    pub tasks_completed: i64,
    /// Attempts that failed: reported failures and expired leases.
    pub tasks_failed: i64,
}

impl HasId for AgentRow {
    fn id(&self) -> Uuid {
        self.id
    }
}

pub const COLUMNS: &str = "id, name, capabilities, active, key_id, version, position, registered_at, updated_at, \
                           last_seen_at, current_task_id, tasks_claimed, tasks_completed, tasks_failed";

pub struct AgentsProjection;

impl Projection for AgentsProjection {
    fn name(&self) -> &'static str {
        "agents"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["agents"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: Target,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, ApplyError>> {
        apply(conn, target.table("agents"), events).boxed()
    }
}

async fn apply(
    conn: &mut PgConnection,
    table: String,
    events: &[Recorded],
) -> Result<Vec<serde_json::Value>, ApplyError> {
    let ids: Vec<Uuid> = events.iter().filter_map(|r| agent_id(r).or_else(|| worker_of(r))).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let existing: HashMap<Uuid, AgentRow> = rows_by_id(conn, &table, "id", COLUMNS, &ids).await?;
    let mut states: HashMap<Uuid, (AgentState, AgentRow)> = existing
        .into_values()
        .map(|r| {
            let state = AgentState {
                id: r.id,
                status: if r.active { AgentStatus::Active } else { AgentStatus::Inactive },
                name: r.name.clone(),
                capabilities: r.capabilities.clone(),
                key_id: r.key_id.clone(),
            };
            (r.id, (state, r))
        })
        .collect();
    // In first-change order, for notifications; `seen` keeps the check O(1) per event.
    let mut changed: Vec<Uuid> = Vec::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    for recorded in events {
        let meta = &recorded.meta;
        if let (Some(id), Event::Task(event)) = (worker_of(recorded), &recorded.event) {
            // Work done by an agent this batch or the table knows; others are not agents of ours.
            let Some((_, row)) = states.get_mut(&id) else { continue };
            work(row, event, recorded);
            if seen.insert(id) {
                changed.push(id);
            }
            continue;
        }
        let (Some(id), Event::Agent(event)) = (agent_id(recorded), &recorded.event) else { continue };
        let (state, row) = states.entry(id).or_insert_with(|| {
            let row = AgentRow {
                id,
                name: String::new(),
                capabilities: Vec::new(),
                active: false,
                key_id: String::new(),
                version: 0,
                position: 0,
                registered_at: meta.occurred_at,
                updated_at: meta.occurred_at,
                last_seen_at: None,
                current_task_id: None,
                tasks_claimed: 0,
                tasks_completed: 0,
                tasks_failed: 0,
            };
            (AgentState::default(), row)
        });
        *state = Agent::evolve(std::mem::take(state), event);
        row.name = state.name.clone();
        row.capabilities = state.capabilities.clone();
        row.active = state.status == AgentStatus::Active;
        row.key_id = state.key_id.clone();
        row.version = meta.stream_version as i64;
        row.position = meta.position.map_or(row.position, |p| p.0 as i64);
        row.updated_at = meta.occurred_at;
        if seen.insert(id) {
            changed.push(id);
        }
    }
    let rows: Vec<&AgentRow> = changed.iter().map(|id| &states[id].1).collect();
    let caps: Vec<String> = rows.iter().map(|r| serde_json::to_string(&r.capabilities).expect("json")).collect();
    sqlx::query(&format!(
        "insert into {table} ({COLUMNS}) \
         select id, name, array(select jsonb_array_elements_text(caps::jsonb)), active, key_id, version, position, \
                registered_at, updated_at, last_seen_at, current_task_id, tasks_claimed, tasks_completed, \
                tasks_failed \
         from unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::bigint[], $7::bigint[], \
                     $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::uuid[], $12::bigint[], \
                     $13::bigint[], $14::bigint[]) \
              as r(id, name, caps, active, key_id, version, position, registered_at, updated_at, last_seen_at, \
                   current_task_id, tasks_claimed, tasks_completed, tasks_failed) \
         on conflict (id) do update set name = excluded.name, capabilities = excluded.capabilities, \
             active = excluded.active, key_id = excluded.key_id, version = excluded.version, \
             position = excluded.position, updated_at = excluded.updated_at, last_seen_at = excluded.last_seen_at, \
             current_task_id = excluded.current_task_id, tasks_claimed = excluded.tasks_claimed, \
             tasks_completed = excluded.tasks_completed, tasks_failed = excluded.tasks_failed"
    ))
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
    .bind(&caps)
    .bind(rows.iter().map(|r| r.active).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.key_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.registered_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.last_seen_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.current_task_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.tasks_claimed).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.tasks_completed).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.tasks_failed).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(rows.iter().map(|r| serde_json::to_value(r).expect("rows serialize")).collect())
}

/// The agent a task event records work of.
fn worker_of(recorded: &Recorded) -> Option<Uuid> {
    match &recorded.event {
        Event::Task(event) => event.agent_id(),
        _ => None,
    }
}

/// What a task event tells about its agent's activity.
fn work(row: &mut AgentRow, event: &TaskEvent, recorded: &Recorded) {
    let task = recorded.meta.stream_id.id_of(Task::KIND);
    if recorded.meta.actor.kind == ActorKind::Agent {
        row.last_seen_at = Some(recorded.meta.occurred_at);
    }
    match event {
        TaskEvent::Claimed { .. } => {
            row.tasks_claimed += 1;
            row.current_task_id = task;
        }
        TaskEvent::Completed { .. } => row.tasks_completed += 1,
        TaskEvent::AttemptFailed { .. } | TaskEvent::LeaseExpired { .. } => row.tasks_failed += 1,
        _ => {}
    }
    let let_go = matches!(
        event,
        TaskEvent::Completed { .. }
            | TaskEvent::AttemptFailed { .. }
            | TaskEvent::LeaseExpired { .. }
            | TaskEvent::Released { .. }
    );
    if let_go && row.current_task_id == task {
        row.current_task_id = None;
    }
}

fn agent_id(recorded: &Recorded) -> Option<Uuid> {
    recorded.meta.stream_id.id_of(Agent::KIND)
}
