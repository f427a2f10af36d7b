//! Workflows' and their runs' events on the wire.

use devart_domain::workflow::{RunEvent, StageSpec, WorkflowEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Wire;

/// The layouts of the first release; a stage has since learned to wait for approval (see
/// [`Stage`]).
pub mod v1 {
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

    impl From<Stage> for super::Stage {
        /// Stages defined before v2 never waited for approval.
        fn from(s: Stage) -> Self {
            super::Stage {
                key: s.key,
                title: s.title,
                description: s.description,
                priority: s.priority,
                required_capabilities: s.required_capabilities,
                depends_on: s.depends_on,
                max_attempts: s.max_attempts,
                requires_approval: false,
            }
        }
    }

    impl From<WorkflowDefined> for super::WorkflowDefined {
        fn from(w: WorkflowDefined) -> Self {
            super::WorkflowDefined {
                workflow_id: w.workflow_id,
                version: w.version,
                name: w.name,
                description: w.description,
                stages: super::stages(w.stages),
            }
        }
    }

    impl From<WorkflowRunStarted> for super::WorkflowRunStarted {
        fn from(w: WorkflowRunStarted) -> Self {
            super::WorkflowRunStarted {
                run_id: w.run_id,
                workflow_id: w.workflow_id,
                workflow_name: w.workflow_name,
                workflow_version: w.workflow_version,
                stages: super::stages(w.stages),
                input: w.input,
            }
        }
    }
}

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
    /// Its task waits for a supervisor's approval before any agent may claim it.
    pub requires_approval: bool,
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

/// v1 with stages that may wait for approval. Carries the stages of the version it runs, so the run never depends on the template.
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

impl From<StageSpec> for Stage {
    fn from(s: StageSpec) -> Self {
        Stage {
            key: s.key,
            title: s.title,
            description: s.description,
            priority: s.priority,
            required_capabilities: s.required_capabilities,
            depends_on: s.depends_on,
            max_attempts: s.max_attempts,
            requires_approval: s.requires_approval,
        }
    }
}

impl From<Stage> for StageSpec {
    fn from(s: Stage) -> Self {
        StageSpec {
            key: s.key,
            title: s.title,
            description: s.description,
            priority: s.priority,
            required_capabilities: s.required_capabilities,
            depends_on: s.depends_on,
            max_attempts: s.max_attempts,
            requires_approval: s.requires_approval,
        }
    }
}

fn stages<A: Into<B>, B>(stages: Vec<A>) -> Vec<B> {
    stages.into_iter().map(Into::into).collect()
}

impl From<WorkflowEvent> for Wire {
    fn from(event: WorkflowEvent) -> Wire {
        match event {
            WorkflowEvent::Defined { id, version, name, description, stages: s } => {
                WorkflowDefined { workflow_id: id, version, name, description, stages: stages(s) }.into()
            }
        }
    }
}

impl From<WorkflowDefined> for WorkflowEvent {
    fn from(w: WorkflowDefined) -> Self {
        WorkflowEvent::Defined {
            id: w.workflow_id,
            version: w.version,
            name: w.name,
            description: w.description,
            stages: stages(w.stages),
        }
    }
}

impl From<RunEvent> for Wire {
    fn from(event: RunEvent) -> Wire {
        match event {
            RunEvent::Started { id, workflow_id, workflow_name, workflow_version, stages: s, input } => {
                WorkflowRunStarted {
                    run_id: id,
                    workflow_id,
                    workflow_name,
                    workflow_version,
                    stages: stages(s),
                    input,
                }
                .into()
            }
            RunEvent::StageStarted { key, task_id } => WorkflowStageStarted { stage_key: key, task_id }.into(),
            RunEvent::StageCompleted { key, task_id, result } => {
                WorkflowStageCompleted { stage_key: key, task_id, result }.into()
            }
            RunEvent::StageFailed { key, task_id, error } => {
                WorkflowStageFailed { stage_key: key, task_id, error }.into()
            }
            RunEvent::Completed => WorkflowRunCompleted {}.into(),
            RunEvent::Failed { reason } => WorkflowRunFailed { reason }.into(),
        }
    }
}

impl From<WorkflowRunStarted> for RunEvent {
    fn from(w: WorkflowRunStarted) -> Self {
        RunEvent::Started {
            id: w.run_id,
            workflow_id: w.workflow_id,
            workflow_name: w.workflow_name,
            workflow_version: w.workflow_version,
            stages: stages(w.stages),
            input: w.input,
        }
    }
}

impl From<WorkflowStageStarted> for RunEvent {
    fn from(w: WorkflowStageStarted) -> Self {
        RunEvent::StageStarted { key: w.stage_key, task_id: w.task_id }
    }
}

impl From<WorkflowStageCompleted> for RunEvent {
    fn from(w: WorkflowStageCompleted) -> Self {
        RunEvent::StageCompleted { key: w.stage_key, task_id: w.task_id, result: w.result }
    }
}

impl From<WorkflowStageFailed> for RunEvent {
    fn from(w: WorkflowStageFailed) -> Self {
        RunEvent::StageFailed { key: w.stage_key, task_id: w.task_id, error: w.error }
    }
}

impl From<WorkflowRunCompleted> for RunEvent {
    fn from(_: WorkflowRunCompleted) -> Self {
        RunEvent::Completed
    }
}

impl From<WorkflowRunFailed> for RunEvent {
    fn from(w: WorkflowRunFailed) -> Self {
        RunEvent::Failed { reason: w.reason }
    }
}
