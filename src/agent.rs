//! `devart agent`: a reference agent. It claims tasks over the GraphQL API, runs a command for
//! each, keeps the lease alive while the command runs, and reports the outcome. It uses nothing
//! but GraphQL over HTTP with the agent's API key, as an agent written in any language would.
//!
//! # The command's contract
//! - Environment: `DEVART_TASK_ID`, `DEVART_TASK_TITLE`, `DEVART_TASK_ATTEMPT`, and
//!   `DEVART_TASK_INPUT` (the task's input JSON, when it has one). The agent's key is not passed
//!   on: the command runs with no more authority than it needs.
//! - Stdin: the task, as JSON.
//! - Exit status 0: the task is completed. Its result is stdout when stdout is one JSON document,
//!   else `{"stdout": "<the last 64 KiB of stdout>"}`.
//! - Exit status 2 (a usage error, which running again will not fix): the attempt fails and is not
//!   retried.
//! - Any other exit status, or death by a signal: the attempt fails and is retried while attempts
//!   remain (`75`, `EX_TEMPFAIL`, is the conventional one). The error is the end of stderr.
//! - While the command runs the agent heartbeats every third of the lease. When the task is
//!   cancelled, a pause stops it (`heartbeat` answers `stop`: the task is back in the queue), or
//!   the lease is lost, the command is killed and the agent moves on without a report.
//!   Only the command's own process is killed: a command that starts others should `exec` the last
//!   one or stop them itself.
//! - When the agent is stopped (Ctrl-C, SIGTERM) during a task, it kills the command and fails the
//!   attempt as retryable, so that the task comes back at once rather than when the lease runs out.
//!
//! One file of about 800 lines on purpose: it is the whole of a reference agent, to be read (and
//! copied into other languages) top to bottom: the API client, the loop, and the command's process.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use devart_domain::task::{Document, Message};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Secret;

/// The environment variable holding the API key; never passed on to the command.
pub const KEY_ENV: &str = "DEVART_AGENT_KEY";

/// `--once` found no task to claim.
pub const EXIT_NOTHING_TO_DO: i32 = 3;

/// The command's exit status for a usage error: its attempt is not retried.
pub const EXIT_USAGE: i32 = 2;

/// How much of stdout a result made of it keeps.
const STDOUT_TAIL_BYTES: usize = 64 * 1024;

/// How much of stderr is kept for an error message (whose characters take up to 4 bytes).
const STDERR_KEEP_BYTES: usize = Message::LEN_MAX * 4;

/// How long one request to the gateway may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The first wait after a call that may succeed later (an outage, a limit, a lost connection);
/// each next wait doubles, jittered, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(250);

/// The longest wait between two tries of a call that may succeed later.
const RETRY_MAX: Duration = Duration::from_secs(15);

/// How long the command's output may stay open after the command exits (a process it started
/// may hold it); what was read by then is used.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// `devart agent`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway's GraphQL endpoint.
    #[arg(long, env = "DEVART_AGENT_URL", default_value = "http://127.0.0.1:8787/graphql")]
    pub url: String,
    /// The agent's API key (`dva_…`), as `registerAgent` returned it: best in the environment
    /// (`DEVART_AGENT_KEY`, or the path of a file holding it in `DEVART_AGENT_KEY_FILE`) or in a
    /// file (`--key-file`). As a flag it is visible to every user of the host.
    #[arg(long, env = KEY_ENV, hide_env_values = true, value_parser = secret, required_unless_present = "key_file")]
    pub key: Option<Secret>,
    /// A file holding the agent's API key (as container platforms mount secrets).
    #[arg(long, value_name = "PATH", conflicts_with = "key")]
    pub key_file: Option<std::path::PathBuf>,
    /// Claim only tasks that need no more than these capabilities (comma-separated; by default all
    /// the agent registered with).
    #[arg(long, value_delimiter = ',')]
    pub capabilities: Option<Vec<String>>,
    /// Lease length, in seconds; the agent heartbeats every third of it.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub lease_secs: u32,
    /// How long to wait before asking again when no task is available, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_ms: u64,
    /// Work one task and exit: with 0 if there was one, with 3 if none was available.
    #[arg(long)]
    pub once: bool,
    /// The command to run for each task, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Takes any text: a refused value would be echoed in clap's error message.
