//! Workflows: templates of stages that depend on each other, and their runs.

use async_graphql::{Context, Enum, InputObject, Json, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use devart_commands::Folded;
use devart_domain::task::{Capabilities, Description, MaxAttempts, Priority, Title};
use devart_domain::workflow::{RunState, RunStatus, StageSpec, StageStatus, Stages, WorkflowName, WorkflowState};
use devart_projections::workflows::{
    StageDefinition, StageProgress, WorkflowRow, WorkflowRunRow, RUN_COLUMNS, WORKFLOW_COLUMNS,
};
use devart_projections::{ColumnError, RowError};
use futures::{Stream, StreamExt};

use super::tasks::{task_by_id, Task};
use super::{
    command_context, document, domain, from_row, from_rows, new_aggregate_id, page_size, parse_id, person, read,
    require, services,
};
use crate::auth::Role;
use crate::error::gql;

#[derive(Debug, Clone, InputObject)]
pub struct DefineWorkflowInput {
    /// Names ignore case: defining a name again makes the workflow's next version.
    pub name: String,
    #[graphql(default)]
    pub description: String,
    /// 1 to 100 stages; their dependencies must form a DAG.
    pub stages: Vec<StageInput>,
}

#[derive(Debug, Clone, InputObject)]
pub struct StageInput {
    /// Unique in the workflow: 1 to 64 of `A-Z a-z 0-9 _ -`.
    pub key: String,
    /// The title of the stage's task.
    pub title: String,
    #[graphql(default)]
    pub description: String,
    /// 1 (lowest) to 5 (highest).
    #[graphql(default = 3)]
    pub priority: i32,
    #[graphql(default)]
    pub required_capabilities: Vec<String>,
    /// Keys of the stages that must complete first; their results are in this stage's task input.
    #[graphql(default)]
    pub depends_on: Vec<String>,
    #[graphql(default = 3)]
    pub max_attempts: i32,
    /// The stage's task waits in `AWAITING_APPROVAL` until a supervisor approves it
    /// (`approveTask`); a rejection (`rejectTask`) fails the stage and the run.
    #[graphql(default)]
    pub requires_approval: bool,
}

/// A workflow template, at its newest version.
#[derive(Debug, Clone, SimpleObject)]
pub struct Workflow {
    pub id: ID,
    pub name: String,
    pub description: String,
    /// 1 for the first definition; each changed definition adds one. Runs keep their version.
    pub version: i32,
    pub stages: Vec<WorkflowStage>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct WorkflowStage {
    pub key: String,
    pub title: String,
    pub description: String,
    pub priority: i32,
    pub required_capabilities: Vec<String>,
    pub depends_on: Vec<String>,
    pub max_attempts: i32,
    /// Its task waits for a supervisor's approval before any agent may claim it.
    pub requires_approval: bool,
}

impl From<StageDefinition> for WorkflowStage {
    fn from(s: StageDefinition) -> Self {
        WorkflowStage {
            key: s.key,
            title: s.title,
            description: s.description,
            priority: i32::from(s.priority),
            required_capabilities: s.required_capabilities,
            depends_on: s.depends_on,
            max_attempts: s.max_attempts as i32,
            requires_approval: s.requires_approval,
        }
    }
}

impl From<&StageSpec> for WorkflowStage {
    fn from(s: &StageSpec) -> Self {
        StageDefinition::from(s).into()
    }
}

impl From<WorkflowRow> for Workflow {
    fn from(r: WorkflowRow) -> Self {
        Workflow {
            id: ID(r.id.to_string()),
            name: r.name,
            description: r.description,
            version: r.version,
            stages: r.stages.0.into_iter().map(WorkflowStage::from).collect(),
            created_at: Some(r.created_at),
            updated_at: Some(r.updated_at),
        }
    }
}

impl From<Folded<WorkflowState>> for Workflow {
    fn from(f: Folded<WorkflowState>) -> Self {
        let s = f.state;
        Workflow {
            id: ID(s.id.to_string()),
            name: s.name,
            description: s.description,
            version: s.version as i32,
            stages: s.stages.iter().map(WorkflowStage::from).collect(),
            created_at: f.created_at,
            updated_at: f.updated_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum WorkflowRunStatus {
    Running,
    Completed,
    Failed,
}

/// The table runs are read from, for errors naming a row.
const RUNS_TABLE: &str = "workflow_runs";

impl WorkflowRunStatus {
    /// A status as the read model stores it; `None` for any other text.
    fn stored(s: &str) -> Option<WorkflowRunStatus> {
        match s {
            "RUNNING" => Some(WorkflowRunStatus::Running),
            "COMPLETED" => Some(WorkflowRunStatus::Completed),
            "FAILED" => Some(WorkflowRunStatus::Failed),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            WorkflowRunStatus::Running => RunStatus::Running.as_str(),
            WorkflowRunStatus::Completed => RunStatus::Completed.as_str(),
            WorkflowRunStatus::Failed => RunStatus::Failed.as_str(),
        }
    }
}

/// A run as the write side knows it; one not started yet is not shown (time travel asks
/// `version > 0`), so it has no status of its own here.
impl From<RunStatus> for WorkflowRunStatus {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Absent | RunStatus::Running => WorkflowRunStatus::Running,
            RunStatus::Completed => WorkflowRunStatus::Completed,
            RunStatus::Failed => WorkflowRunStatus::Failed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum StageRunStatus {
    /// A dependency has not completed yet.
    Waiting,
    /// Its task waits for an agent (first time, or for another attempt).
    Pending,
    InProgress,
    Completed,
    Failed,
    /// Its task was cancelled: by a supervisor, or because the run failed.
    Cancelled,
    /// The run failed before the stage could start.
    Skipped,
}

impl StageRunStatus {
    /// A stage's status as the read model stores it; `None` for any other text.
    fn stored(s: &str) -> Option<StageRunStatus> {
        Some(match s {
            "WAITING" => StageRunStatus::Waiting,
            "PENDING" => StageRunStatus::Pending,
            "IN_PROGRESS" => StageRunStatus::InProgress,
            "COMPLETED" => StageRunStatus::Completed,
            "FAILED" => StageRunStatus::Failed,
            "CANCELLED" => StageRunStatus::Cancelled,
            "SKIPPED" => StageRunStatus::Skipped,
            _ => return None,
        })
    }
}

/// One run of a workflow version.
#[derive(Debug, Clone, SimpleObject)]
pub struct WorkflowRun {
    pub id: ID,
    pub workflow_id: ID,
    pub workflow_name: String,
    pub workflow_version: i32,
    pub status: WorkflowRunStatus,
    pub input: Option<Json<serde_json::Value>>,
    /// Why the run failed.
    pub failure: Option<String>,
    /// In the workflow's order.
    pub stages: Vec<WorkflowRunStage>,
    pub created_by: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The run stream's version: it counts the run's own events. A stage task's progress
    /// (claimed, retried) changes the run as shown without changing its version.
    pub version: i64,
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct WorkflowRunStage {
    pub key: String,
    pub title: String,
    pub depends_on: Vec<String>,
    pub required_capabilities: Vec<String>,
    pub status: StageRunStatus,
    /// The task that carries the stage out, once the stage has started.
    pub task_id: Option<ID>,
    /// The attempt its task is on.
    pub attempt: i32,
    /// What its task returned.
    pub result: Option<Json<serde_json::Value>>,
    /// Its last error: of a failed attempt, or why it failed.
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[async_graphql::ComplexObject]
impl WorkflowRunStage {
    /// The stage's task, as the task board holds it.
    async fn task(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Task>> {
        let Some(id) = &self.task_id else { return Ok(None) };
        task_by_id(ctx, parse_id("taskId", id)?).await
    }
}

impl WorkflowRunStage {
    /// A stage as its run's row holds it; the problem with its status if that is none of ours.
    fn read(s: StageProgress) -> Result<WorkflowRunStage, ColumnError> {
        let status = StageRunStatus::stored(&s.status).ok_or_else(|| {
            ColumnError::new("stages", format!("stage `{}`: `{}` is not a stage status", s.definition.key, s.status))
        })?;
        Ok(WorkflowRunStage {
            key: s.definition.key,
            title: s.definition.title,
            depends_on: s.definition.depends_on,
            required_capabilities: s.definition.required_capabilities,
            status,
            task_id: s.task_id.map(|t| ID(t.to_string())),
            attempt: s.attempt as i32,
            result: s.result.map(Json),
            error: s.error,
            started_at: s.started_at,
            finished_at: s.finished_at,
        })
    }
}

/// A run's row as the API shows it; a run or stage status that is none of ours is an error naming
/// the row, never a run still going or a stage still waiting made up.
impl TryFrom<WorkflowRunRow> for WorkflowRun {
    type Error = RowError;

    fn try_from(r: WorkflowRunRow) -> Result<WorkflowRun, RowError> {
        let id = r.id;
        let status = WorkflowRunStatus::stored(&r.status).ok_or_else(|| {
            ColumnError::new("status", format!("`{}` is not a run status", r.status)).in_row(RUNS_TABLE, id)
        })?;
        let stages = r
            .stages
            .0
            .into_iter()
            .map(WorkflowRunStage::read)
            .collect::<Result<_, _>>()
            .map_err(|e| e.in_row(RUNS_TABLE, id))?;
        Ok(WorkflowRun {
            id: ID(id.to_string()),
            workflow_id: ID(r.workflow_id.to_string()),
            workflow_name: r.workflow_name,
            workflow_version: r.workflow_version,
            status,
            input: r.input.map(|j| Json(j.0)),
            failure: r.failure,
            stages,
            created_by: Some(r.created_by),
            created_at: Some(r.created_at),
            updated_at: Some(r.updated_at),
            finished_at: r.finished_at,
            version: r.version,
        })
    }
}

/// A run as the write side just left it (its tasks exist, none has been claimed yet).
impl From<Folded<RunState>> for WorkflowRun {
    fn from(f: Folded<RunState>) -> Self {
        let s = f.state;
        let json = |text: &Option<String>| text.as_deref().and_then(|t| serde_json::from_str(t).ok()).map(Json);
        let finished = matches!(s.status, RunStatus::Completed | RunStatus::Failed);
        WorkflowRun {
            id: ID(s.id.to_string()),
            workflow_id: ID(s.workflow_id.to_string()),
            workflow_name: s.workflow_name,
            workflow_version: s.workflow_version as i32,
            status: s.status.into(),
            input: json(&s.input),
            failure: s.failure,
            stages: s
                .stages
                .iter()
                .map(|stage| WorkflowRunStage {
                    key: stage.spec.key.clone(),
                    title: stage.spec.title.clone(),
                    depends_on: stage.spec.depends_on.clone(),
                    required_capabilities: stage.spec.required_capabilities.clone(),
                    status: match stage.status {
                        StageStatus::Waiting => StageRunStatus::Waiting,
                        StageStatus::Started => StageRunStatus::Pending,
                        StageStatus::Completed => StageRunStatus::Completed,
                        StageStatus::Failed => StageRunStatus::Failed,
                        StageStatus::Skipped => StageRunStatus::Skipped,
                    },
                    task_id: stage.task_id.map(|t| ID(t.to_string())),
                    attempt: 0,
                    result: json(&stage.result),
                    error: stage.error.clone(),
                    started_at: None,
                    finished_at: None,
                })
                .collect(),
            created_by: f.created_by,
            created_at: f.created_at,
            updated_at: f.updated_at,
            finished_at: finished.then_some(f.updated_at).flatten(),
            version: f.version as i64,
        }
    }
}

#[derive(Default)]
pub struct WorkflowsQuery;

#[Object]
impl WorkflowsQuery {
    /// Every workflow at its newest version, by name.
    async fn workflows(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Workflow>> {
        person(ctx)?;
        let rows: Vec<WorkflowRow> =
            sqlx::query_as(&format!("select {WORKFLOW_COLUMNS} from workflows order by lower(name), id"))
                .fetch_all(read(ctx).await?.conn())
                .await
                .map_err(gql)?;
        Ok(rows.into_iter().map(Workflow::from).collect())
    }

    async fn workflow(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Workflow>> {
        person(ctx)?;
        let id = parse_id("id", &id)?;
        let row: Option<WorkflowRow> =
            sqlx::query_as(&format!("select {WORKFLOW_COLUMNS} from workflows where id = $1"))
                .bind(id)
                .fetch_optional(read(ctx).await?.conn())
                .await
                .map_err(gql)?;
        Ok(row.map(Workflow::from))
    }

    /// Runs, newest first; of one workflow and in one status if given.
    async fn workflow_runs(
        &self,
        ctx: &Context<'_>,
        workflow_id: Option<ID>,
        status: Option<WorkflowRunStatus>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<WorkflowRun>> {
        person(ctx)?;
        let workflow_id = workflow_id.map(|w| parse_id("workflowId", &w)).transpose()?;
        let limit = page_size(first)? as i64;
        let rows: Vec<WorkflowRunRow> = sqlx::query_as(&format!(
            "select {RUN_COLUMNS} from workflow_runs \
             where ($1::uuid is null or workflow_id = $1) and ($2::text is null or status = $2) \
             order by created_at desc, id desc limit $3"
        ))
        .bind(workflow_id)
        .bind(status.map(WorkflowRunStatus::as_str))
        .bind(limit)
        .fetch_all(read(ctx).await?.conn())
        .await
        .map_err(gql)?;
        from_rows(rows)
    }

    async fn workflow_run(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<WorkflowRun>> {
        person(ctx)?;
        let id = parse_id("id", &id)?;
        let row: Option<WorkflowRunRow> =
            sqlx::query_as(&format!("select {RUN_COLUMNS} from workflow_runs where id = $1"))
                .bind(id)
                .fetch_optional(read(ctx).await?.conn())
                .await
                .map_err(gql)?;
        row.map(from_row).transpose()
    }
}

#[derive(Default)]
pub struct WorkflowsMutation;

#[Object]
impl WorkflowsMutation {
    /// Defines a workflow (supervisor), or its next version when the name exists. Stages must form
    /// a DAG: unknown keys, duplicates and cycles are BAD_USER_INPUT.
    async fn define_workflow(&self, ctx: &Context<'_>, input: DefineWorkflowInput) -> async_graphql::Result<Workflow> {
        let caller = require(ctx, Role::Supervisor)?;
        let name = domain(WorkflowName::parse(&input.name))?;
        let description = domain(Description::parse(&input.description))?;
        let stages = input
            .stages
            .into_iter()
            .map(|s| {
                let stage = StageSpec::new(
                    &s.key,
                    Title::parse(&s.title)?,
                    Description::parse(&s.description)?,
                    Priority::parse(i64::from(s.priority))?,
                    Capabilities::parse(&s.required_capabilities)?,
                    s.depends_on,
                    MaxAttempts::parse(i64::from(s.max_attempts))?,
                )?;
                Ok(StageSpec { requires_approval: s.requires_approval, ..stage })
            })
            .collect::<Result<Vec<_>, _>>()
            .and_then(Stages::parse)
            .map_err(gql)?;
        let context = command_context(ctx, &caller);
        let folded =
            services(ctx).commands.workflows().define(name, description, stages, &context).await.map_err(gql)?;
        Ok(folded.into())
    }

    /// Starts a run of a workflow's newest version (supervisor) and creates the tasks of its
    /// stages without dependencies; `input` reaches every stage's task.
    async fn start_workflow(
        &self,
        ctx: &Context<'_>,
        workflow_id: ID,
        input: Option<Json<serde_json::Value>>,
    ) -> async_graphql::Result<WorkflowRun> {
        let caller = require(ctx, Role::Supervisor)?;
        let workflow_id = parse_id("workflowId", &workflow_id)?;
        let input = input.map(|j| document("input", &j.0)).transpose()?;
        let context = command_context(ctx, &caller);
        let run_id = new_aggregate_id(ctx, &context);
        let folded =
            services(ctx).commands.workflows().start(workflow_id, run_id, input, &context).await.map_err(gql)?;
        Ok(folded.into())
    }
}

#[derive(Default)]
pub struct WorkflowsSubscription;

#[Subscription]
impl WorkflowsSubscription {
    /// Runs with every stage's status, each time one changed; optionally of one run.
    async fn workflow_run_updates(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<WorkflowRun>>> {
        person(ctx)?;
        let id = id.map(|i| parse_id("id", &i)).transpose()?;
        let updates = services(ctx).live.runs.subscribe();
        Ok(updates.filter_map(move |row| {
            futures::future::ready(id.is_none_or(|id| id == row.id).then(|| from_row(row.as_ref().clone())))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str, stage: &str) -> WorkflowRunRow {
        let definition = StageDefinition {
            key: "build".into(),
            title: "Build".into(),
            description: String::new(),
            priority: 3,
            required_capabilities: Vec::new(),
            depends_on: Vec::new(),
            max_attempts: 3,
            requires_approval: false,
        };
        let progress = StageProgress {
            definition,
            status: stage.into(),
            task_id: None,
            attempt: 0,
            result: None,
            error: None,
            started_at: None,
            finished_at: None,
        };
        WorkflowRunRow {
            id: uuid::Uuid::from_u128(11),
            workflow_id: uuid::Uuid::from_u128(12),
            workflow_name: "release".into(),
            workflow_version: 1,
            status: status.into(),
            input: None,
            failure: None,
            stages: sqlx::types::Json(vec![progress]),
            created_by: "user:ada".into(),
            version: 2,
            position: 2,
            created_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
            finished_at: None,
        }
    }

    #[test]
    fn a_run_status_that_is_none_of_ours_is_an_error_not_a_running_run() {
        let error = WorkflowRun::try_from(row("PAUSED", "WAITING")).unwrap_err();
        assert_eq!((error.table.as_str(), error.column.as_str()), ("workflow_runs", "status"));
        assert_eq!(error.row, uuid::Uuid::from_u128(11).to_string());
        assert!(error.problem.contains("`PAUSED`"), "{error}");
    }

    #[test]
    fn a_stage_status_that_is_none_of_ours_is_an_error_naming_the_stage() {
        let error = WorkflowRun::try_from(row("RUNNING", "BLOCKED")).unwrap_err();
        assert_eq!((error.table.as_str(), error.column.as_str()), ("workflow_runs", "stages"));
        assert!(error.problem.contains("`build`") && error.problem.contains("`BLOCKED`"), "{error}");
        let run = WorkflowRun::try_from(row("RUNNING", "IN_PROGRESS")).unwrap();
        assert_eq!((run.status, run.stages[0].status), (WorkflowRunStatus::Running, StageRunStatus::InProgress));
    }
}
