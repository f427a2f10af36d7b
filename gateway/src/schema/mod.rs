//! The GraphQL schema: queries, mutations and subscriptions. Only this crate knows GraphQL.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, InputObject, Json, Object, SimpleObject, Subscription, ID};
use base64::Engine;
use chrono::{DateTime, Utc};
use devart_commands::store::EventFilter;
use devart_commands::{CommandContext, Folded, Recorded};
use devart_domain::agent::{AgentName, AgentState, AgentStatus};
use devart_domain::task::{
    Capabilities, CreateTask, Description, Document, MaxAttempts, Priority, Task as TaskAggregate, TaskCommand,
    TaskState, TaskStatus as DomainTaskStatus, Title, UpdateTask,
};
use devart_domain::{ActorKind as DomainActorKind, Position, StreamId};
use devart_projections::agents::{AgentRow, COLUMNS as AGENT_COLUMNS};
use devart_projections::tasks::{TaskRow, COLUMNS as TASK_COLUMNS};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::error::{bad_input, error, gql, internal, Code};
use crate::Services;

pub type Schema = async_graphql::Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

mod analytics;
mod audit;
mod budgets;
mod people;
mod reads;
mod settings;
mod work;
mod workflows;

#[derive(async_graphql::MergedObject, Default)]
pub struct QueryRoot(
    CoreQuery,
    work::WorkQuery,
    workflows::WorkflowsQuery,
    budgets::BudgetsQuery,
    settings::SettingsQuery,
    audit::AuditQuery,
    people::PeopleQuery,
    audit::TimeTravelQuery,
    analytics::AnalyticsQuery,
);

#[derive(async_graphql::MergedObject, Default)]
pub struct MutationRoot(
    CoreMutation,
    work::WorkMutation,
    workflows::WorkflowsMutation,
    budgets::BudgetsMutation,
    settings::SettingsMutation,
    analytics::AnalyticsMutation,
    people::PeopleMutation,
);

#[derive(async_graphql::MergedSubscription, Default)]
pub struct SubscriptionRoot(CoreSubscription, workflows::WorkflowsSubscription, budgets::BudgetsSubscription);

pub fn build(services: Option<Services>) -> Schema {
    let builder =
        async_graphql::Schema::build(QueryRoot::default(), MutationRoot::default(), SubscriptionRoot::default())
            .limit_depth(32)
            .limit_complexity(5_000)
            .extension(reads::RequestReads);
    match services {
        Some(s) if !s.limits.introspection => builder.disable_introspection().data(s).finish(),
        Some(s) => builder.data(s).finish(),
        None => builder.finish(),
    }
}

/// What a request carries besides its query: set by the HTTP and WebSocket layers.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// `Idempotency-Key`: retried mutations with the same key append nothing twice.
    pub idempotency_key: Option<String>,
    /// `X-Correlation-Id`: continues a correlation begun elsewhere.
    pub correlation_id: Option<Uuid>,
    /// The client's address, for the limits on failed sign-ins.
    pub client: Option<std::net::IpAddr>,
}

const PAGE_DEFAULT: i32 = 50;
const PAGE_MAX: i32 = 500;

fn caller<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Caller> {
    ctx.data_opt::<Caller>().ok_or_else(|| error(Code::Unauthenticated, "authentication required"))
}

/// A caller that is a person: agents see their own work (tasks, themselves), not the audit trail,
/// analytics, workflows or the queue at large.
fn person<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Caller> {
    let caller = caller(ctx)?;
    if caller.agent.is_some() {
        return Err(error(Code::Forbidden, "agents see only their own work"));
    }
    Ok(caller)
}

fn require(ctx: &Context<'_>, role: Role) -> async_graphql::Result<Caller> {
    let caller = caller(ctx)?;
    if caller.role >= role {
        Ok(caller.clone())
    } else {
        Err(error(Code::Forbidden, format!("this needs the {} role", format!("{role:?}").to_lowercase())))
    }
}

pub(crate) use reads::read;

fn services<'a>(ctx: &'a Context<'_>) -> &'a Services {
    ctx.data_unchecked::<Services>()
}

