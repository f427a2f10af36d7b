//! The task queue: atomic claims under concurrency, leases that expire, retries, cancellation,
//! capabilities, priorities, `runAfter`, chaining, and who may report on what.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use devart::Role;
use devart_commands::queue::ClaimRequest;
use devart_commands::{CommandContext, Commands};
use devart_domain::task::{
    Capabilities, CreateTask, MaxAttempts, Message, Priority, Task, TaskCommand, TaskEvent, Title,
};
use devart_domain::{Actor, Event};
use rand::Rng;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{eventually, register_agent, Running, TestEnv};

const AGENTS: usize = 64;
const TASKS: usize = 10_000;

/// 64 agents work 10,000 tasks through the command layer while some of them fail attempts
/// (retried after a backoff) and some walk away from tasks they hold (the lease expires and the
/// reaper queues the task again). Every attempt of every task is claimed by exactly one agent, as
/// both the agents and the event history see it; every task ends completed; the queue ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_agents_work_ten_thousand_tasks_each_attempt_claimed_once() {
    let env = TestEnv::new().await;
    let commands = env.commands();

    let creators: Vec<_> = (0..16)
        .map(|c| {
            let commands = commands.clone();
            tokio::spawn(async move {
                let mut rng = rand::thread_rng().gen::<u64>();
                for i in (c..TASKS).step_by(16) {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let command = CreateTask {
                        priority: Priority::parse(1 + (rng >> 60) as i64 % 5).unwrap(),
                        required_capabilities: Capabilities::parse(if i % 2 == 0 { &["rust"][..] } else { &[] })
                            .unwrap(),
                        max_attempts: MaxAttempts::parse(20).unwrap(),
                        ..CreateTask::new(Uuid::now_v7(), Title::parse(&format!("task {i}")).unwrap())
                    };
                    commands.tasks().create(command, &CommandContext::new(Actor::user("tester"))).await.unwrap();
                }
            })
        })
        .collect();
    for creator in creators {
        creator.await.unwrap();
    }
    let agents: Vec<Uuid> = futures::future::join_all((0..AGENTS).map(|a| {
        let commands = commands.clone();
        async move { register_agent(&commands, &format!("agent-{a}"), &["rust"]).await }
    }))
    .await;

    let reaper_stop = CancellationToken::new();
    let reaper = tokio::spawn(devart_commands::queue::run_lease_reaper(commands.clone(), reaper_stop.clone()));
    // (task, attempt) -> agent, as the agents saw their claims.
    let claims: Arc<Mutex<Vec<(Uuid, u32, Uuid)>>> = Arc::default();
    let started = Instant::now();
    let workers: Vec<_> = agents
        .iter()
        .map(|&agent_id| {
            let (commands, claims, pool) = (commands.clone(), claims.clone(), env.pool.clone());
            tokio::spawn(async move {
                let request =
                    ClaimRequest { agent_id, capabilities: vec!["rust".into()], lease: TimeDelta::seconds(1) };
                loop {
                    let context = CommandContext::new(Actor::agent(agent_id.to_string()));
                    let Some(claimed) = commands.tasks().claim(&request, &context).await.unwrap() else {
                        let left: i64 =
                            sqlx::query_scalar("select count(*) from task_queue").fetch_one(&pool).await.unwrap();
                        if left == 0 {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let task_id = claimed.state.id;
                    let lease = claimed.state.lease.expect("a claimed task has a lease");
                    assert_eq!(lease.agent_id, agent_id);
                    claims.lock().unwrap().push((task_id, lease.attempt, agent_id));
                    let roll: u32 = rand::thread_rng().gen_range(0..1000);
                    let command = if roll < 30 {
                        TaskCommand::Fail {
                            agent_id,
                            error: Message::parse("error", "flaky").unwrap(),
                            retryable: true,
                            now: chrono::Utc::now(),
                            jitter: rand::thread_rng().gen(),
                        }
                    } else if roll < 40 {
                        // Walks away: the lease runs out.
                        continue;
                    } else {
                        TaskCommand::Complete { agent_id, result: None }
                    };
                    let context = CommandContext::new(Actor::agent(agent_id.to_string()));
                    commands.execute::<Task>(task_id, command, &context, None).await.unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = started.elapsed();
    reaper_stop.cancel();
    reaper.await.unwrap();

    // The agents' view: no (task, attempt) went to two agents.
    let claims = claims.lock().unwrap().clone();
    let unique: HashSet<(Uuid, u32)> = claims.iter().map(|(t, a, _)| (*t, *a)).collect();
    assert_eq!(unique.len(), claims.len(), "an attempt was claimed twice");
    assert!(claims.len() > TASKS, "some attempts failed or expired and were claimed again");

    // The event history's view, stream by stream.
    env.sequence_all().await;
    let events = env.store.read_all(devart_domain::Position::START, None, 1_000_000).await.unwrap();
    let mut streams: BTreeMap<Uuid, Vec<TaskEvent>> = BTreeMap::new();
    for recorded in events {
        if let (Some(id), Event::Task(event)) = (recorded.meta.stream_id.id_of("task"), recorded.event) {
            streams.entry(id).or_default().push(event);
        }
    }
    assert_eq!(streams.len(), TASKS);
    let mut from_events: HashSet<(Uuid, u32, Uuid)> = HashSet::new();
    let (mut expired, mut failed) = (0, 0);
    for (task_id, history) in &streams {
        let mut holder: Option<(u32, Uuid)> = None;
        let (mut completed, mut attempts) = (0, 0);
        for event in history {
            match event {
                TaskEvent::Claimed { agent_id, attempt, .. } => {
                    assert!(holder.is_none(), "task {task_id} claimed while held: {history:?}");
                    attempts += 1;
                    assert_eq!(*attempt, attempts, "task {task_id}: attempts count up by one");
                    holder = Some((*attempt, *agent_id));
                    from_events.insert((*task_id, *attempt, *agent_id));
                }
                TaskEvent::Completed { agent_id, attempt, .. } => {
                    assert_eq!(holder.take(), Some((*attempt, *agent_id)), "task {task_id}: {history:?}");
                    completed += 1;
                }
                TaskEvent::AttemptFailed { agent_id, attempt, .. } => {
                    assert_eq!(holder.take(), Some((*attempt, *agent_id)), "task {task_id}: {history:?}");
                    failed += 1;
                }
                TaskEvent::LeaseExpired { agent_id, attempt, .. } => {
                    assert_eq!(holder.take(), Some((*attempt, *agent_id)), "task {task_id}: {history:?}");
                    expired += 1;
                }
                TaskEvent::Created { .. } => {}
                other => panic!("unexpected {other:?} in task {task_id}"),
            }
        }
        assert_eq!(completed, 1, "task {task_id} completed once: {history:?}");
        assert!(matches!(history.last(), Some(TaskEvent::Completed { .. })));
    }
    let from_agents: HashSet<(Uuid, u32, Uuid)> = claims.into_iter().collect();
    assert_eq!(from_events, from_agents, "the agents and the history agree on every claim");
    assert!(expired > 0 && failed > 0, "the run exercised expiry ({expired}) and retries ({failed})");
    let left: i64 = sqlx::query_scalar("select count(*) from task_queue").fetch_one(&env.pool).await.unwrap();
    assert_eq!(left, 0, "nothing left behind");
    eprintln!(
        "{TASKS} tasks, {AGENTS} agents: {} claims, {failed} retried failures, {expired} expired leases in {elapsed:?}",
        from_events.len()
    );
    env.cleanup().await;
}

const REGISTER: &str = "mutation($input: RegisterAgentInput!) { registerAgent(input: $input) { apiKey agent { id } } }";
const CREATE: &str = "mutation($input: CreateTaskInput!) { createTask(input: $input) { id status } }";
const CLAIM: &str = "mutation($caps: [String!], $lease: Int) { claimTask(capabilities: $caps, leaseSeconds: $lease) { \
                     id title attempt lease { agentId attempt expiresAt } } }";
const TASK_FIELDS: &str = "id status attempt failures maxAttempts runAfter result errors { attempt agentId error } \
                           lease { agentId attempt } progress { message percent }";

struct Agent {
    id: String,
    key: String,
}

async fn agent(running: &Running, name: &str, capabilities: &[&str]) -> Agent {
    let body = running.graphql(REGISTER, json!({ "input": { "name": name, "capabilities": capabilities } })).await;
    let registration = &body["data"]["registerAgent"];
    Agent {
        id: registration["agent"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned(),
        key: registration["apiKey"].as_str().unwrap().to_owned(),
    }
}

async fn create(running: &Running, input: Value) -> String {
    let body = running.graphql(CREATE, json!({ "input": input })).await;
    body["data"]["createTask"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned()
}

/// The id of the task the agent claimed, or `None`.
async fn claim(running: &Running, agent: &Agent, lease: Option<i64>) -> Option<String> {
    let body = running.graphql_as(&agent.key, CLAIM, json!({ "lease": lease })).await;
    assert!(body["errors"].is_null(), "{body}");
    let task = &body["data"]["claimTask"];
    if task.is_null() {
        return None;
    }
    assert_eq!(task["lease"]["agentId"], agent.id.as_str());
    Some(task["id"].as_str().unwrap().to_owned())
}

async fn call(running: &Running, agent: &Agent, mutation: &str, variables: Value) -> Value {
    running.graphql_as(&agent.key, mutation, variables).await
}

/// The types of a task's events, in stream order.
async fn event_types(env: &TestEnv, task: &str) -> Vec<String> {
    env.sequence_all().await;
    sqlx::query_scalar("select event_type from events where stream_id = $1 order by stream_version")
        .bind(format!("task-{task}"))
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}

#[tokio::test]
async fn claims_follow_priority_age_capabilities_and_run_after() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let builder = agent(&running, "builder", &["rust", "docs"]).await;
    let writer = agent(&running, "writer", &["docs"]).await;

    let low = create(&running, json!({ "title": "low", "priority": 2 })).await;
    let rust = create(&running, json!({ "title": "rust", "priority": 5, "requiredCapabilities": ["rust"] })).await;
    let urgent = create(&running, json!({ "title": "urgent", "priority": 5 })).await;
    let later_at = chrono::Utc::now() + TimeDelta::seconds(2);
    let later = create(&running, json!({ "title": "later", "priority": 4, "runAfter": later_at.to_rfc3339() })).await;

    // The writer cannot do `rust`: it gets the other priority-5 task, though it is younger.
    assert_eq!(claim(&running, &writer, None).await, Some(urgent.clone()));
    assert_eq!(claim(&running, &builder, None).await, Some(rust));
    // `later` (priority 4) is not due: the builder gets `low` (priority 2), then nothing.
    assert_eq!(claim(&running, &builder, None).await, Some(low));
    assert_eq!(claim(&running, &builder, None).await, None);
    // Narrowing to capabilities it has is allowed; claiming with one it lacks is not.
    let refused = call(&running, &writer, CLAIM, json!({ "caps": ["rust"] })).await;
    assert_eq!(code(&refused), "BAD_USER_INPUT");
    // People do not claim.
    assert_eq!(code(&running.graphql(CLAIM, json!({})).await), "FORBIDDEN");

    let due = eventually(Duration::from_secs(5), || async {
        claim(&running, &builder, None).await.filter(|id| *id == later)
    })
    .await;
    assert!(chrono::Utc::now() >= later_at, "claimed {due} before its runAfter");

    // Queue stats: nothing pending, four in flight.
    let stats = running.graphql("{ queueStats { pending inFlight retrying failed } }", json!({})).await;
    assert_eq!(stats["data"]["queueStats"], json!({ "pending": 0, "inFlight": 4, "retrying": 0, "failed": 0 }));
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn outcomes_retries_cancellation_and_who_may_report() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let ada = agent(&running, "ada", &[]).await;
    let bob = agent(&running, "bob", &[]).await;
    let fail = format!("mutation($id: ID!, $retryable: Boolean) {{ failTask(taskId: $id, error: \"boom\", retryable: $retryable) {{ {TASK_FIELDS} }} }}");
    let complete = format!(
        "mutation($id: ID!, $result: JSON) {{ completeTask(taskId: $id, result: $result) {{ {TASK_FIELDS} }} }}"
    );
    let heartbeat = "mutation($id: ID!) { heartbeat(taskId: $id, leaseSeconds: 60) { cancelled leaseExpiresAt } }";

    // Retries with backoff, then dead after maxAttempts, with every error kept.
    let flaky = create(&running, json!({ "title": "flaky", "maxAttempts": 2 })).await;
    assert_eq!(claim(&running, &ada, None).await.as_ref(), Some(&flaky));
    // Bob may not report on Ada's task.
    let stolen = call(&running, &bob, &complete, json!({ "id": flaky })).await;
    assert_eq!(code(&stolen), "FORBIDDEN");
    let progress = call(
        &running,
        &ada,
        "mutation($id: ID!) { reportProgress(taskId: $id, message: \"half way\", percent: 50) { progress { message percent } } }",
        json!({ "id": flaky }),
    )
    .await;
    assert_eq!(progress["data"]["reportProgress"]["progress"], json!({ "message": "half way", "percent": 50 }));
    let failed = call(&running, &ada, &fail, json!({ "id": flaky, "retryable": true })).await;
    let task = &failed["data"]["failTask"];
    assert_eq!((task["status"].as_str(), task["failures"].as_i64()), (Some("PENDING"), Some(1)), "{failed}");
    let retry_at: chrono::DateTime<chrono::Utc> = task["runAfter"].as_str().unwrap().parse().unwrap();
    assert!(retry_at > chrono::Utc::now(), "backed off");
    assert_eq!(claim(&running, &bob, None).await, None, "not before the backoff");
    let second = eventually(Duration::from_secs(5), || async { claim(&running, &bob, None).await }).await;
    assert_eq!(second, flaky);
    assert!(chrono::Utc::now() >= retry_at);
    let dead = call(&running, &bob, &fail, json!({ "id": flaky, "retryable": true })).await;
    let task = &dead["data"]["failTask"];
    assert_eq!(task["status"], "FAILED", "{dead}");
    assert_eq!(
        task["errors"],
        json!([{ "attempt": 1, "agentId": ada.id, "error": "boom" }, { "attempt": 2, "agentId": bob.id, "error": "boom" }])
    );
    // A supervisor gives it fresh attempts.
    let retried = running
        .graphql("mutation($id: ID!) { retryTask(id: $id) { status failures attempt } }", json!({ "id": flaky }))
        .await;
    assert_eq!(retried["data"]["retryTask"], json!({ "status": "PENDING", "failures": 0, "attempt": 2 }));
    assert_eq!(claim(&running, &ada, None).await.as_ref(), Some(&flaky));
    // Not retryable: dead at once.
    let gone = call(&running, &ada, &fail, json!({ "id": flaky, "retryable": false })).await;
    assert_eq!(gone["data"]["failTask"]["status"], "FAILED");

    // Completion with a result; a completed task cannot be reported on again.
    let done = create(&running, json!({ "title": "done" })).await;
    assert_eq!(claim(&running, &ada, None).await.as_ref(), Some(&done));
    let completed = call(&running, &ada, &complete, json!({ "id": done, "result": { "lines": 42 } })).await;
    assert_eq!(completed["data"]["completeTask"]["status"], "COMPLETED", "{completed}");
    assert_eq!(completed["data"]["completeTask"]["result"], json!({ "lines": 42 }));
    assert_eq!(code(&call(&running, &ada, &complete, json!({ "id": done })).await), "CONFLICT");

    // Cancellation: the agent learns it from its heartbeat, and its reports are refused.
    let doomed = create(&running, json!({ "title": "doomed" })).await;
    assert_eq!(claim(&running, &bob, None).await.as_ref(), Some(&doomed));
    let beat = call(&running, &bob, heartbeat, json!({ "id": doomed })).await;
    assert_eq!(beat["data"]["heartbeat"]["cancelled"], false, "{beat}");
    let cancelled = running
        .graphql(
            "mutation($id: ID!) { cancelTask(id: $id, reason: \"not needed\") { status } }",
            json!({ "id": doomed }),
        )
        .await;
    assert_eq!(cancelled["data"]["cancelTask"]["status"], "CANCELLED");
    let beat = call(&running, &bob, heartbeat, json!({ "id": doomed })).await;
    assert_eq!(beat["data"]["heartbeat"], json!({ "cancelled": true, "leaseExpiresAt": null }));
    assert_eq!(code(&call(&running, &bob, &complete, json!({ "id": doomed })).await), "CONFLICT");
    // Cancelling a pending task takes it out of the queue.
    let never = create(&running, json!({ "title": "never" })).await;
    running.graphql("mutation($id: ID!) { cancelTask(id: $id) { status } }", json!({ "id": never })).await;
    assert_eq!(claim(&running, &ada, None).await, None);
    // Viewers do not cancel.
    let viewer = env.token(devart_gateway::Role::Viewer);
    let refused = running
        .graphql_as(&viewer, "mutation($id: ID!) { cancelTask(id: $id) { status } }", json!({ "id": never }))
        .await;
    assert_eq!(code(&refused), "FORBIDDEN");

    // The audit trail tells the whole story of the flaky task.
    let types = event_types(&env, &flaky).await;
    assert_eq!(
        types,
        [
            "TaskCreated",
            "TaskClaimed",
            "TaskProgressReported",
            "TaskAttemptFailed",
            "TaskClaimed",
            "TaskAttemptFailed",
            "TaskFailed",
            "TaskRetried",
            "TaskClaimed",
            "TaskAttemptFailed",
            "TaskFailed"
        ]
    );
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_abandoned_lease_comes_back_within_lease_plus_two_seconds() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let gone = agent(&running, "gone", &[]).await;
    let next = agent(&running, "next", &[]).await;
    let task = create(&running, json!({ "title": "held" })).await;
    let claimed_at = Instant::now();
    assert_eq!(claim(&running, &gone, Some(1)).await.as_ref(), Some(&task));
    // The first agent goes silent; the second polls.
    let reclaimed = eventually(Duration::from_secs(10), || async { claim(&running, &next, None).await }).await;
    let waited = claimed_at.elapsed();
    assert_eq!(reclaimed, task);
    assert!(waited >= Duration::from_secs(1) && waited <= Duration::from_secs(3), "back after {waited:?}");
    // The late agent's report is refused: the task is another agent's now.
    let late =
        call(&running, &gone, "mutation($id: ID!) { completeTask(taskId: $id) { id } }", json!({ "id": task })).await;
    assert_eq!(code(&late), "FORBIDDEN");
    let types = event_types(&env, &task).await;
    assert_eq!(types, ["TaskCreated", "TaskClaimed", "TaskLeaseExpired", "TaskClaimed"]);
    eprintln!("lease 1 s: claimable again after {waited:?}");
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_deactivated_agent_is_refused_and_its_task_goes_back_and_successors_chain() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let ada = agent(&running, "ada", &[]).await;
    let bob = agent(&running, "bob", &[]).await;
    let parent = create(&running, json!({ "title": "parent" })).await;
    let sibling = create(&running, json!({ "title": "sibling" })).await;
    assert_eq!(claim(&running, &ada, None).await.as_ref(), Some(&parent));
    assert_eq!(claim(&running, &bob, None).await.as_ref(), Some(&sibling));

    // Chaining: the holder creates successors; nobody else can, and agents create nothing else.
    let successor = "mutation($input: CreateTaskInput!) { createTask(input: $input) { id parentTaskId createdBy } }";
    let child = call(&running, &ada, successor, json!({ "input": { "title": "child", "parentTaskId": parent } })).await;
    let child_id = child["data"]["createTask"]["id"].as_str().unwrap_or_else(|| panic!("{child}")).to_owned();
    assert_eq!(child["data"]["createTask"]["createdBy"], format!("agent:{}", ada.id));
    let foreign = call(&running, &bob, successor, json!({ "input": { "title": "x", "parentTaskId": parent } })).await;
    assert_eq!(code(&foreign), "FORBIDDEN");
    let orphan = call(&running, &ada, successor, json!({ "input": { "title": "x" } })).await;
    assert_eq!(code(&orphan), "FORBIDDEN");
    let chain = eventually(Duration::from_secs(10), || async {
        let body = running
            .graphql(
                "query($id: ID!) { task(id: $id) { title parent { title children { title } } } }",
                json!({ "id": child_id }),
            )
            .await;
        let task = body["data"]["task"].clone();
        (!task.is_null()).then_some(task)
    })
    .await;
    assert_eq!(chain, json!({ "title": "child", "parent": { "title": "parent", "children": [{ "title": "child" }] } }));

    // Deactivation: the key is refused, and the task goes back to the queue at once.
    let off = running
        .graphql("mutation($id: ID!) { setAgentActive(id: $id, active: false) { active } }", json!({ "id": ada.id }))
        .await;
    assert_eq!(off["data"]["setAgentActive"]["active"], false, "{off}");
    let refused = reqwest::Client::new()
        .post(running.url("/graphql"))
        .bearer_auth(&ada.key)
        .json(&json!({ "query": CLAIM }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    // Bob finishes his task and picks up Ada's (older, same priority, before the child).
    let complete = "mutation($id: ID!) { completeTask(taskId: $id) { status } }";
    assert_eq!(
        call(&running, &bob, complete, json!({ "id": sibling })).await["data"]["completeTask"]["status"],
        "COMPLETED"
    );
    assert_eq!(claim(&running, &bob, None).await.as_ref(), Some(&parent));

    // The agents roster shows activity.
    let roster = eventually(Duration::from_secs(10), || async {
        let body = running
            .graphql("{ agents { name active lastSeenAt currentTaskId tasksClaimed tasksCompleted } }", json!({}))
            .await;
        let agents = body["data"]["agents"].as_array()?.clone();
        let bob_row = agents.iter().find(|a| a["name"] == "bob")?;
        (bob_row["tasksClaimed"] == 2).then_some(agents)
    })
    .await;
    let by_name: HashMap<&str, &Value> = roster.iter().map(|a| (a["name"].as_str().unwrap(), a)).collect();
    assert_eq!(by_name["bob"]["tasksCompleted"], 1);
    assert_eq!(by_name["bob"]["currentTaskId"], parent.as_str());
    assert!(by_name["bob"]["lastSeenAt"].is_string());
    assert_eq!(by_name["ada"]["active"], false);
    assert_eq!(by_name["ada"]["currentTaskId"], Value::Null);
    running.stop().await;
    env.cleanup().await;
}

/// A process remembers the state its last append left a task in, so that an agent's next command
/// there needs no read of the stream. Here two `Commands` stand for two processes: whatever the
/// other one appended since, the remembered state never decides. A command it would allow is
/// appended only if the stream is still where the memory left it; one it would refuse is decided
/// again against the stream.
#[tokio::test]
async fn a_remembered_task_state_never_decides_past_another_process_s_change() {
    let env = TestEnv::new().await;
    let (here, elsewhere) = (env.commands(), env.commands());
    let a = register_agent(&here, "agent-a", &[]).await;
    let b = register_agent(&here, "agent-b", &[]).await;
    let as_agent = |id: Uuid| CommandContext::new(Actor::agent(id.to_string()));
    let create = |title: &str| CreateTask::new(Uuid::now_v7(), Title::parse(title).unwrap());
    let claim = |commands: &Commands, agent_id: Uuid| {
        let commands = commands.clone();
        async move {
            let request = ClaimRequest { agent_id, capabilities: vec![], lease: TimeDelta::seconds(60) };
            commands.tasks().claim(&request, &as_agent(agent_id)).await.unwrap().expect("a task to claim").state.id
        }
    };
    let complete = |agent_id: Uuid| TaskCommand::Complete { agent_id, result: None };

    // Claimed here, cancelled elsewhere: the memory (in progress, held by A) would let A complete.
    let cancelled = here.tasks().create(create("cancelled elsewhere"), &env.context()).await.unwrap().state.id;
    assert_eq!(claim(&here, a).await, cancelled);
    elsewhere.execute::<Task>(cancelled, TaskCommand::Cancel { reason: None }, &env.context(), None).await.unwrap();
    let refused = here.execute::<Task>(cancelled, complete(a), &as_agent(a), None).await;
    assert!(matches!(refused, Err(devart_commands::CommandError::Domain(_))), "{refused:?}");
    assert_eq!(event_types(&env, &cancelled.to_string()).await, ["TaskCreated", "TaskClaimed", "TaskCancelled"]);

    // Claimed here by A, released and claimed by B elsewhere: the memory would refuse B.
    let moved = here.tasks().create(create("moved elsewhere"), &env.context()).await.unwrap().state.id;
    assert_eq!(claim(&here, a).await, moved);
    let release = TaskCommand::Release { agent_id: a, reason: "going away".into() };
    elsewhere.execute::<Task>(moved, release, &as_agent(a), None).await.unwrap();
    assert_eq!(claim(&elsewhere, b).await, moved);
    let done = here.execute::<Task>(moved, complete(b), &as_agent(b), None).await.unwrap();
    assert_eq!(done.version, 5, "decided at the stream's version, not the memory's");
    assert_eq!(
        event_types(&env, &moved.to_string()).await,
        ["TaskCreated", "TaskClaimed", "TaskReleased", "TaskClaimed", "TaskCompleted"]
    );

    // Claimed here, lease extended elsewhere: A completes here, after the stream, not the memory.
    let extended = here.tasks().create(create("extended elsewhere"), &env.context()).await.unwrap().state.id;
    assert_eq!(claim(&here, a).await, extended);
    let heartbeat = TaskCommand::Heartbeat {
        agent_id: a,
        lease_expires_at: chrono::Utc::now() + TimeDelta::hours(1),
        pauses: Default::default(),
    };
    elsewhere.execute::<Task>(extended, heartbeat, &as_agent(a), None).await.unwrap();
    let done = here.execute::<Task>(extended, complete(a), &as_agent(a), None).await.unwrap();
    assert_eq!(done.version, 4);
    assert_eq!(
        event_types(&env, &extended.to_string()).await,
        ["TaskCreated", "TaskClaimed", "TaskLeaseExtended", "TaskCompleted"]
    );
    // Completed, and remembered so here: a second completion under another command id is refused.
    let again = here.execute::<Task>(extended, complete(a), &as_agent(a), None).await;
    assert!(matches!(again, Err(devart_commands::CommandError::Domain(_))), "{again:?}");
    let queued: i64 = sqlx::query_scalar("select count(*) from task_queue").fetch_one(&env.pool).await.unwrap();
    assert_eq!(queued, 0, "the queue rows followed the stream");
    env.cleanup().await;
}
