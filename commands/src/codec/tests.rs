//! The codec against every event type and version: round trips, upcasts, and the captured forms.

use std::collections::BTreeSet;

use devart_domain::claims::Scope as ClaimScope;
use devart_domain::document::DocumentEvent;
use devart_domain::money::Money;
use devart_domain::outliers::{CostOutlier, Score};
use devart_domain::task::{Capability, StageLink};
use devart_domain::user::UserRole;
use devart_domain::workflow::StageSpec;

use super::*;

fn at() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap()
}

fn agent() -> Uuid {
    Uuid::from_u128(0xa)
}

fn samples() -> Vec<Event> {
    vec![
        Event::Task(TaskEvent::Created {
            id: Uuid::from_u128(1),
            title: "t".into(),
            description: "d".into(),
            priority: 5,
            required_capabilities: vec!["rust".into()],
            parent_task_id: Some(Uuid::from_u128(2)),
            max_attempts: 5,
            run_after: Some(at()),
            input: Some(r#"{"a":1}"#.into()),
            stage: Some(StageLink {
                run_id: Uuid::from_u128(9),
                stage_key: "build".into(),
                workflow_id: Some(Uuid::from_u128(10)),
            }),
            requires_approval: true,
        }),
        Event::Task(TaskEvent::Updated { title: None, description: Some("x".into()), required_capabilities: None }),
        Event::Task(TaskEvent::Reprioritized { from: 1, to: 2 }),
        Event::Task(TaskEvent::Deleted),
        Event::Task(TaskEvent::Claimed { agent_id: agent(), attempt: 1, lease_expires_at: at() }),
        Event::Task(TaskEvent::LeaseExtended { agent_id: agent(), attempt: 1, lease_expires_at: at() }),
        Event::Task(TaskEvent::ProgressReported {
            agent_id: agent(),
            attempt: 1,
            message: "half".into(),
            percent: Some(50),
        }),
        Event::Task(TaskEvent::Completed { agent_id: agent(), attempt: 1, result: Some("[1]".into()) }),
        Event::Task(TaskEvent::AttemptFailed {
            agent_id: agent(),
            attempt: 1,
            error: "boom".into(),
            retry_at: Some(at()),
        }),
        Event::Task(TaskEvent::LeaseExpired { agent_id: agent(), attempt: 2, retry_at: None }),
        Event::Task(TaskEvent::Released { agent_id: agent(), attempt: 2, reason: "off".into() }),
        Event::Task(TaskEvent::Failed { failures: 3 }),
        Event::Task(TaskEvent::Cancelled { reason: Some("no".into()) }),
        Event::Task(TaskEvent::Retried),
        Event::Task(TaskEvent::FlaggedAsCostOutlier(CostOutlier {
            cost: Money::parse("cost", "31.25").unwrap(),
            median: Money::parse("median", "0.875").unwrap(),
            mad: Score::from_micros(481_225),
            z_score: Score::from_micros(7_438_112),
            threshold: Score::from_micros(3_500_000),
            comparable: 40,
            group: "stage:release/build".into(),
        })),
        Event::Task(TaskEvent::OutlierAcknowledged { note: "a one-off migration".into() }),
        Event::Agent(AgentEvent::Registered {
            id: Uuid::from_u128(3),
            name: "builder".into(),
            capabilities: vec!["rust".into()],
            key_id: "k".into(),
        }),
        Event::Agent(AgentEvent::KeyRotated { key_id: "k2".into() }),
        Event::Agent(AgentEvent::Deactivated),
        Event::Agent(AgentEvent::Activated),
        Event::Workflow(WorkflowEvent::Defined {
            id: Uuid::from_u128(4),
            version: 2,
            name: "release".into(),
            description: "ship it".into(),
            stages: vec![stage("a", &[]), StageSpec { requires_approval: true, ..stage("b", &["a"]) }],
        }),
        Event::WorkflowRun(RunEvent::Started {
            id: Uuid::from_u128(5),
            workflow_id: Uuid::from_u128(4),
            workflow_name: "release".into(),
            workflow_version: 2,
            stages: vec![stage("a", &[])],
            input: Some("{}".into()),
        }),
        Event::WorkflowRun(RunEvent::StageStarted { key: "a".into(), task_id: Uuid::from_u128(6) }),
        Event::WorkflowRun(RunEvent::StageCompleted {
            key: "a".into(),
            task_id: Uuid::from_u128(6),
            result: Some("1".into()),
        }),
        Event::WorkflowRun(RunEvent::StageFailed {
            key: "b".into(),
            task_id: Uuid::from_u128(7),
            error: "boom".into(),
        }),
        Event::WorkflowRun(RunEvent::Completed),
        Event::WorkflowRun(RunEvent::Failed { reason: "stage `b` failed: boom".into() }),
    ]
    .into_iter()
    .chain(service_samples())
    .chain([Event::Settings(SettingsEvent::Changed {
        key: "queue.defaultLeaseSeconds".into(),
        value: "60".into(),
        previous: "30".into(),
    })])
    .chain([
        Event::User(UserEvent::Created {
            id: Uuid::from_u128(9),
            email: "ada@example.org".into(),
            role: UserRole::Supervisor,
        }),
        Event::User(UserEvent::RoleChanged { role: UserRole::Admin, previous: UserRole::Supervisor }),
        Event::User(UserEvent::Deactivated),
        Event::User(UserEvent::Reactivated),
        Event::User(UserEvent::PasswordChanged),
    ])
    .chain(sparse_samples())
    .collect()
}

/// Samples with the other side of every option: nothing where the ones above have something,
/// and the roles the ones above leave out.
fn sparse_samples() -> Vec<Event> {
    let m = |s: &str| Money::parse("amount", s).unwrap();
    vec![
        Event::Task(TaskEvent::Created {
            id: Uuid::from_u128(21),
            title: "minimal".into(),
            description: String::new(),
            priority: 1,
            required_capabilities: vec![],
            parent_task_id: None,
            max_attempts: 1,
            run_after: None,
            input: None,
            stage: None,
            requires_approval: false,
        }),
        Event::Task(TaskEvent::Updated {
            title: Some("renamed".into()),
            description: None,
            required_capabilities: Some(vec!["docs".into(), "rust".into()]),
        }),
        Event::Task(TaskEvent::ProgressReported {
            agent_id: agent(),
            attempt: 3,
            message: "still going".into(),
            percent: None,
        }),
        Event::Task(TaskEvent::Completed { agent_id: agent(), attempt: 2, result: None }),
        Event::Task(TaskEvent::AttemptFailed {
            agent_id: agent(),
            attempt: 3,
            error: "gave up".into(),
            retry_at: None,
        }),
        Event::Task(TaskEvent::LeaseExpired { agent_id: agent(), attempt: 1, retry_at: Some(at()) }),
        Event::Task(TaskEvent::Cancelled { reason: None }),
        Event::Agent(AgentEvent::Registered {
            id: Uuid::from_u128(23),
            name: "generalist".into(),
            capabilities: vec![],
            key_id: "k3".into(),
        }),
        Event::Workflow(WorkflowEvent::Defined {
            id: Uuid::from_u128(24),
            version: 1,
            name: "one".into(),
            description: String::new(),
            stages: vec![stage("only", &[])],
        }),
        Event::WorkflowRun(RunEvent::Started {
            id: Uuid::from_u128(25),
            workflow_id: Uuid::from_u128(24),
            workflow_name: "one".into(),
            workflow_version: 1,
            stages: vec![stage("only", &[])],
            input: None,
        }),
        Event::WorkflowRun(RunEvent::StageCompleted { key: "only".into(), task_id: Uuid::from_u128(26), result: None }),
        Event::Service(ServiceEvent::Registered {
            id: Uuid::from_u128(27),
            name: "free".into(),
            currency: "EUR".into(),
            monthly_budget: m("0"),
            fallback_service_id: None,
            unit_prices: Default::default(),
            period: devart_domain::service::Period { year: 2027, month: 1 },
        }),
        Event::Service(ServiceEvent::Updated {
            name: None,
            fallback_service_id: Some(Some(Uuid::from_u128(8))),
            unit_prices: Some(Default::default()),
        }),
        Event::Service(ServiceEvent::UsageAuthorized {
            reservation_id: Uuid::from_u128(28),
            amount: m("0.000001"),
            task_id: None,
            agent_id: None,
            requested_service_id: None,
            expires_at: at(),
        }),
        Event::Service(ServiceEvent::UsageRefused {
            amount: m("1000000"),
            task_id: Some(Uuid::from_u128(1)),
            agent_id: Some(agent()),
            reason: "suspended".into(),
        }),
        Event::Service(ServiceEvent::UsageCharged {
            charge_id: Uuid::from_u128(29),
            reservation_id: None,
            amount: m("3.5"),
            released: m("0"),
            units: None,
            task_id: Some(Uuid::from_u128(1)),
            agent_id: None,
        }),
        Event::User(UserEvent::Created {
            id: Uuid::from_u128(30),
            email: "vera@example.org".into(),
            role: UserRole::Viewer,
        }),
        Event::User(UserEvent::Created {
            id: Uuid::from_u128(31),
            email: "root@example.org".into(),
            role: UserRole::Admin,
        }),
        Event::User(UserEvent::RoleChanged { role: UserRole::Viewer, previous: UserRole::Admin }),
        Event::Claims(ClaimsEvent::Paused { scope: ClaimScope::All, reason: "incident 42".into(), drain: true }),
        Event::Claims(ClaimsEvent::Paused {
            scope: ClaimScope::Capability(Capability::parse("gpu").unwrap()),
            reason: "quota".into(),
            drain: false,
        }),
        Event::Claims(ClaimsEvent::Resumed { scope: ClaimScope::Workflow(Uuid::from_u128(10)) }),
        Event::Agent(AgentEvent::Quarantined { failures: 5, reason: "5 failed attempts in a row".into() }),
        Event::Task(TaskEvent::Approved { note: Some("looks safe".into()) }),
        Event::Task(TaskEvent::Approved { note: None }),
        Event::Task(TaskEvent::Rejected { reason: "too risky".into() }),
        Event::Task(TaskEvent::MaxCostSet { max_cost: Money::parse("maxCost", "10.00").unwrap() }),
        Event::Task(TaskEvent::ApprovalRequested {
            request_id: Uuid::from_u128(30),
            agent_id: agent(),
            attempt: 2,
            action: "force-push to main".into(),
            details: Some(r#"{"branch":"main"}"#.into()),
            approve_on_timeout: false,
            expires_at: at(),
        }),
        Event::Task(TaskEvent::ApprovalDecided {
            request_id: Uuid::from_u128(30),
            approved: true,
            note: Some("go ahead".into()),
            timed_out: false,
        }),
        Event::Task(TaskEvent::ApprovalDecided {
            request_id: Uuid::from_u128(31),
            approved: false,
            note: None,
            timed_out: true,
        }),
        Event::Agent(AgentEvent::DailySpendingCapSet { daily_cap: Some(Money::parse("dailyCap", "25.50").unwrap()) }),
        Event::Agent(AgentEvent::DailySpendingCapSet { daily_cap: None }),
        Event::Document(DocumentEvent::Added {
            id: Uuid::from_u128(40),
            title: "Deploys".into(),
            content: "# Deploys\n\nRoll back with `make rollback`.".into(),
            tags: vec!["ops".into(), "runbook".into()],
            source: "wiki/deploys".into(),
            metadata: r#"{"owner":"ops"}"#.into(),
        }),
        Event::Document(DocumentEvent::Updated {
            title: None,
            content: Some("new text".into()),
            source: Some(String::new()),
            metadata: None,
        }),
        Event::Document(DocumentEvent::Tagged { tags: vec!["k8s".into()] }),
        Event::Document(DocumentEvent::Removed),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The v1 layouts of event types that have a newer one, as the first release wrote them.
fn older_layouts() -> Vec<(&'static str, u16, Vec<u8>, serde_json::Value)> {
    let v1 = task::v1::TaskCreated {
        task_id: Uuid::from_u128(41),
        title: "from the first release".into(),
        description: "d".into(),
        priority: 4,
        required_capabilities: vec!["rust".into()],
        parent_task_id: Some(Uuid::from_u128(42)),
    };
    // As v2 wrote the first sample, before a stage recorded its workflow.
    let v2 = task::v2::TaskCreated {
        task_id: Uuid::from_u128(1),
        title: "t".into(),
        description: "d".into(),
        priority: 5,
        required_capabilities: vec!["rust".into()],
        parent_task_id: Some(Uuid::from_u128(2)),
        max_attempts: 5,
        run_after: Some(at()),
        input: Some(r#"{"a":1}"#.into()),
        stage: Some(task::Stage { run_id: Uuid::from_u128(9), stage_key: "build".into() }),
    };
    // And the sparse one.
    let sparse = task::v2::TaskCreated {
        task_id: Uuid::from_u128(21),
        title: "minimal".into(),
        description: String::new(),
        priority: 1,
        required_capabilities: vec![],
        parent_task_id: None,
        max_attempts: 1,
        run_after: None,
        input: None,
        stage: None,
    };
    vec![
        ("TaskCreated", 1, postcard::to_allocvec(&v1).unwrap(), serde_json::to_value(&v1).unwrap()),
        ("TaskCreated", 2, postcard::to_allocvec(&v2).unwrap(), serde_json::to_value(&v2).unwrap()),
        ("TaskCreated", 2, postcard::to_allocvec(&sparse).unwrap(), serde_json::to_value(&sparse).unwrap()),
    ]
    .into_iter()
    .chain(workflow_v1_layouts())
    .collect()
}

/// The workflow samples as v1 wrote them, before a stage could wait for approval.
fn workflow_v1_layouts() -> Vec<(&'static str, u16, Vec<u8>, serde_json::Value)> {
    let defined = |id: u128, version: u32, name: &str, description: &str, stages| workflow::v1::WorkflowDefined {
        workflow_id: Uuid::from_u128(id),
        version,
        name: name.into(),
        description: description.into(),
        stages,
    };
    let started =
        |id: u128, workflow: u128, name: &str, version: u32, stages, input| workflow::v1::WorkflowRunStarted {
            run_id: Uuid::from_u128(id),
            workflow_id: Uuid::from_u128(workflow),
            workflow_name: name.into(),
            workflow_version: version,
            stages,
            input,
        };
    let layouts = [
        defined(4, 2, "release", "ship it", vec![stage_v1("a", &[]), stage_v1("b", &["a"])]),
        defined(24, 1, "one", "", vec![stage_v1("only", &[])]),
    ]
    .into_iter()
    .map(|d| ("WorkflowDefined", 1, postcard::to_allocvec(&d).unwrap(), serde_json::to_value(&d).unwrap()));
    let runs = [
        started(5, 4, "release", 2, vec![stage_v1("a", &[])], Some("{}".to_owned())),
        started(25, 24, "one", 1, vec![stage_v1("only", &[])], None),
    ]
    .into_iter()
    .map(|r| ("WorkflowRunStarted", 1, postcard::to_allocvec(&r).unwrap(), serde_json::to_value(&r).unwrap()));
    layouts.chain(runs).collect()
}

fn captured() -> serde_json::Value {
    let current: Vec<serde_json::Value> = samples()
        .iter()
        .map(|event| {
            let (ty, v, bytes) = encode(event);
            serde_json::json!({ "type": ty, "schemaVersion": v, "postcard": hex(&bytes), "json": to_json(event) })
        })
        .collect();
    let older: Vec<serde_json::Value> = older_layouts()
        .into_iter()
        .map(|(ty, v, bytes, json)| {
            serde_json::json!({ "type": ty, "schemaVersion": v, "postcard": hex(&bytes), "json": json })
        })
        .collect();
    serde_json::json!({ "current": current, "older": older })
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// What each of [`older_layouts`] reads as today.
fn upcast_older() -> Vec<Event> {
    vec![
        Event::Task(TaskEvent::Created {
            id: Uuid::from_u128(41),
            title: "from the first release".into(),
            description: "d".into(),
            priority: 4,
            required_capabilities: vec!["rust".into()],
            parent_task_id: Some(Uuid::from_u128(42)),
            max_attempts: 3,
            run_after: None,
            input: None,
            stage: None,
            requires_approval: false,
        }),
        Event::Task(TaskEvent::Created {
            id: Uuid::from_u128(1),
            title: "t".into(),
            description: "d".into(),
            priority: 5,
            required_capabilities: vec!["rust".into()],
            parent_task_id: Some(Uuid::from_u128(2)),
            max_attempts: 5,
            run_after: Some(at()),
            input: Some(r#"{"a":1}"#.into()),
            stage: Some(StageLink { run_id: Uuid::from_u128(9), stage_key: "build".into(), workflow_id: None }),
            requires_approval: false,
        }),
        Event::Task(TaskEvent::Created {
            id: Uuid::from_u128(21),
            title: "minimal".into(),
            description: String::new(),
            priority: 1,
            required_capabilities: vec![],
            parent_task_id: None,
            max_attempts: 1,
            run_after: None,
            input: None,
            stage: None,
            requires_approval: false,
        }),
        Event::Workflow(WorkflowEvent::Defined {
            id: Uuid::from_u128(4),
            version: 2,
            name: "release".into(),
            description: "ship it".into(),
            stages: vec![stage("a", &[]), stage("b", &["a"])],
        }),
        Event::Workflow(WorkflowEvent::Defined {
            id: Uuid::from_u128(24),
            version: 1,
            name: "one".into(),
            description: String::new(),
            stages: vec![stage("only", &[])],
        }),
        Event::WorkflowRun(RunEvent::Started {
            id: Uuid::from_u128(5),
            workflow_id: Uuid::from_u128(4),
            workflow_name: "release".into(),
            workflow_version: 2,
            stages: vec![stage("a", &[])],
            input: Some("{}".into()),
        }),
        Event::WorkflowRun(RunEvent::Started {
            id: Uuid::from_u128(25),
            workflow_id: Uuid::from_u128(24),
            workflow_name: "one".into(),
            workflow_version: 1,
            stages: vec![stage("only", &[])],
            input: None,
        }),
    ]
}

/// The stored bytes and the JSON of every sample, and of the older layouts, as they were
/// captured once (`tests/fixtures/wire_samples.json`): whatever the codec becomes, existing
/// databases, streams and exports keep decoding to the same events, and new writes match them.
#[test]
fn the_stored_and_broadcast_forms_are_as_captured() {
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/fixtures/wire_samples.json")).unwrap();
    let now = captured();
    for part in ["current", "older"] {
        let (then, now) = (golden[part].as_array().unwrap(), now[part].as_array().unwrap());
        assert_eq!(then.len(), now.len(), "{part}: as many samples as captured");
        for (i, (then, now)) in then.iter().zip(now).enumerate() {
            assert_eq!(now, then, "{part} sample {i}");
        }
    }
    let expected = samples().into_iter().zip(golden["current"].as_array().unwrap());
    let older = upcast_older().into_iter().zip(golden["older"].as_array().unwrap());
    for (event, then) in expected.chain(older) {
        let (ty, v) = (then["type"].as_str().unwrap(), then["schemaVersion"].as_u64().unwrap() as u16);
        assert_eq!(decode(ty, v, &unhex(then["postcard"].as_str().unwrap())).unwrap(), event);
        assert_eq!(from_json(ty, v, &serde_json::to_vec(&then["json"]).unwrap()).unwrap(), event);
    }
}

fn service_samples() -> Vec<Event> {
    use devart_domain::service::Period;
    let m = |s: &str| Money::parse("amount", s).unwrap();
    let period = Period { year: 2026, month: 11 };
    let prices: std::collections::BTreeMap<String, Money> = [("token".to_owned(), m("0.000015"))].into();
    [
        ServiceEvent::Registered {
            id: Uuid::from_u128(8),
            name: "llm".into(),
            currency: "USD".into(),
            monthly_budget: m("100"),
            fallback_service_id: Some(Uuid::from_u128(9)),
            unit_prices: prices.clone(),
            period,
        },
        ServiceEvent::Updated { name: None, fallback_service_id: Some(None), unit_prices: Some(prices) },
        ServiceEvent::Updated { name: Some("x".into()), fallback_service_id: None, unit_prices: None },
        ServiceEvent::BudgetChanged { from: m("100"), to: m("150.5"), reason: "why".into() },
        ServiceEvent::Activated,
        ServiceEvent::Deactivated,
        ServiceEvent::UsageAuthorized {
            reservation_id: Uuid::from_u128(10),
            amount: m("1.25"),
            task_id: Some(Uuid::from_u128(1)),
            agent_id: Some(agent()),
            requested_service_id: Some(Uuid::from_u128(9)),
            expires_at: at(),
        },
        ServiceEvent::UsageRefused { amount: m("2"), task_id: None, agent_id: None, reason: "full".into() },
        ServiceEvent::UsageCharged {
            charge_id: Uuid::from_u128(11),
            reservation_id: Some(Uuid::from_u128(10)),
            amount: m("1"),
            released: m("0.25"),
            units: Some(("token".into(), 66_666)),
            task_id: None,
            agent_id: Some(agent()),
        },
        ServiceEvent::ReservationExpired { reservation_id: Uuid::from_u128(10), amount: m("1.25") },
        ServiceEvent::BudgetThresholdCrossed { threshold: 80, period, spent: m("80"), budget: m("100") },
        ServiceEvent::Suspended { period, spent: m("100"), budget: m("100") },
        ServiceEvent::Reactivated { reason: "new month".into() },
        ServiceEvent::PeriodStarted { period },
    ]
    .into_iter()
    .map(Event::Service)
    .collect()
}

fn stage(key: &str, depends_on: &[&str]) -> StageSpec {
    StageSpec {
        key: key.into(),
        title: format!("stage {key}"),
        description: String::new(),
        priority: 3,
        required_capabilities: vec!["rust".into()],
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        max_attempts: 2,
        requires_approval: false,
    }
}

/// A stage as v1 wrote it, the same as [`stage`] makes.
fn stage_v1(key: &str, depends_on: &[&str]) -> workflow::v1::Stage {
    workflow::v1::Stage {
        key: key.into(),
        title: format!("stage {key}"),
        description: String::new(),
        priority: 3,
        required_capabilities: vec!["rust".into()],
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        max_attempts: 2,
    }
}

#[test]
fn every_event_round_trips_through_postcard_and_json() {
    for event in samples() {
        let (ty, v, bytes) = encode(&event);
        assert_eq!(decode(ty, v, &bytes).unwrap(), event);
        let json = serde_json::to_vec(&to_json(&event)).unwrap();
        assert_eq!(from_json(ty, v, &json).unwrap(), event);
    }
}

#[test]
fn a_v1_task_created_is_upcast_with_the_defaults_of_its_time() {
    let v1 = task::v1::TaskCreated {
        task_id: Uuid::from_u128(1),
        title: "t".into(),
        description: String::new(),
        priority: 3,
        required_capabilities: vec![],
        parent_task_id: None,
    };
    let bytes = postcard::to_allocvec(&v1).unwrap();
    let Event::Task(TaskEvent::Created { max_attempts, run_after, input, .. }) =
        decode("TaskCreated", 1, &bytes).unwrap()
    else {
        panic!("not a TaskCreated");
    };
    assert_eq!((max_attempts, run_after, input), (3, None, None));
    let json = serde_json::to_vec(&v1).unwrap();
    assert!(matches!(from_json("TaskCreated", 1, &json), Ok(Event::Task(TaskEvent::Created { .. }))));
}

/// The stored type name of every variant of every aggregate's events. No wildcard: a new variant
/// does not compile until it is named here, and [`every_event_type_has_a_sample`] fails until it
/// has a sample (and the codec does not compile until it has a layout).
fn variant(event: &Event) -> &'static str {
    match event {
        Event::Task(e) => match e {
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
        },
        Event::Agent(e) => match e {
            AgentEvent::Registered { .. } => "AgentRegistered",
            AgentEvent::KeyRotated { .. } => "AgentKeyRotated",
            AgentEvent::Activated => "AgentActivated",
            AgentEvent::Deactivated => "AgentDeactivated",
            AgentEvent::Quarantined { .. } => "AgentQuarantined",
            AgentEvent::DailySpendingCapSet { .. } => "AgentDailySpendingCapSet",
        },
        Event::Workflow(e) => match e {
            WorkflowEvent::Defined { .. } => "WorkflowDefined",
        },
        Event::WorkflowRun(e) => match e {
            RunEvent::Started { .. } => "WorkflowRunStarted",
            RunEvent::StageStarted { .. } => "WorkflowStageStarted",
            RunEvent::StageCompleted { .. } => "WorkflowStageCompleted",
            RunEvent::StageFailed { .. } => "WorkflowStageFailed",
            RunEvent::Completed => "WorkflowRunCompleted",
            RunEvent::Failed { .. } => "WorkflowRunFailed",
        },
        Event::Service(e) => match e {
            ServiceEvent::Registered { .. } => "ServiceRegistered",
            ServiceEvent::Updated { .. } => "ServiceUpdated",
            ServiceEvent::BudgetChanged { .. } => "ServiceBudgetChanged",
            ServiceEvent::Activated => "ServiceActivated",
            ServiceEvent::Deactivated => "ServiceDeactivated",
            ServiceEvent::UsageAuthorized { .. } => "UsageAuthorized",
            ServiceEvent::UsageRefused { .. } => "UsageRefused",
            ServiceEvent::UsageCharged { .. } => "UsageCharged",
            ServiceEvent::ReservationExpired { .. } => "ReservationExpired",
            ServiceEvent::BudgetThresholdCrossed { .. } => "BudgetThresholdCrossed",
            ServiceEvent::Suspended { .. } => "ServiceSuspended",
            ServiceEvent::Reactivated { .. } => "ServiceReactivated",
            ServiceEvent::PeriodStarted { .. } => "ServicePeriodStarted",
        },
        Event::Settings(e) => match e {
            SettingsEvent::Changed { .. } => "SettingChanged",
        },
        Event::User(e) => match e {
            UserEvent::Created { .. } => "UserCreated",
            UserEvent::RoleChanged { .. } => "UserRoleChanged",
            UserEvent::Deactivated => "UserDeactivated",
            UserEvent::Reactivated => "UserReactivated",
            UserEvent::PasswordChanged => "UserPasswordChanged",
        },
        Event::Claims(e) => match e {
            ClaimsEvent::Paused { .. } => "ClaimsPaused",
            ClaimsEvent::Resumed { .. } => "ClaimsResumed",
        },
        Event::Document(e) => match e {
            DocumentEvent::Added { .. } => "DocumentAdded",
            DocumentEvent::Updated { .. } => "DocumentUpdated",
            DocumentEvent::Tagged { .. } => "DocumentTagged",
            DocumentEvent::Removed => "DocumentRemoved",
        },
    }
}

#[test]
fn every_event_type_has_a_sample() {
    let sampled: BTreeSet<&str> = samples().iter().map(variant).collect();
    let declared: BTreeSet<&str> = EVENT_TYPES.iter().copied().collect();
    assert_eq!(sampled, declared, "every declared type sampled, every sample of a declared type");
    assert_eq!(declared.len(), EVENT_TYPES.len(), "no type declared twice");
    for event in samples() {
        let (ty, v, _) = encode(&event);
        assert_eq!(
            (ty, Some(v)),
            (event.event_type(), schema_version(ty)),
            "stored under its own name and newest version"
        );
        assert_eq!(ty, variant(&event));
    }
}

#[test]
fn every_older_layout_is_upcast_to_the_current_event() {
    let sampled: BTreeSet<(&str, u16)> = older_layouts().iter().map(|(ty, v, ..)| (*ty, *v)).collect();
    let declared: BTreeSet<(&str, u16)> = OLDER_LAYOUTS.iter().copied().collect();
    assert_eq!(sampled, declared, "every older layout has a sample");
    for ((ty, v, bytes, json), expected) in older_layouts().into_iter().zip(upcast_older()) {
        assert!(schema_version(ty).is_some_and(|newest| newest > v), "{ty} v{v} is older than the newest");
        assert_eq!(decode(ty, v, &bytes).unwrap(), expected, "{ty} v{v} from the store");
        assert_eq!(from_json(ty, v, &serde_json::to_vec(&json).unwrap()).unwrap(), expected, "{ty} v{v} from JSON");
        // Written again, it is in the newest layout.
        let (_, newest, _) = encode(&expected);
        assert_eq!(Some(newest), schema_version(ty));
    }
}

#[test]
fn a_role_that_is_none_of_the_roles_is_an_error_not_the_least_one() {
    let created =
        user::UserCreated { user_id: Uuid::from_u128(1), email: "a@example.org".into(), role: "owner".into() };
    let bytes = postcard::to_allocvec(&created).unwrap();
    let error = decode("UserCreated", 1, &bytes).unwrap_err();
    assert!(
        matches!(&error, CodecError::Malformed { message, .. } if message.contains("`owner` is not a role")),
        "{error}"
    );
    let changed = serde_json::json!({ "role": "admin", "previous": "Viewer" });
    assert!(from_json("UserRoleChanged", 1, changed.to_string().as_bytes()).is_err());
}

#[test]
fn a_fallback_said_unchanged_but_given_is_an_error() {
    let json = serde_json::json!({
        "name": null, "fallbackChanged": false, "fallbackServiceId": Uuid::from_u128(3), "unitPrices": null
    });
    assert!(from_json("ServiceUpdated", 1, json.to_string().as_bytes()).is_err());
}

#[test]
fn a_stored_payload_is_read_whole() {
    let (ty, v, mut bytes) = encode(&samples()[4]);
    bytes.push(0);
    let error = decode(ty, v, &bytes).unwrap_err();
    assert!(error.to_string().contains("1 bytes after the payload"), "{error}");
    bytes.truncate(bytes.len() - 2);
    assert!(decode(ty, v, &bytes).is_err());
}

#[test]
fn amounts_travel_as_decimal_strings() {
    let json = to_json(&service_samples()[3]);
    assert_eq!(json, serde_json::json!({ "from": "100.00", "to": "150.50", "reason": "why" }));
    let bad = br#"{"from": 1.5, "to": "2", "reason": ""}"#;
    assert!(from_json("ServiceBudgetChanged", 1, bad).is_err());
}

#[test]
fn statistics_are_json_numbers_and_amounts_strings() {
    let flagged = samples().into_iter().find(|e| e.event_type() == "TaskFlaggedAsCostOutlier").unwrap();
    assert_eq!(
        to_json(&flagged),
        serde_json::json!({
            "cost": "31.25", "median": "0.875", "mad": 0.481225, "zScore": 7.438112, "threshold": 3.5,
            "comparable": 40, "group": "stage:release/build"
        })
    );
}

#[test]
fn json_is_camel_case() {
    let json = to_json(&samples()[0]);
    assert_eq!(json["taskId"], "00000000-0000-0000-0000-000000000001");
    assert_eq!(json["requiredCapabilities"][0], "rust");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(decode("TaskCreated", 1, &[0xff; 3]).is_err());
    assert!(decode("TaskCreated", 9, &[]).is_err());
    assert!(decode("Nope", 1, &[]).is_err());
    assert!(from_json("TaskCreated", 1, b"{").is_err());
}
