//! The agents read model: one row per registered agent.

use chrono::{DateTime, Utc};
use devart_commands::Recorded;
use devart_domain::agent::{Agent, AgentState, AgentStatus};
use devart_domain::task::{Task, TaskEvent};
use devart_domain::{ActorKind, Aggregate, Event};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::Postgres;
use uuid::Uuid;

use crate::announce::Announced;
use crate::rows::{column, AggregateRows, HasId, Sql};
use crate::ColumnError;

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
    /// Why the agent is quarantined, while it is.
    pub quarantined: Option<String>,
}

impl HasId for AgentRow {
    fn id(&self) -> Uuid {
        self.id
    }
}

pub const COLUMNS: &str = "id, name, capabilities, active, key_id, version, position, registered_at, updated_at, \
                           last_seen_at, current_task_id, tasks_claimed, tasks_completed, tasks_failed, quarantined";

/// The read model's name.
const NAME: &str = "agents";

/// What it announces: agents' rows.
pub const ANNOUNCED: Announced<AgentRow> = Announced::new(NAME);

#[derive(Default)]
pub struct AgentsProjection;

/// An agent's row changes with its own events, and with the task events that record its work.
impl AggregateRows for AgentsProjection {
    type Row = AgentRow;
    type Folded = (AgentState, AgentRow);

    const TABLE: &'static str = "agents";
    const COLUMNS: &'static [(&'static str, Sql)] = &[
        ("id", Sql::Uuid),
        ("name", Sql::Text),
        ("capabilities", Sql::TextArray),
        ("active", Sql::Bool),
        ("key_id", Sql::Text),
        ("version", Sql::BigInt),
        ("position", Sql::BigInt),
        ("registered_at", Sql::Timestamptz),
        ("updated_at", Sql::Timestamptz),
        ("last_seen_at", Sql::Timestamptz),
        ("current_task_id", Sql::Uuid),
        ("tasks_claimed", Sql::BigInt),
        ("tasks_completed", Sql::BigInt),
        ("tasks_failed", Sql::BigInt),
        ("quarantined", Sql::Text),
    ];

    fn row_of(&self, recorded: &Recorded) -> Option<Uuid> {
        match &recorded.event {
            Event::Agent(_) => agent_id(recorded),
            Event::Task(event) => event.agent_id(),
            _ => None,
        }
    }

    fn open(&self, row: AgentRow) -> Result<(AgentState, AgentRow), ColumnError> {
        let state = AgentState {
            id: row.id,
            status: if row.active { AgentStatus::Active } else { AgentStatus::Inactive },
            name: row.name.clone(),
            capabilities: row.capabilities.clone(),
            key_id: row.key_id.clone(),
            quarantined: row.quarantined.clone(),
            // Not kept here: `Agent.spending` reads it from the write side, beside the spend.
            daily_spending_cap: None,
        };
        Ok((state, row))
    }

    fn start(&self, id: Uuid, recorded: &Recorded) -> Option<(AgentState, AgentRow)> {
        // Work done by an agent this batch or the table knows; others are not agents of ours.
        let Event::Agent(_) = recorded.event else { return None };
        let at = recorded.meta.occurred_at;
        let row = AgentRow {
            id,
            name: String::new(),
            capabilities: Vec::new(),
            active: false,
            key_id: String::new(),
            version: 0,
            position: 0,
            registered_at: at,
            updated_at: at,
            last_seen_at: None,
            current_task_id: None,
            tasks_claimed: 0,
            tasks_completed: 0,
            tasks_failed: 0,
            quarantined: None,
        };
        Some((AgentState::default(), row))
    }

    fn fold(&mut self, (state, row): &mut (AgentState, AgentRow), recorded: &Recorded) -> bool {
        let meta = &recorded.meta;
        match &recorded.event {
            Event::Task(event) => work(row, event, recorded),
            Event::Agent(event) => {
                *state = Agent::evolve(std::mem::take(state), event);
                row.name = state.name.clone();
                row.capabilities = state.capabilities.clone();
                row.active = state.status == AgentStatus::Active;
                row.key_id = state.key_id.clone();
                row.quarantined = state.quarantined.clone();
                row.version = meta.stream_version as i64;
                row.position = meta.position.map_or(row.position, |p| p.0 as i64);
                row.updated_at = meta.occurred_at;
            }
            _ => return false,
        }
        true
    }

    fn close(&self, (_, row): (AgentState, AgentRow)) -> AgentRow {
        row
    }

    fn bind<'q>(rows: &[&'q AgentRow], query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(column(rows, |r| r.id))
            .bind(column(rows, |r| r.name.as_str()))
            .bind(column(rows, |r| Json(&r.capabilities)))
            .bind(column(rows, |r| r.active))
            .bind(column(rows, |r| r.key_id.as_str()))
            .bind(column(rows, |r| r.version))
            .bind(column(rows, |r| r.position))
            .bind(column(rows, |r| r.registered_at))
            .bind(column(rows, |r| r.updated_at))
            .bind(column(rows, |r| r.last_seen_at))
            .bind(column(rows, |r| r.current_task_id))
            .bind(column(rows, |r| r.tasks_claimed))
            .bind(column(rows, |r| r.tasks_completed))
            .bind(column(rows, |r| r.tasks_failed))
            .bind(column(rows, |r| r.quarantined.as_deref()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::column_list;

    #[test]
    fn the_columns_read_are_the_columns_written() {
        assert_eq!(COLUMNS, column_list(AgentsProjection::COLUMNS));
    }
}
