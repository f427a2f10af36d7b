//! The soak: a whole `devart serve`, as a child process, worked by 64 agents for minutes, its
//! resident memory sampled all along.
//!
//! Memory is the server's own (`VmRSS`, `VmHWM` from `/proc/<pid>/status`), so devart runs in a
//! process of its own, started from the release binary as a user starts it: nothing the benchmark
//! allocates is counted. The phases, in order:
//!
//! 1. 64 agents are registered at once, then each makes its first request at once: every key is
//!    hashed on registration and verified (argon2id, about 19 MiB each) on first use.
//! 2. `--soak-tasks` tasks are created, and 64 agent loops claim and complete them over GraphQL,
//!    as `devart agent` does, then a steady feed of new tasks (the queue is topped up to
//!    [`FEED_PENDING`]) until `--soak-secs` have passed since the loops started. Verified keys are
//!    remembered for a minute, so every key is verified again each minute of the run.
//! 3. Hostile, after the soak (its failures hold back the benchmark's own address for a minute,
//!    which would disturb the soak): [`HOSTILE_REQUESTS`] requests carrying a wrong secret for one
//!    real key id, answered 401 until the failure limits hold them back with 429.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use devart_testkit::graphql::REQUEST_TIMEOUT;
use devart_testkit::{Client, Stack};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use crate::api::Api;
use crate::queue::AGENT_CAPABILITIES;
use crate::table::{number, Row, Target};
use crate::Args;

/// Agents working at once: registered at once, started at once.
const AGENTS: usize = 64;
/// How often the server's memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Pending tasks the feed keeps in the queue once the first batch is worked through: enough that
/// no agent waits for work, few enough that the queue stays small.
const FEED_PENDING: i64 = 1_000;
/// How often the feed looks at the queue.
const FEED_EVERY: Duration = Duration::from_millis(500);
/// Tasks created at once, while the queue is filled.
const CREATORS: usize = 16;
/// How long an agent that found nothing to claim waits before it asks again.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How long an agent waits after a failed request before it goes on (the run counts the failures).
const AFTER_FAILURE: Duration = Duration::from_millis(500);
/// Requests with a wrong secret in the hostile phase, and how many are in flight at once.
const HOSTILE_REQUESTS: usize = 3_000;
const HOSTILE_IN_FLIGHT: usize = 64;
/// How often memory is polled while the hostile phase runs (its peak is short).
const HOSTILE_POLL: Duration = Duration::from_millis(50);
/// How long `devart serve` may take to answer its health check.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);
/// Growth of the resident memory over the last half of the soak, in percent, that still counts as
/// settled: allocator noise, not a leak.
const GROWTH_MAX_PERCENT: f64 = 10.0;

/// A process's resident memory, in MiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: f64,
    /// The peak resident memory since the process started (or since the peak was last reset).
    hwm: f64,
}

impl Memory {
    fn of(pid: u32) -> anyhow::Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading the status of process {pid}"))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let kib: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse().ok())
                .with_context(|| format!("process {pid} has no {name} in its status"))?;
            Ok(kib / 1024.0)
        };
        Ok(Memory { rss: field("VmRSS:")?, hwm: field("VmHWM:")? })
    }
}

/// Resets a process's peak resident memory (`VmHWM`) to its current one; false where the kernel
/// does not allow it.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// `devart serve` running as a child process; killed when dropped.
struct Serve {
    child: Child,
    pid: u32,
    /// GraphQL over HTTP, as the administrator.
    api: Api,
    url: String,
    metrics: String,
}

