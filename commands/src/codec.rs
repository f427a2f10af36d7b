//! Serialization at the edge: the versioned wire types of every event.
//!
//! Domain events are not the wire format. Each event type has versioned wire structs (`v1`, …);
//! the store keeps the postcard encoding of the newest version, the bus and the audit trail carry
//! its JSON. Reading an older version upcasts it, so replay never meets a layout it cannot read.

use devart_domain::agent::AgentEvent;
use devart_domain::task::{StageLink, TaskEvent};
use devart_domain::Event;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown event type {event_type} v{schema_version}")]
    UnknownType { event_type: String, schema_version: u16 },
    #[error("malformed {event_type} v{schema_version} payload: {message}")]
    Malformed { event_type: String, schema_version: u16, message: String },
}

/// The wire layouts, by aggregate and version.
pub mod wire {
    pub mod task {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Serialize};
        use uuid::Uuid;

        /// The layouts of the first release; `TaskCreated` has grown since (see [`v2`]).
        pub mod v1 {
            use serde::{Deserialize, Serialize};
            use uuid::Uuid;

            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            #[serde(rename_all = "camelCase")]
            pub struct TaskCreated {
                pub task_id: Uuid,
                pub title: String,
                pub description: String,
                pub priority: u8,
                pub required_capabilities: Vec<String>,
                pub parent_task_id: Option<Uuid>,
            }
        }

        pub mod v2 {
            use chrono::{DateTime, Utc};
            use serde::{Deserialize, Serialize};
            use uuid::Uuid;

            /// v1 plus attempts, a start time, an input document and a workflow stage.
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            #[serde(rename_all = "camelCase")]
            pub struct TaskCreated {
                pub task_id: Uuid,
                pub title: String,
                pub description: String,
                pub priority: u8,
                pub required_capabilities: Vec<String>,
                pub parent_task_id: Option<Uuid>,
                pub max_attempts: u32,
                pub run_after: Option<DateTime<Utc>>,
                /// A JSON document, as text.
                pub input: Option<String>,
                pub stage: Option<super::Stage>,
            }

