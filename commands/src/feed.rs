//! The event feed: every event after a position, caught up from the store, then live from
//! JetStream, with no gap and no duplicate at the seam.
//!
//! Catch-up reads the store to its head H; the live part starts an ordered consumer at stream
//! sequence H+1 (sequence N carries position N). Whatever arrives is checked against the last
//! position handed out: a repeat is dropped, a hole is filled from the store. A message of ours
//! that does not decode is read from the store instead, so the feed either hands out the stored
//! event or fails naming its position; it never passes over one.

use std::collections::VecDeque;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use devart_domain::Position;
use futures::{Stream, StreamExt};

use crate::bus::{self, Bus};
use crate::store::{EventStore, Recorded, StoreError};

const PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("nats: {0}")]
    Nats(String),
}

/// Follows the global order from `after` (exclusive), forever.
pub fn follow(store: EventStore, bus: Bus, after: Position) -> impl Stream<Item = Result<Recorded, FeedError>> {
    struct State {
        store: EventStore,
        bus: Bus,
        last: Position,
        buffer: VecDeque<Recorded>,
        live: Option<futures::stream::BoxStream<'static, Result<Live, FeedError>>>,
    }
    let state = State { store, bus, last: after, buffer: VecDeque::new(), live: None };
    futures::stream::try_unfold(state, |mut s| async move {
        loop {
            if let Some(next) = s.buffer.pop_front() {
                s.last = next.meta.position.unwrap_or(s.last);
                return Ok(Some((next, s)));
            }
            let Some(live) = s.live.as_mut() else {
                let page = s.store.read_all(s.last, None, PAGE).await?;
                if page.is_empty() {
                    s.live = Some(live_from(&s.bus, s.last).await?);
                } else {
                    s.buffer.extend(page);
                }
                continue;
            };
            let Some(message) = live.next().await else {
                return Err(FeedError::Nats("the live feed ended".into()));
            };
            let (position, recorded) = match message? {
                Live::Event(recorded) => match recorded.meta.position {
                    Some(position) => (position, Some(*recorded)),
                    None => continue,
                },
                Live::Undecodable(position) => (position, None),
            };
            if position <= s.last {
                continue;
            }
            // The store up to the hole's end, or up to and including what did not decode here.
            let through = if recorded.is_some() { Position(position.0 - 1) } else { position };
            if through > s.last {
                let missing = s.store.read_all(s.last, Some(through), usize::MAX).await?;
                s.buffer.extend(missing);
            }
            s.buffer.extend(recorded);
        }
    })
}

/// What the live part delivers.
enum Live {
    Event(Box<Recorded>),
    /// A message carrying this position whose event did not decode.
    Undecodable(Position),
}

async fn live_from(
    bus: &Bus,
    last: Position,
) -> Result<futures::stream::BoxStream<'static, Result<Live, FeedError>>, FeedError> {
    let nats = |e: &dyn std::fmt::Display| FeedError::Nats(e.to_string());
    let stream = bus.ensure_stream().await.map_err(|e| nats(&*e))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: last.0 + 1 },
            filter_subject: bus.names.events_wildcard(),
            ..Default::default()
        })
        .await
        .map_err(|e| nats(&e))?;
    let messages = consumer.messages().await.map_err(|e| nats(&e))?;
    Ok(messages
        .filter_map(|m| async move {
            match m {
                Err(e) => Some(Err(FeedError::Nats(e.to_string()))),
                Ok(m) => match bus::decode_message(m.headers.as_ref(), &m.payload) {
                    Ok(recorded) => Some(Ok(Live::Event(Box::new(recorded)))),
                    Err(error) => {
                        let position = m.headers.as_ref().and_then(|h| h.get("ce-position")?.as_str().parse().ok());
                        match position {
                            Some(position) => {
                                tracing::warn!(%error, %position, "feed: reading an undecodable message from the store");
                                Some(Ok(Live::Undecodable(position)))
                            }
                            None => {
                                tracing::warn!(%error, "feed: skipping a foreign message");
                                None
                            }
                        }
                    }
                },
            }
        })
        .boxed())
}
