//! Workflows: versioned templates of stages that depend on each other (a DAG), and their runs.
//!
//! A [`Workflow`] is the template: defining it again under the same name makes its next version.
//! A [`WorkflowRun`] is one execution of a version: it starts the stages without dependencies,
//! records each stage's outcome as its task ends, and starts a stage once every stage it depends
//! on has completed (fan-out and fan-in). A stage that finally fails fails the run. The run
//! decides *which* stages start; the write side creates their tasks, with ids derived from the
//! run and the stage ([`stage_task_id`]), so creating them twice is harmless.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainError};
use crate::task::{Capabilities, Description, MaxAttempts, Priority, Title};

/// A workflow's name: trimmed, 1 to 100 printable characters. Names identify workflows, without
/// regard to case: defining a name again makes a new version of the same workflow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct WorkflowName(String);

parsed_from!(WorkflowName, String, DomainError, |v| WorkflowName::parse(&v));

impl WorkflowName {
    pub const LEN_MAX: usize = 100;

    pub fn parse(value: &str) -> Result<WorkflowName, DomainError> {
        let value = value.trim();
        if value.is_empty() || value.chars().count() > Self::LEN_MAX || value.chars().any(char::is_control) {
            return Err(DomainError::invalid("name", format!("must be 1 to {} printable characters", Self::LEN_MAX)));
        }
        Ok(WorkflowName(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The workflow's id: the same for every spelling of the name that differs only in case.
    pub fn workflow_id(&self) -> Uuid {
        Uuid::new_v5(&WORKFLOW_NAMESPACE, self.0.to_lowercase().as_bytes())
    }
}

const WORKFLOW_NAMESPACE: Uuid = Uuid::from_u128(0x6465_7661_7274_2d77_6f72_6b66_6c6f_7773);

/// The id of the task that carries out stage `key` of run `run_id`.
pub fn stage_task_id(run_id: Uuid, key: &str) -> Uuid {
    Uuid::new_v5(&run_id, key.as_bytes())
}

/// One stage of a workflow, as validated and stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct StageSpec {
    /// Unique in its workflow: 1 to 64 of `A-Z a-z 0-9 _ -`.
    pub key: String,
    pub title: String,
    pub description: String,
    pub priority: u8,
    pub required_capabilities: Vec<String>,
    /// Keys of the stages that must complete before this one starts.
    pub depends_on: Vec<String>,
    pub max_attempts: u32,
    /// Its task waits for a supervisor's approval (`AWAITING_APPROVAL`) before any agent may claim
    /// it; rejected, the stage fails, and the run with it.
    pub requires_approval: bool,
}

impl StageSpec {
    pub const KEY_LEN_MAX: usize = 64;

    /// A stage from validated parts, claimable as soon as it starts (see
    /// [`StageSpec::requires_approval`]); how the stages fit together is checked by
    /// [`Stages::parse`].
    pub fn new(
        key: &str,
        title: Title,
        description: Description,
        priority: Priority,
        required_capabilities: Capabilities,
        depends_on: Vec<String>,
        max_attempts: MaxAttempts,
    ) -> Result<StageSpec, DomainError> {
        let key = key.trim();
        let valid = |k: &str| {
            !k.is_empty()
                && k.len() <= Self::KEY_LEN_MAX
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !valid(key) {
            return Err(DomainError::invalid(
                "stages",
                format!("stage key `{key}` must be 1 to {} of A-Z a-z 0-9 _ -", Self::KEY_LEN_MAX),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut depends = Vec::with_capacity(depends_on.len());
        for dependency in depends_on {
            let dependency = dependency.trim().to_owned();
            if seen.insert(dependency.clone()) {
                depends.push(dependency);
            }
        }
        Ok(StageSpec {
            key: key.to_owned(),
            title: title.as_str().to_owned(),
            description: description.as_str().to_owned(),
            priority: priority.get(),
            required_capabilities: required_capabilities.to_strings(),
            depends_on: depends,
            max_attempts: max_attempts.get(),
            requires_approval: false,
        })
    }
}

/// A workflow's stages: 1 to 100, unique keys, dependencies on known stages only, no cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages(Vec<StageSpec>);

impl Stages {
    pub const MAX: usize = 100;

    pub fn parse(stages: Vec<StageSpec>) -> Result<Stages, DomainError> {
        let invalid = |message: String| DomainError::invalid("stages", message);
        if stages.is_empty() || stages.len() > Self::MAX {
            return Err(invalid(format!("a workflow has 1 to {} stages, got {}", Self::MAX, stages.len())));
        }
        let mut keys = BTreeSet::new();
        for stage in &stages {
            if !keys.insert(stage.key.as_str()) {
                return Err(invalid(format!("stage key `{}` is used twice", stage.key)));
            }
        }
        for stage in &stages {
            for dependency in &stage.depends_on {
                if dependency == &stage.key {
                    return Err(invalid(format!("stage `{}` depends on itself", stage.key)));
                }
                if !keys.contains(dependency.as_str()) {
                    return Err(invalid(format!("stage `{}` depends on unknown stage `{dependency}`", stage.key)));
                }
            }
        }
        if let Some(cycle) = find_cycle(&stages) {
            return Err(invalid(format!("stages form a cycle: {}", cycle.join(" → "))));
        }
        Ok(Stages(stages))
    }

    pub fn as_slice(&self) -> &[StageSpec] {
        &self.0
    }
}

/// A cycle among the stages, as the keys along it (the first repeated at the end), if any.
fn find_cycle(stages: &[StageSpec]) -> Option<Vec<String>> {
    let by_key: BTreeMap<&str, &StageSpec> = stages.iter().map(|s| (s.key.as_str(), s)).collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    // Iterative depth-first search over dependencies; `path` is the current chain.
    for start in stages {
        if marks.contains_key(start.key.as_str()) {
            continue;
        }
        let mut path: Vec<(&str, usize)> = vec![(start.key.as_str(), 0)];
        marks.insert(start.key.as_str(), Mark::Visiting);
        while let Some((key, next)) = path.last_mut() {
            let stage = by_key[*key];
            match stage.depends_on.get(*next) {
                Some(dependency) => {
                    *next += 1;
                    let dependency = dependency.as_str();
                    match marks.get(dependency) {
                        Some(Mark::Done) => {}
                        Some(Mark::Visiting) => {
                            let from = path.iter().position(|(k, _)| *k == dependency).unwrap_or(0);
                            let mut cycle: Vec<String> = path[from..].iter().map(|(k, _)| (*k).to_owned()).collect();
                            cycle.push(dependency.to_owned());
                            return Some(cycle);
                        }
                        None => {
                            marks.insert(dependency, Mark::Visiting);
                            path.push((dependency, 0));
                        }
                    }
                }
                None => {
                    marks.insert(key, Mark::Done);
                    path.pop();
                }
            }
        }
    }
    None
}

/// A workflow template as its events leave it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct WorkflowState {
    pub id: Uuid,
    /// 0 until defined; each definition that changes something adds one.
    pub version: u32,
    pub name: String,
    pub description: String,
    pub stages: Vec<StageSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowCommand {
    /// Defines the workflow, or its next version; the same definition again changes nothing.
    Define { id: Uuid, name: WorkflowName, description: Description, stages: Stages },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowEvent {
    Defined { id: Uuid, version: u32, name: String, description: String, stages: Vec<StageSpec> },
}

impl WorkflowEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            WorkflowEvent::Defined { .. } => "WorkflowDefined",
        }
    }
}

pub struct Workflow;

impl Aggregate for Workflow {
    const KIND: &'static str = "workflow";
    type State = WorkflowState;
    type Command = WorkflowCommand;
    type Event = WorkflowEvent;

    fn decide(state: &WorkflowState, command: &WorkflowCommand) -> Result<Vec<WorkflowEvent>, DomainError> {
        let WorkflowCommand::Define { id, name, description, stages } = command;
        let unchanged = state.version > 0
            && state.name == name.as_str()
            && state.description == description.as_str()
            && state.stages == stages.as_slice();
        if unchanged {
            return Ok(vec![]);
        }
        Ok(vec![WorkflowEvent::Defined {
            id: *id,
            version: state.version + 1,
            name: name.as_str().to_owned(),
            description: description.as_str().to_owned(),
            stages: stages.as_slice().to_vec(),
        }])
    }

    fn evolve(_state: WorkflowState, event: &WorkflowEvent) -> WorkflowState {
        match event {
            WorkflowEvent::Defined { id, version, name, description, stages } => WorkflowState {
                id: *id,
                version: *version,
                name: name.clone(),
                description: description.clone(),
                stages: stages.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    #[default]
    Absent,
    Running,
    Completed,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Absent => "ABSENT",
            RunStatus::Running => "RUNNING",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
        }
    }
}

/// Where a stage of a run is, as the run knows it. Between `Started` and an outcome, its task's
/// own status says more (pending, in progress, retrying).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StageStatus {
    /// Some dependency has not completed yet.
    #[default]
    Waiting,
    /// Its task exists (or is about to).
    Started,
    Completed,
    Failed,
    /// The run failed before this stage could start.
    Skipped,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Waiting => "WAITING",
            StageStatus::Started => "STARTED",
            StageStatus::Completed => "COMPLETED",
            StageStatus::Failed => "FAILED",
            StageStatus::Skipped => "SKIPPED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StageRun {
    pub spec: StageSpec,
    pub status: StageStatus,
    /// Set once started: [`stage_task_id`] of the run and the stage.
    pub task_id: Option<Uuid>,
    /// The task's result (a JSON document as text), once completed.
    pub result: Option<String>,
    pub error: Option<String>,
}

/// A workflow run as its events leave it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct RunState {
    pub id: Uuid,
    pub status: RunStatus,
    pub workflow_id: Uuid,
    pub workflow_name: String,
    pub workflow_version: u32,
    /// The run's input document, as text.
    pub input: Option<String>,
    /// In the workflow's order.
    pub stages: Vec<StageRun>,
    pub failure: Option<String>,
}

impl RunState {
    pub fn stage(&self, key: &str) -> Option<&StageRun> {
        self.stages.iter().find(|s| s.spec.key == key)
    }

    fn stage_mut(&mut self, key: &str) -> Option<&mut StageRun> {
        self.stages.iter_mut().find(|s| s.spec.key == key)
    }

    /// Waiting stages whose dependencies have all completed, in the workflow's order.
    fn ready(&self) -> Vec<&StageRun> {
        let completed = |key: &String| self.stage(key).is_some_and(|s| s.status == StageStatus::Completed);
        self.stages
            .iter()
            .filter(|s| s.status == StageStatus::Waiting && s.spec.depends_on.iter().all(completed))
            .collect()
    }

    /// Stages started whose outcome is not known yet: their tasks must exist.
    pub fn started(&self) -> impl Iterator<Item = &StageRun> {
        self.stages.iter().filter(|s| s.status == StageStatus::Started)
    }
}

/// How a stage's task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageOutcome {
    Completed {
        result: Option<String>,
    },
    /// Failed for good (attempts spent, not retryable, or cancelled).
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunCommand {
    /// Starts a run of `version` of a workflow with these stages (as that version defines them).
    Start {
        id: Uuid,
        workflow_id: Uuid,
        workflow_name: String,
        workflow_version: u32,
        stages: Vec<StageSpec>,
        input: Option<crate::task::Document>,
    },
    /// Records how a stage's task ended; recording it again changes nothing.
    RecordStage { key: String, task_id: Uuid, outcome: StageOutcome },
    /// Fails the run for a reason outside any one stage (a stage's task could not be created).
    Fail { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    Started {
        id: Uuid,
        workflow_id: Uuid,
        workflow_name: String,
        workflow_version: u32,
        stages: Vec<StageSpec>,
        input: Option<String>,
    },
    StageStarted {
        key: String,
        task_id: Uuid,
    },
    StageCompleted {
        key: String,
        task_id: Uuid,
        result: Option<String>,
    },
    StageFailed {
        key: String,
        task_id: Uuid,
        error: String,
    },
    Completed,
    Failed {
        reason: String,
    },
}

impl RunEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            RunEvent::Started { .. } => "WorkflowRunStarted",
            RunEvent::StageStarted { .. } => "WorkflowStageStarted",
            RunEvent::StageCompleted { .. } => "WorkflowStageCompleted",
            RunEvent::StageFailed { .. } => "WorkflowStageFailed",
            RunEvent::Completed => "WorkflowRunCompleted",
            RunEvent::Failed { .. } => "WorkflowRunFailed",
        }
    }
}

pub struct WorkflowRun;

impl WorkflowRun {
    /// The events after `events`, with the stages they make ready started, and the run completed
    /// when every stage has.
    fn then_start_ready(state: &RunState, mut events: Vec<RunEvent>) -> Vec<RunEvent> {
        let after = events.iter().fold(state.clone(), Self::evolve);
        let ready: Vec<RunEvent> = after
            .ready()
            .into_iter()
            .map(|s| RunEvent::StageStarted { key: s.spec.key.clone(), task_id: stage_task_id(after.id, &s.spec.key) })
            .collect();
        let all_done = ready.is_empty() && after.stages.iter().all(|s| s.status == StageStatus::Completed);
        events.extend(ready);
        if all_done {
            events.push(RunEvent::Completed);
        }
        events
    }
}

impl Aggregate for WorkflowRun {
    const KIND: &'static str = "workflowrun";
    type State = RunState;
    type Command = RunCommand;
    type Event = RunEvent;

