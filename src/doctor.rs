//! `devart doctor`: what a new install needs, checked in order, one line each, with the fix for
//! anything wrong. Nothing is changed; the exit status says whether everything required is there.

use std::time::Duration;

use sqlx::Connection as _;

use crate::secrets::redact_url;
use crate::Config;

/// How to get NATS.
const NATS_FIX: &str = "start NATS with JetStream (scripts/services), or set NATS_URL";

/// How long one check may wait for a server.
const WAIT: Duration = Duration::from_secs(5);

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Required, and there.
    Ok(String),
    /// Optional, and not configured.
    Off(String),
    /// Required and missing or wrong: what, and how to fix it.
    Fail { what: String, fix: String },
}

impl Finding {
    fn fail(what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding::Fail { what: what.into(), fix: fix.into() }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub finding: Finding,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.finding {
            Finding::Ok(what) => write!(f, "ok    {}: {what}", self.name),
            Finding::Off(what) => write!(f, "off   {}: {what}", self.name),
            Finding::Fail { what, fix } => write!(f, "FAIL  {}: {what}; fix: {fix}", self.name),
        }
    }
}

/// Runs every check; later checks that need an earlier one's server are skipped when it failed.
pub async fn checks(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut push = |name, finding| checks.push(Check { name, finding });
    let database = redact_url(&config.database_url);

    // Postgres, pgvector, migrations, the JWT key.
    match tokio::time::timeout(WAIT, sqlx::PgConnection::connect(&config.database_url)).await {
        Err(_) => push(
            "postgres",
            Finding::fail(
                format!("no answer from {database} within {}s", WAIT.as_secs()),
                "start Postgres (scripts/services), or set DATABASE_URL",
            ),
        ),
        Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("3D000") => push(
            "postgres",
            Finding::fail(
                format!("the database in {database} does not exist"),
                "run `devart migrate`, which creates it",
            ),
        ),
        Ok(Err(e)) => push(
            "postgres",
            Finding::fail(
                format!("cannot connect to {database}: {e}"),
                "start Postgres (scripts/services), or set DATABASE_URL",
            ),
        ),
        Ok(Ok(mut conn)) => {
            let version: String =
                sqlx::query_scalar("show server_version").fetch_one(&mut conn).await.unwrap_or_else(|_| "?".into());
            push("postgres", Finding::Ok(format!("{version} at {database}")));
            push("pgvector", pgvector(&mut conn).await);
            push("migrations", migrations(&mut conn).await);
            push("jwt key", jwt_key(config, &mut conn).await);
            let _ = conn.close().await;
        }
    }

    // NATS, JetStream, the stream and the consumers `devart migrate` makes.
    let nats = redact_url(&config.nats_url);
    match config.bus_names() {
        Err(e) => push("nats", Finding::fail(format!("{e}"), "set DEVART_NATS_PREFIX to letters, digits and `_`")),
        Ok(names) => {
            match tokio::time::timeout(WAIT, devart_commands::Bus::connect(&config.nats_url, names.clone())).await {
                Err(_) => push("nats", Finding::fail(format!("no answer from {nats}"), NATS_FIX)),
                Ok(Err(e)) => push("nats", Finding::fail(format!("cannot connect to {nats}: {e}"), NATS_FIX)),
                Ok(Ok(bus)) => match tokio::time::timeout(WAIT, bus.client.flush()).await {
                    Ok(Ok(())) => {
                        push("nats", Finding::Ok(format!("{} at {nats}", bus.client.server_info().version)));
                        push("jetstream", jetstream(&bus, &names).await);
                    }
                    _ => push("nats", Finding::fail(format!("no answer from {nats}"), NATS_FIX)),
                },
            }
        }
    }

    // What is optional.
    let alerts = &config.alerts;
    push(
        "telegram alerts",
        match (&alerts.telegram_bot_token, &alerts.telegram_chat_id) {
            (Some(_), Some(chat)) => Finding::Ok(format!("to chat {chat}")),
            (None, None) => Finding::Off("not configured (DEVART_TELEGRAM_BOT_TOKEN, DEVART_TELEGRAM_CHAT_ID)".into()),
            _ => Finding::fail(
                "half configured",
                "set both DEVART_TELEGRAM_BOT_TOKEN and DEVART_TELEGRAM_CHAT_ID, or neither",
            ),
        },
    );
    push(
        "webhook alerts",
        match (&alerts.webhook_url, &alerts.webhook_secret) {
            (Some(url), Some(_)) => Finding::Ok(format!("to {}", redact_url(url))),
            (None, None) => Finding::Off("not configured (DEVART_WEBHOOK_URL, DEVART_WEBHOOK_SECRET)".into()),
            _ => Finding::fail("half configured", "set both DEVART_WEBHOOK_URL and DEVART_WEBHOOK_SECRET, or neither"),
        },
    );
    push("dashboard", dashboard(config));
    if config.knowledge.embeddings == crate::knowledge::Provider::Openai {
        push("embeddings API", embeddings_api(&config.knowledge).await);
    } else {
        push(
            "embedding model",
            tokio::task::spawn_blocking({
                let dir = config.knowledge.model_dir.clone();
                move || embedding_model(dir)
            })
            .await
            .unwrap_or_else(|e| Finding::fail(format!("the check did not finish: {e}"), "run `devart doctor` again")),
        );
    }
    checks
}

