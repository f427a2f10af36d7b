//! The task board: one row per task that exists, as its events leave it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use devart_commands::Recorded;
use devart_domain::task::{AttemptError, Lease, Progress, StageLink, Task, TaskState, TaskStatus};
use devart_domain::{Aggregate, Event};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::rows::{rows_by_id, HasId};
use crate::{ApplyError, Projection, Target};

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

    fn state(&self) -> TaskState {
        TaskState {
            id: self.id,
            status: TaskStatus::parse(&self.status).unwrap_or(TaskStatus::Pending),
            title: self.title.clone(),
            description: self.description.clone(),
            priority: self.priority as u8,
            required_capabilities: self.required_capabilities.clone(),
            parent_task_id: self.parent_task_id,
            max_attempts: self.max_attempts as u32,
            run_after: self.run_after,
            input: self.input.as_ref().map(|v| v.to_string()),
            stage: self
                .workflow_run_id
                .zip(self.stage_key.clone())
                .map(|(run_id, stage_key)| StageLink { run_id, stage_key }),
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
            errors: serde_json::from_value::<Vec<AttemptErrorRow>>(self.errors.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|e| AttemptError { attempt: e.attempt, agent_id: e.agent_id, error: e.error })
                .collect(),
            result: self.result.as_ref().map(|v| v.to_string()),
            // Cost outliers are the analytics read model's concern; the board does not keep them.
            cost_outlier: None,
        }
    }

    fn set_state(&mut self, state: TaskState) {
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
                           progress_percent, workflow_run_id, stage_key";

pub struct TasksProjection;

impl Projection for TasksProjection {
    fn name(&self) -> &'static str {
        "tasks"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["tasks"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: Target,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, ApplyError>> {
        apply(conn, target.table("tasks"), events).boxed()
    }
}

/// Folds a batch in memory over the rows it touches, then writes each changed row once.
async fn apply(
    conn: &mut PgConnection,
    table: String,
    events: &[Recorded],
) -> Result<Vec<serde_json::Value>, ApplyError> {
    let ids: Vec<Uuid> = events.iter().filter_map(task_id).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Each row's state is folded over the whole batch and written back to the row once.
    let mut rows: HashMap<Uuid, (TaskState, TaskRow)> = rows_by_id::<TaskRow>(conn, &table, "id", COLUMNS, &ids)
        .await?
        .into_iter()
        .map(|(id, row)| (id, (row.state(), row)))
        .collect();
    // In first-change order, for notifications; `seen` keeps the check O(1) per event.
    let mut changed: Vec<Uuid> = Vec::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    for recorded in events {
        let (Some(id), Event::Task(event)) = (task_id(recorded), &recorded.event) else {
            continue;
        };
        let meta = &recorded.meta;
        let (state, row) = rows.entry(id).or_insert_with(|| {
            let row = TaskRow::empty(id, meta.occurred_at, meta.actor.to_string());
            (row.state(), row)
        });
        *state = Task::evolve(std::mem::take(state), event);
        row.version = meta.stream_version as i64;
        row.position = meta.position.map_or(row.position, |p| p.0 as i64);
        row.updated_at = meta.occurred_at;
        if seen.insert(id) {
            changed.push(id);
        }
    }
    let rows: HashMap<Uuid, TaskRow> = rows
        .into_iter()
        .filter(|(id, _)| seen.contains(id))
        .map(|(id, (state, mut row))| {
            row.set_state(state);
            (id, row)
        })
        .collect();
    let (deleted, live): (Vec<&TaskRow>, Vec<&TaskRow>) =
        changed.iter().map(|id| &rows[id]).partition(|r| r.status == TaskStatus::Deleted.as_str());
    if !deleted.is_empty() {
        let ids: Vec<Uuid> = deleted.iter().map(|r| r.id).collect();
        sqlx::query(&format!("delete from {table} where id = any($1)")).bind(&ids).execute(&mut *conn).await?;
    }
    if !live.is_empty() {
        upsert(conn, &table, &live).await?;
    }
    Ok(changed.iter().map(|id| serde_json::to_value(&rows[id]).expect("rows serialize")).collect())
}

async fn upsert(conn: &mut PgConnection, table: &str, rows: &[&TaskRow]) -> Result<(), sqlx::Error> {
    // Arrays and documents travel as one JSON text per row (unnest cannot take a ragged text[][]).
    let json = |v: &serde_json::Value| v.to_string();
    let caps: Vec<String> =
        rows.iter().map(|r| serde_json::to_string(&r.required_capabilities).expect("json")).collect();
    sqlx::query(&format!(
        "insert into {table} ({COLUMNS}) \
         select id, title, description, status, priority, \
                array(select jsonb_array_elements_text(caps::jsonb)), parent, version, position, created_at, \
                updated_at, created_by, max_attempts, attempt, failures, run_after, input::jsonb, result::jsonb, \
                errors::jsonb, agent_id, lease_expires_at, progress_message, progress_percent, workflow_run_id, \
                stage_key \
         from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::smallint[], $6::text[], $7::uuid[], \
                     $8::bigint[], $9::bigint[], $10::timestamptz[], $11::timestamptz[], $12::text[], \
                     $13::int[], $14::int[], $15::int[], $16::timestamptz[], $17::text[], $18::text[], $19::text[], \
                     $20::uuid[], $21::timestamptz[], $22::text[], $23::smallint[], $24::uuid[], $25::text[]) \
              as r(id, title, description, status, priority, caps, parent, version, position, created_at, \
                   updated_at, created_by, max_attempts, attempt, failures, run_after, input, result, errors, \
                   agent_id, lease_expires_at, progress_message, progress_percent, workflow_run_id, stage_key) \
         on conflict (id) do update set title = excluded.title, description = excluded.description, \
             status = excluded.status, priority = excluded.priority, \
             required_capabilities = excluded.required_capabilities, parent_task_id = excluded.parent_task_id, \
             version = excluded.version, position = excluded.position, updated_at = excluded.updated_at, \
             max_attempts = excluded.max_attempts, attempt = excluded.attempt, failures = excluded.failures, \
             run_after = excluded.run_after, input = excluded.input, result = excluded.result, \
             errors = excluded.errors, agent_id = excluded.agent_id, lease_expires_at = excluded.lease_expires_at, \
             progress_message = excluded.progress_message, progress_percent = excluded.progress_percent, \
             workflow_run_id = excluded.workflow_run_id, stage_key = excluded.stage_key"
    ))
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.title.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.description.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.priority).collect::<Vec<_>>())
    .bind(&caps)
    .bind(rows.iter().map(|r| r.parent_task_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created_by.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.max_attempts).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.attempt).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.failures).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.run_after).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.input.as_ref().map(json)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.result.as_ref().map(json)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| json(&r.errors)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.agent_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.lease_expires_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.progress_message.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.progress_percent).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.workflow_run_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.stage_key.as_deref()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

fn task_id(recorded: &Recorded) -> Option<Uuid> {
    recorded.meta.stream_id.id_of(Task::KIND)
}
