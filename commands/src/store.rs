//! The Postgres event store: append with an expected version, read a stream, read the global order.

use chrono::{DateTime, Utc};
use devart_domain::{Actor, ActorKind, Event, EventMeta, Position, StreamId};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::PgConnection;
use sqlx::{Arguments, PgPool, Row};
use uuid::Uuid;

use crate::codec::{self, CodecError};

mod stored;

pub use stored::{fold, Folded, Stored};

/// A stored event with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub meta: EventMeta,
    pub event: Event,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the stream first.
    #[error("stream {stream_id} has moved past version {expected_version}")]
    Conflict { stream_id: StreamId, expected_version: u64 },
    /// The command id was recorded already: the command ran before.
    #[error("command {0} was already executed")]
    DuplicateCommand(Uuid),
    /// A stored event that does not decode: its payload, or a column beside it, holds what devart
    /// never writes. Reads of it fail rather than guess.
    #[error("undecodable event at {at}: {error}")]
    Codec { at: EventAt, error: CodecError },
    /// A row of a write-side table (a budget snapshot, an account) that does not decode.
    #[error("undecodable {table} row {key}: {message}")]
    Undecodable { table: &'static str, key: String, message: String },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Hashing a secret failed (not: the secret was wrong).
    #[error("hashing: {0}")]
    Hashing(#[from] crate::hashing::HashError),
}

impl StoreError {
    /// Whether this is an outage that a retry may outlive (the database is unreachable, shutting
    /// down or out of resources), as opposed to a refusal or a defect.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Db(e) if unavailable(e))
    }
}

/// Whether a database error means "the database cannot serve now": no connection, a connection
/// lost, the pool exhausted, the server shutting down, starting or out of resources.
pub fn unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE classes 08 (connection exception), 53 (insufficient resources), 57P0x (the
        // server is shutting down, starting or restarting).
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08") || c.starts_with("53") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// Where a stored event is: its stream and version, and its global position once sequenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAt {
    /// As stored, which may be what does not decode.
    pub stream_id: String,
    pub stream_version: u64,
    pub position: Option<Position>,
}

impl std::fmt::Display for EventAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some(position) => {
                write!(f, "position {position} (stream {} version {})", self.stream_id, self.stream_version)
            }
            None => write!(f, "stream {} version {} (not sequenced yet)", self.stream_id, self.stream_version),
        }
    }
}

/// Who appends, and why: the metadata every event of one command shares.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// Unique per command; a retry with the same id appends nothing twice.
    pub command_id: Uuid,
    pub actor: Actor,
    pub correlation_id: Uuid,
    /// The event or command that caused this command; `None` for a request from outside.
    pub causation_id: Option<Uuid>,
}

impl CommandContext {
    /// A command that starts its own correlation.
    pub fn new(actor: Actor) -> CommandContext {
        let command_id = Uuid::now_v7();
        CommandContext { command_id, actor, correlation_id: command_id, causation_id: None }
    }
}

/// What an append recorded.
#[derive(Debug, Clone)]
pub struct Appended {
    pub stream_version: u64,
    pub event_ids: Vec<Uuid>,
    pub occurred_at: DateTime<Utc>,
}

/// A command's recorded outcome, found by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub stream_id: String,
    pub stream_version: u64,
}

#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
}

pub(crate) const COLUMNS: &str = "event_id, stream_id, stream_version, position, event_type, schema_version, payload, \
                       occurred_at, actor_kind, actor_id, correlation_id, causation_id";