fn secret(s: &str) -> Result<Secret, Infallible> {
    Ok(Secret(s.to_owned()))
}

impl Args {
    fn lease(&self) -> Duration {
        Duration::from_secs(u64::from(self.lease_secs))
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }
}

/// How a run of the agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped by a signal.
    Stopped,
    /// `--once`, and a task was worked (whatever its outcome).
    Worked,
    /// `--once`, and no task was available.
    NothingToDo,
}

impl Outcome {
    /// The process exit status it calls for.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Stopped | Outcome::Worked => 0,
            Outcome::NothingToDo => EXIT_NOTHING_TO_DO,
        }
    }
}

/// A failed call to the GraphQL API.
#[derive(Debug)]
pub enum ApiError {
    /// The gateway could not be reached, or did not answer in time.
    Transport(reqwest::Error),
    /// The gateway refused the key (HTTP 401): it is wrong, rotated, or its agent is deactivated.
    Unauthenticated(String),
    /// The gateway could not serve now (HTTP 503: a dependency is down) or asked the agent to slow
    /// down (HTTP 429); the same call may succeed after `retry_after`.
    Later { status: u16, retry_after: Option<Duration>, message: String },
    /// The gateway answered with a GraphQL error.
    Refused { code: String, message: String },
    /// The gateway answered with an HTTP error status and no GraphQL error.
    Status(u16),
    /// The answer is not what the schema promises.
    Malformed(String),
}

impl ApiError {
    /// The call may succeed if made again: it may not have arrived, or the gateway failed inside.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Transport(_) | ApiError::Later { .. } => true,
            ApiError::Status(status) => *status >= 500 || *status == 429,
            ApiError::Refused { code, .. } => code == "INTERNAL",
            ApiError::Unauthenticated(_) | ApiError::Malformed(_) => false,
        }
    }

    /// The key no longer works: it was rotated, or its agent deactivated.
    pub fn key_refused(&self) -> bool {
        match self {
            ApiError::Unauthenticated(_) => true,
            ApiError::Refused { code, .. } => code == "UNAUTHENTICATED",
            _ => false,
        }
    }

    /// About a claim: no claim will succeed until the agent is set up differently (its key, its
    /// capabilities, its lease).
    pub fn is_fatal(&self) -> bool {
        self.key_refused()
            || matches!(self, ApiError::Refused { code, .. } if code == "FORBIDDEN" || code == "BAD_USER_INPUT")
    }

    /// About a task: the agent no longer holds it (cancelled, lease expired, claimed by another).
    pub fn lease_lost(&self) -> bool {
        matches!(self, ApiError::Refused { code, .. } if code == "CONFLICT" || code == "FORBIDDEN")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Transport(e) => write!(f, "calling the gateway: {e}"),
            ApiError::Unauthenticated(message) => write!(f, "the API key was refused: {message}"),
            ApiError::Later { status, message, .. } => write!(f, "the gateway answered HTTP {status}: {message}"),
            ApiError::Refused { code, message } => write!(f, "{code}: {message}"),
            ApiError::Status(status) => write!(f, "the gateway answered HTTP {status}"),
            ApiError::Malformed(what) => write!(f, "unexpected answer from the gateway: {what}"),
        }
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Its message is already part of ours.
            ApiError::Transport(e) => e.source(),
            _ => None,
        }
    }
}

/// A task this agent claimed.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub id: String,
    pub title: String,
    pub attempt: i64,
    /// The input document, if the task has one.
    pub input: Option<Value>,
    /// The task as the API returned it: what the command reads on stdin.
    pub json: Value,
}

