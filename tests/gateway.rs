//! The gateway end to end: GraphQL over HTTP and WebSocket against a running devart.

use std::time::Duration;

use devart::Role;
use devart_gateway::Role as UserRole;
use serde_json::{json, Value};

use crate::support::{eventually, stream_messages, TestEnv, WsClient};

const ALL: &[Role] = &[Role::Gateway, Role::Relay, Role::Projections];

const CREATE: &str = "mutation($input: CreateTaskInput!) { createTask(input: $input) { id title description status priority requiredCapabilities version createdBy } }";

fn code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {response}"))
}

#[tokio::test]
async fn a_created_task_shows_up_in_the_store_on_jetstream_in_the_read_model_and_on_a_subscription() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let mut ws = WsClient::connect(&running, &running.token).await;
    ws.subscribe("1", "subscription { taskUpdates { id title status priority version } }", json!({})).await;
    // Subscriptions start asynchronously; give this one a moment to be in place.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let created = running
        .graphql(CREATE, json!({ "input": { "title": "Write the README", "requiredCapabilities": ["docs"] } }))
        .await;
    let task = &created["data"]["createTask"];
    assert_eq!(task["title"], "Write the README", "{created}");
    assert_eq!(task["status"], "PENDING");
    assert_eq!(task["priority"], 3, "priority defaults to 3");
    assert_eq!(task["version"], 1);
    assert_eq!(task["createdBy"], "user:admin");
    let id = task["id"].as_str().unwrap().to_owned();

    // (d) the live subscription, emitted after the projection applied it.
    let update = ws.next_data(Duration::from_secs(10)).await;
    assert_eq!(update["taskUpdates"]["id"], id.as_str());
    assert_eq!(update["taskUpdates"]["title"], "Write the README");

    // (c) the read model.
    let read = running.graphql("query($id: ID!) { task(id: $id) { id title status } }", json!({ "id": id })).await;
    assert_eq!(read["data"]["task"]["title"], "Write the README", "{read}");

    // (a) the event store, through the audit trail.
    let events = running
        .graphql(
            "{ events(first: 10) { edges { cursor node { position type streamId version actor { kind id } data } } } }",
            json!({}),
        )
        .await;
    let node = &events["data"]["events"]["edges"][0]["node"];
    assert_eq!(node["type"], "TaskCreated", "{events}");
    assert_eq!(node["position"], "1");
    assert_eq!(node["streamId"], format!("task-{id}"));
    assert_eq!(node["actor"], json!({ "kind": "USER", "id": "admin" }));
    assert_eq!(node["data"]["title"], "Write the README");

    // (b) JetStream.
    let messages = eventually(Duration::from_secs(10), || async {
        let m = stream_messages(&env.bus).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].1.get("ce-subject").unwrap().as_str(), format!("task-{id}"));

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn updates_deletes_and_pages_through_the_board() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let r =
            running.graphql(CREATE, json!({ "input": { "title": format!("task {i}"), "priority": i % 5 + 1 } })).await;
        ids.push(r["data"]["createTask"]["id"].as_str().unwrap().to_owned());
    }
    let updated = running
        .graphql(
            "mutation($id: ID!) { updateTask(id: $id, input: { title: \"renamed\", priority: 5, expectedVersion: 1 }) { title priority version } }",
            json!({ "id": ids[0] }),
        )
        .await;
    assert_eq!(updated["data"]["updateTask"], json!({ "title": "renamed", "priority": 5, "version": 3 }), "{updated}");
    let stale = running
        .graphql(
            "mutation($id: ID!) { updateTask(id: $id, input: { title: \"again\", expectedVersion: 1 }) { title } }",
            json!({ "id": ids[0] }),
        )
        .await;
    assert_eq!(code(&stale), "CONFLICT");
    let deleted = running.graphql("mutation($id: ID!) { deleteTask(id: $id) }", json!({ "id": ids[1] })).await;
    assert_eq!(deleted["data"]["deleteTask"], true);
    let again = running.graphql("mutation($id: ID!) { deleteTask(id: $id) }", json!({ "id": ids[1] })).await;
    assert_eq!(code(&again), "NOT_FOUND");

    env.sequence_all().await;
    let head = env.store.head().await.unwrap();
    env.wait_projected("tasks", head.0).await;

    // Newest first, three at a time, 6 tasks left.
    let page = "query($after: String) { tasks(first: 3, after: $after) { edges { cursor node { title } } pageInfo { hasNextPage endCursor } } }";
    let mut titles = Vec::new();
    let mut after = Value::Null;
    loop {
        let r = running.graphql(page, json!({ "after": after })).await;
        let connection = &r["data"]["tasks"];
        for edge in connection["edges"].as_array().unwrap() {
            titles.push(edge["node"]["title"].as_str().unwrap().to_owned());
        }
        if connection["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(titles, ["task 6", "task 5", "task 4", "task 3", "task 2", "renamed"]);
    let filtered = running
        .graphql(
            "{ tasks(filter: { status: PENDING, priority: [5] }) { edges { node { title priority } } } }",
            json!({}),
        )
        .await;
    let filtered: Vec<&str> = filtered["data"]["tasks"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(filtered, ["task 4", "renamed"]);
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn bad_input_gets_a_typed_error_and_changes_nothing() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway]).await;
    let cases = [
        (json!({ "title": "x", "priority": 9 }), "BAD_USER_INPUT"),
        (json!({ "title": "   " }), "BAD_USER_INPUT"),
        (json!({ "title": "x", "requiredCapabilities": ["Not A Capability"] }), "BAD_USER_INPUT"),
        (json!({ "title": "x", "parentTaskId": "not-a-uuid" }), "BAD_USER_INPUT"),
        (json!({ "title": "x", "parentTaskId": uuid::Uuid::now_v7() }), "BAD_USER_INPUT"),
        (json!({ "priority": 2 }), "BAD_USER_INPUT"),
    ];
    for (input, expected) in cases {
        let r = running.graphql(CREATE, json!({ "input": input })).await;
        assert_eq!(code(&r), expected, "{input} -> {r}");
    }
    let missing = running
        .graphql(
            "mutation { updateTask(id: \"0190a000-0000-7000-8000-000000000000\", input: { title: \"x\" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&missing), "NOT_FOUND");
    let syntax = running.graphql("{ tasks { edges ", json!({})).await;
    assert_eq!(code(&syntax), "BAD_USER_INPUT");
    let count: i64 = sqlx::query_scalar("select count(*) from events").fetch_one(&env.pool).await.unwrap();
    assert_eq!(count, 0, "nothing was half-applied");
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn tokens_and_roles_are_enforced() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway]).await;
    let client = reqwest::Client::new();
    let anonymous =
        client.post(running.url("/graphql")).json(&json!({ "query": "{ me { subject } }" })).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(code(&body), "UNAUTHENTICATED");
    let forged = client
        .post(running.url("/graphql"))
        .bearer_auth("eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl")
        .json(&json!({ "query": "{ me { subject } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert_eq!(client.get(running.url("/healthz")).send().await.unwrap().status(), 200);

    let viewer = env.token(UserRole::Viewer);
    let me = running.graphql_as(&viewer, "{ me { subject role } }", json!({})).await;
    assert_eq!(me["data"]["me"], json!({ "subject": "viewer", "role": "VIEWER" }));
    let refused = running.graphql_as(&viewer, CREATE, json!({ "input": { "title": "nope" } })).await;
    assert_eq!(code(&refused), "FORBIDDEN");
    let supervisor = env.token(UserRole::Supervisor);
    let allowed = running.graphql_as(&supervisor, CREATE, json!({ "input": { "title": "yes" } })).await;
    assert_eq!(allowed["data"]["createTask"]["title"], "yes", "{allowed}");
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_mutation_safe() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway]).await;
    let send = || async {
        let r: Value = reqwest::Client::new()
            .post(running.url("/graphql"))
            .bearer_auth(&running.token)
            .header("Idempotency-Key", "create-readme-1")
            .json(&json!({ "query": CREATE, "variables": { "input": { "title": "once" } } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["data"]["createTask"]["id"].as_str().unwrap().to_owned()
    };
    let first = send().await;
    let second = send().await;
    assert_eq!(first, second);
    let count: i64 = sqlx::query_scalar("select count(*) from events").fetch_one(&env.pool).await.unwrap();
    assert_eq!(count, 1);
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_events_subscription_catches_up_then_goes_live_without_gap_or_repeat() {
    let env = TestEnv::new().await;
    let running = env.start(ALL).await;
    for i in 0..30 {
        running.graphql(CREATE, json!({ "input": { "title": format!("before {i}") } })).await;
    }
    let mut ws = WsClient::connect(&running, &running.token).await;
    ws.subscribe("e", "subscription { events(after: \"0\") { position type } }", json!({})).await;
    let writer = async {
        for i in 0..30 {
            running.graphql(CREATE, json!({ "input": { "title": format!("after {i}") } })).await;
        }
    };
    let reader = async {
        let mut positions = Vec::new();
        while positions.len() < 60 {
            let data = ws.next_data(Duration::from_secs(15)).await;
            positions.push(data["events"]["position"].as_str().unwrap().parse::<u64>().unwrap());
        }
        positions
    };
    let ((), positions) = tokio::join!(writer, reader);
    assert_eq!(positions, (1..=60).collect::<Vec<_>>());
    running.stop().await;
    env.cleanup().await;
}
