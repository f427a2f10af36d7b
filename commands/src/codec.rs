//! Serialization at the edge: the versioned wire types of every event.
//!
//! Domain events are not the wire format. Each event type has versioned wire structs (`v1`, …);
//! the store keeps the postcard encoding of the newest version, the bus and the audit trail carry
//! its JSON. Reading an older version upcasts it, so replay never meets a layout it cannot read.

use devart_domain::agent::AgentEvent;
use devart_domain::money::Money;
use devart_domain::outliers::CostOutlier;
use devart_domain::service::ServiceEvent;
use devart_domain::settings::SettingsEvent;
use devart_domain::task::{StageLink, TaskEvent};
use devart_domain::user::{UserEvent, UserRole};
use devart_domain::workflow::{RunEvent, StageSpec, WorkflowEvent};
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

        /// A statistic: a JSON number (at most six decimals) where people read it, integer
        /// millionths in the store, so that it decodes to exactly what was encoded.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct Figure(pub devart_domain::outliers::Score);

        impl Serialize for Figure {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_f64(self.0.get())
                } else {
                    s.serialize_i64(self.0.micros())
                }
            }
        }

        impl<'de> Deserialize<'de> for Figure {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use devart_domain::outliers::Score;
                if d.is_human_readable() {
                    f64::deserialize(d).map(|x| Figure(Score::from_f64(x)))
                } else {
                    i64::deserialize(d).map(|m| Figure(Score::from_micros(m)))
                }
            }
        }

        /// The figures a task's cost was judged on (see `devart_domain::outliers`): its cost, the
        /// comparable tasks' median and spread, the robust z-score, the threshold it passed, how
        /// many tasks it was compared with and which group they form.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct TaskFlaggedAsCostOutlier {
            pub cost: super::service::Amount,
            pub median: super::service::Amount,
            pub mad: Figure,
            pub z_score: Figure,
            pub threshold: Figure,
            pub comparable: u32,
            pub group: String,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct TaskOutlierAcknowledged {
            pub note: String,
        }
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

    pub mod user {
        use serde::{Deserialize, Serialize};
        use uuid::Uuid;

        /// Roles are `viewer`, `supervisor` or `admin`. The password's hash is never in an event.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct UserCreated {
            pub user_id: Uuid,
            pub email: String,
            pub role: String,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct UserRoleChanged {
            pub role: String,
            pub previous: String,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct UserDeactivated {}

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct UserReactivated {}

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct UserPasswordChanged {}
    }

    pub mod workflow {
        use serde::{Deserialize, Serialize};
        use uuid::Uuid;

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct Stage {
            pub key: String,
            pub title: String,
            pub description: String,
            pub priority: u8,
            pub required_capabilities: Vec<String>,
            pub depends_on: Vec<String>,
            pub max_attempts: u32,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct WorkflowDefined {
            pub workflow_id: Uuid,
            pub version: u32,
            pub name: String,
            pub description: String,
            pub stages: Vec<Stage>,
        }

        /// Carries the stages of the version it runs, so the run never depends on the template.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct WorkflowRunStarted {
            pub run_id: Uuid,
            pub workflow_id: Uuid,
            pub workflow_name: String,
            pub workflow_version: u32,
            pub stages: Vec<Stage>,
            /// A JSON document, as text.
            pub input: Option<String>,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct WorkflowStageStarted {
            pub stage_key: String,
            pub task_id: Uuid,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct WorkflowStageCompleted {
            pub stage_key: String,
            pub task_id: Uuid,
            pub result: Option<String>,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct WorkflowStageFailed {
            pub stage_key: String,
            pub task_id: Uuid,
            pub error: String,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct WorkflowRunCompleted {}

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct WorkflowRunFailed {
            pub reason: String,
        }
    }

    pub mod settings {
        use serde::{Deserialize, Serialize};

        /// `value` and `previous` are JSON documents, as text.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct SettingChanged {
            pub key: String,
            pub value: String,
            pub previous: String,
        }
    }

    pub mod service {
        use std::collections::BTreeMap;

        use chrono::{DateTime, Utc};
        use devart_domain::money::Money;
        use devart_domain::service::Period;
        use serde::{Deserialize, Deserializer, Serialize, Serializer};
        use uuid::Uuid;

        /// Amounts travel as decimal strings (`"12.50"`), exact in every language.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct Amount(pub Money);

        impl Serialize for Amount {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for Amount {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Money::parse("amount", &text).map(Amount).map_err(serde::de::Error::custom)
            }
        }

        /// A budget period travels as `"2026-11"`.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct Month(pub Period);

        impl Serialize for Month {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for Month {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Period::parse(&text)
                    .map(Month)
                    .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a month")))
            }
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct ServiceRegistered {
            pub service_id: Uuid,
            pub name: String,
            pub currency: String,
            pub monthly_budget: Amount,
            pub fallback_service_id: Option<Uuid>,
            pub unit_prices: BTreeMap<String, Amount>,
            pub period: Month,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct ServiceUpdated {
            pub name: Option<String>,
            /// Present when the fallback changed; `fallbackServiceId` is then the new one, or none.
            pub fallback_changed: bool,
            pub fallback_service_id: Option<Uuid>,
            pub unit_prices: Option<BTreeMap<String, Amount>>,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct ServiceBudgetChanged {
            pub from: Amount,
            pub to: Amount,
            pub reason: String,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct ServiceActivated {}

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct ServiceDeactivated {}

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct UsageAuthorized {
            pub reservation_id: Uuid,
            pub amount: Amount,
            pub task_id: Option<Uuid>,
            pub agent_id: Option<Uuid>,
            pub requested_service_id: Option<Uuid>,
            pub expires_at: DateTime<Utc>,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct UsageRefused {
            pub amount: Amount,
            pub task_id: Option<Uuid>,
            pub agent_id: Option<Uuid>,
            pub reason: String,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct Units {
            pub unit: String,
            pub count: u64,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct UsageCharged {
            pub charge_id: Uuid,
            pub reservation_id: Option<Uuid>,
            pub amount: Amount,
            pub released: Amount,
            pub units: Option<Units>,
            pub task_id: Option<Uuid>,
            pub agent_id: Option<Uuid>,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct ReservationExpired {
            pub reservation_id: Uuid,
            pub amount: Amount,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct BudgetThresholdCrossed {
            pub threshold: u32,
            pub period: Month,
            pub spent: Amount,
            pub budget: Amount,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct ServiceSuspended {
            pub period: Month,
            pub spent: Amount,
            pub budget: Amount,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct ServiceReactivated {
            pub reason: String,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct ServicePeriodStarted {
            pub period: Month,
        }
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

        /// Every event type devart writes.
        pub const EVENT_TYPES: &[&str] = &[$(stringify!($event)),*];

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
    TaskFlaggedAsCostOutlier(1): wire::task::TaskFlaggedAsCostOutlier,
    TaskOutlierAcknowledged(1): wire::task::TaskOutlierAcknowledged,
    AgentRegistered(1): wire::agent::AgentRegistered,
    AgentKeyRotated(1): wire::agent::AgentKeyRotated,
    AgentActivated(1): wire::agent::AgentActivated,
    AgentDeactivated(1): wire::agent::AgentDeactivated,
    WorkflowDefined(1): wire::workflow::WorkflowDefined,
    WorkflowRunStarted(1): wire::workflow::WorkflowRunStarted,
    WorkflowStageStarted(1): wire::workflow::WorkflowStageStarted,
    WorkflowStageCompleted(1): wire::workflow::WorkflowStageCompleted,
    WorkflowStageFailed(1): wire::workflow::WorkflowStageFailed,
    WorkflowRunCompleted(1): wire::workflow::WorkflowRunCompleted,
    WorkflowRunFailed(1): wire::workflow::WorkflowRunFailed,
    ServiceRegistered(1): wire::service::ServiceRegistered,
    ServiceUpdated(1): wire::service::ServiceUpdated,
    ServiceBudgetChanged(1): wire::service::ServiceBudgetChanged,
    ServiceActivated(1): wire::service::ServiceActivated,
    ServiceDeactivated(1): wire::service::ServiceDeactivated,
    UsageAuthorized(1): wire::service::UsageAuthorized,
    UsageRefused(1): wire::service::UsageRefused,
    UsageCharged(1): wire::service::UsageCharged,
    ReservationExpired(1): wire::service::ReservationExpired,
    BudgetThresholdCrossed(1): wire::service::BudgetThresholdCrossed,
    ServiceSuspended(1): wire::service::ServiceSuspended,
    ServiceReactivated(1): wire::service::ServiceReactivated,
    ServicePeriodStarted(1): wire::service::ServicePeriodStarted,
    SettingChanged(1): wire::settings::SettingChanged,
    UserCreated(1): wire::user::UserCreated,
    UserRoleChanged(1): wire::user::UserRoleChanged,
    UserDeactivated(1): wire::user::UserDeactivated,
    UserReactivated(1): wire::user::UserReactivated,
    UserPasswordChanged(1): wire::user::UserPasswordChanged,
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
            TaskEvent::FlaggedAsCostOutlier(o) => Wire::TaskFlaggedAsCostOutlier(t::TaskFlaggedAsCostOutlier {
                cost: wire::service::Amount(o.cost),
                median: wire::service::Amount(o.median),
                mad: t::Figure(o.mad),
                z_score: t::Figure(o.z_score),
                threshold: t::Figure(o.threshold),
                comparable: o.comparable,
                group: o.group,
            }),
            TaskEvent::OutlierAcknowledged { note } => {
                Wire::TaskOutlierAcknowledged(t::TaskOutlierAcknowledged { note })
            }
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
        Event::Service(e) => service_to_wire(e),
        Event::User(e) => {
            use wire::user as u;
            match e {
                UserEvent::Created { id, email, role } => {
                    Wire::UserCreated(u::UserCreated { user_id: id, email, role: role.as_str().to_owned() })
                }
                UserEvent::RoleChanged { role, previous } => Wire::UserRoleChanged(u::UserRoleChanged {
                    role: role.as_str().to_owned(),
                    previous: previous.as_str().to_owned(),
                }),
                UserEvent::Deactivated => Wire::UserDeactivated(u::UserDeactivated {}),
                UserEvent::Reactivated => Wire::UserReactivated(u::UserReactivated {}),
                UserEvent::PasswordChanged => Wire::UserPasswordChanged(u::UserPasswordChanged {}),
            }
        }
        Event::Settings(SettingsEvent::Changed { key, value, previous }) => {
            Wire::SettingChanged(wire::settings::SettingChanged { key, value, previous })
        }
        Event::Workflow(WorkflowEvent::Defined { id, version, name, description, stages }) => {
            Wire::WorkflowDefined(wire::workflow::WorkflowDefined {
                workflow_id: id,
                version,
                name,
                description,
                stages: stages.into_iter().map(stage_to_wire).collect(),
            })
        }
        Event::WorkflowRun(e) => {
            use wire::workflow as w;
            match e {
                RunEvent::Started { id, workflow_id, workflow_name, workflow_version, stages, input } => {
                    Wire::WorkflowRunStarted(w::WorkflowRunStarted {
                        run_id: id,
                        workflow_id,
                        workflow_name,
                        workflow_version,
                        stages: stages.into_iter().map(stage_to_wire).collect(),
                        input,
                    })
                }
                RunEvent::StageStarted { key, task_id } => {
                    Wire::WorkflowStageStarted(w::WorkflowStageStarted { stage_key: key, task_id })
                }
                RunEvent::StageCompleted { key, task_id, result } => {
                    Wire::WorkflowStageCompleted(w::WorkflowStageCompleted { stage_key: key, task_id, result })
                }
                RunEvent::StageFailed { key, task_id, error } => {
                    Wire::WorkflowStageFailed(w::WorkflowStageFailed { stage_key: key, task_id, error })
                }
                RunEvent::Completed => Wire::WorkflowRunCompleted(w::WorkflowRunCompleted {}),
                RunEvent::Failed { reason } => Wire::WorkflowRunFailed(w::WorkflowRunFailed { reason }),
            }
        }
    }
}

fn service_to_wire(e: ServiceEvent) -> Wire {
    use w::{Amount as A, Month as M};
    use wire::service as w;
    let prices = |p: std::collections::BTreeMap<String, Money>| p.into_iter().map(|(k, v)| (k, A(v))).collect();
    match e {
        ServiceEvent::Registered { id, name, currency, monthly_budget, fallback_service_id, unit_prices, period } => {
            Wire::ServiceRegistered(w::ServiceRegistered {
                service_id: id,
                name,
                currency,
                monthly_budget: A(monthly_budget),
                fallback_service_id,
                unit_prices: prices(unit_prices),
                period: M(period),
            })
        }
        ServiceEvent::Updated { name, fallback_service_id, unit_prices } => Wire::ServiceUpdated(w::ServiceUpdated {
            name,
            fallback_changed: fallback_service_id.is_some(),
            fallback_service_id: fallback_service_id.flatten(),
            unit_prices: unit_prices.map(prices),
        }),
        ServiceEvent::BudgetChanged { from, to, reason } => {
            Wire::ServiceBudgetChanged(w::ServiceBudgetChanged { from: A(from), to: A(to), reason })
        }
        ServiceEvent::Activated => Wire::ServiceActivated(w::ServiceActivated {}),
        ServiceEvent::Deactivated => Wire::ServiceDeactivated(w::ServiceDeactivated {}),
        ServiceEvent::UsageAuthorized {
            reservation_id,
            amount,
            task_id,
            agent_id,
            requested_service_id,
            expires_at,
        } => Wire::UsageAuthorized(w::UsageAuthorized {
            reservation_id,
            amount: A(amount),
            task_id,
            agent_id,
            requested_service_id,
            expires_at,
        }),
        ServiceEvent::UsageRefused { amount, task_id, agent_id, reason } => {
            Wire::UsageRefused(w::UsageRefused { amount: A(amount), task_id, agent_id, reason })
        }
        ServiceEvent::UsageCharged { charge_id, reservation_id, amount, released, units, task_id, agent_id } => {
            Wire::UsageCharged(w::UsageCharged {
                charge_id,
                reservation_id,
                amount: A(amount),
                released: A(released),
                units: units.map(|(unit, count)| w::Units { unit, count }),
                task_id,
                agent_id,
            })
        }
        ServiceEvent::ReservationExpired { reservation_id, amount } => {
            Wire::ReservationExpired(w::ReservationExpired { reservation_id, amount: A(amount) })
        }
        ServiceEvent::BudgetThresholdCrossed { threshold, period, spent, budget } => {
            Wire::BudgetThresholdCrossed(w::BudgetThresholdCrossed {
                threshold,
                period: M(period),
                spent: A(spent),
                budget: A(budget),
            })
        }
        ServiceEvent::Suspended { period, spent, budget } => {
            Wire::ServiceSuspended(w::ServiceSuspended { period: M(period), spent: A(spent), budget: A(budget) })
        }
        ServiceEvent::Reactivated { reason } => Wire::ServiceReactivated(w::ServiceReactivated { reason }),
        ServiceEvent::PeriodStarted { period } => {
            Wire::ServicePeriodStarted(w::ServicePeriodStarted { period: M(period) })
        }
    }
}

/// The service event a wire value holds, if it holds one.
fn service_from_wire(wire: Wire) -> Option<ServiceEvent> {
    let prices =
        |p: std::collections::BTreeMap<String, wire::service::Amount>| p.into_iter().map(|(k, v)| (k, v.0)).collect();
    Some(match wire {
        Wire::ServiceRegistered(w) => ServiceEvent::Registered {
            id: w.service_id,
            name: w.name,
            currency: w.currency,
            monthly_budget: w.monthly_budget.0,
            fallback_service_id: w.fallback_service_id,
            unit_prices: prices(w.unit_prices),
            period: w.period.0,
        },
        Wire::ServiceUpdated(w) => ServiceEvent::Updated {
            name: w.name,
            fallback_service_id: w.fallback_changed.then_some(w.fallback_service_id),
            unit_prices: w.unit_prices.map(prices),
        },
        Wire::ServiceBudgetChanged(w) => ServiceEvent::BudgetChanged { from: w.from.0, to: w.to.0, reason: w.reason },
        Wire::ServiceActivated(_) => ServiceEvent::Activated,
        Wire::ServiceDeactivated(_) => ServiceEvent::Deactivated,
        Wire::UsageAuthorized(w) => ServiceEvent::UsageAuthorized {
            reservation_id: w.reservation_id,
            amount: w.amount.0,
            task_id: w.task_id,
            agent_id: w.agent_id,
            requested_service_id: w.requested_service_id,
            expires_at: w.expires_at,
        },
        Wire::UsageRefused(w) => ServiceEvent::UsageRefused {
            amount: w.amount.0,
            task_id: w.task_id,
            agent_id: w.agent_id,
            reason: w.reason,
        },
        Wire::UsageCharged(w) => ServiceEvent::UsageCharged {
            charge_id: w.charge_id,
            reservation_id: w.reservation_id,
            amount: w.amount.0,
            released: w.released.0,
            units: w.units.map(|u| (u.unit, u.count)),
            task_id: w.task_id,
            agent_id: w.agent_id,
        },
        Wire::ReservationExpired(w) => {
            ServiceEvent::ReservationExpired { reservation_id: w.reservation_id, amount: w.amount.0 }
        }
        Wire::BudgetThresholdCrossed(w) => ServiceEvent::BudgetThresholdCrossed {
            threshold: w.threshold,
            period: w.period.0,
            spent: w.spent.0,
            budget: w.budget.0,
        },
        Wire::ServiceSuspended(w) => {
            ServiceEvent::Suspended { period: w.period.0, spent: w.spent.0, budget: w.budget.0 }
        }
        Wire::ServiceReactivated(w) => ServiceEvent::Reactivated { reason: w.reason },
        Wire::ServicePeriodStarted(w) => ServiceEvent::PeriodStarted { period: w.period.0 },
        _ => return None,
    })
}

fn stage_to_wire(s: StageSpec) -> wire::workflow::Stage {
    wire::workflow::Stage {
        key: s.key,
        title: s.title,
        description: s.description,
        priority: s.priority,
        required_capabilities: s.required_capabilities,
        depends_on: s.depends_on,
        max_attempts: s.max_attempts,
    }
}

/// Roles on the wire are only ever written from [`UserRole::as_str`]; anything else reads as the
/// least privileged one.
fn role_from_wire(role: &str) -> UserRole {
    UserRole::parse(role).unwrap_or(UserRole::Viewer)
}

fn stage_from_wire(s: wire::workflow::Stage) -> StageSpec {
    StageSpec {
        key: s.key,
        title: s.title,
        description: s.description,
        priority: s.priority,
        required_capabilities: s.required_capabilities,
        depends_on: s.depends_on,
        max_attempts: s.max_attempts,
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
        Wire::TaskFlaggedAsCostOutlier(w) => task(TaskEvent::FlaggedAsCostOutlier(CostOutlier {
            cost: w.cost.0,
            median: w.median.0,
            mad: w.mad.0,
            z_score: w.z_score.0,
            threshold: w.threshold.0,
            comparable: w.comparable,
            group: w.group,
        })),
        Wire::TaskOutlierAcknowledged(w) => task(TaskEvent::OutlierAcknowledged { note: w.note }),
        Wire::AgentRegistered(w) => Event::Agent(AgentEvent::Registered {
            id: w.agent_id,
            name: w.name,
            capabilities: w.capabilities,
            key_id: w.key_id,
        }),
        Wire::AgentKeyRotated(w) => Event::Agent(AgentEvent::KeyRotated { key_id: w.key_id }),
        Wire::AgentActivated(_) => Event::Agent(AgentEvent::Activated),
        Wire::AgentDeactivated(_) => Event::Agent(AgentEvent::Deactivated),
        Wire::WorkflowDefined(w) => Event::Workflow(WorkflowEvent::Defined {
            id: w.workflow_id,
            version: w.version,
            name: w.name,
            description: w.description,
            stages: w.stages.into_iter().map(stage_from_wire).collect(),
        }),
        Wire::WorkflowRunStarted(w) => Event::WorkflowRun(RunEvent::Started {
            id: w.run_id,
            workflow_id: w.workflow_id,
            workflow_name: w.workflow_name,
            workflow_version: w.workflow_version,
            stages: w.stages.into_iter().map(stage_from_wire).collect(),
            input: w.input,
        }),
        Wire::WorkflowStageStarted(w) => {
            Event::WorkflowRun(RunEvent::StageStarted { key: w.stage_key, task_id: w.task_id })
        }
        Wire::WorkflowStageCompleted(w) => {
            Event::WorkflowRun(RunEvent::StageCompleted { key: w.stage_key, task_id: w.task_id, result: w.result })
        }
        Wire::WorkflowStageFailed(w) => {
            Event::WorkflowRun(RunEvent::StageFailed { key: w.stage_key, task_id: w.task_id, error: w.error })
        }
        Wire::WorkflowRunCompleted(_) => Event::WorkflowRun(RunEvent::Completed),
        Wire::WorkflowRunFailed(w) => Event::WorkflowRun(RunEvent::Failed { reason: w.reason }),
        Wire::SettingChanged(w) => {
            Event::Settings(SettingsEvent::Changed { key: w.key, value: w.value, previous: w.previous })
        }
        Wire::UserCreated(w) => {
            Event::User(UserEvent::Created { id: w.user_id, email: w.email, role: role_from_wire(&w.role) })
        }
        Wire::UserRoleChanged(w) => {
            Event::User(UserEvent::RoleChanged { role: role_from_wire(&w.role), previous: role_from_wire(&w.previous) })
        }
        Wire::UserDeactivated(_) => Event::User(UserEvent::Deactivated),
        Wire::UserReactivated(_) => Event::User(UserEvent::Reactivated),
        Wire::UserPasswordChanged(_) => Event::User(UserEvent::PasswordChanged),
        other => Event::Service(service_from_wire(other).expect("every other wire type is matched above")),
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
    use devart_domain::outliers::Score;

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
            Event::Task(TaskEvent::FlaggedAsCostOutlier(CostOutlier {
                cost: Money::parse("cost", "31.25").unwrap(),
                median: Money::parse("median", "0.875").unwrap(),
                mad: Score::from_micros(481_225),
                z_score: Score::from_micros(7_438_112),
                threshold: Score::from_micros(3_500_000),
                comparable: 40,
                group: "stage:release/build".into(),
            })),
            Event::Task(TaskEvent::OutlierAcknowledged { note: "a one-off migration".into() }),
            Event::Agent(AgentEvent::Registered {
                id: Uuid::from_u128(3),
                name: "builder".into(),
                capabilities: vec!["rust".into()],
                key_id: "k".into(),
            }),
            Event::Agent(AgentEvent::KeyRotated { key_id: "k2".into() }),
            Event::Agent(AgentEvent::Deactivated),
            Event::Agent(AgentEvent::Activated),
            Event::Workflow(WorkflowEvent::Defined {
                id: Uuid::from_u128(4),
                version: 2,
                name: "release".into(),
                description: "ship it".into(),
                stages: vec![stage("a", &[]), stage("b", &["a"])],
            }),
            Event::WorkflowRun(RunEvent::Started {
                id: Uuid::from_u128(5),
                workflow_id: Uuid::from_u128(4),
                workflow_name: "release".into(),
                workflow_version: 2,
                stages: vec![stage("a", &[])],
                input: Some("{}".into()),
            }),
            Event::WorkflowRun(RunEvent::StageStarted { key: "a".into(), task_id: Uuid::from_u128(6) }),
            Event::WorkflowRun(RunEvent::StageCompleted {
                key: "a".into(),
                task_id: Uuid::from_u128(6),
                result: Some("1".into()),
            }),
            Event::WorkflowRun(RunEvent::StageFailed {
                key: "b".into(),
                task_id: Uuid::from_u128(7),
                error: "boom".into(),
            }),
            Event::WorkflowRun(RunEvent::Completed),
            Event::WorkflowRun(RunEvent::Failed { reason: "stage `b` failed: boom".into() }),
        ]
        .into_iter()
        .chain(service_samples())
        .chain([Event::Settings(SettingsEvent::Changed {
            key: "queue.defaultLeaseSeconds".into(),
            value: "60".into(),
            previous: "30".into(),
        })])
        .chain([
            Event::User(UserEvent::Created {
                id: Uuid::from_u128(9),
                email: "ada@example.org".into(),
                role: UserRole::Supervisor,
            }),
            Event::User(UserEvent::RoleChanged { role: UserRole::Admin, previous: UserRole::Supervisor }),
            Event::User(UserEvent::Deactivated),
            Event::User(UserEvent::Reactivated),
            Event::User(UserEvent::PasswordChanged),
        ])
        .chain(sparse_samples())
        .collect()
    }

    /// Samples with the other side of every option: nothing where the ones above have something,
    /// and the roles the ones above leave out.
    fn sparse_samples() -> Vec<Event> {
        let m = |s: &str| Money::parse("amount", s).unwrap();
        vec![
            Event::Task(TaskEvent::Created {
                id: Uuid::from_u128(21),
                title: "minimal".into(),
                description: String::new(),
                priority: 1,
                required_capabilities: vec![],
                parent_task_id: None,
                max_attempts: 1,
                run_after: None,
                input: None,
                stage: None,
            }),
            Event::Task(TaskEvent::Updated {
                title: Some("renamed".into()),
                description: None,
                required_capabilities: Some(vec!["docs".into(), "rust".into()]),
            }),
            Event::Task(TaskEvent::ProgressReported {
                agent_id: agent(),
                attempt: 3,
                message: "still going".into(),
                percent: None,
            }),
            Event::Task(TaskEvent::Completed { agent_id: agent(), attempt: 2, result: None }),
            Event::Task(TaskEvent::AttemptFailed {
                agent_id: agent(),
                attempt: 3,
                error: "gave up".into(),
                retry_at: None,
            }),
            Event::Task(TaskEvent::LeaseExpired { agent_id: agent(), attempt: 1, retry_at: Some(at()) }),
            Event::Task(TaskEvent::Cancelled { reason: None }),
            Event::Agent(AgentEvent::Registered {
                id: Uuid::from_u128(23),
                name: "generalist".into(),
                capabilities: vec![],
                key_id: "k3".into(),
            }),
            Event::Workflow(WorkflowEvent::Defined {
                id: Uuid::from_u128(24),
                version: 1,
                name: "one".into(),
                description: String::new(),
                stages: vec![stage("only", &[])],
            }),
            Event::WorkflowRun(RunEvent::Started {
                id: Uuid::from_u128(25),
                workflow_id: Uuid::from_u128(24),
                workflow_name: "one".into(),
                workflow_version: 1,
                stages: vec![stage("only", &[])],
                input: None,
            }),
            Event::WorkflowRun(RunEvent::StageCompleted {
                key: "only".into(),
                task_id: Uuid::from_u128(26),
                result: None,
            }),
            Event::Service(ServiceEvent::Registered {
                id: Uuid::from_u128(27),
                name: "free".into(),
                currency: "EUR".into(),
                monthly_budget: m("0"),
                fallback_service_id: None,
                unit_prices: Default::default(),
                period: devart_domain::service::Period { year: 2027, month: 1 },
            }),
            Event::Service(ServiceEvent::Updated {
                name: None,
                fallback_service_id: Some(Some(Uuid::from_u128(8))),
                unit_prices: Some(Default::default()),
            }),
            Event::Service(ServiceEvent::UsageAuthorized {
                reservation_id: Uuid::from_u128(28),
                amount: m("0.000001"),
                task_id: None,
                agent_id: None,
                requested_service_id: None,
                expires_at: at(),
            }),
            Event::Service(ServiceEvent::UsageRefused {
                amount: m("1000000"),
                task_id: Some(Uuid::from_u128(1)),
                agent_id: Some(agent()),
                reason: "suspended".into(),
            }),
            Event::Service(ServiceEvent::UsageCharged {
                charge_id: Uuid::from_u128(29),
                reservation_id: None,
                amount: m("3.5"),
                released: m("0"),
                units: None,
                task_id: Some(Uuid::from_u128(1)),
                agent_id: None,
            }),
            Event::User(UserEvent::Created {
                id: Uuid::from_u128(30),
                email: "vera@example.org".into(),
                role: UserRole::Viewer,
            }),
            Event::User(UserEvent::Created {
                id: Uuid::from_u128(31),
                email: "root@example.org".into(),
                role: UserRole::Admin,
            }),
            Event::User(UserEvent::RoleChanged { role: UserRole::Viewer, previous: UserRole::Admin }),
        ]
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The v1 layouts of event types that have a newer one, as the first release wrote them.
    fn older_layouts() -> Vec<(&'static str, u16, Vec<u8>, serde_json::Value)> {
        let v1 = wire::task::v1::TaskCreated {
            task_id: Uuid::from_u128(41),
            title: "from the first release".into(),
            description: "d".into(),
            priority: 4,
            required_capabilities: vec!["rust".into()],
            parent_task_id: Some(Uuid::from_u128(42)),
        };
        vec![("TaskCreated", 1, postcard::to_allocvec(&v1).unwrap(), serde_json::to_value(&v1).unwrap())]
    }

    fn captured() -> serde_json::Value {
        let current: Vec<serde_json::Value> = samples()
            .iter()
            .map(|event| {
                let (ty, v, bytes) = encode(event);
                serde_json::json!({ "type": ty, "schemaVersion": v, "postcard": hex(&bytes), "json": to_json(event) })
            })
            .collect();
        let older: Vec<serde_json::Value> = older_layouts()
            .into_iter()
            .map(|(ty, v, bytes, json)| {
                serde_json::json!({ "type": ty, "schemaVersion": v, "postcard": hex(&bytes), "json": json })
            })
            .collect();
        serde_json::json!({ "current": current, "older": older })
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    /// What each of [`older_layouts`] reads as today.
    fn upcast_older() -> Vec<Event> {
        vec![Event::Task(TaskEvent::Created {
            id: Uuid::from_u128(41),
            title: "from the first release".into(),
            description: "d".into(),
            priority: 4,
            required_capabilities: vec!["rust".into()],
            parent_task_id: Some(Uuid::from_u128(42)),
            max_attempts: 3,
            run_after: None,
            input: None,
            stage: None,
        })]
    }

    /// The stored bytes and the JSON of every sample, and of the older layouts, as they were
    /// captured once (`tests/fixtures/wire_samples.json`): whatever the codec becomes, existing
    /// databases, streams and exports keep decoding to the same events, and new writes match them.
    #[test]
    fn the_stored_and_broadcast_forms_are_as_captured() {
        let golden: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/wire_samples.json")).unwrap();
        let now = captured();
        for part in ["current", "older"] {
            let (then, now) = (golden[part].as_array().unwrap(), now[part].as_array().unwrap());
            assert_eq!(then.len(), now.len(), "{part}: as many samples as captured");
            for (i, (then, now)) in then.iter().zip(now).enumerate() {
                assert_eq!(now, then, "{part} sample {i}");
            }
        }
        let expected = samples().into_iter().zip(golden["current"].as_array().unwrap());
        let older = upcast_older().into_iter().zip(golden["older"].as_array().unwrap());
        for (event, then) in expected.chain(older) {
            let (ty, v) = (then["type"].as_str().unwrap(), then["schemaVersion"].as_u64().unwrap() as u16);
            assert_eq!(decode(ty, v, &unhex(then["postcard"].as_str().unwrap())).unwrap(), event);
            assert_eq!(from_json(ty, v, &serde_json::to_vec(&then["json"]).unwrap()).unwrap(), event);
        }
    }

    fn service_samples() -> Vec<Event> {
        use devart_domain::service::Period;
        let m = |s: &str| Money::parse("amount", s).unwrap();
        let period = Period { year: 2026, month: 11 };
        let prices: std::collections::BTreeMap<String, Money> = [("token".to_owned(), m("0.000015"))].into();
        [
            ServiceEvent::Registered {
                id: Uuid::from_u128(8),
                name: "llm".into(),
                currency: "USD".into(),
                monthly_budget: m("100"),
                fallback_service_id: Some(Uuid::from_u128(9)),
                unit_prices: prices.clone(),
                period,
            },
            ServiceEvent::Updated { name: None, fallback_service_id: Some(None), unit_prices: Some(prices) },
            ServiceEvent::Updated { name: Some("x".into()), fallback_service_id: None, unit_prices: None },
            ServiceEvent::BudgetChanged { from: m("100"), to: m("150.5"), reason: "why".into() },
            ServiceEvent::Activated,
            ServiceEvent::Deactivated,
            ServiceEvent::UsageAuthorized {
                reservation_id: Uuid::from_u128(10),
                amount: m("1.25"),
                task_id: Some(Uuid::from_u128(1)),
                agent_id: Some(agent()),
                requested_service_id: Some(Uuid::from_u128(9)),
                expires_at: at(),
            },
            ServiceEvent::UsageRefused { amount: m("2"), task_id: None, agent_id: None, reason: "full".into() },
            ServiceEvent::UsageCharged {
                charge_id: Uuid::from_u128(11),
                reservation_id: Some(Uuid::from_u128(10)),
                amount: m("1"),
                released: m("0.25"),
                units: Some(("token".into(), 66_666)),
                task_id: None,
                agent_id: Some(agent()),
            },
            ServiceEvent::ReservationExpired { reservation_id: Uuid::from_u128(10), amount: m("1.25") },
            ServiceEvent::BudgetThresholdCrossed { threshold: 80, period, spent: m("80"), budget: m("100") },
            ServiceEvent::Suspended { period, spent: m("100"), budget: m("100") },
            ServiceEvent::Reactivated { reason: "new month".into() },
            ServiceEvent::PeriodStarted { period },
        ]
        .into_iter()
        .map(Event::Service)
        .collect()
    }

    fn stage(key: &str, depends_on: &[&str]) -> StageSpec {
        StageSpec {
            key: key.into(),
            title: format!("stage {key}"),
            description: String::new(),
            priority: 3,
            required_capabilities: vec!["rust".into()],
            depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
            max_attempts: 2,
        }
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
    fn amounts_travel_as_decimal_strings() {
        let json = to_json(&service_samples()[3]);
        assert_eq!(json, serde_json::json!({ "from": "100.00", "to": "150.50", "reason": "why" }));
        let bad = br#"{"from": 1.5, "to": "2", "reason": ""}"#;
        assert!(from_json("ServiceBudgetChanged", 1, bad).is_err());
    }

    #[test]
    fn statistics_are_json_numbers_and_amounts_strings() {
        let flagged = samples().into_iter().find(|e| e.event_type() == "TaskFlaggedAsCostOutlier").unwrap();
        assert_eq!(
            to_json(&flagged),
            serde_json::json!({
                "cost": "31.25", "median": "0.875", "mad": 0.481225, "zScore": 7.438112, "threshold": 3.5,
                "comparable": 40, "group": "stage:release/build"
            })
        );
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
