//! Tasks: the task board's types, reading it, changing a task's content, and following it live.
//! Claiming and reporting on tasks (agents at work) are in `work`.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, InputObject, Json, Object, SimpleObject, Subscription, ID};
use base64::Engine;
use chrono::{DateTime, Utc};
use devart_commands::spending::TaskSpend;
use devart_commands::Folded;
use devart_domain::money::Money;
use devart_domain::task::{
    Capabilities, CreateTask, Description, MaxAttempts, Message, Priority, Task as TaskAggregate, TaskCommand,
    TaskState, TaskStatus as DomainTaskStatus, Title, UpdateTask,
};
use devart_projections::rows::AggregateRows;
use devart_projections::tasks::{ApprovalRow, AttemptErrorRow, TaskRow, TasksProjection, COLUMNS as TASK_COLUMNS};
use devart_projections::{ColumnError, RowError};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use super::analytics::CostOutlier;
use super::approvals::{approvals_in, ApprovalRequest};
use super::budgets::Decimal;
use super::{
    caller, command_context, continue_task_correlation, document, domain, from_row, new_aggregate_id, page_size,
    parse_id, read, reads, require, services,
};
use crate::auth::Role;
use crate::error::{bad_input, gql};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum TaskStatus {
    /// Created with `requiresApproval`: not claimable until a supervisor approves it.
    AwaitingApproval,
    Pending,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    /// A supervisor refused it before any work (`rejectTask`); final.
    Rejected,
    /// Only in `taskUpdates`: the task was deleted.
    Deleted,
}

impl TaskStatus {
    /// A status as a read model stores it (the domain's names); `None` for any other text,
    /// `ABSENT` included: no stored task is without its creation.
    fn stored(s: &str) -> Option<TaskStatus> {
        match DomainTaskStatus::parse(s)? {
            DomainTaskStatus::Absent => None,
            status => Some(status.into()),
        }
    }

    /// The status in `table`'s row `row`: an error naming both and the text when it is none.
    pub(crate) fn read(table: &str, row: Uuid, text: &str) -> Result<TaskStatus, RowError> {
        TaskStatus::stored(text)
            .ok_or_else(|| ColumnError::new("status", format!("`{text}` is not a task status")).in_row(table, row))
    }

    fn as_str(self) -> &'static str {
        let domain = match self {
            TaskStatus::AwaitingApproval => DomainTaskStatus::AwaitingApproval,
            TaskStatus::Pending => DomainTaskStatus::Pending,
            TaskStatus::InProgress => DomainTaskStatus::InProgress,
            TaskStatus::Completed => DomainTaskStatus::Completed,
            TaskStatus::Failed => DomainTaskStatus::Failed,
            TaskStatus::Cancelled => DomainTaskStatus::Cancelled,
            TaskStatus::Rejected => DomainTaskStatus::Rejected,
            TaskStatus::Deleted => DomainTaskStatus::Deleted,
        };
        domain.as_str()
    }
}

impl From<DomainTaskStatus> for TaskStatus {
    fn from(s: DomainTaskStatus) -> Self {
        match s {
            DomainTaskStatus::Absent | DomainTaskStatus::Pending => TaskStatus::Pending,
            DomainTaskStatus::AwaitingApproval => TaskStatus::AwaitingApproval,
            DomainTaskStatus::Rejected => TaskStatus::Rejected,
            DomainTaskStatus::InProgress => TaskStatus::InProgress,
            DomainTaskStatus::Completed => TaskStatus::Completed,
            DomainTaskStatus::Failed => TaskStatus::Failed,
            DomainTaskStatus::Cancelled => TaskStatus::Cancelled,
            DomainTaskStatus::Deleted => TaskStatus::Deleted,
        }
    }
}

