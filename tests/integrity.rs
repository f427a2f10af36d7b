//! Tamper evidence: an untouched history verifies; modifying, removing, inserting or reordering
//! events through plain SQL is each caught at the right position.

use devart::Role;
use devart_commands::chain::{verify, Tampering, Verdict};
use devart_domain::task::{CreateTask, Title};
use devart_domain::Position;
use serde_json::json;
use uuid::Uuid;

use crate::support::TestEnv;

const EVENTS: u64 = 30;

/// A fresh instance with `EVENTS` sequenced and chained events.
async fn history() -> TestEnv {
    let env = TestEnv::new().await;
    let commands = env.commands();
    for i in 0..EVENTS {
        let create = CreateTask::new(Uuid::now_v7(), Title::parse(&format!("task {i}")).unwrap());
        commands.tasks().create(create, &env.context()).await.unwrap();
    }
    env.sequence_all().await;
    while env.store.chain().await.unwrap().is_some() {}
    env
}

async fn sql(env: &TestEnv, statements: &[&str]) {
    for statement in statements {
        sqlx::query(statement).execute(&env.pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

async fn broken_at(env: &TestEnv) -> (u64, Tampering) {
    match verify(&env.pool, Position(1), None).await.unwrap() {
        Verdict::Broken { position, kind, .. } => (position.0, kind),
        intact => panic!("tampering went unnoticed: {intact:?}"),
    }
}

#[tokio::test]
async fn an_untouched_history_verifies_and_each_kind_of_tampering_is_caught_where_it_happened() {
    let env = history().await;
    assert_eq!(
        verify(&env.pool, Position(1), None).await.unwrap(),
        Verdict::Intact { from: Position(1), to: Position(EVENTS), events: EVENTS }
    );
    assert!(matches!(
        verify(&env.pool, Position(7), Some(Position(9))).await.unwrap(),
        Verdict::Intact { events: 3, .. }
    ));
    // Through GraphQL too.
    let running = env.start(&[Role::Gateway]).await;
    let report = running.graphql("{ verifyIntegrity { ok to eventsChecked brokenAt } }", json!({})).await;
    assert_eq!(
        report["data"]["verifyIntegrity"],
        json!({ "ok": true, "to": "30", "eventsChecked": 30, "brokenAt": null })
    );
    running.stop().await;
    env.cleanup().await;

    // Modified: one byte more in an event's payload; and, elsewhere, a changed actor.
    let env = history().await;
    sql(&env, &["update events set payload = payload || '\\x00'::bytea where position = 10"]).await;
    assert_eq!(broken_at(&env).await, (10, Tampering::Modified));
    sql(&env, &["update events set payload = substring(payload from 1 for length(payload) - 1) where position = 10"])
        .await;
    assert!(matches!(verify(&env.pool, Position(1), None).await.unwrap(), Verdict::Intact { .. }), "restored");
    sql(&env, &["update events set actor_id = 'someone-else' where position = 17"]).await;
    assert_eq!(broken_at(&env).await, (17, Tampering::Modified));
    let running = env.start(&[Role::Gateway]).await;
    let report = running.graphql("{ verifyIntegrity { ok brokenAt kind } }", json!({})).await;
    assert_eq!(report["data"]["verifyIntegrity"], json!({ "ok": false, "brokenAt": "17", "kind": "MODIFIED" }));
    running.stop().await;
    env.cleanup().await;

    // Removed: a row deleted, leaving a hole; and a row deleted with the rest moved up to close it.
    let env = history().await;
    sql(&env, &["delete from events where position = 10"]).await;
    assert_eq!(broken_at(&env).await, (10, Tampering::Removed));
    sql(
        &env,
        &[
            "update events set position = -position where position > 10",
            "update events set position = -position - 1 where position < 0",
        ],
    )
    .await;
    assert_eq!(broken_at(&env).await, (10, Tampering::Removed));
    env.cleanup().await;

    // Inserted: a forged event put at position 10, the rest moved down one.
    let env = history().await;
    sql(
        &env,
        &[
            "update events set position = -position where position >= 10",
            "update events set position = -position + 1 where position < 0",
            "insert into events (event_id, stream_id, stream_version, position, event_type, schema_version, payload, \
                             occurred_at, actor_kind, actor_id, correlation_id, causation_id, command_id, hash) \
         select gen_random_uuid(), 'task-' || gen_random_uuid(), 1, 10, event_type, schema_version, payload, \
                occurred_at, actor_kind, actor_id, correlation_id, causation_id, gen_random_uuid(), hash \
         from events where position = 5",
        ],
    )
    .await;
    assert_eq!(broken_at(&env).await, (10, Tampering::Inserted));
    env.cleanup().await;

    // Reordered: two events swap places.
    let env = history().await;
    sql(
        &env,
        &[
            "update events set position = -1 where position = 10",
            "update events set position = 10 where position = 11",
            "update events set position = 11 where position = -1",
        ],
    )
    .await;
    assert_eq!(broken_at(&env).await, (10, Tampering::Reordered));
    env.cleanup().await;
}

#[tokio::test]
async fn the_relay_chains_what_it_sequences() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay]).await;
    for i in 0..5 {
        running
            .graphql(
                "mutation($t: String!) { createTask(input: { title: $t }) { id } }",
                json!({ "t": format!("t{i}") }),
            )
            .await;
    }
    crate::support::eventually(std::time::Duration::from_secs(10), || async {
        let chained: i64 = sqlx::query_scalar("select position from event_chain").fetch_one(&env.pool).await.unwrap();
        (chained == 5).then_some(())
    })
    .await;
    assert_eq!(
        verify(&env.pool, Position(1), None).await.unwrap(),
        Verdict::Intact { from: Position(1), to: Position(5), events: 5 }
    );
    running.stop().await;
    env.cleanup().await;
}
