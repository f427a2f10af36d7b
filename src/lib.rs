//! The `devart` binary's library: configuration and the assembly of roles into one process.
//!
//! # Layout
//! - `domain/` (`devart-domain`): aggregates, commands, events; no IO.
//! - `commands/` (`devart-commands`): the event store, command handling, the relay, the bus.
//! - `projections/` (`devart-projections`): read models and their workers.
//! - `gateway/` (`devart-gateway`): GraphQL over HTTP and WebSocket.
//! - here: [`Config`], [`Role`] and [`run`], which starts the chosen roles until shutdown;
//!   [`alerts`], the channels budget alerts go to and the loop that delivers them; [`knowledge`],
//!   the embedding provider of semantic search.

pub mod agent;
pub mod alerts;
pub mod doctor;
pub mod knowledge;
pub mod portable;
pub mod secrets;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use devart_commands::{Bus, BusNames, Commands, EventStore, Nudge};
use devart_gateway::{Services, SigningKey};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Connection settings shared by every command; environment first.
#[derive(Clone, clap::Args)]
pub struct Config {
    /// Postgres, holding the event store and the read models.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/devart",
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,
    /// NATS with JetStream, carrying the event broadcast.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222", hide_env_values = true, global = true)]
    pub nats_url: String,
    /// Prefix of every subject, stream and consumer name, so instances can share a NATS server.
    #[arg(long, env = "DEVART_NATS_PREFIX", default_value = "devart", global = true)]
    pub nats_prefix: String,
    /// HMAC key for JWTs (at least 32 bytes). Without it, the key `devart migrate` generated and
    /// stored in the database is used.
    #[arg(long, env = "DEVART_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<Secret>,
    /// Postgres connections this process may open.
    #[arg(long, env = "DEVART_DB_CONNECTIONS", default_value_t = 16, global = true)]
    pub db_connections: u32,
    /// The gateway's rate limits, CORS origins, introspection and request time limit.
    #[command(flatten)]
    pub limits: devart_gateway::Limits,
    /// Where budget alerts go (Telegram, a webhook); off until configured.
    #[command(flatten)]
    pub alerts: alerts::AlertConfig,
    /// The knowledge base's embedding provider.
    #[command(flatten)]
    pub knowledge: knowledge::KnowledgeConfig,
}

/// A value that is never printed.
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() < 32 {
            return Err("must be at least 32 bytes".into());
        }
        Ok(Secret(s.to_owned()))
    }
}

impl Config {
    pub fn bus_names(&self) -> anyhow::Result<BusNames> {
        BusNames::new(&self.nats_prefix).map_err(anyhow::Error::msg)
    }

    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        devart_commands::db::connect(&self.database_url, self.db_connections)
            .await
            .context("connecting to Postgres (is DATABASE_URL right, and has `devart migrate` run?)")
    }

    pub async fn bus(&self) -> anyhow::Result<Bus> {
        Bus::connect(&self.nats_url, self.bus_names()?).await.context("connecting to NATS")
    }

    pub async fn signing_key(&self, pool: &PgPool) -> anyhow::Result<SigningKey> {
        Ok(SigningKey::new(match &self.jwt_secret {
            Some(secret) => secret.0.as_bytes().to_vec(),
            None => devart_commands::db::jwt_signing_key(pool)
                .await
                .context("reading the JWT signing key (run `devart migrate` first)")?,
        }))
    }
}

/// A part of devart that a process can run; `serve` runs all by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Role {
    /// GraphQL over HTTP and WebSocket.
    Gateway,
    /// The sequencer and the JetStream publisher.
    Relay,
    /// The read models' workers and the reactors' (the workflow orchestrator, the cost-outlier
    /// detector, the alerts recorder and delivery).
    Projections,
}