impl ClaimedTask {
    fn from_json(json: Value) -> Result<ClaimedTask, ApiError> {
        let text = |field: &str| {
            json[field]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ApiError::Malformed(format!("a task without {field}")))
        };
        let attempt = json["attempt"].as_i64().ok_or_else(|| ApiError::Malformed("a task without attempt".into()))?;
        let input = Some(json["input"].clone()).filter(|i| !i.is_null());
        Ok(ClaimedTask { id: text("id")?, title: text("title")?, attempt, input, json })
    }
}

/// What a heartbeat answered.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// The task was cancelled: stop working on it.
    pub cancelled: bool,
    /// A pause of claims stopped the work: the task is back in the queue; stop working on it.
    pub stop: Option<String>,
    /// When the lease now runs out (RFC 3339), unless cancelled.
    pub lease_expires_at: Option<String>,
}

const CLAIM: &str = "mutation($capabilities: [String!], $leaseSeconds: Int) { \
    claimTask(capabilities: $capabilities, leaseSeconds: $leaseSeconds) { \
      id title description priority requiredCapabilities parentTaskId workflowRunId stageKey \
      attempt maxAttempts failures createdBy createdAt input lease { agentId attempt expiresAt } } }";
const HEARTBEAT: &str = "mutation($taskId: ID!, $leaseSeconds: Int) { \
    heartbeat(taskId: $taskId, leaseSeconds: $leaseSeconds) { cancelled stop stopReason leaseExpiresAt } }";
const COMPLETE: &str =
    "mutation($taskId: ID!, $result: JSON) { completeTask(taskId: $taskId, result: $result) { id status } }";
const FAIL: &str = "mutation($taskId: ID!, $error: String!, $retryable: Boolean!) { \
    failTask(taskId: $taskId, error: $error, retryable: $retryable) { id status } }";

/// The GraphQL API as an agent sees it.
pub struct Client {
    http: reqwest::Client,
    url: String,
    key: Secret,
    /// Since when calls have been failing on the way or with 503/429: an outage is logged once
    /// when it begins and once when it ends, not at every try.
    outage: Mutex<Option<Instant>>,
}

impl Client {
    pub fn new(url: &str, key: Secret) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("devart-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Client { http, url: url.to_owned(), key, outage: Mutex::new(None) })
    }

    /// Claims a task; `None` when nothing fits.
    pub async fn claim(
        &self,
        capabilities: Option<&[String]>,
        lease: Duration,
    ) -> Result<Option<ClaimedTask>, ApiError> {
        let variables = json!({ "capabilities": capabilities, "leaseSeconds": lease.as_secs() });
        let task = self.call(CLAIM, variables, "claimTask", None).await?;
        if task.is_null() {
            return Ok(None);
        }
        ClaimedTask::from_json(task).map(Some)
    }

    /// Extends the lease on `task_id`; says whether the task was cancelled.
    pub async fn heartbeat(&self, task_id: &str, lease: Duration) -> Result<Heartbeat, ApiError> {
        let variables = json!({ "taskId": task_id, "leaseSeconds": lease.as_secs() });
        let answer = self.call(HEARTBEAT, variables, "heartbeat", None).await?;
        let cancelled =
            answer["cancelled"].as_bool().ok_or_else(|| ApiError::Malformed("a heartbeat without cancelled".into()))?;
        let stop = answer["stop"].as_bool().ok_or_else(|| ApiError::Malformed("a heartbeat without stop".into()))?;
        let reason = answer["stopReason"].as_str().unwrap_or("stopped").to_owned();
        Ok(Heartbeat {
            cancelled,
            stop: stop.then_some(reason),
            lease_expires_at: answer["leaseExpiresAt"].as_str().map(str::to_owned),
        })
    }

    /// Completes the attempt with `result`; safe to call again for the same attempt.
    pub async fn complete(&self, task: &ClaimedTask, result: &Value) -> Result<(), ApiError> {
        let key = format!("{}:{}:complete", task.id, task.attempt);
        let variables = json!({ "taskId": task.id, "result": result });
        self.call(COMPLETE, variables, "completeTask", Some(&key)).await.map(drop)
    }

