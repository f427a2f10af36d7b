//! The workflows read model: each workflow's newest version, and each run with the status of
//! every stage, from the run's events and from its stage tasks' events.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use devart_commands::Recorded;
use devart_domain::task::{Task, TaskEvent};
use devart_domain::workflow::{RunEvent, StageSpec, WorkflowEvent, WorkflowRun};
use devart_domain::{Aggregate, Event};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use crate::announce::Announced;
use crate::rows::{column, fold_and_upsert, AggregateRows, HasId, Sql};
use crate::{ApplyError, ColumnError, Projection, Target};

/// A row of `workflows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRow {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub version: i32,
    pub stages: Json<Vec<StageDefinition>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const WORKFLOW_COLUMNS: &str = "id, name, description, version, stages, created_at, updated_at";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageDefinition {
    pub key: String,
    pub title: String,
    pub description: String,
    pub priority: u8,
    pub required_capabilities: Vec<String>,
    pub depends_on: Vec<String>,
    pub max_attempts: u32,
    /// Stages stored before approvals existed read as not waiting for one.
    #[serde(default)]
    pub requires_approval: bool,
}

impl From<&StageSpec> for StageDefinition {
    fn from(s: &StageSpec) -> Self {
        StageDefinition {
            key: s.key.clone(),
            title: s.title.clone(),
            description: s.description.clone(),
            priority: s.priority,
            required_capabilities: s.required_capabilities.clone(),
            depends_on: s.depends_on.clone(),
            max_attempts: s.max_attempts,
            requires_approval: s.requires_approval,
        }
    }
}

/// A row of `workflow_runs`, and the payload of its change notifications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRunRow {
    pub id: Uuid,
    pub workflow_id: Uuid,
    pub workflow_name: String,
    pub workflow_version: i32,
    /// `RUNNING`, `COMPLETED` or `FAILED`.
    pub status: String,
    pub input: Option<Json<serde_json::Value>>,
    pub failure: Option<String>,
    pub stages: Json<Vec<StageProgress>>,
    pub created_by: String,
    pub version: i64,
    pub position: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl HasId for WorkflowRunRow {
    fn id(&self) -> Uuid {
        self.id
    }
}

pub const RUN_COLUMNS: &str = "id, workflow_id, workflow_name, workflow_version, status, input, failure, stages, \
                               created_by, version, position, created_at, updated_at, finished_at";

/// Where one stage of a run is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageProgress {
    #[serde(flatten)]
    pub definition: StageDefinition,
    /// `WAITING` (for a dependency), `PENDING` (its task waits for an agent), `IN_PROGRESS`,
    /// `COMPLETED`, `FAILED`, `CANCELLED`, or `SKIPPED` (the run failed first).
    pub status: String,
    pub task_id: Option<Uuid>,
    /// The attempt its task is on.
    pub attempt: u32,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The read model's name.
const NAME: &str = "workflows";

/// What it announces: runs' rows (their definitions are not announced).
pub const ANNOUNCED: Announced<WorkflowRunRow> = Announced::new(NAME);

pub struct WorkflowsProjection;

impl Projection for WorkflowsProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["workflows", Runs::TABLE, "workflow_stage_tasks"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: Target,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, ApplyError>> {
        apply(conn, target, events).boxed()
    }
}

