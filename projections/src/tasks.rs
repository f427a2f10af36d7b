//! The task board: one row per task that exists, as its events leave it.

use chrono::{DateTime, Utc};
use devart_commands::Recorded;
use devart_domain::money::Money;
use devart_domain::task::{
    ApprovalDecision, ApprovalRequest, AttemptError, Lease, Progress, StageLink, Task, TaskEvent, TaskState, TaskStatus,
};
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

/// A row of `tasks`, and the payload of a `taskUpdates` notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct TaskRow {
    pub id: Uuid,
    pub title: String,
    pub description: String,
    /// `PENDING`, …, or `DELETED` in a notification about a deleted task (never stored).
    pub status: String,
    pub priority: i16,
    pub required_capabilities: Vec<String>,
    pub parent_task_id: Option<Uuid>,
    pub version: i64,
    pub position: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: String,
    pub max_attempts: i32,
    pub attempt: i32,
    pub failures: i32,
    pub run_after: Option<DateTime<Utc>>,
    pub input: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    /// `[{attempt, agentId, error}]`, oldest first.
    pub errors: serde_json::Value,
    /// The lease holder, while the task is in progress (and after it was cancelled in progress).
    pub agent_id: Option<Uuid>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub progress_message: Option<String>,
    pub progress_percent: Option<i16>,
    pub workflow_run_id: Option<Uuid>,
    pub stage_key: Option<String>,
    /// The task's spending cap, in millionths.
    #[serde(default)]
    pub max_cost: Option<i64>,
    /// `[ApprovalRow]`: its agents' requests for approval, oldest first.
    #[serde(default = "no_approvals")]
    pub approvals: serde_json::Value,
}

fn no_approvals() -> serde_json::Value {
    serde_json::Value::Array(Vec::new())
}

/// One request for approval in `tasks.approvals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRow {
    pub request_id: Uuid,
    pub agent_id: Uuid,
    pub attempt: u32,
    pub action: String,
    pub details: Option<serde_json::Value>,
    pub approve_on_timeout: bool,
    pub expires_at: DateTime<Utc>,
    /// `PENDING`, `APPROVED` or `DENIED`.
    pub status: String,
    pub timed_out: bool,
    pub note: Option<String>,
    /// When it was asked, and when and by whom (`user:…`, `system:approvals`) it was answered: the
    /// times and actors of its events, as far as this read model has seen them.
    #[serde(default)]
    pub requested_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub decided_by: Option<String>,
}

/// The requests for approval of `state`, with the times and actors `previous` (the row's column
/// before) knew for them.
fn approvals_with_meta(state: &TaskState, previous: &serde_json::Value) -> Vec<ApprovalRow> {
    let known: Vec<ApprovalRow> = approvals_of(previous).unwrap_or_default();
    state
        .approvals
        .iter()
        .map(|a| {
            let mut row = ApprovalRow::of(a);
            if let Some(before) = known.iter().find(|k| k.request_id == a.request_id) {
                row.requested_at = before.requested_at;
                row.decided_at = before.decided_at;
                row.decided_by = before.decided_by.clone();
            }
            row
        })
        .collect()
}

impl ApprovalRow {
    pub fn of(a: &ApprovalRequest) -> ApprovalRow {
        let status = match &a.decision {
            None => "PENDING",
            Some(d) if d.approved => "APPROVED",
            Some(_) => "DENIED",
        };
        ApprovalRow {
            request_id: a.request_id,
            agent_id: a.agent_id,
            attempt: a.attempt,
            action: a.action.clone(),
            details: a
                .details
                .as_ref()
                .map(|t| serde_json::from_str(t).unwrap_or(serde_json::Value::String(t.clone()))),
            approve_on_timeout: a.approve_on_timeout,
            expires_at: a.expires_at,
            status: status.to_owned(),
            timed_out: a.decision.as_ref().is_some_and(|d| d.timed_out),
            note: a.decision.as_ref().and_then(|d| d.note.clone()),
            requested_at: None,
            decided_at: None,
            decided_by: None,
        }
    }