/// The command context of a mutation: its id is derived from the request's idempotency key (if
/// any), the caller and the mutation's response key, so a retried request maps to the same ids.
fn command_context(ctx: &Context<'_>, caller: &Caller) -> CommandContext {
    let meta = ctx.data_opt::<RequestMeta>().cloned().unwrap_or_default();
    let mut context = CommandContext::new(caller.actor());
    if let Some(key) = &meta.idempotency_key {
        let name = format!("{}\u{0}{key}\u{0}{}", caller.subject, ctx.item.node.response_key().node);
        context.command_id = Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes());
        context.correlation_id = context.command_id;
    }
    if let Some(correlation) = meta.correlation_id {
        context.correlation_id = correlation;
    }
    context
}

/// `context` continued from the request that created `task`: a successor, a charge or a
/// reservation for a task joins the task's correlation, so `events(correlationId:)` shows
/// everything one request set going. A client's own `X-Correlation-Id` still wins.
async fn continue_task_correlation(
    ctx: &Context<'_>,
    mut context: CommandContext,
    task: Option<Uuid>,
) -> async_graphql::Result<CommandContext> {
    let explicit = ctx.data_opt::<RequestMeta>().is_some_and(|m| m.correlation_id.is_some());
    let Some(task) = task.filter(|_| !explicit) else { return Ok(context) };
    let origin: Option<Uuid> =
        sqlx::query_scalar("select correlation_id from events where stream_id = $1 order by stream_version limit 1")
            .bind(
                devart_domain::StreamId::new(<devart_domain::task::Task as devart_domain::Aggregate>::KIND, task)
                    .as_str(),
            )
            .fetch_optional(&services(ctx).pool)
            .await
            .map_err(gql)?;
    if let Some(origin) = origin {
        context.correlation_id = origin;
    }
    Ok(context)
}

/// The id of an aggregate a mutation creates: with an idempotency key, derived from the command id,
/// so a retried request names the same aggregate; otherwise a fresh UUIDv7.
fn new_aggregate_id(ctx: &Context<'_>, context: &CommandContext) -> Uuid {
    let keyed = ctx.data_opt::<RequestMeta>().is_some_and(|m| m.idempotency_key.is_some());
    if keyed {
        Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, context.command_id.as_bytes())
    } else {
        Uuid::now_v7()
    }
}

const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6465_7661_7274_2d69_6465_6d70_6f74_656e);

fn parse_id(field: &str, id: &ID) -> async_graphql::Result<Uuid> {
    Uuid::parse_str(id.as_str()).map_err(|_| bad_input(field, format!("`{}` is not a UUID", id.as_str())))
}

fn parse_position(field: &str, s: &str) -> async_graphql::Result<Position> {
    s.parse().map_err(|m: String| bad_input(field, m))
}