    /// Fails the attempt with `error`; safe to call again for the same attempt.
    pub async fn fail(&self, task: &ClaimedTask, error: &str, retryable: bool) -> Result<(), ApiError> {
        let key = format!("{}:{}:fail", task.id, task.attempt);
        let variables = json!({ "taskId": task.id, "error": error, "retryable": retryable });
        self.call(FAIL, variables, "failTask", Some(&key)).await.map(drop)
    }

    /// Posts one operation; returns the value of its top-level `field`.
    async fn call(
        &self,
        query: &str,
        variables: Value,
        field: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Value, ApiError> {
        let answer = self.post(query, variables, field, idempotency_key).await;
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        match &answer {
            Err(error) if error.is_transient() => {
                if outage.is_none() {
                    tracing::warn!(%error, "the gateway cannot serve now; waiting and trying again");
                    *outage = Some(Instant::now());
                }
            }
            _ => {
                if let Some(since) = outage.take() {
                    tracing::info!(after = ?since.elapsed(), "the gateway serves again");
                }
            }
        }
        answer
    }

    async fn post(
        &self,
        query: &str,
        variables: Value,
        field: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Value, ApiError> {
        let mut request =
            self.http.post(&self.url).bearer_auth(&self.key.0).json(&json!({ "query": query, "variables": variables }));
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.map_err(ApiError::Transport)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body: Value = response.json().await.unwrap_or(Value::Null);
        let error = &body["errors"][0];
        let message = error["message"].as_str().unwrap_or("no message").to_owned();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ApiError::Unauthenticated(message));
        }
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(ApiError::Later { status: status.as_u16(), retry_after, message });
        }
        if !error.is_null() {
            let code = error["extensions"]["code"].as_str().unwrap_or("INTERNAL").to_owned();
            return Err(ApiError::Refused { code, message });
        }
        if !status.is_success() {
            return Err(ApiError::Status(status.as_u16()));
        }
        match body["data"].get_mut(field) {
            Some(value) => Ok(value.take()),
            None => Err(ApiError::Malformed(format!("no `{field}` in the data"))),
        }
    }
}

/// Claims and works tasks until `shutdown` (or, with `--once`, one task).
pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<Outcome> {
    let key = match (&args.key, &args.key_file) {
        (Some(key), _) => key.clone(),
        (None, Some(path)) => {
            Secret(crate::secrets::read_secret(path).map_err(|e| anyhow::anyhow!("--key-file: {e}"))?)
        }
        (None, None) => anyhow::bail!("no API key: set {KEY_ENV} (or {KEY_ENV}_FILE), or give --key-file"),
    };
    if !key.0.starts_with("dva_") {
        anyhow::bail!("the key given is not an agent API key (those begin with `dva_`)");
    }
    let client = Client::new(&args.url, key)?;
    tracing::info!(url = %args.url, lease_secs = args.lease_secs, command = ?args.command, "agent started");
    let mut backoff = Backoff::default();
    loop {
        if shutdown.is_cancelled() {
            return Ok(Outcome::Stopped);
        }
        let claimed = client.claim(args.capabilities.as_deref(), args.lease()).await;
        if !matches!(&claimed, Err(e) if e.is_transient()) {
            backoff = Backoff::default();
        }
        let task = match claimed {
            Ok(Some(task)) => task,
            Ok(None) if args.once => {
                tracing::info!("no task available");
                return Ok(Outcome::NothingToDo);
            }
            Ok(None) => {
                if !pause(args.poll(), &shutdown).await {
                    return Ok(Outcome::Stopped);
                }
                continue;
            }
            // An outage, a limit or a lost connection: wait, then ask again, however long it lasts.
            Err(error) if error.is_transient() => {
                if !pause(backoff.next(&error), &shutdown).await {
                    return Ok(Outcome::Stopped);
                }
                continue;
            }
            Err(e) if e.is_fatal() || args.once => return Err(e).context("claiming a task"),
            Err(error) => {
                tracing::warn!(%error, "claiming a task failed; asking again");
                if !pause(args.poll(), &shutdown).await {
                    return Ok(Outcome::Stopped);
                }
                continue;
            }
        };
        work(&client, &args, &task, &shutdown).await?;
        if args.once {
            return Ok(Outcome::Worked);
        }
    }
}