/// A unit of work.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Task {
    pub id: ID,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    /// 1 (lowest) to 5 (highest).
    pub priority: i32,
    pub required_capabilities: Vec<String>,
    pub parent_task_id: Option<ID>,
    /// The task stream's version: pass it as `expectedVersion` to update only what you saw.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `user:<subject>`, `agent:<id>` or `system:<name>`.
    pub created_by: String,
    /// How many attempts fail the task for good.
    pub max_attempts: i32,
    /// Attempts started so far: the number of the current or last claim.
    pub attempt: i32,
    /// Attempts failed since the task was created or last retried.
    pub failures: i32,
    /// Not claimable before this time: a delayed task, or one waiting out its retry backoff.
    pub run_after: Option<DateTime<Utc>>,
    pub input: Option<Json<serde_json::Value>>,
    /// What the agent that completed the task returned.
    pub result: Option<Json<serde_json::Value>>,
    /// Every failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    /// Who works the task and until when; set while it is in progress.
    pub lease: Option<Lease>,
    pub progress: Option<Progress>,
    /// The workflow run and stage the task carries out.
    pub workflow_run_id: Option<ID>,
    pub stage_key: Option<String>,
    /// What may be settled and reserved for the task at most, across all services
    /// (`createTask(maxCost)`, `setTaskMaxCost`); none: only the services' budgets limit it.
    pub max_cost: Option<Decimal>,
    /// Its agents' requests for approval of risky steps (`requestApproval`), oldest first.
    pub approvals: Vec<ApprovalRequest>,
}

