//! Agents: their registration, keys and activation, and the agents read model.

use async_graphql::{Context, InputObject, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use devart_commands::spending::AgentSpend;
use devart_commands::Folded;
use devart_domain::agent::{Agent as AgentAggregate, AgentCommand, AgentName, AgentState, AgentStatus};
use devart_domain::money::Money;
use devart_domain::task::Capabilities;
use devart_projections::agents::{AgentRow, COLUMNS as AGENT_COLUMNS};
use futures::{Stream, StreamExt};

use super::budgets::Decimal;
use super::{caller, command_context, domain, parse_id, read, require, services};
use crate::auth::Role;
use crate::error::{bad_input, gql};

/// A worker that claims and carries out tasks.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
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
    /// Why the agent was quarantined (deactivated after `agents.quarantineAfterFailures` failed
    /// attempts in a row), while it is; activating it lifts the quarantine.
    pub quarantined: Option<String>,
}

/// What an agent has spent today (UTC), across services, against its daily cap.
#[derive(Debug, Clone, SimpleObject)]
pub struct AgentSpending {
    /// None: no cap of its own (`setAgentDailySpendingCap`).
    pub daily_cap: Option<Decimal>,
    /// Settled by charges today (UTC).
    pub settled_today: Decimal,
    /// Held by its open reservations.
    pub reserved: Decimal,
    /// What the cap leaves to settle or reserve today; none without a cap.
    pub room: Option<Decimal>,
}

#[async_graphql::ComplexObject]
impl Agent {
    /// What it has settled today and holds reserved, against its daily cap: the write side's own
    /// figures, which its authorizations are decided on.
    async fn spending(&self, ctx: &Context<'_>) -> async_graphql::Result<AgentSpending> {
        let id = parse_id("id", &self.id)?;
        let today = Utc::now().date_naive();
        let pool = services(ctx).commands.store().pool();
        let spend = devart_commands::spending::of_agent(pool, id, today).await.map_err(gql)?;
        let spend = spend.unwrap_or(AgentSpend {
            agent_id: id,
            daily_cap: None,
            settled_today: Money::ZERO,
            reserved: Money::ZERO,
        });
        Ok(AgentSpending {
            daily_cap: spend.daily_cap.map(Decimal),
            settled_today: Decimal(spend.settled_today),
            reserved: Decimal(spend.reserved),
            room: spend.room().map(Decimal),
        })
    }
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
            quarantined: r.quarantined,
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
            quarantined: s.quarantined,
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

fn parse_capabilities(values: &[String]) -> async_graphql::Result<Capabilities> {
    Capabilities::parse(values).map_err(|e| match e {
        devart_domain::DomainError::Invalid { message, .. } => bad_input("capabilities", message),
        other => gql(other),
    })
}

#[derive(Default)]
pub struct AgentsQuery;

#[Object]
impl AgentsQuery {
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
}

#[derive(Default)]
pub struct AgentsMutation;

#[Object]
impl AgentsMutation {
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
        let (folded, key) =
            services(ctx).commands.agents().register(name, capabilities, &context).await.map_err(gql)?;
        Ok(AgentRegistration { agent: folded.into(), api_key: key.expose().to_owned() })
    }

    /// Gives an agent a new API key (admin); the old key stops working at once.
    async fn rotate_agent_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<AgentRegistration> {
        let caller = require(ctx, Role::Admin)?;
        let id = parse_id("id", &id)?;
        let context = command_context(ctx, &caller);
        let (folded, key) = services(ctx).commands.agents().rotate_key(id, &context).await.map_err(gql)?;
        Ok(AgentRegistration { agent: folded.into(), api_key: key.expose().to_owned() })
    }

    /// Activates or deactivates an agent (supervisor); a deactivated agent's key is refused.
    async fn set_agent_active(&self, ctx: &Context<'_>, id: ID, active: bool) -> async_graphql::Result<Agent> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("id", &id)?;
        let context = command_context(ctx, &caller);
        Ok(services(ctx).commands.agents().set_active(id, active, &context).await.map_err(gql)?.into())
    }

    /// Caps what an agent may settle and reserve in a day (UTC), across services, or lifts its cap
    /// with `dailyCap: null` (supervisor). Its authorizations past it are refused, saying so.
    async fn set_agent_daily_spending_cap(
        &self,
        ctx: &Context<'_>,
        id: ID,
        daily_cap: Option<Decimal>,
    ) -> async_graphql::Result<Agent> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("id", &id)?;
        let context = command_context(ctx, &caller);
        let command = AgentCommand::SetDailySpendingCap(daily_cap.map(|c| c.0));
        let folded = services(ctx).commands.execute::<AgentAggregate>(id, command, &context, None).await;
        Ok(folded.map_err(gql)?.into())
    }
}

#[derive(Default)]
pub struct AgentsSubscription;

#[Subscription]
impl AgentsSubscription {
    /// Agents as the agents read model holds them, each time one changed (its registration, key
    /// or activation, and the work it claims and reports); optionally of one agent. An agent
    /// follows only itself, as it reads only itself.
    async fn agent_updates(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = Agent>> {
        let itself = caller(ctx)?.agent;
        let id = id.map(|i| parse_id("id", &i)).transpose()?;
        let updates = services(ctx).live.agents.subscribe();
        Ok(updates.filter_map(move |row| {
            let keep = id.is_none_or(|id| id == row.id) && itself.is_none_or(|a| a == row.id);
            futures::future::ready(keep.then(|| Agent::from(row.as_ref().clone())))
        }))
    }
}
