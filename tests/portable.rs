//! Export, import and replay: an imported instance and a replayed schema match their source's read
//! models, checksum for checksum.

use std::time::Duration;

use devart::portable::{checksums, export, import, replay};
use devart::Role;
use devart_commands::history::At;
use devart_domain::Position;
use serde_json::json;

use crate::support::{eventually, Running, TestEnv};

const ALL: &[Role] = &[Role::Gateway, Role::Relay, Role::Projections];

/// Some of everything: tasks through their life, an agent, a workflow run, a budget with spend, a
/// changed setting.
async fn activity(running: &Running) {
    let key = running
        .graphql("mutation { registerAgent(input: { name: \"ada\", capabilities: [] }) { apiKey } }", json!({}))
        .await;
    let key = key["data"]["registerAgent"]["apiKey"].as_str().unwrap().to_owned();
    for i in 0..6 {
        running
            .graphql(
                "mutation($t: String!) { createTask(input: { title: $t }) { id } }",
                json!({ "t": format!("task {i}") }),
            )
            .await;
    }
    for _ in 0..3 {
        let claimed = running.graphql_as(&key, "mutation { claimTask { id } }", json!({})).await;
        let id = claimed["data"]["claimTask"]["id"].clone();
        running
            .graphql_as(
                &key,
                "mutation($id: ID!) { completeTask(taskId: $id, result: {ok: true}) { id } }",
                json!({ "id": id }),
            )
            .await;
    }
    let defined = running
        .graphql("mutation { defineWorkflow(input: { name: \"w\", stages: [{ key: \"a\", title: \"A\" }, { key: \"b\", title: \"B\", dependsOn: [\"a\"] }] }) { id } }", json!({}))
        .await;
    let workflow = defined["data"]["defineWorkflow"]["id"].clone();
    running
        .graphql("mutation($w: ID!) { startWorkflow(workflowId: $w, input: {n: 1}) { id } }", json!({ "w": workflow }))
        .await;
    let service = running
        .graphql("mutation { registerService(input: { name: \"llm\", monthlyBudget: \"20\" }) { id } }", json!({}))
        .await;
    let service = service["data"]["registerService"]["id"].clone();
    let authorized = running
        .graphql_as(&key, "mutation($s: ID!) { authorizeUsage(serviceId: $s, estimatedCost: \"12\", idempotencyKey: \"a\") { reservationId } }", json!({ "s": service }))
        .await;
    let reservation = authorized["data"]["authorizeUsage"]["reservationId"].clone();
    running
        .graphql_as(&key, "mutation($s: ID!, $r: ID) { recordCharge(input: { serviceId: $s, amount: \"11\", reservationId: $r, idempotencyKey: \"c\" }) { spent } }", json!({ "s": service, "r": reservation }))
        .await;
    running
        .graphql("mutation { updateSetting(key: \"queue.defaultLeaseSeconds\", value: 45) { key } }", json!({}))
        .await;
    running
        .graphql(
            "mutation { createUser(input: { email: \"vera@example.org\", role: SUPERVISOR, password: \"vera's own password\" }) { user { id } } }",
            json!({}),
        )
        .await;
}

/// Waits until every projection (and the orchestrator) has applied everything, and nothing moves.
async fn settled(env: &TestEnv) -> u64 {
    eventually(Duration::from_secs(20), || async {
        env.sequence_all().await;
        let head = env.store.head().await.unwrap().0;
        let behind: i64 = sqlx::query_scalar("select count(*) from projection_checkpoints where position < $1")
            .bind(head as i64)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        (behind == 0).then_some(head)
    })
    .await
}

