//! Workflows through GraphQL: a DAG is validated, a diamond fans out and in with results carried
//! along, a stage that finally fails fails the run, and orchestrating the same history again
//! changes nothing.

use std::time::Duration;

use devart::Role;
use devart_projections::workflows::WorkflowsProjection;
use serde_json::{json, Value};

use crate::support::{eventually, Running, TestEnv, WsClient};

const ALL: &[Role] = &[Role::Gateway, Role::Relay, Role::Projections];

const DEFINE: &str = "mutation($input: DefineWorkflowInput!) { defineWorkflow(input: $input) { id name version stages { key dependsOn } } }";
const START: &str = "mutation($id: ID!, $input: JSON) { startWorkflow(workflowId: $id, input: $input) { id status workflowVersion stages { key status taskId } } }";
const REGISTER: &str = "mutation($input: RegisterAgentInput!) { registerAgent(input: $input) { agent { id } apiKey } }";
const CLAIM: &str = "mutation { claimTask(leaseSeconds: 60) { id title input workflowRunId stageKey } }";
const COMPLETE: &str = "mutation($id: ID!, $result: JSON) { completeTask(taskId: $id, result: $result) { id status } }";
const RUN: &str = "query($id: ID!) { workflowRun(id: $id) { id status failure finishedAt stages { key status taskId attempt result error task { id status } } } }";

fn stage(key: &str, depends_on: &[&str]) -> Value {
    json!({ "key": key, "title": format!("stage {key}"), "dependsOn": depends_on, "requiredCapabilities": ["build"] })
}

fn diamond() -> Value {
    json!([stage("a", &[]), stage("b", &["a"]), stage("c", &["a"]), stage("d", &["b", "c"])])
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}

async fn agent_key(running: &Running, name: &str) -> String {
    let body = running.graphql(REGISTER, json!({ "input": { "name": name, "capabilities": ["build"] } })).await;
    body["data"]["registerAgent"]["apiKey"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned()
}

/// The task the agent claims next, waiting for one to appear.
async fn claim(running: &Running, key: &str) -> Value {
    eventually(Duration::from_secs(10), || async {
        let body = running.graphql_as(key, CLAIM, json!({})).await;
        assert!(body["errors"].is_null(), "{body}");
        let task = body["data"]["claimTask"].clone();
        (!task.is_null()).then_some(task)
    })
    .await
}

async fn run(running: &Running, id: &str) -> Value {
    running.graphql(RUN, json!({ "id": id })).await["data"]["workflowRun"].clone()
}

/// The run once `done` holds for it.
async fn run_when(running: &Running, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(10), || async {
        let run = run(running, id).await;
        done(&run).then_some(run)
    })
    .await
}

fn stage_status<'a>(run: &'a Value, key: &str) -> &'a str {
    let stages = run["stages"].as_array().unwrap_or_else(|| panic!("no stages in {run}"));
    stages.iter().find(|s| s["key"] == key).unwrap()["status"].as_str().unwrap()
}

async fn define(running: &Running, name: &str, stages: Value) -> Value {
    running.graphql(DEFINE, json!({ "input": { "name": name, "stages": stages } })).await
}

