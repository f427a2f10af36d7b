//! How an aggregate sits in the store: its events inside [`Event`], the rows it keeps beside them,
//! and its state folded from a stream.

use chrono::{DateTime, Utc};
use devart_domain::{Aggregate, Event, Position};

use super::{Beside, Recorded};

/// An aggregate's state with what the stream says about it.
#[derive(Debug, Clone)]
pub struct Folded<S> {
    pub state: S,
    /// The stream version the state reflects (0: no events).
    pub version: u64,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    /// The global position of the last event folded, if it has one yet.
    pub position: Option<Position>,
}

impl<S: Default> Default for Folded<S> {
    fn default() -> Self {
        Folded { state: S::default(), version: 0, created_at: None, updated_at: None, created_by: None, position: None }
    }
}

/// An aggregate stored in its own streams: how its events sit inside [`Event`], and the rows kept
/// beside them. Each aggregate's implementation is in its commands' module (tasks in `queue`,
/// services in `budgets`, …), so neither the store nor the engine names an aggregate.
pub trait Stored: Aggregate<State: Send + 'static> {
    fn wrap(event: Self::Event) -> Event;
    fn unwrap(event: &Event) -> Option<&Self::Event>;

    /// The change to the write-side rows kept beside the aggregate's events that brings them in
    /// step with `state` (the state after the new events), made by the append's own statement;
    /// `None` when it keeps none.
    fn beside(_state: &Self::State, _now: DateTime<Utc>) -> Option<Beside> {
        None
    }
}

/// Folds recorded events of one stream.
pub fn fold<A: Stored>(events: &[Recorded]) -> Folded<A::State> {
    events.iter().fold(Folded::default(), |f, r| {
        let Some(event) = A::unwrap(&r.event) else {
            return f;
        };
        Folded {
            state: A::evolve(f.state, event),
            version: r.meta.stream_version,
            created_at: f.created_at.or(Some(r.meta.occurred_at)),
            updated_at: Some(r.meta.occurred_at),
            created_by: f.created_by.or_else(|| Some(r.meta.actor.to_string())),
            position: r.meta.position.or(f.position),
        }
    })
}
