//! Services and their budgets: registering and steering them (supervisors), authorizing and
//! charging usage (agents).

use async_graphql::{
    Context, InputObject, InputValueError, InputValueResult, Object, Scalar, ScalarType, SimpleObject, Value, ID,
};
use chrono::{DateTime, Utc};
use devart_commands::budgets::{Authorization, ChargeRequest, Receipt, Snapshot, UsageRequest};
use devart_domain::money::Money;
use devart_domain::service::{Currency, RegisterService, ServiceName, ServiceStatus as DomainStatus, UpdateService};
use uuid::Uuid;

use super::{
    caller, command_context, continue_task_correlation, domain, new_aggregate_id, parse_id, require, services,
};
use crate::auth::{Caller, Role};
use crate::error::{bad_input, error, gql, Code};

/// An exact amount of money as a decimal string, like `"12.50"` or `"0.000015"` (at most six
/// decimals, never negative). Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal(pub Money);

#[Scalar]
impl ScalarType for Decimal {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => {
                Money::parse("amount", s).map(Decimal).map_err(|e| InputValueError::custom(e.to_string()))
            }
            _ => Err(InputValueError::custom("a Decimal is a string such as \"12.50\", never a number")),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum ServiceStatus {
    Active,
    /// The period's budget is spent; a new period or a budget increase reactivates it.
    Suspended,
    /// Switched off by a supervisor.
    Inactive,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct UnitPrice {
    pub unit: String,
    pub price: Decimal,
}

#[derive(Debug, Clone, InputObject)]
pub struct UnitPriceInput {
    /// `input_token`, `minute`, …: 1 to 64 characters.
    pub unit: String,
    pub price: Decimal,
}

/// An external service agents spend money on, with its budget for the current period.
#[derive(Debug, Clone, SimpleObject)]
pub struct Service {
    pub id: ID,
    pub name: String,
    pub currency: String,
    pub status: ServiceStatus,
    pub monthly_budget: Decimal,
    /// Settled this period.
    pub spent: Decimal,
    /// Held by open reservations.
    pub reserved: Decimal,
    /// What can still be reserved: budget − spent − reserved.
    pub remaining: Decimal,
    pub fallback_service_id: Option<ID>,
    pub unit_prices: Vec<UnitPrice>,
    /// The budget period, a calendar month in UTC: `2026-11`.
    pub period: String,
    /// Alert thresholds (percent of the budget) crossed this period.
    pub thresholds_crossed: Vec<i32>,
    /// Spend at the period's end at the rate so far; null early in a period.
    pub projected_spend: Option<Decimal>,
    /// When the budget runs out at the rate so far, if before the period ends.
    pub projected_run_out_at: Option<DateTime<Utc>>,
    /// The service stream's version.
    pub version: i64,
}

impl From<Snapshot> for Service {
    fn from(snapshot: Snapshot) -> Self {
        let s = snapshot.state.at(Utc::now());
        let forecast = s.forecast(Utc::now());
        Service {
            id: ID(s.id.to_string()),
            status: match s.status {
                DomainStatus::Active => ServiceStatus::Active,
                DomainStatus::Suspended => ServiceStatus::Suspended,
                DomainStatus::Inactive | DomainStatus::Absent => ServiceStatus::Inactive,
            },
            monthly_budget: Decimal(s.monthly_budget),
            spent: Decimal(s.spent),
            reserved: Decimal(s.reserved),
            remaining: Decimal(s.room()),
            fallback_service_id: s.fallback_service_id.map(|f| ID(f.to_string())),
            unit_prices: s
                .unit_prices
                .iter()
                .map(|(unit, price)| UnitPrice { unit: unit.clone(), price: Decimal(*price) })
                .collect(),
            period: s.period.to_string(),
            thresholds_crossed: s.crossed.iter().map(|t| *t as i32).collect(),
            projected_spend: forecast.map(|f| Decimal(f.projected_spend)),
            projected_run_out_at: forecast.and_then(|f| f.runs_out_at),
            version: snapshot.version as i64,
            name: s.name,
            currency: s.currency,
        }
    }
}

#[derive(Debug, Clone, InputObject)]
pub struct RegisterServiceInput {
    pub name: String,
    pub monthly_budget: Decimal,
    /// ISO 4217.
    #[graphql(default_with = "\"USD\".to_string()")]
    pub currency: String,
    /// Where requests go when this service has no room; chains and cycles are safe.
    pub fallback_service_id: Option<ID>,
    #[graphql(default)]
    pub unit_prices: Vec<UnitPriceInput>,
}

#[derive(Debug, Clone, InputObject)]
pub struct UpdateServiceInput {
    pub name: Option<String>,
    pub fallback_service_id: Option<ID>,
    /// Removes the fallback.
    #[graphql(default)]
    pub clear_fallback: bool,
    /// Replaces every unit price.
    pub unit_prices: Option<Vec<UnitPriceInput>>,
}

/// The answer to `authorizeUsage`.
#[derive(Debug, Clone, SimpleObject)]
pub struct UsageAuthorization {
    pub approved: bool,
    /// The service whose budget holds the reservation: the one asked, or the fallback it was
    /// delegated to.
    pub service_id: ID,
    /// Pass it to `recordCharge`; null when refused.
    pub reservation_id: Option<ID>,
    /// Why it was refused or delegated.
    pub reason: Option<String>,
    /// What that service can still reserve.
    pub remaining: Decimal,
}

impl From<Authorization> for UsageAuthorization {
    fn from(a: Authorization) -> Self {
        UsageAuthorization {
            approved: a.approved,
            service_id: ID(a.service_id.to_string()),
            reservation_id: a.reservation_id.map(|r| ID(r.to_string())),
            reason: a.reason,
            remaining: Decimal(a.remaining),
        }
    }
}

#[derive(Debug, Clone, InputObject)]
pub struct UnitsInput {
    pub unit: String,
    pub count: u64,
}

#[derive(Debug, Clone, InputObject)]
pub struct RecordChargeInput {
    pub service_id: ID,
    pub amount: Decimal,
    pub task_id: Option<ID>,
    /// The reservation the charge settles; what it held beyond the amount is released.
    pub reservation_id: Option<ID>,
    pub units: Option<UnitsInput>,
    /// The same key again returns the first receipt and charges nothing.
    pub idempotency_key: String,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct ChargeReceipt {
    pub charge_id: ID,
    pub service_id: ID,
    pub amount: Decimal,
    pub released: Decimal,
    /// The service's settled spend this period, after the charge.
    pub spent: Decimal,
    pub remaining: Decimal,
    /// The charge reached the budget: the service is suspended.
    pub suspended: bool,
}

impl From<Receipt> for ChargeReceipt {
    fn from(r: Receipt) -> Self {
        ChargeReceipt {
            charge_id: ID(r.charge_id.to_string()),
            service_id: ID(r.service_id.to_string()),
            amount: Decimal(r.amount),
            released: Decimal(r.released),
            spent: Decimal(r.spent),
            remaining: Decimal(r.remaining),
            suspended: r.suspended,
        }
    }
}

fn unit_prices(input: Vec<UnitPriceInput>) -> async_graphql::Result<std::collections::BTreeMap<String, Money>> {
    let mut prices = std::collections::BTreeMap::new();
    for p in input {
        let unit = p.unit.trim();
        if unit.is_empty() || unit.chars().count() > 64 || unit.chars().any(char::is_control) {
            return Err(bad_input("unitPrices", format!("unit `{unit}` must be 1 to 64 printable characters")));
        }
        if prices.insert(unit.to_owned(), p.price.0).is_some() {
            return Err(bad_input("unitPrices", format!("unit `{unit}` is priced twice")));
        }
    }
    Ok(prices)
}

fn parse_key(key: &str) -> async_graphql::Result<String> {
    let key = key.trim();
    if key.is_empty() || key.len() > 200 {
        return Err(bad_input("idempotencyKey", "must be 1 to 200 characters"));
    }
    Ok(key.to_owned())
}

/// Agents spend; supervisors may too (on behalf of work done outside devart).
fn spender(ctx: &Context<'_>) -> async_graphql::Result<Caller> {
    let caller = caller(ctx)?;
    if caller.agent.is_some() || caller.role >= Role::Supervisor {
        Ok(caller.clone())
    } else {
        Err(error(Code::Forbidden, "only agents and supervisors spend"))
    }
}

#[derive(Default)]
pub struct BudgetsQuery;

#[Object]
impl BudgetsQuery {
    /// Every service with its budget, spend and forecast, by name.
    async fn services(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Service>> {
        caller(ctx)?;
        Ok(services(ctx).commands.services().all().await.map_err(gql)?.into_iter().map(Service::from).collect())
    }

    async fn service(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Service>> {
        caller(ctx)?;
        let id = parse_id("id", &id)?;
        Ok(services(ctx).commands.services().get(id).await.map_err(gql)?.map(Service::from))
    }
}

#[derive(Default)]
pub struct BudgetsSubscription;

#[async_graphql::Subscription]
impl BudgetsSubscription {
    /// Services each time their budget, spend, reservations or status changed; optionally of one.
    async fn service_updates(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
    ) -> async_graphql::Result<impl futures::Stream<Item = Service>> {
        use futures::StreamExt;
        caller(ctx)?;
        let id = id.map(|i| parse_id("id", &i)).transpose()?;
        let updates = services(ctx).live.services.subscribe();
        Ok(updates.filter_map(move |row| {
            let keep = id.is_none_or(|id| id == row.id);
            futures::future::ready(
                keep.then(|| Service::from(Snapshot { state: row.state.0.clone(), version: row.version as u64 })),
            )
        }))
    }
}

#[derive(Default)]
pub struct BudgetsMutation;

#[Object]
impl BudgetsMutation {
    /// Registers a service with a monthly budget (supervisor).
    async fn register_service(&self, ctx: &Context<'_>, input: RegisterServiceInput) -> async_graphql::Result<Service> {
        let caller = require(ctx, Role::Supervisor)?;
        let context = command_context(ctx, &caller);
        let service = RegisterService {
            id: new_aggregate_id(ctx, &context),
            name: domain(ServiceName::parse(&input.name))?,
            currency: domain(Currency::parse(&input.currency))?,
            monthly_budget: input.monthly_budget.0,
            fallback_service_id: input.fallback_service_id.map(|f| parse_id("fallbackServiceId", &f)).transpose()?,
            unit_prices: unit_prices(input.unit_prices)?,
        };
        let id = service.id;
        services(ctx).commands.services().register(service, &context).await.map_err(gql)?;
        service_by_id(ctx, id).await
    }

    /// Changes a service's name, fallback or unit prices (supervisor).
    async fn update_service(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateServiceInput,
    ) -> async_graphql::Result<Service> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("id", &id)?;
        let fallback = match (input.clear_fallback, input.fallback_service_id) {
            (true, Some(_)) => {
                return Err(bad_input("clearFallback", "give a fallbackServiceId or clear it, not both"))
            }
            (true, None) => Some(None),
            (false, Some(f)) => Some(Some(parse_id("fallbackServiceId", &f)?)),
            (false, None) => None,
        };
        let update = UpdateService {
            name: input.name.as_deref().map(ServiceName::parse).transpose().map_err(gql)?,
            fallback_service_id: fallback,
            unit_prices: input.unit_prices.map(unit_prices).transpose()?,
        };
        let context = command_context(ctx, &caller);
        services(ctx).commands.services().update(id, update, &context).await.map_err(gql)?;
        service_by_id(ctx, id).await
    }

    /// Switches a service off or on (supervisor); an inactive service authorizes nothing.
    async fn set_service_active(&self, ctx: &Context<'_>, id: ID, active: bool) -> async_graphql::Result<Service> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("id", &id)?;
        let context = command_context(ctx, &caller);
        services(ctx).commands.services().set_active(id, active, &context).await.map_err(gql)?;
        service_by_id(ctx, id).await
    }

    /// Adds to a service's monthly budget (supervisor), saying why; the event records who and
    /// when. A suspended service with room again is reactivated at once.
    async fn increase_budget(
        &self,
        ctx: &Context<'_>,
        service_id: ID,
        amount: Decimal,
        reason: String,
    ) -> async_graphql::Result<Service> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("serviceId", &service_id)?;
        if amount.0.is_zero() {
            return Err(bad_input("amount", "must be more than zero"));
        }
        let reason = domain(devart_domain::task::Message::parse("reason", &reason))?;
        let context = command_context(ctx, &caller);
        services(ctx)
            .commands
            .services()
            .increase_budget(id, amount.0, reason.as_str().to_owned(), &context)
            .await
            .map_err(gql)?;
        service_by_id(ctx, id).await
    }

    /// Reserves `estimatedCost` (agents, supervisors): on the service, or on the first fallback
    /// with room; refused when none has. Settle it with `recordCharge`; an unsettled reservation
    /// expires after ten minutes.
    async fn authorize_usage(
        &self,
        ctx: &Context<'_>,
        service_id: ID,
        estimated_cost: Decimal,
        task_id: Option<ID>,
        idempotency_key: String,
    ) -> async_graphql::Result<UsageAuthorization> {
        let caller = spender(ctx)?;
        let request = UsageRequest {
            service_id: parse_id("serviceId", &service_id)?,
            amount: estimated_cost.0,
            task_id: task_id.map(|t| parse_id("taskId", &t)).transpose()?,
            agent_id: caller.agent,
            idempotency_key: parse_key(&idempotency_key)?,
        };
        let context = continue_task_correlation(ctx, command_context(ctx, &caller), request.task_id).await?;
        Ok(services(ctx).commands.services().authorize_usage(&request, &context).await.map_err(gql)?.into())
    }

    /// Settles a charge (agents, supervisors), against its reservation or directly; refused
    /// (CONFLICT) when it would pass the budget.
    async fn record_charge(&self, ctx: &Context<'_>, input: RecordChargeInput) -> async_graphql::Result<ChargeReceipt> {
        let caller = spender(ctx)?;
        let request = ChargeRequest {
            service_id: parse_id("serviceId", &input.service_id)?,
            amount: input.amount.0,
            reservation_id: input.reservation_id.map(|r| parse_id("reservationId", &r)).transpose()?,
            units: input.units.map(|u| (u.unit, u.count)),
            task_id: input.task_id.map(|t| parse_id("taskId", &t)).transpose()?,
            agent_id: caller.agent,
            idempotency_key: parse_key(&input.idempotency_key)?,
        };
        let context = continue_task_correlation(ctx, command_context(ctx, &caller), request.task_id).await?;
        Ok(services(ctx).commands.services().record_charge(&request, &context).await.map_err(gql)?.into())
    }
}

async fn service_by_id(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Service> {
    match services(ctx).commands.services().get(id).await.map_err(gql)? {
        Some(snapshot) => Ok(snapshot.into()),
        None => Err(error(Code::NotFound, format!("service {id} not found"))),
    }
}
