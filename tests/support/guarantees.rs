//! devart's guarantees about events, checked as a whole against a running instance: that what
//! clients were told was done is stored once, broadcast once and in order, applied once to every
//! read model, and that the read models are what the history says they are.
//!
//! [`check`] reports what it finds rather than panicking, so a test can show that it notices a
//! broken guarantee as well as assert that none is broken.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::OrderedConfig;
use devart::portable::{checksums, replay};
use devart::Config;
use devart_commands::history::At;
use devart_commands::{Bus, EventStore, Recorded};
use devart_domain::task::TaskEvent;
use devart_domain::{Event, Position};
use devart_projections::orchestrator::Orchestrator;
use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

/// Where the rebuild from scratch is replayed, beside the live read models.
const REPLAY_SCHEMA: &str = "guarantees_replay";
/// At most this many findings of one kind are listed; one is enough to fail, more only add noise.
const LISTED_MAX: usize = 5;

/// What clients were told was done: the ledger a check holds the instance to.
///
/// It must account for every task created in the instance, so that a task created without
/// the client hearing of it (a retry that was not recognized as one) shows.
#[derive(Debug, Default, Clone)]
pub struct Acknowledged {
    /// Each acknowledged `createTask`: its (unique) title and the task id it answered with.
    pub created: HashMap<String, Uuid>,
    /// Each task whose `completeTask` was acknowledged.
    pub completed: HashSet<Uuid>,
}

/// What a check found.
#[derive(Debug)]
pub struct Report {
    /// The last position in the store when the check ran.
    pub head: u64,
    /// Each broken guarantee, described; empty when all held.
    pub violations: Vec<String>,
}

impl Report {
    pub fn held(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether some finding mentions `needle`.
    pub fn mentions(&self, needle: &str) -> bool {
        self.violations.iter().any(|v| v.contains(needle))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.held() {
            return write!(f, "every guarantee held up to position {}", self.head);
        }
        writeln!(f, "{} broken guarantee(s) at head {}:", self.violations.len(), self.head)?;
        for violation in &self.violations {
            writeln!(f, "  - {violation}")?;
        }
        Ok(())
    }
}

/// Waits (at most `settle`) until the instance has sequenced, published and projected everything
/// and nothing moves, then checks every guarantee against `acknowledged`.
///
/// Nothing may write events meanwhile: clients must have stopped (or be waiting for answers they
/// will not get), and claims must hold their leases past the check.
pub async fn check(config: &Config, acknowledged: &Acknowledged, settle: Duration) -> Report {
    let pool = config.pool().await.expect("the store is reachable");
    let bus = config.bus().await.expect("NATS is reachable");
    let store = EventStore::new(pool.clone());
    let mut violations = Vec::new();
    let head = match settled(&pool, &store, &bus, settle).await {
        Ok(head) => head,
        Err(progress) => {
            violations.push(format!("not settled within {settle:?}: {progress}"));
            store.head().await.expect("the store is reachable").0
        }
    };
    let events = read_everything(&store).await;
    check_store(&pool, &events, head, acknowledged, &mut violations).await;
    check_stream(&bus, &events, head, &mut violations).await;
    check_read_models(config, &pool, &events, head, &mut violations).await;
    pool.close().await;
    Report { head, violations }
}

/// How far each part of the instance has come.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Progress {
    head: u64,
    unsequenced: i64,
    /// The stream's last sequence; `None` while NATS cannot say.
    published: Option<u64>,
    /// The lowest checkpoint of the projections and the orchestrator; `None` before all have one.
    projected: Option<u64>,
}

impl Progress {
    async fn read(pool: &PgPool, store: &EventStore, bus: &Bus) -> Option<Progress> {
        let head = store.head().await.ok()?.0;
        let unsequenced: i64 =
            sqlx::query_scalar("select count(*) from events where position is null").fetch_one(pool).await.ok()?;
        let published = match bus.jetstream.get_stream(bus.names.stream()).await {
            Ok(mut stream) => stream.info().await.ok().map(|info| info.state.last_sequence),
            Err(_) => None,
        };
        let checkpoints = checkpoints(pool).await.ok()?;
        let projected = expected_checkpoints()
            .iter()
            .map(|name| checkpoints.get(*name).copied())
            .collect::<Option<Vec<u64>>>()
            .and_then(|positions| positions.into_iter().min());
        Some(Progress { head, unsequenced, published, projected })
    }

    /// Everything committed is sequenced, and published and applied at least up to the head.
    /// Anything beyond the head (which did not come from the store) is for the checks to report,
    /// not a reason to wait.
    fn caught_up(&self) -> bool {
        self.unsequenced == 0
            && self.published.is_some_and(|p| p >= self.head)
            && self.projected.is_some_and(|p| p >= self.head)
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<u64>| v.map_or("unknown".to_owned(), |v| v.to_string());
        write!(
            f,
            "store head {}, {} unsequenced, stream at {}, slowest projection at {}",
            self.head,
            self.unsequenced,
            show(self.published),
            show(self.projected)
        )
    }
}

