//! A database and a bus prefix of one test's or one benchmark's own, on the shared servers.
//!
//! Migrating a database takes seconds; cloning a migrated one takes a fraction of that. So the
//! migrations run once per migration set, into a template database named by their checksums, and
//! every stack is a clone of it. Each stack also gets its own NATS prefix, so any number of them
//! share one NATS server without seeing each other's subjects, streams or consumers.

use std::collections::HashSet;
use std::time::Duration;

use devart::{Config, Secret};
use devart_commands::{Bus, BusNames, EventStore};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::Error;

/// How long NATS may take to connect and set up the stream: long enough for a loaded machine,
/// short enough to tell that it is down.
const NATS_WAIT: Duration = Duration::from_secs(10);
/// How often a clone is tried while another clone of the template is being made (Postgres copies
/// a template only while no one else is connected to it).
const CLONE_ATTEMPTS: u32 = 50;
const CLONE_RETRY_AFTER: Duration = Duration::from_millis(100);
/// Taken while the template is made, so that processes racing to make it make it once.
const TEMPLATE_LOCK: i64 = 4242;
/// Postgres's `object_in_use`: "source database is being accessed by other users".
const OBJECT_IN_USE: &str = "55006";

/// What a [`Stack`] is made of and where.
#[derive(Clone)]
pub struct StackOptions {
    /// Any database URL on the Postgres server to use: its database name is replaced.
    pub postgres_url: String,
    pub nats_url: String,
    /// The new database's name (lowercase letters, digits, `_`).
    pub database: String,
    /// The bus prefix: subjects, streams and consumers of this stack's own.
    pub nats_prefix: String,
    pub jwt_secret: Secret,
    /// The connections a devart started on this stack may open (its `DEVART_DB_CONNECTIONS`).
    pub db_connections: u32,
    /// The connections of [`Stack::pool`], which the caller uses directly.
    pub pool_connections: u32,
    pub limits: devart_gateway::Limits,
    /// The embedding provider; off unless a test asks for one, so that only the knowledge base's
    /// tests load the model.
    pub knowledge: devart::knowledge::KnowledgeConfig,
}

