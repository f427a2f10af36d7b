//! Stored data is never silently defaulted: an event whose stored bytes do not decode makes every
//! read of it fail, naming where it is, while the hash chain still points at it; an account whose
//! stored role is none of the roles is an error, not the least role.

use std::process::Command;

use devart::Role;
use devart_commands::chain::{verify, Tampering, Verdict};
use devart_commands::store::{EventAt, EventFilter};
use devart_commands::StoreError;
use devart_domain::task::{CreateTask, Title};
use devart_domain::user::{Email, Password, UserRole};
use devart_domain::{Position, StreamId};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::TestEnv;

/// Three tasks, sequenced and chained; returns their ids.
async fn three_tasks(env: &TestEnv) -> Vec<Uuid> {
    let commands = env.commands();
    let mut ids = Vec::new();
    for title in ["first", "second", "third"] {
        let id = Uuid::now_v7();
        commands.tasks().create(CreateTask::new(id, Title::parse(title).unwrap()), &env.context()).await.unwrap();
        ids.push(id);
    }
    env.sequence_all().await;
    while env.store.chain().await.unwrap().is_some() {}
    ids
}

async fn position_of(env: &TestEnv, stream: &StreamId, version: i64) -> u64 {
    let position: i64 = sqlx::query_scalar("select position from events where stream_id = $1 and stream_version = $2")
        .bind(stream.as_str())
        .bind(version)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    position as u64
}

/// The place a read error names, if it is an undecodable event.
fn undecodable_at(error: &StoreError) -> &EventAt {
    match error {
        StoreError::Codec { at, .. } => at,
        other => panic!("not an undecodable event: {other}"),
    }
}

fn assert_internal_without_sql(body: &Value, what: &str) {
    let errors = body["errors"].as_array().unwrap_or_else(|| panic!("{what}: no error in {body}"));
    assert_eq!(errors[0]["extensions"]["code"], "INTERNAL", "{what}: {body}");
    let message = errors[0]["message"].as_str().unwrap().to_lowercase();
    for sql in ["select", "from events", "payload", "sqlx", "postgres"] {
        assert!(!message.contains(sql), "{what}: the message shows `{sql}`: {message}");
    }
}

