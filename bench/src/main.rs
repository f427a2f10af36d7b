//! `devart-bench`: devart's paths measured against raw baselines on the same servers, in the
//! same run.
//!
//! A figure alone says little on a noisy machine, so every devart figure stands beside a baseline
//! measured minutes apart on the same Postgres and NATS: a plain `INSERT`, a plain JetStream
//! publish, a plain SQL copy, a trivial HTTP query, a plain SQL queue. Where a baseline exists, the
//! target is a ratio.
//!
//! Each benchmark runs on a stack of its own (`devart_testkit::Stack`: a database cloned from the
//! migrated template, a NATS prefix), removed afterwards (also after an error or Ctrl-C), so
//! benchmarks cannot disturb each other or a real instance. devart's side writes only through its
//! own APIs (`EventStore`, `Commands`, GraphQL), as devart itself does; the baselines' raw SQL
//! writes only into tables of their own.

mod soak;
mod table;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use async_nats::HeaderMap;
use chrono::Utc;
use clap::Parser;
use devart::{Config, Role, Secret};
use devart_commands::queue::{ClaimRequest, LEASE_DEFAULT};
use devart_commands::store::Beside;
use devart_commands::{Bus, CommandContext, Commands, EventStore, Nudge, Stored};
use devart_domain::agent::AgentName;
use devart_domain::task::{Capabilities, CreateTask, Task, TaskCommand, TaskEvent, TaskState, Title};
use devart_domain::{Actor, Aggregate, Event, StreamId};
use devart_projections::tasks::TasksProjection;
use devart_testkit::{Client, Server, Stack, StackOptions, Subscriptions};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::table::{number, Environment, Row, Table, Target};

/// Measures devart against raw baselines on the same servers and prints a table.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The servers to measure on (`DATABASE_URL`, `NATS_URL`), the pool size, the gateway's limits.
    #[command(flatten)]
    config: Config,
    #[command(flatten)]
    args: Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DEVART_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,async_nats=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    run(&cli.config, cli.args).await
}

#[derive(Debug, Clone, clap::Args)]
struct Args {
    /// Seconds each throughput measurement runs.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Events the projection rebuild replays.
    #[arg(long, default_value_t = 1_000_000)]
    rebuild_events: u64,
    /// Events the relay publishes (enough for a few seconds of publishing: shorter runs are noisy).
    #[arg(long, default_value_t = 200_000)]
    relay_events: u64,
    /// Events per task in the store the relay and the rebuild replay: a creation, then changes.
    /// 1 (creations only) is the rebuild's worst case: one row written per event.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1000))]
    events_per_task: u64,
    /// Commands per second while measuring command-to-subscription latency.
    #[arg(long, default_value_t = 500)]
    latency_rate: u32,
    /// Seconds the latency measurement (and its baseline) sends for.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Pending tasks in the deep queue of the claim-latency benchmark (the shallow one has 1,000).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1_000..))]
    claim_pending: u64,
    /// Claims timed at each queue depth.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    claim_samples: u64,
    /// Seconds the soak's 64 agents work, from the first claim (the soak runs only when named in
    /// `--only`).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(20..))]
    soak_secs: u64,
    /// Tasks created before the soak's agents start.
    #[arg(long, default_value_t = 10_000)]
    soak_tasks: u64,
    /// The `devart` binary the soak starts as `devart serve`; by default the one next to this
    /// benchmark's binary (`cargo build --release -p devart`).
    #[arg(long)]
    devart_bin: Option<PathBuf>,
    /// Runs only these benchmarks (comma-separated); all but the soak by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Bench>,
}

/// A benchmark: one scratch environment, one or more rows of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Bench {
    /// `EventStore::append` against single-row `INSERT`s.
    Appends,
    /// A `createTask` mutation until its `taskUpdates` notification, at a steady rate.
    Latency,
    /// The relay's publisher against plain JetStream publishes.
    Relay,
    /// The tasks projection's rebuild against a plain SQL copy.
    Rebuild,
    /// Claiming and completing tasks, by concurrent agents, against a plain SQL queue.
    Queue,
    /// A claim's latency with 1,000 tasks pending and with a million.
    ClaimLatency,
    /// Authorizing and charging usage on one hot service and over 100, against a guarded SQL update.
    Budget,
    /// A whole `devart serve` worked by 64 agents for `--soak-secs`, its resident memory sampled;
    /// then a flood of wrong secrets. Not part of the default run (ten minutes).
    Soak,
}

impl Bench {
    /// The default run: all but the soak.
    const ALL: [Bench; 7] = [
        Bench::Appends,
        Bench::Latency,
        Bench::Relay,
        Bench::Rebuild,
        Bench::Queue,
        Bench::ClaimLatency,
        Bench::Budget,
    ];

