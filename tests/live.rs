//! The subscriptions a dashboard lives on, over a real WebSocket to a whole devart (gateway,
//! relay, projections): each delivers a change another client made; versions rise; people
//! follow only what their role shows (an agent itself, admins the users); the queue's statistics
//! come at once, then coalesced, only when they changed, and end equal to the `queueStats` query.
//!
//! Deadlines here are generous and only say "it came"; how fast is for the benchmarks.

use std::time::Duration;

use chrono::TimeDelta;
use devart::Role;
use devart_commands::queue::ClaimRequest;
use devart_commands::CommandContext;
use devart_domain::agent::AgentName;
use devart_domain::money::Money;
use devart_domain::outliers::{CostOutlier, Score};
use devart_domain::task::{Capabilities, CreateTask, Task, TaskCommand, Title};
use devart_domain::Actor;
use devart_gateway::schema::live::QUEUE_INTERVAL;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::support::{Running, TestEnv};

const ALL: &[Role] = &[Role::Gateway, Role::Relay, Role::Projections];

/// How long anything expected may take to arrive.
const PATIENCE: Duration = Duration::from_secs(15);
/// How long a subscription is given to be in place before the change it should see: it starts
/// asynchronously, after its `subscribe` was read.
const SETTLE: Duration = Duration::from_millis(500);

const REGISTER: &str =
    "mutation($input: RegisterAgentInput!) { registerAgent(input: $input) { apiKey agent { id version } } }";
const QUEUE_FIELDS: &str =
    "pending due inFlight retrying failed byPriority { priority pending } byCapability { capability pending } \
     oldestPendingAgeSeconds";

/// A `graphql-transport-ws` connection that shows each `next` with its id, errors included.
struct Socket {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Socket {
    async fn open(running: &Running, token: &str) -> Socket {
        let mut request = format!("ws://{}/graphql", running.addr).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut socket = Socket { socket };
        socket
            .send(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }))
            .await;
        let ack = socket.message(PATIENCE).await.expect("an acknowledgment");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        socket
    }

    async fn send(&mut self, message: Value) {
        self.socket.send(Message::text(message.to_string())).await.unwrap();
    }

    /// Starts subscription `id` and gives it [`SETTLE`] to be in place.
    async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }))
            .await;
        tokio::time::sleep(SETTLE).await;
    }

    /// The next protocol message within `wait`, answering pings; `None` if none came.
    async fn message(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next()).await.ok()?;
            let Message::Text(text) = frame.expect("the socket is open").expect("the socket works") else { continue };
            let message: Value = serde_json::from_str(&text).unwrap();
            match message["type"].as_str() {
                Some("ping") => self.send(json!({ "type": "pong" })).await,
                Some("pong") => {}
                _ => return Some(message),
            }
        }
    }

    /// The payload of the next `next` of subscription `id` within `wait`; `None` if none came.
    /// Anything else for `id` fails the test.
    async fn next_within(&mut self, id: &str, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.message(left).await?;
            if message["id"] != id {
                continue;
            }
            assert_eq!(message["type"], "next", "{message}");
            return Some(message["payload"].clone());
        }
    }

    /// The data of the next item of subscription `id`, errorless.
    async fn next(&mut self, id: &str) -> Value {
        let payload = self.next_within(id, PATIENCE).await.unwrap_or_else(|| panic!("nothing on `{id}` in time"));
        assert!(payload.get("errors").is_none(), "{payload}");
        payload["data"].clone()
    }
}

fn admin() -> CommandContext {
    CommandContext::new(Actor::user("admin"))
}