impl Serve {
    /// Starts `binary` as `devart serve` on the stack's database and bus, listening on a free
    /// port, with no rate limit but the failure limits (defaults, unless the environment sets
    /// them); once it answers its health check.
    async fn start(binary: &Path, scratch: &Stack) -> anyhow::Result<Serve> {
        let port = {
            let free = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
            free.local_addr()?.port()
        };
        let config = &scratch.config;
        let secret = config.jwt_secret.as_ref().context("the scratch stack has a JWT secret")?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env("DATABASE_URL", &config.database_url)
            .env("NATS_URL", &config.nats_url)
            .env("DEVART_NATS_PREFIX", &config.nats_prefix)
            .env("DEVART_JWT_SECRET", &secret.0)
            .env("DEVART_DB_CONNECTIONS", config.db_connections.to_string())
            .env("DEVART_LISTEN", format!("127.0.0.1:{port}"))
            // A benchmark is a flood by design.
            .env("DEVART_REQUESTS_PER_SECOND", "0")
            .env("DEVART_REQUESTS_PER_ADDRESS", "0")
            .env("DEVART_MUTATIONS_PER_SECOND", "0")
            .env("DEVART_LOG", std::env::var("DEVART_SERVE_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let token = devart_testkit::token(config, devart_gateway::Role::Admin)?;
        let url = format!("http://127.0.0.1:{port}/graphql");
        let client = Client::new(&url, REQUEST_TIMEOUT)?.with_token(&token);
        let health = format!("http://127.0.0.1:{port}/healthz");
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("devart serve exited while starting ({status})");
            }
            if client.http().get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("devart serve did not answer its health check within {HEALTHY_WITHIN:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let metrics = format!("http://127.0.0.1:{port}/metrics");
        Ok(Serve { child, pid, api: Api(client), url, metrics })
    }

    fn memory(&mut self) -> anyhow::Result<Memory> {
        if let Some(status) = self.child.try_wait()? {
            bail!("devart serve exited during the soak ({status})");
        }
        Memory::of(self.pid)
    }

    /// GraphQL operations the server has executed so far (its `devart_graphql_requests` counter).
    async fn requests_served(&self) -> anyhow::Result<u64> {
        requests_served(&self.api.0, &self.metrics).await
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("stopping devart serve")
    }
}

async fn requests_served(client: &Client, metrics: &str) -> anyhow::Result<u64> {
    let text = client.http().get(metrics).send().await?.error_for_status()?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix("devart_graphql_requests_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .context("the metrics have no devart_graphql_requests_total")
}

/// Where the release `devart` binary is: `--devart-bin`, or next to this benchmark's own binary.
fn devart_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let binary = match &args.devart_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("locating devart-bench")?.with_file_name("devart"),
    };
    if !binary.is_file() {
        bail!(
            "no devart binary at {}: build it with `cargo build --release -p devart`, or name it with --devart-bin",
            binary.display()
        );
    }
    Ok(binary)
}

/// One sample of the curve.
struct Sample {
    at: Duration,
    memory: Memory,
    requests: u64,
    completed: u64,
}

/// What the agent loops share.
#[derive(Default)]
struct Progress {
    completed: AtomicU64,
    failures: AtomicU64,
    stop: AtomicBool,
}

/// The soak, as described in the module's documentation; prints the curve, returns the summary.
pub(crate) async fn soak(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    let binary = devart_binary(args)?;
    let mut serve = Serve::start(&binary, scratch).await?;
    tracing::info!(binary = %binary.display(), pid = serve.pid, "devart serve started");
    let outcome = phases(&mut serve, scratch, args).await;
    serve.stop().await?;
    outcome
}

async fn phases(serve: &mut Serve, scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mib = |name: &str, figure: f64| Row {
        name: format!("soak: {name}"),
        figure,
        unit: "MiB",
        baseline: None,
        target: Target::None,
    };

    // 1. 64 agents at once.
    let idle = serve.memory()?;
    let keys = register_at_once(&serve.api, AGENTS).await?;
    let agents: Vec<Api> = keys.iter().map(|key| serve.api.with_token(key)).collect();
    let registered = serve.memory()?;
    let started = Instant::now();
    let firsts = futures::future::try_join_all(agents.iter().map(|agent| async move {
        let started = Instant::now();
        agent.me().await?;
        anyhow::Ok(started.elapsed())
    }))
    .await?;
    let all_first = started.elapsed();
    let slowest = firsts.iter().max().copied().unwrap_or_default();
    let first_used = serve.memory()?;
    tracing::info!(?idle, ?registered, ?first_used, ?all_first, "64 agents started");
    rows.push(mib("RSS, idle, before 64 agents register", idle.rss));
    rows.push(mib("RSS after 64 agents registered at once", registered.rss));
    rows.push(mib("RSS after their 64 first requests at once", first_used.rss));
    rows.push(mib("peak RSS (VmHWM) through both bursts", first_used.hwm));
    rows.push(Row {
        name: format!("soak: {AGENTS} first requests at once (each verifies its key), until the last is answered"),
        figure: all_first.as_secs_f64() * 1e3,
        unit: "ms",
        baseline: None,
        target: Target::None,
    });
    rows.push(Row {
        name: "soak: the slowest of those first requests".into(),
        figure: slowest.as_secs_f64() * 1e3,
        unit: "ms",
        baseline: None,
        target: Target::None,
    });

    // 2. The soak.
    let started = Instant::now();
    create_tasks(&serve.api, args.soak_tasks).await?;
    let created_in = started.elapsed();
    tracing::info!(tasks = args.soak_tasks, elapsed = ?created_in, "tasks created");
    rows.push(Row {
        name: format!("soak: creating {} tasks over GraphQL, {CREATORS} at a time", number(args.soak_tasks as f64)),
        figure: args.soak_tasks as f64 / created_in.as_secs_f64(),
        unit: "tasks/s",
        baseline: None,
        target: Target::None,
    });

    let progress = Arc::new(Progress::default());
    let mut working = JoinSet::new();
    for agent in agents.iter().cloned() {
        working.spawn(agent_loop(agent, progress.clone()));
    }
    working.spawn(feed(serve.api.clone(), scratch.pool.clone(), progress.clone()));
    let soak_for = Duration::from_secs(args.soak_secs);
    let started = Instant::now();
    let mut samples = vec![Sample {
        at: Duration::ZERO,
        memory: serve.memory()?,
        requests: serve.requests_served().await?,
        completed: 0,
    }];
    let mut drained_at = None;
    let mut next = started + SAMPLE_EVERY;
    let sampled = loop {
        tokio::time::sleep_until(next.into()).await;
        next += SAMPLE_EVERY;
        let sample = async {
            let memory = serve.memory()?;
            let requests = serve.requests_served().await?;
            anyhow::Ok(Sample {
                at: started.elapsed(),
                memory,
                requests,
                completed: progress.completed.load(Ordering::Relaxed),
            })
        }
        .await;
        let sample = match sample {
            Ok(sample) => sample,
            Err(error) => break Err(error),
        };
        if drained_at.is_none() && sample.completed >= args.soak_tasks {
            drained_at = Some(sample.at);
        }
        tracing::info!(
            at = ?sample.at,
            rss_mib = sample.memory.rss,
            requests = sample.requests,
            completed = sample.completed,
            failures = progress.failures.load(Ordering::Relaxed),
            "sampled"
        );
        samples.push(sample);
        if started.elapsed() >= soak_for {
            break Ok(());
        }
        if let Some(ended) = working.try_join_next() {
            break Err(match ended {
                Ok(Err(error)) => error.context("a soak worker stopped"),
                Ok(Ok(())) => anyhow::anyhow!("a soak worker stopped early"),
                Err(joined) => anyhow::anyhow!("a soak worker panicked: {joined}"),
            });
        }
    };
    progress.stop.store(true, Ordering::Relaxed);
    while let Some(done) = working.join_next().await {
        done.context("a soak worker panicked")??;
    }
    sampled?;
    print_curve(&samples);
    rows.extend(summary(&samples, drained_at, progress.failures.load(Ordering::Relaxed), args));

    // 3. Hostile, last.
    rows.extend(hostile(serve, &keys[0]).await?);
    Ok(rows)
}

/// Registers `count` agents at once; returns their API keys.
async fn register_at_once(api: &Api, count: usize) -> anyhow::Result<Vec<String>> {
    futures::future::try_join_all(
        (0..count).map(|i| async move { api.register_agent(&format!("soak-agent-{i}"), &AGENT_CAPABILITIES).await }),
    )
    .await
}

/// Creates `count` tasks through `createTask`, [`CREATORS`] at a time.
async fn create_tasks(api: &Api, count: u64) -> anyhow::Result<()> {
    futures::stream::iter(0..count)
        .map(|i| async move { api.create_task(&format!("Soak task {i}")).await })
        .buffer_unordered(CREATORS)
        .try_collect()
        .await
}

/// One agent as `devart agent` works: claims a task, completes it, and again; waits a little when
/// nothing is pending. A failed request is counted and the loop goes on: one refusal in ten
/// minutes is a figure, not the end of the run.
async fn agent_loop(agent: Api, progress: Arc<Progress>) -> anyhow::Result<()> {
    while !progress.stop.load(Ordering::Relaxed) {
        let worked = async {
            match agent.claim_task().await? {
                Some(id) => {
                    agent.complete_task(&id).await?;
                    anyhow::Ok(true)
                }
                None => Ok(false),
            }
        }
        .await;
        match worked {
            Ok(true) => {
                progress.completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => tokio::time::sleep(IDLE_POLL).await,
            Err(error) => {
                if progress.failures.fetch_add(1, Ordering::Relaxed) < 5 {
                    tracing::warn!(error = %format!("{error:#}"), "an agent's request failed");
                }
                tokio::time::sleep(AFTER_FAILURE).await;
            }
        }
    }
    Ok(())
}

/// The steady feed: keeps [`FEED_PENDING`] tasks pending, through `createTask`.
async fn feed(api: Api, pool: sqlx::PgPool, progress: Arc<Progress>) -> anyhow::Result<()> {
    while !progress.stop.load(Ordering::Relaxed) {
        let pending: i64 = sqlx::query_scalar("select count(*) from task_queue where state = 'pending'")
            .fetch_one(&pool)
            .await
            .context("counting pending tasks")?;
        let missing = (FEED_PENDING - pending).max(0) as u64;
        if missing > 0 {
            if let Err(error) = create_tasks(&api, missing).await {
                progress.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %format!("{error:#}"), "feeding the queue failed");
            }
        }
        tokio::time::sleep(FEED_EVERY).await;
    }
    Ok(())
}

/// The curve as a Markdown table.
fn print_curve(samples: &[Sample]) {
    println!("| t (s) | RSS (MiB) | VmHWM (MiB) | requests served | tasks completed |");
    println!("| ----: | --------: | ----------: | --------------: | --------------: |");
    for s in samples {
        println!(
            "| {} | {:.1} | {:.1} | {} | {} |",
            s.at.as_secs(),
            s.memory.rss,
            s.memory.hwm,
            whole(s.requests),
            whole(s.completed)
        );
    }
    println!();
}

/// A count, with thousands separators.
fn whole(n: u64) -> String {
    if n < 100 {
        n.to_string()
    } else {
        number(n as f64)
    }
}

/// RSS settled at (mean over the last half), peak, growth over the last half, rates.
fn summary(samples: &[Sample], drained_at: Option<Duration>, failures: u64, args: &Args) -> Vec<Row> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else { return Vec::new() };
    let half = last.at / 2;
    let second_half: Vec<&Sample> = samples.iter().filter(|s| s.at >= half).collect();
    let at_half = second_half.first().copied().unwrap_or(first);
    let settled = second_half.iter().map(|s| s.memory.rss).sum::<f64>() / second_half.len().max(1) as f64;
    let peak_sampled = samples.iter().map(|s| s.memory.rss).fold(0.0, f64::max);
    let growth = last.memory.rss - at_half.memory.rss;
    let growth_percent = 100.0 * growth / at_half.memory.rss;
    let seconds = (last.at - first.at).as_secs_f64();
    let row = |name: String, figure: f64, unit: &'static str, target: Target| Row {
        name: format!("soak: {name}"),
        figure,
        unit,
        baseline: None,
        target,
    };
    let mut rows = vec![
        row("RSS settled at (mean over the last half)".into(), settled, "MiB", Target::None),
        row("highest RSS sampled during the soak".into(), peak_sampled, "MiB", Target::None),
        row("peak RSS (VmHWM) since devart started".into(), last.memory.hwm, "MiB", Target::None),
        row(
            format!("RSS growth over the last half ({}s to {}s)", at_half.at.as_secs(), last.at.as_secs()),
            growth,
            "MiB",
            Target::None,
        ),
        row("RSS growth over the last half, relative".into(), growth_percent, "%", Target::AtMost(GROWTH_MAX_PERCENT)),
        row(
            format!("requests served, {AGENTS} agents and the feed, over {seconds:.0} s"),
            (last.requests - first.requests) as f64 / seconds,
            "requests/s",
            Target::None,
        ),
        row(
            format!("tasks claimed and completed, {AGENTS} agents"),
            (last.completed - first.completed) as f64 / seconds,
            "tasks/s",
            Target::None,
        ),
        row("failed agent or feed requests".into(), failures as f64, "requests", Target::AtMost(0.0)),
    ];
    match drained_at {
        Some(at) => rows.push(row(
            format!("first {} tasks worked through by", number(args.soak_tasks as f64)),
            at.as_secs_f64(),
            "s",
            Target::None,
        )),
        None => tracing::warn!("the first batch of tasks was not worked through within the soak"),
    }
    rows
}

