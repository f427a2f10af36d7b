//! The task queue: claiming and completing by concurrent agents against a plain SQL queue, and
//! a claim's latency against the queue's depth.

use super::*;

/// Concurrent agents claiming and completing.
pub(crate) const QUEUE_AGENTS: [usize; 3] = [1, 16, 64];
/// Pending tasks in devart's queue when a measurement starts, at least: far more than one takes.
pub(crate) const QUEUE_PENDING_MIN: u64 = 20_000;
/// The same for the baseline's queue, which drains faster.
pub(crate) const RAW_QUEUE_PENDING_MIN: u64 = 100_000;
/// Commands in flight while filling the queue or registering agents.
pub(crate) const QUEUE_SEEDERS: usize = 8;
/// What the benchmark's agents can do; the tasks they claim require nothing, or this.
pub(crate) const AGENT_CAPABILITIES: [&str; 1] = ["rust"];
pub(crate) const QUEUED_TITLE: &str = "Queued by devart-bench";
pub(crate) const RAN_DRY: &str = "the queue ran dry during the measurement";

/// Tasks per second claimed and completed by 1, 16 and 64 concurrent agents, through the command
/// layer (`commands.tasks().claim`, then `TaskCommand::Complete`) and through GraphQL over HTTP
/// (`claimTask`, then `completeTask`, with each agent's API key, against the gateway alone); each
/// against a plain SQL queue (`UPDATE … FOR UPDATE SKIP LOCKED`, then `DELETE`) on a table of its
/// own, with as many agents. All three share a pool of as many connections as devart's (16 by
/// default), so 64 agents wait for connections, as they would.
pub(crate) async fn queue(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    let duration = Duration::from_secs(args.duration_secs);
    let connections = scratch.config.db_connections;
    let pool = devart_commands::db::connect(&scratch.config.database_url, connections).await?;
    let commands = Commands::new(EventStore::new(pool.clone()), Nudge::default(), Some(scratch.bus.clone()));
    create_raw_queue(&pool).await?;
    let agents = register_agents(&commands, QUEUE_AGENTS[QUEUE_AGENTS.len() - 1]).await?;
    let devart = Server::start(&scratch.config, &[Role::Gateway]).await?;
    let api = Api(devart.client().clone());

    // Opens every connection and warms both paths before anything is measured.
    let warm_up = Duration::from_millis(500);
    fill_raw_queue(&pool, RAW_QUEUE_PENDING_MIN).await?;
    fill_queue(&commands, QUEUE_PENDING_MIN).await?;
    throughput(agents.len(), warm_up, |_, deadline| raw_claims(pool.clone(), deadline)).await?;
    throughput(agents.len(), warm_up, |i, deadline| command_claims(commands.clone(), agents[i], deadline)).await?;

    // The fastest rates so far size the queues of the measurements that follow.
    let (mut raw_fastest, mut devart_fastest) = (0.0_f64, 0.0_f64);
    let pending = |min: u64, fastest: f64| min.max((2.0 * fastest * duration.as_secs_f64()) as u64);
    let (mut by_commands, mut by_graphql) = (Vec::new(), Vec::new());
    for count in QUEUE_AGENTS {
        fill_raw_queue(&pool, pending(RAW_QUEUE_PENDING_MIN, raw_fastest)).await?;
        settle_queue(&pool, "bench_raw_queue").await?;
        let raw = throughput(count, duration, |_, deadline| raw_claims(pool.clone(), deadline)).await?;

        fill_queue(&commands, pending(QUEUE_PENDING_MIN, devart_fastest)).await?;
        settle_queue(&pool, "task_queue").await?;
        let command =
            throughput(count, duration, |i, deadline| command_claims(commands.clone(), agents[i], deadline)).await?;

        // Agents of their own: the gateway remembers a verified key for a minute only, and a
        // measurement must not pay for verifying it again (argon2) part of the way through.
        let callers = register_agents_over_http(&api, count).await?;
        futures::future::try_join_all(callers.iter().map(Api::me)).await?;
        throughput(count, warm_up, |i, deadline| graphql_claims(callers[i].clone(), deadline)).await?;
        fill_queue(&commands, pending(QUEUE_PENDING_MIN, devart_fastest.max(command))).await?;
        settle_queue(&pool, "task_queue").await?;
        let graphql = throughput(count, duration, |i, deadline| graphql_claims(callers[i].clone(), deadline)).await?;

        tracing::info!(agents = count, raw, command, graphql, "measured");
        raw_fastest = raw_fastest.max(raw);
        devart_fastest = devart_fastest.max(command).max(graphql);
        let agents_named = if count == 1 { "1 agent".to_owned() } else { format!("{count} agents") };
        let row = |path: &str, figure: f64, min: f64| Row {
            name: format!("claim+complete, {agents_named}, pool {connections} ({path})"),
            figure,
            unit: "tasks/s",
            baseline: Some(raw),
            target: Target::RatioAtLeast(min),
        };
        by_commands.push(row("command layer", command, 0.5));
        by_graphql.push(row("GraphQL", graphql, 0.25));
    }
    devart.stop().await?;
    pool.close().await;
    by_commands.extend(by_graphql);
    Ok(by_commands)
}

