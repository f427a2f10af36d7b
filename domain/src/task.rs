//! The task aggregate: a unit of work that supervisors create and agents carry out.
//!
//! Somewhat over 600 lines: the commands, the events, `decide` and `evolve` stay in one file, as
//! each event's meaning is read in both; the value types are in `values`, the tests in `tests`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainError};
use crate::claims::ClaimsState;
use crate::money::Money;
use crate::outliers::CostOutlier;

mod values;

pub use values::{Capabilities, Capability, Description, Document, MaxAttempts, Message, Percent, Priority, Title};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Not created yet: the state before a stream's first event.
    #[default]
    Absent,
    /// Created with `requires_approval`: waits for a supervisor to approve it (then it is
    /// pending) or reject it. Never claimable before.
    AwaitingApproval,
    Pending,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    /// A supervisor refused the task before any work on it; final.
    Rejected,
    Deleted,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Absent => "ABSENT",
            TaskStatus::AwaitingApproval => "AWAITING_APPROVAL",
            TaskStatus::Pending => "PENDING",
            TaskStatus::InProgress => "IN_PROGRESS",
            TaskStatus::Completed => "COMPLETED",
            TaskStatus::Failed => "FAILED",
            TaskStatus::Cancelled => "CANCELLED",
            TaskStatus::Rejected => "REJECTED",
            TaskStatus::Deleted => "DELETED",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        Some(match s {
            "ABSENT" => TaskStatus::Absent,
            "AWAITING_APPROVAL" => TaskStatus::AwaitingApproval,
            "PENDING" => TaskStatus::Pending,
            "IN_PROGRESS" => TaskStatus::InProgress,
            "COMPLETED" => TaskStatus::Completed,
            "FAILED" => TaskStatus::Failed,
            "CANCELLED" => TaskStatus::Cancelled,
            "REJECTED" => TaskStatus::Rejected,
            "DELETED" => TaskStatus::Deleted,
            _ => return None,
        })
    }

    /// Whether the task's work is over; such a task's content no longer changes.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::Cancelled
                | TaskStatus::Rejected
                | TaskStatus::Deleted
        )
    }
}

/// The workflow run stage a task carries out.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct StageLink {
    pub run_id: Uuid,
    pub stage_key: String,
    /// The run's workflow; unknown (`None`) for tasks created before it was recorded.
    pub workflow_id: Option<Uuid>,
}

/// The agent working a task, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Lease {
    pub agent_id: Uuid,
    pub attempt: u32,
    pub expires_at: DateTime<Utc>,
}

/// Why an attempt ended without completing the task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct AttemptError {
    pub attempt: u32,
    pub agent_id: Uuid,
    pub error: String,
}

/// The last progress an agent reported.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Progress {
    pub message: String,
    pub percent: Option<u8>,
}

/// A task's cost as flagged, and whether a supervisor acknowledged the flag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct OutlierMark {
    pub outlier: CostOutlier,
    /// The supervisor's note, once acknowledged.
    pub acknowledged: Option<String>,
}

/// An agent's request for a supervisor's approval of a risky step in a task it works on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ApprovalRequest {
    pub request_id: Uuid,
    pub agent_id: Uuid,
    /// The attempt it was asked in.
    pub attempt: u32,
    /// What the agent means to do, in a line.
    pub action: String,
    /// A JSON document with whatever the supervisor needs to judge it.
    pub details: Option<String>,
    /// What it comes to when nobody answers by `expires_at`.
    pub approve_on_timeout: bool,
    pub expires_at: DateTime<Utc>,
    /// `None` while pending.
    pub decision: Option<ApprovalDecision>,
}

/// How a request for approval was answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ApprovalDecision {
    pub approved: bool,
    pub note: Option<String>,
    /// Nobody answered in time: `approved` is the request's default.
    pub timed_out: bool,
}

impl TaskState {
    /// The request for approval `request_id`, if it was made.
    pub fn approval(&self, request_id: Uuid) -> Option<&ApprovalRequest> {
        self.approvals.iter().find(|a| a.request_id == request_id)
    }

