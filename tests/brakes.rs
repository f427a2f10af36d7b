//! Brakes on work. The kill switch: a pause is never overtaken by a claim, under 32 claiming
//! agents; a resume restores work; without drain, running tasks are stopped at their next
//! heartbeat and go back to the queue with no attempt used; scopes of one capability and one
//! workflow; the API around it. Quarantine: an agent failing attempt after attempt is switched off
//! at the configured count, its tasks released, until a supervisor activates it again.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use devart::Role;
use devart_commands::queue::ClaimRequest;
use devart_commands::{CommandContext, Commands};
use devart_domain::claims::{Claims, Scope};
use devart_domain::task::{
    Capabilities, Capability, CreateTask, Message, StageLink, Task, TaskCommand, TaskStatus, Title,
};
use devart_domain::{Actor, Aggregate, Event};
use serde_json::json;
use uuid::Uuid;

use crate::support::{eventually, register_agent, TestEnv};

const AGENTS: usize = 32;

async fn create(commands: &Commands, title: &str, capabilities: &[&str], stage: Option<StageLink>) -> Uuid {
    let command = CreateTask {
        required_capabilities: Capabilities::parse(capabilities).unwrap(),
        stage,
        ..CreateTask::new(Uuid::now_v7(), Title::parse(title).unwrap())
    };
    commands.tasks().create(command, &CommandContext::new(Actor::user("tester"))).await.unwrap().state.id
}

fn supervisor() -> CommandContext {
    CommandContext::new(Actor::user("supervisor"))
}

fn reason(text: &str) -> Message {
    Message::parse("reason", text).unwrap()
}

async fn claim(commands: &Commands, agent_id: Uuid, capabilities: &[&str]) -> Option<Uuid> {
    let request = ClaimRequest {
        agent_id,
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        lease: TimeDelta::seconds(30),
    };
    let context = CommandContext::new(Actor::agent(agent_id.to_string()));
    commands.tasks().claim(&request, &context).await.unwrap().map(|f| f.state.id)
}

/// The global positions of the events of `event_type`.
async fn positions(env: &TestEnv, event_type: &str) -> Vec<i64> {
    env.sequence_all().await;
    sqlx::query_scalar("select position from events where event_type = $1 order by position")
        .bind(event_type)
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

/// 32 agents claim and complete as fast as they can while a supervisor pauses everything: every
/// `TaskClaimed` in the history comes before the pause's event, no claim made after the pause
/// returned gets a task, and after the resume the agents work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_claim_is_made_after_a_pause_of_everything_and_a_resume_restores_work() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    for i in 0..3_000 {
        create(&commands, &format!("task {i}"), &[], None).await;
    }
    let agents: Vec<Uuid> = futures::future::join_all((0..AGENTS).map(|a| {
        let commands = commands.clone();
        async move { register_agent(&commands, &format!("agent-{a}"), &[]).await }
    }))
    .await;
    let paused = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (claimed, after_pause) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = agents
        .iter()
        .map(|&agent_id| {
            let (commands, paused, stop) = (commands.clone(), paused.clone(), stop.clone());
            let (claimed, after_pause) = (claimed.clone(), after_pause.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    // Read before the claim starts: a claim begun after the pause returned.
                    let was_paused = paused.load(Ordering::SeqCst);
                    match claim(&commands, agent_id, &[]).await {
                        Some(task_id) => {
                            claimed.fetch_add(1, Ordering::SeqCst);
                            if was_paused {
                                after_pause.fetch_add(1, Ordering::SeqCst);
                            }
                            let complete = TaskCommand::Complete { agent_id, result: None };
                            let context = CommandContext::new(Actor::agent(agent_id.to_string()));
                            commands.execute::<Task>(task_id, complete, &context, None).await.unwrap();
                        }
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            })
        })
        .collect();

    eventually(Duration::from_secs(30), || async { (claimed.load(Ordering::SeqCst) >= 200).then_some(()) }).await;
    commands.claims().pause(Scope::All, reason("incident 42"), true, &supervisor()).await.unwrap();
    paused.store(true, Ordering::SeqCst);
    let at_pause = claimed.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(after_pause.load(Ordering::SeqCst), 0, "a claim begun after the pause got a task");
    let during = claimed.load(Ordering::SeqCst);
    assert!(during - at_pause <= AGENTS, "only claims already under way finished: {at_pause} then {during}");

    let pause = positions(&env, "ClaimsPaused").await;
    let claims = positions(&env, "TaskClaimed").await;
    assert_eq!(pause.len(), 1);
    let overtaking: Vec<i64> = claims.iter().copied().filter(|p| *p > pause[0]).collect();
    assert!(overtaking.is_empty(), "claims after the pause's position {}: {overtaking:?}", pause[0]);

    commands.claims().resume(Scope::All, &supervisor()).await.unwrap();
    paused.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(30), || async { (claimed.load(Ordering::SeqCst) >= during + 100).then_some(()) })
        .await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    eprintln!(
        "{at_pause} claims before the pause, {} under way when it came, {} after the resume",
        during - at_pause,
        claimed.load(Ordering::SeqCst) - during
    );
    env.cleanup().await;
}