    fn decide(state: &RunState, command: &RunCommand) -> Result<Vec<RunEvent>, DomainError> {
        match (state.status, command) {
            (
                RunStatus::Absent,
                RunCommand::Start { id, workflow_id, workflow_name, workflow_version, stages, input },
            ) => {
                if stages.is_empty() {
                    return Err(DomainError::Conflict(format!("workflow {workflow_id} has no stages")));
                }
                let started = RunEvent::Started {
                    id: *id,
                    workflow_id: *workflow_id,
                    workflow_name: workflow_name.clone(),
                    workflow_version: *workflow_version,
                    stages: stages.clone(),
                    input: input.as_ref().map(|d| d.as_str().to_owned()),
                };
                Ok(Self::then_start_ready(state, vec![started]))
            }
            (RunStatus::Absent, _) => Err(DomainError::NotFound(format!("workflow run {}", state.id))),
            (_, RunCommand::Start { id, .. }) => {
                Err(DomainError::Conflict(format!("workflow run {id} already exists")))
            }
            // A run that has ended takes no more outcomes: a late one is a no-op, not an error, so
            // that the events that report it can be processed again.
            (RunStatus::Completed | RunStatus::Failed, _) => Ok(vec![]),
            (RunStatus::Running, RunCommand::Fail { reason }) => Ok(vec![RunEvent::Failed { reason: reason.clone() }]),
            (RunStatus::Running, RunCommand::RecordStage { key, task_id, outcome }) => {
                let Some(stage) = state.stage(key) else {
                    return Err(DomainError::NotFound(format!("stage `{key}` of workflow run {}", state.id)));
                };
                if stage.status != StageStatus::Started || stage.task_id != Some(*task_id) {
                    return Ok(vec![]);
                }
                match outcome {
                    StageOutcome::Completed { result } => Ok(Self::then_start_ready(
                        state,
                        vec![RunEvent::StageCompleted { key: key.clone(), task_id: *task_id, result: result.clone() }],
                    )),
                    StageOutcome::Failed { error } => Ok(vec![
                        RunEvent::StageFailed { key: key.clone(), task_id: *task_id, error: error.clone() },
                        RunEvent::Failed { reason: format!("stage `{key}` failed: {error}") },
                    ]),
                }
            }
        }
    }