    fn request(&self) -> ApprovalRequest {
        ApprovalRequest {
            request_id: self.request_id,
            agent_id: self.agent_id,
            attempt: self.attempt,
            action: self.action.clone(),
            details: self.details.as_ref().map(|v| v.to_string()),
            approve_on_timeout: self.approve_on_timeout,
            expires_at: self.expires_at,
            decision: (self.status != "PENDING").then(|| ApprovalDecision {
                approved: self.status == "APPROVED",
                note: self.note.clone(),
                timed_out: self.timed_out,
            }),
        }
    }
}

/// The requests for approval in a row's `approvals`.
pub fn approvals_of(value: &serde_json::Value) -> Result<Vec<ApprovalRow>, ColumnError> {
    Vec::<ApprovalRow>::deserialize(value)
        .map_err(|e| ColumnError::new("approvals", format!("not a list of requests for approval: {e}")))
}

/// One failed attempt in `tasks.errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptErrorRow {
    pub attempt: u32,
    pub agent_id: Uuid,
    pub error: String,
}

impl TaskRow {
    fn empty(id: Uuid, created_at: DateTime<Utc>, created_by: String) -> TaskRow {
        TaskRow {
            id,
            title: String::new(),
            description: String::new(),
            status: TaskStatus::Absent.as_str().to_owned(),
            priority: 0,
            required_capabilities: Vec::new(),
            parent_task_id: None,
            version: 0,
            position: 0,
            created_at,
            updated_at: created_at,
            created_by,
            max_attempts: 0,
            attempt: 0,
            failures: 0,
            run_after: None,
            input: None,
            result: None,
            errors: serde_json::Value::Array(Vec::new()),
            agent_id: None,
            lease_expires_at: None,
            progress_message: None,
            progress_percent: None,
            workflow_run_id: None,
            stage_key: None,
            max_cost: None,
            approvals: no_approvals(),
        }
    }

    /// The row a task's state makes, as the write side knows it right after a command (position 0:
    /// not sequenced yet).
    pub fn from_state(
        state: TaskState,
        version: u64,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
        created_by: String,
    ) -> TaskRow {
        let mut row = TaskRow::empty(state.id, created_at, created_by);
        row.set_state(state);
        row.version = version as i64;
        row.updated_at = updated_at;
        row
    }

    /// The task's state as the row holds it; fails on a status or errors column that does not
    /// decode.
    fn state(&self) -> Result<TaskState, ColumnError> {
        let status = TaskStatus::parse(&self.status)
            .ok_or_else(|| ColumnError::new("status", format!("`{}` is not a task status", self.status)))?;
        let errors = Vec::<AttemptErrorRow>::deserialize(&self.errors)
            .map_err(|e| ColumnError::new("errors", format!("not a list of attempt errors: {e}")))?
            .into_iter()
            .map(|e| AttemptError { attempt: e.attempt, agent_id: e.agent_id, error: e.error })
            .collect();
        let approvals = approvals_of(&self.approvals)?.iter().map(ApprovalRow::request).collect();
        Ok(TaskState { approvals, ..self.state_with(status, errors) })
    }

    fn state_with(&self, status: TaskStatus, errors: Vec<AttemptError>) -> TaskState {
        TaskState {
            id: self.id,
            status,
            title: self.title.clone(),
            description: self.description.clone(),
            priority: self.priority as u8,
            required_capabilities: self.required_capabilities.clone(),
            parent_task_id: self.parent_task_id,
            max_attempts: self.max_attempts as u32,
            run_after: self.run_after,
            input: self.input.as_ref().map(|v| v.to_string()),
            stage: self.workflow_run_id.zip(self.stage_key.clone()).map(|(run_id, stage_key)| StageLink {
                run_id,
                stage_key,
                workflow_id: None,
            }),
            attempt: self.attempt as u32,
            failures: self.failures as u32,
            lease: self.agent_id.zip(self.lease_expires_at).map(|(agent_id, expires_at)| Lease {
                agent_id,
                attempt: self.attempt as u32,
                expires_at,
            }),
            progress: self
                .progress_message
                .clone()
                .map(|message| Progress { message, percent: self.progress_percent.map(|p| p as u8) }),
            errors,
            result: self.result.as_ref().map(|v| v.to_string()),
            // Cost outliers are the analytics read model's concern; the board does not keep them.
            cost_outlier: None,
            max_cost: self.max_cost.map(Money::from_micros),
            approvals: Vec::new(),
        }
    }

