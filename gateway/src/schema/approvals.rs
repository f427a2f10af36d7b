//! Requests for approval: an agent working a task asks a supervisor to approve a risky step
//! before it takes it (`requestApproval`), and learns the answer from its heartbeat or the task's
//! updates; a supervisor answers (`decideApproval`); a request nobody answers in time comes to the
//! default it was made with.

use async_graphql::{Context, Enum, Json, Object, SimpleObject, ID};
use chrono::{TimeDelta, Utc};
use devart_domain::task::{Message, TaskCommand};
use devart_projections::tasks::{approvals_of, ApprovalRow, TaskRow, COLUMNS as TASK_COLUMNS};
use devart_projections::{ColumnError, RowError};
use uuid::Uuid;

use super::tasks::{task_by_id, Task};
use super::{caller, command_context, document, domain, new_aggregate_id, parse_id, read, require, services};
use crate::auth::Role;
use crate::error::{bad_input, error, gql, Code};

/// How long a request waits for an answer unless it says: 15 minutes.
const TIMEOUT_DEFAULT: i32 = 15 * 60;
const TIMEOUT_MIN: i32 = 1;
const TIMEOUT_MAX: i32 = 24 * 60 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ApprovalStatus {
    /// Waiting for a supervisor (or its timeout).
    Pending,
    Approved,
    Denied,
}

/// An agent's request for approval of a step in a task, and its answer once given. Who asked and
/// who answered, and when, are the actors and times of its events (`TaskApprovalRequested`,
/// `TaskApprovalDecided`) in the task's history.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct ApprovalRequest {
    pub id: ID,
    pub task_id: ID,
    /// The agent that asked, working the task's attempt `attempt`.
    pub agent_id: ID,
    pub attempt: i32,
    /// What the agent means to do.
    pub action: String,
    /// Whatever the agent gave to judge it by.
    pub details: Option<Json<serde_json::Value>>,
    /// What the request comes to if nobody answers by `expiresAt`.
    pub approve_on_timeout: bool,
    pub expires_at: chrono::DateTime<Utc>,
    pub status: ApprovalStatus,
    /// Nobody answered in time: the status is the request's default.
    pub timed_out: bool,
    /// The supervisor's note with the answer.
    pub note: Option<String>,
    /// When it was asked.
    pub requested_at: Option<chrono::DateTime<Utc>>,
    /// When it was answered, and by whom: `user:<id>`, or `system:approvals` when it ran out.
    pub decided_at: Option<chrono::DateTime<Utc>>,
    pub decided_by: Option<String>,
}

#[async_graphql::ComplexObject]
impl ApprovalRequest {
    /// The task it is about.
    async fn task(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Task>> {
        task_by_id(ctx, parse_id("taskId", &self.task_id)?).await
    }
}

impl ApprovalRequest {
    pub(crate) fn of(task_id: Uuid, row: ApprovalRow) -> ApprovalRequest {
        ApprovalRequest {
            id: ID(row.request_id.to_string()),
            task_id: ID(task_id.to_string()),
            agent_id: ID(row.agent_id.to_string()),
            attempt: row.attempt as i32,
            action: row.action,
            details: row.details.map(Json),
            approve_on_timeout: row.approve_on_timeout,
            expires_at: row.expires_at,
            status: match row.status.as_str() {
                "APPROVED" => ApprovalStatus::Approved,
                "DENIED" => ApprovalStatus::Denied,
                _ => ApprovalStatus::Pending,
            },
            timed_out: row.timed_out,
            note: row.note,
            requested_at: row.requested_at,
            decided_at: row.decided_at,
            decided_by: row.decided_by,
        }
    }
}

/// The requests for approval in a task row, an error naming the row if they do not decode.
pub(crate) fn approvals_in(row: &TaskRow) -> Result<Vec<ApprovalRequest>, RowError> {
    let rows = approvals_of(&row.approvals).map_err(|e: ColumnError| e.in_row("tasks", row.id))?;
    Ok(rows.into_iter().map(|a| ApprovalRequest::of(row.id, a)).collect())
}

#[derive(Default)]
pub struct ApprovalsQuery;

#[Object]
impl ApprovalsQuery {
    /// Requests for approval with this status (pending by default), across tasks, the ones that
    /// run out first first: the supervisors' queue of decisions to make.
    async fn approval_requests(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "ApprovalStatus::Pending")] status: ApprovalStatus,
        #[graphql(default = 100)] first: i32,
    ) -> async_graphql::Result<Vec<ApprovalRequest>> {
        caller(ctx)?;
        let wanted = match status {
            ApprovalStatus::Pending => "PENDING",
            ApprovalStatus::Approved => "APPROVED",
            ApprovalStatus::Denied => "DENIED",
        };
        let first = usize::try_from(first)
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| bad_input("first", format!("must be between 1 and 500, got {first}")))?;
        let rows: Vec<TaskRow> = sqlx::query_as(&format!(
            "select {TASK_COLUMNS} from tasks where approvals @> jsonb_build_array(jsonb_build_object('status', $1::text)) \
             order by updated_at desc limit 500"
        ))
        .bind(wanted)
        .fetch_all(read(ctx).await?.conn())
        .await
        .map_err(gql)?;
        let mut requests = Vec::new();
        for row in &rows {
            requests.extend(approvals_in(row)?.into_iter().filter(|a| a.status == status));
        }
        requests.sort_by_key(|a| a.expires_at);
        requests.truncate(first);
        Ok(requests)
    }
}

