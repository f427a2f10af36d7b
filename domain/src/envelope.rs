//! Event metadata: identity, place in its stream and in the global order, and who caused it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A place in the global order of all events: dense, gapless, starting at 1, assigned after commit.
///
/// Shown to clients as a decimal string, so that languages without 64-bit integers keep it exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Position(pub u64);

impl Position {
    pub const START: Position = Position(0);

    pub fn next(self) -> Position {
        Position(self.0 + 1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Position {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse::<u64>().map(Position).map_err(|_| format!("`{s}` is not a position (a non-negative integer)"))
    }
}

/// The stream an event belongs to: `<aggregate>-<uuid>`, for example `task-0190…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct StreamId(String);

parsed_from!(StreamId, String, String, |v| StreamId::parse(&v));

impl StreamId {
    pub fn new(kind: &str, id: Uuid) -> StreamId {
        StreamId(format!("{kind}-{id}"))
    }

    /// Parses `<kind>-<uuid>`, the only shape a stream id has.
    pub fn parse(s: &str) -> Result<StreamId, String> {
        match s.split_once('-') {
            Some((kind, id))
                if !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase()) && Uuid::parse_str(id).is_ok() =>
            {
                Ok(StreamId(s.to_owned()))
            }
            _ => Err(format!("`{s}` is not a stream id (`<kind>-<uuid>`)")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> &str {
        self.0.split_once('-').map_or("", |(kind, _)| kind)
    }

    /// The aggregate id, if this is a stream of aggregate `kind`.
    pub fn id_of(&self, kind: &str) -> Option<Uuid> {
        let (k, id) = self.0.split_once('-')?;
        (k == kind).then(|| Uuid::parse_str(id).ok()).flatten()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActorKind {
    User,
    Agent,
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Agent => "agent",
            ActorKind::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<ActorKind> {
        match s {
            "user" => Some(ActorKind::User),
            "agent" => Some(ActorKind::Agent),
            "system" => Some(ActorKind::System),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    /// A user's subject, an agent's id, or the name of the system process.
    pub id: String,
}

impl Actor {
    pub fn user(id: impl Into<String>) -> Actor {
        Actor { kind: ActorKind::User, id: id.into() }
    }
    pub fn agent(id: impl Into<String>) -> Actor {
        Actor { kind: ActorKind::Agent, id: id.into() }
    }
    pub fn system(id: impl Into<String>) -> Actor {
        Actor { kind: ActorKind::System, id: id.into() }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.id)
    }
}

/// Everything stored beside an event's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// UUIDv7: unique, and roughly time-ordered for storage locality.
    pub event_id: Uuid,
    pub stream_id: StreamId,
    /// 1 for the stream's first event; each next event is exactly one more.
    pub stream_version: u64,
    /// `None` until the sequencer has placed the committed event in the global order.
    pub position: Option<Position>,
    pub event_type: String,
    /// The version of the stored payload's layout; older layouts are upcast when read.
    pub schema_version: u16,
    pub occurred_at: DateTime<Utc>,
    pub actor: Actor,
    /// Shared by everything one request caused, across streams.
    pub correlation_id: Uuid,
    /// The event or command that directly caused this one.
    pub causation_id: Option<Uuid>,
}
