//! Workflows on the write side: defining templates, starting runs, creating the tasks of the
//! stages a run starts, and recording how those tasks end.
//!
//! A run's events decide which stages start; the tasks that carry them out are created after the
//! run's append, by whoever appended it (the request that started the run, or the orchestrator
//! that recorded a stage's outcome). A stage's task id and its creating command id are derived from
//! the run and the stage, so creating it again, after a crash or by a second orchestrator, returns
//! the task that exists and appends nothing.

use std::collections::BTreeMap;

use devart_domain::task::{
    Capabilities, CreateTask, Description, Document, MaxAttempts, Priority, StageLink, Task, TaskCommand, TaskEvent,
    TaskStatus, Title,
};
use devart_domain::workflow::{
    RunCommand, RunEvent, RunState, RunStatus, StageOutcome, StageRun, StageSpec, Stages, Workflow, WorkflowCommand,
    WorkflowEvent, WorkflowName, WorkflowRun, WorkflowState,
};
use devart_domain::{Actor, DomainError, Event, StreamId};
use uuid::Uuid;

use crate::entry::Commands;
use crate::handler::CommandError;
use crate::store::{fold, CommandContext, Folded, Recorded, Stored};

impl Stored for Workflow {
    fn wrap(event: WorkflowEvent) -> Event {
        Event::Workflow(event)
    }
    fn unwrap(event: &Event) -> Option<&WorkflowEvent> {
        match event {
            Event::Workflow(e) => Some(e),
            _ => None,
        }
    }
}

impl Stored for WorkflowRun {
    fn wrap(event: RunEvent) -> Event {
        Event::WorkflowRun(event)
    }
    fn unwrap(event: &Event) -> Option<&RunEvent> {
        match event {
            Event::WorkflowRun(e) => Some(e),
            _ => None,
        }
    }
}

/// The actor of the commands the orchestrator issues.
pub const ORCHESTRATOR: &str = "workflow-orchestrator";

/// The workflows' commands: `commands.workflows()`.
#[derive(Clone, Copy)]
pub struct Workflows<'a> {
    commands: &'a Commands,
}

impl Commands {
    /// The workflows' commands: defining workflows, starting and advancing runs, and the
    /// orchestration that moves runs on as their tasks end.
    pub fn workflows(&self) -> Workflows<'_> {
        Workflows { commands: self }
    }
}