impl EventStore {
    pub fn new(pool: PgPool) -> EventStore {
        EventStore { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends `events` to `stream_id` if the stream is at `expected_version` (0: new stream), and
    /// records the command id, all in one statement: either everything is stored or nothing is.
    pub async fn append(
        &self,
        stream_id: &StreamId,
        expected_version: u64,
        events: &[Event],
        context: &CommandContext,
    ) -> Result<Appended, StoreError> {
        append_with(&self.pool, stream_id, expected_version, events, context).await
    }

    /// The recorded outcome of a command, if it ran.
    pub async fn command_outcome(&self, command_id: Uuid) -> Result<Option<CommandOutcome>, StoreError> {
        command_outcome_with(&self.pool, command_id).await
    }

    /// A stream's events in version order, up to and including `version_max`.
    pub async fn read_stream(
        &self,
        stream_id: &StreamId,
        version_max: Option<u64>,
    ) -> Result<Vec<Recorded>, StoreError> {
        read_stream_with(&self.pool, stream_id, version_max).await
    }

    /// Sequenced events with positions in `(after, until]`, in global order, at most `limit`.
    pub async fn read_all(
        &self,
        after: Position,
        until: Option<Position>,
        limit: usize,
    ) -> Result<Vec<Recorded>, StoreError> {
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from events where position > $1 and position <= $2 order by position limit $3"
        ))
        .bind(after.0 as i64)
        .bind(until.map_or(i64::MAX, |p| p.0 as i64))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_row).collect()
    }

    /// The last assigned position (0 when nothing is sequenced yet).
    pub async fn head(&self) -> Result<Position, StoreError> {
        let head: Option<i64> = sqlx::query_scalar("select max(position) from events").fetch_one(&self.pool).await?;
        Ok(Position(head.unwrap_or(0) as u64))
    }

    /// Gives the next committed, unsequenced events their global positions; returns the new range.
    ///
    /// Positions are handed out after commit, so a transaction that commits late simply receives
    /// later positions: nothing a reader has passed can appear behind it. Within a batch, events
    /// are ordered by writing transaction id, so an event written after reading another (and so
    /// by a later transaction) is placed after it. The transaction-scoped advisory lock lets any
    /// number of sequencers run (one per relay, for availability); they take turns.
    pub async fn sequence(&self, batch_max: usize) -> Result<Option<(Position, Position)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1)").bind(SEQUENCER_LOCK).execute(&mut *tx).await?;
        // After a burst of appends the table's statistics lag behind, and the planner would read and
        // sort the whole backlog to pick one batch; the partial index `events_unsequenced` already
        // yields it in order.
        sqlx::query("set local enable_sort = off").execute(&mut *tx).await?;
        let range: (Option<i64>, Option<i64>) = sqlx::query_as(
            "with head as (select coalesce(max(position), 0) as p from events), \
                  next as (select event_id, row_number() over (order by transaction_id, insertion_seq) as n \
                           from events where position is null \
                           order by transaction_id, insertion_seq limit $1), \
                  done as (update events e set position = head.p + next.n from next, head \
                           where e.event_id = next.event_id returning e.position) \
             select min(position), max(position) from done",
        )
        .bind(batch_max as i64)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match range {
            (Some(first), Some(last)) => Some((Position(first as u64), Position(last as u64))),
            _ => None,
        })
    }
}

/// [`EventStore::command_outcome`] on any executor, such as an open transaction.
pub async fn command_outcome_with<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    command_id: Uuid,
) -> Result<Option<CommandOutcome>, StoreError> {
    let row = sqlx::query("select stream_id, stream_version from commands where command_id = $1")
        .bind(command_id)
        .fetch_optional(executor)
        .await?;
    Ok(row.map(|r| CommandOutcome {
        stream_id: r.get("stream_id"),
        stream_version: r.get::<i64, _>("stream_version") as u64,
    }))
}

/// [`EventStore::read_stream`] on any executor, such as an open transaction.
pub async fn read_stream_with<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    stream_id: &StreamId,
    version_max: Option<u64>,
) -> Result<Vec<Recorded>, StoreError> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from events where stream_id = $1 and stream_version <= $2 order by stream_version"
    ))
    .bind(stream_id.as_str())
    .bind(version_max.map_or(i64::MAX, |v| v as i64))
    .fetch_all(executor)
    .await?;
    rows.iter().map(decode_row).collect()
}

/// [`EventStore::append`] on any executor, such as an open transaction.
/// Appends `events` to `stream_id` if the stream is at `expected_version` (0: new stream), and
/// records the command id, all in one statement: either everything is stored or nothing is.
pub async fn append_with<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    stream_id: &StreamId,
    expected_version: u64,
    events: &[Event],
    context: &CommandContext,
) -> Result<Appended, StoreError> {
    append_beside_with(executor, stream_id, expected_version, events, context, None).await
}

/// Changes to write-side tables that must happen exactly when an append's events are stored (the
/// task queue's row, a service's snapshot): each one `insert`, `update` or `delete`, with
/// parameters `$1`, `$2`, … of its own.
pub struct Beside {
    /// The changes as `WITH` items: `beside as (…), beside_1 as (…), …`, their parameters numbered
    /// in one sequence.
    sql: String,
    /// The parameters, or why one did not encode (reported when the change is made).
    arguments: Result<PgArguments, BoxDynError>,
    parts: usize,
}

impl Beside {
    /// The change `sql`, its parameters added in order by `bind`.
    pub fn new(sql: &'static str, bind: impl FnOnce(&mut PgArguments) -> Result<(), BoxDynError>) -> Beside {
        Beside { sql: String::new(), arguments: Ok(PgArguments::default()), parts: 0 }.and(sql, bind)
    }

