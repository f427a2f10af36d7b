//! Serialization at the edge: the versioned wire types of every event.
//!
//! Domain events are not the wire format. Each event type has versioned wire structs, one module
//! per aggregate ([`task`], [`agent`], [`workflow`], [`service`], [`settings`], [`user`],
//! [`claims`], [`document`]), each
//! converted to and from its domain event by `From`/`TryFrom`. The store keeps the postcard
//! encoding of the newest version, the bus and the audit trail carry its JSON. Reading an older
//! version upcasts it, so replay never meets a layout it cannot read; a payload that does not
//! decode, or decodes to a value its domain type refuses, is an error, never a default.
//!
//! The stored bytes and the JSON are held to a captured fixture (`tests/fixtures/wire_samples.json`),
//! so a change here cannot quietly change what existing databases and exports hold.

pub mod agent;
pub mod claims;
pub mod document;
pub mod service;
pub mod settings;
pub mod task;
pub mod user;
pub mod workflow;

use devart_domain::agent::AgentEvent;
use devart_domain::claims::ClaimsEvent;
use devart_domain::document::DocumentEvent;
use devart_domain::service::ServiceEvent;
use devart_domain::settings::SettingsEvent;
use devart_domain::task::TaskEvent;
use devart_domain::user::UserEvent;
use devart_domain::workflow::{RunEvent, WorkflowEvent};
use devart_domain::Event;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("unknown event type {event_type} v{schema_version}")]
    UnknownType { event_type: String, schema_version: u16 },
    /// The payload does not parse as its layout, or holds a value its domain type refuses.
    #[error("malformed {event_type} v{schema_version} payload: {message}")]
    Malformed { event_type: String, schema_version: u16, message: String },
    /// A value stored beside the payload (the stream id, the actor's kind) is none devart writes.
    #[error("{column} `{value}`: {message}")]
    Column { column: &'static str, value: String, message: String },
}

/// Declares every event type: its newest schema version and layout, the older layouts still read
/// (each upcast to the newest by `From`), and the domain event it means. Generates the `Wire`
/// enum that holds any event in its newest layout, its postcard encoding, decoding of every
/// version, and the conversion of a layout into its domain event (`TryFrom` per layout).
macro_rules! wire_events {
    ($($event:ident($version:literal $(, $old:literal: $old_layout:ty)*): $layout:ty => $domain:ty),* $(,)?) => {
        /// An event in its newest wire layout, ready for postcard or JSON.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        pub(crate) enum Wire {
            $($event($layout)),*
        }

        $(
            impl From<$layout> for Wire {
                fn from(layout: $layout) -> Wire {
                    Wire::$event(layout)
                }
            }
        )*

        impl Wire {
            /// The event type and schema version this layout is stored under.
            fn kind(&self) -> (&'static str, u16) {
                match self {
                    $(Wire::$event(_) => (stringify!($event), $version)),*
                }
            }

            fn to_postcard(&self) -> Vec<u8> {
                match self {
                    $(Wire::$event(w) => postcard::to_allocvec(w)),*
                }
                .expect("wire types always encode")
            }

            /// Decodes version `schema_version` of `event_type`, upcast to the newest layout;
            /// `None` for a type or version that never existed.
            fn decode(event_type: &str, schema_version: u16, decoder: &Decoder<'_>) -> Option<Result<Wire, String>> {
                match (event_type, schema_version) {
                    $(
                        (stringify!($event), $version) => Some(decoder.one::<$layout>().map(Wire::$event)),
                        $((stringify!($event), $old) => {
                            Some(decoder.one::<$old_layout>().map(|older| Wire::$event(<$layout>::from(older))))
                        })*
                    )*
                    _ => None,
                }
            }

            /// The domain event this layout means, if its values are ones the domain accepts.
            fn into_event(self) -> Result<Event, String> {
                match self {
                    $(Wire::$event(w) => <$domain>::try_from(w).map(Event::from).map_err(|e| e.to_string())),*
                }
            }
        }

        /// Every event type devart writes.
        pub const EVENT_TYPES: &[&str] = &[$(stringify!($event)),*];

        /// Every older layout still read, as `(event type, schema version)`.
        pub const OLDER_LAYOUTS: &[(&str, u16)] = &[$($((stringify!($event), $old),)*)*];

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
    TaskCreated(3, 1: task::v1::TaskCreated, 2: task::v2::TaskCreated): task::v3::TaskCreated => TaskEvent,
    TaskUpdated(1): task::TaskUpdated => TaskEvent,
    TaskReprioritized(1): task::TaskReprioritized => TaskEvent,
    TaskDeleted(1): task::TaskDeleted => TaskEvent,
    TaskClaimed(1): task::TaskClaimed => TaskEvent,
    TaskLeaseExtended(1): task::TaskLeaseExtended => TaskEvent,
    TaskProgressReported(1): task::TaskProgressReported => TaskEvent,
    TaskCompleted(1): task::TaskCompleted => TaskEvent,
    TaskAttemptFailed(1): task::TaskAttemptFailed => TaskEvent,
    TaskLeaseExpired(1): task::TaskLeaseExpired => TaskEvent,
    TaskReleased(1): task::TaskReleased => TaskEvent,
    TaskFailed(1): task::TaskFailed => TaskEvent,
    TaskCancelled(1): task::TaskCancelled => TaskEvent,
    TaskRetried(1): task::TaskRetried => TaskEvent,
    TaskFlaggedAsCostOutlier(1): task::TaskFlaggedAsCostOutlier => TaskEvent,
    TaskOutlierAcknowledged(1): task::TaskOutlierAcknowledged => TaskEvent,
    TaskApproved(1): task::TaskApproved => TaskEvent,
    TaskRejected(1): task::TaskRejected => TaskEvent,
    TaskMaxCostSet(1): task::TaskMaxCostSet => TaskEvent,
    TaskApprovalRequested(1): task::TaskApprovalRequested => TaskEvent,
    TaskApprovalDecided(1): task::TaskApprovalDecided => TaskEvent,
    AgentRegistered(1): agent::AgentRegistered => AgentEvent,
    AgentKeyRotated(1): agent::AgentKeyRotated => AgentEvent,
    AgentActivated(1): agent::AgentActivated => AgentEvent,
    AgentDeactivated(1): agent::AgentDeactivated => AgentEvent,
    AgentQuarantined(1): agent::AgentQuarantined => AgentEvent,
    AgentDailySpendingCapSet(1): agent::AgentDailySpendingCapSet => AgentEvent,
    WorkflowDefined(2, 1: workflow::v1::WorkflowDefined): workflow::WorkflowDefined => WorkflowEvent,
    WorkflowRunStarted(2, 1: workflow::v1::WorkflowRunStarted): workflow::WorkflowRunStarted => RunEvent,
    WorkflowStageStarted(1): workflow::WorkflowStageStarted => RunEvent,
    WorkflowStageCompleted(1): workflow::WorkflowStageCompleted => RunEvent,
    WorkflowStageFailed(1): workflow::WorkflowStageFailed => RunEvent,
    WorkflowRunCompleted(1): workflow::WorkflowRunCompleted => RunEvent,
    WorkflowRunFailed(1): workflow::WorkflowRunFailed => RunEvent,
    ServiceRegistered(1): service::ServiceRegistered => ServiceEvent,
    ServiceUpdated(1): service::ServiceUpdated => ServiceEvent,
    ServiceBudgetChanged(1): service::ServiceBudgetChanged => ServiceEvent,
    ServiceActivated(1): service::ServiceActivated => ServiceEvent,
    ServiceDeactivated(1): service::ServiceDeactivated => ServiceEvent,
    UsageAuthorized(1): service::UsageAuthorized => ServiceEvent,
    UsageRefused(1): service::UsageRefused => ServiceEvent,
    UsageCharged(1): service::UsageCharged => ServiceEvent,
    ReservationExpired(1): service::ReservationExpired => ServiceEvent,
    BudgetThresholdCrossed(1): service::BudgetThresholdCrossed => ServiceEvent,
    ServiceSuspended(1): service::ServiceSuspended => ServiceEvent,
    ServiceReactivated(1): service::ServiceReactivated => ServiceEvent,
    ServicePeriodStarted(1): service::ServicePeriodStarted => ServiceEvent,
    SettingChanged(1): settings::SettingChanged => SettingsEvent,
    UserCreated(1): user::UserCreated => UserEvent,
    UserRoleChanged(1): user::UserRoleChanged => UserEvent,
    UserDeactivated(1): user::UserDeactivated => UserEvent,
    UserReactivated(1): user::UserReactivated => UserEvent,
    UserPasswordChanged(1): user::UserPasswordChanged => UserEvent,
    ClaimsPaused(1): claims::ClaimsPaused => ClaimsEvent,
    ClaimsResumed(1): claims::ClaimsResumed => ClaimsEvent,
    DocumentAdded(1): document::DocumentAdded => DocumentEvent,
    DocumentUpdated(1): document::DocumentUpdated => DocumentEvent,
    DocumentTagged(1): document::DocumentTagged => DocumentEvent,
    DocumentRemoved(1): document::DocumentRemoved => DocumentEvent,
}

