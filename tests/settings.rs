//! Live settings: validated, recorded as events, and in effect in another running process within a
//! second, without a restart.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use devart::Role;
use serde_json::{json, Value};

use crate::support::{Running, TestEnv};

const ALL: &[Role] = &[Role::Gateway, Role::Relay, Role::Projections];
const UPDATE: &str = "mutation($key: String!, $value: JSON!) { updateSetting(key: $key, value: $value) { key value } }";

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}

fn setting<'a>(settings: &'a Value, key: &str) -> &'a Value {
    &settings.as_array().unwrap().iter().find(|s| s["key"] == key).unwrap_or_else(|| panic!("no {key}"))["value"]
}

/// Seconds from now until the lease a heartbeat on `running` (without `leaseSeconds`) sets.
async fn default_lease(running: &Running, key: &str, task: &str) -> i64 {
    let beat = running
        .graphql_as(key, "mutation($id: ID!) { heartbeat(taskId: $id) { leaseExpiresAt } }", json!({ "id": task }))
        .await;
    let until: DateTime<Utc> =
        beat["data"]["heartbeat"]["leaseExpiresAt"].as_str().unwrap_or_else(|| panic!("{beat}")).parse().unwrap();
    (until - Utc::now()).num_seconds()
}

#[tokio::test]
async fn a_changed_setting_takes_effect_in_another_running_process_within_a_second() {
    let env = TestEnv::new().await;
    let one = env.start(ALL).await;
    let other = env.start(ALL).await;

    let agent =
        one.graphql("mutation { registerAgent(input: { name: \"a\", capabilities: [] }) { apiKey } }", json!({})).await;
    let key = agent["data"]["registerAgent"]["apiKey"].as_str().unwrap().to_owned();
    let created = one.graphql("mutation { createTask(input: { title: \"t\" }) { id maxAttempts } }", json!({})).await;
    assert_eq!(created["data"]["createTask"]["maxAttempts"], 3);
    let claimed = other.graphql_as(&key, "mutation { claimTask { id } }", json!({})).await;
    let task = claimed["data"]["claimTask"]["id"].as_str().unwrap_or_else(|| panic!("{claimed}")).to_owned();
    let lease = default_lease(&other, &key, &task).await;
    assert!((28..=30).contains(&lease), "default lease {lease}s");

    // Bad keys and values change nothing; viewers change nothing.
    assert_eq!(code(&one.graphql(UPDATE, json!({ "key": "queue.nope", "value": 1 })).await), "BAD_USER_INPUT");
    assert_eq!(
        code(&one.graphql(UPDATE, json!({ "key": "queue.defaultLeaseSeconds", "value": 0 })).await),
        "BAD_USER_INPUT"
    );
    assert_eq!(
        code(&one.graphql(UPDATE, json!({ "key": "budget.alertThresholds", "value": [50, "x"] })).await),
        "BAD_USER_INPUT"
    );
    let viewer = env.token(devart_gateway::Role::Viewer);
    assert_eq!(
        code(&one.graphql_as(&viewer, UPDATE, json!({ "key": "queue.defaultLeaseSeconds", "value": 60 })).await),
        "FORBIDDEN"
    );

    // Changed through one process, in effect in the other within a second.
    let changed = one.graphql(UPDATE, json!({ "key": "queue.defaultLeaseSeconds", "value": 120 })).await;
    assert_eq!(setting(&changed["data"]["updateSetting"], "queue.defaultLeaseSeconds"), 120, "{changed}");
    let since = Instant::now();
    loop {
        if (118..=120).contains(&default_lease(&other, &key, &task).await) {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(1), "not in effect after {:?}", since.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    one.graphql(UPDATE, json!({ "key": "queue.defaultMaxAttempts", "value": 7 })).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let created = other.graphql("mutation { createTask(input: { title: \"u\" }) { maxAttempts } }", json!({})).await;
    assert_eq!(created["data"]["createTask"]["maxAttempts"], 7);

    // Alert thresholds, in the other process's budget decisions.
    one.graphql(UPDATE, json!({ "key": "budget.alertThresholds", "value": [90, 10, 10] })).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let service = other
        .graphql("mutation { registerService(input: { name: \"llm\", monthlyBudget: \"100\" }) { id } }", json!({}))
        .await;
    let service = service["data"]["registerService"]["id"].as_str().unwrap().to_owned();
    let charge =
        "mutation($s: ID!) { recordCharge(input: { serviceId: $s, amount: \"15\", idempotencyKey: \"c\" }) { spent } }";
    other.graphql_as(&key, charge, json!({ "s": service })).await;
    let services = other.graphql("{ services { thresholdsCrossed } }", json!({})).await;
    assert_eq!(services["data"]["services"][0]["thresholdsCrossed"], json!([10]), "{services}");

    // Everyone sees the settings and their history.
    let listed = other.graphql_as(&viewer, "{ settings { key value default } }", json!({})).await;
    assert_eq!(setting(&listed["data"]["settings"], "budget.alertThresholds"), &json!([10, 90]));
    let history = other
        .graphql("{ events(types: [\"SettingChanged\"]) { edges { node { actor { kind id } data } } } }", json!({}))
        .await;
    let changes: Vec<&Value> =
        history["data"]["events"]["edges"].as_array().unwrap().iter().map(|e| &e["node"]["data"]).collect();
    assert_eq!(changes.len(), 3, "{history}");
    assert_eq!(changes[0], &json!({ "key": "queue.defaultLeaseSeconds", "value": "120", "previous": "30" }));
    one.stop().await;
    other.stop().await;
    env.cleanup().await;
}
