//! The command engine: load a stream, fold it, decide, append; decide again on a concurrent
//! writer; answer a retried command id with its first outcome.
//!
//! It knows aggregates only through [`Aggregate`] and [`Stored`], and the store only through
//! [`crate::store`]: what an aggregate keeps beside its events, and the commands that need more
//! than one decision (a claim, an authorization), live beside that aggregate's commands. A unit
//! test over the crate's sources keeps it so (`tests/layering.rs`).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use devart_domain::{Aggregate, DomainError, Event, StreamId};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::bus::Bus;
use crate::relay::Nudge;
use crate::store::{
    append_beside_with, command_outcome_with, read_stream_with, Appended, CommandContext, EventStore, StoreError,
};

pub use crate::store::{fold, Folded, Stored};

/// How often a command is re-decided when other writers keep winning the race for its stream.
const CONFLICT_RETRIES_MAX: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The caller named a version the stream is no longer at.
    #[error("{stream_id} is at version {actual}, not {expected}")]
    VersionMismatch { stream_id: StreamId, expected: u64, actual: u64 },
    /// The command id was already used for a command on another stream.
    #[error("command id {0} was already used for another command")]
    CommandIdReused(Uuid),
    #[error(transparent)]
    Store(StoreError),
}

impl From<sqlx::Error> for CommandError {
    fn from(e: sqlx::Error) -> Self {
        CommandError::Store(StoreError::Db(e))
    }
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        CommandError::Store(e)
    }
}

/// Writes that go with a command's events, in their transaction; called again on a retry.
pub type Alongside<A> = dyn for<'c> Fn(
        &'c mut sqlx::PgConnection,
        &'c [<A as Aggregate>::Event],
    ) -> futures::future::BoxFuture<'c, Result<(), sqlx::Error>>
    + Send
    + Sync;

/// The state this process's last append left a stream in, for the next command on the stream to
/// decide against without reading the stream first (an agent completes the task it just claimed).
///
/// It may be stale: another process may have appended since. It is only ever trusted to append:
/// the append's expected-version check proves it current (a stream grows one version at a time, so
/// a free next version means no one appended), and a conflict makes the command read the stream
/// and decide again. A refusal, or a command with nothing to do, is always decided again against
/// the stream itself.
#[derive(Default)]
struct Recent(Mutex<HashMap<StreamId, Box<dyn Any + Send>>>);

/// At most this many streams' states are remembered; past it the memory is cleared.
const RECENT_MAX: usize = 10_000;

impl Recent {
    /// The remembered state of `stream_id`, forgotten here: the command that takes it owns it.
    fn take<S: 'static>(&self, stream_id: &StreamId) -> Option<Folded<S>> {
        let taken = self.0.lock().expect("not poisoned").remove(stream_id)?;
        taken.downcast::<Folded<S>>().ok().map(|folded| *folded)
    }

    fn keep<S: Send + 'static>(&self, stream_id: &StreamId, folded: Folded<S>) {
        let mut recent = self.0.lock().expect("not poisoned");
        if recent.len() >= RECENT_MAX {
            recent.clear();
        }
        recent.insert(stream_id.clone(), Box::new(folded));
    }
}

/// The engine every command runs through: it holds the store, wakes the sequencers after an
/// append, and remembers the states this process's last appends left streams in.
#[derive(Clone)]
pub struct Engine {
    store: EventStore,
    /// Wakes this process's sequencer.
    nudge: Nudge,
    /// Wakes sequencers elsewhere.
    bus: Option<Bus>,
    /// The states this process's last appends left streams in.
    recent: Arc<Recent>,
}