/// 32 agents hold a task each and heartbeat; a pause without drain answers each agent's next
/// heartbeat with a stop, and every task is back in the queue with its attempt count as it was
/// before the claim and no failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_drain_each_running_task_is_stopped_at_its_next_heartbeat_and_requeued_unspent() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    let mut tasks = Vec::new();
    for i in 0..AGENTS {
        tasks.push(create(&commands, &format!("long task {i}"), &["build"], None).await);
    }
    let agents: Vec<Uuid> = futures::future::join_all((0..AGENTS).map(|a| {
        let commands = commands.clone();
        async move { register_agent(&commands, &format!("builder-{a}"), &["build"]).await }
    }))
    .await;
    let mut held = Vec::new();
    for &agent_id in &agents {
        held.push((agent_id, claim(&commands, agent_id, &["build"]).await.expect("a task for every agent")));
    }
    assert_eq!(held.iter().map(|(_, t)| *t).collect::<HashSet<_>>(), tasks.iter().copied().collect());

    // A draining pause lets the heartbeats extend the leases.
    let build = Scope::Capability(Capability::parse("build").unwrap());
    commands.claims().pause(build.clone(), reason("maintenance"), true, &supervisor()).await.unwrap();
    for &(agent_id, task_id) in &held {
        let context = env.context();
        let beat = commands.tasks().heartbeat(task_id, agent_id, Utc::now() + TimeDelta::seconds(30), &context).await;
        assert_eq!(beat.unwrap().stop, None, "a draining pause lets work go on");
    }

    // Without drain: each agent's next heartbeat, all at once, is told to stop.
    commands.claims().pause(build.clone(), reason("bad deploy"), false, &supervisor()).await.unwrap();
    let beats = futures::future::join_all(held.iter().map(|&(agent_id, task_id)| {
        let commands = commands.clone();
        async move {
            let context = CommandContext::new(Actor::agent(agent_id.to_string()));
            commands.tasks().heartbeat(task_id, agent_id, Utc::now() + TimeDelta::seconds(30), &context).await.unwrap()
        }
    }))
    .await;
    for beat in &beats {
        assert_eq!(beat.stop.as_deref(), Some("claims paused for capability build: bad deploy"));
        let state = &beat.task.state;
        assert_eq!((state.status, state.attempt, state.failures, state.lease), (TaskStatus::Pending, 0, 0, None));
    }
    let queued: Vec<(String, i32)> =
        sqlx::query_as("select state, failures from task_queue").fetch_all(&env.pool).await.unwrap();
    assert_eq!(queued.len(), AGENTS);
    assert!(queued.iter().all(|(state, failures)| state == "pending" && *failures == 0), "{queued:?}");
    // Paused still: nothing is handed out; a later heartbeat of a stopped agent is refused.
    assert_eq!(claim(&commands, agents[0], &["build"]).await, None);
    let again = commands.tasks().heartbeat(held[0].1, held[0].0, Utc::now(), &env.context()).await;
    assert!(again.is_err(), "the stopped agent no longer holds its task: {again:?}");

    commands.claims().resume(build, &supervisor()).await.unwrap();
    let next = claim(&commands, agents[0], &["build"]).await.expect("work again after the resume");
    let state = commands.load::<Task>(next).await.unwrap().state;
    assert_eq!(state.attempt, 1, "the stopped attempt was not counted");
    env.cleanup().await;
}