impl StackOptions {
    /// The servers the tests use (`DEVART_TEST_POSTGRES`, `DEVART_TEST_NATS`, or the local ones),
    /// a database `devart_t_…` and a prefix `t…` that no other test has, and the default limits.
    pub fn for_tests() -> StackOptions {
        let id = Uuid::new_v4().simple().to_string();
        StackOptions {
            postgres_url: std::env::var("DEVART_TEST_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into()),
            nats_url: std::env::var("DEVART_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
            database: format!("devart_t_{}", &id[..16]),
            nats_prefix: format!("t{}", &id[..12]),
            jwt_secret: Secret("test-secret-test-secret-test-secret!".into()),
            db_connections: 16,
            pool_connections: 16,
            limits: devart_gateway::Limits::default(),
            knowledge: devart::knowledge::KnowledgeConfig::off(),
        }
    }
}

/// A fresh database cloned from the migrated template, and a bus prefix with its event stream set
/// up; removed by [`Stack::remove`].
pub struct Stack {
    /// Points at this database and prefix: what a devart started on the stack runs with.
    pub config: Config,
    pub pool: PgPool,
    pub store: EventStore,
    pub bus: Bus,
    /// The server's `postgres` database, from which the stack's own is dropped.
    admin_url: String,
    database: String,
}

impl Stack {
    pub async fn create(options: StackOptions) -> Result<Stack, Error> {
        check_name(&options.database)?;
        let admin_url = with_database(&options.postgres_url, "postgres")?;
        let template = template(&admin_url).await?;
        clone(&admin_url, &template, &options.database).await?;
        let database = options.database.clone();
        match Stack::open(options, admin_url.clone()).await {
            Ok(stack) => Ok(stack),
            Err(error) => {
                // Best effort: the error that matters is the one that stopped the set-up.
                let _ = drop_database(&admin_url, &database).await;
                Err(error)
            }
        }
    }

    async fn open(options: StackOptions, admin_url: String) -> Result<Stack, Error> {
        let config = Config {
            database_url: with_database(&options.postgres_url, &options.database)?,
            nats_url: options.nats_url,
            nats_prefix: options.nats_prefix,
            jwt_secret: Some(options.jwt_secret),
            db_connections: options.db_connections,
            limits: options.limits,
            alerts: devart::alerts::AlertConfig::default(),
            knowledge: options.knowledge,
        };
        let names = BusNames::new(&config.nats_prefix).map_err(|_| Error::InvalidName(config.nats_prefix.clone()))?;
        let pool = devart_commands::db::connect(&config.database_url, options.pool_connections)
            .await
            .map_err(Error::postgres("connecting to the new database"))?;
        let bus = tokio::time::timeout(NATS_WAIT, Bus::connect(&config.nats_url, names))
            .await
            .map_err(|_| Error::Timeout { what: "no connection to NATS", after: NATS_WAIT })?
            .map_err(|e| Error::Nats { doing: "connecting to NATS", message: e.to_string() })?;
        tokio::time::timeout(NATS_WAIT, bus.ensure_stream())
            .await
            .map_err(|_| Error::Timeout { what: "NATS did not set up the event stream", after: NATS_WAIT })?
            .map_err(|e| Error::Nats { doing: "setting up the event stream", message: e.to_string() })?;
        Ok(Stack { store: EventStore::new(pool.clone()), config, pool, bus, admin_url, database: options.database })
    }

    /// The database's name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Drops the database (whoever is still connected) and deletes the event stream. A stream
    /// made under the prefix by other means is the caller's to delete.
    pub async fn remove(self) -> Result<(), Error> {
        self.pool.close().await;
        // The stream is gone already if the caller deleted it; the database is what must go.
        let _ = self.bus.jetstream.delete_stream(self.bus.names.stream()).await;
        drop_database(&self.admin_url, &self.database).await
    }
}

/// Databases and prefixes go into SQL and subjects as they are, so only plain names pass.
fn check_name(name: &str) -> Result<(), Error> {
    let plain = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> Result<String, Error> {
    let mut url = reqwest::Url::parse(url).map_err(|_| Error::InvalidUrl)?;
    url.set_path(&format!("/{name}"));
    Ok(url.into())
}

/// The servers on which this process has made sure the template exists.
static TEMPLATES: Mutex<Option<HashSet<String>>> = Mutex::const_new(None);

/// The name of the migrated template on the server of `admin_url`, made if missing.
async fn template(admin_url: &str) -> Result<String, Error> {
    let digest = devart_commands::db::MIGRATOR
        .iter()
        .fold(0u64, |h, m| m.checksum.iter().fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)));
    let name = format!("devart_template_{digest:016x}");
    // Held while the template is made: the callers after the first wait for it.
    let mut made = TEMPLATES.lock().await;
    if made.as_ref().is_some_and(|servers| servers.contains(admin_url)) {
        return Ok(name);
    }
    let mut admin = connect_admin(admin_url).await?;
    // Processes may race to make it too: one builds, the others wait.
    sqlx::query("select pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut admin)
        .await
        .map_err(Error::postgres("waiting for the template's lock"))?;
    let built = build_template(&mut admin, admin_url, &name).await;
    let unlocked = sqlx::query("select pg_advisory_unlock($1)").bind(TEMPLATE_LOCK).execute(&mut admin).await;
    built?;
    unlocked.map_err(Error::postgres("releasing the template's lock"))?;
    made.get_or_insert_with(HashSet::new).insert(admin_url.to_owned());
    Ok(name)
}

/// Makes the template `name` unless it exists: migrated under another name, then renamed, so that
/// a half-made template is never cloned.
async fn build_template(admin: &mut PgConnection, admin_url: &str, name: &str) -> Result<(), Error> {
    let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
        .bind(name)
        .fetch_one(&mut *admin)
        .await
        .map_err(Error::postgres("looking for the template"))?;
    if exists {
        return Ok(());
    }
    let building = format!("{name}_building");
    sqlx::query(&format!("drop database if exists {building} with (force)"))
        .execute(&mut *admin)
        .await
        .map_err(Error::postgres("dropping a half-made template"))?;
    sqlx::query(&format!("create database {building}"))
        .execute(&mut *admin)
        .await
        .map_err(Error::postgres("creating the template"))?;
    let pool = devart_commands::db::connect(&with_database(admin_url, &building)?, 2)
        .await
        .map_err(Error::postgres("connecting to the template"))?;
    let migrated = devart_commands::db::migrate(&pool).await;
    pool.close().await;
    migrated.map_err(|e| Error::Postgres { doing: "migrating the template", source: e.into() })?;
    // A closed pool's backends may still be on their way out, and a rename waits for them only
    // 5 s: they are ours (the lock is held), so they are ended first.
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()",
    )
    .bind(&building)
    .execute(&mut *admin)
    .await
    .map_err(Error::postgres("ending the template's connections"))?;
    sqlx::query(&format!("alter database {building} rename to {name}"))
        .execute(&mut *admin)
        .await
        .map_err(Error::postgres("naming the template"))?;
    Ok(())
}

async fn clone(admin_url: &str, template: &str, name: &str) -> Result<(), Error> {
    let mut admin = connect_admin(admin_url).await?;
    let mut attempt = 1;
    loop {
        match sqlx::query(&format!("create database {name} template {template}")).execute(&mut admin).await {
            Ok(_) => break,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(OBJECT_IN_USE) && attempt < CLONE_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(CLONE_RETRY_AFTER).await;
            }
            Err(source) => return Err(Error::Postgres { doing: "cloning the template", source }),
        }
    }
    admin.close().await.map_err(Error::postgres("closing the admin connection"))
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), Error> {
    let mut admin = connect_admin(admin_url).await?;
    // `with (force)`: a test or benchmark stopped half-way may leave connections behind.
    sqlx::query(&format!("drop database if exists {name} with (force)"))
        .execute(&mut admin)
        .await
        .map_err(Error::postgres("dropping the database"))?;
    admin.close().await.map_err(Error::postgres("closing the admin connection"))
}

async fn connect_admin(admin_url: &str) -> Result<PgConnection, Error> {
    PgConnection::connect(admin_url).await.map_err(Error::postgres("connecting to the server's `postgres` database"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_pass() {
        for good in ["devart_t_0123abcd", "devart_bench_0a1b2c3d_claim_latency", "_x"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(64);
        for bad in ["", "Devart", "1db", "a-b", "a;drop database x", "a b", long.as_str()] {
            assert!(matches!(check_name(bad), Err(Error::InvalidName(_))), "{bad}");
        }
    }

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:pw@db:5432/devart?sslmode=require", "x").unwrap(),
            "postgres://u:pw@db:5432/x?sslmode=require"
        );
        let error = with_database("not a url: pw", "x").unwrap_err();
        assert!(!error.to_string().contains("pw"), "{error}");
    }
}
