//! The task aggregate: a unit of work that supervisors create and agents carry out.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainError};

/// A task's priority: 1 (lowest) to 5 (highest). Always in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Priority(u8);

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
pub struct Title(String);

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
pub struct Description(String);

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
pub struct Capability(String);

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
pub struct Capabilities(Vec<Capability>);

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

/// A task as its events leave it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskState {
    pub id: Uuid,
    pub status: TaskStatus,
    pub title: String,
    pub description: String,
    pub priority: u8,
    pub required_capabilities: Vec<String>,
    pub parent_task_id: Option<Uuid>,
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
}

/// A change to a task's content; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateTask {
    pub title: Option<Title>,
    pub description: Option<Description>,
    pub priority: Option<Priority>,
    pub required_capabilities: Option<Capabilities>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskCommand {
    Create(CreateTask),
    Update(UpdateTask),
    Reprioritize(Priority),
    Delete,
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
}

impl TaskEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            TaskEvent::Created { .. } => "TaskCreated",
            TaskEvent::Updated { .. } => "TaskUpdated",
            TaskEvent::Reprioritized { .. } => "TaskReprioritized",
            TaskEvent::Deleted => "TaskDeleted",
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
        match (state.status, command) {
            (TaskStatus::Absent, C::Create(c)) => Ok(vec![TaskEvent::Created {
                id: c.id,
                title: c.title.as_str().to_owned(),
                description: c.description.as_str().to_owned(),
                priority: c.priority.get(),
                required_capabilities: c.required_capabilities.to_strings(),
                parent_task_id: c.parent_task_id,
            }]),
            (_, C::Create(c)) => Err(DomainError::Conflict(format!("task {} already exists", c.id))),
            (TaskStatus::Absent | TaskStatus::Deleted, _) => Err(DomainError::NotFound(format!("task {}", state.id))),
            (status, C::Update(_) | C::Reprioritize(_)) if status.is_final() => {
                Err(DomainError::Conflict(format!("task {} is {} and can no longer change", state.id, status.as_str())))
            }
            (_, C::Update(u)) => Ok(update(state, u)),
            (_, C::Reprioritize(p)) => Ok(reprioritize(state, *p).into_iter().collect()),
            (TaskStatus::InProgress, C::Delete) => {
                Err(DomainError::Conflict(format!("task {} is in progress; cancel it before deleting it", state.id)))
            }
            (_, C::Delete) => Ok(vec![TaskEvent::Deleted]),
        }
    }

    fn evolve(mut state: TaskState, event: &TaskEvent) -> TaskState {
        match event {
            TaskEvent::Created { id, title, description, priority, required_capabilities, parent_task_id } => {
                state = TaskState {
                    id: *id,
                    status: TaskStatus::Pending,
                    title: title.clone(),
                    description: description.clone(),
                    priority: *priority,
                    required_capabilities: required_capabilities.clone(),
                    parent_task_id: *parent_task_id,
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
        }
        state
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
        }
    }

    fn create() -> TaskCommand {
        TaskCommand::Create(CreateTask {
            id: id(),
            title: Title::parse("  Write docs ").unwrap(),
            description: Description::default(),
            priority: Priority::DEFAULT,
            required_capabilities: Capabilities::parse(&["docs", "docs"]).unwrap(),
            parent_task_id: None,
        })
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
