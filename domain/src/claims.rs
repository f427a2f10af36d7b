//! The kill switch: supervisors pause the handing out of work, for everything, for one capability
//! or for one workflow, and resume it.
//!
//! All pauses live in one stream, so who stopped what, when and why is one history, and a pause is
//! decided against the others. While a scope is paused no claim hands out a task in it. Tasks
//! already being worked go on (`drain`), or, without drain, are stopped at their agent's next
//! heartbeat and go back to the queue without using up an attempt.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainError};
use crate::task::{Capability, Message, TaskState};

/// The pauses' one stream id.
pub const CLAIMS_ID: Uuid = Uuid::from_u128(0x6465_7661_7274_2d63_6c61_696d_7300_0000);

/// What a pause covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scope {
    /// Every task.
    All,
    /// The tasks that require this capability.
    Capability(Capability),
    /// The tasks of this workflow's runs (by the workflow's id).
    Workflow(Uuid),
}

impl Scope {
    /// Whether `task` is in this scope.
    pub fn covers(&self, task: &TaskState) -> bool {
        match self {
            Scope::All => true,
            Scope::Capability(c) => task.required_capabilities.iter().any(|r| r == c.as_str()),
            Scope::Workflow(w) => task.stage.as_ref().and_then(|s| s.workflow_id) == Some(*w),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("all work"),
            Scope::Capability(c) => write!(f, "capability {}", c.as_str()),
            Scope::Workflow(w) => write!(f, "workflow {w}"),
        }
    }
}

/// A scope's pause as decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pause {
    pub reason: String,
    /// Tasks already being worked go on (true), or are stopped at their next heartbeat (false).
    pub drain: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ClaimsState {
    pub paused: BTreeMap<Scope, Pause>,
}

impl ClaimsState {
    /// The first pause that covers `task`, broadest first.
    pub fn pause_of(&self, task: &TaskState) -> Option<(&Scope, &Pause)> {
        self.paused.iter().find(|(scope, _)| scope.covers(task))
    }

    /// The first pause that covers `task` and stops the work already under way.
    pub fn stop_of(&self, task: &TaskState) -> Option<(&Scope, &Pause)> {
        self.paused.iter().find(|(scope, pause)| !pause.drain && scope.covers(task))
    }

    /// Why work on `task` is stopped, when a pause stops it: what its release and the agent's
    /// heartbeat both say.
    pub fn stop_reason(&self, task: &TaskState) -> Option<String> {
        self.stop_of(task).map(|(scope, pause)| format!("claims paused for {scope}: {}", pause.reason))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimsCommand {
    Pause { scope: Scope, reason: Message, drain: bool },
    Resume { scope: Scope },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimsEvent {
    Paused { scope: Scope, reason: String, drain: bool },
    Resumed { scope: Scope },
}

impl ClaimsEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            ClaimsEvent::Paused { .. } => "ClaimsPaused",
            ClaimsEvent::Resumed { .. } => "ClaimsResumed",
        }
    }
}

pub struct Claims;

impl Aggregate for Claims {
    const KIND: &'static str = "claims";
    type State = ClaimsState;
    type Command = ClaimsCommand;
    type Event = ClaimsEvent;

    /// Pausing what is paused alike, or resuming what is not paused, changes nothing: a kill switch
    /// pressed twice stays pressed. A pause given again with another reason or drain replaces it.
    fn decide(state: &ClaimsState, command: &ClaimsCommand) -> Result<Vec<ClaimsEvent>, DomainError> {
        match command {
            ClaimsCommand::Pause { scope, reason, drain } => {
                let pause = Pause { reason: reason.as_str().to_owned(), drain: *drain };
                if state.paused.get(scope) == Some(&pause) {
                    return Ok(vec![]);
                }
                Ok(vec![ClaimsEvent::Paused { scope: scope.clone(), reason: pause.reason, drain: pause.drain }])
            }
            ClaimsCommand::Resume { scope } => Ok(if state.paused.contains_key(scope) {
                vec![ClaimsEvent::Resumed { scope: scope.clone() }]
            } else {
                vec![]
            }),
        }
    }

    fn evolve(mut state: ClaimsState, event: &ClaimsEvent) -> ClaimsState {
        match event {
            ClaimsEvent::Paused { scope, reason, drain } => {
                state.paused.insert(scope.clone(), Pause { reason: reason.clone(), drain: *drain });
            }
            ClaimsEvent::Resumed { scope } => {
                state.paused.remove(scope);
            }
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::StageLink;

    fn pause(scope: Scope, drain: bool) -> ClaimsCommand {
        ClaimsCommand::Pause { scope, reason: Message::parse("reason", "incident 42").unwrap(), drain }
    }

    fn fold(commands: &[ClaimsCommand]) -> (ClaimsState, Vec<ClaimsEvent>) {
        let mut state = ClaimsState::default();
        let mut all = Vec::new();
        for command in commands {
            let events = Claims::decide(&state, command).unwrap();
            state = events.iter().fold(state, Claims::evolve);
            all.extend(events);
        }
        (state, all)
    }

    #[test]
    fn pressing_twice_changes_nothing_and_resuming_the_unpaused_too() {
        let (state, events) = fold(&[pause(Scope::All, true), pause(Scope::All, true)]);
        assert_eq!(events.len(), 1);
        assert!(state.paused.contains_key(&Scope::All));
        let (state, events) = fold(&[ClaimsCommand::Resume { scope: Scope::All }]);
        assert!(events.is_empty() && state.paused.is_empty());
    }

    #[test]
    fn a_pause_given_again_with_another_drain_replaces_it() {
        let (state, events) = fold(&[pause(Scope::All, true), pause(Scope::All, false)]);
        assert_eq!(events.len(), 2);
        assert_eq!(state.paused[&Scope::All], Pause { reason: "incident 42".into(), drain: false });
    }

    #[test]
    fn scopes_cover_the_tasks_they_name() {
        let workflow = Uuid::from_u128(7);
        let task = TaskState {
            required_capabilities: vec!["rust".into()],
            stage: Some(StageLink {
                run_id: Uuid::from_u128(8),
                stage_key: "build".into(),
                workflow_id: Some(workflow),
            }),
            ..TaskState::default()
        };
        let rust = Scope::Capability(Capability::parse("rust").unwrap());
        let docs = Scope::Capability(Capability::parse("docs").unwrap());
        assert!(Scope::All.covers(&task) && rust.covers(&task) && Scope::Workflow(workflow).covers(&task));
        assert!(!docs.covers(&task) && !Scope::Workflow(Uuid::from_u128(9)).covers(&task));
        let (state, _) = fold(&[pause(docs.clone(), false), pause(rust.clone(), true)]);
        assert_eq!(state.pause_of(&task).map(|(s, _)| s), Some(&rust));
        assert_eq!(state.stop_of(&task), None, "the pause that covers it drains");
        let (state, _) = fold(&[pause(rust.clone(), false)]);
        assert_eq!(state.stop_of(&task).map(|(s, _)| s), Some(&rust));
    }
}