    fn label(self) -> &'static str {
        match self {
            Bench::Appends => "appends",
            Bench::Latency => "latency",
            Bench::Relay => "relay",
            Bench::Rebuild => "rebuild",
            Bench::Queue => "queue",
            Bench::ClaimLatency => "claim_latency",
            Bench::Budget => "budget",
            Bench::Soak => "soak",
        }
    }

    async fn run(self, scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
        match self {
            Bench::Appends => appends(scratch, args).await,
            Bench::Latency => latency(scratch, args).await,
            Bench::Relay => relay(scratch, args).await,
            Bench::Rebuild => rebuild(scratch, args).await,
            Bench::Queue => queue(scratch, args).await,
            Bench::ClaimLatency => claim_latency(scratch, args).await,
            Bench::Budget => budget(scratch, args).await,
            Bench::Soak => soak::soak(scratch, args).await,
        }
    }
}

/// Runs the chosen benchmarks one after the other and prints the table.
async fn run(config: &Config, args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let run_id = format!("{:08x}", rand::random::<u32>());
    let benches = if args.only.is_empty() { Bench::ALL.to_vec() } else { args.only.clone() };
    let mut environment = None;
    let mut rows = Vec::new();
    let mut failure = None;
    for bench in benches {
        tracing::info!(bench = bench.label(), "benchmark starting");
        match run_in_scratch(config, &run_id, bench, &args, &mut environment).await {
            Ok(more) => rows.extend(more),
            Err(error) => {
                // What was measured so far is still printed.
                failure = Some(error.context(format!("benchmark `{}`", bench.label())));
                break;
            }
        }
    }
    if let Some(environment) = environment {
        println!("{environment}");
        println!();
    }
    if !rows.is_empty() {
        print!("{}", Table(&rows));
        println!();
    }
    println!("total run time: {:.0?}", started.elapsed());
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Runs `bench` on a stack of its own, removed afterwards whatever happens (short of a crash),
/// Ctrl-C included. Reads the `environment` the first time.
async fn run_in_scratch(
    config: &Config,
    run_id: &str,
    bench: Bench,
    args: &Args,
    environment: &mut Option<Environment>,
) -> anyhow::Result<Vec<Row>> {
    let scratch = scratch(config, run_id, bench.label()).await?;
    let outcome = tokio::select! {
        outcome = async {
            if environment.is_none() {
                *environment = Some(Environment::read(&scratch).await?);
            }
            bench.run(&scratch, args).await
        } => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    remove(scratch).await;
    outcome
}

// --- Scratch stacks ----------------------------------------------------------------------------

/// Enough connections for 32 writers plus the benchmark's own queries.
const POOL_CONNECTIONS: u32 = 40;

/// A stack for `label`: the database `devart_bench_<run>_<label>` on the server of
/// `base.database_url`, cloned from the migrated template, and the NATS prefix
/// `bench<run><label>`. What an in-process devart runs with there is `base`'s settings, but for
/// the gateway's rate limit: throughput is measured here, not the protection against one busy
/// caller.
async fn scratch(base: &Config, run_id: &str, label: &str) -> anyhow::Result<Stack> {
    let options = StackOptions {
        postgres_url: base.database_url.clone(),
        nats_url: base.nats_url.clone(),
        database: format!("devart_bench_{run_id}_{label}"),
        nats_prefix: format!("bench{run_id}{label}"),
        jwt_secret: Secret(format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())),
        db_connections: base.db_connections,
        pool_connections: POOL_CONNECTIONS,
        // A benchmark is a flood by design: no rate limit may shape what it measures.
        limits: devart_gateway::Limits {
            mutations_per_second: 0,
            requests_per_second: 0,
            requests_per_address: 0,
            ..base.limits.clone()
        },
    };
    Stack::create(options).await.context("setting up a scratch database and NATS prefix")
}

/// Deletes the raw stream (there only after the relay benchmark) and removes the stack; best
/// effort, so it never hides a result.
async fn remove(scratch: Stack) {
    let _ = scratch.bus.jetstream.delete_stream(raw_stream(&scratch.bus)).await;
    let database = scratch.database().to_owned();
    if let Err(error) = scratch.remove().await {
        let error = anyhow::Error::from(error);
        tracing::warn!(error = %format!("{error:#}"), database, "could not remove the scratch stack");
    }
}

// --- Workloads shared by several benchmarks -----------------------------------------------------

fn bench_actor() -> Actor {
    Actor::user("bench")
}

/// A task's life in `events` events: created, then reprioritized and renamed in turn.
fn task_history(id: Uuid, events: usize) -> Vec<Event> {
    let created = TaskEvent::Created {
        id,
        title: format!("Benchmark task {id}"),
        description: "Measured by devart-bench.".into(),
        priority: 3,
        required_capabilities: vec!["rust".into()],
        parent_task_id: None,
        max_attempts: 3,
        run_after: None,
        input: None,
        stage: None,
    };
    let later = (1..events).map(|i| match i % 4 {
        1 => TaskEvent::Reprioritized { from: 3, to: 4 },
        3 => TaskEvent::Reprioritized { from: 4, to: 3 },
        _ => TaskEvent::Updated {
            title: Some(format!("Benchmark task {id}, take {i}")),
            description: None,
            required_capabilities: None,
        },
    });
    std::iter::once(created).chain(later).map(Event::Task).collect()
}

/// Runs `workers` copies of `worker` (each told its number, from 0) until a shared deadline
/// `duration` away; returns the items they report per second of wall time.
async fn throughput<F, Fut>(workers: usize, duration: Duration, worker: F) -> anyhow::Result<f64>
where
    F: Fn(usize, Instant) -> Fut,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut running = JoinSet::new();
    for i in 0..workers {
        running.spawn(worker(i, deadline));
    }
    let mut items = 0;
    while let Some(done) = running.join_next().await {
        items += done.context("a worker panicked")??;
    }
    Ok(items as f64 / started.elapsed().as_secs_f64())
}

