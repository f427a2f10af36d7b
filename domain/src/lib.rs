//! devart's domain: what can happen, decided without IO.
//!
//! # Layout
//! - [`envelope`]: the metadata every stored event carries (ids, stream, positions, actor, correlation).
//! - [`aggregate`]: the [`Aggregate`] trait, `decide(&State, &Command) -> Result<Vec<Event>>` and
//!   `evolve(State, &Event) -> State`, and a given/when/then harness for specifications.
//! - [`task`]: the task aggregate and the validated value types its commands carry.
//! - [`agent`]: the agent aggregate: registration, key rotation, activation.
//! - [`service`]: external services with monthly budgets: reservations, charges, thresholds,
//!   suspension, periods. [`money`]: exact amounts.
//! - [`outliers`]: robust statistics that tell an unusual task cost from its peers' spread.
//! - [`settings`]: live settings: typed keys, validated values, changes as events.
//! - [`user`]: people: sign-in address, role, activation.
//! - [`workflow`]: workflow templates (validated DAGs of stages, versioned) and their runs.
//! - [`Event`]: every domain event of every aggregate, the unit the store, the bus and the
//!   projections move around.
//!
//! Nothing here reads a clock, a database or the network: the write side looks up whatever a decision
//! needs first and puts it in the command.

pub mod agent;
pub mod aggregate;
pub mod envelope;
pub mod money;
pub mod outliers;
pub mod service;
pub mod settings;
pub mod task;
pub mod user;
pub mod workflow;

pub use aggregate::{Aggregate, DomainError};
pub use envelope::{Actor, ActorKind, EventMeta, Position, StreamId};

/// Every domain event, tagged with its aggregate. New aggregates add a variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Task(task::TaskEvent),
    Agent(agent::AgentEvent),
    Workflow(workflow::WorkflowEvent),
    WorkflowRun(workflow::RunEvent),
    Service(service::ServiceEvent),
    Settings(settings::SettingsEvent),
    User(user::UserEvent),
}

impl Event {
    /// The event's type name as stored and broadcast (`TaskCreated`, …); unique across aggregates.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::Task(e) => e.event_type(),
            Event::Agent(e) => e.event_type(),
            Event::Workflow(e) => e.event_type(),
            Event::WorkflowRun(e) => e.event_type(),
            Event::Service(e) => e.event_type(),
            Event::Settings(e) => e.event_type(),
            Event::User(e) => e.event_type(),
        }
    }

    /// The aggregate the event belongs to, lower case (`task`); the second token of its subject.
    pub fn aggregate(&self) -> &'static str {
        match self {
            Event::Task(_) => task::Task::KIND,
            Event::Agent(_) => agent::Agent::KIND,
            Event::Workflow(_) => workflow::Workflow::KIND,
            Event::WorkflowRun(_) => workflow::WorkflowRun::KIND,
            Event::Service(_) => service::Service::KIND,
            Event::Settings(_) => settings::Settings::KIND,
            Event::User(_) => user::User::KIND,
        }
    }
}

impl From<agent::AgentEvent> for Event {
    fn from(e: agent::AgentEvent) -> Self {
        Event::Agent(e)
    }
}

impl From<workflow::WorkflowEvent> for Event {
    fn from(e: workflow::WorkflowEvent) -> Self {
        Event::Workflow(e)
    }
}

impl From<workflow::RunEvent> for Event {
    fn from(e: workflow::RunEvent) -> Self {
        Event::WorkflowRun(e)
    }
}

impl From<service::ServiceEvent> for Event {
    fn from(e: service::ServiceEvent) -> Self {
        Event::Service(e)
    }
}

impl From<settings::SettingsEvent> for Event {
    fn from(e: settings::SettingsEvent) -> Self {
        Event::Settings(e)
    }
}

impl From<user::UserEvent> for Event {
    fn from(e: user::UserEvent) -> Self {
        Event::User(e)
    }
}

impl From<task::TaskEvent> for Event {
    fn from(e: task::TaskEvent) -> Self {
        Event::Task(e)
    }
}
