//! The GraphQL schema: queries, mutations and subscriptions. Only this crate knows GraphQL.
//!
//! One module per area, each with its types, queries, mutations and subscriptions, merged into the
//! roots here: `tasks` (the task board), `work` (agents at work, the queue), `agents`, `events`
//! (the audit trail and the read models' progress), `workflows`, `budgets`, `settings`, `audit`
//! (integrity and time travel), `people`, `analytics` (charts and cost outliers), `knowledge`
//! (the knowledge base's documents and their search). `reads` is how a request reads. This
//! module keeps the roots, what a resolver asks of its request (the caller, the services, a
//! command's context) and the parsers the areas share. `live` feeds the subscriptions.

use async_graphql::{Context, Object, SimpleObject, ID};
use devart_commands::CommandContext;
use devart_domain::task::Document;
use devart_domain::Position;
use devart_projections::RowError;
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::error::{bad_input, error, gql, internal, Code};
use crate::Services;

pub type Schema = async_graphql::Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

mod agents;
mod analytics;
mod approvals;
mod audit;
mod budgets;
mod claims;
mod events;
pub mod knowledge;
pub mod live;
mod people;
mod reads;
mod settings;
mod tasks;
mod work;
mod workflows;

#[derive(async_graphql::MergedObject, Default)]
pub struct QueryRoot(
    CallerQuery,
    tasks::TasksQuery,
    events::EventsQuery,
    agents::AgentsQuery,
    events::ProjectionsQuery,
    work::WorkQuery,
    workflows::WorkflowsQuery,
    budgets::BudgetsQuery,
    settings::SettingsQuery,
    audit::AuditQuery,
    people::PeopleQuery,
    audit::TimeTravelQuery,
    analytics::AnalyticsQuery,
    analytics::OutliersQuery,
    claims::ClaimsQuery,
    approvals::ApprovalsQuery,
    knowledge::KnowledgeQuery,
);

#[derive(async_graphql::MergedObject, Default)]
pub struct MutationRoot(
    tasks::TasksMutation,
    agents::AgentsMutation,
    tasks::DeleteTaskMutation,
    work::WorkMutation,
    workflows::WorkflowsMutation,
    budgets::BudgetsMutation,
    settings::SettingsMutation,
    analytics::OutliersMutation,
    people::PeopleMutation,
    claims::ClaimsMutation,
    approvals::ApprovalsMutation,
    knowledge::KnowledgeMutation,
);

#[derive(async_graphql::MergedSubscription, Default)]
pub struct SubscriptionRoot(
    events::EventsSubscription,
    knowledge::KnowledgeSubscription,
    tasks::TasksSubscription,
    workflows::WorkflowsSubscription,
    budgets::BudgetsSubscription,
    agents::AgentsSubscription,
    work::WorkSubscription,
    settings::SettingsSubscription,
    analytics::OutliersSubscription,
    people::PeopleSubscription,
    claims::ClaimsSubscription,
);

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

/// A read-model row as the API's object. A row that does not decode is a defect, not something to
/// guess around: the field fails as INTERNAL, and the log names the table, the row and the value.
pub(crate) fn from_row<R, T: TryFrom<R, Error = RowError>>(row: R) -> async_graphql::Result<T> {
    T::try_from(row).map_err(internal)
}

/// [`from_row`] for each of `rows`.
pub(crate) fn from_rows<R, T: TryFrom<R, Error = RowError>>(rows: Vec<R>) -> async_graphql::Result<Vec<T>> {
    rows.into_iter().map(from_row).collect()
}

/// A JSON argument as the document a task carries.
pub(crate) fn document(field: &'static str, value: &serde_json::Value) -> async_graphql::Result<Document> {
    domain(Document::parse(field, value.to_string()))
}

/// Who is asking.
#[derive(Default)]
pub struct CallerQuery;

#[Object]
impl CallerQuery {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_that_does_not_decode_is_an_internal_error() {
        let row = devart_projections::users::UserRow {
            id: Uuid::from_u128(1),
            email: "vera@example.org".into(),
            role: "owner".into(),
            active: true,
            version: 1,
            position: 1,
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        };
        let error = from_row::<_, people::User>(row).unwrap_err();
        let code = error.extensions.as_ref().and_then(|e| e.get("code")).cloned();
        assert_eq!(code, Some(async_graphql::Value::from("INTERNAL")));
    }
}