/// Appends per seeding transaction: one commit per many appends keeps seeding fast.
const SEED_APPENDS_PER_TRANSACTION: u64 = 500;
/// Seeding is CPU-bound on both sides; a few more writers than cores keep Postgres busy.
const SEED_WRITERS: u64 = 4;
/// The relay's sequencer batch (`SEQUENCE_BATCH_MAX` in `devart_commands::relay`).
const SEQUENCE_BATCH: usize = 2_000;

/// What [`seed`] stored.
struct Seeded {
    events: u64,
    /// Events per second the sequencer gave positions to, in the relay's batches, right after the
    /// burst of appends: what a sequencer facing a backlog does.
    sequenced_per_sec: f64,
}

/// Appends about `events` events through the store, as whole tasks of `per_task` events each (one
/// append per task), sequences them and lets the database settle.
async fn seed(scratch: &Stack, events: u64, per_task: u64) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let tasks = events.div_ceil(per_task);
    append_in_batches(&scratch.store, tasks, move |id| Ok((task_history(id, per_task as usize), None))).await?;
    let appended = tasks * per_task;
    tracing::info!(events = appended, elapsed = ?started.elapsed(), "seeded");
    let started = Instant::now();
    sequence_all(&scratch.store).await?;
    let sequenced_per_sec = appended as f64 / started.elapsed().as_secs_f64();
    tracing::info!(elapsed = ?started.elapsed(), "sequenced");
    settle(&scratch.pool).await?;
    Ok(Seeded { events: appended, sequenced_per_sec })
}

/// What one seeded task is: its events, and the change to the write-side rows its state calls
/// for (as [`Stored::beside`] gives it), if any.
type Seed = (Vec<Event>, Option<Beside>);