/// Waits between tries of a call that may succeed later: doubling from [`RETRY_FIRST`] up to
/// [`RETRY_MAX`], each wait drawn between its half and its whole so that agents that failed
/// together do not come back together, and never shorter than the gateway's `Retry-After`.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    ceiling: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { ceiling: RETRY_FIRST }
    }
}

impl Backoff {
    fn next(&mut self, error: &ApiError) -> Duration {
        use rand::Rng;
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(RETRY_MAX);
        let jittered = rand::thread_rng().gen_range(ceiling / 2..=ceiling);
        match error {
            ApiError::Later { retry_after: Some(after), .. } => jittered.max(*after.min(&RETRY_MAX)),
            _ => jittered,
        }
    }
}

/// Sleeps for `duration`; `false` when shutdown came first.
async fn pause(duration: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        () = shutdown.cancelled() => false,
    }
}

/// How the command's run ended.
enum Ended {
    Exited(ExitStatus),
    /// Waiting for the command failed: its outcome is unknown.
    Lost(std::io::Error),
    Cancelled,
    /// A pause of claims stopped the work, for this reason; the task is back in the queue.
    Paused(String),
    LeaseLost(ApiError),
    /// The key stopped working (rotated, or the agent deactivated).
    Refused(ApiError),
    Stopped,
}

/// Runs the command for `task` and reports its outcome; errors only when the agent cannot go on.
async fn work(client: &Client, args: &Args, task: &ClaimedTask, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    tracing::info!(task_id = %task.id, attempt = task.attempt, title = %task.title, "task claimed");
    let mut running = match Running::start(&args.command, task) {
        Ok(running) => running,
        Err(e) => {
            let message = format!("the agent could not start its command: {e}");
            report(task, started, "failed", persist(shutdown, || client.fail(task, &message, true)).await)?;
            return Err(e).with_context(|| format!("starting {:?}", args.command));
        }
    };
    match supervise(client, args, task, &mut running, shutdown).await {
        Ended::Exited(status) => {
            let (stdout, stderr) = running.output().await;
            if status.success() {
                let result = result_of(&stdout);
                report(task, started, "completed", persist(shutdown, || client.complete(task, &result)).await)
            } else {
                let error = error_of(status, &stderr.bytes);
                let retryable = status.code() != Some(EXIT_USAGE);
                tracing::info!(task_id = %task.id, %status, retryable, "command failed");
                report(task, started, "failed", persist(shutdown, || client.fail(task, &error, retryable)).await)
            }
        }
        Ended::Lost(e) => {
            let message = format!("the agent lost track of its command: {e}");
            report(task, started, "failed", persist(shutdown, || client.fail(task, &message, true)).await)
        }
        Ended::Cancelled => {
            let elapsed = started.elapsed();
            tracing::info!(task_id = %task.id, attempt = task.attempt, ?elapsed, "task cancelled; command killed");
            Ok(())
        }
        Ended::Paused(reason) => {
            let elapsed = started.elapsed();
            tracing::info!(task_id = %task.id, attempt = task.attempt, ?elapsed, %reason, "work stopped by a pause; command killed");
            Ok(())
        }
        Ended::LeaseLost(error) => {
            tracing::warn!(task_id = %task.id, attempt = task.attempt, %error, "lease lost; command killed");
            Ok(())
        }
        Ended::Refused(error) => Err(error).context("heartbeating"),
        Ended::Stopped => {
            let message = "the agent was stopped before its command finished";
            report(task, started, "failed", persist(shutdown, || client.fail(task, message, true)).await)
        }
    }
}