            impl From<super::v1::TaskCreated> for TaskCreated {
                /// Tasks created before v2 had three attempts, started at once, and had no input.
                fn from(v1: super::v1::TaskCreated) -> Self {
                    TaskCreated {
                        task_id: v1.task_id,
                        title: v1.title,
                        description: v1.description,
                        priority: v1.priority,
                        required_capabilities: v1.required_capabilities,
                        parent_task_id: v1.parent_task_id,
                        max_attempts: 3,
                        run_after: None,
                        input: None,
                        stage: None,
                    }
                }
            }
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct Stage {
            pub run_id: Uuid,
            pub stage_key: String,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct TaskUpdated {
            pub title: Option<String>,
            pub description: Option<String>,
            pub required_capabilities: Option<Vec<String>>,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct TaskReprioritized {
            pub from: u8,
            pub to: u8,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct TaskDeleted {}

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct TaskClaimed {
            pub agent_id: Uuid,
            pub attempt: u32,
            pub lease_expires_at: DateTime<Utc>,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct TaskLeaseExtended {
            pub agent_id: Uuid,
            pub attempt: u32,
            pub lease_expires_at: DateTime<Utc>,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct TaskProgressReported {
            pub agent_id: Uuid,
            pub attempt: u32,
            pub message: String,
            pub percent: Option<u8>,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct TaskCompleted {
            pub agent_id: Uuid,
            pub attempt: u32,
            /// A JSON document, as text.
            pub result: Option<String>,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct TaskAttemptFailed {
            pub agent_id: Uuid,
            pub attempt: u32,
            pub error: String,
            pub retry_at: Option<DateTime<Utc>>,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct TaskLeaseExpired {
            pub agent_id: Uuid,
            pub attempt: u32,
            pub retry_at: Option<DateTime<Utc>>,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct TaskReleased {
            pub agent_id: Uuid,
            pub attempt: u32,
            pub reason: String,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct TaskFailed {
            pub failures: u32,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct TaskCancelled {
            pub reason: Option<String>,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct TaskRetried {}
    }

    pub mod agent {
        use serde::{Deserialize, Serialize};
        use uuid::Uuid;

        /// `keyId` is the public half of the agent's API key; the secret is never in an event.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct AgentRegistered {
            pub agent_id: Uuid,
            pub name: String,
            pub capabilities: Vec<String>,
            pub key_id: String,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct AgentKeyRotated {
            pub key_id: String,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct AgentActivated {}

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct AgentDeactivated {}
    }
}

/// Declares every event type with its newest schema version and layout: the `Wire` enum that
/// holds any event in that layout, its postcard encoding, and decoding of the newest versions.
macro_rules! wire_events {
    ($($event:ident($version:literal): $layout:path),* $(,)?) => {
        /// An event in its newest wire layout, ready for postcard or JSON.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        enum Wire {
            $($event($layout)),*
        }

        impl Wire {
            fn to_postcard(&self) -> Vec<u8> {
                match self {
                    $(Wire::$event(w) => postcard::to_allocvec(w)),*
                }
                .expect("wire types always encode")
            }

            /// Decodes the newest layout of `event_type`; `None` for an unknown type.
            fn decode_newest(event_type: &str, decoder: &Decoder<'_>) -> Option<Result<Wire, String>> {
                match event_type {
                    $(stringify!($event) => Some(decoder.one::<$layout>().map(Wire::$event)),)*
                    _ => None,
                }
            }
        }

        /// The newest schema version of every event type; what `encode` writes.
        pub fn schema_version(event_type: &str) -> Option<u16> {
            match event_type {
                $(stringify!($event) => Some($version),)*
                _ => None,
            }
        }
    };
}

wire_events! {
    TaskCreated(2): wire::task::v2::TaskCreated,
    TaskUpdated(1): wire::task::TaskUpdated,
    TaskReprioritized(1): wire::task::TaskReprioritized,
    TaskDeleted(1): wire::task::TaskDeleted,
    TaskClaimed(1): wire::task::TaskClaimed,
    TaskLeaseExtended(1): wire::task::TaskLeaseExtended,
    TaskProgressReported(1): wire::task::TaskProgressReported,
    TaskCompleted(1): wire::task::TaskCompleted,
    TaskAttemptFailed(1): wire::task::TaskAttemptFailed,
    TaskLeaseExpired(1): wire::task::TaskLeaseExpired,
    TaskReleased(1): wire::task::TaskReleased,
    TaskFailed(1): wire::task::TaskFailed,
    TaskCancelled(1): wire::task::TaskCancelled,
    TaskRetried(1): wire::task::TaskRetried,
    AgentRegistered(1): wire::agent::AgentRegistered,
    AgentKeyRotated(1): wire::agent::AgentKeyRotated,
    AgentActivated(1): wire::agent::AgentActivated,
    AgentDeactivated(1): wire::agent::AgentDeactivated,
}

/// Older layouts still readable, each upcast to the newest.
fn decode_older(event_type: &str, schema_version: u16, decoder: &Decoder<'_>) -> Option<Result<Wire, String>> {
    match (event_type, schema_version) {
        ("TaskCreated", 1) => Some(decoder.one::<wire::task::v1::TaskCreated>().map(|v1| Wire::TaskCreated(v1.into()))),
        _ => None,
    }
}

fn to_wire(event: &Event) -> Wire {
    use wire::task as t;
    match event.clone() {
        Event::Task(e) => match e {
            TaskEvent::Created {
                id,
                title,
                description,
                priority,
                required_capabilities,
                parent_task_id,
                max_attempts,
                run_after,
                input,
                stage,
            } => Wire::TaskCreated(t::v2::TaskCreated {
                task_id: id,
                title,
                description,
                priority,
                required_capabilities,
                parent_task_id,
                max_attempts,
                run_after,
                input,
                stage: stage.map(|s| t::Stage { run_id: s.run_id, stage_key: s.stage_key }),
            }),
            TaskEvent::Updated { title, description, required_capabilities } => {
                Wire::TaskUpdated(t::TaskUpdated { title, description, required_capabilities })
            }
            TaskEvent::Reprioritized { from, to } => Wire::TaskReprioritized(t::TaskReprioritized { from, to }),
            TaskEvent::Deleted => Wire::TaskDeleted(t::TaskDeleted {}),
            TaskEvent::Claimed { agent_id, attempt, lease_expires_at } => {
                Wire::TaskClaimed(t::TaskClaimed { agent_id, attempt, lease_expires_at })
            }
            TaskEvent::LeaseExtended { agent_id, attempt, lease_expires_at } => {
                Wire::TaskLeaseExtended(t::TaskLeaseExtended { agent_id, attempt, lease_expires_at })
            }
            TaskEvent::ProgressReported { agent_id, attempt, message, percent } => {
                Wire::TaskProgressReported(t::TaskProgressReported { agent_id, attempt, message, percent })
            }
            TaskEvent::Completed { agent_id, attempt, result } => {
                Wire::TaskCompleted(t::TaskCompleted { agent_id, attempt, result })
            }
            TaskEvent::AttemptFailed { agent_id, attempt, error, retry_at } => {
                Wire::TaskAttemptFailed(t::TaskAttemptFailed { agent_id, attempt, error, retry_at })
            }
            TaskEvent::LeaseExpired { agent_id, attempt, retry_at } => {
                Wire::TaskLeaseExpired(t::TaskLeaseExpired { agent_id, attempt, retry_at })
            }
            TaskEvent::Released { agent_id, attempt, reason } => {
                Wire::TaskReleased(t::TaskReleased { agent_id, attempt, reason })
            }
            TaskEvent::Failed { failures } => Wire::TaskFailed(t::TaskFailed { failures }),
            TaskEvent::Cancelled { reason } => Wire::TaskCancelled(t::TaskCancelled { reason }),
            TaskEvent::Retried => Wire::TaskRetried(t::TaskRetried {}),
        },
        Event::Agent(e) => {
            use wire::agent as a;
            match e {
                AgentEvent::Registered { id, name, capabilities, key_id } => {
                    Wire::AgentRegistered(a::AgentRegistered { agent_id: id, name, capabilities, key_id })
                }
                AgentEvent::KeyRotated { key_id } => Wire::AgentKeyRotated(a::AgentKeyRotated { key_id }),
                AgentEvent::Activated => Wire::AgentActivated(a::AgentActivated {}),
                AgentEvent::Deactivated => Wire::AgentDeactivated(a::AgentDeactivated {}),
            }
        }
    }
}

fn from_wire(wire: Wire) -> Event {
    let task = |e| Event::Task(e);
    match wire {
        Wire::TaskCreated(w) => task(TaskEvent::Created {
            id: w.task_id,
            title: w.title,
            description: w.description,
            priority: w.priority,
            required_capabilities: w.required_capabilities,
            parent_task_id: w.parent_task_id,
            max_attempts: w.max_attempts,
            run_after: w.run_after,
            input: w.input,
            stage: w.stage.map(|s| StageLink { run_id: s.run_id, stage_key: s.stage_key }),
        }),
        Wire::TaskUpdated(w) => task(TaskEvent::Updated {
            title: w.title,
            description: w.description,
            required_capabilities: w.required_capabilities,
        }),
        Wire::TaskReprioritized(w) => task(TaskEvent::Reprioritized { from: w.from, to: w.to }),
        Wire::TaskDeleted(_) => task(TaskEvent::Deleted),
        Wire::TaskClaimed(w) => {
            task(TaskEvent::Claimed { agent_id: w.agent_id, attempt: w.attempt, lease_expires_at: w.lease_expires_at })
        }
        Wire::TaskLeaseExtended(w) => task(TaskEvent::LeaseExtended {
            agent_id: w.agent_id,
            attempt: w.attempt,
            lease_expires_at: w.lease_expires_at,
        }),
        Wire::TaskProgressReported(w) => task(TaskEvent::ProgressReported {
            agent_id: w.agent_id,
            attempt: w.attempt,
            message: w.message,
            percent: w.percent,
        }),
        Wire::TaskCompleted(w) => {
            task(TaskEvent::Completed { agent_id: w.agent_id, attempt: w.attempt, result: w.result })
        }
        Wire::TaskAttemptFailed(w) => task(TaskEvent::AttemptFailed {
            agent_id: w.agent_id,
            attempt: w.attempt,
            error: w.error,
            retry_at: w.retry_at,
        }),
        Wire::TaskLeaseExpired(w) => {
            task(TaskEvent::LeaseExpired { agent_id: w.agent_id, attempt: w.attempt, retry_at: w.retry_at })
        }
        Wire::TaskReleased(w) => {
            task(TaskEvent::Released { agent_id: w.agent_id, attempt: w.attempt, reason: w.reason })
        }
        Wire::TaskFailed(w) => task(TaskEvent::Failed { failures: w.failures }),
        Wire::TaskCancelled(w) => task(TaskEvent::Cancelled { reason: w.reason }),
        Wire::TaskRetried(_) => task(TaskEvent::Retried),
        Wire::AgentRegistered(w) => Event::Agent(AgentEvent::Registered {
            id: w.agent_id,
            name: w.name,
            capabilities: w.capabilities,
            key_id: w.key_id,
        }),
        Wire::AgentKeyRotated(w) => Event::Agent(AgentEvent::KeyRotated { key_id: w.key_id }),
        Wire::AgentActivated(_) => Event::Agent(AgentEvent::Activated),
        Wire::AgentDeactivated(_) => Event::Agent(AgentEvent::Deactivated),
    }
}

/// The stored form: `(event_type, schema_version, postcard bytes)`.
pub fn encode(event: &Event) -> (&'static str, u16, Vec<u8>) {
    let event_type = event.event_type();
    let version = schema_version(event_type).expect("every domain event has a wire version");
    (event_type, version, to_wire(event).to_postcard())
}

/// The audit and broadcast form: the newest wire layout as JSON (camelCase fields).
pub fn to_json(event: &Event) -> serde_json::Value {
    serde_json::to_value(to_wire(event)).expect("wire types always serialize")
}

/// Decodes a stored payload, upcasting older layouts.
pub fn decode(event_type: &str, schema_version: u16, bytes: &[u8]) -> Result<Event, CodecError> {
    decode_with(event_type, schema_version, &Decoder::Postcard(bytes))
}

/// Decodes the JSON form (as carried on the bus), upcasting older layouts.
pub fn from_json(event_type: &str, schema_version: u16, json: &[u8]) -> Result<Event, CodecError> {
    decode_with(event_type, schema_version, &Decoder::Json(json))
}

enum Decoder<'a> {
    Postcard(&'a [u8]),
    Json(&'a [u8]),
}

impl Decoder<'_> {
    fn one<T: for<'de> Deserialize<'de>>(&self) -> Result<T, String> {
        match self {
            Decoder::Postcard(b) => postcard::from_bytes(b).map_err(|e| e.to_string()),
            Decoder::Json(b) => serde_json::from_slice(b).map_err(|e| e.to_string()),
        }
    }
}

fn decode_with(event_type: &str, schema_version: u16, decoder: &Decoder<'_>) -> Result<Event, CodecError> {
    let decoded = if self::schema_version(event_type) == Some(schema_version) {
        Wire::decode_newest(event_type, decoder)
    } else {
        decode_older(event_type, schema_version, decoder)
    };
    let Some(decoded) = decoded else {
        return Err(CodecError::UnknownType { event_type: event_type.to_owned(), schema_version });
    };
    decoded.map(from_wire).map_err(|message| CodecError::Malformed {
        event_type: event_type.to_owned(),
        schema_version,
        message,
    })
}

/// The task id a `TaskCreated` payload names, without decoding the rest.
pub fn created_task_id(event: &Event) -> Option<Uuid> {
    match event {
        Event::Task(TaskEvent::Created { id, .. }) => Some(*id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap()
    }

    fn agent() -> Uuid {
        Uuid::from_u128(0xa)
    }

    fn samples() -> Vec<Event> {
        vec![
            Event::Task(TaskEvent::Created {
                id: Uuid::from_u128(1),
                title: "t".into(),
                description: "d".into(),
                priority: 5,
                required_capabilities: vec!["rust".into()],
                parent_task_id: Some(Uuid::from_u128(2)),
                max_attempts: 5,
                run_after: Some(at()),
                input: Some(r#"{"a":1}"#.into()),
                stage: Some(StageLink { run_id: Uuid::from_u128(9), stage_key: "build".into() }),
            }),
            Event::Task(TaskEvent::Updated { title: None, description: Some("x".into()), required_capabilities: None }),
            Event::Task(TaskEvent::Reprioritized { from: 1, to: 2 }),
            Event::Task(TaskEvent::Deleted),
            Event::Task(TaskEvent::Claimed { agent_id: agent(), attempt: 1, lease_expires_at: at() }),
            Event::Task(TaskEvent::LeaseExtended { agent_id: agent(), attempt: 1, lease_expires_at: at() }),
            Event::Task(TaskEvent::ProgressReported {
                agent_id: agent(),
                attempt: 1,
                message: "half".into(),
                percent: Some(50),
            }),
            Event::Task(TaskEvent::Completed { agent_id: agent(), attempt: 1, result: Some("[1]".into()) }),
            Event::Task(TaskEvent::AttemptFailed {
                agent_id: agent(),
                attempt: 1,
                error: "boom".into(),
                retry_at: Some(at()),
            }),
            Event::Task(TaskEvent::LeaseExpired { agent_id: agent(), attempt: 2, retry_at: None }),
            Event::Task(TaskEvent::Released { agent_id: agent(), attempt: 2, reason: "off".into() }),
            Event::Task(TaskEvent::Failed { failures: 3 }),
            Event::Task(TaskEvent::Cancelled { reason: Some("no".into()) }),
            Event::Task(TaskEvent::Retried),
            Event::Agent(AgentEvent::Registered {
                id: Uuid::from_u128(3),
                name: "builder".into(),
                capabilities: vec!["rust".into()],
                key_id: "k".into(),
            }),
            Event::Agent(AgentEvent::KeyRotated { key_id: "k2".into() }),
            Event::Agent(AgentEvent::Deactivated),
            Event::Agent(AgentEvent::Activated),
        ]
    }

    #[test]
    fn every_event_round_trips_through_postcard_and_json() {
        for event in samples() {
            let (ty, v, bytes) = encode(&event);
            assert_eq!(decode(ty, v, &bytes).unwrap(), event);
            let json = serde_json::to_vec(&to_json(&event)).unwrap();
            assert_eq!(from_json(ty, v, &json).unwrap(), event);
        }
    }

    #[test]
    fn a_v1_task_created_is_upcast_with_the_defaults_of_its_time() {
        let v1 = wire::task::v1::TaskCreated {
            task_id: Uuid::from_u128(1),
            title: "t".into(),
            description: String::new(),
            priority: 3,
            required_capabilities: vec![],
            parent_task_id: None,
        };
        let bytes = postcard::to_allocvec(&v1).unwrap();
        let Event::Task(TaskEvent::Created { max_attempts, run_after, input, .. }) =
            decode("TaskCreated", 1, &bytes).unwrap()
        else {
            panic!("not a TaskCreated");
        };
        assert_eq!((max_attempts, run_after, input), (3, None, None));
        let json = serde_json::to_vec(&v1).unwrap();
        assert!(matches!(from_json("TaskCreated", 1, &json), Ok(Event::Task(TaskEvent::Created { .. }))));
    }

    #[test]
    fn every_sample_is_of_a_declared_type() {
        for event in samples() {
            assert!(schema_version(event.event_type()).is_some(), "{}", event.event_type());
        }
    }

    #[test]
    fn json_is_camel_case() {
        let json = to_json(&samples()[0]);
        assert_eq!(json["taskId"], "00000000-0000-0000-0000-000000000001");
        assert_eq!(json["requiredCapabilities"][0], "rust");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode("TaskCreated", 1, &[0xff; 3]).is_err());
        assert!(decode("TaskCreated", 9, &[]).is_err());
        assert!(decode("Nope", 1, &[]).is_err());
        assert!(from_json("TaskCreated", 1, b"{").is_err());
    }
}
