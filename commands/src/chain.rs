//! Tamper evidence: a hash chain over the global order.
//!
//! Each sequenced event gets `hash = SHA-256(hash of position − 1 ‖ the event's canonical bytes)`,
//! where the canonical bytes cover its position and every stored column that means something (ids,
//! stream and version, type and schema version, payload, time, actor, correlation, causation,
//! command). The chainer extends the chain after the sequencer, in position order, from the last
//! hashed position (`event_chain`); writers never wait for it. Changing, removing, inserting or
//! reordering a sequenced event afterwards, even through plain SQL, breaks the chain at that
//! position, which [`verify`] finds.

use chrono::{DateTime, Utc};
use devart_domain::Position;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::store::{EventStore, StoreError};

/// The hash before the first event.
pub const GENESIS: [u8; 32] = [0; 32];
const CHAIN_LOCK: i64 = 0x6465_7661_7274_3a68; // "devart:h"
const BATCH: i64 = 5_000;
const COLUMNS: &str = "position, event_id, stream_id, stream_version, event_type, schema_version, payload, \
                       occurred_at, actor_kind, actor_id, correlation_id, causation_id, command_id, hash";

/// One event as the chain sees it.
struct Link {
    position: u64,
    event_id: Uuid,
    stream_id: String,
    stream_version: i64,
    event_type: String,
    schema_version: i16,
    payload: Vec<u8>,
    occurred_at: DateTime<Utc>,
    actor_kind: String,
    actor_id: String,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    command_id: Uuid,
    hash: Option<Vec<u8>>,
}

impl Link {
    /// Only the columns' bytes: the chain covers what is stored, whether or not it decodes, so a
    /// damaged payload is reported at its position like any other change.
    fn read(row: &PgRow) -> Result<Link, sqlx::Error> {
        Ok(Link {
            position: row.try_get::<i64, _>("position")? as u64,
            event_id: row.try_get("event_id")?,
            stream_id: row.try_get("stream_id")?,
            stream_version: row.try_get("stream_version")?,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get("schema_version")?,
            payload: row.try_get("payload")?,
            occurred_at: row.try_get("occurred_at")?,
            actor_kind: row.try_get("actor_kind")?,
            actor_id: row.try_get("actor_id")?,
            correlation_id: row.try_get("correlation_id")?,
            causation_id: row.try_get("causation_id")?,
            command_id: row.try_get("command_id")?,
            hash: row.try_get("hash")?,
        })
    }

    /// This event's hash at `position` after `previous`. Variable-length fields are
    /// length-prefixed, so no two different events encode alike.
    fn hash_at(&self, position: u64, previous: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        let text = |h: &mut Sha256, s: &[u8]| {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s);
        };
        h.update(previous);
        h.update(position.to_be_bytes());
        h.update(self.event_id.as_bytes());
        text(&mut h, self.stream_id.as_bytes());
        h.update(self.stream_version.to_be_bytes());
        text(&mut h, self.event_type.as_bytes());
        h.update(self.schema_version.to_be_bytes());
        text(&mut h, &self.payload);
        h.update(self.occurred_at.timestamp_micros().to_be_bytes());
        text(&mut h, self.actor_kind.as_bytes());
        text(&mut h, self.actor_id.as_bytes());
        h.update(self.correlation_id.as_bytes());
        match self.causation_id {
            Some(c) => {
                h.update([1]);
                h.update(c.as_bytes());
            }
            None => h.update([0]),
        }
        h.update(self.command_id.as_bytes());
        h.finalize().into()
    }

    fn holds(&self, position: u64, previous: &[u8]) -> bool {
        self.hash.as_deref() == Some(&self.hash_at(position, previous)[..])
    }
}

impl EventStore {
    /// Extends the chain over sequenced events not hashed yet, up to one batch; returns the last
    /// position hashed, if any. Chainers on several hosts take turns.
    pub async fn chain(&self) -> Result<Option<Position>, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1)").bind(CHAIN_LOCK).execute(&mut *tx).await?;
        let (head, previous): (i64, Vec<u8>) =
            sqlx::query_as("select position, hash from event_chain").fetch_one(&mut *tx).await?;
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from events where position > $1 and position <= $2 order by position"
        ))
        .bind(head)
        .bind(head + BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut previous = previous;
        let mut positions = Vec::with_capacity(rows.len());
        let mut hashes = Vec::with_capacity(rows.len());
        for (expected, row) in (head as u64 + 1..).zip(&rows) {
            let link = Link::read(row)?;
            // Positions are dense; a hole means the sequencer has not finished (or someone removed
            // a row, which verification reports): stop before it.
            if link.position != expected {
                break;
            }
            let hash = link.hash_at(link.position, &previous);
            previous = hash.to_vec();
            positions.push(link.position as i64);
            hashes.push(previous.clone());
        }
        let Some(last) = positions.last().copied() else {
            return Ok(None);
        };
        sqlx::query(
            "update events e set hash = x.hash from unnest($1::bigint[], $2::bytea[]) as x(position, hash) \
             where e.position = x.position",
        )
        .bind(&positions)
        .bind(&hashes)
        .execute(&mut *tx)
        .await?;
        sqlx::query("update event_chain set position = $1, hash = $2, updated_at = now()")
            .bind(last)
            .bind(&previous)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Position(last as u64)))
    }
}