#[tokio::test]
async fn a_corrupted_payload_fails_every_read_of_it_naming_its_position_and_verify_points_at_it() {
    let env = TestEnv::new().await;
    let ids = three_tasks(&env).await;
    let stream = StreamId::new("task", ids[1]);
    let position = position_of(&env, &stream, 1).await;
    sqlx::query("update events set payload = '\\xffffffff'::bytea where position = $1")
        .bind(position as i64)
        .execute(&env.pool)
        .await
        .unwrap();
    let expected = EventAt { stream_id: stream.to_string(), stream_version: 1, position: Some(Position(position)) };
    let named = format!("undecodable event at position {position} (stream {stream} version 1)");

    let error = env.store.read_stream(&stream, None).await.unwrap_err();
    assert_eq!(undecodable_at(&error), &expected);
    assert!(error.to_string().starts_with(&named), "{error}");
    let error = env.store.read_all(Position::START, None, 100).await.unwrap_err();
    assert_eq!(undecodable_at(&error), &expected, "{error}");
    let error = env.store.page(Position::START, 100, &EventFilter::default()).await.unwrap_err();
    assert_eq!(undecodable_at(&error), &expected, "{error}");
    // What is before it still reads; what is around it in other streams too.
    assert_eq!(
        env.store.read_all(Position::START, Some(Position(position - 1)), 100).await.unwrap().len() as u64,
        position - 1
    );
    assert_eq!(env.store.read_stream(&StreamId::new("task", ids[2]), None).await.unwrap().len(), 1);
    let error = env.commands().load::<devart_domain::task::Task>(ids[1]).await.unwrap_err();
    assert!(error.to_string().contains(&format!("position {position}")), "{error}");

    // Through the gateway: the audit trail, the task's history and the task as of then.
    let running = env.start(&[Role::Gateway]).await;
    let events = running.graphql("{ events(first: 100) { edges { node { position type } } } }", json!({})).await;
    assert_internal_without_sql(&events, "events");
    let history = running
        .graphql(
            "query($s: String!) { history(streamId: $s) { event { position } } }",
            json!({ "s": stream.to_string() }),
        )
        .await;
    assert_internal_without_sql(&history, "history");
    let task_at = running
        .graphql(
            "query($id: ID!, $at: String!) { taskAt(id: $id, at: $at) { status } }",
            json!({ "id": ids[1], "at": position.to_string() }),
        )
        .await;
    assert_internal_without_sql(&task_at, "taskAt");
    let untouched = running
        .graphql(
            "query($id: ID!, $at: String!) { taskAt(id: $id, at: $at) { status } }",
            json!({ "id": ids[0], "at": position.to_string() }),
        )
        .await;
    assert_eq!(untouched["data"]["taskAt"]["status"], "PENDING", "{untouched}");
    running.stop().await;

    // The chain names the same position, in the library and on the command line.
    match verify(&env.pool, Position(1), None).await.unwrap() {
        Verdict::Broken { position: at, kind, .. } => assert_eq!((at.0, kind), (position, Tampering::Modified)),
        intact => panic!("the damage went unnoticed: {intact:?}"),
    }
    let output = Command::new(env!("CARGO_BIN_EXE_devart"))
        .arg("verify")
        .env("DATABASE_URL", &env.config.database_url)
        .env_remove("DEVART_JWT_SECRET")
        .env("DEVART_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with(&format!("MODIFIED at position {position}:")), "{stdout}");
    env.cleanup().await;
}

#[tokio::test]
async fn an_unknown_actor_kind_or_stream_id_is_an_error_naming_the_event_not_a_guess() {
    let env = TestEnv::new().await;
    let ids = three_tasks(&env).await;
    // The table refuses such values; someone with plain SQL access may not.
    sqlx::query("alter table events drop constraint events_actor_kind_check").execute(&env.pool).await.unwrap();
    let stream = StreamId::new("task", ids[0]);
    let position = position_of(&env, &stream, 1).await;
    sqlx::query("update events set actor_kind = 'robot' where position = $1")
        .bind(position as i64)
        .execute(&env.pool)
        .await
        .unwrap();
    let error = env.store.read_stream(&stream, None).await.unwrap_err();
    assert_eq!(undecodable_at(&error).position, Some(Position(position)));
    assert!(error.to_string().contains("actor_kind `robot`"), "{error}");
    assert!(env.store.read_all(Position::START, None, 100).await.is_err(), "not read as a system actor");

    let later = position_of(&env, &StreamId::new("task", ids[2]), 1).await;
    sqlx::query("update events set stream_id = 'task-not-a-uuid' where position = $1")
        .bind(later as i64)
        .execute(&env.pool)
        .await
        .unwrap();
    let error = env.store.read_all(Position(later - 1), None, 100).await.unwrap_err();
    assert_eq!(undecodable_at(&error).position, Some(Position(later)));
    assert!(error.to_string().contains("stream_id `task-not-a-uuid`"), "{error}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_stored_role_that_is_none_of_the_roles_is_an_error_in_events_and_accounts() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    let password = Password::parse("a long enough password").unwrap();
    let user = commands
        .users()
        .create(Email::parse("vera@example.org").unwrap(), UserRole::Supervisor, &password, &env.context())
        .await
        .unwrap();
    let id = user.state.id;
    env.sequence_all().await;

    // In the event: `UserCreated` with a role that is none of the three. Postcard ends the payload
    // with the role, length first: `supervisor` becomes `owner`.
    let stream = StreamId::new("user", id);
    sqlx::query(
        "update events set payload = substring(payload from 1 for length(payload) - 11) || '\\x056f776e6572'::bytea \
         where stream_id = $1 and stream_version = 1",
    )
    .bind(stream.as_str())
    .execute(&env.pool)
    .await
    .unwrap();
    let error = env.store.read_stream(&stream, None).await.unwrap_err();
    assert_eq!(undecodable_at(&error).stream_version, 1);
    assert!(error.to_string().contains("`owner` is not a role"), "{error}");

    // In the account: neither the least role nor a sign-in.
    assert_eq!(commands.users().account(id).await.unwrap().unwrap().role, UserRole::Supervisor);
    sqlx::query("alter table user_credentials drop constraint user_credentials_role_check")
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::query("update user_credentials set role = 'owner' where user_id = $1")
        .bind(id)
        .execute(&env.pool)
        .await
        .unwrap();
    let error = commands.users().account(id).await.unwrap_err();
    assert!(matches!(&error, StoreError::Undecodable { table: "user_credentials", .. }), "{error}");
    assert!(error.to_string().contains(&id.to_string()), "names the account: {error}");
    assert!(commands.users().login("vera@example.org", "a long enough password").await.is_err());
    env.cleanup().await;
}

#[tokio::test]
async fn budget_snapshots_of_before_their_layout_read_once_migrated_and_an_unreadable_one_names_its_service() {
    use devart_domain::money::Money;
    use devart_domain::service::{Currency, RegisterService, ServiceName};

    let env = TestEnv::new().await;
    let commands = env.commands();
    let id = Uuid::now_v7();
    let register = RegisterService {
        id,
        name: ServiceName::parse("llm").unwrap(),
        currency: Currency::usd(),
        monthly_budget: Money::parse("budget", "100").unwrap(),
        fallback_service_id: None,
        unit_prices: Default::default(),
    };
    commands.services().register(register, &env.context()).await.unwrap();
    let written = commands.services().get(id).await.unwrap().unwrap();
    let layout: i64 =
        sqlx::query_scalar("select (state->>'version')::bigint from service_budgets where service_id = $1")
            .bind(id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(layout, 1);

    // A row as written before snapshots had a layout of their own: the state's serde form.
    sqlx::query("update service_budgets set state = state - 'version' where service_id = $1")
        .bind(id)
        .execute(&env.pool)
        .await
        .unwrap();
    let error = commands.services().get(id).await.unwrap_err();
    assert!(error.to_string().contains(&format!("undecodable service_budgets row {id}")), "{error}");
    assert!(commands.services().all().await.is_err(), "the listing does not leave it out");
    sqlx::raw_sql(include_str!("../migrations/0013_budget_snapshot_layout.sql")).execute(&env.pool).await.unwrap();
    assert_eq!(commands.services().get(id).await.unwrap().unwrap().state, written.state, "read again once migrated");

    // A damaged one stops the commands that would decide on it, naming the service.
    sqlx::query("update service_budgets set state = jsonb_set(state, '{spent}', '-1') where service_id = $1")
        .bind(id)
        .execute(&env.pool)
        .await
        .unwrap();
    let request = devart_commands::budgets::UsageRequest {
        service_id: id,
        amount: Money::parse("amount", "1").unwrap(),
        task_id: None,
        agent_id: None,
        idempotency_key: "k".into(),
    };
    let error = commands.services().authorize_usage(&request, &env.context()).await.unwrap_err();
    assert!(error.to_string().contains(&id.to_string()), "{error}");
    let appended: i64 = sqlx::query_scalar("select count(*) from events where stream_id = $1")
        .bind(StreamId::new("service", id).as_str())
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(appended, 1, "nothing decided on a state that did not read");
    env.cleanup().await;
}