    /// When the first pending request for approval runs out; `None` with none pending.
    pub fn approval_due(&self) -> Option<DateTime<Utc>> {
        self.approvals.iter().filter(|a| a.decision.is_none()).map(|a| a.expires_at).min()
    }
}

/// How many requests for approval a task keeps; an agent asking for more is refused.
pub const APPROVALS_MAX: usize = 100;

/// The first delay before a retry; each failure doubles it, up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: chrono::TimeDelta = chrono::TimeDelta::seconds(1);
pub const BACKOFF_MAX: chrono::TimeDelta = chrono::TimeDelta::minutes(10);
/// The error an attempt records when its agent stopped renewing the lease.
pub const LEASE_EXPIRED: &str = "lease expired";

/// The delay before retrying after the `failures`-th failure: exponential, capped, with "equal
/// jitter": half of it fixed, half scaled by `jitter` (0 to 1), so that tasks that failed together
/// do not all come back at once.
pub fn backoff(failures: u32, jitter: f64) -> chrono::TimeDelta {
    let exponent = failures.saturating_sub(1).min(20);
    let full = (BACKOFF_BASE * 2i32.pow(exponent)).min(BACKOFF_MAX);
    let half = full / 2;
    let jitter = jitter.clamp(0.0, 1.0);
    half + chrono::TimeDelta::microseconds((half.num_microseconds().unwrap_or(0) as f64 * jitter) as i64)
}

/// A task as its events leave it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct TaskState {
    pub id: Uuid,
    pub status: TaskStatus,
    pub title: String,
    pub description: String,
    pub priority: u8,
    pub required_capabilities: Vec<String>,
    pub parent_task_id: Option<Uuid>,
    pub max_attempts: u32,
    /// Not claimable before this time (a delayed task, or one waiting out its retry backoff).
    pub run_after: Option<DateTime<Utc>>,
    pub input: Option<String>,
    pub stage: Option<StageLink>,
    /// Attempts started and not given back: the number of the current or last claim. A released
    /// claim (its agent was stopped or deactivated) is given back and not counted.
    pub attempt: u32,
    /// Attempts failed since the task was created or last retried; `max_attempts` of them fail it.
    pub failures: u32,
    pub lease: Option<Lease>,
    pub progress: Option<Progress>,
    /// Every failed attempt's error, oldest first.
    pub errors: Vec<AttemptError>,
    /// What may be settled and reserved for the task at most, across all services; none: no cap
    /// but the services' budgets.
    #[serde(serialize_with = "crate::money::optional_decimal")]
    pub max_cost: Option<Money>,
    /// Every request for approval its agents made, oldest first.
    pub approvals: Vec<ApprovalRequest>,
    pub result: Option<String>,
    /// The last cost-outlier flag.
    pub cost_outlier: Option<OutlierMark>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTask {
    pub id: Uuid,
    pub title: Title,
    pub description: Description,
    pub priority: Priority,
    pub required_capabilities: Capabilities,
    /// Checked to exist by the write side before deciding.
    pub parent_task_id: Option<Uuid>,
    pub max_attempts: MaxAttempts,
    pub run_after: Option<DateTime<Utc>>,
    pub input: Option<Document>,
    pub stage: Option<StageLink>,
    /// The task waits for a supervisor's approval before it can be claimed.
    pub requires_approval: bool,
    /// A cap on what may be spent for the task (see [`TaskState::max_cost`]).
    pub max_cost: Option<Money>,
}

impl CreateTask {
    /// A task with the defaults: priority 3, no capabilities, no parent, 3 attempts, runnable now.
    pub fn new(id: Uuid, title: Title) -> CreateTask {
        CreateTask {
            id,
            title,
            description: Description::default(),
            priority: Priority::DEFAULT,
            required_capabilities: Capabilities::default(),
            parent_task_id: None,
            max_attempts: MaxAttempts::DEFAULT,
            run_after: None,
            input: None,
            stage: None,
            requires_approval: false,
            max_cost: None,
        }
    }
}

/// A change to a task's content; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateTask {
    pub title: Option<Title>,
    pub description: Option<Description>,
    pub priority: Option<Priority>,
    pub required_capabilities: Option<Capabilities>,
}

