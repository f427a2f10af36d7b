//! Requests for approval of a risky step: an agent holding a task asks, reads the answer from its
//! heartbeat, a supervisor answers once (a viewer may not), an unanswered request comes to its
//! stated default when it runs out, and every decision is in the task's history with who made it.

use std::time::Duration;

use devart::Role;
use serde_json::{json, Value};

use crate::support::{eventually, TestEnv};

const REQUEST: &str = "mutation($task: ID!, $action: String!, $details: JSON, $timeout: Int, $default: Boolean) { \
    requestApproval(taskId: $task, action: $action, details: $details, timeoutSeconds: $timeout, \
                    approveOnTimeout: $default) { id status attempt expiresAt approveOnTimeout } }";
const DECIDE: &str = "mutation($task: ID!, $request: ID!, $approve: Boolean!, $note: String) { \
    decideApproval(taskId: $task, requestId: $request, approve: $approve, note: $note) { id status note timedOut } }";
const HEARTBEAT: &str =
    "mutation($task: ID!) { heartbeat(taskId: $task) { approvals { id action status note timedOut details } } }";

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or("none")
}

#[tokio::test]
async fn an_agent_asks_a_supervisor_answers_once_and_silence_comes_to_the_default() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let register = |name: &'static str| {
        let running = &running;
        async move {
            let body = running
                .graphql(
                    "mutation($name: String!) { registerAgent(input: {name: $name, capabilities: []}) { apiKey } }",
                    json!({ "name": name }),
                )
                .await;
            body["data"]["registerAgent"]["apiKey"].as_str().unwrap().to_owned()
        }
    };
    let (key, other) = (register("deployer").await, register("bystander").await);
    let created = running.graphql("mutation { createTask(input: {title: \"deploy\"}) { id } }", json!({})).await;
    let task = created["data"]["createTask"]["id"].as_str().unwrap().to_owned();

    // Only the agent holding the task asks.
    let ask = |token: String, action: &'static str, timeout: Option<i64>, default: bool| {
        let (running, task) = (&running, task.clone());
        async move {
            let variables = json!({ "task": task, "action": action, "details": { "branch": "main" },
                                    "timeout": timeout, "default": default });
            running.graphql_as(&token, REQUEST, variables).await
        }
    };
    let before_claim = ask(key.clone(), "force-push", None, false).await;
    assert_eq!(code(&before_claim), "CONFLICT", "{before_claim}");
    let claimed = running.graphql_as(&key, "mutation { claimTask { id } }", json!({})).await;
    assert_eq!(claimed["data"]["claimTask"]["id"], task.as_str(), "{claimed}");
    assert_eq!(code(&ask(other.clone(), "force-push", None, false).await), "FORBIDDEN");
    let admin = env.token(devart_gateway::Role::Admin);
    assert_eq!(code(&ask(admin, "force-push", None, false).await), "FORBIDDEN", "people do not ask");
    assert_eq!(code(&ask(key.clone(), "force-push", Some(0), false).await), "BAD_USER_INPUT");
    assert_eq!(code(&ask(key.clone(), " ", None, false).await), "BAD_USER_INPUT");

    let asked = ask(key.clone(), "force-push to main", None, false).await;
    let request = &asked["data"]["requestApproval"];
    assert_eq!((request["status"].as_str(), request["attempt"].as_i64()), (Some("PENDING"), Some(1)), "{asked}");
    assert_eq!(request["approveOnTimeout"], false);
    let request_id = request["id"].as_str().unwrap().to_owned();
    let beat = running.graphql_as(&key, HEARTBEAT, json!({ "task": task })).await;
    let approvals = &beat["data"]["heartbeat"]["approvals"];
    assert_eq!(approvals[0]["status"], "PENDING", "{beat}");
    assert_eq!(approvals[0]["details"], json!({ "branch": "main" }));

    // The supervisors' queue lists it.
    let queue = eventually(Duration::from_secs(10), || async {
        let body = running.graphql("{ approvalRequests { id action task { title } } }", json!({})).await;
        (body["data"]["approvalRequests"][0]["id"] == request_id.as_str()).then_some(body)
    })
    .await;
    assert_eq!(queue["data"]["approvalRequests"][0]["task"]["title"], "deploy");

    let viewer = env.token(devart_gateway::Role::Viewer);
    let decide = |approve: bool, note: Option<&'static str>, request: String| json!({ "task": task, "request": request, "approve": approve, "note": note });
    let refused = running.graphql_as(&viewer, DECIDE, decide(true, None, request_id.clone())).await;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    let unknown = running.graphql(DECIDE, decide(true, None, uuid::Uuid::now_v7().to_string())).await;
    assert_eq!(code(&unknown), "NOT_FOUND", "{unknown}");
    let denied = running.graphql(DECIDE, decide(false, Some("not on a Friday"), request_id.clone())).await;
    assert_eq!(
        denied["data"]["decideApproval"],
        json!({ "id": request_id, "status": "DENIED", "note": "not on a Friday", "timedOut": false })
    );
    let again = running.graphql(DECIDE, decide(true, None, request_id.clone())).await;
    assert_eq!(code(&again), "CONFLICT", "answered once: {again}");
    let beat = running.graphql_as(&key, HEARTBEAT, json!({ "task": task })).await;
    assert_eq!(beat["data"]["heartbeat"]["approvals"][0]["status"], "DENIED", "{beat}");
    assert_eq!(beat["data"]["heartbeat"]["approvals"][0]["note"], "not on a Friday");

    // Nobody answers the next one: after its second, it is what it said it would be.
    let silent = ask(key.clone(), "rotate the deploy key", Some(1), true).await;
    let silent_id = silent["data"]["requestApproval"]["id"].as_str().unwrap().to_owned();
    let answered = eventually(Duration::from_secs(10), || async {
        let beat = running.graphql_as(&key, HEARTBEAT, json!({ "task": task })).await;
        let approvals = beat["data"]["heartbeat"]["approvals"].as_array().cloned().unwrap_or_default();
        approvals.into_iter().find(|a| a["id"] == silent_id.as_str() && a["status"] != "PENDING")
    })
    .await;
    assert_eq!((answered["status"].as_str(), answered["timedOut"].as_bool()), (Some("APPROVED"), Some(true)));
    let late = running.graphql(DECIDE, decide(false, None, silent_id.clone())).await;
    assert_eq!(code(&late), "CONFLICT", "{late}");

    // The read model names who answered each, and when.
    let answered = eventually(Duration::from_secs(10), || async {
        let query = "{ denied: approvalRequests(status: DENIED) { id requestedAt decidedAt decidedBy } \
                       approved: approvalRequests(status: APPROVED) { id decidedBy } }";
        let body = running.graphql(query, json!({})).await;
        (body["data"]["approved"][0]["decidedBy"].is_string()).then_some(body)
    })
    .await;
    let denied = &answered["data"]["denied"][0];
    assert_eq!(denied["id"], request_id.as_str(), "{answered}");
    assert!(denied["decidedBy"].as_str().unwrap().starts_with("user:"), "{answered}");
    assert!(denied["requestedAt"].as_str().unwrap() < denied["decidedAt"].as_str().unwrap(), "{answered}");
    assert_eq!(answered["data"]["approved"][0]["decidedBy"], "system:approvals");

    // The history names who decided each.
    let history: Vec<(String, String)> = sqlx::query_as(
        "select event_type, actor_kind || ':' || actor_id from events where stream_id = 'task-' || $1 \
         and event_type like 'TaskApproval%' order by stream_version",
    )
    .bind(&task)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let kinds: Vec<&str> = history.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(kinds, ["TaskApprovalRequested", "TaskApprovalDecided", "TaskApprovalRequested", "TaskApprovalDecided"]);
    assert!(history[0].1.starts_with("agent:") && history[1].1.starts_with("user:"), "{history:?}");
    assert_eq!(history[3].1, "system:approvals");
    running.stop().await;
    env.cleanup().await;
}