/// What has been spent for a task, as authorizations and charges naming it left it.
#[derive(Debug, Clone, SimpleObject)]
pub struct TaskSpending {
    /// Settled by charges.
    pub settled: Decimal,
    /// Held by open reservations.
    pub reserved: Decimal,
    /// What the cap leaves to settle or reserve; none without a cap.
    pub room: Option<Decimal>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct AttemptError {
    pub attempt: i32,
    pub agent_id: ID,
    pub error: String,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Lease {
    pub agent_id: ID,
    pub attempt: i32,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Progress {
    pub message: String,
    /// 0 to 100.
    pub percent: Option<i32>,
}

#[async_graphql::ComplexObject]
impl Task {
    /// The task this one continues.
    async fn parent(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Task>> {
        let Some(parent) = &self.parent_task_id else { return Ok(None) };
        let id = parse_id("parentTaskId", parent)?;
        task_by_id(ctx, id).await
    }

    /// The tasks that continue this one, oldest first.
    async fn children(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Task>> {
        let id = parse_id("id", &self.id)?;
        Ok(reads::load(ctx, reads::ChildrenOf(id)).await?.unwrap_or_default())
    }

    /// What has been settled and is reserved for the task now, across all services; the write
    /// side's own figures, which authorizations naming the task are decided on.
    async fn spending(&self, ctx: &Context<'_>) -> async_graphql::Result<TaskSpending> {
        let id = parse_id("id", &self.id)?;
        let spend = devart_commands::spending::of(services(ctx).commands.store().pool(), id).await.map_err(gql)?;
        let spend =
            spend.unwrap_or(TaskSpend { task_id: id, max_cost: None, settled: Money::ZERO, reserved: Money::ZERO });
        Ok(TaskSpending {
            settled: Decimal(spend.settled),
            reserved: Decimal(spend.reserved),
            room: spend.room().map(Decimal),
        })
    }

    /// The task's last cost-outlier flag, if its cost was ever flagged as unusual (see `outliers`).
    async fn cost_outlier(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<CostOutlier>> {
        super::analytics::outlier_of(ctx, parse_id("id", &self.id)?).await
    }
}

/// A task as the task board holds it, looked up with the other rows of the request asking.
pub(crate) async fn task_by_id(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Task>> {
    reads::load(ctx, reads::TaskId(id)).await
}

/// A task board row as the API shows it; a row whose status or errors do not decode is an error
/// naming the row, never a task made up (a pending one, one without its errors).
impl TryFrom<TaskRow> for Task {
    type Error = RowError;

    fn try_from(r: TaskRow) -> Result<Task, RowError> {
        let status = TaskStatus::read(TasksProjection::TABLE, r.id, &r.status)?;
        let errors: Vec<AttemptErrorRow> = serde_json::from_value(r.errors.clone()).map_err(|e| {
            ColumnError::new("errors", format!("`{}` is not a list of attempt errors: {e}", r.errors))
                .in_row(TasksProjection::TABLE, r.id)
        })?;
        let approvals = approvals_in(&r)?;
        Ok(Task::of(r, status, errors, approvals))
    }
}

impl Task {
    /// The task a row describes, with its status and errors decoded.
    fn of(r: TaskRow, status: TaskStatus, errors: Vec<AttemptErrorRow>, approvals: Vec<ApprovalRequest>) -> Task {
        Task {
            id: ID(r.id.to_string()),
            title: r.title,
            description: r.description,
            status,
            priority: i32::from(r.priority),
            required_capabilities: r.required_capabilities,
            parent_task_id: r.parent_task_id.map(|p| ID(p.to_string())),
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            created_by: r.created_by,
            max_attempts: r.max_attempts,
            attempt: r.attempt,
            failures: r.failures,
            run_after: r.run_after,
            input: r.input.map(Json),
            result: r.result.map(Json),
            errors: errors
                .into_iter()
                .map(|e| AttemptError {
                    attempt: e.attempt as i32,
                    agent_id: ID(e.agent_id.to_string()),
                    error: e.error,
                })
                .collect(),
            lease: r
                .agent_id
                .zip(r.lease_expires_at)
                .filter(|_| status == TaskStatus::InProgress)
                .map(|(agent, at)| Lease { agent_id: ID(agent.to_string()), attempt: r.attempt, expires_at: at }),
            progress: r
                .progress_message
                .map(|message| Progress { message, percent: r.progress_percent.map(i32::from) }),
            workflow_run_id: r.workflow_run_id.map(|w| ID(w.to_string())),
            stage_key: r.stage_key,
            max_cost: r.max_cost.map(|m| Decimal(Money::from_micros(m))),
            approvals,
        }
    }
}

/// A task as the write side just left it: its status and errors come from the domain's state, so
/// there is nothing to decode.
impl From<Folded<TaskState>> for Task {
    fn from(f: Folded<TaskState>) -> Self {
        let now = Utc::now();
        let created_at = f.created_at.unwrap_or(now);
        let status = TaskStatus::from(f.state.status);
        let approvals = f.state.approvals.iter().map(|a| ApprovalRequest::of(f.state.id, ApprovalRow::of(a))).collect();
        let errors = f
            .state
            .errors
            .iter()
            .map(|e| AttemptErrorRow { attempt: e.attempt, agent_id: e.agent_id, error: e.error.clone() })
            .collect();
        let row = TaskRow::from_state(
            f.state,
            f.version,
            created_at,
            f.updated_at.unwrap_or(created_at),
            f.created_by.unwrap_or_default(),
        );
        Task::of(row, status, errors, approvals)
    }
}

#[derive(Debug, Clone, InputObject)]
pub struct TaskFilter {
    /// Any of these statuses.
    pub status: Option<Vec<TaskStatus>>,
    /// Any of these priorities.
    pub priority: Option<Vec<i32>>,
}

#[derive(Debug, Clone, InputObject)]
pub struct CreateTaskInput {
    pub title: String,
    #[graphql(default)]
    pub description: String,
    /// 1 (lowest) to 5 (highest).
    #[graphql(default = 3)]
    pub priority: i32,
    #[graphql(default)]
    pub required_capabilities: Vec<String>,
    /// The task this one continues (task chaining). An agent may create tasks only as successors
    /// of a task it holds.
    pub parent_task_id: Option<ID>,
    /// Attempts before the task fails for good: 1 to 100; by default the
    /// `queue.defaultMaxAttempts` setting (3 unless changed).
    pub max_attempts: Option<i32>,
    /// Not claimable before this time.
    pub run_after: Option<DateTime<Utc>>,
    /// Any JSON document the agent doing the task needs.
    pub input: Option<Json<serde_json::Value>>,
    /// The task waits in `AWAITING_APPROVAL`, never claimable, until a supervisor approves it
    /// (`approveTask`) or rejects it (`rejectTask`).
    #[graphql(default)]
    pub requires_approval: bool,
    /// What may be settled and reserved for the task at most, across all services: an
    /// `authorizeUsage` naming the task that would pass it is refused, saying so.
    pub max_cost: Option<Decimal>,
}

#[derive(Debug, Clone, InputObject)]
pub struct UpdateTaskInput {
    pub title: Option<String>,
    pub description: Option<String>,
    pub priority: Option<i32>,
    pub required_capabilities: Option<Vec<String>>,
    /// Refuse the update (CONFLICT) unless the task is still at this version.
    pub expected_version: Option<i64>,
}

#[derive(Default)]
pub struct TasksQuery;

#[Object]
impl TasksQuery {
    /// A task as the task board holds it; null if there is no such task.
    async fn task(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Task>> {
        caller(ctx)?;
        task_by_id(ctx, parse_id("id", &id)?).await
    }

    /// The task board, newest first.
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        filter: Option<TaskFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Task, EmptyFields, EmptyFields>> {
        caller(ctx)?;
        let limit = page_size(first)?;
        let after = after.map(|c| decode_task_cursor(&c)).transpose()?;
        let statuses: Option<Vec<&str>> =
            filter.as_ref().and_then(|f| f.status.as_ref()).map(|s| s.iter().map(|s| s.as_str()).collect());
        let priorities: Option<Vec<i16>> = match filter.as_ref().and_then(|f| f.priority.as_ref()) {
            None => None,
            Some(ps) => Some(
                ps.iter()
                    .map(|p| Priority::parse(i64::from(*p)).map(|p| i16::from(p.get())))
                    .collect::<Result<_, _>>()
                    .map_err(gql)?,
            ),
        };
        let rows: Vec<TaskRow> = sqlx::query_as(&format!(
            "select {TASK_COLUMNS} from tasks \
             where ($1::text[] is null or status = any($1)) \
               and ($2::smallint[] is null or priority = any($2)) \
               and ($3::timestamptz is null or (created_at, id) < ($3, $4)) \
             order by created_at desc, id desc limit $5"
        ))
        .bind(statuses)
        .bind(priorities)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(limit as i64 + 1)
        .fetch_all(read(ctx).await?.conn())
        .await
        .map_err(gql)?;
        let has_next = rows.len() > limit;
        let mut connection = Connection::new(after.is_some(), has_next);
        for row in rows.into_iter().take(limit) {
            let cursor = encode_task_cursor(row.created_at, row.id);
            connection.edges.push(Edge::new(cursor, from_row(row)?));
        }
        Ok(connection)
    }
}

fn encode_task_cursor(created_at: DateTime<Utc>, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}|{id}", created_at.timestamp_micros()))
}

fn decode_task_cursor(cursor: &str) -> async_graphql::Result<(DateTime<Utc>, Uuid)> {
    let bad = || bad_input("after", "not a cursor from this connection");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (micros, id) = text.split_once('|').ok_or_else(bad)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

#[derive(Default)]
pub struct TasksMutation;

#[Object]
impl TasksMutation {
    /// Creates a task (supervisor; or an agent, as a successor of a task it holds). Returns it as
    /// created.
    async fn create_task(&self, ctx: &Context<'_>, input: CreateTaskInput) -> async_graphql::Result<Task> {
        let caller = caller(ctx)?.clone();
        if caller.agent.is_none() {
            require(ctx, Role::Supervisor)?;
        }
        let parent_task_id = input.parent_task_id.as_ref().map(|p| parse_id("parentTaskId", p)).transpose()?;
        let context = continue_task_correlation(ctx, command_context(ctx, &caller), parent_task_id).await?;
        let command = CreateTask {
            id: new_aggregate_id(ctx, &context),
            title: domain(Title::parse(&input.title))?,
            description: domain(Description::parse(&input.description))?,
            priority: domain(Priority::parse(i64::from(input.priority)))?,
            required_capabilities: domain(Capabilities::parse(&input.required_capabilities))?,
            parent_task_id,
            max_attempts: match input.max_attempts {
                Some(n) => domain(MaxAttempts::parse(i64::from(n)))?,
                None => services(ctx).commands.settings().current().default_max_attempts(),
            },
            run_after: input.run_after,
            input: input.input.map(|j| document("input", &j.0)).transpose()?,
            stage: None,
            requires_approval: input.requires_approval,
            max_cost: input.max_cost.map(|m| m.0),
        };
        let folded = services(ctx).commands.tasks().create(command, &context).await.map_err(gql)?;
        Ok(folded.into())
    }

    /// Changes a task's content (supervisor). Fields left out stay as they are.
    async fn update_task(&self, ctx: &Context<'_>, id: ID, input: UpdateTaskInput) -> async_graphql::Result<Task> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("id", &id)?;
        let update = UpdateTask {
            title: input.title.as_deref().map(Title::parse).transpose().map_err(gql)?,
            description: input.description.as_deref().map(Description::parse).transpose().map_err(gql)?,
            priority: input.priority.map(|p| Priority::parse(i64::from(p))).transpose().map_err(gql)?,
            required_capabilities: input
                .required_capabilities
                .as_deref()
                .map(Capabilities::parse)
                .transpose()
                .map_err(gql)?,
        };
        let expected = match input.expected_version {
            Some(v) if v < 0 => return Err(bad_input("expectedVersion", "must not be negative")),
            v => v.map(|v| v as u64),
        };
        let context = command_context(ctx, &caller);
        let folded = services(ctx)
            .commands
            .execute::<TaskAggregate>(id, TaskCommand::Update(update), &context, expected)
            .await
            .map_err(gql)?;
        Ok(folded.into())
    }

    /// Lets a task awaiting approval be claimed (supervisor): it joins the queue. The decision,
    /// who made it and the note are in the task's history.
    async fn approve_task(&self, ctx: &Context<'_>, id: ID, note: Option<String>) -> async_graphql::Result<Task> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("id", &id)?;
        let note = note.map(|n| domain(Message::parse("note", &n))).transpose()?;
        let context = command_context(ctx, &caller);
        let folded = services(ctx)
            .commands
            .execute::<TaskAggregate>(id, TaskCommand::Approve { note }, &context, None)
            .await
            .map_err(gql)?;
        Ok(folded.into())
    }

    /// Refuses a task awaiting approval, for good (supervisor): it is `REJECTED` and never claimed.
    async fn reject_task(&self, ctx: &Context<'_>, id: ID, reason: String) -> async_graphql::Result<Task> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("id", &id)?;
        let reason = domain(Message::parse("reason", &reason))?;
        let context = command_context(ctx, &caller);
        let folded = services(ctx)
            .commands
            .execute::<TaskAggregate>(id, TaskCommand::Reject { reason }, &context, None)
            .await
            .map_err(gql)?;
        Ok(folded.into())
    }

    /// Caps what may be settled and reserved for a task, or changes its cap (supervisor). A cap
    /// below what the task has spent already refuses every further authorization naming it.
    async fn set_task_max_cost(&self, ctx: &Context<'_>, id: ID, max_cost: Decimal) -> async_graphql::Result<Task> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("id", &id)?;
        let context = command_context(ctx, &caller);
        let folded = services(ctx)
            .commands
            .execute::<TaskAggregate>(id, TaskCommand::SetMaxCost { max_cost: max_cost.0 }, &context, None)
            .await
            .map_err(gql)?;
        Ok(folded.into())
    }

    /// Sets a task's priority (supervisor).
    async fn reprioritize_task(&self, ctx: &Context<'_>, id: ID, priority: i32) -> async_graphql::Result<Task> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("id", &id)?;
        let priority = domain(Priority::parse(i64::from(priority)))?;
        let context = command_context(ctx, &caller);
        let folded = services(ctx)
            .commands
            .execute::<TaskAggregate>(id, TaskCommand::Reprioritize(priority), &context, None)
            .await
            .map_err(gql)?;
        Ok(folded.into())
    }
}

/// Deleting a task: apart from the other task mutations only so that the schema keeps its order of
/// fields (after the agents').
#[derive(Default)]
pub struct DeleteTaskMutation;

#[Object]
impl DeleteTaskMutation {
    /// Deletes a task (supervisor). True once it is deleted.
    async fn delete_task(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("id", &id)?;
        let context = command_context(ctx, &caller);
        services(ctx).commands.execute::<TaskAggregate>(id, TaskCommand::Delete, &context, None).await.map_err(gql)?;
        Ok(true)
    }
}

#[derive(Default)]
pub struct TasksSubscription;

#[Subscription]
impl TasksSubscription {
    /// Tasks as the task board holds them, each time the board changed; optionally of one task.
    async fn task_updates(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Task>>> {
        let agent = caller(ctx)?.agent;
        let id = id.map(|i| parse_id("id", &i)).transpose()?;
        let updates = services(ctx).live.tasks.subscribe();
        // An agent follows what it may read on the board (as the tasks' row policy says): pending
        // tasks, the tasks it holds, and the tasks it created.
        let visible = move |row: &TaskRow| {
            agent.is_none_or(|a| {
                row.status == "PENDING" || row.agent_id == Some(a) || row.created_by == format!("agent:{a}")
            })
        };
        Ok(updates.filter_map(move |row| {
            let keep = id.is_none_or(|id| id == row.id) && visible(&row);
            futures::future::ready(keep.then(|| from_row(row.as_ref().clone())))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str) -> TaskRow {
        let id = Uuid::from_u128(7);
        let state = TaskState { id, status: DomainTaskStatus::Pending, ..TaskState::default() };
        let mut row = TaskRow::from_state(state, 1, DateTime::UNIX_EPOCH, DateTime::UNIX_EPOCH, "user:ada".into());
        row.status = status.into();
        row
    }

    #[test]
    fn a_status_that_is_none_is_an_error_naming_the_table_the_row_and_the_text() {
        for text in ["PENDNG", "ABSENT", ""] {
            let error = Task::try_from(row(text)).unwrap_err();
            assert_eq!((error.table.as_str(), error.column.as_str()), ("tasks", "status"));
            assert_eq!(error.row, Uuid::from_u128(7).to_string());
            assert!(error.to_string().contains(&format!("`{text}`")), "{error}");
        }
        assert_eq!(Task::try_from(row("IN_PROGRESS")).unwrap().status, TaskStatus::InProgress);
    }

    #[test]
    fn errors_that_do_not_decode_are_an_error_not_an_empty_list() {
        let mut bad = row("FAILED");
        bad.errors = serde_json::json!([{ "attempt": "first" }]);
        let error = Task::try_from(bad).unwrap_err();
        assert_eq!((error.table.as_str(), error.column.as_str()), ("tasks", "errors"));
        assert!(error.problem.contains("first"), "{error}");

        let mut good = row("FAILED");
        let agent = Uuid::from_u128(9);
        good.errors = serde_json::json!([{ "attempt": 1, "agentId": agent, "error": "boom" }]);
        let task = Task::try_from(good).unwrap();
        assert_eq!((task.errors.len(), task.errors[0].error.as_str()), (1, "boom"));
    }

    #[test]
    fn an_analytics_status_names_its_own_table() {
        let error = TaskStatus::read("analytics_tasks", Uuid::from_u128(3), "DONE").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("table analytics_tasks, row {}: column status: `DONE` is not a task status", Uuid::from_u128(3))
        );
    }
}
