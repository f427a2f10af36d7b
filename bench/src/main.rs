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

mod api;
mod appends;
mod budgets;
mod embed;
mod knowledge;
mod latency;
mod queue;
mod rebuild;
mod relay;
mod soak;
mod table;
mod workload;

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

use crate::api::Api;
use crate::table::{number, Environment, Row, Table, Target};
use crate::workload::*;

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

// The system allocator spends a quarter to a half of the embedding benchmark's time in the kernel.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Texts per forward pass in the embed benchmark.
    #[arg(long, default_value_t = devart_embed::BATCH_TEXTS_DEFAULT as u64,
          value_parser = clap::value_parser!(u64).range(1..=devart_embed::BATCH_TEXTS_MAX as u64))]
    embed_batch: u64,
    /// Chunks the knowledge-base benchmark ingests and searches (one-sentence documents).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1_000..))]
    knowledge_chunks: u64,
    /// The `devart` binary the soak starts as `devart serve`; by default the one next to this
    /// benchmark's binary (`cargo build --release -p devart`).
    #[arg(long)]
    devart_bin: Option<PathBuf>,
    /// Runs only these benchmarks (comma-separated); all but `embed`, `knowledge` and `soak` by
    /// default.
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
    /// The embedding pool's chunks per second and a query's latency, against a plain f32 matmul on
    /// the same threads. Not part of the default run: it needs the model (`scripts/models`) and
    /// keeps every core busy.
    Embed,
    /// The knowledge base in a whole devart serve: ingest of `--knowledge-chunks` chunks until
    /// embedded, search latency in each mode, the index's recall, a tag filter. Not part of the
    /// default run: it needs the model, and embeds for minutes.
    Knowledge,
    /// A whole `devart serve` worked by 64 agents for `--soak-secs`, its resident memory sampled;
    /// then a flood of wrong secrets. Not part of the default run (ten minutes).
    Soak,
}

impl Bench {
    /// The default run: all but the embeddings and the soak.
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
            Bench::Embed => "embed",
            Bench::Knowledge => "knowledge",
            Bench::Soak => "soak",
        }
    }

    async fn run(self, scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
        match self {
            Bench::Appends => appends::appends(scratch, args).await,
            Bench::Latency => latency::latency(scratch, args).await,
            Bench::Relay => relay::relay(scratch, args).await,
            Bench::Rebuild => rebuild::rebuild(scratch, args).await,
            Bench::Queue => queue::queue(scratch, args).await,
            Bench::ClaimLatency => queue::claim_latency(scratch, args).await,
            Bench::Budget => budgets::budget(scratch, args).await,
            Bench::Embed => embed::embed(args).await,
            Bench::Knowledge => knowledge::knowledge(scratch, args).await,
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
        knowledge: base.knowledge.clone(),
    };
    Stack::create(options).await.context("setting up a scratch database and NATS prefix")
}

/// Deletes the raw stream (there only after the relay benchmark) and removes the stack; best
/// effort, so it never hides a result.
async fn remove(scratch: Stack) {
    let _ = scratch.bus.jetstream.delete_stream(relay::raw_stream(&scratch.bus)).await;
    let database = scratch.database().to_owned();
    if let Err(error) = scratch.remove().await {
        let error = anyhow::Error::from(error);
        tracing::warn!(error = %format!("{error:#}"), database, "could not remove the scratch stack");
    }
}