/// The head once everything has caught up with it and it has stayed put for a moment; or, after
/// `timeout`, how far things got.
async fn settled(pool: &PgPool, store: &EventStore, bus: &Bus, timeout: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + timeout;
    let mut last: Option<Progress> = None;
    loop {
        let progress = Progress::read(pool, store, bus).await;
        if let Some(now) = &progress {
            if now.caught_up() && last.as_ref() == Some(now) {
                return Ok(now.head);
            }
        }
        if Instant::now() >= deadline {
            return Err(progress.or(last).map_or("the store cannot be read".to_owned(), |p| p.to_string()));
        }
        last = progress.or(last);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every sequenced event, in global order.
async fn read_everything(store: &EventStore) -> Vec<Recorded> {
    let mut events = Vec::new();
    let mut after = Position::START;
    loop {
        let batch = store.read_all(after, None, 5_000).await.expect("the store reads");
        let Some(last) = batch.last().and_then(|r| r.meta.position) else { break };
        events.extend(batch);
        after = last;
    }
    events
}

/// Stored exactly once: one `TaskCreated` per acknowledged title and none for anything else, one
/// `TaskCompleted` per acknowledged completion, dense positions, gapless stream versions.
async fn check_store(
    pool: &PgPool,
    events: &[Recorded],
    head: u64,
    acknowledged: &Acknowledged,
    violations: &mut Vec<String>,
) {
    let stored: i64 = sqlx::query_scalar("select count(*) from events").fetch_one(pool).await.unwrap();
    if stored as u64 != head || events.len() as u64 != head {
        violations.push(format!(
            "the store holds {stored} events and {} sequenced ones, but its head is position {head}",
            events.len()
        ));
    }
    let misplaced: Vec<String> = events
        .iter()
        .enumerate()
        .filter(|(i, r)| r.meta.position != Some(Position(*i as u64 + 1)))
        .map(|(i, r)| format!("the event at index {i} has position {:?}", r.meta.position))
        .collect();
    list(violations, "positions are not dense from 1", misplaced);
    let gapped: Vec<String> = sqlx::query_scalar(
        "select stream_id from events group by stream_id \
         having min(stream_version) <> 1 or max(stream_version) <> count(*)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    list(violations, "stream versions with gaps or repeats", gapped);

    let mut created: HashMap<&str, Vec<Uuid>> = HashMap::new();
    let mut completions: HashMap<&str, usize> = HashMap::new();
    for recorded in events {
        match &recorded.event {
            Event::Task(TaskEvent::Created { id, title, .. }) => created.entry(title).or_default().push(*id),
            Event::Task(TaskEvent::Completed { .. }) => {
                *completions.entry(recorded.meta.stream_id.as_str()).or_default() += 1
            }
            _ => {}
        }
    }
    let mut lost = Vec::new();
    let mut wrong = Vec::new();
    for (title, id) in &acknowledged.created {
        match created.get(title.as_str()).map(Vec::as_slice) {
            None => lost.push(format!("`{title}`")),
            Some([stored]) if stored == id => {}
            Some([stored]) => wrong.push(format!("`{title}` acknowledged as {id}, stored as {stored}")),
            // Created more than once: reported below, with every other repeat.
            Some(_) => {}
        }
    }
    list(violations, "acknowledged tasks that are not stored", lost);
    list(violations, "acknowledged tasks stored under another id", wrong);
    let twice: Vec<String> = created
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(title, ids)| format!("`{title}` ×{}", ids.len()))
        .collect();
    list(violations, "tasks created more than once", twice);
    let unacknowledged: Vec<String> = created
        .keys()
        .filter(|title| !acknowledged.created.contains_key(**title))
        .map(|title| format!("`{title}`"))
        .collect();
    list(violations, "tasks stored that no client was told of", unacknowledged);

    let not_completed: Vec<String> = acknowledged
        .completed
        .iter()
        .filter(|id| !completions.contains_key(format!("task-{id}").as_str()))
        .map(Uuid::to_string)
        .collect();
    list(violations, "acknowledged completions that are not stored", not_completed);
    let completed_twice: Vec<String> =
        completions.iter().filter(|(_, n)| **n > 1).map(|(stream, n)| format!("{stream} ×{n}")).collect();
    list(violations, "tasks completed more than once", completed_twice);
}

/// Published exactly once and in order: stream sequence N carries position N and that event's id,
/// and the stream holds exactly the store's events.
async fn check_stream(bus: &Bus, events: &[Recorded], head: u64, violations: &mut Vec<String>) {
    let mut stream = match bus.jetstream.get_stream(bus.names.stream()).await {
        Ok(stream) => stream,
        Err(error) => return violations.push(format!("the stream cannot be read: {error}")),
    };
    let state = match stream.info().await {
        Ok(info) => info.state.clone(),
        Err(error) => return violations.push(format!("the stream cannot be read: {error}")),
    };
    if state.messages != head || state.last_sequence != head {
        violations.push(format!(
            "the stream holds {} messages up to sequence {}, the store {head} events",
            state.messages, state.last_sequence
        ));
    }
    // One pass over the headers, in stream order, through an ephemeral ordered consumer.
    let consumer = stream
        .create_consumer(OrderedConfig { headers_only: true, ..Default::default() })
        .await
        .expect("an ordered consumer");
    let mut messages = consumer.messages().await.expect("the stream delivers");
    let mut wrong = Vec::new();
    for expected in 1..=state.last_sequence {
        let message = match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
            Ok(Some(Ok(message))) => message,
            other => {
                let why = match other {
                    Ok(Some(Err(error))) => error.to_string(),
                    _ => "nothing delivered".to_owned(),
                };
                violations.push(format!("reading stream sequence {expected}: {why}"));
                break;
            }
        };
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or_default();
        let header = |name: &str| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
        let position = header("ce-position");
        let stored = events.get(sequence.wrapping_sub(1) as usize);
        if sequence != expected {
            wrong.push(format!("sequence {expected} is missing (next is {sequence})"));
        } else if position != Some(sequence.to_string()) {
            wrong.push(format!("sequence {sequence} carries position {position:?}"));
        } else if header("ce-id") != stored.map(|r| r.meta.event_id.to_string()) {
            let carried = header("ce-id").unwrap_or_else(|| "without an id".into());
            wrong.push(match stored {
                Some(stored) => {
                    format!("sequence {sequence} carries event {carried}, the store {}", stored.meta.event_id)
                }
                None => format!("sequence {sequence} carries event {carried}, the store has no such position"),
            });
        }
    }
    list(violations, "stream sequences that are not the store's positions", wrong);
}

/// Applied exactly once: every checkpoint at the head, one task row per stored task, and the live
/// read models equal to the same history replayed from scratch.
async fn check_read_models(
    config: &Config,
    pool: &PgPool,
    events: &[Recorded],
    head: u64,
    violations: &mut Vec<String>,
) {
    let checkpoints = checkpoints(pool).await.unwrap();
    let off: Vec<String> = expected_checkpoints()
        .iter()
        .filter(|name| checkpoints.get(**name) != Some(&head))
        .map(|name| match checkpoints.get(*name) {
            Some(position) => format!("{name} at {position}"),
            None => format!("{name} has none"),
        })
        .collect();
    list(violations, "checkpoints not at the head", off);

    let stored: BTreeSet<Uuid> = events
        .iter()
        .filter_map(|r| match &r.event {
            Event::Task(TaskEvent::Created { id, .. }) => Some(*id),
            _ => None,
        })
        .collect();
    let rows: Vec<Uuid> = sqlx::query_scalar("select id from tasks").fetch_all(pool).await.unwrap();
    let board: BTreeSet<Uuid> = rows.iter().copied().collect();
    if rows.len() != stored.len() {
        violations.push(format!("the tasks read model has {} rows for {} stored tasks", rows.len(), stored.len()));
    }
    list(violations, "task rows without a stored task", board.difference(&stored).map(Uuid::to_string).collect());
    list(
        violations,
        "stored tasks missing from the read model",
        stored.difference(&board).map(Uuid::to_string).collect(),
    );

    let live = checksums(config, None).await.expect("checksums of the live read models");
    replay(config, At::Position(Position(head)), REPLAY_SCHEMA, |_, _| {}).await.expect("a replay from scratch");
    let rebuilt = checksums(config, Some(REPLAY_SCHEMA)).await.expect("checksums of the replay");
    let differing: Vec<String> =
        live.iter().zip(&rebuilt).filter(|(l, r)| l != r).map(|((table, _), _)| table.clone()).collect();
    list(violations, "read models that differ from a rebuild from scratch", differing);
    sqlx::query(&format!("drop schema {REPLAY_SCHEMA} cascade")).execute(pool).await.unwrap();
}

/// Every consumer of the global order that keeps a checkpoint: the projections and the orchestrator.
fn expected_checkpoints() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = devart_projections::all().iter().map(|p| p.name()).collect();
    names.push(Orchestrator::NAME);
    names
}

async fn checkpoints(pool: &PgPool) -> Result<HashMap<String, u64>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("select name, position from projection_checkpoints").fetch_all(pool).await?;
    Ok(rows.into_iter().map(|(name, position)| (name, position as u64)).collect())
}

/// Adds one finding listing (the first few of) `items`, if there are any.
fn list(violations: &mut Vec<String>, what: &str, mut items: Vec<String>) {
    if items.is_empty() {
        return;
    }
    items.sort();
    let total = items.len();
    let shown = items.into_iter().take(LISTED_MAX).collect::<Vec<_>>().join(", ");
    let more = if total > LISTED_MAX { format!(", and {} more", total - LISTED_MAX) } else { String::new() };
    violations.push(format!("{what} ({total}): {shown}{more}"));
}