/// Waits for the command while heartbeating; kills it when the task is no longer this agent's.
async fn supervise(
    client: &Client,
    args: &Args,
    task: &ClaimedTask,
    running: &mut Running,
    shutdown: &CancellationToken,
) -> Ended {
    let every = args.lease() / 3;
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            status = running.child.wait() => {
                return match status {
                    Ok(status) => Ended::Exited(status),
                    Err(e) => Ended::Lost(e),
                }
            }
            () = shutdown.cancelled() => break Ended::Stopped,
            _ = beat.tick() => match client.heartbeat(&task.id, args.lease()).await {
                Ok(heartbeat) if heartbeat.cancelled => break Ended::Cancelled,
                Ok(Heartbeat { stop: Some(reason), .. }) => break Ended::Paused(reason),
                Ok(heartbeat) => {
                    tracing::debug!(task_id = %task.id, lease_expires_at = ?heartbeat.lease_expires_at, "heartbeat");
                }
                Err(e) if e.lease_lost() => break Ended::LeaseLost(e),
                Err(e) if e.key_refused() => break Ended::Refused(e),
                // An outage is logged once by the client; the command goes on meanwhile.
                Err(error) if error.is_transient() => {
                    tracing::debug!(task_id = %task.id, %error, "heartbeat failed; trying again at the next");
                }
                Err(error) => tracing::warn!(task_id = %task.id, %error, "heartbeat failed; trying again at the next"),
            },
        }
    };
    running.kill().await;
    ended
}

/// Logs an outcome report; errors only when the agent cannot go on.
fn report(task: &ClaimedTask, started: Instant, outcome: &str, reported: Result<(), ApiError>) -> anyhow::Result<()> {
    let elapsed = started.elapsed();
    match reported {
        Ok(()) => {
            tracing::info!(task_id = %task.id, attempt = task.attempt, outcome, ?elapsed, "task done");
            Ok(())
        }
        Err(error) if error.lease_lost() => {
            tracing::warn!(task_id = %task.id, attempt = task.attempt, outcome, %error, "outcome refused: lease lost");
            Ok(())
        }
        Err(error) if error.key_refused() => Err(error).context("reporting an outcome"),
        // The lease runs out and the task comes back.
        Err(error) => {
            tracing::error!(task_id = %task.id, attempt = task.attempt, outcome, %error, "outcome not reported");
            Ok(())
        }
    }
}

/// Makes `call` until it succeeds or fails for a reason other than the way there: an outcome is
/// kept through an outage of any length, and reported once the gateway serves again (if the lease
/// ran out meanwhile, the report is refused and the task was someone else's to do). Gives up only
/// when the agent is stopped.
async fn persist<F, Fut>(shutdown: &CancellationToken, mut call: F) -> Result<(), ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), ApiError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match call().await {
            Err(error) if error.is_transient() => {
                if !pause(backoff.next(&error), shutdown).await {
                    return Err(error);
                }
            }
            reported => return reported,
        }
    }
}

/// The command, running for one task, and what it has written so far.
struct Running {
    child: tokio::process::Child,
    stdout: Arc<Mutex<Tail>>,
    stderr: Arc<Mutex<Tail>>,
    io: Vec<JoinHandle<()>>,
}

impl Running {
    fn start(command: &[String], task: &ClaimedTask) -> std::io::Result<Running> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command given"))?;
        let mut process = tokio::process::Command::new(program);
        process
            .args(args)
            .env_remove(KEY_ENV)
            .env("DEVART_TASK_ID", &task.id)
            .env("DEVART_TASK_TITLE", &task.title)
            .env("DEVART_TASK_ATTEMPT", task.attempt.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match &task.input {
            Some(input) => process.env("DEVART_TASK_INPUT", input.to_string()),
            None => process.env_remove("DEVART_TASK_INPUT"),
        };
        let mut child = process.spawn()?;
        let stdout = Arc::new(Mutex::new(Tail::new(Document::LEN_MAX)));
        let stderr = Arc::new(Mutex::new(Tail::new(STDERR_KEEP_BYTES)));
        let mut io = Vec::new();
        if let Some(mut stdin) = child.stdin.take() {
            let json = task.json.to_string();
            // A command that does not read its input closes the pipe: nothing to report.
            io.push(tokio::spawn(async move {
                let _ = stdin.write_all(json.as_bytes()).await;
            }));
        }
        if let Some(out) = child.stdout.take() {
            io.push(tokio::spawn(capture(out, stdout.clone())));
        }
        if let Some(err) = child.stderr.take() {
            io.push(tokio::spawn(capture(err, stderr.clone())));
        }
        Ok(Running { child, stdout, stderr, io })
    }