/// `devart migrate`: database, migrations, stream and consumers; idempotent.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    devart_commands::db::create_database_if_missing(&config.database_url).await.context("creating the database")?;
    let pool = config.pool().await?;
    let pgvector: Option<String> =
        sqlx::query_scalar("select default_version from pg_available_extensions where name = 'vector'")
            .fetch_optional(&pool)
            .await
            .context("looking for the pgvector extension")?;
    if pgvector.is_none() {
        anyhow::bail!("the pgvector extension is not installed on the Postgres server: {}", doctor::PGVECTOR_FIX);
    }
    devart_commands::db::migrate(&pool).await.context("running migrations")?;
    let bus = config.bus().await?;
    bus.ensure_stream().await.map_err(|e| anyhow::anyhow!("creating the JetStream stream: {e}"))?;
    for projection in devart_projections::all() {
        let checkpoint = devart_projections::worker::checkpoint(&pool, projection.name()).await?;
        bus.ensure_projection_consumer(projection.name(), checkpoint)
            .await
            .map_err(|e| anyhow::anyhow!("creating the consumer of projection {}: {e}", projection.name()))?;
    }
    Ok(())
}

/// Runs `roles` until `shutdown`; the gateway listens on `listener`.
/// How long the parts get, once a stop was asked for, to finish what they hold
/// (`DEVART_SHUTDOWN_GRACE`).
pub const SHUTDOWN_GRACE_DEFAULT: Duration = Duration::from_secs(10);

