//! devart's GraphQL gateway. Only this crate knows GraphQL and HTTP.
//!
//! # Layout
//! - [`schema`]: queries, mutations and subscriptions, and their GraphQL types.
//! - [`http`]: the axum router: GraphQL over HTTP and WebSocket, `/healthz`, `/readyz`, `/metrics`.
//! - [`auth`]: JWT bearer tokens and roles.
//! - [`db`]: reads in read-only transactions under the caller's database role.
//! - [`error`]: the one client error shape: a message and an `extensions.code`.
//! - [`limits`]: rate limits per identity and address, failed-credential limits, CORS,
//!   introspection, time limits; all checked before a request's work.
//! - [`metrics`]: Prometheus counters and scrape-time gauges.
//! - [`ws`]: GraphQL over WebSocket (`graphql-transport-ws`), its close codes and caps.

pub mod auth;
pub mod db;
pub mod error;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod schema;
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
        }
    }

    /// These services with `limits` in force instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Services {
        self.guards = Arc::new(limits::Guards::new(&limits));
        self.limits = limits;
        self
    }
}

/// The HTTP layer's state: the services and the schema that resolves requests against them.
#[derive(Clone)]
pub struct App {
    pub services: Services,
    pub schema: schema::Schema,
}

impl App {
    pub fn new(services: Services) -> App {
        App { schema: schema::build(Some(services.clone())), services }
    }
}

/// Serves the gateway on `listener` until `shutdown`, then finishes the requests in flight.
pub async fn serve(listener: TcpListener, services: Services, shutdown: CancellationToken) -> std::io::Result<()> {
    tokio::spawn(schema::live::run(services.clone(), shutdown.clone()));
    let app = http::router(App::new(services));
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