    /// Another change, made by the same statement.
    pub fn and(mut self, sql: &'static str, bind: impl FnOnce(&mut PgArguments) -> Result<(), BoxDynError>) -> Beside {
        let name = match self.parts {
            0 => "beside".to_owned(),
            n => format!(", beside_{n}"),
        };
        self.arguments = self.arguments.and_then(|mut arguments| {
            let before = arguments.len();
            bind(&mut arguments)?;
            self.sql.push_str(&format!("{name} as ({})", renumbered(sql, before)));
            Ok(arguments)
        });
        self.parts += 1;
        self
    }

    /// Makes the changes on their own, with no append.
    pub async fn execute<'c>(self, executor: impl sqlx::PgExecutor<'c>) -> Result<(), sqlx::Error> {
        let arguments = self.arguments.map_err(sqlx::Error::Encode)?;
        sqlx::query_with(&format!("with {} select", self.sql), arguments).execute(executor).await.map(drop)
    }
}

/// [`append_with`], with `beside` made by the same statement, as a data-modifying `WITH` query: the
/// change and the events are stored together or not at all, for no more than the append's round
/// trip. A refused append (a conflict, a command id used before) leaves the table as it was.
#[tracing::instrument(
    level = "debug",
    name = "append",
    skip_all,
    fields(%stream_id, command_id = %context.command_id, expected_version, events = events.len())
)]
pub async fn append_beside_with<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    stream_id: &StreamId,
    expected_version: u64,
    events: &[Event],
    context: &CommandContext,
    beside: Option<Beside>,
) -> Result<Appended, StoreError> {
    assert!(!events.is_empty(), "an append carries at least one event");
    let count = events.len();
    let occurred_at = Utc::now();
    let mut ids = Vec::with_capacity(count);
    let mut versions = Vec::with_capacity(count);
    let mut types = Vec::with_capacity(count);
    let mut schemas = Vec::with_capacity(count);
    let mut payloads = Vec::with_capacity(count);
    for (i, event) in events.iter().enumerate() {
        let (event_type, schema_version, payload) = codec::encode(event);
        ids.push(Uuid::now_v7());
        versions.push((expected_version + 1 + i as u64) as i64);
        types.push(event_type);
        schemas.push(schema_version as i16);
        payloads.push(payload);
    }
    let stream_version = expected_version + count as u64;
    // The change's parameters come first; the append's follow them.
    let (sql, mut arguments) = match beside {
        Some(Beside { sql, arguments, .. }) => {
            let arguments = arguments.map_err(sqlx::Error::Encode)?;
            (format!("with {sql}, {}", renumbered(APPEND, arguments.len())), arguments)
        }
        None => (format!("with {APPEND}"), PgArguments::default()),
    };
    let added = (|| -> Result<(), BoxDynError> {
        arguments.add(context.command_id)?;
        arguments.add(stream_id.as_str())?;
        arguments.add(stream_version as i64)?;
        arguments.add(count as i32)?;
        arguments.add(&ids)?;
        arguments.add(&versions)?;
        arguments.add(&types)?;
        arguments.add(&schemas)?;
        arguments.add(occurred_at)?;
        arguments.add(context.actor.kind.as_str())?;
        arguments.add(&context.actor.id)?;
        arguments.add(context.correlation_id)?;
        arguments.add(context.causation_id.unwrap_or(context.command_id))?;
        arguments.add(&payloads)
    })();
    added.map_err(sqlx::Error::Encode)?;
    match sqlx::query_with(&sql, arguments).execute(executor).await {
        Ok(_) => Ok(Appended { stream_version, event_ids: ids, occurred_at }),
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("events_stream_version_key") => {
            Err(StoreError::Conflict { stream_id: stream_id.clone(), expected_version })
        }
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("commands_pkey") => {
            Err(StoreError::DuplicateCommand(context.command_id))
        }
        Err(e) => Err(e.into()),
    }
}

/// The append, after `with`: the command's record, then its events.
const APPEND: &str = "command as ( \
         insert into commands (command_id, stream_id, stream_version, event_count) \
         values ($1, $2, $3, $4) \
     ) \
     insert into events (event_id, stream_id, stream_version, event_type, schema_version, payload, \
                         occurred_at, actor_kind, actor_id, correlation_id, causation_id, command_id) \
     select e.id, $2, e.version, e.type, e.schema, e.payload, $9, $10, $11, $12, $13, $1 \
     from unnest($5::uuid[], $6::bigint[], $7::text[], $8::smallint[], $14::bytea[]) \
          as e(id, version, type, schema, payload)";