/// Registers an agent over the API; its id and key.
async fn agent(running: &Running, name: &str) -> (String, String) {
    let body = running.graphql(REGISTER, json!({ "input": { "name": name, "capabilities": [] } })).await;
    let registration = &body["data"]["registerAgent"];
    let id = registration["agent"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
    (id, registration["apiKey"].as_str().unwrap().to_owned())
}

async fn create_task(running: &Running, title: &str) -> String {
    let body = running
        .graphql("mutation($title: String!) { createTask(input: {title: $title}) { id } }", json!({ "title": title }))
        .await;
    body["data"]["createTask"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned()
}

#[tokio::test]
async fn agent_updates_deliver_each_change_and_an_agent_follows_only_itself() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let query = "subscription { agentUpdates { id name active version tasksClaimed } }";
    let mut watching = Socket::open(&running, &running.token).await;
    watching.subscribe("agents", query, json!({})).await;

    let (a, key) = agent(&running, "a").await;
    let seen = watching.next("agents").await;
    assert_eq!((seen["agentUpdates"]["id"].as_str(), seen["agentUpdates"]["version"].as_i64()), (Some(&*a), Some(1)));
    let (b, _) = agent(&running, "b").await;
    assert_eq!(watching.next("agents").await["agentUpdates"]["id"], b.as_str());

    let mut itself = Socket::open(&running, &key).await;
    itself.subscribe("me", query, json!({})).await;
    // First another agent changes, then this one: the first thing it hears of is itself.
    let body = running
        .graphql("mutation($id: ID!) { setAgentActive(id: $id, active: false) { version } }", json!({ "id": b }))
        .await;
    assert_eq!(body["data"]["setAgentActive"]["version"], 2, "{body}");
    let deactivated = watching.next("agents").await;
    assert_eq!(
        deactivated["agentUpdates"],
        json!({ "id": b, "name": "b", "active": false, "version": 2, "tasksClaimed": 0 })
    );
    create_task(&running, "claim me").await;
    let claimed = running.graphql_as(&key, "mutation { claimTask { id } }", json!({})).await;
    assert!(claimed["data"]["claimTask"]["id"].is_string(), "{claimed}");
    let mine = itself.next("me").await;
    assert_eq!(
        (mine["agentUpdates"]["id"].as_str(), mine["agentUpdates"]["tasksClaimed"].as_i64()),
        (Some(&*a), Some(1))
    );

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn user_updates_reach_admins_with_rising_versions_and_viewers_are_refused() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let query = "subscription { userUpdates { id email role active version } }";
    let mut admin = Socket::open(&running, &running.token).await;
    admin.subscribe("users", query, json!({})).await;
    let mut viewer = Socket::open(&running, &env.token(devart_gateway::Role::Viewer)).await;
    viewer.subscribe("users", query, json!({})).await;
    let refused = viewer.next_within("users", PATIENCE).await.expect("an answer");
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    assert_eq!(viewer.message(PATIENCE).await, Some(json!({ "id": "users", "type": "complete" })));

    let body = running
        .graphql(
            "mutation { createUser(input: {email: \"vera@example.org\", role: VIEWER}) { user { id } } }",
            json!({}),
        )
        .await;
    let id = body["data"]["createUser"]["user"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
    let created = admin.next("users").await;
    assert_eq!(
        created["userUpdates"],
        json!({ "id": id, "email": "vera@example.org", "role": "VIEWER", "active": true, "version": 1 })
    );
    running
        .graphql("mutation($id: ID!) { changeRole(userId: $id, role: SUPERVISOR) { id } }", json!({ "id": id }))
        .await;
    let promoted = admin.next("users").await;
    assert_eq!(
        (promoted["userUpdates"]["role"].as_str(), promoted["userUpdates"]["version"].as_i64()),
        (Some("SUPERVISOR"), Some(2))
    );
    running.graphql("mutation($id: ID!) { deactivateUser(userId: $id) { id } }", json!({ "id": id })).await;
    let deactivated = admin.next("users").await;
    assert_eq!(
        (deactivated["userUpdates"]["active"].as_bool(), deactivated["userUpdates"]["version"].as_i64()),
        (Some(false), Some(3))
    );
    // The viewer heard none of it.
    assert_eq!(viewer.message(Duration::from_millis(500)).await, None);

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn setting_updates_deliver_every_setting_when_one_changed() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let mut viewer = Socket::open(&running, &env.token(devart_gateway::Role::Viewer)).await;
    viewer.subscribe("settings", "subscription { settingUpdates { key value default } }", json!({})).await;

    let body = running
        .graphql("mutation { updateSetting(key: \"queue.defaultMaxAttempts\", value: 7) { key } }", json!({}))
        .await;
    let count = body["data"]["updateSetting"].as_array().unwrap_or_else(|| panic!("{body}")).len();
    let settings = viewer.next("settings").await["settingUpdates"].as_array().unwrap().clone();
    assert_eq!(settings.len(), count, "every setting, not only the one changed");
    let changed = settings.iter().find(|s| s["key"] == "queue.defaultMaxAttempts").unwrap();
    assert_eq!((changed["value"].as_i64(), changed["default"].as_i64()), (Some(7), Some(3)));

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn outlier_updates_deliver_a_flag_raised_then_acknowledged() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let mut supervisor = Socket::open(&running, &env.token(devart_gateway::Role::Supervisor)).await;
    let query = "subscription { outlierUpdates { taskId zScore comparable acknowledged note task { title } } }";
    supervisor.subscribe("outliers", query, json!({})).await;

    // A task done and charged dearly, flagged as the detector would.
    let commands = env.commands();
    let (worker, _) = commands
        .agents()
        .register(AgentName::parse("worker").unwrap(), Capabilities::parse(&[] as &[&str]).unwrap(), &admin())
        .await
        .unwrap();
    let task = Uuid::now_v7();
    commands
        .tasks()
        .create(CreateTask::new(task, Title::parse("Migrate everything").unwrap()), &admin())
        .await
        .unwrap();
    let agent = worker.state.id;
    // Each command its own context: one command id is one command.
    let as_agent = || CommandContext::new(Actor::agent(agent.to_string()));
    let claim = ClaimRequest { agent_id: agent, capabilities: Vec::new(), lease: TimeDelta::seconds(60) };
    assert_eq!(commands.tasks().claim(&claim, &as_agent()).await.unwrap().map(|t| t.state.id), Some(task));
    let complete = TaskCommand::Complete { agent_id: agent, result: None };
    commands.execute::<Task>(task, complete, &as_agent(), None).await.unwrap();
    // The flag's `task` is read from the task board: it has the task before the flag is raised.
    env.sequence_all().await;
    env.wait_projected("tasks", env.store.head().await.unwrap().0).await;
    let flag = CostOutlier {
        cost: Money::from_micros(90_000_000),
        median: Money::from_micros(1_000_000),
        mad: Score::from_f64(0.3),
        z_score: Score::from_f64(15.0),
        threshold: Score::from_f64(3.5),
        comparable: 40,
        group: "capabilities:".into(),
    };
    commands.execute::<Task>(task, TaskCommand::FlagCostOutlier(flag), &admin(), None).await.unwrap();

    let raised = supervisor.next("outliers").await;
    assert_eq!(
        raised["outlierUpdates"],
        json!({ "taskId": task, "zScore": 15.0, "comparable": 40, "acknowledged": false, "note": null,
                "task": { "title": "Migrate everything" } })
    );
    let body = running
        .graphql(
            "mutation($id: ID!) { acknowledgeOutlier(taskId: $id, note: \"a one-off migration\") { id } }",
            json!({ "id": task }),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    let acknowledged = supervisor.next("outliers").await;
    assert_eq!(acknowledged["outlierUpdates"]["acknowledged"], true, "{acknowledged}");
    assert_eq!(acknowledged["outlierUpdates"]["note"], "a one-off migration");

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn workflow_runs_carry_a_version_that_rises_with_their_events() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let stages =
        json!([{ "key": "build", "title": "Build" }, { "key": "ship", "title": "Ship", "dependsOn": ["build"] }]);
    let defined = running
        .graphql(
            "mutation($input: DefineWorkflowInput!) { defineWorkflow(input: $input) { id } }",
            json!({ "input": { "name": "release", "stages": stages } }),
        )
        .await;
    let workflow = defined["data"]["defineWorkflow"]["id"].as_str().unwrap_or_else(|| panic!("{defined}")).to_owned();
    let mut watching = Socket::open(&running, &running.token).await;
    watching.subscribe("runs", "subscription { workflowRunUpdates { id status version } }", json!({})).await;

    let started = running
        .graphql("mutation($id: ID!) { startWorkflow(workflowId: $id) { id version } }", json!({ "id": workflow }))
        .await;
    let run = &started["data"]["startWorkflow"];
    assert!(run["version"].as_i64() >= Some(2), "started, and its first stage started: {started}");
    let (_, key) = agent(&running, "builder").await;
    for _ in ["build", "ship"] {
        let claimed = crate::support::eventually(PATIENCE, || async {
            let body = running.graphql_as(&key, "mutation { claimTask { id } }", json!({})).await;
            body["data"]["claimTask"]["id"].as_str().map(str::to_owned)
        })
        .await;
        running
            .graphql_as(&key, "mutation($id: ID!) { completeTask(taskId: $id) { id } }", json!({ "id": claimed }))
            .await;
    }

    let mut versions = Vec::new();
    loop {
        let update = watching.next("runs").await["workflowRunUpdates"].clone();
        assert_eq!(update["id"], run["id"]);
        versions.push(update["version"].as_i64().unwrap());
        if update["status"] == "COMPLETED" {
            break;
        }
    }
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "versions never go back: {versions:?}");
    assert!(versions.last() > versions.first(), "the run's events raised it: {versions:?}");
    let read =
        running.graphql("query($id: ID!) { workflowRun(id: $id) { version } }", json!({ "id": run["id"] })).await;
    assert_eq!(read["data"]["workflowRun"]["version"].as_i64(), versions.last().copied(), "{read}");

    running.stop().await;
    env.cleanup().await;
}

/// The statistics without the oldest wait, which grows by itself.
fn counts(stats: &Value) -> Value {
    let mut stats = stats.clone();
    stats.as_object_mut().unwrap().remove("oldestPendingAgeSeconds");
    stats
}

#[tokio::test]
async fn queue_stats_come_at_once_then_coalesced_only_when_changed_and_equal_to_the_query() {
    const TASKS: usize = 40;
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let mut supervisor = Socket::open(&running, &env.token(devart_gateway::Role::Supervisor)).await;
    supervisor
        .subscribe("queue", &format!("subscription {{ queueStatsUpdates {{ {QUEUE_FIELDS} }} }}"), json!({}))
        .await;
    let first = supervisor.next("queue").await;
    assert_eq!(first["queueStatsUpdates"]["pending"], 0, "at once, before any change: {first}");

    // Many quick changes, one after the other (each its own announcement): fewer values than
    // changes, the last one with all of them.
    let began = std::time::Instant::now();
    let mut created = Vec::new();
    for i in 0..TASKS {
        created.push(create_task(&running, &format!("task {i}")).await);
    }
    let mut values = 0;
    let last = loop {
        let stats = supervisor.next("queue").await["queueStatsUpdates"].clone();
        values += 1;
        if stats["pending"] == TASKS {
            break stats;
        }
    };
    let took = began.elapsed();
    println!("queueStatsUpdates: {TASKS} tasks created one after the other, {values} values in {took:?}");
    assert!(values < TASKS, "{values} values for {TASKS} changes: not coalesced");
    // Reads are at least an interval apart, however slow or loaded the machine: a bound on the
    // count, not on how fast anything is.
    let reads_at_most = (took.as_secs_f64() / QUEUE_INTERVAL.as_secs_f64()).floor() as usize + 1;
    assert!(values <= reads_at_most, "{values} values in {took:?}: more than one per {QUEUE_INTERVAL:?}");
    let query = running.graphql(&format!("{{ queueStats {{ {QUEUE_FIELDS} }} }}"), json!({})).await;
    assert_eq!(counts(&last), counts(&query["data"]["queueStats"]), "{query}");

    // A change to the board that leaves the statistics as they were is not handed on; the next
    // that changes them is.
    running
        .graphql(
            "mutation($id: ID!) { updateTask(id: $id, input: {title: \"renamed\"}) { id } }",
            json!({ "id": created[0] }),
        )
        .await;
    let quiet = supervisor.next_within("queue", Duration::from_secs(2)).await;
    assert!(quiet.is_none(), "the statistics did not change: {quiet:?}");
    running.graphql("mutation($id: ID!) { cancelTask(id: $id) { id } }", json!({ "id": created[1] })).await;
    let after = supervisor.next("queue").await;
    assert_eq!(after["queueStatsUpdates"]["pending"], TASKS - 1, "{after}");

    // People follow the queue; an agent may not.
    let (_, key) = agent(&running, "curious").await;
    let mut agent = Socket::open(&running, &key).await;
    agent.subscribe("queue", "subscription { queueStatsUpdates { pending } }", json!({})).await;
    let refused = agent.next_within("queue", PATIENCE).await.expect("an answer");
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");

    running.stop().await;
    env.cleanup().await;
}