    fn evolve(mut state: RunState, event: &RunEvent) -> RunState {
        match event {
            RunEvent::Started { id, workflow_id, workflow_name, workflow_version, stages, input } => {
                state = RunState {
                    id: *id,
                    status: RunStatus::Running,
                    workflow_id: *workflow_id,
                    workflow_name: workflow_name.clone(),
                    workflow_version: *workflow_version,
                    input: input.clone(),
                    stages: stages
                        .iter()
                        .map(|spec| StageRun {
                            spec: spec.clone(),
                            status: StageStatus::Waiting,
                            task_id: None,
                            result: None,
                            error: None,
                        })
                        .collect(),
                    failure: None,
                };
            }
            RunEvent::StageStarted { key, task_id } => {
                if let Some(stage) = state.stage_mut(key) {
                    stage.status = StageStatus::Started;
                    stage.task_id = Some(*task_id);
                }
            }
            RunEvent::StageCompleted { key, result, .. } => {
                if let Some(stage) = state.stage_mut(key) {
                    stage.status = StageStatus::Completed;
                    stage.result = result.clone();
                }
            }
            RunEvent::StageFailed { key, error, .. } => {
                if let Some(stage) = state.stage_mut(key) {
                    stage.status = StageStatus::Failed;
                    stage.error = Some(error.clone());
                }
            }
            RunEvent::Completed => state.status = RunStatus::Completed,
            RunEvent::Failed { reason } => {
                state.status = RunStatus::Failed;
                state.failure = Some(reason.clone());
                for stage in &mut state.stages {
                    if stage.status == StageStatus::Waiting {
                        stage.status = StageStatus::Skipped;
                    }
                }
            }
        }
        state
    }
}

#[cfg(test)]
mod tests;