/// Workflow definitions are written as they come; runs are folded one row per run, from their
/// own events and their stage tasks' ([`Runs`]); stage tasks are remembered on the way.
async fn apply(
    conn: &mut PgConnection,
    target: Target,
    events: &[Recorded],
) -> Result<Vec<serde_json::Value>, ApplyError> {
    let (workflows, stage_tasks) = (target.table("workflows"), target.table("workflow_stage_tasks"));
    for recorded in events {
        if let Event::Workflow(WorkflowEvent::Defined { id, version, name, description, stages }) = &recorded.event {
            let stages: Vec<StageDefinition> = stages.iter().map(StageDefinition::from).collect();
            sqlx::query(&format!(
                "insert into {workflows} ({WORKFLOW_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $6) \
                 on conflict (id) do update set name = excluded.name, description = excluded.description, \
                     version = excluded.version, stages = excluded.stages, updated_at = excluded.updated_at"
            ))
            .bind(id)
            .bind(name)
            .bind(description)
            .bind(*version as i32)
            .bind(Json(stages))
            .bind(recorded.meta.occurred_at)
            .execute(&mut *conn)
            .await?;
        }
    }

    // The runs this batch touches: through their own events, or through their stage tasks'.
    let task_ids: Vec<Uuid> = events
        .iter()
        .filter(|r| matches!(r.event, Event::Task(_)))
        .filter_map(|r| r.meta.stream_id.id_of(Task::KIND))
        .collect();
    let stage_of: HashMap<Uuid, (Uuid, String)> = if task_ids.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (Uuid, Uuid, String)>(&format!(
            "select task_id, run_id, stage_key from {stage_tasks} where task_id = any($1)"
        ))
        .bind(&task_ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(task, run, key)| (task, (run, key)))
        .collect()
    };
    let mut runs = Runs { stage_of, new_stage_tasks: Vec::new() };
    let changed = fold_and_upsert(conn, target, &mut runs, events).await?;
    let new_stage_tasks = runs.new_stage_tasks;
    if !new_stage_tasks.is_empty() {
        sqlx::query(&format!(
            "insert into {stage_tasks} (task_id, run_id, stage_key) \
             select * from unnest($1::uuid[], $2::uuid[], $3::text[]) on conflict do nothing"
        ))
        .bind(new_stage_tasks.iter().map(|t| t.0).collect::<Vec<_>>())
        .bind(new_stage_tasks.iter().map(|t| t.1).collect::<Vec<_>>())
        .bind(new_stage_tasks.iter().map(|t| t.2.as_str()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(changed)
}

/// The runs of a batch: each run's row, folded from its events and from its stage tasks' events.
struct Runs {
    /// The run and stage of each stage task the batch names: stored, or started in the batch.
    stage_of: HashMap<Uuid, (Uuid, String)>,
    /// Stage tasks started in the batch: (task, run, stage key).
    new_stage_tasks: Vec<(Uuid, Uuid, String)>,
}

impl AggregateRows for Runs {
    type Row = WorkflowRunRow;
    type Folded = WorkflowRunRow;

    const TABLE: &'static str = "workflow_runs";
    const COLUMNS: &'static [(&'static str, Sql)] = &[
        ("id", Sql::Uuid),
        ("workflow_id", Sql::Uuid),
        ("workflow_name", Sql::Text),
        ("workflow_version", Sql::Int),
        ("status", Sql::Text),
        ("input", Sql::Jsonb),
        ("failure", Sql::Text),
        ("stages", Sql::Jsonb),
        ("created_by", Sql::Text),
        ("version", Sql::BigInt),
        ("position", Sql::BigInt),
        ("created_at", Sql::Timestamptz),
        ("updated_at", Sql::Timestamptz),
        ("finished_at", Sql::Timestamptz),
    ];

    fn row_of(&self, recorded: &Recorded) -> Option<Uuid> {
        let stream = &recorded.meta.stream_id;
        match recorded.event {
            Event::WorkflowRun(_) => stream.id_of(WorkflowRun::KIND),
            Event::Task(_) => self.stage_of.get(&stream.id_of(Task::KIND)?).map(|(run, _)| *run),
            _ => None,
        }
    }

    fn open(&self, row: WorkflowRunRow) -> Result<WorkflowRunRow, ColumnError> {
        Ok(row)
    }

    fn start(&self, _id: Uuid, recorded: &Recorded) -> Option<WorkflowRunRow> {
        started(recorded)
    }

    fn fold(&mut self, row: &mut WorkflowRunRow, recorded: &Recorded) -> bool {
        let meta = &recorded.meta;
        let at = meta.occurred_at;
        match &recorded.event {
            Event::WorkflowRun(event) => {
                let Some(run_id) = meta.stream_id.id_of(WorkflowRun::KIND) else { return false };
                if let Some(fresh) = started(recorded) {
                    *row = fresh;
                }
                run_event(row, event, at);
                if let RunEvent::StageStarted { key, task_id } = event {
                    self.stage_of.insert(*task_id, (run_id, key.clone()));
                    self.new_stage_tasks.push((*task_id, run_id, key.clone()));
                }
                row.version = meta.stream_version as i64;
            }
            Event::Task(event) => {
                let Some((_, key)) = meta.stream_id.id_of(Task::KIND).and_then(|task| self.stage_of.get(&task)) else {
                    return false;
                };
                let Some(stage) = row.stages.0.iter_mut().find(|s| &s.definition.key == key) else { return false };
                task_event(stage, event, at);
            }
            _ => return false,
        }
        row.position = meta.position.map_or(row.position, |p| p.0 as i64);
        row.updated_at = at;
        true
    }

    fn close(&self, row: WorkflowRunRow) -> WorkflowRunRow {
        row
    }

    fn bind<'q>(
        rows: &[&'q WorkflowRunRow],
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(column(rows, |r| r.id))
            .bind(column(rows, |r| r.workflow_id))
            .bind(column(rows, |r| r.workflow_name.as_str()))
            .bind(column(rows, |r| r.workflow_version))
            .bind(column(rows, |r| r.status.as_str()))
            .bind(column(rows, |r| r.input.as_ref().map(|i| Json(&i.0))))
            .bind(column(rows, |r| r.failure.as_deref()))
            .bind(column(rows, |r| Json(&r.stages.0)))
            .bind(column(rows, |r| r.created_by.as_str()))
            .bind(column(rows, |r| r.version))
            .bind(column(rows, |r| r.position))
            .bind(column(rows, |r| r.created_at))
            .bind(column(rows, |r| r.updated_at))
            .bind(column(rows, |r| r.finished_at))
    }
}