/// Appends `tasks` new task streams through the store (`store::append_beside_with`, one append
/// per task, each with a command context of its own), from [`SEED_WRITERS`] writers, each
/// committing [`SEED_APPENDS_PER_TRANSACTION`] appends at a time: the store's own statement, only
/// without a commit per task.
async fn append_in_batches<F>(store: &EventStore, tasks: u64, task: F) -> anyhow::Result<()>
where
    F: Fn(Uuid) -> anyhow::Result<Seed> + Clone + Send + 'static,
{
    let mut writers = JoinSet::new();
    for w in 0..SEED_WRITERS {
        let share = tasks / SEED_WRITERS + u64::from(w < tasks % SEED_WRITERS);
        let (store, task) = (store.clone(), task.clone());
        writers.spawn(async move {
            let mut left = share;
            while left > 0 {
                let count = left.min(SEED_APPENDS_PER_TRANSACTION);
                let mut tx = store.pool().begin().await?;
                for _ in 0..count {
                    let id = Uuid::now_v7();
                    let (events, beside) = task(id)?;
                    let context = CommandContext::new(bench_actor());
                    let stream = StreamId::new(Task::KIND, id);
                    devart_commands::store::append_beside_with(&mut *tx, &stream, 0, &events, &context, beside).await?;
                }
                tx.commit().await?;
                left -= count;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done.context("a seeding writer panicked")??;
    }
    Ok(())
}

/// Gives every committed event its position, in the relay's batches.
async fn sequence_all(store: &EventStore) -> anyhow::Result<()> {
    while store.sequence(SEQUENCE_BATCH).await.context("sequencing the stored events")?.is_some() {}
    Ok(())
}

/// Vacuums what sequencing left behind and checkpoints, so that neither autovacuum nor a
/// checkpoint lands in the middle of the measurement that follows.
async fn settle(pool: &PgPool) -> anyhow::Result<()> {
    let started = Instant::now();
    sqlx::query("vacuum (analyze) events").execute(pool).await.context("vacuuming events")?;
    sqlx::query("checkpoint").execute(pool).await.context("checkpointing")?;
    tracing::info!(elapsed = ?started.elapsed(), "settled");
    Ok(())
}

// --- 1. Appends ---------------------------------------------------------------------------------

/// (events per append, concurrent writers): single events as `createTask` appends them, then
/// batches as an importer would.
const APPEND_CASES: [(usize, usize); 5] = [(1, 1), (1, 8), (1, 32), (100, 1), (100, 8)];

/// Appends per second through `EventStore::append` (one `TaskCreated` into a new stream each, as a
/// `createTask` does), and events per second in batches of 100; each against single-row (or
/// 100-row) `INSERT`s into a plain table, at the same concurrency and the same durability.
async fn appends(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    sqlx::query(
        "create table bench_raw (id bigserial primary key, stream text not null, payload bytea not null, \
                                 at timestamptz not null)",
    )
    .execute(&scratch.pool)
    .await?;
    let duration = Duration::from_secs(args.duration_secs);
    // Opens every connection and warms both paths before anything is measured.
    let warm_up = Duration::from_millis(500);
    throughput(32, warm_up, |_, deadline| insert_rows(scratch.pool.clone(), 1, deadline)).await?;
    throughput(32, warm_up, |_, deadline| append_tasks(scratch.store.clone(), 1, deadline)).await?;

    let mut rows = Vec::new();
    for (batch, writers) in APPEND_CASES {
        let raw =
            throughput(writers, duration, |_, deadline| insert_rows(scratch.pool.clone(), batch, deadline)).await?;
        let devart =
            throughput(writers, duration, |_, deadline| append_tasks(scratch.store.clone(), batch, deadline)).await?;
        let writers_named = if writers == 1 { "1 writer".to_owned() } else { format!("{writers} writers") };
        let (name, unit) = match batch {
            1 => (format!("append, {writers_named}"), "appends/s"),
            _ => (format!("append {batch} events, {writers_named}"), "events/s"),
        };
        tracing::info!(%name, devart, raw, "measured");
        rows.push(Row { name, figure: devart, unit, baseline: Some(raw), target: Target::RatioAtLeast(0.5) });
    }
    Ok(rows)
}

/// One writer appending `batch` events to a new task stream per append until `deadline`;
/// returns the events appended.
async fn append_tasks(store: EventStore, batch: usize, deadline: Instant) -> anyhow::Result<u64> {
    let mut events = 0;
    while Instant::now() < deadline {
        let id = Uuid::now_v7();
        let context = CommandContext::new(bench_actor());
        store.append(&StreamId::new(Task::KIND, id), 0, &task_history(id, batch), &context).await?;
        events += batch as u64;
    }
    Ok(events)
}

/// The baseline writer: plain autocommit `INSERT`s of `batch` comparable rows (a stream name, the
/// same postcard payload, a timestamp) until `deadline`; returns the rows inserted.
async fn insert_rows(pool: PgPool, batch: usize, deadline: Instant) -> anyhow::Result<u64> {
    let payloads: Vec<Vec<u8>> =
        task_history(Uuid::now_v7(), batch).iter().map(|event| devart_commands::codec::encode(event).2).collect();
    let mut rows = 0;
    while Instant::now() < deadline {
        let stream = StreamId::new(Task::KIND, Uuid::now_v7());
        if batch == 1 {
            sqlx::query("insert into bench_raw (stream, payload, at) values ($1, $2, now())")
                .bind(stream.as_str())
                .bind(&payloads[0])
                .execute(&pool)
                .await?;
        } else {
            sqlx::query("insert into bench_raw (stream, payload, at) select $1, p, now() from unnest($2::bytea[]) p")
                .bind(stream.as_str())
                .bind(&payloads)
                .execute(&pool)
                .await?;
        }
        rows += batch as u64;
    }
    Ok(rows)
}

// --- 2. Command-to-subscription latency ---------------------------------------------------------

const TITLE_PREFIX: &str = "bench-";
const WARM_UP_COMMANDS: usize = 50;
/// How long to wait for the last notifications once every command was answered.
const STRAGGLER_GRACE: Duration = Duration::from_secs(5);

/// Milliseconds from just before a `createTask` is sent to its `taskUpdates` notification, at a
/// steady rate, with every role of devart in this process; against the HTTP round trip of a
/// trivial query at the same rate.
async fn latency(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    let devart = Server::start(&scratch.config, &[Role::Gateway, Role::Relay, Role::Projections]).await?;
    let api = Api(devart.client().clone());
    let mut socket = subscribe_task_updates(&devart).await?;
    for i in 0..WARM_UP_COMMANDS {
        let title = format!("warm-up-{i}");
        api.create_task(&title).await?;
        // The first also proves the subscription is live before anything is measured.
        await_title(&mut socket, &title).await?;
        api.me().await?;
    }
    let rate = args.latency_rate.max(1);
    let duration = Duration::from_secs(args.latency_secs.max(1));

    let queries = paced(rate, duration, |_| {
        let api = api.clone();
        async move {
            let sent = Instant::now();
            api.me().await?;
            Ok(sent.elapsed())
        }
    })
    .await?;

    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let expected = (f64::from(rate) * duration.as_secs_f64()).round() as usize;
    let stop = CancellationToken::new();
    // A task of its own, so receiving never waits behind sending; in a set, so that it is
    // aborted rather than leaked if sending fails.
    let mut reader = JoinSet::new();
    reader.spawn(collect_latencies(socket, sent_at.clone(), expected, stop.clone()));
    let responses = paced(rate, duration, |i| {
        let api = api.clone();
        let sent_at = sent_at.clone();
        async move {
            let title = format!("{TITLE_PREFIX}{i}");
            let sent = Instant::now();
            lock(&sent_at).insert(i, sent);
            api.create_task(&title).await?;
            Ok(sent.elapsed())
        }
    })
    .await?;
    let collected = tokio::select! {
        collected = reader.join_next() => collected,
        _ = tokio::time::sleep(STRAGGLER_GRACE) => {
            stop.cancel();
            reader.join_next().await
        }
    };
    let latencies =
        collected.context("the subscription reader is gone")?.context("the subscription reader panicked")??;
    devart.stop().await?;

    let (updates, queries, responses) = (Stats::of(latencies), Stats::of(queries), Stats::of(responses));
    tracing::info!(received = updates.count, sent = expected, "latency measured");
    let ms = |name: &str, figure: Duration, baseline: Duration, target| Row {
        name: name.to_owned(),
        figure: millis(figure),
        unit: "ms",
        baseline: Some(millis(baseline)),
        target,
    };
    Ok(vec![
        ms("createTask → taskUpdates p50", updates.p50, queries.p50, Target::None),
        ms("createTask → taskUpdates p99", updates.p99, queries.p99, Target::AtMost(50.0)),
        ms("createTask → taskUpdates max", updates.max, queries.max, Target::None),
        ms("createTask response p50", responses.p50, queries.p50, Target::None),
        ms("createTask response p99", responses.p99, queries.p99, Target::None),
        Row {
            name: "taskUpdates received (baseline: sent)".into(),
            figure: updates.count as f64,
            unit: "updates",
            baseline: Some(expected as f64),
            target: Target::RatioAtLeast(1.0),
        },
    ])
}

/// Starts `request(i)` for `i` in `0..rate × duration` on a fixed schedule, each in a task of its
/// own, so a slow response never delays the next send (an open-loop load: what a fleet of
/// independent clients does). Returns the durations the successful requests report.
async fn paced<F, Fut>(rate: u32, duration: Duration, request: F) -> anyhow::Result<Vec<Duration>>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<Duration>> + Send + 'static,
{
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    // A late tick is caught up at once: the average rate holds even if the sender stalls.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut requests = JoinSet::new();
    for i in 0..total {
        ticker.tick().await;
        requests.spawn(request(i));
    }
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    let mut durations = Vec::with_capacity(total as usize);
    let mut failures = Vec::new();
    while let Some(done) = requests.join_next().await {
        match done.context("a request panicked")? {
            Ok(duration) => durations.push(duration),
            Err(error) => failures.push(error),
        }
    }
    tracing::info!(requests = total, rate = achieved, failures = failures.len(), "paced load sent");
    match failures.into_iter().next() {
        // A few failures under load are a result; mostly failures means the benchmark is broken.
        Some(error) if durations.len() < total as usize / 2 => Err(error.context("most requests failed")),
        Some(error) => {
            tracing::warn!(error = %format!("{error:#}"), "some requests failed");
            Ok(durations)
        }
        None => Ok(durations),
    }
}

/// Receives `taskUpdates` until `expected` measured commands arrived or `stop`; returns the
/// latency of each, matched by the title its command carried (the notification may come before
/// the mutation's response, so the task id cannot be the key).
async fn collect_latencies(
    mut socket: Subscriptions,
    sent_at: Arc<Mutex<HashMap<u64, Instant>>>,
    expected: usize,
    stop: CancellationToken,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(expected);
    while latencies.len() < expected {
        let title = tokio::select! {
            _ = stop.cancelled() => break,
            title = next_title(&mut socket) => title?,
        };
        let received = Instant::now();
        let Some(i) = title.strip_prefix(TITLE_PREFIX).and_then(|i| i.parse::<u64>().ok()) else {
            continue;
        };
        if let Some(sent) = lock(&sent_at).remove(&i) {
            latencies.push(received - sent);
        }
    }
    Ok(latencies)
}

/// Waits (at most 10 s) for the notification about the task titled `title`, skipping others.
async fn await_title(socket: &mut Subscriptions, title: &str) -> anyhow::Result<()> {
    let wait = async {
        while next_title(socket).await? != title {}
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .with_context(|| format!("no notification about `{title}` within 10 s"))?
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Percentiles of a sample.
struct Stats {
    count: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut sample: Vec<Duration>) -> Stats {
        sample.sort_unstable();
        // Nearest rank: the smallest value with at least q of the sample at or below it.
        let rank = |q: f64| {
            let index = ((q * sample.len() as f64).ceil() as usize).saturating_sub(1);
            sample.get(index).copied().unwrap_or_default()
        };
        Stats { count: sample.len(), p50: rank(0.50), p99: rank(0.99), max: sample.last().copied().unwrap_or_default() }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// A `graphql-transport-ws` connection to `devart`'s gateway, as its administrator, subscribed
/// to `taskUpdates`.
async fn subscribe_task_updates(devart: &Server) -> anyhow::Result<Subscriptions> {
    let token = devart.token().context("the scratch stack has a JWT secret")?;
    let mut socket = devart.subscriptions(token).await?;
    socket.subscribe("1", "subscription { taskUpdates { id title } }", json!({})).await?;
    Ok(socket)
}

/// The title in the next `taskUpdates` notification.
async fn next_title(socket: &mut Subscriptions) -> anyhow::Result<String> {
    let data = socket.next_data().await?;
    data["taskUpdates"]["title"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("a notification without a title: {data}"))
}

/// The GraphQL calls the benchmark makes, as an administrator or as an agent (its API key as the
/// token); cheap to clone into each request's task.
#[derive(Clone)]
struct Api(Client);

impl Api {
    /// The same API, called with another token (an agent's API key).
    fn with_token(&self, token: &str) -> Api {
        Api(self.0.with_token(token))
    }

    async fn create_task(&self, title: &str) -> anyhow::Result<()> {
        self.0
            .data("mutation($title: String!) { createTask(input: {title: $title}) { id } }", json!({ "title": title }))
            .await?;
        Ok(())
    }

    async fn me(&self) -> anyhow::Result<()> {
        self.0.data("{ me { subject } }", json!({})).await?;
        Ok(())
    }

    /// Registers an agent able to do `capabilities`; returns its API key.
    async fn register_agent(&self, name: &str, capabilities: &[&str]) -> anyhow::Result<String> {
        let data = self
            .0
            .data(
                "mutation($name: String!, $capabilities: [String!]!) { \
                   registerAgent(input: {name: $name, capabilities: $capabilities}) { apiKey } }",
                json!({ "name": name, "capabilities": capabilities }),
            )
            .await?;
        // Not `data` in the message: it holds the key.
        data["registerAgent"]["apiKey"].as_str().map(str::to_owned).context("registerAgent answered with no API key")
    }

    /// Claims a task as the agent whose key this is; its id, or `None` when nothing is pending.
    async fn claim_task(&self) -> anyhow::Result<Option<String>> {
        let data = self.0.data("mutation { claimTask(leaseSeconds: 30) { id } }", json!({})).await?;
        Ok(data["claimTask"]["id"].as_str().map(str::to_owned))
    }

    async fn complete_task(&self, id: &str) -> anyhow::Result<()> {
        self.0.data("mutation($id: ID!) { completeTask(taskId: $id) { id } }", json!({ "id": id })).await?;
        Ok(())
    }
}

// --- 3. Relay -----------------------------------------------------------------------------------

/// Messages in flight before their acknowledgements are awaited, as the publisher pipelines.
const RAW_PUBLISH_BATCH: usize = 500;

/// Events per second the relay's publisher sends to an empty stream from a store already holding
/// `--relay-events` sequenced events; against plain pipelined JetStream publishes of the same
/// messages (payloads and headers) into a scratch stream.
async fn relay(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    let events = seed(scratch, args.relay_events, args.events_per_task).await?.events;
    let baseline = raw_publish_rate(scratch, events).await?;
    let figure = publisher_rate(scratch, events).await?;
    Ok(vec![Row {
        name: format!("relay publish, {} events, {}/task", number(events as f64), args.events_per_task),
        figure,
        unit: "events/s",
        baseline: Some(baseline),
        target: Target::None,
    }])
}

async fn publisher_rate(scratch: &Stack, events: u64) -> anyhow::Result<f64> {
    let bus = &scratch.bus;
    let stream = bus.jetstream.get_stream(bus.names.stream()).await.map_err(|e| anyhow!("{e}"))?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60 + events / 1_000);
    let publisher = tokio::spawn(devart_commands::relay::run_publisher(
        scratch.store.clone(),
        bus.clone(),
        Nudge::default(),
        shutdown.clone(),
    ));
    loop {
        let info = stream.get_info().await.map_err(|e| anyhow!("reading the stream's state: {e}"))?;
        if info.state.last_sequence >= events {
            break;
        }
        if Instant::now() > deadline {
            bail!("the publisher reached {} of {events} events in {:.0?}", info.state.last_sequence, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    publisher.await.context("the publisher panicked")?;
    Ok(events as f64 / elapsed.as_secs_f64())
}

fn raw_stream(bus: &Bus) -> String {
    format!("{}_RAW", bus.names.prefix().to_ascii_uppercase())
}

async fn raw_publish_rate(scratch: &Stack, events: u64) -> anyhow::Result<f64> {
    let bus = &scratch.bus;
    let mut messages = raw_messages(scratch, events).await?;
    let mut config = bus.names.stream_config();
    config.name = raw_stream(bus);
    config.subjects = vec![format!("{}.raw.>", bus.names.prefix())];
    bus.jetstream.create_stream(config).await.map_err(|e| anyhow!("creating the raw stream: {e}"))?;
    let started = Instant::now();
    while !messages.is_empty() {
        let mut acks = Vec::with_capacity(RAW_PUBLISH_BATCH);
        for (subject, headers, payload) in messages.drain(..RAW_PUBLISH_BATCH.min(messages.len())) {
            acks.push(bus.jetstream.publish_with_headers(subject, headers, payload.into()).await?);
        }
        for ack in acks {
            ack.await?;
        }
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// The messages the publisher sends for the stored events, on subjects of the raw stream.
async fn raw_messages(scratch: &Stack, events: u64) -> anyhow::Result<Vec<(String, HeaderMap, Vec<u8>)>> {
    let recorded = scratch.store.read_all(devart_domain::Position::START, None, events as usize).await?;
    let prefix = scratch.bus.names.prefix();
    let mut messages = Vec::with_capacity(recorded.len());
    for r in &recorded {
        let subject = format!("{prefix}.raw.{}.{}", r.event.aggregate(), r.meta.event_type);
        let payload = serde_json::to_vec(&devart_commands::codec::to_json(&r.event))?;
        messages.push((subject, devart_commands::bus::headers(&r.meta), payload));
    }
    Ok(messages)
}

// --- 4. Projection rebuild ----------------------------------------------------------------------

/// Events per second the tasks projection rebuilds from `--rebuild-events` stored events; against
/// an `insert … select` in SQL of one `tasks`-shaped row per event into a copy of `tasks` (same
/// columns, same indexes), which is what Postgres alone does with the same input.
async fn rebuild(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    let Seeded { events, sequenced_per_sec } = seed(scratch, args.rebuild_events, args.events_per_task).await?;
    let baseline = raw_copy_rate(&scratch.pool).await?;
    let report = devart_projections::rebuild::rebuild(&scratch.pool, &scratch.store, &TasksProjection, |_, _| {})
        .await
        .context("rebuilding the tasks projection")?;
    if report.events != events {
        bail!("the rebuild replayed {} events, not {events}", report.events);
    }
    let figure = report.events as f64 / report.elapsed.as_secs_f64();
    let workload = format!("{} events, {}/task", number(events as f64), args.events_per_task);
    // `devart replay`: every read model, into a schema of its own.
    let replayed = devart::portable::replay(
        &scratch.config,
        devart_commands::history::At::Position(report.position),
        "bench_replay",
        |_, _| {},
    )
    .await
    .context("replaying into a separate schema")?;
    if replayed.events != events {
        bail!("the replay applied {} events, not {events}", replayed.events);
    }
    Ok(vec![
        Row {
            name: format!("tasks rebuild, {workload}"),
            figure,
            unit: "events/s",
            baseline: Some(baseline),
            target: Target::AtLeast(50_000.0),
        },
        Row {
            name: format!("replay, every read model, {workload}"),
            figure: replayed.events as f64 / replayed.elapsed.as_secs_f64(),
            unit: "events/s",
            baseline: Some(baseline),
            target: Target::AtLeast(50_000.0),
        },
        // The ceiling of sustained ingest: every event passes the one sequencer at a time.
        Row {
            name: format!("sequencer, {workload}"),
            figure: sequenced_per_sec,
            unit: "events/s",
            baseline: None,
            target: Target::None,
        },
    ])
}

async fn raw_copy_rate(pool: &PgPool) -> anyhow::Result<f64> {
    sqlx::query("create table bench_tasks (like tasks including all)").execute(pool).await?;
    let started = Instant::now();
    let copied = sqlx::query(
        "insert into bench_tasks (id, title, description, status, priority, required_capabilities, \
                                  parent_task_id, version, position, created_at, updated_at, created_by) \
         select event_id, event_type, '', 'PENDING', 3, array['rust'], null, stream_version, position, \
                occurred_at, occurred_at, actor_kind || ':' || actor_id \
         from events where position is not null",
    )
    .execute(pool)
    .await
    .context("copying events into bench_tasks")?
    .rows_affected();
    Ok(copied as f64 / started.elapsed().as_secs_f64())
}

// --- 5. Task queue ------------------------------------------------------------------------------

/// Concurrent agents claiming and completing.
const QUEUE_AGENTS: [usize; 3] = [1, 16, 64];
/// Pending tasks in devart's queue when a measurement starts, at least: far more than one takes.
const QUEUE_PENDING_MIN: u64 = 20_000;
/// The same for the baseline's queue, which drains faster.
const RAW_QUEUE_PENDING_MIN: u64 = 100_000;
/// Commands in flight while filling the queue or registering agents.
const QUEUE_SEEDERS: usize = 8;
/// What the benchmark's agents can do; the tasks they claim require nothing, or this.
const AGENT_CAPABILITIES: [&str; 1] = ["rust"];
const QUEUED_TITLE: &str = "Queued by devart-bench";
const RAN_DRY: &str = "the queue ran dry during the measurement";

/// Tasks per second claimed and completed by 1, 16 and 64 concurrent agents, through the command
/// layer (`Commands::claim_task`, then `TaskCommand::Complete`) and through GraphQL over HTTP
/// (`claimTask`, then `completeTask`, with each agent's API key, against the gateway alone); each
/// against a plain SQL queue (`UPDATE … FOR UPDATE SKIP LOCKED`, then `DELETE`) on a table of its
/// own, with as many agents. All three share a pool of as many connections as devart's (16 by
/// default), so 64 agents wait for connections, as they would.
async fn queue(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
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
async fn create_raw_queue(pool: &PgPool) -> anyhow::Result<()> {
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
async fn fill_raw_queue(pool: &PgPool, pending: u64) -> anyhow::Result<()> {
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

/// Creates tasks through `Commands::create_task`, from a few concurrent writers, until `pending`
/// wait in the queue.
async fn fill_queue(commands: &Commands, pending: u64) -> anyhow::Result<()> {
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

async fn create_queued_task(commands: &Commands) -> anyhow::Result<()> {
    let command = CreateTask::new(Uuid::now_v7(), Title::parse(QUEUED_TITLE)?);
    commands.create_task(command, &CommandContext::new(bench_actor())).await?;
    Ok(())
}

/// Vacuums a queue (each claim leaves dead rows behind) and checkpoints, so that neither lands
/// in the measurement that follows.
async fn settle_queue(pool: &PgPool, table: &str) -> anyhow::Result<()> {
    sqlx::query(&format!("vacuum (analyze) {table}"))
        .execute(pool)
        .await
        .with_context(|| format!("vacuuming {table}"))?;
    sqlx::query("checkpoint").execute(pool).await.context("checkpointing")?;
    Ok(())
}

/// Registers `count` agents through the command layer, a few at a time (each key is hashed with
/// argon2); returns their ids.
async fn register_agents(commands: &Commands, count: usize) -> anyhow::Result<Vec<Uuid>> {
    futures::stream::iter(0..count)
        .map(|i| async move {
            let name = AgentName::parse(&format!("bench-agent-{i}"))?;
            let capabilities = Capabilities::parse(&AGENT_CAPABILITIES)?;
            let context = CommandContext::new(bench_actor());
            let (agent, _key) = commands.register_agent(name, capabilities, &context).await?;
            anyhow::Ok(agent.state.id)
        })
        .buffer_unordered(QUEUE_SEEDERS)
        .try_collect()
        .await
}

/// Registers `count` agents through `registerAgent`; returns the API as each of them.
async fn register_agents_over_http(api: &Api, count: usize) -> anyhow::Result<Vec<Api>> {
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
async fn raw_claims(pool: PgPool, deadline: Instant) -> anyhow::Result<u64> {
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
async fn command_claims(commands: Commands, agent_id: Uuid, deadline: Instant) -> anyhow::Result<u64> {
    let mut done = 0;
    while Instant::now() < deadline {
        claim_and_complete(&commands, agent_id).await?;
        done += 1;
    }
    Ok(done)
}

/// One claim and the completion of the claimed task; returns how long the claim took.
async fn claim_and_complete(commands: &Commands, agent_id: Uuid) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let request =
        ClaimRequest { agent_id, capabilities: AGENT_CAPABILITIES.map(str::to_owned).to_vec(), lease: LEASE_DEFAULT };
    // A command id per command: a reused one would only replay the first command's outcome.
    let context = || CommandContext::new(Actor::agent(agent_id.to_string()));
    let claimed = commands.claim_task(&request, &context()).await?.context(RAN_DRY)?;
    let claim_took = started.elapsed();
    let complete = TaskCommand::Complete { agent_id, result: None };
    commands.execute::<Task>(claimed.state.id, complete, &context(), None).await?;
    Ok(claim_took)
}

/// One agent claiming and completing over HTTP, until `deadline`; returns the tasks completed.
async fn graphql_claims(agent: Api, deadline: Instant) -> anyhow::Result<u64> {
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
const SHALLOW_QUEUE: u64 = 1_000;
/// Claims before the timed ones: connections, caches and the head of the queue's index warm up.
const CLAIM_WARM_UP: u64 = 300;

/// Milliseconds one agent's `Commands::claim_task` takes with 1,000 tasks pending, and with
/// `--claim-pending` (a million): a claim must not slow down as the queue grows. Claims follow
/// each other; each claimed task is completed, then replaced by a new one (not timed), so the
/// depth holds.
async fn claim_latency(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
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
async fn claim_samples(commands: &Commands, agent_id: Uuid, samples: u64) -> anyhow::Result<(Stats, Stats)> {
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

/// Queues `count` pending tasks, stored as `Commands::create_task` stores a new one: its
/// `TaskCreated` event at version 1 of `task-<id>`, its command's record and its queue row, which
/// the append's own statement writes ([`Stored::beside`]); only through [`append_in_batches`],
/// since one commit per task would take minutes for a million. Then sequences them (as the relay
/// would have), vacuums and checkpoints.
async fn queue_in_bulk(scratch: &Stack, count: u64) -> anyhow::Result<()> {
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

/// The event `Commands::create_task` decides on for a new task titled [`QUEUED_TITLE`].
fn queued_task_created(id: Uuid) -> anyhow::Result<TaskEvent> {
    let command = TaskCommand::Create(CreateTask::new(id, Title::parse(QUEUED_TITLE)?));
    Task::decide(&TaskState::default(), &command)?.pop().context("creating a task decides on no event")
}

// --- Budgets ----------------------------------------------------------------------------------

/// Concurrent spenders in the budget benchmark: as many as the pool has connections.
const BUDGET_SPENDERS: usize = 16;
/// Services the spread measurement spends over.
const BUDGET_SERVICES: usize = 100;

async fn budget(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
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
        services.push(commands.register_service(service, &CommandContext::new(bench_actor())).await?.id);
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
fn next_service(services: &[Uuid], spread: Option<usize>) -> Uuid {
    match spread {
        Some(_) => services[rand::random::<usize>() % services.len()],
        None => services[0],
    }
}

/// Authorizes one cent and charges it, through the command layer, until `deadline`.
async fn spend(
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
        let answer = commands.authorize_usage(&request, &agent).await?;
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
        commands.record_charge(&charge, &agent).await?;
        done += 1;
    }
    Ok(done)
}

/// The baseline: one guarded update per spend, `spent + x <= budget`.
async fn raw_spend(
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