/// The baseline's queue: the columns a claim needs, the same storage settings and claim order
/// index as `task_queue`.
pub(crate) async fn create_raw_queue(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "create table bench_raw_queue (id uuid primary key, priority smallint not null, \
                                       created_at timestamptz not null, state text not null, agent_id uuid, \
                                       lease_expires_at timestamptz) \
         with (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000)",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "create index bench_raw_queue_next on bench_raw_queue (priority desc, created_at, id) \
         where state = 'pending'",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Inserts pending rows into the baseline's queue until `pending` wait there.
pub(crate) async fn fill_raw_queue(pool: &PgPool, pending: u64) -> anyhow::Result<()> {
    let queued: i64 =
        sqlx::query_scalar("select count(*) from bench_raw_queue where state = 'pending'").fetch_one(pool).await?;
    sqlx::query(
        "insert into bench_raw_queue (id, priority, created_at, state) \
         select gen_random_uuid(), 3, clock_timestamp(), 'pending' from generate_series(1, $1)",
    )
    .bind(pending.saturating_sub(queued as u64) as i64)
    .execute(pool)
    .await?;
    Ok(())
}

/// Creates tasks through `commands.tasks().create`, from a few concurrent writers, until `pending`
/// wait in the queue.
pub(crate) async fn fill_queue(commands: &Commands, pending: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let queued: i64 = sqlx::query_scalar("select count(*) from task_queue where state = 'pending'")
        .fetch_one(commands.store().pool())
        .await?;
    let missing = pending.saturating_sub(queued as u64);
    let writers = QUEUE_SEEDERS as u64;
    let mut creating = JoinSet::new();
    for w in 0..writers {
        let (commands, share) = (commands.clone(), missing / writers + u64::from(w < missing % writers));
        creating.spawn(async move {
            for _ in 0..share {
                create_queued_task(&commands).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = creating.join_next().await {
        done.context("a seeding writer panicked")??;
    }
    tracing::info!(tasks = missing, elapsed = ?started.elapsed(), "queue filled");
    Ok(())
}

pub(crate) async fn create_queued_task(commands: &Commands) -> anyhow::Result<()> {
    let command = CreateTask::new(Uuid::now_v7(), Title::parse(QUEUED_TITLE)?);
    commands.tasks().create(command, &CommandContext::new(bench_actor())).await?;
    Ok(())
}

/// Vacuums a queue (each claim leaves dead rows behind) and checkpoints, so that neither lands
/// in the measurement that follows.
pub(crate) async fn settle_queue(pool: &PgPool, table: &str) -> anyhow::Result<()> {
    sqlx::query(&format!("vacuum (analyze) {table}"))
        .execute(pool)
        .await
        .with_context(|| format!("vacuuming {table}"))?;
    sqlx::query("checkpoint").execute(pool).await.context("checkpointing")?;
    Ok(())
}

/// Registers `count` agents through the command layer, a few at a time (each key is hashed with
/// argon2); returns their ids.
pub(crate) async fn register_agents(commands: &Commands, count: usize) -> anyhow::Result<Vec<Uuid>> {
    futures::stream::iter(0..count)
        .map(|i| async move {
            let name = AgentName::parse(&format!("bench-agent-{i}"))?;
            let capabilities = Capabilities::parse(&AGENT_CAPABILITIES)?;
            let context = CommandContext::new(bench_actor());
            let (agent, _key) = commands.agents().register(name, capabilities, &context).await?;
            anyhow::Ok(agent.state.id)
        })
        .buffer_unordered(QUEUE_SEEDERS)
        .try_collect()
        .await
}

/// Registers `count` agents through `registerAgent`; returns the API as each of them.
pub(crate) async fn register_agents_over_http(api: &Api, count: usize) -> anyhow::Result<Vec<Api>> {
    futures::stream::iter(0..count)
        .map(|i| async move {
            let key = api.register_agent(&format!("bench-agent-{i}"), &AGENT_CAPABILITIES).await?;
            anyhow::Ok(api.with_token(&key))
        })
        .buffer_unordered(QUEUE_SEEDERS)
        .try_collect()
        .await
}

/// The baseline agent: claims the next pending row and deletes it, until `deadline`; returns the
/// rows done.
pub(crate) async fn raw_claims(pool: PgPool, deadline: Instant) -> anyhow::Result<u64> {
    let agent_id = Uuid::now_v7();
    let mut done = 0;
    while Instant::now() < deadline {
        let claimed: Uuid = sqlx::query_scalar(
            "update bench_raw_queue set state = 'claimed', agent_id = $1, lease_expires_at = now() + interval '30 s' \
             where id = (select id from bench_raw_queue where state = 'pending' \
                         order by priority desc, created_at, id limit 1 for update skip locked) \
             returning id",
        )
        .bind(agent_id)
        .fetch_optional(&pool)
        .await?
        .context(RAN_DRY)?;
        sqlx::query("delete from bench_raw_queue where id = $1 and agent_id = $2")
            .bind(claimed)
            .bind(agent_id)
            .execute(&pool)
            .await?;
        done += 1;
    }
    Ok(done)
}

/// One agent claiming through the command layer and completing what it claimed, until `deadline`;
/// returns the tasks completed.
pub(crate) async fn command_claims(commands: Commands, agent_id: Uuid, deadline: Instant) -> anyhow::Result<u64> {
    let mut done = 0;
    while Instant::now() < deadline {
        claim_and_complete(&commands, agent_id).await?;
        done += 1;
    }
    Ok(done)
}

/// One claim and the completion of the claimed task; returns how long the claim took.
pub(crate) async fn claim_and_complete(commands: &Commands, agent_id: Uuid) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let request =
        ClaimRequest { agent_id, capabilities: AGENT_CAPABILITIES.map(str::to_owned).to_vec(), lease: LEASE_DEFAULT };
    // A command id per command: a reused one would only replay the first command's outcome.
    let context = || CommandContext::new(Actor::agent(agent_id.to_string()));
    let claimed = commands.tasks().claim(&request, &context()).await?.context(RAN_DRY)?;
    let claim_took = started.elapsed();
    let complete = TaskCommand::Complete { agent_id, result: None };
    commands.execute::<Task>(claimed.state.id, complete, &context(), None).await?;
    Ok(claim_took)
}

/// One agent claiming and completing over HTTP, until `deadline`; returns the tasks completed.
pub(crate) async fn graphql_claims(agent: Api, deadline: Instant) -> anyhow::Result<u64> {
    let mut done = 0;
    while Instant::now() < deadline {
        let id = agent.claim_task().await?.context(RAN_DRY)?;
        agent.complete_task(&id).await?;
        done += 1;
    }
    Ok(done)
}

// --- 6. Claim latency against queue depth -------------------------------------------------------

/// Pending tasks in the shallow queue the deep one is compared with.
pub(crate) const SHALLOW_QUEUE: u64 = 1_000;
/// Claims before the timed ones: connections, caches and the head of the queue's index warm up.
pub(crate) const CLAIM_WARM_UP: u64 = 300;

/// Milliseconds one agent's `commands.tasks().claim` takes with 1,000 tasks pending, and with
/// `--claim-pending` (a million): a claim must not slow down as the queue grows. Claims follow
/// each other; each claimed task is completed, then replaced by a new one (not timed), so the
/// depth holds.
pub(crate) async fn claim_latency(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    let commands = Commands::new(scratch.store.clone(), Nudge::default(), Some(scratch.bus.clone()));
    let agent_id = register_agents(&commands, 1).await?[0];
    queue_in_bulk(scratch, SHALLOW_QUEUE).await?;
    let (shallow, shallow_pairs) = claim_samples(&commands, agent_id, args.claim_samples).await?;
    queue_in_bulk(scratch, args.claim_pending - SHALLOW_QUEUE).await?;
    let (deep, deep_pairs) = claim_samples(&commands, agent_id, args.claim_samples).await?;

    let depths = format!("{} pending (baseline: {})", number(args.claim_pending as f64), number(SHALLOW_QUEUE as f64));
    let ms = |name: &str, figure: Duration, baseline: Duration, target| Row {
        name: format!("{name}, {depths}"),
        figure: millis(figure),
        unit: "ms",
        baseline: Some(millis(baseline)),
        target,
    };
    Ok(vec![
        ms("claim p50", deep.p50, shallow.p50, Target::RatioAtMost(1.5)),
        // Context only: the slowest 1% of claims on a shared machine is mostly interference
        // (checkpoints, autovacuum, other processes), and swing either way between runs.
        ms("claim p99", deep.p99, shallow.p99, Target::None),
        ms("claim+complete p50", deep_pairs.p50, shallow_pairs.p50, Target::None),
    ])
}

/// Times `samples` claims (after [`CLAIM_WARM_UP`] untimed ones), each followed by the completion
/// of the claimed task and the creation of another; returns the claims' and the claim-and-complete
/// pairs' latencies.
pub(crate) async fn claim_samples(commands: &Commands, agent_id: Uuid, samples: u64) -> anyhow::Result<(Stats, Stats)> {
    let mut claims = Vec::with_capacity(samples as usize);
    let mut pairs = Vec::with_capacity(samples as usize);
    for i in 0..CLAIM_WARM_UP + samples {
        let started = Instant::now();
        let claim = claim_and_complete(commands, agent_id).await?;
        let pair = started.elapsed();
        if i >= CLAIM_WARM_UP {
            claims.push(claim);
            pairs.push(pair);
        }
        create_queued_task(commands).await?;
    }
    Ok((Stats::of(claims), Stats::of(pairs)))
}

/// Queues `count` pending tasks, stored as `commands.tasks().create` stores a new one: its
/// `TaskCreated` event at version 1 of `task-<id>`, its command's record and its queue row, which
/// the append's own statement writes ([`Stored::beside`]); only through [`append_in_batches`],
/// since one commit per task would take minutes for a million. Then sequences them (as the relay
/// would have), vacuums and checkpoints.
pub(crate) async fn queue_in_bulk(scratch: &Stack, count: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    append_in_batches(&scratch.store, count, |id| {
        let created = queued_task_created(id)?;
        let queued = Task::evolve(TaskState::default(), &created);
        Ok((vec![Event::Task(created)], <Task as Stored>::beside(&queued, Utc::now())))
    })
    .await?;
    let appended = started.elapsed();
    sequence_all(&scratch.store).await?;
    tracing::info!(tasks = count, ?appended, elapsed = ?started.elapsed(), "queued in bulk");
    for table in ["task_queue", "commands"] {
        sqlx::query(&format!("vacuum (analyze) {table}"))
            .execute(&scratch.pool)
            .await
            .with_context(|| format!("vacuuming {table}"))?;
    }
    settle(&scratch.pool).await
}

/// The event `commands.tasks().create` decides on for a new task titled [`QUEUED_TITLE`].
pub(crate) fn queued_task_created(id: Uuid) -> anyhow::Result<TaskEvent> {
    let command = TaskCommand::Create(CreateTask::new(id, Title::parse(QUEUED_TITLE)?));
    Task::decide(&TaskState::default(), &command)?.pop().context("creating a task decides on no event")
}