impl Workflows<'_> {
    /// Defines a workflow, or its next version when the name is taken (names ignore case). The
    /// same definition again changes nothing and returns the current version.
    pub async fn define(
        self,
        name: WorkflowName,
        description: Description,
        stages: Stages,
        context: &CommandContext,
    ) -> Result<Folded<WorkflowState>, CommandError> {
        let id = name.workflow_id();
        self.commands
            .execute::<Workflow>(id, WorkflowCommand::Define { id, name, description, stages }, context, None)
            .await
    }

    /// Starts run `run_id` of the newest version of `workflow_id` and creates its first stages'
    /// tasks.
    pub async fn start(
        self,
        workflow_id: Uuid,
        run_id: Uuid,
        input: Option<Document>,
        context: &CommandContext,
    ) -> Result<Folded<RunState>, CommandError> {
        let workflow = self.commands.load::<Workflow>(workflow_id).await?.state;
        if workflow.version == 0 {
            return Err(DomainError::NotFound(format!("workflow {workflow_id}")).into());
        }
        let start = RunCommand::Start {
            id: run_id,
            workflow_id,
            workflow_name: workflow.name,
            workflow_version: workflow.version,
            stages: workflow.stages,
            input,
        };
        self.commands.execute::<WorkflowRun>(run_id, start, context, None).await?;
        self.advance_run(run_id, context).await
    }

    /// Brings the world in step with a run: creates the tasks of its started stages (again,
    /// harmlessly, if they exist), or, once the run has failed, cancels those still going.
    /// Returns the run as it then stands.
    pub async fn advance_run(self, run_id: Uuid, context: &CommandContext) -> Result<Folded<RunState>, CommandError> {
        let run = self.commands.load::<WorkflowRun>(run_id).await?;
        match run.state.status {
            RunStatus::Running => {
                for stage in run.state.started() {
                    let create = match stage_task(&run.state, stage) {
                        Ok(create) => create,
                        Err(error) => {
                            let reason = format!("stage `{}` could not start: {error}", stage.spec.key);
                            let mut fail_context = context.clone();
                            fail_context.command_id = Uuid::new_v5(&run_id, b"fail: a stage could not start");
                            self.commands
                                .execute::<WorkflowRun>(run_id, RunCommand::Fail { reason }, &fail_context, None)
                                .await?;
                            return Box::pin(self.advance_run(run_id, context)).await;
                        }
                    };
                    let task_id = create.id;
                    let mut create_context = context.clone();
                    create_context.command_id = Uuid::new_v5(&task_id, b"create");
                    self.commands.execute::<Task>(task_id, TaskCommand::Create(create), &create_context, None).await?;
                }
            }
            RunStatus::Failed => {
                for task_id in run.state.started().filter_map(|s| s.task_id) {
                    let mut cancel_context = context.clone();
                    cancel_context.command_id = Uuid::new_v5(&task_id, b"cancel: its run failed");
                    let cancel = TaskCommand::Cancel { reason: Some("its workflow run failed".into()) };
                    match self.commands.execute::<Task>(task_id, cancel, &cancel_context, None).await {
                        Ok(_) | Err(CommandError::Domain(_)) => {}
                        Err(error) => return Err(error),
                    }
                }
            }
            RunStatus::Absent | RunStatus::Completed => {}
        }
        Ok(run)
    }

    /// Records how the stage tasks among `events` ended in their runs and moves those runs on:
    /// what the orchestrator does with each batch of the global order. Every step is idempotent,
    /// so a batch may be processed again after a crash.
    pub async fn orchestrate(self, events: &[Recorded]) -> Result<(), CommandError> {
        let mut runs: BTreeMap<Uuid, CommandContext> = BTreeMap::new();
        let mut endings: Vec<(&Recorded, Uuid)> = Vec::new();
        for recorded in events {
            let stream = &recorded.meta.stream_id;
            match &recorded.event {
                Event::WorkflowRun(
                    RunEvent::Started { .. } | RunEvent::StageStarted { .. } | RunEvent::Failed { .. },
                ) => {
                    if let Some(run_id) = stream.id_of(<WorkflowRun as devart_domain::Aggregate>::KIND) {
                        runs.insert(run_id, caused_by(recorded));
                    }
                }
                Event::Task(
                    TaskEvent::Completed { .. }
                    | TaskEvent::Failed { .. }
                    | TaskEvent::Cancelled { .. }
                    | TaskEvent::Rejected { .. }
                    | TaskEvent::Deleted,
                ) => {
                    if let Some(task_id) = stream.id_of(<Task as devart_domain::Aggregate>::KIND) {
                        endings.push((recorded, task_id));
                    }
                }
                _ => {}
            }
        }
        if !endings.is_empty() {
            let streams: Vec<StreamId> =
                endings.iter().map(|(_, id)| StreamId::new(<Task as devart_domain::Aggregate>::KIND, *id)).collect();
            let stages: BTreeMap<Uuid, StageLink> = self
                .commands
                .store()
                .first_events(&streams)
                .await?
                .into_iter()
                .filter_map(|r| match r.event {
                    Event::Task(TaskEvent::Created { id, stage: Some(stage), .. }) => Some((id, stage)),
                    _ => None,
                })
                .collect();
            for (recorded, task_id) in endings {
                let Some(stage) = stages.get(&task_id) else { continue };
                let outcome = match self.outcome(task_id, recorded).await? {
                    Some(outcome) => outcome,
                    None => continue,
                };
                let context = caused_by(recorded);
                let record = RunCommand::RecordStage { key: stage.stage_key.clone(), task_id, outcome };
                match self.commands.execute::<WorkflowRun>(stage.run_id, record, &context, None).await {
                    Ok(_) => {}
                    // A link to a run or stage that does not exist cannot be recorded; nothing waits on it.
                    Err(CommandError::Domain(DomainError::NotFound(what))) => {
                        tracing::warn!(%task_id, what, "a stage task's run or stage is missing");
                        continue;
                    }
                    Err(error) => return Err(error),
                }
                runs.insert(stage.run_id, context);
            }
        }
        for (run_id, context) in runs {
            self.advance_run(run_id, &context).await?;
        }
        Ok(())
    }

    /// The outcome a task's ending event reports for its stage; `None` when it was not its end.
    async fn outcome(self, task_id: Uuid, ending: &Recorded) -> Result<Option<StageOutcome>, CommandError> {
        Ok(Some(match &ending.event {
            Event::Task(TaskEvent::Completed { result, .. }) => StageOutcome::Completed { result: result.clone() },
            Event::Task(TaskEvent::Cancelled { reason }) => StageOutcome::Failed {
                error: reason.as_ref().map_or_else(|| "cancelled".to_owned(), |r| format!("cancelled: {r}")),
            },
            Event::Task(TaskEvent::Deleted) => StageOutcome::Failed { error: "its task was deleted".into() },
            Event::Task(TaskEvent::Rejected { reason }) => {
                StageOutcome::Failed { error: format!("its task was rejected: {reason}") }
            }
            Event::Task(TaskEvent::Failed { failures }) => {
                // The last attempt's error is in the event before; read the stream as of the failure.
                let events =
                    self.commands.store().read_stream(&ending.meta.stream_id, Some(ending.meta.stream_version)).await?;
                let task = fold::<Task>(&events).state;
                if task.status != TaskStatus::Failed {
                    return Ok(None);
                }
                let last = task.errors.last().map_or("no error given", |e| e.error.as_str());
                StageOutcome::Failed { error: format!("failed after {failures} attempt(s): {last}") }
            }
            _ => {
                tracing::warn!(%task_id, event = ending.meta.event_type, "not a task's ending");
                return Ok(None);
            }
        }))
    }
}

