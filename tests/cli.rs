//! The `devart` command line, run as a user would.

use std::process::Command;

use devart::Role;
use serde_json::json;

use crate::support::TestEnv;

fn devart(env: &TestEnv, database_url: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_devart"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("NATS_URL", &env.config.nats_url)
        .env("DEVART_NATS_PREFIX", &env.config.nats_prefix)
        .env_remove("DEVART_JWT_SECRET")
        .env("DEVART_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "devart {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn migrate_creates_the_database_and_token_and_serve_agree_on_a_generated_key() {
    let env = TestEnv::new().await;
    let fresh = format!("{}_cli", env.config.database_url);
    devart(&env, &fresh, &["migrate"]);
    devart(&env, &fresh, &["migrate"]);
    let token = devart(&env, &fresh, &["token", "--subject", "grace", "--role", "viewer", "--ttl", "10m"]);
    let status = devart(&env, &fresh, &["projections", "status"]);
    assert!(status.lines().any(|l| l.starts_with("tasks ")), "{status}");

    // A gateway with no key configured uses the one migrate generated.
    let mut cli_env = TestEnv::new().await;
    cli_env.config.database_url = fresh.clone();
    cli_env.config.jwt_secret = None;
    let running = cli_env.start(&[Role::Gateway]).await;
    let me = running.graphql_as(token.trim(), "{ me { subject role } }", json!({})).await;
    assert_eq!(me["data"]["me"], json!({ "subject": "grace", "role": "VIEWER" }), "{me}");
    running.stop().await;

    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    let name = fresh.rsplit('/').next().unwrap().to_owned();
    cli_env.cleanup().await;
    sqlx::query(&format!("drop database if exists {name} with (force)")).execute(&mut admin).await.unwrap();
    env.cleanup().await;
}

#[test]
fn help_never_shows_a_password_from_the_environment() {
    for args in [&["--help"][..], &["serve", "--help"], &["agent", "--help"]] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_devart"))
            .args(args)
            .env("DATABASE_URL", "postgres://devart:hunter2-db@db.internal:5432/devart")
            .env("NATS_URL", "nats://devart:hunter2-nats@nats.internal:4222")
            .env("DEVART_JWT_SECRET", "hunter2-jwt-hunter2-jwt-hunter2-jwt-hunter2")
            .env("DEVART_AGENT_KEY", "dva_0123456789abcdef_hunter2-key")
            .env("DEVART_EMBEDDINGS_API_KEY", "sk-hunter2-embeddings")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{args:?}: {text}");
        assert!(!text.contains("hunter2"), "{args:?} shows a secret: {text}");
    }
}

/// `devart doctor` as a user runs it: its lines, and its exit status.
fn doctor(env: &TestEnv, database_url: &str, nats_url: &str) -> (String, Option<i32>) {
    let output = Command::new(env!("CARGO_BIN_EXE_devart"))
        .arg("doctor")
        .env("DATABASE_URL", database_url)
        .env("NATS_URL", nats_url)
        .env("DEVART_NATS_PREFIX", &env.config.nats_prefix)
        .env_remove("DEVART_JWT_SECRET")
        .env("DEVART_LOG", "warn")
        .output()
        .unwrap();
    (String::from_utf8_lossy(&output.stdout).into_owned(), output.status.code())
}

fn line<'a>(report: &'a str, name: &str) -> &'a str {
    report.lines().find(|l| l[6..].starts_with(&format!("{name}:"))).unwrap_or_else(|| panic!("no {name}: {report}"))
}

