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
//! - [`claims`]: the kill switch: pauses of the handing out of work, by scope.
//! - [`document`]: the knowledge base's documents, and the chunker that splits them for search.
//! - [`workflow`]: workflow templates (validated DAGs of stages, versioned) and their runs.
//! - [`Event`]: every domain event of every aggregate, the unit the store, the bus and the
//!   projections move around.
//!
//! Nothing here reads a clock, a database or the network: the write side looks up whatever a decision
//! needs first and puts it in the command.

/// `TryFrom<raw>` through a type's own constructor, for `#[serde(try_from = "raw")]`: no stored or
/// wire value deserializes into one its constructor would refuse.
macro_rules! parsed_from {
    ($ty:ty, $raw:ty, $error:ty, $parse:expr) => {
        impl TryFrom<$raw> for $ty {
            type Error = $error;
            fn try_from(raw: $raw) -> Result<Self, Self::Error> {
                let parse: fn($raw) -> Result<$ty, $error> = $parse;
                parse(raw)
            }
        }
    };
}

pub mod agent;
pub mod aggregate;
pub mod claims;
pub mod document;
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
    Claims(claims::ClaimsEvent),
    Document(document::DocumentEvent),
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
            Event::Claims(e) => e.event_type(),
            Event::Document(e) => e.event_type(),
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
            Event::Claims(_) => claims::Claims::KIND,
            Event::Document(_) => document::Document::KIND,
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

impl From<claims::ClaimsEvent> for Event {
    fn from(e: claims::ClaimsEvent) -> Self {
        Event::Claims(e)
    }
}

impl From<document::DocumentEvent> for Event {
    fn from(e: document::DocumentEvent) -> Self {
        Event::Document(e)
    }
}

impl From<task::TaskEvent> for Event {
    fn from(e: task::TaskEvent) -> Self {
        Event::Task(e)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{from_value, json, to_value};

    use crate::money::Money;
    use crate::service::Period;
    use crate::task::{Capabilities, Priority, Title};
    use crate::user::UserRole;
    use crate::StreamId;

    #[test]
    fn values_with_preconditions_deserialize_only_through_them() {
        assert_eq!(from_value::<Priority>(json!(5)).unwrap(), Priority::parse(5).unwrap());
        for bad in [json!(0), json!(6), json!(-1), json!("3")] {
            assert!(from_value::<Priority>(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(from_value::<Title>(json!("  Ship it ")).unwrap().as_str(), "Ship it");
        assert!(from_value::<Title>(json!("")).is_err());
        assert!(from_value::<Title>(json!("a\u{7}b")).is_err());
        assert!(from_value::<Title>(json!("x".repeat(201))).is_err());
        let caps = from_value::<Capabilities>(json!(["rust", "docs", "rust"])).unwrap();
        assert_eq!(caps.to_strings(), ["docs", "rust"]);
        assert!(from_value::<Capabilities>(json!(["Rust"])).is_err());
        assert!(from_value::<StreamId>(json!("task-0190c8a4-0000-7000-8000-000000000001")).is_ok());
        for bad in ["task", "task-", "Task-0190c8a4-0000-7000-8000-000000000001", "task-nope"] {
            assert!(from_value::<StreamId>(json!(bad)).is_err(), "{bad}");
        }
        assert!(from_value::<UserRole>(json!("owner")).is_err());
        assert_eq!(from_value::<UserRole>(json!("admin")).unwrap(), UserRole::Admin);
    }

    #[test]
    fn amounts_and_periods_keep_their_form_and_refuse_what_is_out_of_range() {
        let money = Money::parse("amount", "12.5").unwrap();
        assert_eq!(to_value(money).unwrap(), json!(12_500_000));
        assert_eq!(from_value::<Money>(json!(12_500_000)).unwrap(), money);
        assert!(from_value::<Money>(json!(-1)).is_err());
        assert!(from_value::<Money>(json!(Money::MAX.micros() + 1)).is_err());
        let period = Period { year: 2026, month: 11 };
        assert_eq!(to_value(period).unwrap(), json!({ "year": 2026, "month": 11 }));
        assert_eq!(from_value::<Period>(json!({ "year": 2026, "month": 11 })).unwrap(), period);
        assert!(from_value::<Period>(json!({ "year": 2026, "month": 13 })).is_err());
        assert!(from_value::<Period>(json!({ "year": 2026, "month": 0 })).is_err());
    }

    #[test]
    fn each_serializes_to_what_it_deserializes_from() {
        let role = UserRole::Supervisor;
        assert_eq!(from_value::<UserRole>(to_value(role).unwrap()).unwrap(), role);
        let title = Title::parse("t").unwrap();
        assert_eq!(from_value::<Title>(to_value(&title).unwrap()).unwrap(), title);
        let key = crate::settings::Key::DefaultLeaseSeconds;
        assert_eq!(to_value(key).unwrap(), json!("queue.defaultLeaseSeconds"));
        assert_eq!(from_value::<crate::settings::Key>(json!("queue.defaultLeaseSeconds")).unwrap(), key);
    }
}