/// A command the orchestrator issues because of `event`: same correlation, caused by it, and with
/// an id derived from it, so that processing the event again is recognised.
fn caused_by(event: &Recorded) -> CommandContext {
    CommandContext {
        command_id: Uuid::new_v5(&event.meta.event_id, ORCHESTRATOR.as_bytes()),
        actor: Actor::system(ORCHESTRATOR),
        correlation_id: event.meta.correlation_id,
        causation_id: Some(event.meta.event_id),
    }
}

/// The task that carries out `stage` of `run`: the stage's settings, and as input the run's input
/// with the results of the stages it depends on, `{"input": …, "dependencies": {"key": result}}`.
fn stage_task(run: &RunState, stage: &StageRun) -> Result<CreateTask, DomainError> {
    let spec: &StageSpec = &stage.spec;
    let json = |text: Option<&String>| -> serde_json::Value {
        text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or(serde_json::Value::Null)
    };
    let dependencies: serde_json::Map<String, serde_json::Value> =
        spec.depends_on.iter().map(|key| (key.clone(), json(run.stage(key).and_then(|s| s.result.as_ref())))).collect();
    let input = serde_json::json!({ "input": json(run.input.as_ref()), "dependencies": dependencies });
    let task_id = stage.task_id.unwrap_or_else(|| devart_domain::workflow::stage_task_id(run.id, &spec.key));
    Ok(CreateTask {
        id: task_id,
        title: Title::parse(&spec.title)?,
        description: Description::parse(&spec.description)?,
        priority: Priority::parse(i64::from(spec.priority))?,
        required_capabilities: Capabilities::parse(&spec.required_capabilities)?,
        parent_task_id: None,
        max_attempts: MaxAttempts::parse(i64::from(spec.max_attempts))?,
        run_after: None,
        input: Some(Document::parse("input", input.to_string())?),
        stage: Some(StageLink { run_id: run.id, stage_key: spec.key.clone(), workflow_id: Some(run.workflow_id) }),
        requires_approval: spec.requires_approval,
        max_cost: None,
    })
}
