//! Serialization at the edge: the versioned wire types of every event.
//!
//! Domain events are not the wire format. Each event type has versioned wire structs (`v1`, …);
//! the store keeps the postcard encoding of the newest version, the bus and the audit trail carry
//! its JSON. Reading an older version upcasts it, so replay never meets a layout it cannot read.

use devart_domain::agent::AgentEvent;
use devart_domain::task::TaskEvent;
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
            #[serde(rename_all = "camelCase")]
            pub struct TaskDeleted {}
        }
    }

    pub mod agent {
        pub mod v1 {
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
            #[serde(rename_all = "camelCase")]
            pub struct AgentActivated {}

            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            #[serde(rename_all = "camelCase")]
            pub struct AgentDeactivated {}
        }
    }
}

/// The newest schema version of every event type; what `encode` writes.
pub fn schema_version(event_type: &str) -> Option<u16> {
    match event_type {
        "TaskCreated" | "TaskUpdated" | "TaskReprioritized" | "TaskDeleted" => Some(1),
        "AgentRegistered" | "AgentKeyRotated" | "AgentActivated" | "AgentDeactivated" => Some(1),
        _ => None,
    }
}

/// An event in its newest wire layout, ready for postcard or JSON.
// Named after the event types; other aggregates' events join as they arrive.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
enum Wire {
    TaskCreated(wire::task::v1::TaskCreated),
    TaskUpdated(wire::task::v1::TaskUpdated),
    TaskReprioritized(wire::task::v1::TaskReprioritized),
    TaskDeleted(wire::task::v1::TaskDeleted),
    AgentRegistered(wire::agent::v1::AgentRegistered),
    AgentKeyRotated(wire::agent::v1::AgentKeyRotated),
    AgentActivated(wire::agent::v1::AgentActivated),
    AgentDeactivated(wire::agent::v1::AgentDeactivated),
}

