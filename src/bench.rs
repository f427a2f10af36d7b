//! `devart bench`: devart's paths measured against raw baselines on the same servers, in the same run.
//!
//! A figure alone says little on a noisy machine, so every devart figure stands beside a baseline
//! measured minutes apart on the same Postgres and NATS: a plain `INSERT`, a plain JetStream
//! publish, a plain SQL copy, a trivial HTTP query. Where a baseline exists, the target is a ratio.
//!
//! Each benchmark runs in a scratch database and NATS prefix of its own, removed afterwards (also
//! after an error or Ctrl-C), so benchmarks cannot disturb each other or a real instance.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use async_nats::HeaderMap;
use devart_commands::{Bus, CommandContext, EventStore, Nudge};
use devart_domain::task::{Task, TaskEvent};
use devart_domain::{Actor, Aggregate, Event, StreamId};
use devart_projections::tasks::TasksProjection;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use crate::{Config, Role, Secret};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Seconds each throughput measurement runs.
    #[arg(long, default_value_t = 5)]
    pub duration_secs: u64,
    /// Events the projection rebuild replays.
    #[arg(long, default_value_t = 1_000_000)]
    pub rebuild_events: u64,
    /// Events the relay publishes (enough for a few seconds of publishing: shorter runs are noisy).
    #[arg(long, default_value_t = 200_000)]
    pub relay_events: u64,
    /// Events per task in the store the relay and the rebuild replay: a creation, then changes.
    /// 1 (creations only) is the rebuild's worst case: one row written per event.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub events_per_task: u64,
    /// Commands per second while measuring command-to-subscription latency.
    #[arg(long, default_value_t = 500)]
    pub latency_rate: u32,
    /// Seconds the latency measurement (and its baseline) sends for.
    #[arg(long, default_value_t = 10)]
    pub latency_secs: u64,
    /// Runs only these benchmarks (comma-separated); all by default.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<Bench>,
}

/// A benchmark: one scratch environment, one or more rows of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bench {
    /// `EventStore::append` against single-row `INSERT`s.
    Appends,
    /// A `createTask` mutation until its `taskUpdates` notification, at a steady rate.
    Latency,
    /// The relay's publisher against plain JetStream publishes.
    Relay,
    /// The tasks projection's rebuild against a plain SQL copy.
    Rebuild,
}

impl Bench {
    const ALL: [Bench; 4] = [Bench::Appends, Bench::Latency, Bench::Relay, Bench::Rebuild];

    fn label(self) -> &'static str {
        match self {
            Bench::Appends => "appends",
            Bench::Latency => "latency",
            Bench::Relay => "relay",
            Bench::Rebuild => "rebuild",
        }
    }

    async fn run(self, scratch: &Scratch, args: &Args) -> anyhow::Result<Vec<Row>> {
        match self {
            Bench::Appends => appends(scratch, args).await,
            Bench::Latency => latency(scratch, args).await,
            Bench::Relay => relay(scratch, args).await,
            Bench::Rebuild => rebuild(scratch, args).await,
        }
    }
}