/// The row a run's `WorkflowRunStarted` begins, every stage waiting.
fn started(recorded: &Recorded) -> Option<WorkflowRunRow> {
    let Event::WorkflowRun(RunEvent::Started { id, workflow_id, workflow_name, workflow_version, stages, input }) =
        &recorded.event
    else {
        return None;
    };
    let at = recorded.meta.occurred_at;
    Some(WorkflowRunRow {
        id: *id,
        workflow_id: *workflow_id,
        workflow_name: workflow_name.clone(),
        workflow_version: *workflow_version as i32,
        status: "RUNNING".into(),
        input: input.as_deref().and_then(|i| serde_json::from_str(i).ok()).map(Json),
        failure: None,
        stages: Json(
            stages
                .iter()
                .map(|s| StageProgress {
                    definition: s.into(),
                    status: "WAITING".into(),
                    task_id: None,
                    attempt: 0,
                    result: None,
                    error: None,
                    started_at: None,
                    finished_at: None,
                })
                .collect(),
        ),
        created_by: recorded.meta.actor.to_string(),
        version: 0,
        position: 0,
        created_at: at,
        updated_at: at,
        finished_at: None,
    })
}

fn stage<'r>(row: &'r mut WorkflowRunRow, key: &str) -> Option<&'r mut StageProgress> {
    row.stages.0.iter_mut().find(|s| s.definition.key == key)
}

fn run_event(row: &mut WorkflowRunRow, event: &RunEvent, at: DateTime<Utc>) {
    match event {
        RunEvent::Started { .. } => {}
        RunEvent::StageStarted { key, task_id } => {
            if let Some(s) = stage(row, key) {
                s.task_id = Some(*task_id);
                s.started_at = Some(at);
                if s.status == "WAITING" {
                    s.status = "PENDING".into();
                }
            }
        }
        RunEvent::StageCompleted { key, result, .. } => {
            if let Some(s) = stage(row, key) {
                s.status = "COMPLETED".into();
                s.result = result.as_deref().and_then(|r| serde_json::from_str(r).ok());
                s.finished_at = Some(at);
            }
        }
        RunEvent::StageFailed { key, error, .. } => {
            if let Some(s) = stage(row, key) {
                s.status = "FAILED".into();
                s.error = Some(error.clone());
                s.finished_at = Some(at);
            }
        }
        RunEvent::Completed => {
            row.status = "COMPLETED".into();
            row.finished_at = Some(at);
        }
        RunEvent::Failed { reason } => {
            row.status = "FAILED".into();
            row.failure = Some(reason.clone());
            row.finished_at = Some(at);
            for s in row.stages.0.iter_mut().filter(|s| s.status == "WAITING") {
                s.status = "SKIPPED".into();
            }
        }
    }
}

/// What a stage task's event says about its stage, between its start and its outcome.
fn task_event(stage: &mut StageProgress, event: &TaskEvent, at: DateTime<Utc>) {
    match event {
        TaskEvent::Claimed { attempt, .. } => {
            stage.status = "IN_PROGRESS".into();
            stage.attempt = *attempt;
        }
        TaskEvent::AttemptFailed { error, .. } => {
            stage.status = "PENDING".into();
            stage.error = Some(error.clone());
        }
        TaskEvent::LeaseExpired { .. } | TaskEvent::Released { .. } | TaskEvent::Retried => {
            stage.status = "PENDING".into();
        }
        TaskEvent::Completed { .. } => {
            stage.status = "COMPLETED".into();
            stage.finished_at = Some(at);
        }
        TaskEvent::Failed { .. } | TaskEvent::Deleted => {
            stage.status = "FAILED".into();
            stage.finished_at = Some(at);
        }
        TaskEvent::Cancelled { reason } => {
            stage.status = "CANCELLED".into();
            stage.error = reason.clone();
            stage.finished_at = Some(at);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::column_list;

    #[test]
    fn the_columns_read_are_the_columns_written() {
        assert_eq!(RUN_COLUMNS, column_list(Runs::COLUMNS));
    }
}