#[tokio::test]
async fn workflow_definitions_must_be_dags_of_known_keys_and_are_versioned() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let cycle = define(&running, "cyclic", json!([stage("a", &["c"]), stage("b", &["a"]), stage("c", &["b"])])).await;
    assert_eq!(code(&cycle), "BAD_USER_INPUT");
    assert!(cycle["errors"][0]["message"].as_str().unwrap().contains("cycle: a → c → b → a"), "{cycle}");
    let unknown = define(&running, "unknown", json!([stage("a", &["x"])])).await;
    assert_eq!(code(&unknown), "BAD_USER_INPUT");
    assert!(unknown["errors"][0]["message"].as_str().unwrap().contains("unknown stage `x`"), "{unknown}");
    assert_eq!(code(&define(&running, "twice", json!([stage("a", &[]), stage("a", &[])])).await), "BAD_USER_INPUT");
    assert_eq!(code(&define(&running, "empty", json!([])).await), "BAD_USER_INPUT");
    let viewer = env.token(devart_gateway::Role::Viewer);
    let refused = running.graphql_as(&viewer, DEFINE, json!({ "input": { "name": "x", "stages": diamond() } })).await;
    assert_eq!(code(&refused), "FORBIDDEN");

    let v1 = define(&running, "Release", diamond()).await;
    let workflow = &v1["data"]["defineWorkflow"];
    assert_eq!(workflow["version"], 1, "{v1}");
    assert_eq!(workflow["stages"][3], json!({ "key": "d", "dependsOn": ["b", "c"] }));
    // The same definition again is the same version; a changed one (in any case) is the next.
    let again = define(&running, "Release", diamond()).await;
    assert_eq!(again["data"]["defineWorkflow"]["version"], 1);
    let v2 = define(&running, "release", json!([stage("only", &[])])).await;
    assert_eq!(v2["data"]["defineWorkflow"]["version"], 2, "{v2}");
    assert_eq!(v2["data"]["defineWorkflow"]["id"], workflow["id"]);
    let listed = eventually(Duration::from_secs(10), || async {
        let body = running.graphql("{ workflows { name version stages { key } } }", json!({})).await;
        (body["data"]["workflows"][0]["version"] == 2).then_some(body)
    })
    .await;
    assert_eq!(
        listed["data"]["workflows"],
        json!([{ "name": "release", "version": 2, "stages": [{ "key": "only" }] }])
    );

    let missing = running.graphql(START, json!({ "id": uuid::Uuid::nil().to_string() })).await;
    assert_eq!(code(&missing), "NOT_FOUND");
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_diamond_workflow_fans_out_then_in_carrying_results() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let ada = agent_key(&running, "ada").await;
    let bob = agent_key(&running, "bob").await;
    let defined = define(&running, "diamond", diamond()).await;
    let workflow_id = defined["data"]["defineWorkflow"]["id"].as_str().unwrap().to_owned();

    let mut ws = WsClient::connect(&running, &running.token).await;
    ws.subscribe("runs", "subscription { workflowRunUpdates { id status stages { key status } } }", json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = running.graphql(START, json!({ "id": workflow_id, "input": { "repo": "devart" } })).await;
    let started = &started["data"]["startWorkflow"];
    let run_id = started["id"].as_str().unwrap_or_else(|| panic!("{started}")).to_owned();
    assert_eq!(started["status"], "RUNNING");
    let statuses: Vec<&str> =
        started["stages"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["PENDING", "WAITING", "WAITING", "WAITING"]);

    // A runs first, with the run's input and no dependencies.
    let a = claim(&running, &ada).await;
    assert_eq!((a["stageKey"].as_str(), a["workflowRunId"].as_str()), (Some("a"), Some(run_id.as_str())));
    assert_eq!(a["input"], json!({ "input": { "repo": "devart" }, "dependencies": {} }));
    assert!(running.graphql_as(&bob, CLAIM, json!({})).await["data"]["claimTask"].is_null(), "B and C wait for A");
    running.graphql_as(&ada, COMPLETE, json!({ "id": a["id"], "result": { "built": "a" } })).await;

    // Then B and C, at the same time, each with A's result.
    let first = claim(&running, &ada).await;
    let second = claim(&running, &bob).await;
    let mut parallel = [first["stageKey"].as_str().unwrap(), second["stageKey"].as_str().unwrap()];
    parallel.sort();
    assert_eq!(parallel, ["b", "c"]);
    assert_eq!(first["input"]["dependencies"], json!({ "a": { "built": "a" } }));
    let both =
        run_when(&running, &run_id, |r| stage_status(r, "b") == "IN_PROGRESS" && stage_status(r, "c") == "IN_PROGRESS")
            .await;
    assert_eq!(stage_status(&both, "d"), "WAITING");

    // D waits for both.
    let (ada_stage, bob_stage) = (first["stageKey"].as_str().unwrap(), second["stageKey"].as_str().unwrap());
    running.graphql_as(&ada, COMPLETE, json!({ "id": first["id"], "result": { "built": ada_stage } })).await;
    run_when(&running, &run_id, |r| stage_status(r, ada_stage) == "COMPLETED").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(running.graphql_as(&ada, CLAIM, json!({})).await["data"]["claimTask"].is_null(), "D waits for both");
    running.graphql_as(&bob, COMPLETE, json!({ "id": second["id"], "result": { "built": bob_stage } })).await;
    let d = claim(&running, &bob).await;
    assert_eq!(d["stageKey"], "d");
    assert_eq!(d["input"]["dependencies"], json!({ "b": { "built": "b" }, "c": { "built": "c" } }));
    running.graphql_as(&bob, COMPLETE, json!({ "id": d["id"], "result": { "shipped": true } })).await;

    // The run's read model and the tasks' follow the same events each at its own pace: wait for both.
    let done = run_when(&running, &run_id, |r| {
        r["status"] == "COMPLETED"
            && r["stages"].as_array().is_some_and(|s| s.iter().all(|stage| stage["task"]["status"] == "COMPLETED"))
    })
    .await;
    assert!(done["finishedAt"].is_string());
    for stage in done["stages"].as_array().unwrap() {
        assert_eq!(stage["status"], "COMPLETED", "{done}");
        assert_eq!(stage["attempt"], 1);
        assert_eq!(stage["task"]["status"], "COMPLETED");
    }
    assert_eq!(done["stages"][3]["result"], json!({ "shipped": true }));
    let listed = running.graphql("{ workflowRuns(status: COMPLETED) { id } }", json!({})).await;
    assert_eq!(listed["data"]["workflowRuns"], json!([{ "id": run_id }]));

    // The subscription saw the run through to the end.
    let mut seen = Vec::new();
    loop {
        let data = ws.next_data(Duration::from_secs(10)).await;
        let update = data["workflowRunUpdates"].clone();
        assert_eq!(update["id"], run_id.as_str());
        seen.push(update["status"].as_str().unwrap().to_owned());
        if update["status"] == "COMPLETED" {
            break;
        }
    }
    assert_eq!(seen.first().map(String::as_str), Some("RUNNING"));

    // A rebuild of the workflows read model from the store equals the live one.
    env.sequence_all().await;
    let head = env.store.head().await.unwrap();
    env.wait_projected("workflows", head.0).await;
    let live = (env.checksum("workflows").await, env.checksum("workflow_runs").await);
    devart_projections::rebuild::rebuild(&env.pool, &env.store, &WorkflowsProjection, |_, _| {}).await.unwrap();
    assert_eq!((env.checksum("workflows").await, env.checksum("workflow_runs").await), live);

    // Orchestrating the whole history again (as after a crash) appends nothing.
    let count =
        || async { sqlx::query_scalar::<_, i64>("select count(*) from events").fetch_one(&env.pool).await.unwrap() };
    let before = count().await;
    let history = env.commands().store().read_all(devart_domain::Position::START, None, usize::MAX).await.unwrap();
    env.commands().workflows().orchestrate(&history).await.unwrap();
    assert_eq!(count().await, before, "orchestrating again appended events");
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_stage_that_finally_fails_fails_the_run_and_stops_the_rest() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let ada = agent_key(&running, "ada").await;
    let bob = agent_key(&running, "bob").await;
    let defined = define(&running, "fragile", diamond()).await;
    let workflow_id = defined["data"]["defineWorkflow"]["id"].as_str().unwrap().to_owned();
    let started = running.graphql(START, json!({ "id": workflow_id })).await;
    let run_id = started["data"]["startWorkflow"]["id"].as_str().unwrap().to_owned();

    let a = claim(&running, &ada).await;
    running.graphql_as(&ada, COMPLETE, json!({ "id": a["id"], "result": null })).await;
    let first = claim(&running, &ada).await;
    let second = claim(&running, &bob).await;
    let failed_key = first["stageKey"].as_str().unwrap().to_owned();
    let other_key = second["stageKey"].as_str().unwrap().to_owned();
    let fail = "mutation($id: ID!) { failTask(taskId: $id, error: \"compiler crashed\", retryable: false) { status } }";
    let body = running.graphql_as(&ada, fail, json!({ "id": first["id"] })).await;
    assert_eq!(body["data"]["failTask"]["status"], "FAILED", "{body}");

    let failed =
        run_when(&running, &run_id, |r| r["status"] == "FAILED" && stage_status(r, &other_key) == "CANCELLED").await;
    assert_eq!(failed["failure"], format!("stage `{failed_key}` failed: failed after 1 attempt(s): compiler crashed"));
    assert_eq!(stage_status(&failed, &failed_key), "FAILED");
    assert_eq!(stage_status(&failed, "d"), "SKIPPED");
    // The sibling still in progress was cancelled: its agent hears it on the next heartbeat.
    let heartbeat = "mutation($id: ID!) { heartbeat(taskId: $id) { cancelled } }";
    let beat = running.graphql_as(&bob, heartbeat, json!({ "id": second["id"] })).await;
    assert_eq!(beat["data"]["heartbeat"]["cancelled"], true, "{beat}");
    assert!(running.graphql_as(&bob, CLAIM, json!({})).await["data"]["claimTask"].is_null(), "nothing else starts");
    running.stop().await;
    env.cleanup().await;
}

