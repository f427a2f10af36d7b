use super::*;
use crate::aggregate::given;

fn spec(key: &str, depends_on: &[&str]) -> StageSpec {
    StageSpec::new(
        key,
        Title::parse(&format!("stage {key}")).unwrap(),
        Description::default(),
        Priority::DEFAULT,
        Capabilities::default(),
        depends_on.iter().map(|d| (*d).to_owned()).collect(),
        MaxAttempts::DEFAULT,
    )
    .unwrap()
}

fn diamond() -> Vec<StageSpec> {
    vec![spec("a", &[]), spec("b", &["a"]), spec("c", &["a"]), spec("d", &["b", "c"])]
}

fn message(error: DomainError) -> String {
    match error {
        DomainError::Invalid { field: "stages", message } => message,
        other => panic!("expected an invalid `stages`, got {other:?}"),
    }
}

#[test]
fn stages_must_form_a_dag_of_known_unique_keys() {
    assert!(Stages::parse(diamond()).is_ok());
    assert_eq!(message(Stages::parse(vec![]).unwrap_err()), "a workflow has 1 to 100 stages, got 0");
    assert_eq!(
        message(Stages::parse(vec![spec("a", &[]), spec("a", &[])]).unwrap_err()),
        "stage key `a` is used twice"
    );
    assert_eq!(message(Stages::parse(vec![spec("a", &["x"])]).unwrap_err()), "stage `a` depends on unknown stage `x`");
    assert_eq!(message(Stages::parse(vec![spec("a", &["a"])]).unwrap_err()), "stage `a` depends on itself");
    let cycle = vec![spec("a", &["c"]), spec("b", &["a"]), spec("c", &["b"]), spec("d", &[])];
    assert_eq!(message(Stages::parse(cycle).unwrap_err()), "stages form a cycle: a → c → b → a");
    assert!(StageSpec::new(
        "no spaces",
        Title::parse("t").unwrap(),
        Description::default(),
        Priority::DEFAULT,
        Capabilities::default(),
        vec![],
        MaxAttempts::DEFAULT
    )
    .is_err());
}

#[test]
fn a_long_chain_is_checked_without_recursion() {
    let keys: Vec<String> = (0..Stages::MAX).map(|i| format!("s{i}")).collect();
    let chain: Vec<StageSpec> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| spec(k, &if i == 0 { vec![] } else { vec![keys[i - 1].as_str()] }))
        .collect();
    assert!(Stages::parse(chain).is_ok());
}

#[test]
fn defining_again_makes_a_version_only_when_something_changed() {
    let name = WorkflowName::parse("Release").unwrap();
    let id = name.workflow_id();
    assert_eq!(id, WorkflowName::parse("  release ").unwrap().workflow_id());
    let define = |stages: Vec<StageSpec>| WorkflowCommand::Define {
        id,
        name: name.clone(),
        description: Description::default(),
        stages: Stages::parse(stages).unwrap(),
    };
    let v1 = WorkflowEvent::Defined {
        id,
        version: 1,
        name: "Release".into(),
        description: String::new(),
        stages: diamond(),
    };
    given::<Workflow>([]).when(define(diamond())).then([v1.clone()]);
    given::<Workflow>([v1.clone()]).when(define(diamond())).then([]);
    given::<Workflow>([v1]).when(define(vec![spec("a", &[])])).then([WorkflowEvent::Defined {
        id,
        version: 2,
        name: "Release".into(),
        description: String::new(),
        stages: vec![spec("a", &[])],
    }]);
}

const RUN: Uuid = Uuid::from_u128(7);

fn started() -> RunEvent {
    RunEvent::Started {
        id: RUN,
        workflow_id: Uuid::from_u128(1),
        workflow_name: "release".into(),
        workflow_version: 1,
        stages: diamond(),
        input: None,
    }
}

fn stage_started(key: &str) -> RunEvent {
    RunEvent::StageStarted { key: key.into(), task_id: stage_task_id(RUN, key) }
}

fn completed(key: &str) -> RunCommand {
    RunCommand::RecordStage {
        key: key.into(),
        task_id: stage_task_id(RUN, key),
        outcome: StageOutcome::Completed { result: Some(format!("\"{key}\"")) },
    }
}

fn stage_completed(key: &str) -> RunEvent {
    RunEvent::StageCompleted { key: key.into(), task_id: stage_task_id(RUN, key), result: Some(format!("\"{key}\"")) }
}

#[test]
fn a_diamond_fans_out_and_in() {
    let start = RunCommand::Start {
        id: RUN,
        workflow_id: Uuid::from_u128(1),
        workflow_name: "release".into(),
        workflow_version: 1,
        stages: diamond(),
        input: None,
    };
    given::<WorkflowRun>([]).when(start).then([started(), stage_started("a")]);
    given::<WorkflowRun>([started(), stage_started("a")]).when(completed("a")).then([
        stage_completed("a"),
        stage_started("b"),
        stage_started("c"),
    ]);
    let fanned_out = [started(), stage_started("a"), stage_completed("a"), stage_started("b"), stage_started("c")];
    given::<WorkflowRun>(fanned_out.clone()).when(completed("b")).then([stage_completed("b")]);
    let mut joined = fanned_out.to_vec();
    joined.push(stage_completed("b"));
    given::<WorkflowRun>(joined.clone()).when(completed("c")).then([stage_completed("c"), stage_started("d")]);
    joined.extend([stage_completed("c"), stage_started("d")]);
    given::<WorkflowRun>(joined.clone()).when(completed("d")).then([stage_completed("d"), RunEvent::Completed]);
    // Reported twice, or for a stage that has not started: nothing happens.
    given::<WorkflowRun>(joined.clone()).when(completed("b")).then([]);
    given::<WorkflowRun>(fanned_out).when(completed("d")).then([]);
}

#[test]
fn a_failed_stage_fails_the_run_and_skips_what_waits() {
    let history = [started(), stage_started("a"), stage_completed("a"), stage_started("b"), stage_started("c")];
    let fail = RunCommand::RecordStage {
        key: "b".into(),
        task_id: stage_task_id(RUN, "b"),
        outcome: StageOutcome::Failed { error: "boom".into() },
    };
    let events = [
        RunEvent::StageFailed { key: "b".into(), task_id: stage_task_id(RUN, "b"), error: "boom".into() },
        RunEvent::Failed { reason: "stage `b` failed: boom".into() },
    ];
    given::<WorkflowRun>(history.clone()).when(fail).then(events.clone());
    let mut after = history.to_vec();
    after.extend(events);
    let state = WorkflowRun::fold(&after);
    assert_eq!(state.status, RunStatus::Failed);
    assert_eq!(state.stage("d").unwrap().status, StageStatus::Skipped);
    // The run has ended: a late completion of `c` is recorded nowhere.
    given::<WorkflowRun>(after).when(completed("c")).then([]);
}
