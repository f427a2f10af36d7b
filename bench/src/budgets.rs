//! Budgets: authorizing and charging usage on one hot service and over 100, against a guarded
//! SQL update.

use super::*;

/// Concurrent spenders in the budget benchmark: as many as the pool has connections.
pub(crate) const BUDGET_SPENDERS: usize = 16;
/// Services the spread measurement spends over.
pub(crate) const BUDGET_SERVICES: usize = 100;

pub(crate) async fn budget(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    use devart_domain::money::Money;
    use devart_domain::service::{Currency, RegisterService, ServiceName};
    let duration = Duration::from_secs(args.duration_secs);
    let pool = devart_commands::db::connect(&scratch.config.database_url, scratch.config.db_connections).await?;
    let commands = Commands::new(EventStore::new(pool.clone()), Nudge::default(), Some(scratch.bus.clone()));
    let budget = Money::parse("budget", "1000000000")?;
    let mut services = Vec::with_capacity(BUDGET_SERVICES);
    for i in 0..BUDGET_SERVICES {
        let service = RegisterService {
            id: Uuid::now_v7(),
            name: ServiceName::parse(&format!("service {i}"))?,
            currency: Currency::usd(),
            monthly_budget: budget,
            fallback_service_id: None,
            unit_prices: Default::default(),
        };
        services.push(commands.services().register(service, &CommandContext::new(bench_actor())).await?.id);
    }
    sqlx::query("create table bench_raw_budget (id uuid primary key, budget bigint not null, spent bigint not null)")
        .execute(&pool)
        .await?;
    sqlx::query("insert into bench_raw_budget select unnest($1::uuid[]), $2, 0")
        .bind(&services)
        .bind(budget.micros())
        .execute(&pool)
        .await?;
    let services = Arc::new(services);
    let warm_up = Duration::from_millis(500);
    throughput(BUDGET_SPENDERS, warm_up, |i, deadline| raw_spend(pool.clone(), services.clone(), Some(i), deadline))
        .await?;
    throughput(BUDGET_SPENDERS, warm_up, |i, deadline| spend(commands.clone(), services.clone(), Some(i), deadline))
        .await?;

    let mut rows = Vec::new();
    for (label, spread) in [("one hot service", false), ("100 services", true)] {
        let pick = |i: usize| spread.then_some(i);
        let raw = throughput(BUDGET_SPENDERS, duration, |i, deadline| {
            raw_spend(pool.clone(), services.clone(), pick(i), deadline)
        })
        .await?;
        let devart = throughput(BUDGET_SPENDERS, duration, |i, deadline| {
            spend(commands.clone(), services.clone(), pick(i), deadline)
        })
        .await?;
        tracing::info!(label, raw, devart, "measured");
        rows.push(Row {
            name: format!("authorize+charge, {label}, {BUDGET_SPENDERS} spenders"),
            figure: devart,
            unit: "pairs/s",
            baseline: Some(raw),
            target: Target::None,
        });
    }
    pool.close().await;
    Ok(rows)
}

/// The service a spender uses next: always the first (hot), or one of them at random.
pub(crate) fn next_service(services: &[Uuid], spread: Option<usize>) -> Uuid {
    match spread {
        Some(_) => services[rand::random::<usize>() % services.len()],
        None => services[0],
    }
}

/// Authorizes one cent and charges it, through the command layer, until `deadline`.
pub(crate) async fn spend(
    commands: Commands,
    services: Arc<Vec<Uuid>>,
    spread: Option<usize>,
    deadline: Instant,
) -> anyhow::Result<u64> {
    use devart_commands::budgets::{ChargeRequest, UsageRequest};
    use devart_domain::money::Money;
    let cent = Money::parse("amount", "0.01")?;
    let agent = CommandContext::new(Actor::agent(Uuid::now_v7().to_string()));
    let mut done = 0;
    while Instant::now() < deadline {
        let service_id = next_service(&services, spread);
        let key = Uuid::now_v7().to_string();
        let request =
            UsageRequest { service_id, amount: cent, task_id: None, agent_id: None, idempotency_key: key.clone() };
        let answer = commands.services().authorize_usage(&request, &agent).await?;
        anyhow::ensure!(answer.approved, "the benchmark's budget ran out: {answer:?}");
        let charge = ChargeRequest {
            service_id: answer.service_id,
            amount: cent,
            reservation_id: answer.reservation_id,
            units: None,
            task_id: None,
            agent_id: None,
            idempotency_key: key,
        };
        commands.services().record_charge(&charge, &agent).await?;
        done += 1;
    }
    Ok(done)
}

/// The baseline: one guarded update per spend, `spent + x <= budget`.
pub(crate) async fn raw_spend(
    pool: PgPool,
    services: Arc<Vec<Uuid>>,
    spread: Option<usize>,
    deadline: Instant,
) -> anyhow::Result<u64> {
    let mut done = 0;
    while Instant::now() < deadline {
        let id = next_service(&services, spread);
        let spent: Option<i64> = sqlx::query_scalar(
            "update bench_raw_budget set spent = spent + $2 where id = $1 and spent + $2 <= budget returning spent",
        )
        .bind(id)
        .bind(10_000_i64)
        .fetch_optional(&pool)
        .await?;
        anyhow::ensure!(spent.is_some(), "the baseline's budget ran out");
        done += 1;
    }
    Ok(done)
}
