//! devart's GraphQL gateway. Only this crate knows GraphQL and HTTP.
//!
//! # Layout
//! - [`schema`]: queries, mutations and subscriptions, and their GraphQL types.
//! - [`http`]: the axum router: GraphQL over HTTP and WebSocket, `/healthz`, `/readyz`, `/metrics`,
//!   and the dashboard at every other path.
//! - [`dashboard`]: the supervisors' single-page app (`web/dist`), built in, with its caching and
//!   Content-Security-Policy.
//! - [`auth`]: JWT bearer tokens and roles.
//! - [`session`]: people's sessions in the browser (`/session`, the `devart_session` cookie).
//! - [`db`]: reads in read-only transactions under the caller's database role.
//! - [`error`]: the one client error shape: a message and an `extensions.code`.
//! - [`limits`]: rate limits per identity and address, failed-credential limits, CORS,
//!   introspection, time limits; all checked before a request's work.
//! - [`metrics`]: Prometheus counters and scrape-time gauges.
//! - [`ws`]: GraphQL over WebSocket (`graphql-transport-ws`), its close codes and caps.

pub mod auth;
pub mod dashboard;
pub mod db;
pub mod error;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod schema;
pub mod session;
pub mod ws;

use std::sync::Arc;

use devart_commands::agents::KeyVerifier;
use devart_commands::{Bus, Commands, EventStore};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{Role, SigningKey};
pub use limits::Limits;

/// Everything a request may need; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub pool: PgPool,
    pub store: EventStore,
    pub commands: Commands,
    pub bus: Bus,
    pub signing_key: SigningKey,
    /// What subscriptions follow in this process: read models' announced rows, the queue's
    /// statistics, the settings.
    pub live: Arc<schema::live::Live>,
    pub metrics: Arc<metrics::Metrics>,
    /// Verifies agents' API keys.
    pub keys: Arc<KeyVerifier>,
    pub limits: Limits,
    /// The rate limits in force, checked before a request's work.
    pub guards: Arc<limits::Guards>,
    /// Open WebSocket connections per identity, for their cap.
    pub websockets: Arc<ws::Connections>,
    /// People's open WebSockets, closed when their session ends or their account changes.
    pub sockets: Arc<ws::sockets::Sockets>,
    /// What semantic search embeds queries with, or why it is off.
    pub semantic: QueryEmbeddings,
}

/// What semantic search embeds queries with in this process, or why it is off (said to whoever
/// asks for it: how to install the model, or which setting turned it off).
#[derive(Clone, Debug)]
pub enum QueryEmbeddings {
    On(Arc<dyn devart_embed::Embeddings>),
    Off(String),
}

impl Services {
    pub fn new(pool: PgPool, commands: Commands, bus: Bus, signing_key: SigningKey) -> Services {
        Services {
            store: commands.store().clone(),
            keys: Arc::new(KeyVerifier::new(pool.clone())),
            pool,
            commands,
            bus,
            signing_key,
            live: Arc::default(),
            metrics: Arc::new(metrics::Metrics::default()),
            guards: Arc::new(limits::Guards::new(&Limits::default())),
            limits: Limits::default(),
            websockets: Arc::default(),
            sockets: Arc::default(),
            semantic: QueryEmbeddings::Off("semantic search is not configured in this process".into()),
        }
    }

    /// These services with semantic search embedding queries through `semantic`.
    pub fn with_semantic(mut self, semantic: QueryEmbeddings) -> Services {
        self.semantic = semantic;
        self
    }

    /// These services with `limits` in force instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Services {
        self.guards = Arc::new(limits::Guards::new(&limits));
        self.limits = limits;
        self
    }
}

/// The HTTP layer's state: the services, the schema that resolves requests against them, and the
/// dashboard's files.
#[derive(Clone)]
pub struct App {
    pub services: Services,
    pub schema: schema::Schema,
    pub dashboard: dashboard::Dashboard,
    /// Cancelled once the process is stopping: `/readyz` then says not ready.
    pub stopping: CancellationToken,
}

impl App {
    pub fn new(services: Services, stopping: CancellationToken) -> App {
        let dashboard = dashboard::Dashboard::new(&services.limits.dashboard);
        App { schema: schema::build(Some(services.clone())), services, dashboard, stopping }
    }
}

/// Serves the gateway on `listener` until `shutdown`, then finishes the requests in flight.
pub async fn serve(listener: TcpListener, services: Services, shutdown: CancellationToken) -> std::io::Result<()> {
    let mut forwarders = tokio::task::JoinSet::new();
    forwarders.spawn(schema::live::run(services.clone(), shutdown.clone()));
    // People's sockets follow their sessions and accounts, changed on any gateway.
    forwarders.spawn(session::follow(services.clone(), shutdown.clone()));
    // A forwarder that panics is reported, not dropped: its subscribers would silently stop.
    tokio::spawn(async move {
        while let Some(ended) = forwarders.join_next().await {
            match ended {
                Err(error) if error.is_panic() => tracing::error!(%error, "live updates: a forwarder panicked"),
                _ => {}
            }
        }
    });
    let app = http::router(App::new(services, shutdown.clone()));
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
