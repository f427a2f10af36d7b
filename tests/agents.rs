//! Agents: registration with a key shown once and stored hashed, rotation, deactivation.

use std::time::Duration;

use devart::Role;
use serde_json::{json, Value};

use crate::support::{Running, TestEnv};

const REGISTER: &str = "mutation($input: RegisterAgentInput!) { registerAgent(input: $input) { apiKey agent { id name capabilities active keyId version } } }";

async fn me(running: &Running, key: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(running.url("/graphql"))
        .bearer_auth(key)
        .json(&json!({ "query": "{ me { subject role agentId } }" }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn an_agent_key_is_shown_once_stored_hashed_rotated_and_refused_when_deactivated() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let registered =
        running.graphql(REGISTER, json!({ "input": { "name": "builder-1", "capabilities": ["rust", "docs"] } })).await;
    let registration = &registered["data"]["registerAgent"];
    let key = registration["apiKey"].as_str().unwrap_or_else(|| panic!("{registered}")).to_owned();
    let id = registration["agent"]["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("dva_{}_", registration["agent"]["keyId"].as_str().unwrap())));
    assert_eq!(registration["agent"]["capabilities"], json!(["docs", "rust"]));
    assert_eq!(registration["agent"]["active"], true);

    // The key authenticates the agent.
    let (status, body) = me(&running, &key).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["me"]["agentId"], id.as_str());
    assert_eq!(body["data"]["me"]["role"], "VIEWER");

    // The secret is nowhere but in the caller's hands: not in events, not in the key table.
    // The key is `dva_<key id>_<secret>`; the secret itself may contain `_`.
    let prefix = format!("dva_{}_", registration["agent"]["keyId"].as_str().unwrap());
    let secret = key.strip_prefix(&prefix).unwrap();
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar("select payload from events").fetch_all(&env.pool).await.unwrap();
    assert!(payloads.iter().all(|p| !p.windows(secret.len()).any(|w| w == secret.as_bytes())));
    let hash: String = sqlx::query_scalar("select secret_hash from agent_keys").fetch_one(&env.pool).await.unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(secret));

    // Only admins register agents.
    let supervisor = env.token(devart_gateway::Role::Supervisor);
    let refused = running.graphql_as(&supervisor, REGISTER, json!({ "input": { "name": "x" } })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let bad = running.graphql(REGISTER, json!({ "input": { "name": "x", "capabilities": ["NOPE"] } })).await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // Rotation: the old key stops at once, the new one works.
    let rotated = running
        .graphql(
            "mutation($id: ID!) { rotateAgentKey(id: $id) { apiKey agent { keyId version } } }",
            json!({ "id": id }),
        )
        .await;
    let new_key = rotated["data"]["rotateAgentKey"]["apiKey"].as_str().unwrap().to_owned();
    assert_eq!(me(&running, &key).await.0, 401);
    assert_eq!(me(&running, &new_key).await.0, 200);

    // Deactivation refuses the key; reactivation restores it.
    let off = running
        .graphql_as(
            &supervisor,
            "mutation($id: ID!) { setAgentActive(id: $id, active: false) { active } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(off["data"]["setAgentActive"]["active"], false, "{off}");
    let (status, body) = me(&running, &new_key).await;
    assert_eq!(status, 401);
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    assert_eq!(body["errors"][0]["message"], "the agent is deactivated");
    running
        .graphql_as(
            &supervisor,
            "mutation($id: ID!) { setAgentActive(id: $id, active: true) { active } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(me(&running, &new_key).await.0, 200);
    let garbage = format!("{}x", &new_key[..new_key.len() - 1]);
    assert_eq!(me(&running, &garbage).await.0, 401);

    // An agent reads, but does not manage tasks or agents.
    let (status, _) = me(&running, &new_key).await;
    assert_eq!(status, 200);
    let create =
        running.graphql_as(&new_key, "mutation { createTask(input: { title: \"mine\" }) { id } }", json!({})).await;
    assert_eq!(create["errors"][0]["extensions"]["code"], "FORBIDDEN");

    // The roster, from the agents read model.
    let roster = crate::support::eventually(Duration::from_secs(10), || async {
        let r = running.graphql("{ agents { id name active version keyId } }", json!({})).await;
        let agents = r["data"]["agents"].as_array()?.clone();
        (agents.first()?["version"] == 4).then_some(agents)
    })
    .await;
    assert_eq!(roster.len(), 1);
    assert_eq!(roster[0]["name"], "builder-1");
    assert_eq!(roster[0]["active"], true);
    assert_eq!(roster[0]["keyId"], rotated["data"]["rotateAgentKey"]["agent"]["keyId"]);
    running.stop().await;
    env.cleanup().await;
}
