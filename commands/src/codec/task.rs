//! The task's events on the wire.

use chrono::{DateTime, Utc};
use devart_domain::outliers::{CostOutlier, Score};
use devart_domain::task::{StageLink, TaskEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::service::Amount;
use super::Wire;

/// The layouts of the first release; `TaskCreated` has grown since (see [`v2`], [`v3`]).
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

pub mod v3 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    /// v2 with the stage's workflow (so that a pause of one workflow knows its tasks) and whether the
    /// task waits for a supervisor's approval.
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
        pub stage: Option<Stage>,
        pub requires_approval: bool,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Stage {
        pub run_id: Uuid,
        pub stage_key: String,
        /// None only for a stage task upcast from v2.
        pub workflow_id: Option<Uuid>,
    }

    impl From<super::v2::TaskCreated> for TaskCreated {
        /// The workflow of a stage task created before v3 was not recorded: it reads as unknown.
        /// Approvals came with v3: an earlier task needed none.
        fn from(v2: super::v2::TaskCreated) -> Self {
            TaskCreated {
                task_id: v2.task_id,
                title: v2.title,
                description: v2.description,
                priority: v2.priority,
                required_capabilities: v2.required_capabilities,
                parent_task_id: v2.parent_task_id,
                max_attempts: v2.max_attempts,
                run_after: v2.run_after,
                input: v2.input,
                stage: v2.stage.map(|s| Stage { run_id: s.run_id, stage_key: s.stage_key, workflow_id: None }),
                requires_approval: false,
            }
        }
    }

    impl From<super::v1::TaskCreated> for TaskCreated {
        fn from(v1: super::v1::TaskCreated) -> Self {
            super::v2::TaskCreated::from(v1).into()
        }
    }
}

/// A v2 stage: the run and the stage's key.
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

/// A statistic: a JSON number (at most six decimals) where people read it, integer millionths in
/// the store, so that it decodes to exactly what was encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure(pub Score);

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
        if d.is_human_readable() {
            f64::deserialize(d).map(|x| Figure(Score::from_f64(x)))
        } else {
            i64::deserialize(d).map(|m| Figure(Score::from_micros(m)))
        }
    }
}