/// Completes run `run_id`'s build stage as the agent `key`, then waits for its deploy stage's task
/// to await approval; that task's id.
async fn built_and_waiting(running: &Running, key: &str, run_id: &str) -> Value {
    let build = claim(running, key).await;
    running.graphql_as(key, COMPLETE, json!({ "id": build["id"], "result": null })).await;
    let awaiting = |r: &Value| {
        let stages = r["stages"].as_array().cloned().unwrap_or_default();
        stages.into_iter().find(|s| s["key"] == "deploy" && s["task"]["status"] == "AWAITING_APPROVAL")
    };
    let waiting = run_when(running, run_id, |r| awaiting(r).is_some()).await;
    awaiting(&waiting).expect("waiting")["taskId"].clone()
}

/// A stage defined with `requiresApproval` starts as a task awaiting approval that no agent gets;
/// approved, it is claimed and the run goes on. In a second run, rejecting it fails the stage and
/// the run with the supervisor's reason.
#[tokio::test]
async fn a_stage_that_requires_approval_waits_for_a_supervisor_and_a_rejection_fails_the_run() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let ada = agent_key(&running, "ada").await;
    let gated = json!({ "key": "deploy", "title": "deploy", "dependsOn": ["build"], "requiredCapabilities": ["build"],
                        "requiresApproval": true });
    let defined = running
        .graphql(
            "mutation($input: DefineWorkflowInput!) { defineWorkflow(input: $input) { id stages { key requiresApproval } } }",
            json!({ "input": { "name": "release", "stages": [stage("build", &[]), gated] } }),
        )
        .await;
    let workflow = &defined["data"]["defineWorkflow"];
    assert_eq!(workflow["stages"][1], json!({ "key": "deploy", "requiresApproval": true }), "{defined}");
    let workflow_id = workflow["id"].as_str().unwrap().to_owned();
    let start = || async {
        let started = running.graphql(START, json!({ "id": workflow_id })).await;
        started["data"]["startWorkflow"]["id"].as_str().unwrap().to_owned()
    };

    let run_id = start().await;
    let deploy = built_and_waiting(&running, &ada, &run_id).await;
    assert!(running.graphql_as(&ada, CLAIM, json!({})).await["data"]["claimTask"].is_null(), "not before approval");
    let approve = "mutation($id: ID!) { approveTask(id: $id, note: \"go\") { status } }";
    assert_eq!(running.graphql(approve, json!({ "id": deploy })).await["data"]["approveTask"]["status"], "PENDING");
    let claimed = claim(&running, &ada).await;
    assert_eq!(claimed["id"], deploy);
    running.graphql_as(&ada, COMPLETE, json!({ "id": deploy, "result": null })).await;
    run_when(&running, &run_id, |r| r["status"] == "COMPLETED").await;

    let second = start().await;
    let deploy = built_and_waiting(&running, &ada, &second).await;
    let reject = "mutation($id: ID!) { rejectTask(id: $id, reason: \"change freeze\") { status } }";
    assert_eq!(running.graphql(reject, json!({ "id": deploy })).await["data"]["rejectTask"]["status"], "REJECTED");
    let failed = run_when(&running, &second, |r| r["status"] == "FAILED").await;
    assert_eq!(failed["failure"], "stage `deploy` failed: its task was rejected: change freeze");
    assert_eq!(stage_status(&failed, "deploy"), "FAILED");
    running.stop().await;
    env.cleanup().await;
}