/// What can be done to a task. Times come from the write side's clock, randomness from its
/// generator: the decision itself reads neither.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskCommand {
    Create(CreateTask),
    Update(UpdateTask),
    Reprioritize(Priority),
    Delete,
    /// An agent takes the task; the write side picked it from the queue.
    Claim {
        agent_id: Uuid,
        now: DateTime<Utc>,
        lease_expires_at: DateTime<Utc>,
    },
    /// The lease holder keeps the task, unless a pause that stops work under way covers it:
    /// then the task is released and its agent told to stop. The write side puts the pauses in.
    Heartbeat {
        agent_id: Uuid,
        lease_expires_at: DateTime<Utc>,
        pauses: ClaimsState,
    },
    ReportProgress {
        agent_id: Uuid,
        message: Message,
        percent: Option<Percent>,
    },
    Complete {
        agent_id: Uuid,
        result: Option<Document>,
    },
    Fail {
        agent_id: Uuid,
        error: Message,
        retryable: bool,
        now: DateTime<Utc>,
        jitter: f64,
    },
    /// The lease ran out at `now` without a heartbeat.
    ExpireLease {
        now: DateTime<Utc>,
        jitter: f64,
    },
    /// The agent can no longer work (deactivated): the task goes back to the queue as it was.
    Release {
        agent_id: Uuid,
        reason: String,
    },
    Cancel {
        reason: Option<String>,
    },
    /// A failed task gets a fresh set of attempts.
    Retry,
    /// The task's cost is unusual against comparable tasks; the detector judged it (see
    /// [`crate::outliers`]). A task is flagged once: again only after the flag was acknowledged and
    /// its cost has grown since.
    FlagCostOutlier(CostOutlier),
    /// A supervisor has looked at the flagged cost.
    AcknowledgeOutlier {
        note: Message,
    },
    /// A supervisor lets a task awaiting approval be claimed.
    Approve {
        note: Option<Message>,
    },
    /// A supervisor refuses a task awaiting approval, for good.
    Reject {
        reason: Message,
    },
    /// A supervisor caps what may be spent for the task, or changes its cap.
    SetMaxCost {
        max_cost: Money,
    },
    /// The lease holder asks a supervisor to approve a risky step before it takes it.
    RequestApproval {
        agent_id: Uuid,
        request_id: Uuid,
        action: Message,
        details: Option<Document>,
        approve_on_timeout: bool,
        expires_at: DateTime<Utc>,
    },
    /// A supervisor answers a pending request for approval.
    DecideApproval {
        request_id: Uuid,
        approved: bool,
        note: Option<Message>,
    },
    /// Pending requests that ran out by `now` come to their defaults.
    TimeOutApprovals {
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    Created {
        id: Uuid,
        title: String,
        description: String,
        priority: u8,
        required_capabilities: Vec<String>,
        parent_task_id: Option<Uuid>,
        max_attempts: u32,
        run_after: Option<DateTime<Utc>>,
        input: Option<String>,
        stage: Option<StageLink>,
        /// It waits for a supervisor's approval before it can be claimed.
        requires_approval: bool,
    },
    /// Only the fields that changed are `Some`.
    Updated {
        title: Option<String>,
        description: Option<String>,
        required_capabilities: Option<Vec<String>>,
    },
    Reprioritized {
        from: u8,
        to: u8,
    },
    Deleted,
    Claimed {
        agent_id: Uuid,
        attempt: u32,
        lease_expires_at: DateTime<Utc>,
    },
    LeaseExtended {
        agent_id: Uuid,
        attempt: u32,
        lease_expires_at: DateTime<Utc>,
    },
    ProgressReported {
        agent_id: Uuid,
        attempt: u32,
        message: String,
        percent: Option<u8>,
    },
    Completed {
        agent_id: Uuid,
        attempt: u32,
        result: Option<String>,
    },
    /// An attempt failed; with `retry_at`, the task is queued again from then.
    AttemptFailed {
        agent_id: Uuid,
        attempt: u32,
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
    /// The lease ran out: a failed attempt, queued again from `retry_at` if attempts remain.
    LeaseExpired {
        agent_id: Uuid,
        attempt: u32,
        retry_at: Option<DateTime<Utc>>,
    },
    /// The agent let go without failing (it was deactivated, or a pause stopped its work): queued
    /// again at once, neither a failure nor an attempt counted.
    Released {
        agent_id: Uuid,
        attempt: u32,
        reason: String,
    },
    /// No attempts remain, or the last error was not worth retrying: the task is dead.
    Failed {
        failures: u32,
    },
    Cancelled {
        reason: Option<String>,
    },
    Retried,
    /// The task's cost stands out against comparable tasks: the figures say by how much. Changes
    /// nothing about the task's work.
    FlaggedAsCostOutlier(CostOutlier),
    OutlierAcknowledged {
        note: String,
    },
    /// A supervisor approved the task: it waits in the queue from now on.
    Approved {
        note: Option<String>,
    },
    /// A supervisor rejected the task: it is over, never claimed.
    Rejected {
        reason: String,
    },
    /// What may be settled and reserved for the task from now on, at most: authorizations that
    /// would pass it are refused. A cap below what is spent already refuses every further one.
    MaxCostSet {
        max_cost: Money,
    },
    /// The agent working the task asks a supervisor to approve a step (`action`) before it takes
    /// it; unanswered by `expires_at`, it is approved or denied as `approve_on_timeout` says.
    ApprovalRequested {
        request_id: Uuid,
        agent_id: Uuid,
        attempt: u32,
        action: String,
        details: Option<String>,
        approve_on_timeout: bool,
        expires_at: DateTime<Utc>,
    },
    /// A request for approval was answered: by a supervisor, or by its default when it ran out
    /// (`timed_out`).
    ApprovalDecided {
        request_id: Uuid,
        approved: bool,
        note: Option<String>,
        timed_out: bool,
    },
}

impl TaskEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            TaskEvent::Created { .. } => "TaskCreated",
            TaskEvent::Updated { .. } => "TaskUpdated",
            TaskEvent::Reprioritized { .. } => "TaskReprioritized",
            TaskEvent::Deleted => "TaskDeleted",
            TaskEvent::Claimed { .. } => "TaskClaimed",
            TaskEvent::LeaseExtended { .. } => "TaskLeaseExtended",
            TaskEvent::ProgressReported { .. } => "TaskProgressReported",
            TaskEvent::Completed { .. } => "TaskCompleted",
            TaskEvent::AttemptFailed { .. } => "TaskAttemptFailed",
            TaskEvent::LeaseExpired { .. } => "TaskLeaseExpired",
            TaskEvent::Released { .. } => "TaskReleased",
            TaskEvent::Failed { .. } => "TaskFailed",
            TaskEvent::Cancelled { .. } => "TaskCancelled",
            TaskEvent::Retried => "TaskRetried",
            TaskEvent::FlaggedAsCostOutlier(_) => "TaskFlaggedAsCostOutlier",
            TaskEvent::OutlierAcknowledged { .. } => "TaskOutlierAcknowledged",
            TaskEvent::Approved { .. } => "TaskApproved",
            TaskEvent::Rejected { .. } => "TaskRejected",
            TaskEvent::MaxCostSet { .. } => "TaskMaxCostSet",
            TaskEvent::ApprovalRequested { .. } => "TaskApprovalRequested",
            TaskEvent::ApprovalDecided { .. } => "TaskApprovalDecided",
        }
    }

    /// The agent the event is about, for lifecycle events.
    pub fn agent_id(&self) -> Option<Uuid> {
        match self {
            TaskEvent::Claimed { agent_id, .. }
            | TaskEvent::LeaseExtended { agent_id, .. }
            | TaskEvent::ProgressReported { agent_id, .. }
            | TaskEvent::Completed { agent_id, .. }
            | TaskEvent::AttemptFailed { agent_id, .. }
            | TaskEvent::LeaseExpired { agent_id, .. }
            | TaskEvent::Released { agent_id, .. } => Some(*agent_id),
            _ => None,
        }
    }
}