/// [`HOSTILE_REQUESTS`] requests with a wrong secret for the id of `key`, a real agent's; the server's peak
/// memory meanwhile, and how the requests were answered.
async fn hostile(serve: &mut Serve, key: &str) -> anyhow::Result<Vec<Row>> {
    let wrong = wrong_secret(key).context("an agent's key has the form dva_<id>_<secret>")?;
    let before = serve.memory()?;
    let reset = reset_peak(serve.pid);
    let http = serve.api.0.http().clone();
    let url = serve.url.clone();
    let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<u16, u64>::new()));
    let flood = {
        let (wrong, statuses) = (wrong.clone(), statuses.clone());
        async move {
            futures::stream::iter(0..HOSTILE_REQUESTS)
                .map(|_| {
                    let (http, url, wrong, statuses) = (http.clone(), url.clone(), wrong.clone(), statuses.clone());
                    async move {
                        let response = http
                            .post(&url)
                            .bearer_auth(&wrong)
                            .json(&json!({ "query": "{ me { subject } }" }))
                            .send()
                            .await?;
                        *crate::lock(&statuses).entry(response.status().as_u16()).or_default() += 1;
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(HOSTILE_IN_FLIGHT)
                .try_collect::<()>()
                .await
        }
    };
    let started = Instant::now();
    tokio::pin!(flood);
    let mut peak = before.rss;
    let flooded = loop {
        tokio::select! {
            done = &mut flood => break done,
            _ = tokio::time::sleep(HOSTILE_POLL) => peak = peak.max(serve.memory()?.rss),
        }
    };
    flooded?;
    let took = started.elapsed();
    let after = serve.memory()?;
    if reset {
        peak = peak.max(after.hwm);
    }
    let statuses = crate::lock(&statuses).clone();
    tracing::info!(?statuses, ?took, reset, "hostile phase done");
    let count = |status: u16| statuses.get(&status).copied().unwrap_or(0) as f64;
    let other = statuses.iter().filter(|(s, _)| !matches!(s, 401 | 429)).map(|(_, n)| *n).sum::<u64>() as f64;
    let row = |name: &str, figure: f64, unit: &'static str, target: Target| Row {
        name: format!("soak, hostile: {name}"),
        figure,
        unit,
        baseline: None,
        target,
    };
    let how = if reset { "VmHWM reset before it" } else { "polled every 50 ms" };
    Ok(vec![
        row("RSS before 3,000 wrong secrets for one key id", before.rss, "MiB", Target::None),
        row(&format!("peak RSS during them ({how})"), peak, "MiB", Target::None),
        row("RSS after them", after.rss, "MiB", Target::None),
        row("answered 401", count(401), "requests", Target::None),
        row("answered 429", count(429), "requests", Target::None),
        row("answered otherwise", other, "requests", Target::AtMost(0.0)),
        row("all of them answered within", took.as_secs_f64() * 1e3, "ms", Target::None),
    ])
}

/// `key` (`dva_<id>_<secret>`) with another secret of the same length: its id is real, its secret
/// wrong.
fn wrong_secret(key: &str) -> Option<String> {
    // The secret (URL-safe base64) may hold `_` itself: the id ends at the second one.
    let (at, _) = key.match_indices('_').nth(1)?;
    let (id, secret) = (&key[..at], &key[at + 1..]);
    if secret.is_empty() {
        return None;
    }
    let flipped: String = secret.chars().map(|c| if c == 'a' { 'b' } else { 'a' }).collect();
    Some(format!("{id}_{flipped}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_secret_keeps_the_key_id() {
        let key = "dva_0123456789abcdef_se_cr-et";
        let wrong = wrong_secret(key).unwrap();
        assert!(wrong.starts_with("dva_0123456789abcdef_"), "{wrong}");
        assert_eq!(wrong.len(), key.len());
        assert_ne!(wrong, key);
        assert_eq!(wrong_secret("dva_0123456789abcdef_"), None);
        assert_eq!(wrong_secret("no separators"), None);
    }

    #[test]
    fn memory_is_read_from_the_status_of_a_process() {
        let memory = Memory::of(std::process::id()).unwrap();
        assert!(memory.rss > 0.0 && memory.hwm >= memory.rss, "{memory:?}");
    }
}