/// The remote embeddings API (`DEVART_EMBEDDINGS=openai`): one short text embedded, once, within
/// the checks' wait.
async fn embeddings_api(knowledge: &crate::knowledge::KnowledgeConfig) -> Finding {
    use devart_embed::{EmbedError, Embeddings as _, RemoteConfig, RemoteEmbeddings};
    let fix_settings = "check DEVART_EMBEDDINGS_URL, DEVART_EMBEDDINGS_MODEL and DEVART_EMBEDDINGS_API_KEY";
    let config = match knowledge.remote() {
        Ok(config) => RemoteConfig { max_retries: 0, timeout: WAIT, ..config },
        Err(e) => return Finding::fail(format!("{e:#}"), fix_settings),
    };
    let remote = match RemoteEmbeddings::new(config) {
        Ok(remote) => remote,
        Err(e) => return Finding::fail(e.to_string(), fix_settings),
    };
    match remote.embed(vec!["devart doctor".into()]).await {
        Ok(_) => Finding::Ok(format!("{} answers {}-wide vectors", remote.model(), devart_embed::DIMENSIONS)),
        Err(e @ EmbedError::KeyRefused { .. }) => Finding::fail(
            e.to_string(),
            "set DEVART_EMBEDDINGS_API_KEY (or DEVART_EMBEDDINGS_API_KEY_FILE) to a key the API accepts",
        ),
        Err(e @ EmbedError::Unreachable { .. }) => {
            Finding::fail(e.to_string(), "check DEVART_EMBEDDINGS_URL and that the API is up")
        }
        Err(e @ EmbedError::WrongWidth { .. }) => Finding::fail(
            e.to_string(),
            "set DEVART_EMBEDDINGS_MODEL to a model that answers 384 dimensions when asked for them",
        ),
        Err(e) => Finding::fail(e.to_string(), fix_settings),
    }
}

/// How to install the embedding model.
const MODEL_FIX: &str = "run scripts/models (as root), or set DEVART_MODEL_DIR to where the model is";

/// The knowledge base's embedding model: found, configured as expected, and its version (a hash of
/// the 91 MB of weights, a fraction of a second; the model itself is not loaded).
fn embedding_model(dir: std::path::PathBuf) -> Finding {
    use devart_embed::EmbedError;
    match devart_embed::ModelFiles::locate(&dir).and_then(|files| devart_embed::model_version(&files)) {
        Ok(info) => Finding::Ok(format!("{} in {}", info.version, dir.display())),
        // Nothing installed: the knowledge base's semantic search is off, the rest works.
        Err(EmbedError::MissingDir { dir }) => {
            Finding::Off(format!("not installed in {} (semantic search needs it): {MODEL_FIX}", dir.display()))
        }
        Err(EmbedError::MissingFile { dir, file }) => {
            Finding::fail(format!("no {file} in {}", dir.display()), MODEL_FIX)
        }
        Err(e) => Finding::fail(e.to_string(), "reinstall it: remove the directory, then run scripts/models"),
    }
}

async fn pgvector(conn: &mut sqlx::PgConnection) -> Finding {
    let found: Result<Option<(String, Option<String>)>, _> =
        sqlx::query_as("select default_version, installed_version from pg_available_extensions where name = 'vector'")
            .fetch_optional(conn)
            .await;
    match found {
        Ok(Some((_, Some(installed)))) => Finding::Ok(format!("{installed}, in the database")),
        Ok(Some((available, None))) => Finding::Ok(format!("{available} available (`devart migrate` adds it)")),
        Ok(None) => Finding::fail("the pgvector extension is not installed on the Postgres server", PGVECTOR_FIX),
        Err(e) => Finding::fail(format!("cannot list extensions: {e}"), "check the database user's rights"),
    }
}