pub struct Task;

impl Aggregate for Task {
    const KIND: &'static str = "task";
    type State = TaskState;
    type Command = TaskCommand;
    type Event = TaskEvent;

    fn decide(state: &TaskState, command: &TaskCommand) -> Result<Vec<TaskEvent>, DomainError> {
        use TaskCommand as C;
        use TaskStatus as S;
        let id = state.id;
        match (state.status, command) {
            (S::Absent, C::Create(c)) => Ok([TaskEvent::Created {
                id: c.id,
                title: c.title.as_str().to_owned(),
                description: c.description.as_str().to_owned(),
                priority: c.priority.get(),
                required_capabilities: c.required_capabilities.to_strings(),
                parent_task_id: c.parent_task_id,
                max_attempts: c.max_attempts.get(),
                run_after: c.run_after,
                input: c.input.as_ref().map(|d| d.as_str().to_owned()),
                stage: c.stage.clone(),
                requires_approval: c.requires_approval,
            }]
            .into_iter()
            .chain(c.max_cost.map(|max_cost| TaskEvent::MaxCostSet { max_cost }))
            .collect()),
            (_, C::Create(c)) => Err(DomainError::Conflict(format!("task {} already exists", c.id))),
            (S::Absent | S::Deleted, _) => Err(DomainError::NotFound(format!("task {id}"))),
            (S::Completed, C::FlagCostOutlier(outlier)) => match &state.cost_outlier {
                // Flagged and not looked at yet: once is enough.
                Some(OutlierMark { acknowledged: None, .. }) => Ok(vec![]),
                // Acknowledged at this cost: only more spending makes it news again.
                Some(mark) if outlier.cost <= mark.outlier.cost => Ok(vec![]),
                _ => Ok(vec![TaskEvent::FlaggedAsCostOutlier(outlier.clone())]),
            },
            (status, C::FlagCostOutlier(_)) => Err(DomainError::Conflict(format!(
                "task {id} is {}; only a completed task's cost is judged",
                status.as_str()
            ))),
            (_, C::AcknowledgeOutlier { note }) => match &state.cost_outlier {
                Some(OutlierMark { acknowledged: None, .. }) => {
                    Ok(vec![TaskEvent::OutlierAcknowledged { note: note.as_str().to_owned() }])
                }
                Some(_) => Err(DomainError::Conflict(format!("task {id}'s cost outlier is acknowledged already"))),
                None => Err(DomainError::Conflict(format!("task {id} is not flagged as a cost outlier"))),
            },
            (S::AwaitingApproval, C::Approve { note }) => {
                Ok(vec![TaskEvent::Approved { note: note.as_ref().map(|n| n.as_str().to_owned()) }])
            }
            (S::AwaitingApproval, C::Reject { reason }) => {
                Ok(vec![TaskEvent::Rejected { reason: reason.as_str().to_owned() }])
            }
            (status, C::Approve { .. } | C::Reject { .. }) => Err(DomainError::Conflict(format!(
                "task {id} is {}; only a task awaiting approval is approved or rejected",
                status.as_str()
            ))),
            (status, C::Update(_) | C::Reprioritize(_) | C::SetMaxCost { .. }) if status.is_final() => {
                Err(DomainError::Conflict(format!("task {id} is {} and can no longer change", status.as_str())))
            }
            (_, C::Update(u)) => Ok(update(state, u)),
            (_, C::RequestApproval { agent_id, request_id, action, details, approve_on_timeout, expires_at }) => {
                let lease = held(state, *agent_id)?;
                if state.approval(*request_id).is_some() {
                    return Err(DomainError::Conflict(format!("approval request {request_id} exists")));
                }
                if state.approvals.len() >= APPROVALS_MAX {
                    return Err(DomainError::Conflict(format!(
                        "task {id} has {APPROVALS_MAX} requests for approval already"
                    )));
                }
                Ok(vec![TaskEvent::ApprovalRequested {
                    request_id: *request_id,
                    agent_id: *agent_id,
                    attempt: lease.attempt,
                    action: action.as_str().to_owned(),
                    details: details.as_ref().map(|d| d.as_str().to_owned()),
                    approve_on_timeout: *approve_on_timeout,
                    expires_at: *expires_at,
                }])
            }
            (_, C::DecideApproval { request_id, approved, note }) => match state.approval(*request_id) {
                None => Err(DomainError::NotFound(format!("approval request {request_id} of task {id}"))),
                Some(ApprovalRequest { decision: Some(d), .. }) => Err(DomainError::Conflict(format!(
                    "approval request {request_id} was {} already",
                    if d.approved { "approved" } else { "denied" }
                ))),
                Some(_) => Ok(vec![TaskEvent::ApprovalDecided {
                    request_id: *request_id,
                    approved: *approved,
                    note: note.as_ref().map(|n| n.as_str().to_owned()),
                    timed_out: false,
                }]),
            },
            (_, C::TimeOutApprovals { now }) => Ok(state
                .approvals
                .iter()
                .filter(|a| a.decision.is_none() && a.expires_at <= *now)
                .map(|a| TaskEvent::ApprovalDecided {
                    request_id: a.request_id,
                    approved: a.approve_on_timeout,
                    note: None,
                    timed_out: true,
                })
                .collect()),
            (_, C::SetMaxCost { max_cost }) if state.max_cost == Some(*max_cost) => Ok(vec![]),
            (_, C::SetMaxCost { max_cost }) => Ok(vec![TaskEvent::MaxCostSet { max_cost: *max_cost }]),
            (_, C::Reprioritize(p)) => Ok(reprioritize(state, *p).into_iter().collect()),
            (S::InProgress, C::Delete) => {
                Err(DomainError::Conflict(format!("task {id} is in progress; cancel it before deleting it")))
            }
            (_, C::Delete) => Ok(vec![TaskEvent::Deleted]),
            (S::Pending, C::Claim { agent_id, now, lease_expires_at }) => {
                if state.run_after.is_some_and(|at| at > *now) {
                    return Err(DomainError::Conflict(format!("task {id} is not due yet")));
                }
                Ok(vec![TaskEvent::Claimed {
                    agent_id: *agent_id,
                    attempt: state.attempt + 1,
                    lease_expires_at: *lease_expires_at,
                }])
            }
            (status, C::Claim { .. }) => {
                Err(DomainError::Conflict(format!("task {id} is {} and cannot be claimed", status.as_str())))
            }
            // A cancelled task answers its agent's heartbeat with nothing: the agent learns it from the state.
            (S::Cancelled, C::Heartbeat { agent_id, .. }) if state.lease.is_some_and(|l| l.agent_id == *agent_id) => {
                Ok(vec![])
            }
            (_, C::Heartbeat { agent_id, lease_expires_at, pauses }) => {
                let lease = held(state, *agent_id)?;
                if let Some(reason) = pauses.stop_reason(state) {
                    return Ok(vec![TaskEvent::Released { agent_id: *agent_id, attempt: lease.attempt, reason }]);
                }
                Ok(vec![TaskEvent::LeaseExtended {
                    agent_id: *agent_id,
                    attempt: lease.attempt,
                    lease_expires_at: (*lease_expires_at).max(lease.expires_at),
                }])
            }
            (_, C::ReportProgress { agent_id, message, percent }) => {
                let lease = held(state, *agent_id)?;
                Ok(vec![TaskEvent::ProgressReported {
                    agent_id: *agent_id,
                    attempt: lease.attempt,
                    message: message.as_str().to_owned(),
                    percent: percent.map(Percent::get),
                }])
            }
            (_, C::Complete { agent_id, result }) => {
                let lease = held(state, *agent_id)?;
                Ok(vec![TaskEvent::Completed {
                    agent_id: *agent_id,
                    attempt: lease.attempt,
                    result: result.as_ref().map(|r| r.as_str().to_owned()),
                }])
            }
            (_, C::Fail { agent_id, error, retryable, now, jitter }) => {
                let lease = held(state, *agent_id)?;
                let retry_at = (*retryable).then(|| retry_at(state, *now, *jitter)).flatten();
                let mut events = vec![TaskEvent::AttemptFailed {
                    agent_id: *agent_id,
                    attempt: lease.attempt,
                    error: error.as_str().to_owned(),
                    retry_at,
                }];
                if retry_at.is_none() {
                    events.push(TaskEvent::Failed { failures: state.failures + 1 });
                }
                Ok(events)
            }
            (S::InProgress, C::ExpireLease { now, jitter }) => match state.lease {
                Some(lease) if lease.expires_at <= *now => {
                    let retry_at = retry_at(state, *now, *jitter);
                    let mut events =
                        vec![TaskEvent::LeaseExpired { agent_id: lease.agent_id, attempt: lease.attempt, retry_at }];
                    if retry_at.is_none() {
                        events.push(TaskEvent::Failed { failures: state.failures + 1 });
                    }
                    Ok(events)
                }
                _ => Ok(vec![]),
            },
            (_, C::ExpireLease { .. }) => Ok(vec![]),
            (S::InProgress, C::Release { agent_id, reason }) => match state.lease {
                Some(lease) if lease.agent_id == *agent_id => Ok(vec![TaskEvent::Released {
                    agent_id: *agent_id,
                    attempt: lease.attempt,
                    reason: reason.clone(),
                }]),
                _ => Ok(vec![]),
            },
            (_, C::Release { .. }) => Ok(vec![]),
            (S::AwaitingApproval | S::Pending | S::InProgress, C::Cancel { reason }) => {
                Ok(vec![TaskEvent::Cancelled { reason: reason.clone() }])
            }
            (status, C::Cancel { .. }) => {
                Err(DomainError::Conflict(format!("task {id} is {} and cannot be cancelled", status.as_str())))
            }
            (S::Failed, C::Retry) => Ok(vec![TaskEvent::Retried]),
            (status, C::Retry) => Err(DomainError::Conflict(format!(
                "task {id} is {}; only a failed task can be retried",
                status.as_str()
            ))),
        }
    }

