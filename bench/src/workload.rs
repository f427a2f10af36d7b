//! Workloads shared by several benchmarks: seeding a store with task histories, running
//! workers to a shared deadline.

use super::*;

pub(crate) fn bench_actor() -> Actor {
    Actor::user("bench")
}

/// A task's life in `events` events: created, then reprioritized and renamed in turn.
pub(crate) fn task_history(id: Uuid, events: usize) -> Vec<Event> {
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
        requires_approval: false,
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
pub(crate) async fn throughput<F, Fut>(workers: usize, duration: Duration, worker: F) -> anyhow::Result<f64>
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
pub(crate) const SEED_APPENDS_PER_TRANSACTION: u64 = 500;
/// Seeding is CPU-bound on both sides; a few more writers than cores keep Postgres busy.
pub(crate) const SEED_WRITERS: u64 = 4;
/// The relay's sequencer batch (`SEQUENCE_BATCH_MAX` in `devart_commands::relay`).
pub(crate) const SEQUENCE_BATCH: usize = 2_000;

/// What [`seed`] stored.
pub(crate) struct Seeded {
    pub(crate) events: u64,
    /// Events per second the sequencer gave positions to, in the relay's batches, right after the
    /// burst of appends: what a sequencer facing a backlog does.
    pub(crate) sequenced_per_sec: f64,
}

/// Appends about `events` events through the store, as whole tasks of `per_task` events each (one
/// append per task), sequences them and lets the database settle.
pub(crate) async fn seed(scratch: &Stack, events: u64, per_task: u64) -> anyhow::Result<Seeded> {
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
pub(crate) type Seed = (Vec<Event>, Option<Beside>);

/// Appends `tasks` new task streams through the store (`store::append_beside_with`, one append
/// per task, each with a command context of its own), from [`SEED_WRITERS`] writers, each
/// committing [`SEED_APPENDS_PER_TRANSACTION`] appends at a time: the store's own statement, only
/// without a commit per task.
pub(crate) async fn append_in_batches<F>(store: &EventStore, tasks: u64, task: F) -> anyhow::Result<()>
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
pub(crate) async fn sequence_all(store: &EventStore) -> anyhow::Result<()> {
    while store.sequence(SEQUENCE_BATCH).await.context("sequencing the stored events")?.is_some() {}
    Ok(())
}

/// Vacuums what sequencing left behind and checkpoints, so that neither autovacuum nor a
/// checkpoint lands in the middle of the measurement that follows.
pub(crate) async fn settle(pool: &PgPool) -> anyhow::Result<()> {
    let started = Instant::now();
    sqlx::query("vacuum (analyze) events").execute(pool).await.context("vacuuming events")?;
    sqlx::query("checkpoint").execute(pool).await.context("checkpointing")?;
    tracing::info!(elapsed = ?started.elapsed(), "settled");
    Ok(())
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Percentiles of a sample.
pub(crate) struct Stats {
    pub(crate) count: usize,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
}

impl Stats {
    pub(crate) fn of(mut sample: Vec<Duration>) -> Stats {
        sample.sort_unstable();
        // Nearest rank: the smallest value with at least q of the sample at or below it.
        let rank = |q: f64| {
            let index = ((q * sample.len() as f64).ceil() as usize).saturating_sub(1);
            sample.get(index).copied().unwrap_or_default()
        };
        Stats { count: sample.len(), p50: rank(0.50), p99: rank(0.99), max: sample.last().copied().unwrap_or_default() }
    }
}

pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