/// How to get pgvector, for the doctor and for `devart migrate`.
pub const PGVECTOR_FIX: &str =
    "install it (Debian: `apt-get install postgresql-15-pgvector`, or build pgvector from source as scripts/services does)";

async fn migrations(conn: &mut sqlx::PgConnection) -> Finding {
    let known: Vec<i64> = devart_commands::db::MIGRATOR.iter().map(|m| m.version).collect();
    let applied: Result<Vec<(i64, bool)>, _> =
        sqlx::query_as("select version, success from _sqlx_migrations order by version").fetch_all(conn).await;
    let applied = match applied {
        Ok(applied) => applied,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
            return Finding::fail("none applied", "run `devart migrate`")
        }
        Err(e) => return Finding::fail(format!("cannot read them: {e}"), "check the database user's rights"),
    };
    if let Some((version, _)) = applied.iter().find(|(_, success)| !success) {
        return Finding::fail(
            format!("migration {version} failed half-way"),
            "see the database's log, then run `devart migrate`",
        );
    }
    let unknown: Vec<i64> = applied.iter().map(|(v, _)| *v).filter(|v| !known.contains(v)).collect();
    if !unknown.is_empty() {
        return Finding::fail(
            format!("the database has migrations this devart does not know: {unknown:?}"),
            "run the newer devart that applied them",
        );
    }
    let missing = known.iter().filter(|v| !applied.iter().any(|(a, _)| a == *v)).count();
    match missing {
        0 => Finding::Ok(format!("{} applied, all known", applied.len())),
        n => Finding::fail(format!("{n} of {} not applied", known.len()), "run `devart migrate`"),
    }
}

async fn jwt_key(config: &Config, conn: &mut sqlx::PgConnection) -> Finding {
    if config.jwt_secret.is_some() {
        return Finding::Ok("from DEVART_JWT_SECRET".into());
    }
    let stored: Result<Option<i64>, _> =
        sqlx::query_scalar("select octet_length(value)::bigint from secrets where name = 'jwt_signing_key'")
            .fetch_optional(conn)
            .await;
    match stored {
        Ok(Some(_)) => Finding::Ok("the key `devart migrate` generated, in the database".into()),
        _ => Finding::fail("no DEVART_JWT_SECRET and none stored", "run `devart migrate`, or set DEVART_JWT_SECRET"),
    }
}

async fn jetstream(bus: &devart_commands::Bus, names: &devart_commands::BusNames) -> Finding {
    let stream_name = names.stream();
    let mut stream = match tokio::time::timeout(WAIT, bus.jetstream.get_stream(&stream_name)).await {
        Err(_) => return Finding::fail("no answer from JetStream", "start nats-server with --jetstream"),
        Ok(Err(e)) if e.to_string().contains("not found") => {
            return Finding::fail(format!("no stream {stream_name}"), "run `devart migrate`")
        }
        Ok(Err(e)) => return Finding::fail(format!("{e}"), "start nats-server with --jetstream"),
        Ok(Ok(stream)) => stream,
    };
    let expected = names.stream_config();
    let info = match stream.info().await {
        Ok(info) => info.clone(),
        Err(e) => return Finding::fail(format!("cannot read stream {stream_name}: {e}"), "check NATS"),
    };
    if info.config.subjects != expected.subjects {
        return Finding::fail(
            format!("stream {stream_name} takes {:?}, not {:?}", info.config.subjects, expected.subjects),
            "run `devart migrate`",
        );
    }
    let mut missing = Vec::new();
    for projection in devart_projections::all() {
        let name = names.projection_consumer(projection.name());
        if stream.consumer_info(&name).await.is_err() {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        return Finding::fail(format!("no consumer {}", missing.join(", ")), "run `devart migrate`");
    }
    Finding::Ok(format!("stream {stream_name} ({} events) and its projections' consumers", info.state.messages))
}

fn dashboard(config: &Config) -> Finding {
    match &config.limits.dashboard.web_dir {
        Some(dir) if dir.join("index.html").is_file() => Finding::Ok(format!("served from {}", dir.display())),
        Some(dir) => {
            Finding::fail(format!("no index.html in {}", dir.display()), "run scripts/web, or unset DEVART_WEB_DIR")
        }
        None if devart_gateway::dashboard::built_in() => Finding::Ok("built in".into()),
        None => Finding::Off("not built into this devart: run scripts/web, then build devart again".into()),
    }
}