    fn evolve(mut state: TaskState, event: &TaskEvent) -> TaskState {
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
            } => {
                state = TaskState {
                    id: *id,
                    status: if *requires_approval { TaskStatus::AwaitingApproval } else { TaskStatus::Pending },
                    title: title.clone(),
                    description: description.clone(),
                    priority: *priority,
                    required_capabilities: required_capabilities.clone(),
                    parent_task_id: *parent_task_id,
                    max_attempts: *max_attempts,
                    run_after: *run_after,
                    input: input.clone(),
                    stage: stage.clone(),
                    ..TaskState::default()
                };
            }
            TaskEvent::Updated { title, description, required_capabilities } => {
                if let Some(title) = title {
                    state.title = title.clone();
                }
                if let Some(description) = description {
                    state.description = description.clone();
                }
                if let Some(caps) = required_capabilities {
                    state.required_capabilities = caps.clone();
                }
            }
            TaskEvent::Reprioritized { to, .. } => state.priority = *to,
            TaskEvent::Deleted => state.status = TaskStatus::Deleted,
            TaskEvent::Claimed { agent_id, attempt, lease_expires_at } => {
                state.status = TaskStatus::InProgress;
                state.attempt = *attempt;
                state.lease = Some(Lease { agent_id: *agent_id, attempt: *attempt, expires_at: *lease_expires_at });
                state.progress = None;
            }
            TaskEvent::LeaseExtended { lease_expires_at, .. } => {
                if let Some(lease) = &mut state.lease {
                    lease.expires_at = *lease_expires_at;
                }
            }
            TaskEvent::ProgressReported { message, percent, .. } => {
                state.progress = Some(Progress { message: message.clone(), percent: *percent });
            }
            TaskEvent::Completed { result, .. } => {
                state.status = TaskStatus::Completed;
                state.result = result.clone();
                state.lease = None;
                state.run_after = None;
            }
            TaskEvent::AttemptFailed { agent_id, attempt, error, retry_at } => {
                state.errors.push(AttemptError { attempt: *attempt, agent_id: *agent_id, error: error.clone() });
                requeue(&mut state, *retry_at, true);
            }
            TaskEvent::LeaseExpired { agent_id, attempt, retry_at } => {
                state.errors.push(AttemptError { attempt: *attempt, agent_id: *agent_id, error: LEASE_EXPIRED.into() });
                requeue(&mut state, *retry_at, true);
            }
            TaskEvent::Released { attempt, .. } => {
                state.attempt = attempt.saturating_sub(1);
                requeue(&mut state, None, false);
            }
            TaskEvent::Failed { .. } => {
                state.status = TaskStatus::Failed;
                state.run_after = None;
            }
            TaskEvent::Cancelled { .. } => state.status = TaskStatus::Cancelled,
            TaskEvent::Retried => {
                state.status = TaskStatus::Pending;
                state.failures = 0;
                state.run_after = None;
            }
            TaskEvent::FlaggedAsCostOutlier(outlier) => {
                state.cost_outlier = Some(OutlierMark { outlier: outlier.clone(), acknowledged: None });
            }
            TaskEvent::OutlierAcknowledged { note } => {
                if let Some(mark) = &mut state.cost_outlier {
                    mark.acknowledged = Some(note.clone());
                }
            }
            TaskEvent::Approved { .. } => state.status = TaskStatus::Pending,
            TaskEvent::Rejected { .. } => state.status = TaskStatus::Rejected,
            TaskEvent::MaxCostSet { max_cost } => state.max_cost = Some(*max_cost),
            TaskEvent::ApprovalRequested {
                request_id,
                agent_id,
                attempt,
                action,
                details,
                approve_on_timeout,
                expires_at,
            } => state.approvals.push(ApprovalRequest {
                request_id: *request_id,
                agent_id: *agent_id,
                attempt: *attempt,
                action: action.clone(),
                details: details.clone(),
                approve_on_timeout: *approve_on_timeout,
                expires_at: *expires_at,
                decision: None,
            }),
            TaskEvent::ApprovalDecided { request_id, approved, note, timed_out } => {
                if let Some(request) = state.approvals.iter_mut().find(|a| a.request_id == *request_id) {
                    request.decision =
                        Some(ApprovalDecision { approved: *approved, note: note.clone(), timed_out: *timed_out });
                }
            }
        }
        state
    }
}