pub async fn run(
    config: &Config,
    roles: &[Role],
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    // Checked before anything starts: a half-configured channel is a mistake to hear about now.
    let channels = if roles.contains(&Role::Projections) { Some(config.alerts.channels()?) } else { None };
    let pool = config.pool().await?;
    let bus = config.bus().await?;
    let store = EventStore::new(pool.clone());
    let appended = Nudge::default();
    let commands = Commands::new(store.clone(), appended.clone(), Some(bus.clone()));
    // The embedding model, for the embedding worker and for search queries; off (with how to
    // turn it on) where it is not installed.
    let semantic = if roles.contains(&Role::Projections) || roles.contains(&Role::Gateway) {
        config.knowledge.semantic().await?
    } else {
        knowledge::Semantic::Off("this process runs neither the gateway nor the projections".into())
    };
    let mut tasks = Parts::default();
    // Every process reaps expired leases, so tasks come back while any part of devart is alive.
    tasks.spawn("lease reaper", devart_commands::queue::run_lease_reaper(commands.clone(), shutdown.clone()));
    // Settings changed anywhere are in effect here within a second.
    commands.settings().refresh(&store).await.context("reading the settings")?;
    tasks.spawn(
        "settings watch",
        devart_commands::settings::watch(commands.settings().clone(), store.clone(), shutdown.clone()),
    );
    // Likewise reservations expire and budget periods turn over.
    tasks.spawn("budget clock", devart_commands::budgets::run_budget_clock(commands.clone(), shutdown.clone()));
    if roles.contains(&Role::Relay) {
        let sequenced = Nudge::default();
        tasks.spawn(
            "relay sequencer",
            devart_commands::relay::run_sequencer(
                store.clone(),
                Some(bus.clone()),
                appended.clone(),
                sequenced.clone(),
                shutdown.clone(),
            ),
        );
        tasks.spawn(
            "relay publisher",
            devart_commands::relay::run_publisher(store.clone(), bus.clone(), sequenced, shutdown.clone()),
        );
    }
    // The projections role (its alert channels were checked above).
    if let Some(channels) = channels {
        // Every read model and every reactor: the registry names them. Alerts are recorded from
        // the global order even with no channel configured (their checkpoint keeps up, so a channel
        // added later starts from then), and delivered by a loop of their own, away from every
        // command.
        let embedded = semantic.ingest().map(devart_projections::embedded).unwrap_or_default();
        for projection in devart_projections::all().into_iter().chain(embedded) {
            tasks.spawn(
                projection.name(),
                devart_projections::worker::run(pool.clone(), store.clone(), bus.clone(), projection, shutdown.clone()),
            );
        }
        let parts = devart_projections::ReactorParts { commands: commands.clone(), alert_channels: channels.enabled() };
        for reactor in devart_projections::reactors(&parts) {
            tasks.spawn(
                reactor.name(),
                devart_projections::worker::run_reactor(
                    pool.clone(),
                    store.clone(),
                    bus.clone(),
                    reactor,
                    shutdown.clone(),
                ),
            );
        }
        if !channels.enabled().is_empty() {
            tasks.spawn("alert delivery", alerts::run_delivery(pool.clone(), channels, shutdown.clone()));
        }
    }
    if roles.contains(&Role::Gateway) {
        let listener = listener.context("the gateway needs a listener")?;
        let services = Services::new(pool.clone(), commands, bus.clone(), config.signing_key(&pool).await?)
            .with_limits(config.limits.clone())
            .with_semantic(match semantic {
                knowledge::Semantic::On { query, .. } => devart_gateway::QueryEmbeddings::On(query),
                knowledge::Semantic::Off(reason) => devart_gateway::QueryEmbeddings::Off(reason),
            });
        let addr: SocketAddr = listener.local_addr()?;
        tracing::info!(%addr, "gateway listening");
        let shutdown = shutdown.clone();
        tasks.spawn("gateway", async move {
            if let Err(error) = devart_gateway::serve(listener, services, shutdown).await {
                tracing::error!(%error, "gateway stopped");
            }
        });
    }
    tracing::info!(?roles, "devart running");
    // A part that panics is not left behind silently: the process stops (and says why), so that
    // whatever supervises it starts a whole one again. Once a stop is asked for, the parts have
    // `grace` to finish; whatever Postgres and NATS are doing, the process then ends.
    let mut panicked = None;
    let mut deadline = None;
    loop {
        let ended = match deadline {
            None => tokio::select! {
                ended = tasks.set.join_next_with_id() => ended,
                () = shutdown.cancelled() => {
                    deadline = Some(tokio::time::Instant::now() + grace);
                    continue;
                }
            },
            Some(deadline) => match tokio::time::timeout_at(deadline, tasks.set.join_next_with_id()).await {
                Ok(ended) => ended,
                Err(_) => break,
            },
        };
        let Some(ended) = ended else { break };
        let id = match &ended {
            Ok((id, ())) => *id,
            Err(error) => error.id(),
        };
        let name = tasks.names.remove(&id).unwrap_or("a part");
        match ended {
            Err(error) if error.is_panic() => {
                tracing::error!(part = name, %error, "a part of devart panicked; stopping");
                panicked.get_or_insert(format!("{name}: {error}"));
                shutdown.cancel();
            }
            _ => tracing::debug!(part = name, "stopped"),
        }
    }
    let mut left: Vec<&str> = tasks.names.values().copied().collect();
    left.sort_unstable();
    if !left.is_empty() {
        tracing::warn!(parts = %left.join(", "), grace = ?grace, "stopping without waiting longer for these");
        tasks.set.abort_all();
    }
    // Commands still in flight were finished by the gateway's graceful shutdown; let the relay
    // see the last of them on its next start (not waited for with NATS away).
    let flush_for = deadline
        .map_or(Duration::from_secs(1), |d| d.saturating_duration_since(tokio::time::Instant::now()))
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    if tokio::time::timeout(flush_for, bus.client.flush()).await.is_err() {
        tracing::warn!("NATS did not confirm the last publishes");
    }
    match panicked {
        Some(error) => anyhow::bail!("a part of devart panicked: {error}"),
        None if !left.is_empty() => {
            anyhow::bail!(
                "stopped after the {}s grace period with parts unfinished: {}",
                grace.as_secs_f64(),
                left.join(", ")
            )
        }
        None => Ok(()),
    }
}

/// The parts of a running devart, by name, so that a stop can say which did not finish.
#[derive(Default)]
struct Parts {
    set: tokio::task::JoinSet<()>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
}

impl Parts {
    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&mut self, name: &'static str, part: F) {
        let handle = self.set.spawn(part);
        self.names.insert(handle.id(), name);
    }
}