fn page_size(first: Option<i32>) -> async_graphql::Result<usize> {
    match first.unwrap_or(PAGE_DEFAULT) {
        n @ 0..=PAGE_MAX => Ok(n as usize),
        n => Err(bad_input("first", format!("must be between 0 and {PAGE_MAX}, got {n}"))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum TaskStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    /// Only in `taskUpdates`: the task was deleted.
    Deleted,
}

impl TaskStatus {
    /// Reads a status as the read model stores it (the domain's names).
    fn parse(s: &str) -> TaskStatus {
        DomainTaskStatus::parse(s).map_or(TaskStatus::Pending, TaskStatus::from)
    }

    fn as_str(self) -> &'static str {
        let domain = match self {
            TaskStatus::Pending => DomainTaskStatus::Pending,
            TaskStatus::InProgress => DomainTaskStatus::InProgress,
            TaskStatus::Completed => DomainTaskStatus::Completed,
            TaskStatus::Failed => DomainTaskStatus::Failed,
            TaskStatus::Cancelled => DomainTaskStatus::Cancelled,
            TaskStatus::Deleted => DomainTaskStatus::Deleted,
        };
        domain.as_str()
    }
}

impl From<DomainTaskStatus> for TaskStatus {
    fn from(s: DomainTaskStatus) -> Self {
        match s {
            DomainTaskStatus::Absent | DomainTaskStatus::Pending => TaskStatus::Pending,
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

    /// The task's last cost-outlier flag, if its cost was ever flagged as unusual (see `outliers`).
    async fn cost_outlier(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<analytics::CostOutlier>> {
        analytics::outlier_of(ctx, parse_id("id", &self.id)?).await
    }
}

/// A task as the task board holds it, looked up with the other rows of the request asking.
pub(crate) async fn task_by_id(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Task>> {
    reads::load(ctx, reads::TaskId(id)).await
}

impl From<TaskRow> for Task {
    fn from(r: TaskRow) -> Self {
        let errors: Vec<devart_projections::tasks::AttemptErrorRow> =
            serde_json::from_value(r.errors).unwrap_or_default();
        Task {
            id: ID(r.id.to_string()),
            title: r.title,
            description: r.description,
            status: TaskStatus::parse(&r.status),
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
            lease: r.agent_id.zip(r.lease_expires_at).filter(|_| r.status == "IN_PROGRESS").map(|(agent, at)| Lease {
                agent_id: ID(agent.to_string()),
                attempt: r.attempt,
                expires_at: at,
            }),
            progress: r
                .progress_message
                .map(|message| Progress { message, percent: r.progress_percent.map(i32::from) }),
            workflow_run_id: r.workflow_run_id.map(|w| ID(w.to_string())),
            stage_key: r.stage_key,
        }
    }
}

impl From<Folded<TaskState>> for Task {
    fn from(f: Folded<TaskState>) -> Self {
        let now = Utc::now();
        let created_at = f.created_at.unwrap_or(now);
        TaskRow::from_state(
            f.state,
            f.version,
            created_at,
            f.updated_at.unwrap_or(created_at),
            f.created_by.unwrap_or_default(),
        )
        .into()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ActorKind {
    User,
    Agent,
    System,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

/// One stored event, as the audit trail shows it.
#[derive(Debug, Clone, SimpleObject)]
pub struct Event {
    /// The event id (UUIDv7).
    pub id: ID,
    /// The place in the global order, as a decimal string.
    pub position: String,
    pub stream_id: String,
    /// The place in its stream: 1, 2, 3, …
    pub version: i64,
    #[graphql(name = "type")]
    pub event_type: String,
    pub schema_version: i32,
    pub occurred_at: DateTime<Utc>,
    pub actor: Actor,
    pub correlation_id: ID,
    pub causation_id: Option<ID>,
    /// The payload in its newest schema version.
    pub data: Json<serde_json::Value>,
}

impl From<Recorded> for Event {
    fn from(r: Recorded) -> Self {
        let m = r.meta;
        Event {
            id: ID(m.event_id.to_string()),
            position: m.position.map(|p| p.to_string()).unwrap_or_default(),
            stream_id: m.stream_id.to_string(),
            version: m.stream_version as i64,
            event_type: m.event_type,
            schema_version: i32::from(m.schema_version),
            occurred_at: m.occurred_at,
            actor: Actor {
                kind: match m.actor.kind {
                    DomainActorKind::User => ActorKind::User,
                    DomainActorKind::Agent => ActorKind::Agent,
                    DomainActorKind::System => ActorKind::System,
                },
                id: m.actor.id,
            },
            correlation_id: ID(m.correlation_id.to_string()),
            causation_id: m.causation_id.map(|c| ID(c.to_string())),
            data: Json(devart_commands::codec::to_json(&r.event)),
        }
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

#[derive(Debug, Clone, SimpleObject)]
pub struct ProjectionStatus {
    pub name: String,
    pub checkpoint: String,
    pub head: String,
    pub lag: i64,
    pub updated_at: DateTime<Utc>,
}

/// A worker that claims and carries out tasks.
#[derive(Debug, Clone, SimpleObject)]
pub struct Agent {
    pub id: ID,
    pub name: String,
    pub capabilities: Vec<String>,
    /// A deactivated agent's key is refused.
    pub active: bool,
    /// The public id of the agent's current API key (the `dva_<keyId>_…` prefix).
    pub key_id: String,
    pub version: i64,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it last claimed, heartbeated or reported.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The task it claimed last, while it holds it.
    pub current_task_id: Option<ID>,
    pub tasks_claimed: i64,
    pub tasks_completed: i64,
    /// Attempts that failed: reported failures and expired leases.
    pub tasks_failed: i64,
}

impl From<AgentRow> for Agent {
    fn from(r: AgentRow) -> Self {
        Agent {
            id: ID(r.id.to_string()),
            name: r.name,
            capabilities: r.capabilities,
            active: r.active,
            key_id: r.key_id,
            version: r.version,
            registered_at: r.registered_at,
            updated_at: r.updated_at,
            last_seen_at: r.last_seen_at,
            current_task_id: r.current_task_id.map(|t| ID(t.to_string())),
            tasks_claimed: r.tasks_claimed,
            tasks_completed: r.tasks_completed,
            tasks_failed: r.tasks_failed,
        }
    }
}

impl From<Folded<AgentState>> for Agent {
    fn from(f: Folded<AgentState>) -> Self {
        let s = f.state;
        let now = Utc::now();
        Agent {
            id: ID(s.id.to_string()),
            name: s.name,
            capabilities: s.capabilities,
            active: s.status == AgentStatus::Active,
            key_id: s.key_id,
            version: f.version as i64,
            registered_at: f.created_at.unwrap_or(now),
            updated_at: f.updated_at.unwrap_or(now),
            last_seen_at: None,
            current_task_id: None,
            tasks_claimed: 0,
            tasks_completed: 0,
            tasks_failed: 0,
        }
    }
}

/// A new API key and the agent it belongs to. The key is shown this once: store it safely.
#[derive(Debug, Clone, SimpleObject)]
pub struct AgentRegistration {
    pub agent: Agent,
    pub api_key: String,
}

#[derive(Debug, Clone, InputObject)]
pub struct RegisterAgentInput {
    pub name: String,
    #[graphql(default)]
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Me {
    pub subject: String,
    pub role: Role,
    /// Set when the caller is an agent.
    pub agent_id: Option<ID>,
    /// Set when the caller is a signed-in user.
    pub user_id: Option<ID>,
}

fn domain<T>(r: Result<T, devart_domain::DomainError>) -> async_graphql::Result<T> {
    r.map_err(gql)
}

/// A JSON argument as the document a task carries.
pub(crate) fn document(field: &'static str, value: &serde_json::Value) -> async_graphql::Result<Document> {
    domain(Document::parse(field, value.to_string()))
}

#[derive(Default)]
pub struct CoreQuery;

#[Object]
impl CoreQuery {
    /// Who the token belongs to.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Me> {
        let caller = caller(ctx)?;
        Ok(Me {
            subject: caller.subject.clone(),
            role: caller.role,
            agent_id: caller.agent.map(|a| ID(a.to_string())),
            user_id: caller.user.map(|u| ID(u.to_string())),
        })
    }

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
        connection.edges.extend(
            rows.into_iter().take(limit).map(|r| Edge::new(encode_task_cursor(r.created_at, r.id), Task::from(r))),
        );
        Ok(connection)
    }

    /// The audit trail: every event in global order, optionally of one stream, of some types, or
    /// of one correlation.
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "a position: events after it")] after: Option<String>,
        first: Option<i32>,
        stream_id: Option<String>,
        types: Option<Vec<String>>,
        correlation_id: Option<ID>,
    ) -> async_graphql::Result<Connection<String, Event, EmptyFields, EmptyFields>> {
        person(ctx)?;
        let limit = page_size(first)?;
        let after_position = after.as_deref().map(|a| parse_position("after", a)).transpose()?;
        let filter = EventFilter {
            stream_id: stream_id.map(|s| StreamId::parse(&s).map_err(|m| bad_input("streamId", m))).transpose()?,
            types,
            correlation_id: correlation_id.map(|c| parse_id("correlationId", &c)).transpose()?,
        };
        let mut page = services(ctx)
            .store
            .page(after_position.unwrap_or(Position::START), limit + 1, &filter)
            .await
            .map_err(gql)?;
        let has_next = page.len() > limit;
        page.truncate(limit);
        let mut connection = Connection::new(after_position.is_some_and(|p| p > Position::START), has_next);
        connection.edges.extend(page.into_iter().map(|r| {
            let cursor = r.meta.position.map(|p| p.to_string()).unwrap_or_default();
            Edge::new(cursor, Event::from(r))
        }));
        Ok(connection)
    }

    /// Every registered agent, oldest first.
    async fn agents(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Agent>> {
        caller(ctx)?;
        let rows: Vec<AgentRow> =
            sqlx::query_as(&format!("select {AGENT_COLUMNS} from agents order by registered_at, id"))
                .fetch_all(read(ctx).await?.conn())
                .await
                .map_err(gql)?;
        Ok(rows.into_iter().map(Agent::from).collect())
    }

    /// Each projection's checkpoint and lag behind the event store.
    async fn projections(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ProjectionStatus>> {
        person(ctx)?;
        let status = devart_projections::status::status(&services(ctx).pool).await.map_err(gql)?;
        Ok(status
            .into_iter()
            .map(|s| ProjectionStatus {
                name: s.name,
                checkpoint: s.checkpoint.to_string(),
                head: s.head.to_string(),
                lag: s.lag as i64,
                updated_at: s.updated_at,
            })
            .collect())
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
pub struct CoreMutation;

#[Object]
impl CoreMutation {
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
        };
        let folded = services(ctx).commands.create_task(command, &context).await.map_err(gql)?;
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

    /// Registers an agent (admin). The API key in the answer is shown only this once.
    async fn register_agent(
        &self,
        ctx: &Context<'_>,
        input: RegisterAgentInput,
    ) -> async_graphql::Result<AgentRegistration> {
        let caller = require(ctx, Role::Admin)?;
        let name = domain(AgentName::parse(&input.name))?;
        let capabilities = parse_capabilities(&input.capabilities)?;
        let context = command_context(ctx, &caller);
        let (folded, key) = services(ctx).commands.register_agent(name, capabilities, &context).await.map_err(gql)?;
        Ok(AgentRegistration { agent: folded.into(), api_key: key.expose().to_owned() })
    }

    /// Gives an agent a new API key (admin); the old key stops working at once.
    async fn rotate_agent_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<AgentRegistration> {
        let caller = require(ctx, Role::Admin)?;
        let id = parse_id("id", &id)?;
        let context = command_context(ctx, &caller);
        let (folded, key) = services(ctx).commands.rotate_agent_key(id, &context).await.map_err(gql)?;
        Ok(AgentRegistration { agent: folded.into(), api_key: key.expose().to_owned() })
    }

    /// Activates or deactivates an agent (supervisor); a deactivated agent's key is refused.
    async fn set_agent_active(&self, ctx: &Context<'_>, id: ID, active: bool) -> async_graphql::Result<Agent> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("id", &id)?;
        let context = command_context(ctx, &caller);
        Ok(services(ctx).commands.set_agent_active(id, active, &context).await.map_err(gql)?.into())
    }

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
pub struct CoreSubscription;

fn parse_capabilities(values: &[String]) -> async_graphql::Result<Capabilities> {
    Capabilities::parse(values).map_err(|e| match e {
        devart_domain::DomainError::Invalid { message, .. } => bad_input("capabilities", message),
        other => gql(other),
    })
}

#[Subscription]
impl CoreSubscription {
    /// Every event after `after` (a position; by default, from now on): first those already
    /// stored, then live, with no gap and no repeat between the two.
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        types: Option<Vec<String>>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>>> {
        person(ctx)?;
        let s = services(ctx).clone();
        let after = match after {
            Some(a) => parse_position("after", &a)?,
            None => s.store.head().await.map_err(gql)?,
        };
        let feed = devart_commands::feed::follow(s.store.clone(), s.bus.clone(), after);
        Ok(feed.filter_map(move |item| {
            let keep = match &item {
                Ok(r) => types.as_ref().is_none_or(|t| t.contains(&r.meta.event_type)),
                Err(_) => true,
            };
            futures::future::ready(keep.then(|| item.map(Event::from).map_err(internal)))
        }))
    }

    /// Tasks as the task board holds them, each time the board changed; optionally of one task.
    async fn task_updates(&self, ctx: &Context<'_>, id: Option<ID>) -> async_graphql::Result<impl Stream<Item = Task>> {
        let agent = caller(ctx)?.agent;
        let id = id.map(|i| parse_id("id", &i)).transpose()?;
        let updates = broadcast_stream(services(ctx).task_updates.subscribe());
        // An agent follows what it may read on the board (as the tasks' row policy says): pending
        // tasks, the tasks it holds, and the tasks it created.
        let visible = move |row: &TaskRow| {
            agent.is_none_or(|a| {
                row.status == "PENDING" || row.agent_id == Some(a) || row.created_by == format!("agent:{a}")
            })
        };
        Ok(updates.filter_map(move |row| {
            futures::future::ready((id.is_none_or(|id| id == row.id) && visible(&row)).then(|| Task::from(row)))
        }))
    }
}

/// A broadcast receiver as a stream; a subscriber that falls behind skips what it missed.
pub(crate) fn broadcast_stream<T: Clone + Send + 'static>(
    rx: tokio::sync::broadcast::Receiver<T>,
) -> impl Stream<Item = T> {
    use tokio::sync::broadcast::error::RecvError;
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(row) => return Some((row, rx)),
                Err(RecvError::Lagged(skipped)) => {
                    tracing::warn!(skipped, "a subscriber fell behind")
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}
