//! The live worker: one per projection, fed by its durable JetStream consumer.

use std::sync::Arc;
use std::time::Duration;

use devart_commands::{Bus, EventStore, Recorded, StoreError};
use devart_domain::Position;
use futures::StreamExt;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{lock_key, Projection, Target};

/// At most this many messages are applied in one transaction.
const BATCH_MAX: usize = 1_000;
const RETRY_DELAY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("nats: {0}")]
    Nats(String),
}

/// The position a projection's read model reflects.
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

/// Applies `events` that lie past the checkpoint, together with the new checkpoint, in one
/// transaction. If they do not start right after the checkpoint, or have holes, the range is read
/// from the store instead, so nothing is skipped whatever the bus delivered. Returns the changed
/// rows and the new checkpoint.
pub async fn apply_in_order(
    pool: &PgPool,
    store: &EventStore,
    projection: &dyn Projection,
    events: &[Recorded],
) -> Result<(Vec<serde_json::Value>, Position), WorkerError> {
    let name = projection.name();
    let mut tx = pool.begin().await?;
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
    let contiguous =
        fresh.iter().enumerate().all(|(i, r)| r.meta.position == Some(Position(checkpoint.0 + 1 + i as u64)));
    let read;
    let batch: Vec<Recorded> = if contiguous {
        fresh.into_iter().cloned().collect()
    } else {
        tracing::info!(projection = name, %checkpoint, %last, "filling a gap from the store");
        read = store.read_all(checkpoint, Some(last), usize::MAX).await?;
        read
    };
    let changed = projection.apply(&mut tx, Target::Live, &batch).await?;
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
    let mut delay = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match consume(&pool, &store, &bus, projection.as_ref(), &shutdown, &mut delay).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(projection = projection.name(), %error, "projection worker: retrying");
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
    projection: &dyn Projection,
    shutdown: &CancellationToken,
    delay: &mut Duration,
) -> Result<(), WorkerError> {
    let name = projection.name();
    let nats = |e: &dyn std::fmt::Display| WorkerError::Nats(e.to_string());
    let start = checkpoint(pool, name).await?;
    let consumer = bus.ensure_projection_consumer(name, start).await.map_err(|e| nats(&e))?;
    let mut batches = consumer.messages().await.map_err(|e| nats(&e))?.ready_chunks(BATCH_MAX);
    let subject = bus.names.readmodel(name);
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
                    tracing::warn!(projection = name, subject = %m.subject, %error, "skipping a foreign message");
                    None
                }
            })
            .collect();
        let (changed, _) = apply_in_order(pool, store, projection, &events).await?;
        for row in changed {
            let payload = serde_json::to_vec(&row).expect("json");
            bus.notify(subject.clone(), payload.into()).await;
        }
        // The consumer acknowledges everything up to the last message at once.
        if let Some(last) = messages.last() {
            last.ack().await.map_err(|e| nats(&*e))?;
        }
        *delay = Duration::from_millis(100);
    }
}
