//! The live runners: one worker per read model ([`run`]) and one per reactor ([`run_reactor`]), each
//! fed by its durable JetStream consumer and kept at its checkpoint.
//!
//! Both share everything but the step that applies a batch: the checkpoint, the batching, the
//! redelivery and gap handling, the retries. A read model's worker then announces the rows that
//! changed ([`crate::announce`]), for the gateway's subscriptions; a reactor has none.

use std::sync::Arc;
use std::time::Duration;

use devart_commands::{Bus, EventStore, Recorded, StoreError};
use devart_domain::Position;
use futures::StreamExt;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::{announce, lock_key, ApplyError, Projection, Reactor, Target};

/// At most this many messages are applied in one transaction.
pub const BATCH_MAX: usize = 1_000;
const RETRY_DELAY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("nats: {0}")]
    Nats(String),
}

/// What a worker feeds its batches to.
#[derive(Clone, Copy)]
enum Consumer<'a> {
    Projection(&'a dyn Projection),
    Reactor(&'a dyn Reactor),
}

impl Consumer<'_> {
    fn name(self) -> &'static str {
        match self {
            Consumer::Projection(projection) => projection.name(),
            Consumer::Reactor(reactor) => reactor.name(),
        }
    }

    fn batch_max(self) -> usize {
        match self {
            Consumer::Projection(projection) => projection.batch_max(),
            Consumer::Reactor(_) => BATCH_MAX,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Consumer::Projection(_) => "projection",
            Consumer::Reactor(_) => "reactor",
        }
    }

    /// Applies a batch in `conn`'s transaction; the changed rows of a read model, for subscribers.
    async fn apply(self, conn: &mut PgConnection, events: &[Recorded]) -> Result<Vec<serde_json::Value>, ApplyError> {
        match self {
            Consumer::Projection(projection) => projection.apply(conn, Target::Live, events).await,
            Consumer::Reactor(reactor) => reactor.react(conn, events).await.map(|()| Vec::new()),
        }
    }
}

/// The position a consumer (read model or reactor) has applied everything up to.
pub async fn checkpoint(pool: &PgPool, name: &str) -> Result<Position, sqlx::Error> {
    sqlx::query("insert into projection_checkpoints (name) values ($1) on conflict do nothing")
        .bind(name)
        .execute(pool)
        .await?;
    let position: i64 = sqlx::query_scalar("select position from projection_checkpoints where name = $1")
        .bind(name)
        .fetch_one(pool)
        .await?;
    Ok(Position(position as u64))
}

/// Applies `events` that lie past the read model's checkpoint, together with the new checkpoint,
/// in one transaction. If they do not start right after the checkpoint, or have holes, the range is
/// read from the store instead, at most [`Projection::batch_max`] events of it, so nothing is
/// skipped whatever the bus delivered. Returns the changed rows and the new checkpoint: short of
/// the last event's position when a gap was longer than a batch (call again).
pub async fn apply_in_order(
    pool: &PgPool,
    store: &EventStore,
    projection: &dyn Projection,
    events: &[Recorded],
) -> Result<(Vec<serde_json::Value>, Position), WorkerError> {
    in_order(pool, store, Consumer::Projection(projection), events).await
}

/// The same for a reactor: its outbox rows commit with its checkpoint, its commands before it.
/// Returns the new checkpoint.
pub async fn react_in_order(
    pool: &PgPool,
    store: &EventStore,
    reactor: &dyn Reactor,
    events: &[Recorded],
) -> Result<Position, WorkerError> {
    in_order(pool, store, Consumer::Reactor(reactor), events).await.map(|(_, position)| position)
}

#[tracing::instrument(
    name = "apply_batch",
    skip_all,
    fields(
        kind = consumer.kind(),
        name = consumer.name(),
        delivered = events.len(),
        from = tracing::field::Empty,
        to = tracing::field::Empty,
        gap = tracing::field::Empty,
    )
)]
async fn in_order(
    pool: &PgPool,
    store: &EventStore,
    consumer: Consumer<'_>,
    events: &[Recorded],
) -> Result<(Vec<serde_json::Value>, Position), WorkerError> {
    let name = consumer.name();
    let mut tx = pool.begin().await?;
    // One batch of a name at a time, whatever number of workers run it; and none while a rebuild
    // swaps its tables in.
    sqlx::query("select pg_advisory_xact_lock($1)").bind(lock_key(name)).execute(&mut *tx).await?;
    let checkpoint: i64 = sqlx::query_scalar("select position from projection_checkpoints where name = $1")
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
    let checkpoint = Position(checkpoint as u64);
    let fresh: Vec<&Recorded> = events.iter().filter(|r| r.meta.position > Some(checkpoint)).collect();
    let Some(last) = fresh.last().and_then(|r| r.meta.position) else {
        return Ok((Vec::new(), checkpoint));
    };
    let span = tracing::Span::current();
    span.record("from", checkpoint.0 + 1).record("to", last.0);
    let contiguous =
        fresh.iter().enumerate().all(|(i, r)| r.meta.position == Some(Position(checkpoint.0 + 1 + i as u64)));
    let (batch, last): (Vec<Recorded>, Position) = if contiguous {
        (fresh.into_iter().cloned().collect(), last)
    } else {
        // At most a batch's worth at a time: the caller asks again until `last` is applied.
        span.record("gap", true);
        tracing::info!(consumer = name, %checkpoint, %last, "filling a gap from the store");
        let read = store.read_all(checkpoint, Some(last), consumer.batch_max().max(1)).await?;
        let reached = read.last().and_then(|r| r.meta.position).unwrap_or(checkpoint);
        (read, reached)
    };
    if last == checkpoint {
        return Ok((Vec::new(), checkpoint));
    }
    let changed = consumer.apply(&mut tx, &batch).await?;
    sqlx::query("update projection_checkpoints set position = $2, updated_at = now() where name = $1")
        .bind(name)
        .bind(last.0 as i64)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((changed, last))
}