/// The figures a task's cost was judged on (see `devart_domain::outliers`): its cost, the
/// comparable tasks' median and spread, the robust z-score, the threshold it passed, how many
/// tasks it was compared with and which group they form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFlaggedAsCostOutlier {
    pub cost: Amount,
    pub median: Amount,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskApproved {
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRejected {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskMaxCostSet {
    pub max_cost: Amount,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskApprovalRequested {
    pub request_id: Uuid,
    pub agent_id: Uuid,
    pub attempt: u32,
    pub action: String,
    /// A JSON document, as text.
    pub details: Option<String>,
    pub approve_on_timeout: bool,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskApprovalDecided {
    pub request_id: Uuid,
    pub approved: bool,
    pub note: Option<String>,
    pub timed_out: bool,
}

impl From<TaskEvent> for Wire {
    fn from(event: TaskEvent) -> Wire {
        match event {
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
                requires_approval,
            } => v3::TaskCreated {
                task_id: id,
                title,
                description,
                priority,
                required_capabilities,
                parent_task_id,
                max_attempts,
                run_after,
                input,
                stage: stage.map(|s| v3::Stage {
                    run_id: s.run_id,
                    stage_key: s.stage_key,
                    workflow_id: s.workflow_id,
                }),
                requires_approval,
            }
            .into(),
            TaskEvent::Updated { title, description, required_capabilities } => {
                TaskUpdated { title, description, required_capabilities }.into()
            }
            TaskEvent::Reprioritized { from, to } => TaskReprioritized { from, to }.into(),
            TaskEvent::Deleted => TaskDeleted {}.into(),
            TaskEvent::Claimed { agent_id, attempt, lease_expires_at } => {
                TaskClaimed { agent_id, attempt, lease_expires_at }.into()
            }
            TaskEvent::LeaseExtended { agent_id, attempt, lease_expires_at } => {
                TaskLeaseExtended { agent_id, attempt, lease_expires_at }.into()
            }
            TaskEvent::ProgressReported { agent_id, attempt, message, percent } => {
                TaskProgressReported { agent_id, attempt, message, percent }.into()
            }
            TaskEvent::Completed { agent_id, attempt, result } => TaskCompleted { agent_id, attempt, result }.into(),
            TaskEvent::AttemptFailed { agent_id, attempt, error, retry_at } => {
                TaskAttemptFailed { agent_id, attempt, error, retry_at }.into()
            }
            TaskEvent::LeaseExpired { agent_id, attempt, retry_at } => {
                TaskLeaseExpired { agent_id, attempt, retry_at }.into()
            }
            TaskEvent::Released { agent_id, attempt, reason } => TaskReleased { agent_id, attempt, reason }.into(),
            TaskEvent::Failed { failures } => TaskFailed { failures }.into(),
            TaskEvent::Cancelled { reason } => TaskCancelled { reason }.into(),
            TaskEvent::Retried => TaskRetried {}.into(),
            TaskEvent::FlaggedAsCostOutlier(o) => TaskFlaggedAsCostOutlier {
                cost: Amount(o.cost),
                median: Amount(o.median),
                mad: Figure(o.mad),
                z_score: Figure(o.z_score),
                threshold: Figure(o.threshold),
                comparable: o.comparable,
                group: o.group,
            }
            .into(),
            TaskEvent::OutlierAcknowledged { note } => TaskOutlierAcknowledged { note }.into(),
            TaskEvent::Approved { note } => TaskApproved { note }.into(),
            TaskEvent::Rejected { reason } => TaskRejected { reason }.into(),
            TaskEvent::MaxCostSet { max_cost } => TaskMaxCostSet { max_cost: Amount(max_cost) }.into(),
            TaskEvent::ApprovalRequested {
                request_id,
                agent_id,
                attempt,
                action,
                details,
                approve_on_timeout,
                expires_at,
            } => {
                TaskApprovalRequested { request_id, agent_id, attempt, action, details, approve_on_timeout, expires_at }
                    .into()
            }
            TaskEvent::ApprovalDecided { request_id, approved, note, timed_out } => {
                TaskApprovalDecided { request_id, approved, note, timed_out }.into()
            }
        }
    }
}

impl From<v3::TaskCreated> for TaskEvent {
    fn from(w: v3::TaskCreated) -> Self {
        TaskEvent::Created {
            id: w.task_id,
            title: w.title,
            description: w.description,
            priority: w.priority,
            required_capabilities: w.required_capabilities,
            parent_task_id: w.parent_task_id,
            max_attempts: w.max_attempts,
            run_after: w.run_after,
            input: w.input,
            stage: w.stage.map(|s| StageLink { run_id: s.run_id, stage_key: s.stage_key, workflow_id: s.workflow_id }),
            requires_approval: w.requires_approval,
        }
    }
}

impl From<TaskUpdated> for TaskEvent {
    fn from(w: TaskUpdated) -> Self {
        TaskEvent::Updated {
            title: w.title,
            description: w.description,
            required_capabilities: w.required_capabilities,
        }
    }
}

impl From<TaskReprioritized> for TaskEvent {
    fn from(w: TaskReprioritized) -> Self {
        TaskEvent::Reprioritized { from: w.from, to: w.to }
    }
}

impl From<TaskDeleted> for TaskEvent {
    fn from(_: TaskDeleted) -> Self {
        TaskEvent::Deleted
    }
}

impl From<TaskClaimed> for TaskEvent {
    fn from(w: TaskClaimed) -> Self {
        TaskEvent::Claimed { agent_id: w.agent_id, attempt: w.attempt, lease_expires_at: w.lease_expires_at }
    }
}

impl From<TaskLeaseExtended> for TaskEvent {
    fn from(w: TaskLeaseExtended) -> Self {
        TaskEvent::LeaseExtended { agent_id: w.agent_id, attempt: w.attempt, lease_expires_at: w.lease_expires_at }
    }
}

impl From<TaskProgressReported> for TaskEvent {
    fn from(w: TaskProgressReported) -> Self {
        TaskEvent::ProgressReported { agent_id: w.agent_id, attempt: w.attempt, message: w.message, percent: w.percent }
    }
}

impl From<TaskCompleted> for TaskEvent {
    fn from(w: TaskCompleted) -> Self {
        TaskEvent::Completed { agent_id: w.agent_id, attempt: w.attempt, result: w.result }
    }
}

impl From<TaskAttemptFailed> for TaskEvent {
    fn from(w: TaskAttemptFailed) -> Self {
        TaskEvent::AttemptFailed { agent_id: w.agent_id, attempt: w.attempt, error: w.error, retry_at: w.retry_at }
    }
}

impl From<TaskLeaseExpired> for TaskEvent {
    fn from(w: TaskLeaseExpired) -> Self {
        TaskEvent::LeaseExpired { agent_id: w.agent_id, attempt: w.attempt, retry_at: w.retry_at }
    }
}

impl From<TaskReleased> for TaskEvent {
    fn from(w: TaskReleased) -> Self {
        TaskEvent::Released { agent_id: w.agent_id, attempt: w.attempt, reason: w.reason }
    }
}

impl From<TaskFailed> for TaskEvent {
    fn from(w: TaskFailed) -> Self {
        TaskEvent::Failed { failures: w.failures }
    }
}

impl From<TaskCancelled> for TaskEvent {
    fn from(w: TaskCancelled) -> Self {
        TaskEvent::Cancelled { reason: w.reason }
    }
}

impl From<TaskRetried> for TaskEvent {
    fn from(_: TaskRetried) -> Self {
        TaskEvent::Retried
    }
}

impl From<TaskFlaggedAsCostOutlier> for TaskEvent {
    fn from(w: TaskFlaggedAsCostOutlier) -> Self {
        TaskEvent::FlaggedAsCostOutlier(CostOutlier {
            cost: w.cost.0,
            median: w.median.0,
            mad: w.mad.0,
            z_score: w.z_score.0,
            threshold: w.threshold.0,
            comparable: w.comparable,
            group: w.group,
        })
    }
}

impl From<TaskOutlierAcknowledged> for TaskEvent {
    fn from(w: TaskOutlierAcknowledged) -> Self {
        TaskEvent::OutlierAcknowledged { note: w.note }
    }
}

impl From<TaskApproved> for TaskEvent {
    fn from(w: TaskApproved) -> Self {
        TaskEvent::Approved { note: w.note }
    }
}

impl From<TaskRejected> for TaskEvent {
    fn from(w: TaskRejected) -> Self {
        TaskEvent::Rejected { reason: w.reason }
    }
}

impl From<TaskMaxCostSet> for TaskEvent {
    fn from(w: TaskMaxCostSet) -> Self {
        TaskEvent::MaxCostSet { max_cost: w.max_cost.0 }
    }
}

impl From<TaskApprovalRequested> for TaskEvent {
    fn from(w: TaskApprovalRequested) -> Self {
        TaskEvent::ApprovalRequested {
            request_id: w.request_id,
            agent_id: w.agent_id,
            attempt: w.attempt,
            action: w.action,
            details: w.details,
            approve_on_timeout: w.approve_on_timeout,
            expires_at: w.expires_at,
        }
    }
}

impl From<TaskApprovalDecided> for TaskEvent {
    fn from(w: TaskApprovalDecided) -> Self {
        TaskEvent::ApprovalDecided {
            request_id: w.request_id,
            approved: w.approved,
            note: w.note,
            timed_out: w.timed_out,
        }
    }
}
