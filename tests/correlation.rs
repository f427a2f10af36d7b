//! Correlation: everything one request set going, across the agents' own requests.

use devart::Role;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::{Running, TestEnv};

async fn graphql(running: &Running, token: &str, correlation: Option<Uuid>, query: &str, variables: Value) -> Value {
    let mut request = reqwest::Client::new().post(running.url("/graphql")).bearer_auth(token);
    if let Some(c) = correlation {
        request = request.header("X-Correlation-Id", c.to_string());
    }
    let response = request.json(&json!({ "query": query, "variables": variables })).send().await.unwrap();
    let body: Value = response.json().await.unwrap();
    assert!(body["errors"].is_null(), "{body}");
    body["data"].clone()
}

#[tokio::test]
async fn a_request_s_correlation_follows_its_task_through_claims_charges_and_successors() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let admin = running.token.clone();
    let key =
        graphql(&running, &admin, None, "mutation { registerAgent(input: { name: \"a\" }) { apiKey } }", json!({}))
            .await["registerAgent"]["apiKey"]
            .as_str()
            .unwrap()
            .to_owned();
    let service = graphql(
        &running,
        &admin,
        None,
        "mutation { registerService(input: { name: \"llm\", monthlyBudget: \"100.00\" }) { id } }",
        json!({}),
    )
    .await["registerService"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The supervisor's request: one task, under a correlation the client chose.
    let origin = Uuid::now_v7();
    let create = "mutation($input: CreateTaskInput!) { createTask(input: $input) { id } }";
    let task = graphql(&running, &admin, Some(origin), create, json!({ "input": { "title": "build" } })).await
        ["createTask"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Unrelated work in between.
    graphql(&running, &admin, None, create, json!({ "input": { "title": "unrelated", "priority": 1 } })).await;

    // The agent's requests, none of which names the correlation.
    let claimed = graphql(&running, &key, None, "mutation { claimTask { id } }", json!({})).await;
    assert_eq!(claimed["claimTask"]["id"], task.as_str());
    graphql(&running, &key, None, "mutation($t: ID!) { heartbeat(taskId: $t) { cancelled } }", json!({ "t": task }))
        .await;
    let reservation = graphql(
        &running,
        &key,
        None,
        "mutation($s: ID!, $t: ID!) { authorizeUsage(serviceId: $s, estimatedCost: \"2.00\", taskId: $t, idempotencyKey: \"r1\") { reservationId } }",
        json!({ "s": service, "t": task }),
    )
    .await["authorizeUsage"]["reservationId"]
        .clone();
    graphql(
        &running,
        &key,
        None,
        "mutation($input: RecordChargeInput!) { recordCharge(input: $input) { chargeId } }",
        json!({ "input": { "serviceId": service, "amount": "1.50", "taskId": task, "reservationId": reservation, "idempotencyKey": "c1" } }),
    )
    .await;
    let successor =
        graphql(&running, &key, None, create, json!({ "input": { "title": "follow-up", "parentTaskId": task } })).await
            ["createTask"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
    graphql(
        &running,
        &key,
        None,
        "mutation($t: ID!) { completeTask(taskId: $t, result: {}) { id } }",
        json!({ "t": task }),
    )
    .await;
    env.sequence_all().await;

    let page = graphql(
        &running,
        &admin,
        None,
        "query($c: ID!) { events(correlationId: $c, first: 100) { edges { node { type streamId } } } }",
        json!({ "c": origin }),
    )
    .await;
    let seen: Vec<(String, String)> = page["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["node"]["type"].as_str().unwrap().to_owned(), e["node"]["streamId"].as_str().unwrap().to_owned()))
        .collect();
    let on = |stream: &str| format!("task-{stream}");
    let expected = [
        ("TaskCreated", on(&task)),
        ("TaskClaimed", on(&task)),
        ("TaskLeaseExtended", on(&task)),
        ("UsageAuthorized", format!("service-{service}")),
        ("UsageCharged", format!("service-{service}")),
        ("TaskCreated", on(&successor)),
        ("TaskCompleted", on(&task)),
    ];
    let expected: Vec<(String, String)> = expected.into_iter().map(|(t, s)| (t.to_owned(), s)).collect();
    assert_eq!(seen, expected);
    running.stop().await;
    env.cleanup().await;
}
