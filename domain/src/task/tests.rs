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
        requires_approval: false,
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
    let heartbeat = TaskCommand::Heartbeat { agent_id: ADA, lease_expires_at: at(60), pauses: ClaimsState::default() };
    let extended = TaskEvent::LeaseExtended { agent_id: ADA, attempt: 1, lease_expires_at: at(60) };
    given::<Task>([created(), claimed(1)]).when(heartbeat).then([extended.clone()]);
    given::<Task>([created(), claimed(1), extended]).when(expire(at(30))).then([]);
}

#[test]
fn a_cancelled_task_tells_its_agent_through_the_heartbeat() {
    let cancelled = TaskEvent::Cancelled { reason: None };
    given::<Task>([created(), claimed(1), cancelled.clone()])
        .when(TaskCommand::Heartbeat { agent_id: ADA, lease_expires_at: at(60), pauses: ClaimsState::default() })
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

    let acknowledge = || TaskCommand::AcknowledgeOutlier { note: Message::parse("note", "a big refactor").unwrap() };
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
    assert_eq!((state.status, state.failures, state.attempt, state.lease), (TaskStatus::Pending, 0, 0, None));
}

#[test]
fn a_pause_that_stops_work_releases_the_task_at_its_heartbeat_without_using_an_attempt() {
    use crate::claims::{Claims, ClaimsCommand, Scope};
    let pause = |scope: Scope, drain| {
        let command = ClaimsCommand::Pause { scope, reason: Message::parse("reason", "incident 42").unwrap(), drain };
        Claims::decide(&ClaimsState::default(), &command).unwrap().iter().fold(ClaimsState::default(), Claims::evolve)
    };
    let heartbeat = |pauses| TaskCommand::Heartbeat { agent_id: ADA, lease_expires_at: at(60), pauses };
    let extended = TaskEvent::LeaseExtended { agent_id: ADA, attempt: 1, lease_expires_at: at(60) };
    // A draining pause, or one of another capability, lets the work go on.
    given::<Task>([created(), claimed(1)]).when(heartbeat(pause(Scope::All, true))).then([extended.clone()]);
    let rust = Scope::Capability(Capability::parse("rust").unwrap());
    given::<Task>([created(), claimed(1)]).when(heartbeat(pause(rust, false))).then([extended]);
    let released = TaskEvent::Released {
        agent_id: ADA,
        attempt: 1,
        reason: "claims paused for capability docs: incident 42".into(),
    };
    let docs = Scope::Capability(Capability::parse("docs").unwrap());
    given::<Task>([created(), claimed(1)]).when(heartbeat(pause(docs, false))).then([released.clone()]);
    let state = Task::fold(&[created(), claimed(1), released]);
    assert_eq!((state.status, state.attempt, state.failures), (TaskStatus::Pending, 0, 0));
    // Another agent's heartbeat is refused as before.
    given::<Task>([created(), claimed(1)])
        .when(TaskCommand::Heartbeat { agent_id: BOB, lease_expires_at: at(60), pauses: pause(Scope::All, false) })
        .then_error(DomainError::Forbidden(format!("task {} is held by another agent", id())));
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

#[test]
fn a_task_requiring_approval_waits_until_approved_and_a_rejected_one_is_never_claimable() {
    let TaskEvent::Created { id: task_id, title, description, priority, required_capabilities, max_attempts, .. } =
        created()
    else {
        unreachable!()
    };
    let awaiting = TaskEvent::Created {
        id: task_id,
        title,
        description,
        priority,
        required_capabilities,
        parent_task_id: None,
        max_attempts,
        run_after: None,
        input: None,
        stage: None,
        requires_approval: true,
    };
    let state = Task::fold(std::slice::from_ref(&awaiting));
    assert_eq!(state.status, TaskStatus::AwaitingApproval);
    given::<Task>([awaiting.clone()])
        .when(claim(ADA))
        .then_error(DomainError::Conflict(format!("task {} is AWAITING_APPROVAL and cannot be claimed", id())));
    let approved = TaskEvent::Approved { note: Some("looks safe".into()) };
    given::<Task>([awaiting.clone()])
        .when(TaskCommand::Approve { note: Some(Message::parse("note", "looks safe").unwrap()) })
        .then([approved.clone()]);
    given::<Task>([awaiting.clone(), approved.clone()]).when(claim(ADA)).then([claimed(1)]);
    given::<Task>([awaiting.clone(), approved])
        .when(TaskCommand::Reject { reason: Message::parse("reason", "too risky").unwrap() })
        .then_error(DomainError::Conflict(format!(
            "task {} is PENDING; only a task awaiting approval is approved or rejected",
            id()
        )));
    let rejected = TaskEvent::Rejected { reason: "too risky".into() };
    given::<Task>([awaiting.clone()])
        .when(TaskCommand::Reject { reason: Message::parse("reason", "too risky").unwrap() })
        .then([rejected.clone()]);
    let state = Task::fold(&[awaiting.clone(), rejected.clone()]);
    assert!(state.status.is_final());
    given::<Task>([awaiting.clone(), rejected])
        .when(claim(ADA))
        .then_error(DomainError::Conflict(format!("task {} is REJECTED and cannot be claimed", id())));
    // Waiting, it can still be cancelled.
    given::<Task>([awaiting]).when(TaskCommand::Cancel { reason: None }).then([TaskEvent::Cancelled { reason: None }]);
}

#[test]
fn a_cap_comes_with_the_task_or_later_and_stops_changing_when_the_work_is_over() {
    let cap = Money::parse("maxCost", "10.00").unwrap();
    given::<Task>([])
        .when(TaskCommand::Create(CreateTask {
            required_capabilities: Capabilities::parse(&["docs"]).unwrap(),
            max_attempts: MaxAttempts::parse(2).unwrap(),
            max_cost: Some(cap),
            ..CreateTask::new(id(), Title::parse("Write docs").unwrap())
        }))
        .then([created(), TaskEvent::MaxCostSet { max_cost: cap }]);
    let state = Task::fold(&[created(), TaskEvent::MaxCostSet { max_cost: cap }]);
    assert_eq!(state.max_cost, Some(cap));
    // The same cap again changes nothing; another one is an event.
    given::<Task>([created(), TaskEvent::MaxCostSet { max_cost: cap }])
        .when(TaskCommand::SetMaxCost { max_cost: cap })
        .then([]);
    let raised = Money::parse("maxCost", "12.50").unwrap();
    given::<Task>([created(), claimed(1)])
        .when(TaskCommand::SetMaxCost { max_cost: raised })
        .then([TaskEvent::MaxCostSet { max_cost: raised }]);
    given::<Task>([created(), claimed(1), TaskEvent::Completed { agent_id: ADA, attempt: 1, result: None }])
        .when(TaskCommand::SetMaxCost { max_cost: raised })
        .then_error(DomainError::Conflict(format!("task {} is COMPLETED and can no longer change", id())));
}

#[test]
fn the_lease_holder_asks_for_approval_a_supervisor_answers_once_and_silence_comes_to_the_default() {
    let request_id = Uuid::from_u128(0xa11);
    let ask = |agent_id: Uuid| TaskCommand::RequestApproval {
        agent_id,
        request_id,
        action: Message::parse("action", "force-push").unwrap(),
        details: None,
        approve_on_timeout: true,
        expires_at: at(60),
    };
    given::<Task>([created()]).when(ask(ADA)).then_error(DomainError::Conflict(format!(
        "task {} is not held by this agent (its lease may have expired)",
        id()
    )));
    given::<Task>([created(), claimed(1)])
        .when(ask(BOB))
        .then_error(DomainError::Forbidden(format!("task {} is held by another agent", id())));
    let requested = TaskEvent::ApprovalRequested {
        request_id,
        agent_id: ADA,
        attempt: 1,
        action: "force-push".into(),
        details: None,
        approve_on_timeout: true,
        expires_at: at(60),
    };
    given::<Task>([created(), claimed(1)]).when(ask(ADA)).then([requested.clone()]);
    given::<Task>([created(), claimed(1), requested.clone()])
        .when(ask(ADA))
        .then_error(DomainError::Conflict(format!("approval request {request_id} exists")));
    let state = Task::fold(&[created(), claimed(1), requested.clone()]);
    assert_eq!(state.approval_due(), Some(at(60)));

    // Not yet run out: nothing; run out: its default.
    let history = [created(), claimed(1), requested.clone()];
    given::<Task>(history.clone()).when(TaskCommand::TimeOutApprovals { now: at(59) }).then([]);
    let timed_out = TaskEvent::ApprovalDecided { request_id, approved: true, note: None, timed_out: true };
    given::<Task>(history.clone()).when(TaskCommand::TimeOutApprovals { now: at(60) }).then([timed_out.clone()]);
    let denied = TaskEvent::ApprovalDecided { request_id, approved: false, note: Some("no".into()), timed_out: false };
    given::<Task>(history.clone())
        .when(TaskCommand::DecideApproval {
            request_id,
            approved: false,
            note: Some(Message::parse("note", "no").unwrap()),
        })
        .then([denied.clone()]);
    let decided = [created(), claimed(1), requested, denied];
    assert_eq!(Task::fold(&decided).approval_due(), None);
    given::<Task>(decided.clone()).when(TaskCommand::TimeOutApprovals { now: at(90) }).then([]);
    given::<Task>(decided)
        .when(TaskCommand::DecideApproval { request_id, approved: true, note: None })
        .then_error(DomainError::Conflict(format!("approval request {request_id} was denied already")));
}