/// `devart bench`: runs the chosen benchmarks one after the other and prints the table.
pub async fn run(config: &Config, args: Args) -> anyhow::Result<()> {
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

/// Runs `bench` in a scratch environment of its own, removed afterwards whatever happens (short
/// of a crash), Ctrl-C included. Reads the `environment` the first time.
async fn run_in_scratch(
    config: &Config,
    run_id: &str,
    bench: Bench,
    args: &Args,
    environment: &mut Option<Environment>,
) -> anyhow::Result<Vec<Row>> {
    let scratch = Scratch::create(config, run_id, bench.label()).await?;
    let outcome = tokio::select! {
        outcome = async {
            if environment.is_none() {
                *environment = Some(Environment::read(&scratch).await?);
            }
            bench.run(&scratch, args).await
        } => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    scratch.remove().await;
    outcome
}

// --- The table --------------------------------------------------------------------------------

/// One line of the table: a devart figure beside its same-run baseline.
struct Row {
    name: String,
    figure: f64,
    unit: &'static str,
    baseline: Option<f64>,
    target: Target,
}

/// What a row must reach to pass.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// Context only.
    None,
    /// `figure / baseline` at least this.
    RatioAtLeast(f64),
    AtLeast(f64),
    AtMost(f64),
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.figure / b)
    }

    fn passed(&self) -> Option<bool> {
        match self.target {
            Target::None => None,
            Target::RatioAtLeast(min) => Some(self.ratio().is_some_and(|r| r >= min)),
            Target::AtLeast(min) => Some(self.figure >= min),
            Target::AtMost(max) => Some(self.figure <= max),
        }
    }

    fn cells(&self) -> [String; 7] {
        let optional = |v: Option<String>| v.unwrap_or_else(|| "—".into());
        [
            self.name.clone(),
            number(self.figure),
            self.unit.to_owned(),
            optional(self.baseline.map(number)),
            optional(self.ratio().map(|r| format!("{r:.2}"))),
            self.target.to_string(),
            optional(self.passed().map(|p| if p { "pass" } else { "FAIL" }.to_owned())),
        ]
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::None => f.write_str("—"),
            Target::RatioAtLeast(min) => write!(f, "ratio ≥ {min:.2}"),
            Target::AtLeast(min) => write!(f, "≥ {}", number(*min)),
            Target::AtMost(max) => write!(f, "≤ {}", number(*max)),
        }
    }
}

/// Rates with thousands separators; small figures (milliseconds) with two significant digits or so.
fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        let digits = format!("{:.0}", value.abs());
        let mut grouped = String::new();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        if value < 0.0 {
            grouped.insert(0, '-');
        }
        grouped
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// The rows as a Markdown table, aligned for the terminal too.
struct Table<'a>(&'a [Row]);

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEADER: [&str; 7] = ["benchmark", "figure", "unit", "baseline", "ratio", "target", "result"];
        let rows: Vec<[String; 7]> = self.0.iter().map(Row::cells).collect();
        let mut widths = HEADER.map(|h| h.chars().count());
        for cells in &rows {
            for (width, cell) in widths.iter_mut().zip(cells) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if left_aligned(i) {
                    write!(f, "| {cell}{} ", " ".repeat(pad))?;
                } else {
                    write!(f, "| {}{cell} ", " ".repeat(pad))?;
                }
            }
            writeln!(f, "|")
        };
        line(f, &HEADER.map(str::to_owned))?;
        let rules: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, w)| if left_aligned(i) { "-".repeat(*w) } else { format!("{}:", "-".repeat(w - 1)) })
            .collect();
        line(f, &rules)?;
        for cells in &rows {
            line(f, cells)?;
        }
        Ok(())
    }
}

/// Names and words read left-aligned, numbers right-aligned.
fn left_aligned(column: usize) -> bool {
    matches!(column, 0 | 2 | 5 | 6)
}

/// Where the figures were measured, printed above the table.
struct Environment {
    cores: usize,
    memory_gib: Option<f64>,
    postgres: String,
    synchronous_commit: String,
    nats: String,
}

impl Environment {
    async fn read(scratch: &Scratch) -> anyhow::Result<Environment> {
        let postgres: String = sqlx::query_scalar("show server_version").fetch_one(&scratch.pool).await?;
        let synchronous_commit: String = sqlx::query_scalar("show synchronous_commit").fetch_one(&scratch.pool).await?;
        let memory_gib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
            let kib: f64 = info
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()?;
            Some(kib / 1024.0 / 1024.0)
        });
        Ok(Environment {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib,
            postgres,
            synchronous_commit,
            nats: scratch.bus.client.server_info().version,
        })
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cores", self.cores)?;
        if let Some(memory) = self.memory_gib {
            write!(f, ", {memory:.1} GiB")?;
        }
        write!(f, "; Postgres {} (synchronous_commit = {}); NATS {}", self.postgres, self.synchronous_commit, self.nats)
    }
}