#[derive(Default)]
pub struct ApprovalsMutation;

#[Object]
impl ApprovalsMutation {
    /// Asks a supervisor to approve a step before taking it (agent, on a task it holds). The answer
    /// comes in `heartbeat.approvals`, in `taskUpdates` and in `approvalRequests`; unanswered
    /// after `timeoutSeconds` (1 to 86400, 900 by default), the request is approved or denied as
    /// `approveOnTimeout` says (denied by default).
    async fn request_approval(
        &self,
        ctx: &Context<'_>,
        task_id: ID,
        action: String,
        details: Option<Json<serde_json::Value>>,
        timeout_seconds: Option<i32>,
        #[graphql(default)] approve_on_timeout: bool,
    ) -> async_graphql::Result<ApprovalRequest> {
        let caller = caller(ctx)?.clone();
        let Some(agent_id) = caller.agent else {
            return Err(error(Code::Forbidden, "only an agent (authenticated by its API key) asks for approval"));
        };
        let id = parse_id("taskId", &task_id)?;
        let timeout = timeout_seconds.unwrap_or(TIMEOUT_DEFAULT);
        if !(TIMEOUT_MIN..=TIMEOUT_MAX).contains(&timeout) {
            return Err(bad_input(
                "timeoutSeconds",
                format!("must be between {TIMEOUT_MIN} and {TIMEOUT_MAX}, got {timeout}"),
            ));
        }
        let context = command_context(ctx, &caller);
        let request_id = new_aggregate_id(ctx, &context);
        let command = TaskCommand::RequestApproval {
            agent_id,
            request_id,
            action: domain(Message::parse("action", &action))?,
            details: details.map(|d| document("details", &d.0)).transpose()?,
            approve_on_timeout,
            expires_at: Utc::now() + TimeDelta::seconds(i64::from(timeout)),
        };
        let folded = services(ctx).commands.execute::<devart_domain::task::Task>(id, command, &context, None).await;
        let asked = answer(id, request_id, folded.map_err(gql)?)?;
        Ok(ApprovalRequest { requested_at: Some(Utc::now()), ..asked })
    }

    /// Answers a pending request for approval (supervisor), with an optional note. The decision
    /// and who made it are in the task's history.
    async fn decide_approval(
        &self,
        ctx: &Context<'_>,
        task_id: ID,
        request_id: ID,
        approve: bool,
        note: Option<String>,
    ) -> async_graphql::Result<ApprovalRequest> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("taskId", &task_id)?;
        let request_id = parse_id("requestId", &request_id)?;
        let note = note.map(|n| domain(Message::parse("note", &n))).transpose()?;
        let command = TaskCommand::DecideApproval { request_id, approved: approve, note };
        let context = command_context(ctx, &caller);
        let folded = services(ctx).commands.execute::<devart_domain::task::Task>(id, command, &context, None).await;
        let decided = answer(id, request_id, folded.map_err(gql)?)?;
        Ok(ApprovalRequest { decided_at: Some(Utc::now()), decided_by: Some(context.actor.to_string()), ..decided })
    }
}

/// The request `request_id` as the task's state after the command holds it.
fn answer(
    task_id: Uuid,
    request_id: Uuid,
    folded: devart_commands::Folded<devart_domain::task::TaskState>,
) -> async_graphql::Result<ApprovalRequest> {
    let request = folded
        .state
        .approval(request_id)
        .ok_or_else(|| error(Code::Internal, format!("approval request {request_id} is not in task {task_id}")))?;
    Ok(ApprovalRequest::of(task_id, ApprovalRow::of(request)))
}