/// The lease `agent_id` holds on the task; refuses anyone else.
fn held(state: &TaskState, agent_id: Uuid) -> Result<Lease, DomainError> {
    let id = state.id;
    match (state.status, state.lease) {
        (TaskStatus::InProgress, Some(lease)) if lease.agent_id == agent_id => Ok(lease),
        (TaskStatus::InProgress, Some(_)) => Err(DomainError::Forbidden(format!("task {id} is held by another agent"))),
        (TaskStatus::Cancelled, _) => Err(DomainError::Conflict(format!("task {id} was cancelled"))),
        _ => Err(DomainError::Conflict(format!("task {id} is not held by this agent (its lease may have expired)"))),
    }
}

/// When a failed attempt is retried, or `None` when it was the last one.
fn retry_at(state: &TaskState, now: DateTime<Utc>, jitter: f64) -> Option<DateTime<Utc>> {
    let failures = state.failures + 1;
    (failures < state.max_attempts).then(|| now + backoff(failures, jitter))
}

/// The task leaves its agent and waits in the queue again (unless a `Failed` follows).
fn requeue(state: &mut TaskState, run_after: Option<DateTime<Utc>>, failed: bool) {
    state.status = TaskStatus::Pending;
    state.lease = None;
    state.run_after = run_after;
    if failed {
        state.failures += 1;
    }
}

/// The events an update makes: nothing for fields that would not change.
fn update(state: &TaskState, u: &UpdateTask) -> Vec<TaskEvent> {
    let title = u.title.as_ref().map(|t| t.as_str()).filter(|t| *t != state.title).map(str::to_owned);
    let description = u.description.as_ref().map(|d| d.as_str()).filter(|d| *d != state.description).map(str::to_owned);
    let required_capabilities =
        u.required_capabilities.as_ref().map(|c| c.to_strings()).filter(|c| *c != state.required_capabilities);
    let mut events = Vec::new();
    if title.is_some() || description.is_some() || required_capabilities.is_some() {
        events.push(TaskEvent::Updated { title, description, required_capabilities });
    }
    events.extend(u.priority.and_then(|p| reprioritize(state, p)));
    events
}

fn reprioritize(state: &TaskState, to: Priority) -> Option<TaskEvent> {
    (to.get() != state.priority).then_some(TaskEvent::Reprioritized { from: state.priority, to: to.get() })
}

#[cfg(test)]
mod tests;