    fn set_state(&mut self, state: TaskState) {
        let approvals = approvals_with_meta(&state, &self.approvals);
        self.approvals = serde_json::to_value(approvals).expect("requests for approval serialize");
        let json =
            |text: Option<String>| text.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)));
        self.status = state.status.as_str().to_owned();
        self.title = state.title;
        self.description = state.description;
        self.priority = i16::from(state.priority);
        self.required_capabilities = state.required_capabilities;
        self.parent_task_id = state.parent_task_id;
        self.max_attempts = state.max_attempts as i32;
        self.attempt = state.attempt as i32;
        self.failures = state.failures as i32;
        self.run_after = state.run_after;
        self.input = json(state.input);
        self.result = json(state.result);
        let errors: Vec<AttemptErrorRow> = state
            .errors
            .into_iter()
            .map(|e| AttemptErrorRow { attempt: e.attempt, agent_id: e.agent_id, error: e.error })
            .collect();
        self.errors = serde_json::to_value(errors).expect("errors serialize");
        self.agent_id = state.lease.map(|l| l.agent_id);
        self.lease_expires_at = state.lease.map(|l| l.expires_at);
        self.progress_percent = state.progress.as_ref().and_then(|p| p.percent).map(i16::from);
        self.progress_message = state.progress.map(|p| p.message);
        self.workflow_run_id = state.stage.as_ref().map(|s| s.run_id);
        self.stage_key = state.stage.map(|s| s.stage_key);
        self.max_cost = state.max_cost.map(Money::micros);
    }
}

impl HasId for TaskRow {
    fn id(&self) -> Uuid {
        self.id
    }
}

pub const COLUMNS: &str = "id, title, description, status, priority, required_capabilities, parent_task_id, \
                           version, position, created_at, updated_at, created_by, max_attempts, attempt, failures, \
                           run_after, input, result, errors, agent_id, lease_expires_at, progress_message, \
                           progress_percent, workflow_run_id, stage_key, max_cost, approvals";

/// The read model's name.
const NAME: &str = "tasks";

/// What it announces: the task board's rows.
pub const ANNOUNCED: Announced<TaskRow> = Announced::new(NAME);

#[derive(Default)]
pub struct TasksProjection;

/// Each task's state is folded over the whole batch and turned into its row once.
impl AggregateRows for TasksProjection {
    type Row = TaskRow;
    type Folded = (TaskState, TaskRow);