/// Runs `projection` live until `shutdown`, reconnecting after any failure.
pub async fn run(
    pool: PgPool,
    store: EventStore,
    bus: Bus,
    projection: Arc<dyn Projection>,
    shutdown: CancellationToken,
) {
    run_consumer(&pool, &store, &bus, Consumer::Projection(projection.as_ref()), &shutdown).await;
}

/// Runs `reactor` live until `shutdown`, reconnecting after any failure.
pub async fn run_reactor(
    pool: PgPool,
    store: EventStore,
    bus: Bus,
    reactor: Arc<dyn Reactor>,
    shutdown: CancellationToken,
) {
    run_consumer(&pool, &store, &bus, Consumer::Reactor(reactor.as_ref()), &shutdown).await;
}

async fn run_consumer(
    pool: &PgPool,
    store: &EventStore,
    bus: &Bus,
    consumer: Consumer<'_>,
    shutdown: &CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match consume(pool, store, bus, consumer, shutdown, &mut delay).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(kind = consumer.kind(), name = consumer.name(), %error, "worker: retrying");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
                delay = (delay * 2).min(RETRY_DELAY_MAX);
            }
        }
    }
}

async fn consume(
    pool: &PgPool,
    store: &EventStore,
    bus: &Bus,
    consumer: Consumer<'_>,
    shutdown: &CancellationToken,
    delay: &mut Duration,
) -> Result<(), WorkerError> {
    let name = consumer.name();
    let nats = |e: &dyn std::fmt::Display| WorkerError::Nats(e.to_string());
    let start = checkpoint(pool, name).await?;
    let durable = bus.ensure_projection_consumer(name, start).await.map_err(|e| nats(&e))?;
    let mut batches = durable.messages().await.map_err(|e| nats(&e))?.ready_chunks(BATCH_MAX);
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            batch = batches.next() => match batch {
                Some(batch) => batch,
                None => return Err(WorkerError::Nats("consumer stream ended".into())),
            },
        };
        let mut messages = Vec::with_capacity(batch.len());
        for message in batch {
            messages.push(message.map_err(|e| nats(&e))?);
        }
        let events: Vec<Recorded> = messages
            .iter()
            .filter_map(|m| match devart_commands::bus::decode_message(m.headers.as_ref(), &m.payload) {
                Ok(recorded) => Some(recorded),
                Err(error) => {
                    tracing::warn!(consumer = name, subject = %m.subject, %error, "skipping a foreign message");
                    None
                }
            })
            .collect();
        for part in events.chunks(consumer.batch_max().max(1)) {
            let end = part.last().and_then(|r| r.meta.position).unwrap_or(Position::START);
            // Once more for each batch's worth of a gap filled from the store.
            let mut at = Position::START;
            loop {
                let applying = in_order(pool, store, consumer, part);
                let (changed, reached) = match consumer {
                    // A reactor may wait long in a batch (the outlier detector, for the analytics
                    // read model): on shutdown it stops at once, its batch rolled back and
                    // delivered again, as after a crash, which its commands are made to survive.
                    Consumer::Reactor(_) => tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        applied = applying => applied?,
                    },
                    Consumer::Projection(_) => applying.await?,
                };
                // Only a read model has rows to announce.
                announce::publish(bus, name, changed).await.map_err(ApplyError::from)?;
                // Stopped short without moving (nothing sequenced there yet): the next delivery
                // fills the rest, from the checkpoint.
                if reached >= end || reached == at || shutdown.is_cancelled() {
                    break;
                }
                at = reached;
            }
        }
        // The consumer acknowledges everything up to the last message at once.
        if let Some(last) = messages.last() {
            last.ack().await.map_err(|e| nats(&*e))?;
        }
        *delay = Duration::from_millis(100);
    }
}
