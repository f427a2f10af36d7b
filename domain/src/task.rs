//! The task aggregate: a unit of work that supervisors create and agents carry out.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainError};
use crate::outliers::CostOutlier;

/// A task's priority: 1 (lowest) to 5 (highest). Always in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8")]
pub struct Priority(u8);

parsed_from!(Priority, u8, DomainError, |v| Priority::parse(i64::from(v)));

impl Priority {
    pub const MIN: u8 = 1;
    pub const MAX: u8 = 5;
    pub const DEFAULT: Priority = Priority(3);

    pub fn parse(value: i64) -> Result<Priority, DomainError> {
        if (i64::from(Self::MIN)..=i64::from(Self::MAX)).contains(&value) {
            Ok(Priority(value as u8))
        } else {
            Err(DomainError::invalid("priority", format!("must be between 1 and 5, got {value}")))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// A task title: trimmed, 1 to 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Title(String);

parsed_from!(Title, String, DomainError, |v| Title::parse(&v));

impl Title {
    pub const LEN_MAX: usize = 200;

    pub fn parse(value: &str) -> Result<Title, DomainError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(DomainError::invalid("title", "must not be empty"));
        }
        if value.chars().count() > Self::LEN_MAX {
            return Err(DomainError::invalid("title", format!("must be at most {} characters", Self::LEN_MAX)));
        }
        if value.chars().any(char::is_control) {
            return Err(DomainError::invalid("title", "must not contain control characters"));
        }
        Ok(Title(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A task description: free text up to 20,000 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Description(String);

parsed_from!(Description, String, DomainError, |v| Description::parse(&v));

impl Description {
    pub const LEN_MAX: usize = 20_000;

    pub fn parse(value: &str) -> Result<Description, DomainError> {
        if value.chars().count() > Self::LEN_MAX {
            return Err(DomainError::invalid("description", format!("must be at most {} characters", Self::LEN_MAX)));
        }
        if value.contains('\0') {
            return Err(DomainError::invalid("description", "must not contain NUL characters"));
        }
        Ok(Description(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A capability an agent has and a task requires: 1 to 64 of `a-z 0-9 - _ . : /`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Capability(String);

parsed_from!(Capability, String, DomainError, |v| Capability::parse(&v));

impl Capability {
    pub const LEN_MAX: usize = 64;

    pub fn parse(value: &str) -> Result<Capability, DomainError> {
        let ok = !value.is_empty()
            && value.len() <= Self::LEN_MAX
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'));
        if ok {
            Ok(Capability(value.to_owned()))
        } else {
            Err(DomainError::invalid(
                "requiredCapabilities",
                format!("`{value}` is not a capability (1 to 64 of a-z, 0-9, - _ . : /)"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A sorted set of at most 32 capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct Capabilities(Vec<Capability>);

parsed_from!(Capabilities, Vec<String>, DomainError, |v| Capabilities::parse(&v));

impl Capabilities {
    pub const COUNT_MAX: usize = 32;

    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Capabilities, DomainError> {
        if values.len() > Self::COUNT_MAX {
            return Err(DomainError::invalid(
                "requiredCapabilities",
                format!("at most {} capabilities", Self::COUNT_MAX),
            ));
        }
        let mut caps = values.iter().map(|v| Capability::parse(v.as_ref())).collect::<Result<Vec<_>, _>>()?;
        caps.sort();
        caps.dedup();
        Ok(Capabilities(caps))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Capability> {
        self.0.iter()
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|c| c.0.clone()).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Not created yet: the state before a stream's first event.
    #[default]
    Absent,
    Pending,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    Deleted,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Absent => "ABSENT",
            TaskStatus::Pending => "PENDING",
            TaskStatus::InProgress => "IN_PROGRESS",
            TaskStatus::Completed => "COMPLETED",
            TaskStatus::Failed => "FAILED",
            TaskStatus::Cancelled => "CANCELLED",
            TaskStatus::Deleted => "DELETED",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        Some(match s {
            "ABSENT" => TaskStatus::Absent,
            "PENDING" => TaskStatus::Pending,
            "IN_PROGRESS" => TaskStatus::InProgress,
            "COMPLETED" => TaskStatus::Completed,
            "FAILED" => TaskStatus::Failed,
            "CANCELLED" => TaskStatus::Cancelled,
            "DELETED" => TaskStatus::Deleted,
            _ => return None,
        })
    }

    /// Whether the task's work is over; such a task's content no longer changes.
    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled | TaskStatus::Deleted)
    }
}

/// How many attempts a task gets: 1 to 100, 3 unless the task says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32")]
pub struct MaxAttempts(u32);

parsed_from!(MaxAttempts, u32, DomainError, |v| MaxAttempts::parse(i64::from(v)));

impl MaxAttempts {
    pub const DEFAULT: MaxAttempts = MaxAttempts(3);
    pub const MAX: u32 = 100;

    pub fn parse(value: i64) -> Result<MaxAttempts, DomainError> {
        if (1..=i64::from(Self::MAX)).contains(&value) {
            Ok(MaxAttempts(value as u32))
        } else {
            Err(DomainError::invalid("maxAttempts", format!("must be between 1 and {}, got {value}", Self::MAX)))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// A JSON document given with a task or returned by it, kept as its text: at most 256 KiB.
///
/// The write side checks that it parses; the domain only carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Document(String);

parsed_from!(Document, String, DomainError, |v| Document::parse("document", v));

impl Document {
    pub const LEN_MAX: usize = 256 * 1024;

    pub fn parse(field: &'static str, json: String) -> Result<Document, DomainError> {
        if json.len() > Self::LEN_MAX {
            return Err(DomainError::invalid(field, format!("must be at most {} bytes of JSON", Self::LEN_MAX)));
        }
        Ok(Document(json))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A short text an agent reports: an error or a progress message, 1 to 4,000 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Message(String);

parsed_from!(Message, String, DomainError, |v| Message::parse("message", &v));

impl Message {
    pub const LEN_MAX: usize = 4_000;

    pub fn parse(field: &'static str, value: &str) -> Result<Message, DomainError> {
        let value = value.trim();
        if value.is_empty() || value.chars().count() > Self::LEN_MAX || value.contains('\0') {
            return Err(DomainError::invalid(field, format!("must be 1 to {} characters", Self::LEN_MAX)));
        }
        Ok(Message(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How far along a task is: 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8")]
pub struct Percent(u8);

parsed_from!(Percent, u8, DomainError, |v| Percent::parse(i64::from(v)));

impl Percent {
    pub fn parse(value: i64) -> Result<Percent, DomainError> {
        if (0..=100).contains(&value) {
            Ok(Percent(value as u8))
        } else {
            Err(DomainError::invalid("percent", format!("must be between 0 and 100, got {value}")))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// The workflow run stage a task carries out.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct StageLink {
    pub run_id: Uuid,
    pub stage_key: String,
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
    /// Attempts started: the number of the current or last claim.
    pub attempt: u32,
    /// Attempts failed since the task was created or last retried; `max_attempts` of them fail it.
    pub failures: u32,
    pub lease: Option<Lease>,
    pub progress: Option<Progress>,
    /// Every failed attempt's error, oldest first.
    pub errors: Vec<AttemptError>,
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
    /// The lease holder keeps the task.
    Heartbeat {
        agent_id: Uuid,
        lease_expires_at: DateTime<Utc>,
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
    /// The agent let go without failing (it was deactivated): queued again at once, no failure counted.
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
            (S::Absent, C::Create(c)) => Ok(vec![TaskEvent::Created {
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
            }]),
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
            (status, C::Update(_) | C::Reprioritize(_)) if status.is_final() => {
                Err(DomainError::Conflict(format!("task {id} is {} and can no longer change", status.as_str())))
            }
            (_, C::Update(u)) => Ok(update(state, u)),
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
            (_, C::Heartbeat { agent_id, lease_expires_at }) => {
                let lease = held(state, *agent_id)?;
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
            (S::Pending | S::InProgress, C::Cancel { reason }) => {
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
            } => {
                state = TaskState {
                    id: *id,
                    status: TaskStatus::Pending,
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
            TaskEvent::Released { .. } => requeue(&mut state, None, false),
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
mod tests {
    use super::*;
    use crate::aggregate::given;

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn created() -> TaskEvent {
        TaskEvent::Created {
            id: id(),
            title: "Write docs".into(),
            description: String::new(),
            priority: 3,
            required_capabilities: vec!["docs".into()],
            parent_task_id: None,
            max_attempts: 2,
            run_after: None,
            input: None,
            stage: None,
        }
    }

    fn create() -> TaskCommand {
        TaskCommand::Create(CreateTask {
            required_capabilities: Capabilities::parse(&["docs", "docs"]).unwrap(),
            max_attempts: MaxAttempts::parse(2).unwrap(),
            ..CreateTask::new(id(), Title::parse("  Write docs ").unwrap())
        })
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    const ADA: Uuid = Uuid::from_u128(0xada);
    const BOB: Uuid = Uuid::from_u128(0xb0b);

    fn claimed(attempt: u32) -> TaskEvent {
        TaskEvent::Claimed { agent_id: ADA, attempt, lease_expires_at: at(30) }
    }

    fn claim(agent_id: Uuid) -> TaskCommand {
        TaskCommand::Claim { agent_id, now: at(0), lease_expires_at: at(30) }
    }

    fn fail(retryable: bool) -> TaskCommand {
        TaskCommand::Fail {
            agent_id: ADA,
            error: Message::parse("error", "boom").unwrap(),
            retryable,
            now: at(10),
            jitter: 0.0,
        }
    }

    #[test]
    fn a_claim_counts_the_attempt_and_records_the_lease() {
        given::<Task>([created()]).when(claim(ADA)).then([claimed(1)]);
        given::<Task>([created(), claimed(1)])
            .when(claim(BOB))
            .then_error(DomainError::Conflict(format!("task {} is IN_PROGRESS and cannot be claimed", id())));
    }

    #[test]
    fn only_the_lease_holder_reports() {
        let complete = |agent_id| TaskCommand::Complete { agent_id, result: None };
        given::<Task>([created(), claimed(1)])
            .when(complete(BOB))
            .then_error(DomainError::Forbidden(format!("task {} is held by another agent", id())));
        given::<Task>([created(), claimed(1)]).when(complete(ADA)).then([TaskEvent::Completed {
            agent_id: ADA,
            attempt: 1,
            result: None,
        }]);
        given::<Task>([created()]).when(complete(ADA)).then_error(DomainError::Conflict(format!(
            "task {} is not held by this agent (its lease may have expired)",
            id()
        )));
    }

    #[test]
    fn a_retryable_failure_backs_off_until_attempts_run_out() {
        let first = TaskEvent::AttemptFailed {
            agent_id: ADA,
            attempt: 1,
            error: "boom".into(),
            retry_at: Some(at(10) + backoff(1, 0.0)),
        };
        given::<Task>([created(), claimed(1)]).when(fail(true)).then([first.clone()]);
        // The second of two attempts is the last.
        given::<Task>([created(), claimed(1), first.clone(), claimed(2)]).when(fail(true)).then([
            TaskEvent::AttemptFailed { agent_id: ADA, attempt: 2, error: "boom".into(), retry_at: None },
            TaskEvent::Failed { failures: 2 },
        ]);
        // Not retryable: dead at once.
        given::<Task>([created(), claimed(1)]).when(fail(false)).then([
            TaskEvent::AttemptFailed { agent_id: ADA, attempt: 1, error: "boom".into(), retry_at: None },
            TaskEvent::Failed { failures: 1 },
        ]);
        // A task waiting out its backoff is not due.
        given::<Task>([created(), claimed(1), first])
            .when(TaskCommand::Claim { agent_id: BOB, now: at(10), lease_expires_at: at(40) })
            .then_error(DomainError::Conflict(format!("task {} is not due yet", id())));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        assert_eq!(backoff(1, 0.0), chrono::TimeDelta::milliseconds(500));
        assert_eq!(backoff(1, 1.0), chrono::TimeDelta::seconds(1));
        assert_eq!(backoff(3, 0.0), chrono::TimeDelta::seconds(2));
        assert_eq!(backoff(60, 1.0), BACKOFF_MAX);
    }

    #[test]
    fn an_expired_lease_is_a_failed_attempt_and_a_live_one_is_left_alone() {
        let expire = |now| TaskCommand::ExpireLease { now, jitter: 0.0 };
        given::<Task>([created(), claimed(1)]).when(expire(at(29))).then([]);
        given::<Task>([created(), claimed(1)]).when(expire(at(30))).then([TaskEvent::LeaseExpired {
            agent_id: ADA,
            attempt: 1,
            retry_at: Some(at(30) + backoff(1, 0.0)),
        }]);
        let heartbeat = TaskCommand::Heartbeat { agent_id: ADA, lease_expires_at: at(60) };
        let extended = TaskEvent::LeaseExtended { agent_id: ADA, attempt: 1, lease_expires_at: at(60) };
        given::<Task>([created(), claimed(1)]).when(heartbeat).then([extended.clone()]);
        given::<Task>([created(), claimed(1), extended]).when(expire(at(30))).then([]);
    }

    #[test]
    fn a_cancelled_task_tells_its_agent_through_the_heartbeat() {
        let cancelled = TaskEvent::Cancelled { reason: None };
        given::<Task>([created(), claimed(1), cancelled.clone()])
            .when(TaskCommand::Heartbeat { agent_id: ADA, lease_expires_at: at(60) })
            .then([]);
        given::<Task>([created(), claimed(1), cancelled])
            .when(TaskCommand::Complete { agent_id: ADA, result: None })
            .then_error(DomainError::Conflict(format!("task {} was cancelled", id())));
    }

    #[test]
    fn only_a_failed_task_is_retried_and_it_gets_fresh_attempts() {
        let history = [
            created(),
            claimed(1),
            TaskEvent::AttemptFailed { agent_id: ADA, attempt: 1, error: "boom".into(), retry_at: None },
            TaskEvent::Failed { failures: 1 },
        ];
        given::<Task>(history.clone()).when(TaskCommand::Retry).then([TaskEvent::Retried]);
        let state = Task::fold(&[history.to_vec(), vec![TaskEvent::Retried]].concat());
        assert_eq!((state.status, state.failures, state.errors.len()), (TaskStatus::Pending, 0, 1));
        given::<Task>([created()])
            .when(TaskCommand::Retry)
            .then_error(DomainError::Conflict(format!("task {} is PENDING; only a failed task can be retried", id())));
    }

    fn outlier(cost: &str) -> CostOutlier {
        let money = |s: &str| crate::money::Money::parse("amount", s).unwrap();
        CostOutlier {
            cost: money(cost),
            median: money("1"),
            mad: crate::outliers::Score::from_f64(0.5),
            z_score: crate::outliers::Score::from_f64(6.2),
            threshold: crate::outliers::Score::from_f64(3.5),
            comparable: 12,
            group: "capabilities:docs".into(),
        }
    }

    #[test]
    fn a_costly_task_is_flagged_once_until_acknowledged_and_then_only_if_it_cost_more() {
        let completed = TaskEvent::Completed { agent_id: ADA, attempt: 1, result: None };
        let done = [created(), claimed(1), completed];
        let flag = |cost: &str| TaskCommand::FlagCostOutlier(outlier(cost));
        let flagged = TaskEvent::FlaggedAsCostOutlier(outlier("30"));
        given::<Task>(done.clone()).when(flag("30")).then([flagged.clone()]);
        let history = [done.to_vec(), vec![flagged.clone()]].concat();
        given::<Task>(history.clone()).when(flag("35")).then([]);

        let acknowledge =
            || TaskCommand::AcknowledgeOutlier { note: Message::parse("note", "a big refactor").unwrap() };
        let acknowledged = TaskEvent::OutlierAcknowledged { note: "a big refactor".into() };
        given::<Task>(history.clone()).when(acknowledge()).then([acknowledged.clone()]);
        let history = [history, vec![acknowledged]].concat();
        given::<Task>(history.clone()).when(flag("30")).then([]);
        given::<Task>(history.clone()).when(flag("31")).then([TaskEvent::FlaggedAsCostOutlier(outlier("31"))]);
        given::<Task>(history.clone())
            .when(acknowledge())
            .then_error(DomainError::Conflict(format!("task {}'s cost outlier is acknowledged already", id())));

        // Flags change nothing about the work.
        let state = Task::fold(&history);
        assert_eq!(state.status, TaskStatus::Completed);
        assert_eq!(state.cost_outlier.unwrap().acknowledged.as_deref(), Some("a big refactor"));
    }

    #[test]
    fn only_completed_tasks_are_flagged_and_only_flagged_ones_acknowledged() {
        given::<Task>([created(), claimed(1)]).when(TaskCommand::FlagCostOutlier(outlier("30"))).then_error(
            DomainError::Conflict(format!("task {} is IN_PROGRESS; only a completed task's cost is judged", id())),
        );
        given::<Task>([created()])
            .when(TaskCommand::AcknowledgeOutlier { note: Message::parse("note", "ok").unwrap() })
            .then_error(DomainError::Conflict(format!("task {} is not flagged as a cost outlier", id())));
        given::<Task>([created(), TaskEvent::Deleted])
            .when(TaskCommand::FlagCostOutlier(outlier("30")))
            .then_error(DomainError::NotFound(format!("task {}", id())));
    }

    #[test]
    fn a_released_task_is_queued_again_without_a_failure() {
        let state = Task::fold(&[
            created(),
            claimed(1),
            TaskEvent::Released { agent_id: ADA, attempt: 1, reason: "deactivated".into() },
        ]);
        assert_eq!((state.status, state.failures, state.lease), (TaskStatus::Pending, 0, None));
    }

    #[test]
    fn creates_a_task_with_trimmed_title_and_deduplicated_capabilities() {
        given::<Task>([]).when(create()).then([created()]);
    }

    #[test]
    fn refuses_to_create_twice() {
        given::<Task>([created()])
            .when(create())
            .then_error(DomainError::Conflict(format!("task {} already exists", id())));
    }

    #[test]
    fn update_records_only_what_changes() {
        let update = UpdateTask {
            title: Some(Title::parse("Write docs").unwrap()),
            description: Some(Description::parse("all of them").unwrap()),
            priority: Some(Priority::parse(5).unwrap()),
            required_capabilities: None,
        };
        given::<Task>([created()]).when(TaskCommand::Update(update)).then([
            TaskEvent::Updated { title: None, description: Some("all of them".into()), required_capabilities: None },
            TaskEvent::Reprioritized { from: 3, to: 5 },
        ]);
    }

    #[test]
    fn an_update_that_changes_nothing_records_nothing() {
        given::<Task>([created()]).when(TaskCommand::Update(UpdateTask::default())).then([]);
        given::<Task>([created()]).when(TaskCommand::Reprioritize(Priority::DEFAULT)).then([]);
    }

    #[test]
    fn deleted_tasks_are_gone() {
        given::<Task>([created(), TaskEvent::Deleted])
            .when(TaskCommand::Delete)
            .then_error(DomainError::NotFound(format!("task {}", id())));
        given::<Task>([])
            .when(TaskCommand::Reprioritize(Priority::DEFAULT))
            .then_error(DomainError::NotFound(format!("task {}", Uuid::nil())));
    }

    #[test]
    fn value_types_refuse_bad_input() {
        assert!(Priority::parse(0).is_err());
        assert!(Priority::parse(6).is_err());
        assert_eq!(Priority::parse(5).unwrap().get(), 5);
        assert!(Title::parse("   ").is_err());
        assert!(Title::parse(&"x".repeat(201)).is_err());
        assert!(Title::parse("a\u{7}b").is_err());
        assert!(Capability::parse("Rust").is_err());
        assert!(Capability::parse("").is_err());
        assert!(Capabilities::parse(&vec!["a"; 33]).is_err());
        assert_eq!(Capabilities::parse(&["b", "a", "b"]).unwrap().to_strings(), vec!["a", "b"]);
    }
}