    const TABLE: &'static str = "tasks";
    const COLUMNS: &'static [(&'static str, Sql)] = &[
        ("id", Sql::Uuid),
        ("title", Sql::Text),
        ("description", Sql::Text),
        ("status", Sql::Text),
        ("priority", Sql::SmallInt),
        ("required_capabilities", Sql::TextArray),
        ("parent_task_id", Sql::Uuid),
        ("version", Sql::BigInt),
        ("position", Sql::BigInt),
        ("created_at", Sql::Timestamptz),
        ("updated_at", Sql::Timestamptz),
        ("created_by", Sql::Text),
        ("max_attempts", Sql::Int),
        ("attempt", Sql::Int),
        ("failures", Sql::Int),
        ("run_after", Sql::Timestamptz),
        ("input", Sql::Jsonb),
        ("result", Sql::Jsonb),
        ("errors", Sql::Jsonb),
        ("agent_id", Sql::Uuid),
        ("lease_expires_at", Sql::Timestamptz),
        ("progress_message", Sql::Text),
        ("progress_percent", Sql::SmallInt),
        ("workflow_run_id", Sql::Uuid),
        ("stage_key", Sql::Text),
        ("max_cost", Sql::BigInt),
        ("approvals", Sql::Jsonb),
    ];

    fn row_of(&self, recorded: &Recorded) -> Option<Uuid> {
        match recorded.event {
            Event::Task(_) => recorded.meta.stream_id.id_of(Task::KIND),
            _ => None,
        }
    }

    fn open(&self, row: TaskRow) -> Result<(TaskState, TaskRow), ColumnError> {
        Ok((row.state()?, row))
    }

    fn start(&self, id: Uuid, recorded: &Recorded) -> Option<(TaskState, TaskRow)> {
        let meta = &recorded.meta;
        let row = TaskRow::empty(id, meta.occurred_at, meta.actor.to_string());
        Some((row.state_with(TaskStatus::Absent, Vec::new()), row))
    }

    fn fold(&mut self, (state, row): &mut (TaskState, TaskRow), recorded: &Recorded) -> bool {
        let Event::Task(event) = &recorded.event else { return false };
        let meta = &recorded.meta;
        *state = Task::evolve(std::mem::take(state), event);
        if let TaskEvent::ApprovalRequested { request_id, .. } | TaskEvent::ApprovalDecided { request_id, .. } = event {
            let mut approvals = approvals_with_meta(state, &row.approvals);
            if let Some(approval) = approvals.iter_mut().find(|a| a.request_id == *request_id) {
                if matches!(event, TaskEvent::ApprovalRequested { .. }) {
                    approval.requested_at = Some(meta.occurred_at);
                } else {
                    approval.decided_at = Some(meta.occurred_at);
                    approval.decided_by = Some(meta.actor.to_string());
                }
            }
            row.approvals = serde_json::to_value(approvals).expect("requests for approval serialize");
        }
        row.version = meta.stream_version as i64;
        row.position = meta.position.map_or(row.position, |p| p.0 as i64);
        row.updated_at = meta.occurred_at;
        true
    }

    fn close(&self, (state, mut row): (TaskState, TaskRow)) -> TaskRow {
        row.set_state(state);
        row
    }

    fn deleted(&self, row: &TaskRow) -> bool {
        row.status == TaskStatus::Deleted.as_str()
    }

    fn bind<'q>(rows: &[&'q TaskRow], query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(column(rows, |r| r.id))
            .bind(column(rows, |r| r.title.as_str()))
            .bind(column(rows, |r| r.description.as_str()))
            .bind(column(rows, |r| r.status.as_str()))
            .bind(column(rows, |r| r.priority))
            .bind(column(rows, |r| Json(&r.required_capabilities)))
            .bind(column(rows, |r| r.parent_task_id))
            .bind(column(rows, |r| r.version))
            .bind(column(rows, |r| r.position))
            .bind(column(rows, |r| r.created_at))
            .bind(column(rows, |r| r.updated_at))
            .bind(column(rows, |r| r.created_by.as_str()))
            .bind(column(rows, |r| r.max_attempts))
            .bind(column(rows, |r| r.attempt))
            .bind(column(rows, |r| r.failures))
            .bind(column(rows, |r| r.run_after))
            .bind(column(rows, |r| r.input.as_ref().map(Json)))
            .bind(column(rows, |r| r.result.as_ref().map(Json)))
            .bind(column(rows, |r| Json(&r.errors)))
            .bind(column(rows, |r| r.agent_id))
            .bind(column(rows, |r| r.lease_expires_at))
            .bind(column(rows, |r| r.progress_message.as_deref()))
            .bind(column(rows, |r| r.progress_percent))
            .bind(column(rows, |r| r.workflow_run_id))
            .bind(column(rows, |r| r.stage_key.as_deref()))
            .bind(column(rows, |r| r.max_cost))
            .bind(column(rows, |r| Json(&r.approvals)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::column_list;

    #[test]
    fn the_columns_read_are_the_columns_written() {
        assert_eq!(COLUMNS, column_list(TasksProjection::COLUMNS));
    }

    #[test]
    fn a_stored_row_that_does_not_decode_is_an_error_not_a_pending_task() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let id = Uuid::from_u128(3);
        let mut row = TaskRow::empty(id, at, "user:admin".into());
        row.status = "PENDNG".into();
        let error = TasksProjection.open(row.clone()).unwrap_err().in_row("tasks", id);
        assert_eq!((error.table.as_str(), error.column.as_str()), ("tasks", "status"));
        assert_eq!(error.row, id.to_string());
        assert!(error.problem.contains("PENDNG"), "{error}");

        row.status = TaskStatus::Pending.as_str().into();
        row.errors = serde_json::json!([{ "attempt": "first" }]);
        let error = TasksProjection.open(row).unwrap_err();
        assert_eq!(error.column, "errors");
    }
}
