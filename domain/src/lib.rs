//! devart's domain: what can happen, decided without IO.
//!
//! # Layout
//! - [`envelope`]: the metadata every stored event carries (ids, stream, positions, actor, correlation).
//! - [`aggregate`]: the [`Aggregate`] trait, `decide(&State, &Command) -> Result<Vec<Event>>` and
//!   `evolve(State, &Event) -> State`, and a given/when/then harness for specifications.
//! - [`task`]: the task aggregate and the validated value types its commands carry.
//! - [`agent`]: the agent aggregate: registration, key rotation, activation.
//! - [`Event`]: every domain event of every aggregate, the unit the store, the bus and the
//!   projections move around.
//!
//! Nothing here reads a clock, a database or the network: the write side looks up whatever a decision
//! needs first and puts it in the command.

pub mod agent;
pub mod aggregate;
pub mod envelope;
pub mod task;

pub use aggregate::{Aggregate, DomainError};
pub use envelope::{Actor, ActorKind, EventMeta, Position, StreamId};

/// Every domain event, tagged with its aggregate. New aggregates add a variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Task(task::TaskEvent),
    Agent(agent::AgentEvent),
}

impl Event {
    /// The event's type name as stored and broadcast (`TaskCreated`, …); unique across aggregates.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::Task(e) => e.event_type(),
            Event::Agent(e) => e.event_type(),
        }
    }

    /// The aggregate the event belongs to, lower case (`task`); the second token of its subject.
    pub fn aggregate(&self) -> &'static str {
        match self {
            Event::Task(_) => task::Task::KIND,
            Event::Agent(_) => agent::Agent::KIND,
        }
    }
}

impl From<agent::AgentEvent> for Event {
    fn from(e: agent::AgentEvent) -> Self {
        Event::Agent(e)
    }
}

impl From<task::TaskEvent> for Event {
    fn from(e: task::TaskEvent) -> Self {
        Event::Task(e)
    }
}