// --- Scratch environments -----------------------------------------------------------------------

/// Enough connections for 32 writers plus the benchmark's own queries.
const POOL_CONNECTIONS: u32 = 40;

/// A database and a NATS prefix of a benchmark's own.
struct Scratch {
    /// Points at the scratch database and prefix; what an in-process devart runs with.
    config: Config,
    pool: PgPool,
    store: EventStore,
    bus: Bus,
}

impl Scratch {
    /// Creates and migrates `devart_bench_<run>_<label>` on the server of `base.database_url`, and
    /// the event stream under the prefix `bench<run><label>`.
    async fn create(base: &Config, run_id: &str, label: &str) -> anyhow::Result<Scratch> {
        let name = format!("devart_bench_{run_id}_{label}");
        let config = Config {
            database_url: with_database(&base.database_url, &name)?,
            nats_url: base.nats_url.clone(),
            nats_prefix: format!("bench{run_id}{label}"),
            jwt_secret: Some(Secret(format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()))),
            db_connections: base.db_connections,
        };
        match Scratch::open(config.clone()).await {
            Ok(scratch) => Ok(scratch),
            Err(error) => {
                if let Err(e) = drop_database(&config.database_url).await {
                    tracing::warn!(error = %e, database = name, "could not drop the scratch database");
                }
                Err(error)
            }
        }
    }

    async fn open(config: Config) -> anyhow::Result<Scratch> {
        devart_commands::db::create_database_if_missing(&config.database_url)
            .await
            .context("creating the scratch database")?;
        let pool = devart_commands::db::connect(&config.database_url, POOL_CONNECTIONS)
            .await
            .context("connecting to the scratch database")?;
        devart_commands::db::migrate(&pool).await.context("migrating the scratch database")?;
        let bus = config.bus().await?;
        tokio::time::timeout(Duration::from_secs(10), bus.ensure_stream())
            .await
            .context("NATS did not answer within 10 s")?
            .map_err(|e| anyhow!("creating the scratch JetStream stream: {e}"))?;
        Ok(Scratch { store: EventStore::new(pool.clone()), config, pool, bus })
    }

    /// Drops the database and deletes the streams; best effort, so it never hides a result.
    async fn remove(self) {
        self.pool.close().await;
        for stream in [self.bus.names.stream(), raw_stream(&self.bus)] {
            // The raw stream exists only after the relay benchmark.
            let _ = self.bus.jetstream.delete_stream(&stream).await;
        }
        if let Err(error) = drop_database(&self.config.database_url).await {
            tracing::warn!(%error, "could not drop the scratch database");
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    // Not in the message: the URL may carry a password.
    let mut url = reqwest::Url::parse(url).context("DATABASE_URL is not a URL")?;
    url.set_path(&format!("/{name}"));
    Ok(url.into())
}

async fn drop_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options.get_database().context("no database named")?.to_owned();
    let mut admin = options.database("postgres").disable_statement_logging().connect().await?;
    // `with (force)`: a benchmark stopped half-way may leave connections behind.
    sqlx::query(&format!("drop database if exists \"{name}\" with (force)")).execute(&mut admin).await?;
    admin.close().await?;
    Ok(())
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
        description: "Measured by devart bench.".into(),
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

/// Runs `workers` copies of `worker` until a shared deadline `duration` away; returns the items
/// they report per second of wall time.
async fn throughput<F, Fut>(workers: usize, duration: Duration, worker: F) -> anyhow::Result<f64>
where
    F: Fn(Instant) -> Fut,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut running = JoinSet::new();
    for _ in 0..workers {
        running.spawn(worker(deadline));
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
async fn seed(scratch: &Scratch, events: u64, per_task: u64) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let tasks = events.div_ceil(per_task);
    let mut writers = JoinSet::new();
    for w in 0..SEED_WRITERS {
        let share = tasks / SEED_WRITERS + u64::from(w < tasks % SEED_WRITERS);
        writers.spawn(seed_tasks(scratch.store.clone(), share, per_task as usize));
    }
    while let Some(done) = writers.join_next().await {
        done.context("a seeding writer panicked")??;
    }
    let appended = tasks * per_task;
    tracing::info!(events = appended, elapsed = ?started.elapsed(), "seeded");
    let started = Instant::now();
    while scratch.store.sequence(SEQUENCE_BATCH).await.context("sequencing the seeded events")?.is_some() {}
    let sequenced_per_sec = appended as f64 / started.elapsed().as_secs_f64();
    tracing::info!(elapsed = ?started.elapsed(), "sequenced");
    settle(&scratch.pool).await?;
    Ok(Seeded { events: appended, sequenced_per_sec })
}

async fn seed_tasks(store: EventStore, tasks: u64, per_task: usize) -> anyhow::Result<()> {
    let mut left = tasks;
    while left > 0 {
        let count = left.min(SEED_APPENDS_PER_TRANSACTION);
        let mut tx = store.pool().begin().await?;
        for _ in 0..count {
            let id = Uuid::now_v7();
            let context = CommandContext::new(bench_actor());
            let history = task_history(id, per_task);
            devart_commands::store::append_with(&mut *tx, &StreamId::new(Task::KIND, id), 0, &history, &context)
                .await?;
        }
        tx.commit().await?;
        left -= count;
    }
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
async fn appends(scratch: &Scratch, args: &Args) -> anyhow::Result<Vec<Row>> {
    sqlx::query(
        "create table bench_raw (id bigserial primary key, stream text not null, payload bytea not null, \
                                 at timestamptz not null)",
    )
    .execute(&scratch.pool)
    .await?;
    let duration = Duration::from_secs(args.duration_secs);
    // Opens every connection and warms both paths before anything is measured.
    let warm_up = Duration::from_millis(500);
    throughput(32, warm_up, |deadline| insert_rows(scratch.pool.clone(), 1, deadline)).await?;
    throughput(32, warm_up, |deadline| append_tasks(scratch.store.clone(), 1, deadline)).await?;

    let mut rows = Vec::new();
    for (batch, writers) in APPEND_CASES {
        let raw = throughput(writers, duration, |deadline| insert_rows(scratch.pool.clone(), batch, deadline)).await?;
        let devart =
            throughput(writers, duration, |deadline| append_tasks(scratch.store.clone(), batch, deadline)).await?;
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
async fn latency(scratch: &Scratch, args: &Args) -> anyhow::Result<Vec<Row>> {
    let devart = Devart::start(&scratch.config).await?;
    let mut socket = devart.subscribe_task_updates().await?;
    for i in 0..WARM_UP_COMMANDS {
        let title = format!("warm-up-{i}");
        devart.api.create_task(&title).await?;
        // The first also proves the subscription is live before anything is measured.
        await_title(&mut socket, &title).await?;
        devart.api.me().await?;
    }
    let rate = args.latency_rate.max(1);
    let duration = Duration::from_secs(args.latency_secs.max(1));

    let api = devart.api.clone();
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
    mut socket: Socket,
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
async fn await_title(socket: &mut Socket, title: &str) -> anyhow::Result<()> {
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

/// devart with every role, running inside this process on a free port.
struct Devart {
    addr: SocketAddr,
    api: Api,
    stop: DropGuard,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Devart {
    async fn start(config: &Config) -> anyhow::Result<Devart> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a free port")?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let running = tokio::spawn({
            let (config, shutdown) = (config.clone(), shutdown.clone());
            async move {
                crate::run(&config, &[Role::Gateway, Role::Relay, Role::Projections], Some(listener), shutdown).await
            }
        });
        let secret = config.jwt_secret.clone().context("the scratch config has a JWT secret")?;
        let token = devart_gateway::SigningKey::new(secret.0.into_bytes()).issue(
            "bench",
            devart_gateway::Role::Supervisor,
            chrono::Duration::hours(1),
        );
        let api = Api {
            client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
            url: format!("http://{addr}/graphql").into(),
            token: token.into(),
        };
        let devart = Devart { addr, api, stop: shutdown.drop_guard(), running };
        devart.wait_healthy().await?;
        Ok(devart)
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = format!("http://{}/healthz", self.addr);
        while Instant::now() < deadline {
            if self.running.is_finished() {
                bail!("devart stopped while starting");
            }
            if self.api.client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("devart did not become healthy within 10 s")
    }

    /// A `graphql-transport-ws` connection subscribed to `taskUpdates`.
    async fn subscribe_task_updates(&self) -> anyhow::Result<Socket> {
        let mut request = format!("ws://{}/graphql", self.addr).into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.context("opening the WebSocket")?;
        let init =
            json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", self.api.token) } });
        socket.send(Message::text(init.to_string())).await?;
        let ack = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .context("no connection_ack within 10 s")?
            .context("the WebSocket closed")??;
        let ack: Value = serde_json::from_str(ack.to_text()?)?;
        if ack["type"] != "connection_ack" {
            bail!("the gateway refused the WebSocket: {ack}");
        }
        let subscribe = json!({
            "id": "1",
            "type": "subscribe",
            "payload": { "query": "subscription { taskUpdates { id title } }" },
        });
        socket.send(Message::text(subscribe.to_string())).await?;
        Ok(socket)
    }

    async fn stop(self) -> anyhow::Result<()> {
        drop(self.stop);
        self.running.await.context("devart panicked")?
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The title in the next `taskUpdates` notification, answering keep-alive pings on the way.
async fn next_title(socket: &mut Socket) -> anyhow::Result<String> {
    loop {
        let message = socket.next().await.context("the WebSocket closed")??;
        let Message::Text(text) = message else { continue };
        let value: Value = serde_json::from_str(&text)?;
        match value["type"].as_str() {
            Some("next") => {
                return value["payload"]["data"]["taskUpdates"]["title"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("a notification without a title: {value}"))
            }
            Some("ping") => socket.send(Message::text(json!({ "type": "pong" }).to_string())).await?,
            Some("pong") => {}
            _ => bail!("unexpected subscription message: {value}"),
        }
    }
}

/// GraphQL over HTTP with a supervisor's token; cheap to clone into each request's task.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    url: Arc<str>,
    token: Arc<str>,
}

impl Api {
    async fn create_task(&self, title: &str) -> anyhow::Result<()> {
        self.post("mutation($title: String!) { createTask(input: {title: $title}) { id } }", json!({ "title": title }))
            .await
    }

    async fn me(&self) -> anyhow::Result<()> {
        self.post("{ me { subject } }", json!({})).await
    }

    async fn post(&self, query: &str, variables: Value) -> anyhow::Result<()> {
        let response: Value = self
            .client
            .post(&*self.url)
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        match response.get("errors") {
            Some(errors) => bail!("GraphQL errors: {errors}"),
            None => Ok(()),
        }
    }
}

// --- 3. Relay -----------------------------------------------------------------------------------

/// Messages in flight before their acknowledgements are awaited, as the publisher pipelines.
const RAW_PUBLISH_BATCH: usize = 500;

/// Events per second the relay's publisher sends to an empty stream from a store already holding
/// `--relay-events` sequenced events; against plain pipelined JetStream publishes of the same
/// messages (payloads and headers) into a scratch stream.
async fn relay(scratch: &Scratch, args: &Args) -> anyhow::Result<Vec<Row>> {
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

async fn publisher_rate(scratch: &Scratch, events: u64) -> anyhow::Result<f64> {
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

async fn raw_publish_rate(scratch: &Scratch, events: u64) -> anyhow::Result<f64> {
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
async fn raw_messages(scratch: &Scratch, events: u64) -> anyhow::Result<Vec<(String, HeaderMap, Vec<u8>)>> {
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
async fn rebuild(scratch: &Scratch, args: &Args) -> anyhow::Result<Vec<Row>> {
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
    Ok(vec![
        Row {
            name: format!("tasks rebuild, {workload}"),
            figure,
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