/// `sql` with its parameters `$1`, `$2`, … renumbered to follow `before` others.
fn renumbered(sql: &str, before: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..=dollar]);
        rest = &rest[dollar + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(n) = rest[..digits].parse::<usize>() {
            out.push_str(&(n + before).to_string());
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// Takes, for the transaction, the advisory locks of class `class` on `ids` (two-key locks, apart
/// from the one-key locks of the sequencer and the claim gate), in key order so that two commands
/// never wait on each other in a cycle.
///
/// What a command decides on under row locks it takes these first. Waiting for a row that another
/// transaction has changed gives the waiter its transaction id before it sleeps, and the sequencer
/// orders events by transaction id: the waiter's events would be placed before those of the
/// transaction it waited for, out of their stream's order. Waiting for an advisory lock gives no
/// id, and once it is held the rows are free: the id comes when they are locked, after the
/// transaction waited for has committed.
pub(crate) async fn hold_keys(conn: &mut PgConnection, class: i32, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "select pg_advisory_xact_lock($1, k) from (select distinct hashtext(id::text) as k from unnest($2::uuid[]) id) \
         keys order by k",
    )
    .bind(class)
    .bind(ids)
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// The advisory-lock key sequencers take turns on ("devart:s" in ASCII).
const SEQUENCER_LOCK: i64 = 0x6465_7661_7274_3a73;

/// A row of `events` as a [`Recorded`]; anything in it that does not decode is an error that
/// names the event's place, never a default.
pub(crate) fn decode_row(row: &PgRow) -> Result<Recorded, StoreError> {
    let stream_id: String = row.try_get("stream_id")?;
    let at = EventAt {
        stream_version: row.try_get::<i64, _>("stream_version")? as u64,
        position: row.try_get::<Option<i64>, _>("position")?.map(|p| Position(p as u64)),
        stream_id,
    };
    let event_type: String = row.try_get("event_type")?;
    let schema_version = row.try_get::<i16, _>("schema_version")? as u16;
    let payload: &[u8] = row.try_get("payload")?;
    let actor_kind: String = row.try_get("actor_kind")?;
    let column = |column: &'static str, value: &str, message: String| StoreError::Codec {
        at: at.clone(),
        error: CodecError::Column { column, value: value.to_owned(), message },
    };
    let event = codec::decode(&event_type, schema_version, payload)
        .map_err(|error| StoreError::Codec { at: at.clone(), error })?;
    let stream_id = StreamId::parse(&at.stream_id).map_err(|message| column("stream_id", &at.stream_id, message))?;
    let kind = ActorKind::parse(&actor_kind)
        .ok_or_else(|| column("actor_kind", &actor_kind, "not user, agent or system".into()))?;
    Ok(Recorded {
        meta: EventMeta {
            event_id: row.try_get("event_id")?,
            stream_id,
            stream_version: at.stream_version,
            position: at.position,
            event_type,
            schema_version,
            occurred_at: row.try_get("occurred_at")?,
            actor: Actor { kind, id: row.try_get("actor_id")? },
            correlation_id: row.try_get("correlation_id")?,
            causation_id: row.try_get("causation_id")?,
        },
        event,
    })
}

/// Which events a page of the audit trail holds.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub stream_id: Option<StreamId>,
    pub types: Option<Vec<String>>,
    /// Events of this correlation, and every event of the tasks it created: their claims,
    /// heartbeats and outcomes, which come from the agents' own requests.
    pub correlation_id: Option<Uuid>,
}

impl EventStore {
    /// Sequenced events after `after` matching `filter`, in global order, at most `limit`.
    pub async fn page(&self, after: Position, limit: usize, filter: &EventFilter) -> Result<Vec<Recorded>, StoreError> {
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from events \
             where position > $1 \
               and ($2::text is null or stream_id = $2) \
               and ($3::text[] is null or event_type = any($3)) \
               and ($4::uuid is null or correlation_id = $4 \
                    or stream_id in (select stream_id from events \
                                     where correlation_id = $4 and event_type = 'TaskCreated')) \
             order by position limit $5"
        ))
        .bind(after.0 as i64)
        .bind(filter.stream_id.as_ref().map(|s| s.as_str()))
        .bind(filter.types.as_deref())
        .bind(filter.correlation_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_row).collect()
    }
}

impl EventStore {
    /// The first event of each of these streams that has one, in no particular order: what
    /// created each aggregate.
    pub async fn first_events(&self, stream_ids: &[StreamId]) -> Result<Vec<Recorded>, StoreError> {
        let ids: Vec<&str> = stream_ids.iter().map(StreamId::as_str).collect();
        let rows =
            sqlx::query(&format!("select {COLUMNS} from events where stream_id = any($1) and stream_version = 1"))
                .bind(&ids)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(decode_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::renumbered;

    #[test]
    fn parameters_are_renumbered_to_follow_others() {
        assert_eq!(renumbered("values ($1, $2, $10) where x = $2", 9), "values ($10, $11, $19) where x = $11");
        assert_eq!(renumbered("select 1", 3), "select 1");
        assert_eq!(renumbered("$1", 0), "$1");
    }
}