#[tokio::test]
async fn an_imported_instance_and_a_replayed_schema_match_the_source() {
    let source = TestEnv::new().await;
    let running = source.start(ALL).await;
    activity(&running).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let head = settled(&source).await;
    running.stop().await;
    let live = checksums(&source.config, None).await.unwrap();
    assert!(live.len() >= 6, "{live:?}");

    // Export everything, import into an empty instance: the same read models.
    let mut exported = Vec::new();
    assert_eq!(export(&source.config, 1, None, &mut exported).await.unwrap(), head);
    let target = TestEnv::new().await;
    assert_eq!(import(&target.config, &exported[..]).await.unwrap(), head);
    assert_eq!(checksums(&target.config, None).await.unwrap(), live, "imported read models differ");
    assert!(matches!(
        devart_commands::chain::verify(&target.pool, Position(1), None).await.unwrap(),
        devart_commands::chain::Verdict::Intact { events, .. } if events == head
    ));
    // The write side came along: the queue still hands out what was pending.
    let pending: i64 = sqlx::query_scalar("select count(*) from task_queue where state = 'pending'")
        .fetch_one(&target.pool)
        .await
        .unwrap();
    assert_eq!(pending, 4, "three plain tasks and the workflow's first stage");
    // Importing twice is refused.
    assert!(import(&target.config, &exported[..]).await.is_err());
    // Secrets do not travel: the agent's key and the person's password verify nothing until an
    // admin gives new ones; the rest of their rows came along.
    let imported = target.start(ALL).await;
    let (agent, user): (String, String) = (
        sqlx::query_scalar("select id::text from agents where name = 'ada'").fetch_one(&target.pool).await.unwrap(),
        sqlx::query_scalar("select id::text from users where email = 'vera@example.org'")
            .fetch_one(&target.pool)
            .await
            .unwrap(),
    );
    let signed_in = |password: &'static str| {
        let imported = &imported;
        async move {
            let session = imported
                .graphql_anonymous(
                    "mutation($p: String!) { login(email: \"vera@example.org\", password: $p) { user { role } } }",
                    json!({ "p": password }),
                )
                .await;
            session["data"]["login"]["user"]["role"].as_str().map(str::to_owned)
        }
    };
    assert_eq!(signed_in("vera's own password").await, None, "the password did not travel");
    let reset = imported
        .graphql("mutation($u: ID!) { resetPassword(userId: $u) { password user { email } } }", json!({ "u": user }))
        .await;
    let password = reset["data"]["resetPassword"]["password"].as_str().unwrap_or_else(|| panic!("{reset}"));
    let session = imported
        .graphql_anonymous(
            "mutation($p: String!) { login(email: \"vera@example.org\", password: $p) { user { role } } }",
            json!({ "p": password }),
        )
        .await;
    assert_eq!(session["data"]["login"]["user"]["role"], "SUPERVISOR", "{session}");
    let taken = imported
        .graphql(
            "mutation { createUser(input: { email: \"vera@example.org\", role: VIEWER }) { password } }",
            json!({}),
        )
        .await;
    assert_eq!(taken["errors"][0]["extensions"]["code"], "CONFLICT", "the address is still hers: {taken}");
    let rotated =
        imported.graphql("mutation($a: ID!) { rotateAgentKey(id: $a) { apiKey } }", json!({ "a": agent })).await;
    let key = rotated["data"]["rotateAgentKey"]["apiKey"].as_str().unwrap_or_else(|| panic!("{rotated}"));
    let me = imported.graphql_as(key, "{ me { agentId } }", json!({})).await;
    assert_eq!(me["data"]["me"]["agentId"], agent.as_str(), "{me}");
    imported.stop().await;

    // Replaying up to the head equals the live read models, without touching them.
    replay(&source.config, At::Position(Position(head)), "replay_head", |_, _| {}).await.unwrap();
    assert_eq!(checksums(&source.config, Some("replay_head")).await.unwrap(), live);
    assert_eq!(checksums(&source.config, None).await.unwrap(), live, "the live read models were touched");

    // Replaying to halfway equals an instance that imported the first half.
    let half = head / 2;
    replay(&source.config, At::Position(Position(half)), "replay_half", |_, _| {}).await.unwrap();
    let mut first_half = Vec::new();
    export(&source.config, 1, Some(half), &mut first_half).await.unwrap();
    let halfway = TestEnv::new().await;
    import(&halfway.config, &first_half[..]).await.unwrap();
    let replayed = checksums(&source.config, Some("replay_half")).await.unwrap();
    assert_eq!(replayed, checksums(&halfway.config, None).await.unwrap());
    assert_ne!(replayed, live);
    source.cleanup().await;
    target.cleanup().await;
    halfway.cleanup().await;
}