#[tokio::test]
async fn doctor_says_what_a_new_install_lacks_and_how_to_fix_it() {
    let env = TestEnv::new().await;
    let fresh =
        format!("{}_doctor", env.config.database_url.replace("postgres://postgres@", "postgres://postgres:hunter2@"));

    // Nothing made yet: the database is missing, and the fix is named; the password never shown.
    let (report, status) = doctor(&env, &fresh, &env.config.nats_url);
    assert_eq!(status, Some(1), "{report}");
    assert!(
        line(&report, "postgres").starts_with("FAIL") && line(&report, "postgres").contains("devart migrate"),
        "{report}"
    );
    assert!(line(&report, "jetstream").starts_with("FAIL"), "no stream yet: {report}");
    assert!(!report.contains("hunter2"), "{report}");

    // After `devart migrate`, everything required is there.
    devart(&env, &fresh, &["migrate"]);
    let (report, status) = doctor(&env, &fresh, &env.config.nats_url);
    assert_eq!(status, Some(0), "{report}");
    for name in ["postgres", "pgvector", "migrations", "jwt key", "nats", "jetstream"] {
        assert!(line(&report, name).starts_with("ok"), "{name}: {report}");
    }
    assert!(line(&report, "telegram alerts").starts_with("off"), "{report}");
    // The embedding model (installed by scripts/services): found, with the version of its weights.
    let model = line(&report, "embedding model");
    assert!(model.starts_with("ok") && model.contains("all-MiniLM-L6-v2@"), "{report}");

    // No model where DEVART_MODEL_DIR points: off (the rest of devart works), naming scripts/models.
    let output = Command::new(env!("CARGO_BIN_EXE_devart"))
        .arg("doctor")
        .env("DATABASE_URL", &fresh)
        .env("NATS_URL", &env.config.nats_url)
        .env("DEVART_NATS_PREFIX", &env.config.nats_prefix)
        .env("DEVART_MODEL_DIR", "/nonexistent/devart-model")
        .env_remove("DEVART_JWT_SECRET")
        .env("DEVART_LOG", "warn")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{report}");
    let model = line(&report, "embedding model");
    assert!(model.starts_with("off") && model.contains("/nonexistent/devart-model"), "{report}");
    assert!(model.contains("run scripts/models"), "{report}");

    // NATS away: said in one line, with the fix.
    let (report, status) = doctor(&env, &fresh, "nats://127.0.0.1:1");
    assert_eq!(status, Some(1), "{report}");
    assert!(line(&report, "nats").starts_with("FAIL") && line(&report, "nats").contains("fix:"), "{report}");

    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    let name = fresh.rsplit('/').next().unwrap().to_owned();
    sqlx::query(&format!("drop database if exists {name} with (force)")).execute(&mut admin).await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn doctor_checks_the_remote_embeddings_api_with_a_key_from_a_file_and_never_shows_it() {
    use devart_testkit::fake_openai::FAKE_KEY;
    use devart_testkit::FakeEmbeddingsApi;

    let env = TestEnv::new().await;
    let fake = FakeEmbeddingsApi::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("devart-embeddings-key-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).unwrap();
    let (right, wrong) = (dir.join("right"), dir.join("wrong"));
    std::fs::write(&right, format!("{FAKE_KEY}\n")).unwrap();
    std::fs::write(&wrong, "sk-wrong-hunter2-key\n").unwrap();
    // Not `std::process`: the fake answers on this test's runtime while devart runs.
    let doctor = |key_file: std::path::PathBuf| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_devart"))
            .arg("doctor")
            .env("DATABASE_URL", &env.config.database_url)
            .env("NATS_URL", &env.config.nats_url)
            .env("DEVART_NATS_PREFIX", &env.config.nats_prefix)
            .env("DEVART_EMBEDDINGS", "openai")
            .env("DEVART_EMBEDDINGS_URL", &fake.base_url)
            .env("DEVART_EMBEDDINGS_API_KEY_FILE", key_file)
            .env_remove("DEVART_EMBEDDINGS_API_KEY")
            .env_remove("DEVART_JWT_SECRET")
            .env("DEVART_LOG", "warn")
            .output()
    };

    let output = doctor(right).await.unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let api = line(&report, "embeddings API");
    let host = fake.base_url.trim_start_matches("http://");
    assert!(api.starts_with("ok") && api.contains(&format!("text-embedding-3-small@{host}")), "{report}");
    assert_eq!(fake.requests()[0].authorization.as_deref(), Some(format!("Bearer {FAKE_KEY}").as_str()));
    assert!(!report.contains(FAKE_KEY), "{report}");

    let output = doctor(wrong).await.unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let api = line(&report, "embeddings API");
    assert!(api.starts_with("FAIL") && api.contains("refused the API key: 401"), "{report}");
    assert!(api.contains("DEVART_EMBEDDINGS_API_KEY"), "the fix names the setting: {report}");
    assert!(!report.contains("hunter2"), "{report}");
    assert_eq!(fake.request_count(), 2, "one request each, not retried");

    std::fs::remove_dir_all(dir).unwrap();
    env.cleanup().await;
}