impl From<&Event> for Wire {
    /// Each aggregate's events map to their layouts in that aggregate's module.
    fn from(event: &Event) -> Wire {
        match event.clone() {
            Event::Task(e) => e.into(),
            Event::Agent(e) => e.into(),
            Event::Workflow(e) => e.into(),
            Event::WorkflowRun(e) => e.into(),
            Event::Service(e) => e.into(),
            Event::Settings(e) => e.into(),
            Event::User(e) => e.into(),
            Event::Claims(e) => e.into(),
            Event::Document(e) => e.into(),
        }
    }
}

/// The stored form: `(event_type, schema_version, postcard bytes)`.
pub fn encode(event: &Event) -> (&'static str, u16, Vec<u8>) {
    let wire = Wire::from(event);
    let (event_type, version) = wire.kind();
    (event_type, version, wire.to_postcard())
}

/// The audit and broadcast form: the newest wire layout as JSON (camelCase fields).
pub fn to_json(event: &Event) -> serde_json::Value {
    serde_json::to_value(Wire::from(event)).expect("wire types always serialize")
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
    /// One layout, from the whole input: trailing bytes are as wrong as missing ones.
    fn one<T: for<'de> Deserialize<'de>>(&self) -> Result<T, String> {
        match self {
            Decoder::Postcard(b) => match postcard::take_from_bytes(b) {
                Ok((value, [])) => Ok(value),
                Ok((_, rest)) => Err(format!("{} bytes after the payload", rest.len())),
                Err(e) => Err(e.to_string()),
            },
            Decoder::Json(b) => serde_json::from_slice(b).map_err(|e| e.to_string()),
        }
    }
}

fn decode_with(event_type: &str, schema_version: u16, decoder: &Decoder<'_>) -> Result<Event, CodecError> {
    let Some(decoded) = Wire::decode(event_type, schema_version, decoder) else {
        return Err(CodecError::UnknownType { event_type: event_type.to_owned(), schema_version });
    };
    decoded.and_then(Wire::into_event).map_err(|message| CodecError::Malformed {
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
mod tests;