impl Engine {
    pub fn new(store: EventStore, nudge: Nudge, bus: Option<Bus>) -> Engine {
        Engine { store, nudge, bus, recent: Arc::default() }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Wakes the sequencers after an append.
    pub(crate) async fn appended(&self) {
        self.nudge.notify();
        if let Some(bus) = &self.bus {
            bus.nudge_appended().await;
        }
    }

    /// Loads an aggregate's current state from its stream.
    pub async fn load<A: Stored>(&self, id: Uuid) -> Result<Folded<A::State>, StoreError> {
        let events = self.store.read_stream(&StreamId::new(A::KIND, id), None).await?;
        Ok(fold::<A>(&events))
    }

    /// Decides `command` against aggregate `id` and appends the outcome.
    ///
    /// With `expected_version`, the stream must be at that version. Without it, a concurrent writer
    /// makes the command be decided again against the newer state. A command id that already ran
    /// returns the state it left, and appends nothing.
    pub async fn execute<A: Stored>(
        &self,
        id: Uuid,
        command: A::Command,
        context: &CommandContext,
        expected_version: Option<u64>,
    ) -> Result<Folded<A::State>, CommandError> {
        self.execute_with::<A>(id, command, context, expected_version, None).await
    }

    /// [`Engine::execute`], with `alongside` run in the same transaction as the append, for the
    /// write-side tables that must change atomically with the events (API keys).
    #[tracing::instrument(
        level = "debug",
        name = "execute",
        skip_all,
        fields(stream_id = %StreamId::new(A::KIND, id), command_id = %context.command_id, expected_version = ?expected_version)
    )]
    pub async fn execute_with<A: Stored>(
        &self,
        id: Uuid,
        command: A::Command,
        context: &CommandContext,
        expected_version: Option<u64>,
        alongside: Option<&Alongside<A>>,
    ) -> Result<Folded<A::State>, CommandError> {
        let stream_id = StreamId::new(A::KIND, id);
        let mut recent = self.recent.take::<A::State>(&stream_id);
        // One connection from reading to appending: taking one from the pool costs a round trip
        // (the pool checks it), so a command takes one.
        let mut conn = self.store.pool().acquire().await?;
        for _ in 0..CONFLICT_RETRIES_MAX {
            let remembered = recent.is_some();
            let mut folded = match recent.take() {
                Some(folded) => folded,
                None => fold::<A>(&read_stream_with(&mut *conn, &stream_id, None).await?),
            };
            let decided = match expected_version.filter(|v| *v != folded.version) {
                Some(_) if remembered => continue,
                Some(expected) => {
                    let error = CommandError::VersionMismatch {
                        stream_id: stream_id.clone(),
                        expected,
                        actual: folded.version,
                    };
                    return replayed_or::<A>(&mut conn, &stream_id, context, error).await;
                }
                None => A::decide(&folded.state, &command),
            };
            let events = match decided {
                Ok(events) if !events.is_empty() => events,
                // Only the stream itself refuses a command, or finds it has nothing to do.
                _ if remembered => continue,
                Ok(_) => return Ok(folded),
                Err(error) => return replayed_or::<A>(&mut conn, &stream_id, context, error.into()).await,
            };
            let wrapped: Vec<Event> = events.iter().cloned().map(A::wrap).collect();
            let after = events.iter().fold(folded.state.clone(), A::evolve);
            let appended = append_beside::<A>(
                &mut conn,
                &stream_id,
                folded.version,
                &wrapped,
                &events,
                &after,
                context,
                alongside,
            )
            .await;
            match appended {
                Ok(appended) => {
                    drop(conn);
                    self.appended().await;
                    folded.state = after;
                    folded.version = appended.stream_version;
                    folded.created_at = folded.created_at.or(Some(appended.occurred_at));
                    folded.created_by = folded.created_by.or_else(|| Some(context.actor.to_string()));
                    folded.updated_at = Some(appended.occurred_at);
                    self.recent.keep(&stream_id, folded.clone());
                    return Ok(folded);
                }
                Err(StoreError::Conflict { .. }) if expected_version.is_none() || remembered => continue,
                Err(StoreError::Conflict { stream_id, expected_version }) => {
                    let actual = read_stream_with(&mut *conn, &stream_id, None).await?.len() as u64;
                    return Err(CommandError::VersionMismatch { stream_id, expected: expected_version, actual });
                }
                Err(StoreError::DuplicateCommand(id)) => {
                    let error = StoreError::DuplicateCommand(id).into();
                    return replayed_or::<A>(&mut conn, &stream_id, context, error).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(DomainError::Conflict(format!("{stream_id} is too busy; try again")).into())
    }

    /// Remembers the state an append outside [`Engine::execute`] left a stream in.
    pub(crate) fn appended_state<S: Send + 'static>(&self, stream_id: &StreamId, folded: Folded<S>) {
        self.recent.keep(stream_id, folded);
    }
}

/// Appends, with the aggregate's own write-side rows in the same statement, and `alongside` in the
/// same transaction when there is one.
#[allow(clippy::too_many_arguments)]
async fn append_beside<A: Stored>(
    conn: &mut PgConnection,
    stream_id: &StreamId,
    expected_version: u64,
    wrapped: &[Event],
    events: &[A::Event],
    after: &A::State,
    context: &CommandContext,
    alongside: Option<&Alongside<A>>,
) -> Result<Appended, StoreError> {
    let beside = A::beside(after, Utc::now());
    let Some(alongside) = alongside else {
        return append_beside_with(conn, stream_id, expected_version, wrapped, context, beside).await;
    };
    let mut tx = conn.begin().await?;
    alongside(&mut tx, events).await?;
    let appended = append_beside_with(&mut *tx, stream_id, expected_version, wrapped, context, beside).await?;
    tx.commit().await?;
    Ok(appended)
}

/// A refused command may be the retry of one that succeeded: then its outcome is the answer.
async fn replayed_or<A: Stored>(
    conn: &mut PgConnection,
    stream_id: &StreamId,
    context: &CommandContext,
    error: CommandError,
) -> Result<Folded<A::State>, CommandError> {
    match command_outcome_with(&mut *conn, context.command_id).await? {
        Some(outcome) if outcome.stream_id == stream_id.as_str() => {
            let events = read_stream_with(&mut *conn, stream_id, Some(outcome.stream_version)).await?;
            Ok(fold::<A>(&events))
        }
        Some(_) => Err(CommandError::CommandIdReused(context.command_id)),
        None => Err(error),
    }
}