    /// Kills the command and stops reading from it.
    async fn kill(&mut self) {
        if let Err(error) = self.child.kill().await {
            tracing::warn!(%error, "killing the command");
        }
        for handle in &self.io {
            handle.abort();
        }
    }

    /// Stdout and stderr, once the command exited: read to their end, or for [`OUTPUT_GRACE`].
    async fn output(mut self) -> (Captured, Captured) {
        let readers = futures::future::join_all(self.io.iter_mut());
        let _ = tokio::time::timeout(OUTPUT_GRACE, readers).await;
        for handle in &self.io {
            handle.abort();
        }
        (captured(&self.stdout), captured(&self.stderr))
    }
}

/// Reads `stream` to its end into `tail`.
async fn capture(mut stream: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut chunk = vec![0u8; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => tail.lock().unwrap_or_else(PoisonError::into_inner).push(&chunk[..n]),
        }
    }
}

/// The last bytes of a stream, at most `keep` of them.
struct Tail {
    bytes: Vec<u8>,
    keep: usize,
    dropped: bool,
}

impl Tail {
    fn new(keep: usize) -> Tail {
        Tail { bytes: Vec::new(), keep, dropped: false }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        // Trimming at twice the size keeps appends amortized O(1).
        if self.bytes.len() > 2 * self.keep {
            self.trim();
        }
    }

    fn trim(&mut self) {
        let excess = self.bytes.len().saturating_sub(self.keep);
        if excess > 0 {
            self.bytes.drain(..excess);
            self.dropped = true;
        }
    }
}

/// What a command wrote to one stream.
struct Captured {
    /// The last bytes written.
    bytes: Vec<u8>,
    /// Whether earlier bytes were dropped.
    truncated: bool,
}

fn captured(tail: &Mutex<Tail>) -> Captured {
    let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
    tail.trim();
    Captured { bytes: std::mem::take(&mut tail.bytes), truncated: tail.dropped }
}

/// A completed task's result: stdout if it is one JSON document that fits, else the end of stdout
/// as text.
fn result_of(stdout: &Captured) -> Value {
    if !stdout.truncated {
        if let Ok(document) = serde_json::from_slice::<Value>(&stdout.bytes) {
            if document.to_string().len() <= Document::LEN_MAX {
                return document;
            }
        }
    }
    let mut keep = STDOUT_TAIL_BYTES;
    loop {
        let result = json!({ "stdout": utf8_tail(&stdout.bytes, keep) });
        // Escaping may grow the text past what a result may hold.
        if keep == 0 || result.to_string().len() <= Document::LEN_MAX {
            return result;
        }
        keep /= 2;
    }
}

/// The last `n` bytes of `bytes` as text, starting on a character boundary.
fn utf8_tail(bytes: &[u8], n: usize) -> String {
    let mut start = bytes.len().saturating_sub(n);
    while start < bytes.len() && bytes[start] & 0xC0 == 0x80 {
        start += 1;
    }
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// A failed attempt's error: how the command ended, then the last lines of its stderr, within
/// what an error message may hold.
fn error_of(status: ExitStatus, stderr: &[u8]) -> String {
    let how = format!("the command ended with {status}");
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return format!("{how}; its stderr was empty");
    }
    let budget = Message::LEN_MAX.saturating_sub(how.chars().count() + 2);
    format!("{how}:\n{}", last_lines(text, budget))
}

/// The end of `text` in at most `max_chars` characters, starting at a line when it can.
fn last_lines(text: &str, max_chars: usize) -> &str {
    let count = text.chars().count();
    if count <= max_chars {
        return text;
    }
    let start = text.char_indices().nth(count - max_chars).map_or(text.len(), |(i, _)| i);
    let tail = &text[start..];
    match tail.find('\n') {
        Some(newline) if newline + 1 < tail.len() => &tail[newline + 1..],
        _ => tail,
    }
}

#[cfg(test)]
mod tests;