fn to_wire(event: &Event) -> Wire {
    use wire::task::v1;
    match event {
        Event::Task(e) => match e.clone() {
            TaskEvent::Created { id, title, description, priority, required_capabilities, parent_task_id } => {
                Wire::TaskCreated(v1::TaskCreated {
                    task_id: id,
                    title,
                    description,
                    priority,
                    required_capabilities,
                    parent_task_id,
                })
            }
            TaskEvent::Updated { title, description, required_capabilities } => {
                Wire::TaskUpdated(v1::TaskUpdated { title, description, required_capabilities })
            }
            TaskEvent::Reprioritized { from, to } => Wire::TaskReprioritized(v1::TaskReprioritized { from, to }),
            TaskEvent::Deleted => Wire::TaskDeleted(v1::TaskDeleted {}),
        },
        Event::Agent(e) => {
            use wire::agent::v1 as a;
            match e.clone() {
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
    match wire {
        Wire::TaskCreated(w) => Event::Task(TaskEvent::Created {
            id: w.task_id,
            title: w.title,
            description: w.description,
            priority: w.priority,
            required_capabilities: w.required_capabilities,
            parent_task_id: w.parent_task_id,
        }),
        Wire::TaskUpdated(w) => Event::Task(TaskEvent::Updated {
            title: w.title,
            description: w.description,
            required_capabilities: w.required_capabilities,
        }),
        Wire::TaskReprioritized(w) => Event::Task(TaskEvent::Reprioritized { from: w.from, to: w.to }),
        Wire::TaskDeleted(_) => Event::Task(TaskEvent::Deleted),
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
    let bytes = match to_wire(event) {
        Wire::TaskCreated(w) => postcard::to_allocvec(&w),
        Wire::TaskUpdated(w) => postcard::to_allocvec(&w),
        Wire::TaskReprioritized(w) => postcard::to_allocvec(&w),
        Wire::TaskDeleted(w) => postcard::to_allocvec(&w),
        Wire::AgentRegistered(w) => postcard::to_allocvec(&w),
        Wire::AgentKeyRotated(w) => postcard::to_allocvec(&w),
        Wire::AgentActivated(w) => postcard::to_allocvec(&w),
        Wire::AgentDeactivated(w) => postcard::to_allocvec(&w),
    }
    .expect("wire types always encode");
    (event_type, version, bytes)
}

/// The audit and broadcast form: the newest wire layout as JSON (camelCase fields).
pub fn to_json(event: &Event) -> serde_json::Value {
    serde_json::to_value(to_wire(event)).expect("wire types always serialize")
}

/// Decodes a stored payload, upcasting older layouts.
pub fn decode(event_type: &str, schema_version: u16, bytes: &[u8]) -> Result<Event, CodecError> {
    decode_with(event_type, schema_version, |ty| Decoder::Postcard(bytes).decode(ty))
}

/// Decodes the JSON form (as carried on the bus), upcasting older layouts.
pub fn from_json(event_type: &str, schema_version: u16, json: &[u8]) -> Result<Event, CodecError> {
    decode_with(event_type, schema_version, |ty| Decoder::Json(json).decode(ty))
}

enum Decoder<'a> {
    Postcard(&'a [u8]),
    Json(&'a [u8]),
}

enum WireType {
    TaskCreatedV1,
    TaskUpdatedV1,
    TaskReprioritizedV1,
    TaskDeletedV1,
    AgentRegisteredV1,
    AgentKeyRotatedV1,
    AgentActivatedV1,
    AgentDeactivatedV1,
}

impl Decoder<'_> {
    fn decode(&self, ty: WireType) -> Result<Wire, String> {
        fn one<T: for<'de> Deserialize<'de>>(d: &Decoder<'_>) -> Result<T, String> {
            match d {
                Decoder::Postcard(b) => postcard::from_bytes(b).map_err(|e| e.to_string()),
                Decoder::Json(b) => serde_json::from_slice(b).map_err(|e| e.to_string()),
            }
        }
        Ok(match ty {
            WireType::TaskCreatedV1 => Wire::TaskCreated(one(self)?),
            WireType::TaskUpdatedV1 => Wire::TaskUpdated(one(self)?),
            WireType::TaskReprioritizedV1 => Wire::TaskReprioritized(one(self)?),
            WireType::TaskDeletedV1 => Wire::TaskDeleted(one(self)?),
            WireType::AgentRegisteredV1 => Wire::AgentRegistered(one(self)?),
            WireType::AgentKeyRotatedV1 => Wire::AgentKeyRotated(one(self)?),
            WireType::AgentActivatedV1 => Wire::AgentActivated(one(self)?),
            WireType::AgentDeactivatedV1 => Wire::AgentDeactivated(one(self)?),
        })
    }
}

fn decode_with(
    event_type: &str,
    schema_version: u16,
    decode: impl FnOnce(WireType) -> Result<Wire, String>,
) -> Result<Event, CodecError> {
    let ty = match (event_type, schema_version) {
        ("TaskCreated", 1) => WireType::TaskCreatedV1,
        ("TaskUpdated", 1) => WireType::TaskUpdatedV1,
        ("TaskReprioritized", 1) => WireType::TaskReprioritizedV1,
        ("TaskDeleted", 1) => WireType::TaskDeletedV1,
        ("AgentRegistered", 1) => WireType::AgentRegisteredV1,
        ("AgentKeyRotated", 1) => WireType::AgentKeyRotatedV1,
        ("AgentActivated", 1) => WireType::AgentActivatedV1,
        ("AgentDeactivated", 1) => WireType::AgentDeactivatedV1,
        _ => return Err(CodecError::UnknownType { event_type: event_type.to_owned(), schema_version }),
    };
    // Upcasting: when a v2 arrives, v1 decodes to its own struct and is converted here.
    decode(ty).map(from_wire).map_err(|message| CodecError::Malformed {
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

    fn samples() -> Vec<Event> {
        vec![
            Event::Task(TaskEvent::Created {
                id: Uuid::from_u128(1),
                title: "t".into(),
                description: "d".into(),
                priority: 5,
                required_capabilities: vec!["rust".into()],
                parent_task_id: Some(Uuid::from_u128(2)),
            }),
            Event::Task(TaskEvent::Updated { title: None, description: Some("x".into()), required_capabilities: None }),
            Event::Task(TaskEvent::Reprioritized { from: 1, to: 2 }),
            Event::Task(TaskEvent::Deleted),
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