/// How a stretch of the history checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every event in the range is where the chain says, as it was written.
    Intact { from: Position, to: Position, events: u64 },
    /// The first position where the history differs from what was chained.
    Broken { position: Position, kind: Tampering, detail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tampering {
    /// An event's content differs from what was hashed.
    Modified,
    /// An event is missing.
    Removed,
    /// An event is where none was chained.
    Inserted,
    /// Events are in another order than chained.
    Reordered,
}

impl Tampering {
    pub fn as_str(self) -> &'static str {
        match self {
            Tampering::Modified => "MODIFIED",
            Tampering::Removed => "REMOVED",
            Tampering::Inserted => "INSERTED",
            Tampering::Reordered => "REORDERED",
        }
    }
}

/// Checks the chain over positions `from..=to` (clamped to what is hashed). Reads in pages; the
/// hash before `from` is taken as stored, so a range is checked against the chain's own record.
pub async fn verify(pool: &PgPool, from: Position, to: Option<Position>) -> Result<Verdict, StoreError> {
    let chained: i64 = sqlx::query_scalar("select position from event_chain").fetch_one(pool).await?;
    let from = Position(from.0.max(1));
    let to = Position(to.map_or(chained as u64, |t| t.0.min(chained as u64)));
    if from > to {
        return Ok(Verdict::Intact { from, to, events: 0 });
    }
    let mut previous: Vec<u8> = if from.0 == 1 {
        GENESIS.to_vec()
    } else {
        let stored: Option<Option<Vec<u8>>> = sqlx::query_scalar("select hash from events where position = $1")
            .bind((from.0 - 1) as i64)
            .fetch_optional(pool)
            .await?;
        match stored.flatten() {
            Some(h) => h,
            None => {
                return Ok(Verdict::Broken {
                    position: Position(from.0 - 1),
                    kind: Tampering::Removed,
                    detail: "the event before the range is missing or has no hash".into(),
                })
            }
        }
    };
    let mut expected = from.0;
    while expected <= to.0 {
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from events where position >= $1 and position <= $2 order by position limit $3"
        ))
        .bind(expected as i64)
        .bind(to.0 as i64)
        .bind(BATCH + 1)
        .fetch_all(pool)
        .await?;
        let links = rows.iter().map(Link::read).collect::<Result<Vec<Link>, _>>()?;
        if links.is_empty() {
            return Ok(broken(expected, Tampering::Removed, "no event at this position"));
        }
        for (i, link) in links.iter().enumerate() {
            if link.position != expected {
                return Ok(broken(expected, Tampering::Removed, "no event at this position"));
            }
            if link.holds(expected, &previous) {
                previous = link.hash.clone().unwrap_or_default();
                expected += 1;
                if expected > to.0 {
                    break;
                }
                continue;
            }
            let next = links.get(i + 1).filter(|n| n.position == expected + 1);
            let (kind, detail) = diagnose(link, next, expected, &previous);
            return Ok(broken(expected, kind, detail));
        }
    }
    Ok(Verdict::Intact { from, to, events: to.0 - from.0 + 1 })
}

fn broken(position: u64, kind: Tampering, detail: &str) -> Verdict {
    Verdict::Broken { position: Position(position), kind, detail: detail.to_owned() }
}

/// Why the event at `position` does not hold, judged from its neighbour.
fn diagnose(link: &Link, next: Option<&Link>, position: u64, previous: &[u8]) -> (Tampering, &'static str) {
    let Some(stored) = link.hash.as_deref() else {
        return (Tampering::Inserted, "an event that was never chained");
    };
    if let Some(next) = next {
        // The next event was chained right here, after our predecessor: either the two swapped
        // places (then this one was chained right after it), or this one was put in front of it.
        if next.holds(position, previous) {
            return match next.hash.as_deref() {
                Some(next_hash) if link.holds(position + 1, next_hash) => {
                    (Tampering::Reordered, "this event and the next were chained the other way round")
                }
                _ => (Tampering::Inserted, "an event the chain does not know sits before one it does"),
            };
        }
        // The next event continues from this one's stored hash: this one's content changed.
        if next.holds(position + 1, stored) {
            return (Tampering::Modified, "the event's content does not match its hash");
        }
        // This event was chained after something that is no longer before it.
        return (Tampering::Removed, "the event does not follow its predecessor: one between them is gone");
    }
    (Tampering::Modified, "the event's content does not match its hash")
}