/// A pause of one capability or one workflow holds back only what it covers, and resuming one
/// scope leaves another paused.
#[tokio::test]
async fn a_pause_of_one_capability_or_one_workflow_holds_back_only_those_tasks() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    let agent = register_agent(&commands, "generalist", &["gpu", "docs"]).await;
    let workflow = Uuid::now_v7();
    let gpu = create(&commands, "train", &["gpu"], None).await;
    let docs = create(&commands, "write", &["docs"], None).await;
    let stage = StageLink { run_id: Uuid::now_v7(), stage_key: "build".into(), workflow_id: Some(workflow) };
    let staged = create(&commands, "stage", &[], Some(stage)).await;
    let gpu_scope = Scope::Capability(Capability::parse("gpu").unwrap());
    commands.claims().pause(gpu_scope.clone(), reason("quota"), true, &supervisor()).await.unwrap();
    commands.claims().pause(Scope::Workflow(workflow), reason("review"), true, &supervisor()).await.unwrap();
    let current = commands.claims().current().await.unwrap();
    assert_eq!(current.paused.keys().cloned().collect::<Vec<_>>(), [gpu_scope.clone(), Scope::Workflow(workflow)]);

    assert_eq!(claim(&commands, agent, &["gpu", "docs"]).await, Some(docs), "only the uncovered task");
    assert_eq!(claim(&commands, agent, &["gpu", "docs"]).await, None);
    commands.claims().resume(gpu_scope, &supervisor()).await.unwrap();
    assert_eq!(claim(&commands, agent, &["gpu", "docs"]).await, Some(gpu));
    assert_eq!(claim(&commands, agent, &["gpu", "docs"]).await, None, "the workflow is still paused");
    commands.claims().resume(Scope::Workflow(workflow), &supervisor()).await.unwrap();
    assert_eq!(claim(&commands, agent, &["gpu", "docs"]).await, Some(staged));

    // Pressing twice appends once; the write side rebuilt from the events keeps the gate.
    commands.claims().pause(Scope::All, reason("again"), true, &supervisor()).await.unwrap();
    commands.claims().pause(Scope::All, reason("again"), true, &supervisor()).await.unwrap();
    let stream = devart_domain::StreamId::new(Claims::KIND, devart_domain::claims::CLAIMS_ID);
    let history = env.store.read_stream(&stream, None).await.unwrap();
    let types: Vec<&str> = history.iter().map(|r| r.event.event_type()).collect();
    assert_eq!(types, ["ClaimsPaused", "ClaimsPaused", "ClaimsResumed", "ClaimsResumed", "ClaimsPaused"]);
    assert!(matches!(history[0].event, Event::Claims(_)));
    sqlx::query("update claim_gate set all_paused = false, pauses = '[]'").execute(&env.pool).await.unwrap();
    commands.restore_write_side().await.unwrap();
    assert_eq!(commands.claims().current().await.unwrap().paused.keys().cloned().collect::<Vec<_>>(), [Scope::All]);
    let late = create(&commands, "late", &[], None).await;
    assert_eq!(claim(&commands, agent, &[]).await, None, "{late} waits: the restored gate holds");
    env.cleanup().await;
}

const PAUSE: &str = "mutation($scope: ClaimScopeInput!, $reason: String!, $drain: Boolean = true) { \
                     pauseClaims(scope: $scope, reason: $reason, drain: $drain) { scope { kind capability workflowId } \
                     reason drain pausedBy pausedAt } }";

