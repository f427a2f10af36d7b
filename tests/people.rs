//! People and roles: sign-in, role checks in the API, and the same rules held by the database's
//! roles and row policies, checked with plain SQL.

use std::time::Duration;

use devart::Role;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::support::{eventually, Running, TestEnv};

const CREATE_USER: &str =
    "mutation($input: CreateUserInput!) { createUser(input: $input) { password user { id email role active } } }";
const LOGIN: &str = "mutation($email: String!, $password: String!) { login(email: $email, password: $password) { token expiresAt user { id role } } }";
const REGISTER: &str =
    "mutation($input: RegisterAgentInput!) { registerAgent(input: $input) { apiKey agent { id keyId } } }";

fn code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error in {response}"))
}

async fn anonymous(running: &Running, query: &str, variables: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(running.url("/graphql"))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn login(running: &Running, email: &str, password: &str) -> Value {
    anonymous(running, LOGIN, json!({ "email": email, "password": password })).await.1
}

async fn token_of(running: &Running, email: &str, password: &str) -> String {
    let session = login(running, email, password).await;
    session["data"]["login"]["token"].as_str().unwrap_or_else(|| panic!("{session}")).to_owned()
}

async fn status_as(running: &Running, token: &str) -> u16 {
    reqwest::Client::new()
        .post(running.url("/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": "{ me { role } }" }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// One mutation of each family a viewer must not run.
const MUTATIONS: [(&str, &str); 8] = [
    ("createTask", r#"mutation { createTask(input: { title: "x" }) { id } }"#),
    ("registerAgent", r#"mutation { registerAgent(input: { name: "x" }) { apiKey } }"#),
    ("registerService", r#"mutation { registerService(input: { name: "x", monthlyBudget: "1.00" }) { id } }"#),
    ("updateSetting", r#"mutation { updateSetting(key: "outliers.threshold", value: 4) { key } }"#),
    (
        "defineWorkflow",
        r#"mutation { defineWorkflow(input: { name: "w", stages: [{ key: "a", title: "A" }] }) { id } }"#,
    ),
    ("createUser", r#"mutation { createUser(input: { email: "x@example.org", role: ADMIN }) { password } }"#),
    ("changeRole", r#"mutation { changeRole(userId: "00000000-0000-0000-0000-000000000001", role: ADMIN) { id } }"#),
    ("resetPassword", r#"mutation { resetPassword(userId: "00000000-0000-0000-0000-000000000001") { password } }"#),
];

#[tokio::test]
async fn people_sign_in_and_their_roles_hold_in_the_api() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;

    // An admin creates a viewer with a password and a supervisor with a generated one.
    let viewer = running
        .graphql(
            CREATE_USER,
            json!({ "input": { "email": " Vera@Example.org ", "role": "VIEWER", "password": "viewer password 1" } }),
        )
        .await;
    let viewer_user = &viewer["data"]["createUser"];
    assert_eq!(viewer_user["user"]["email"], "vera@example.org", "{viewer}");
    assert_eq!(viewer_user["password"], Value::Null, "a chosen password is not echoed");
    let viewer_id = viewer_user["user"]["id"].as_str().unwrap().to_owned();
    let supervisor =
        running.graphql(CREATE_USER, json!({ "input": { "email": "sam@example.org", "role": "SUPERVISOR" } })).await;
    let generated = supervisor["data"]["createUser"]["password"].as_str().unwrap_or_else(|| panic!("{supervisor}"));
    assert!(generated.len() >= 20);

    // Bad input and a taken address are refused, and nothing is stored for them.
    for (input, expected) in [
        (json!({ "email": "not an address", "role": "VIEWER" }), "BAD_USER_INPUT"),
        (json!({ "email": "short@example.org", "role": "VIEWER", "password": "short" }), "BAD_USER_INPUT"),
        (json!({ "email": "VERA@example.org", "role": "ADMIN" }), "CONFLICT"),
    ] {
        let refused = running.graphql(CREATE_USER, json!({ "input": input })).await;
        assert_eq!(code(&refused), expected, "{refused}");
    }
    let (accounts, users): (i64, i64) =
        sqlx::query_as("select (select count(*) from user_credentials), (select count(*) from events where event_type = 'UserCreated')")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((accounts, users), (2, 2));

    // Passwords are stored as argon2id hashes only, and never travel in events.
    let hashes: Vec<String> =
        sqlx::query_scalar("select password_hash from user_credentials").fetch_all(&env.pool).await.unwrap();
    assert!(hashes.iter().all(|h| h.starts_with("$argon2id$")));
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar("select payload from events").fetch_all(&env.pool).await.unwrap();
    for secret in ["viewer password 1", generated] {
        assert!(payloads.iter().all(|p| !p.windows(secret.len()).any(|w| w == secret.as_bytes())));
    }

    // Signing in: only `login` is open without a token; failures do not tell why.
    let (status, _) = anonymous(&running, "{ me { role } }", json!({})).await;
    assert_eq!(status, 401, "only signing in is open to anonymous requests");
    let (status, _) = anonymous(
        &running,
        "mutation { login(email: \"a@b.c\", password: \"x\") { token } createTask(input: { title: \"x\" }) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 401, "a sign-in cannot carry another mutation");
    let wrong = login(&running, "vera@example.org", "not the password").await;
    let unknown = login(&running, "nobody@example.org", "viewer password 1").await;
    assert_eq!(code(&wrong), "UNAUTHENTICATED");
    assert_eq!(wrong["errors"][0]["message"], unknown["errors"][0]["message"]);
    let session = login(&running, "VERA@example.org", "viewer password 1").await;
    assert_eq!(session["data"]["login"]["user"]["role"], "VIEWER", "{session}");
    let viewer_token = session["data"]["login"]["token"].as_str().unwrap().to_owned();
    let supervisor_token = token_of(&running, "sam@example.org", generated).await;

    // A viewer reads, and changes nothing: every family of mutation is refused, no event appended.
    let me = running.graphql_as(&viewer_token, "{ me { role userId } }", json!({})).await;
    assert_eq!(me["data"]["me"], json!({ "role": "VIEWER", "userId": viewer_id }));
    let before: i64 = sqlx::query_scalar("select count(*) from events").fetch_one(&env.pool).await.unwrap();
    for (name, mutation) in MUTATIONS {
        let refused = running.graphql_as(&viewer_token, mutation, json!({})).await;
        assert_eq!(code(&refused), "FORBIDDEN", "{name}: {refused}");
    }
    let after: i64 = sqlx::query_scalar("select count(*) from events").fetch_one(&env.pool).await.unwrap();
    assert_eq!(before, after);
    let board = running.graphql_as(&viewer_token, "{ tasks { edges { node { id } } } }", json!({})).await;
    assert!(board["errors"].is_null(), "{board}");
    let log = running.graphql_as(&viewer_token, "{ securityLog { kind } }", json!({})).await;
    assert_eq!(code(&log), "FORBIDDEN");

    // Users are a read model: a viewer sees only themselves, an admin everyone.
    let seen = eventually(Duration::from_secs(10), || async {
        let all = running.graphql("{ users { email role } }", json!({})).await;
        (all["data"]["users"].as_array().map_or(0, Vec::len) == 2).then_some(all)
    })
    .await;
    assert_eq!(seen["data"]["users"][0]["email"], "vera@example.org");
    let mine = running.graphql_as(&viewer_token, "{ users { email } }", json!({})).await;
    assert_eq!(mine["data"]["users"], json!([{ "email": "vera@example.org" }]), "{mine}");

    // A supervisor runs the work but does not manage people.
    let created = running.graphql_as(&supervisor_token, MUTATIONS[0].1, json!({})).await;
    assert!(created["data"]["createTask"]["id"].is_string(), "{created}");
    let refused = running.graphql_as(&supervisor_token, MUTATIONS[5].1, json!({})).await;
    assert_eq!(code(&refused), "FORBIDDEN");

    // A new role applies to the tokens already issued, at the next request.
    let promoted = running
        .graphql(
            "mutation($id: ID!) { changeRole(userId: $id, role: SUPERVISOR) { role } }",
            json!({ "id": viewer_id }),
        )
        .await;
    assert_eq!(promoted["data"]["changeRole"]["role"], "SUPERVISOR", "{promoted}");
    let created = running.graphql_as(&viewer_token, MUTATIONS[0].1, json!({})).await;
    assert!(created["data"]["createTask"]["id"].is_string(), "{created}");

    // A deactivated user's token and sign-in are refused at once.
    let deactivated = running
        .graphql("mutation($id: ID!) { deactivateUser(userId: $id) { active } }", json!({ "id": viewer_id }))
        .await;
    assert_eq!(deactivated["data"]["deactivateUser"]["active"], false, "{deactivated}");
    assert_eq!(status_as(&running, &viewer_token).await, 401);
    let refused = login(&running, "vera@example.org", "viewer password 1").await;
    assert_eq!(code(&refused), "UNAUTHENTICATED");
    assert_eq!(refused["errors"][0]["message"], "the user is deactivated");

    // Own password: the current one must be right.
    let change = "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) { id } }";
    let wrong =
        running.graphql_as(&supervisor_token, change, json!({ "c": "nope", "n": "a brand new password" })).await;
    assert_eq!(code(&wrong), "FORBIDDEN");
    let changed =
        running.graphql_as(&supervisor_token, change, json!({ "c": generated, "n": "a brand new password" })).await;
    assert!(changed["errors"].is_null(), "{changed}");
    token_of(&running, "sam@example.org", "a brand new password").await;
    assert_eq!(code(&login(&running, "sam@example.org", generated).await), "UNAUTHENTICATED");

    // Refused keys are recorded too, by their public id only.
    let registered = running.graphql(REGISTER, json!({ "input": { "name": "builder" } })).await;
    let key = registered["data"]["registerAgent"]["apiKey"].as_str().unwrap().to_owned();
    let key_id = registered["data"]["registerAgent"]["agent"]["keyId"].as_str().unwrap().to_owned();
    let forged = format!("dva_{key_id}_{}", "A".repeat(43));
    assert_eq!(status_as(&running, &forged).await, 401);

    // The security log has every refusal, and no secret.
    let log = running.graphql("{ securityLog(first: 50) { kind subject reason } }", json!({})).await;
    let entries = log["data"]["securityLog"].as_array().unwrap_or_else(|| panic!("{log}")).clone();
    let has = |kind: &str, subject: &str, reason: &str| {
        entries.iter().any(|e| e["kind"] == kind && e["subject"] == subject && e["reason"] == reason)
    };
    assert!(has("LOGIN_FAILED", "vera@example.org", "wrong password"), "{log}");
    assert!(has("LOGIN_FAILED", "nobody@example.org", "unknown email"), "{log}");
    assert!(has("LOGIN_FAILED", "vera@example.org", "user deactivated"), "{log}");
    assert!(has("TOKEN_REFUSED", &format!("user {viewer_id}"), "the user is deactivated"), "{log}");
    assert!(has("KEY_REFUSED", &format!("key {key_id}"), "invalid token"), "{log}");
    let text = log.to_string();
    for secret in ["viewer password 1", "not the password", generated, &key, &forged] {
        assert!(!text.contains(secret), "the log holds a secret");
    }
    running.stop().await;
    env.cleanup().await;
}

/// Runs `sql` as `role` (with `settings` set for the transaction) and returns the rows it counted,
/// or the SQLSTATE it was refused with.
async fn as_role(env: &TestEnv, role: &str, settings: &[(&str, &str)], sql: &str) -> Result<i64, String> {
    let mut conn = sqlx::PgConnection::connect(&env.config.database_url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(&format!("set local role {role}")).execute(&mut *tx).await.unwrap();
    for (name, value) in settings {
        sqlx::query("select set_config($1, $2, true)").bind(name).bind(value).execute(&mut *tx).await.unwrap();
    }
    let result = if sql.trim_start().starts_with("select") {
        sqlx::query_scalar::<_, i64>(&format!("select count(*) from ({sql}) q")).fetch_one(&mut *tx).await
    } else {
        sqlx::query(sql).execute(&mut *tx).await.map(|r| r.rows_affected() as i64)
    };
    result.map_err(|e| match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()).unwrap_or_default(),
        other => other.to_string(),
    })
}

fn denied(result: Result<i64, String>) -> bool {
    result.as_ref().is_err_and(|code| code == "42501")
}

#[tokio::test]
async fn the_database_roles_refuse_what_their_callers_may_not_do() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let mut keys = Vec::new();
    for name in ["alpha", "beta"] {
        let registered =
            running.graphql(REGISTER, json!({ "input": { "name": name, "capabilities": ["rust"] } })).await;
        keys.push((
            registered["data"]["registerAgent"]["agent"]["id"].as_str().unwrap().to_owned(),
            registered["data"]["registerAgent"]["apiKey"].as_str().unwrap().to_owned(),
        ));
    }
    for title in ["one", "two", "three"] {
        running
            .graphql(
                "mutation($t: String!) { createTask(input: { title: $t, requiredCapabilities: [\"rust\"] }) { id } }",
                json!({ "t": title }),
            )
            .await;
    }
    running
        .graphql(
            CREATE_USER,
            json!({ "input": { "email": "vera@example.org", "role": "VIEWER", "password": "viewer password 1" } }),
        )
        .await;
    let claim = "mutation { claimTask { id } }";
    let alpha_task =
        running.graphql_as(&keys[0].1, claim, json!({})).await["data"]["claimTask"]["id"].as_str().unwrap().to_owned();
    let beta_task =
        running.graphql_as(&keys[1].1, claim, json!({})).await["data"]["claimTask"]["id"].as_str().unwrap().to_owned();
    let head: i64 = sqlx::query_scalar("select max(position) from events").fetch_one(&env.pool).await.unwrap();
    env.wait_projected("tasks", head as u64).await;
    env.wait_projected("agents", head as u64).await;
    env.wait_projected("users", head as u64).await;

    // A viewer reads the read models and the audit trail, and nothing else; it writes nothing.
    let viewer = "devart_viewer";
    assert_eq!(as_role(&env, viewer, &[], "select * from tasks").await, Ok(3));
    assert_eq!(as_role(&env, viewer, &[], "select * from agents").await, Ok(2));
    assert!(as_role(&env, viewer, &[], "select * from events").await.is_ok());
    for secret in ["agent_keys", "user_credentials", "secrets", "commands", "security_log", "usage_answers"] {
        assert!(denied(as_role(&env, viewer, &[], &format!("select * from {secret}")).await), "{secret}");
    }
    for write in [
        "insert into events (stream_id) values ('task-x')",
        "update tasks set title = 'mine'",
        "delete from agents",
        "update task_queue set state = 'done'",
        "insert into projection_checkpoints (name) values ('x')",
        "truncate events",
    ] {
        assert!(denied(as_role(&env, viewer, &[], write).await), "{write}");
    }
    // A viewer sees only their own user row; an admin sees every one.
    assert_eq!(as_role(&env, viewer, &[], "select * from users").await, Ok(0));
    let vera: String = sqlx::query_scalar("select id::text from users").fetch_one(&env.pool).await.unwrap();
    assert_eq!(as_role(&env, viewer, &[("devart.user_id", &vera)], "select * from users").await, Ok(1));
    assert_eq!(as_role(&env, "devart_admin", &[], "select * from users").await, Ok(1));

    // An agent sees the pending tasks, the one it holds, and itself; no keys, no audit trail.
    let (alpha, _) = &keys[0];
    let agent = [("devart.agent_id", alpha.as_str())];
    assert_eq!(as_role(&env, "devart_agent", &agent, "select * from tasks").await, Ok(2), "pending one + its own");
    assert_eq!(
        as_role(&env, "devart_agent", &agent, &format!("select * from tasks where id = '{beta_task}'")).await,
        Ok(0)
    );
    assert_eq!(as_role(&env, "devart_agent", &agent, "select * from agents").await, Ok(1));
    assert_eq!(as_role(&env, "devart_agent", &[], "select * from agents").await, Ok(0), "no identity, no rows");
    for hidden in ["agent_keys", "events", "users", "analytics_tasks"] {
        assert!(denied(as_role(&env, "devart_agent", &agent, &format!("select * from {hidden}")).await), "{hidden}");
    }

    // The gateway's reads go through the same roles: with the transaction a resolver gets for a
    // viewer, a query for key hashes is refused, whatever the resolver would have done with them.
    let caller = devart_gateway::auth::Caller::person("vera", devart_gateway::Role::Viewer);
    let mut reader = devart_gateway::db::Reader::begin(&env.pool, &caller).await.unwrap();
    let leak = sqlx::query_scalar::<_, String>("select secret_hash from agent_keys").fetch_all(reader.conn()).await;
    assert!(leak.is_err());
    drop(reader);
    let mut reader = devart_gateway::db::Reader::begin(&env.pool, &caller).await.unwrap();
    let write = sqlx::query("update tasks set title = 'x'").execute(reader.conn()).await;
    assert!(write.is_err(), "reads are read-only");
    drop(reader);

    // Through GraphQL, an agent sees its own work only, and cannot act on another's task.
    let alpha_key = &keys[0].1;
    let other =
        running.graphql_as(alpha_key, "query($id: ID!) { task(id: $id) { id } }", json!({ "id": beta_task })).await;
    assert_eq!(other["data"]["task"], Value::Null, "{other}");
    let own =
        running.graphql_as(alpha_key, "query($id: ID!) { task(id: $id) { id } }", json!({ "id": alpha_task })).await;
    assert_eq!(own["data"]["task"]["id"], alpha_task.as_str(), "{own}");
    let roster = running.graphql_as(alpha_key, "{ agents { id } }", json!({})).await;
    assert_eq!(roster["data"]["agents"], json!([{ "id": alpha }]), "{roster}");
    let audit = running.graphql_as(alpha_key, "{ events { edges { cursor } } }", json!({})).await;
    assert_eq!(code(&audit), "FORBIDDEN");
    let report = running
        .graphql_as(
            alpha_key,
            "mutation($id: ID!) { completeTask(taskId: $id, result: {}) { id } }",
            json!({ "id": beta_task }),
        )
        .await;
    assert_eq!(code(&report), "FORBIDDEN", "{report}");
    running.stop().await;
    env.cleanup().await;
}
