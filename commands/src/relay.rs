//! The relay: gives committed events their global positions (the sequencer) and publishes them to
//! JetStream in that order (the publisher).
//!
//! The publisher sends position N as stream sequence N with `Nats-Expected-Last-Sequence: N-1`
//! and `Nats-Msg-Id: <event id>`: the server refuses anything out of order, drops duplicates, and a
//! restarted publisher resumes from the stream's own last sequence. So every event is published
//! once, in order, whatever crashes in between. While NATS is away, commands and sequencing go on;
//! the backlog drains when it returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use devart_domain::Position;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bus::{self, Bus};
use crate::codec;
use crate::store::EventStore;

/// How long an idle sequencer or publisher sleeps when nothing nudges it.
const IDLE_POLL: Duration = Duration::from_millis(250);
const SEQUENCE_BATCH_MAX: usize = 2_000;
const PUBLISH_BATCH_MAX: usize = 500;
const RETRY_DELAY_MAX: Duration = Duration::from_secs(5);
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Wakes the sequencer when a command committed in this process (other processes nudge over NATS).
#[derive(Clone, Default)]
pub struct Nudge(Arc<Notify>);

impl Nudge {
    pub fn notify(&self) {
        self.0.notify_one();
    }

    async fn wait(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.0.notified()).await;
    }
}

/// Runs the sequencer until `shutdown`.
pub async fn run_sequencer(
    store: EventStore,
    bus: Option<Bus>,
    appended: Nudge,
    sequenced: Nudge,
    shutdown: CancellationToken,
) {
    if let Some(bus) = bus {
        // Nudges from commands in other processes.
        let appended = appended.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(mut sub) = bus.client.subscribe(bus.names.appended()).await else {
                return;
            };
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    msg = sub.next() => match msg {
                        Some(_) => appended.notify(),
                        None => return,
                    },
                }
            }
        });
    }
    let mut delay = Duration::from_millis(50);
    while !shutdown.is_cancelled() {
        match store.sequence(SEQUENCE_BATCH_MAX).await {
            Ok(Some((first, last))) => {
                tracing::debug!(%first, %last, "sequenced");
                sequenced.notify();
                extend_chain(&store).await;
                delay = Duration::from_millis(50);
                continue;
            }
            Ok(None) => extend_chain(&store).await,
            Err(error) => {
                tracing::warn!(%error, "sequencer: retrying");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
                delay = (delay * 2).min(RETRY_DELAY_MAX);
                continue;
            }
        }
        tokio::select! { _ = shutdown.cancelled() => return, _ = appended.wait(IDLE_POLL) => {} }
    }
}

/// Hashes what was sequenced (see [`crate::chain`]); a failure is retried on the next round.
async fn extend_chain(store: &EventStore) {
    loop {
        match store.chain().await {
            Ok(Some(_)) => continue,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "chainer: retrying");
                return;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PublishFailure {
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("nats: {0}")]
    Nats(String),
    /// The stream already holds what we were about to send (another publisher, or a lost ack).
    #[error("stream moved on")]
    Resync,
}

/// Runs the publisher until `shutdown`.
pub async fn run_publisher(store: EventStore, bus: Bus, sequenced: Nudge, shutdown: CancellationToken) {
    let mut delay = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match publish_until_failure(&store, &bus, &sequenced, &shutdown).await {
            Ok(()) => return,
            Err(PublishFailure::Resync) => continue,
            Err(error) => {
                tracing::warn!(%error, "publisher: retrying");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
                delay = (delay * 2).min(RETRY_DELAY_MAX);
            }
        }
    }
}

async fn publish_until_failure(
    store: &EventStore,
    bus: &Bus,
    sequenced: &Nudge,
    shutdown: &CancellationToken,
) -> Result<(), PublishFailure> {
    let nats = |e: &dyn std::fmt::Display| PublishFailure::Nats(e.to_string());
    let mut stream = bus.ensure_stream().await.map_err(|e| nats(&e))?;
    let mut published = Position(stream.info().await.map_err(|e| nats(&e))?.state.last_sequence);
    let head = store.head().await?;
    if published > head {
        return Err(PublishFailure::Nats(format!(
            "stream {} holds position {published} but the store ends at {head}: they belong to different instances",
            bus.names.stream()
        )));
    }
    let mut saved = Position(u64::MAX);
    let mut saved_at = Instant::now();
    loop {
        // The checkpoint only reports progress (the stream is the authority), so it is written at
        // most once a second while busy, and whenever the publisher goes idle.
        let batch = store.read_all(published, None, PUBLISH_BATCH_MAX).await?;
        if saved != published && (batch.is_empty() || saved_at.elapsed() >= CHECKPOINT_INTERVAL) {
            save_checkpoint(store, published).await?;
            (saved, saved_at) = (published, Instant::now());
        }
        if batch.is_empty() {
            tokio::select! { _ = shutdown.cancelled() => return Ok(()), _ = sequenced.wait(IDLE_POLL) => {} }
            continue;
        }
        // Pipelined: each message names its predecessor, so the server keeps them in order.
        let mut acks = Vec::with_capacity(batch.len());
        for recorded in &batch {
            let position = recorded.meta.position.expect("read_all returns sequenced events");
            let payload = serde_json::to_vec(&codec::to_json(&recorded.event)).expect("json encodes");
            let message = PublishMessage::build()
                .payload(payload.into())
                .headers(bus::headers(&recorded.meta))
                .expected_last_sequence(position.0 - 1);
            let subject = bus.names.event_subject(recorded.event.aggregate(), &recorded.meta.event_type);
            let ack = bus.jetstream.send_publish(subject, message).await.map_err(|e| nats(&e))?;
            acks.push((position, ack));
        }
        for (position, ack) in acks {
            match ack.await {
                Ok(ack) if ack.sequence == position.0 => published = position,
                Ok(ack) => {
                    return Err(PublishFailure::Nats(format!(
                        "position {position} landed at stream sequence {}: something else publishes to {}",
                        ack.sequence,
                        bus.names.events_wildcard()
                    )))
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    save_checkpoint(store, published).await?;
                    return Err(PublishFailure::Resync);
                }
                Err(e) => {
                    save_checkpoint(store, published).await?;
                    return Err(nats(&e));
                }
            }
        }
    }
}

async fn save_checkpoint(store: &EventStore, position: Position) -> Result<(), crate::store::StoreError> {
    sqlx::query(
        "insert into relay_checkpoints (name, position) values ('publisher', $1) \
         on conflict (name) do update set position = excluded.position, updated_at = now() \
         where relay_checkpoints.position is distinct from excluded.position",
    )
    .bind(position.0 as i64)
    .execute(store.pool())
    .await?;
    Ok(())
}