/// Through GraphQL: who may pause, what is refused as bad input, what an agent reads, the pause in
/// `queueStats`, a workflow's stage tasks held back, the heartbeat's stop, and the audit trail.
#[tokio::test]
async fn the_api_pauses_for_supervisors_tells_agents_why_and_records_who() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let viewer = env.token(devart_gateway::Role::Viewer);
    let scope_all = json!({ "kind": "ALL" });

    let refused = running.graphql_as(&viewer, PAUSE, json!({ "scope": scope_all, "reason": "no" })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    for (scope, field) in [
        (json!({ "kind": "CAPABILITY" }), "scope.capability"),
        (json!({ "kind": "WORKFLOW" }), "scope.workflowId"),
        (json!({ "kind": "ALL", "capability": "rust" }), "scope.capability"),
        (json!({ "kind": "CAPABILITY", "capability": "Not A Capability" }), "scope.capability"),
    ] {
        let body = running.graphql(PAUSE, json!({ "scope": scope, "reason": "x" })).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let blank = running.graphql(PAUSE, json!({ "scope": scope_all, "reason": "  " })).await;
    assert_eq!(blank["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{blank}");
    let none: i64 = sqlx::query_scalar("select count(*) from events where stream_id like 'claims-%'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(none, 0, "nothing refused was recorded");

    // A workflow's stage task is held back while its workflow is paused.
    let defined = running
        .graphql(
            "mutation { defineWorkflow(input: {name: \"release\", stages: [{key: \"build\", title: \"Build\"}]}) { id } }",
            json!({}),
        )
        .await;
    let workflow = defined["data"]["defineWorkflow"]["id"].as_str().unwrap_or_else(|| panic!("{defined}")).to_owned();
    let scope_workflow = json!({ "kind": "WORKFLOW", "workflowId": workflow });
    let paused = running.graphql(PAUSE, json!({ "scope": scope_workflow, "reason": "release freeze" })).await;
    let pauses = &paused["data"]["pauseClaims"];
    assert_eq!(pauses[0]["scope"]["workflowId"], workflow.as_str(), "{paused}");
    assert_eq!((pauses[0]["reason"].as_str(), pauses[0]["drain"].as_bool()), (Some("release freeze"), Some(true)));
    assert!(pauses[0]["pausedBy"].as_str().unwrap().starts_with("user:"), "{paused}");
    let started = running
        .graphql("mutation($id: ID!) { startWorkflow(workflowId: $id) { id } }", json!({ "id": workflow }))
        .await;
    assert!(started["errors"].is_null(), "{started}");
    let registered = running
        .graphql("mutation { registerAgent(input: {name: \"worker\", capabilities: []}) { apiKey } }", json!({}))
        .await;
    let key = registered["data"]["registerAgent"]["apiKey"].as_str().unwrap().to_owned();
    // The orchestrator creates the stage's task; it waits in the queue, not handed out.
    eventually(Duration::from_secs(10), || async {
        let body = running.graphql("{ queueStats { pending pauses { reason } } }", json!({})).await;
        (body["data"]["queueStats"]["pending"] == 1).then_some(body)
    })
    .await;
    let claim = "mutation { claimTask(leaseSeconds: 30) { id } }";
    let held_back = running.graphql_as(&key, claim, json!({})).await;
    assert!(held_back["data"]["claimTask"].is_null(), "{held_back}");
    let why = running.graphql_as(&key, "{ claimPauses { scope { kind workflowId } reason } }", json!({})).await;
    assert_eq!(why["data"]["claimPauses"][0]["reason"], "release freeze", "{why}");
    let stats = eventually(Duration::from_secs(10), || async {
        let body = running.graphql("{ queueStats { pauses { reason scope { kind } } } }", json!({})).await;
        (body["data"]["queueStats"]["pauses"][0]["reason"] == "release freeze").then_some(body)
    })
    .await;
    assert_eq!(stats["data"]["queueStats"]["pauses"][0]["scope"]["kind"], "WORKFLOW");

    // Resumed: the stage task is claimed; a pause without drain stops it at the next heartbeat.
    let resumed = running
        .graphql(
            "mutation($scope: ClaimScopeInput!) { resumeClaims(scope: $scope) { reason } }",
            json!({ "scope": scope_workflow }),
        )
        .await;
    assert_eq!(resumed["data"]["resumeClaims"], json!([]), "{resumed}");
    let task = running.graphql_as(&key, claim, json!({})).await;
    let task_id = task["data"]["claimTask"]["id"].as_str().unwrap_or_else(|| panic!("{task}")).to_owned();
    let stopping = running.graphql(PAUSE, json!({ "scope": scope_all, "reason": "stop now", "drain": false })).await;
    assert!(stopping["errors"].is_null(), "{stopping}");
    let beat = running
        .graphql_as(
            &key,
            "mutation($id: ID!) { heartbeat(taskId: $id) { cancelled stop stopReason leaseExpiresAt task { status attempt } } }",
            json!({ "id": task_id }),
        )
        .await;
    let beat = &beat["data"]["heartbeat"];
    assert_eq!(beat["stop"], true, "{beat}");
    assert_eq!(beat["stopReason"], "claims paused for all work: stop now");
    assert_eq!((beat["cancelled"].as_bool(), beat["leaseExpiresAt"].is_null()), (Some(false), true));
    assert_eq!(beat["task"], json!({ "status": "PENDING", "attempt": 0 }));

    // The audit trail names who paused and why.
    let audit = eventually(Duration::from_secs(10), || async {
        let body = running
            .graphql(
                "{ events(types: [\"ClaimsPaused\", \"ClaimsResumed\"], first: 10) { edges { node { type actor { kind } data } } } }",
                json!({}),
            )
            .await;
        (body["data"]["events"]["edges"].as_array().is_some_and(|e| e.len() == 3)).then_some(body)
    })
    .await;
    let edges = audit["data"]["events"]["edges"].as_array().unwrap();
    let types: Vec<&str> = edges.iter().map(|e| e["node"]["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ClaimsPaused", "ClaimsResumed", "ClaimsPaused"]);
    assert_eq!(edges[0]["node"]["data"]["reason"], "release freeze");
    assert_eq!(edges[2]["node"]["data"]["drain"], false);
    assert!(edges.iter().all(|e| e["node"]["actor"]["kind"] == "USER"), "{audit}");
    running.stop().await;
    env.cleanup().await;
}

/// `agents.quarantineAfterFailures` at 3: two failures and a completion leave the agent alone; three
/// failures in a row quarantine it (deactivated with the reason, its key refused, the task it held
/// back in the queue); activating it lifts the quarantine.
#[tokio::test]
async fn an_agent_failing_attempt_after_attempt_is_quarantined_and_its_tasks_released() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let set = running
        .graphql(
            "mutation { updateSetting(key: \"agents.quarantineAfterFailures\", value: 3) { key value } }",
            json!({}),
        )
        .await;
    assert!(set["errors"].is_null(), "{set}");
    for i in 0..8 {
        let body = running
            .graphql(
                "mutation($title: String!) { createTask(input: {title: $title, maxAttempts: 10}) { id } }",
                json!({ "title": format!("flaky {i}") }),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
    }
    let registered = running
        .graphql(
            "mutation { registerAgent(input: {name: \"flaky\", capabilities: []}) { apiKey agent { id } } }",
            json!({}),
        )
        .await;
    let key = registered["data"]["registerAgent"]["apiKey"].as_str().unwrap().to_owned();
    let agent_id = registered["data"]["registerAgent"]["agent"]["id"].as_str().unwrap().to_owned();
    let (api, key) = (&running, key.as_str());
    let claim = move || async move {
        let body = api.graphql_as(key, "mutation { claimTask(leaseSeconds: 600) { id } }", json!({})).await;
        body["data"]["claimTask"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned()
    };
    let fail = move |id: String| async move {
        let body = api
            .graphql_as(
                key,
                "mutation($id: ID!) { failTask(taskId: $id, error: \"boom\") { id } }",
                json!({ "id": id }),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
    };
    let agent_id = agent_id.as_str();
    let agent_state = move || async move {
        let body = api.graphql("{ agents { id active quarantined } }", json!({})).await;
        let agents = body["data"]["agents"].as_array().unwrap_or_else(|| panic!("{body}")).clone();
        let agent = agents.into_iter().find(|a| a["id"] == agent_id).expect("the agent is listed");
        json!({ "active": agent["active"], "quarantined": agent["quarantined"] })
    };

    // Two failures, a completion, two failures: never three in a row.
    fail(claim().await).await;
    fail(claim().await).await;
    let done = claim().await;
    let body =
        running.graphql_as(key, "mutation($id: ID!) { completeTask(taskId: $id) { id } }", json!({ "id": done })).await;
    assert!(body["errors"].is_null(), "{body}");
    fail(claim().await).await;
    fail(claim().await).await;
    // Once the reactor has seen all of it, the agent is still at work.
    env.sequence_all().await;
    let head = env.store.head().await.unwrap();
    env.wait_projected("quarantine", head.0).await;
    env.wait_projected("agents", head.0).await;
    assert_eq!(agent_state().await, json!({ "active": true, "quarantined": null }));

    // It holds one task and fails another: the third failure in a row.
    let held = claim().await;
    fail(claim().await).await;
    let quarantined = eventually(Duration::from_secs(15), || async {
        let state = agent_state().await;
        (state["active"] == false).then_some(state)
    })
    .await;
    assert_eq!(quarantined["quarantined"], "3 failed attempts in a row");
    let refused = running.graphql_as(key, "mutation { claimTask { id } }", json!({})).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{refused}");
    let released = eventually(Duration::from_secs(10), || async {
        let body = running
            .graphql("query($id: ID!) { task(id: $id) { status lease { agentId } } }", json!({ "id": held }))
            .await;
        (body["data"]["task"]["status"] == "PENDING").then_some(body)
    })
    .await;
    assert!(released["data"]["task"]["lease"].is_null(), "{released}");
    let audit = running
        .graphql("{ events(types: [\"AgentQuarantined\"]) { edges { node { actor { kind id } data } } } }", json!({}))
        .await;
    let edges = audit["data"]["events"]["edges"].as_array().unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(edges.len(), 1, "quarantined once: {audit}");
    assert_eq!(edges[0]["node"]["data"], json!({ "failures": 3, "reason": "3 failed attempts in a row" }));
    assert_eq!(edges[0]["node"]["actor"], json!({ "kind": "SYSTEM", "id": "quarantine" }));

    // A supervisor lets it work again.
    let back = running
        .graphql(
            "mutation($id: ID!) { setAgentActive(id: $id, active: true) { active quarantined } }",
            json!({ "id": agent_id }),
        )
        .await;
    assert_eq!(back["data"]["setAgentActive"], json!({ "active": true, "quarantined": null }), "{back}");
    running.stop().await;
    env.cleanup().await;
}

/// 32 agents claim and complete as fast as they can while tasks that require approval wait among
/// the others: none is claimed before its approval (every `TaskClaimed` of one comes after its
/// `TaskApproved`), a rejected one never is, and each decision names who made it and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_awaiting_approval_is_never_claimed_before_it_and_a_rejected_one_never() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    let gated = |title: String| CreateTask {
        requires_approval: true,
        ..CreateTask::new(Uuid::now_v7(), Title::parse(&title).unwrap())
    };
    let mut awaiting = Vec::new();
    for i in 0..20 {
        let task = commands.tasks().create(gated(format!("risky {i}")), &env.context()).await.unwrap();
        assert_eq!(task.state.status, TaskStatus::AwaitingApproval);
        awaiting.push(task.state.id);
    }
    for i in 0..200 {
        create(&commands, &format!("plain {i}"), &[], None).await;
    }
    let agents: Vec<Uuid> = futures::future::join_all((0..AGENTS).map(|a| {
        let commands = commands.clone();
        async move { register_agent(&commands, &format!("eager-{a}"), &[]).await }
    }))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let claimed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = agents
        .iter()
        .map(|&agent_id| {
            let (commands, stop, claimed) = (commands.clone(), stop.clone(), claimed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match claim(&commands, agent_id, &[]).await {
                        Some(task_id) => {
                            claimed.fetch_add(1, Ordering::SeqCst);
                            let complete = TaskCommand::Complete { agent_id, result: None };
                            let context = CommandContext::new(Actor::agent(agent_id.to_string()));
                            commands.execute::<Task>(task_id, complete, &context, None).await.unwrap();
                        }
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            })
        })
        .collect();
    // Decisions come while the agents claim.
    eventually(Duration::from_secs(30), || async { (claimed.load(Ordering::SeqCst) >= 50).then_some(()) }).await;
    let (approved, rejected) = awaiting.split_at(10);
    for &id in approved {
        let note = Some(Message::parse("note", "checked the diff").unwrap());
        commands.execute::<Task>(id, TaskCommand::Approve { note }, &supervisor(), None).await.unwrap();
    }
    for &id in rejected {
        let reason = reason("touches production credentials");
        commands.execute::<Task>(id, TaskCommand::Reject { reason }, &supervisor(), None).await.unwrap();
    }
    eventually(Duration::from_secs(60), || async { (claimed.load(Ordering::SeqCst) >= 210).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(claimed.load(Ordering::SeqCst), 210, "every plain and approved task, once");

    env.sequence_all().await;
    for &id in &awaiting {
        let history: Vec<(String, i64, String)> = sqlx::query_as(
            "select event_type, position, actor_id from events where stream_id = $1 order by stream_version",
        )
        .bind(format!("task-{id}"))
        .fetch_all(&env.pool)
        .await
        .unwrap();
        let types: Vec<&str> = history.iter().map(|(t, ..)| t.as_str()).collect();
        if approved.contains(&id) {
            assert_eq!(types, ["TaskCreated", "TaskApproved", "TaskClaimed", "TaskCompleted"], "{id}");
            assert!(history[1].1 < history[2].1, "claimed after its approval");
        } else {
            assert_eq!(types, ["TaskCreated", "TaskRejected"], "{id}: never claimed");
        }
        assert_eq!(history[1].2, "supervisor", "the decision names who made it");
        let state = commands.load::<Task>(id).await.unwrap().state;
        let expected = if approved.contains(&id) { TaskStatus::Completed } else { TaskStatus::Rejected };
        assert_eq!(state.status, expected);
    }
    let why: Vec<serde_json::Value> = futures::future::join_all(rejected.iter().map(|id| {
        let store = env.store.clone();
        async move {
            let history = store.read_stream(&devart_domain::StreamId::new("task", *id), None).await.unwrap();
            devart_commands::codec::to_json(&history[1].event)
        }
    }))
    .await;
    assert!(why.iter().all(|w| w == &json!({ "reason": "touches production credentials" })), "{why:?}");
    env.cleanup().await;
}

/// Through GraphQL: a task created with `requiresApproval` waits as `AWAITING_APPROVAL`; a viewer
/// may not decide; a decision is taken once; a rejection needs a reason.
#[tokio::test]
async fn the_api_gates_a_task_on_a_supervisor_s_approval() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let create =
        "mutation($title: String!) { createTask(input: {title: $title, requiresApproval: true}) { id status } }";
    let first = running.graphql(create, json!({ "title": "deploy to production" })).await;
    let task = &first["data"]["createTask"];
    assert_eq!(task["status"], "AWAITING_APPROVAL", "{first}");
    let id = task["id"].as_str().unwrap().to_owned();
    let viewer = env.token(devart_gateway::Role::Viewer);
    let approve = "mutation($id: ID!, $note: String) { approveTask(id: $id, note: $note) { status } }";
    let refused = running.graphql_as(&viewer, approve, json!({ "id": id })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    let reject = "mutation($id: ID!, $reason: String!) { rejectTask(id: $id, reason: $reason) { status } }";
    let blank = running.graphql(reject, json!({ "id": id, "reason": " " })).await;
    assert_eq!(blank["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{blank}");
    let approved = running.graphql(approve, json!({ "id": id, "note": "window open" })).await;
    assert_eq!(approved["data"]["approveTask"]["status"], "PENDING", "{approved}");
    let again = running.graphql(reject, json!({ "id": id, "reason": "too late" })).await;
    assert_eq!(again["errors"][0]["extensions"]["code"], "CONFLICT", "{again}");
    let listed = eventually(Duration::from_secs(10), || async {
        let body = running
            .graphql(
                "{ tasks(filter: {status: [AWAITING_APPROVAL, PENDING]}) { edges { node { id status } } } }",
                json!({}),
            )
            .await;
        (body["data"]["tasks"]["edges"][0]["node"]["status"] == "PENDING").then_some(body)
    })
    .await;
    assert_eq!(listed["data"]["tasks"]["edges"][0]["node"]["id"], id.as_str());
    running.stop().await;
    env.cleanup().await;
}
