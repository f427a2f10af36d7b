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
use devart_projections::services::ServiceRow;
use devart_projections::tasks::TaskRow;
use devart_projections::workflows::WorkflowRunRow;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use auth::{Role, SigningKey};
pub use limits::Limits;

/// How many read-model changes a slow subscriber may fall behind before it skips some.
const UPDATES_BUFFER: usize = 4_096;

/// Everything a request may need; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub pool: PgPool,
    pub store: EventStore,
    pub commands: Commands,
    pub bus: Bus,
    pub signing_key: SigningKey,
    /// Task-board changes, fanned out to `taskUpdates` subscribers in this process.
    pub task_updates: broadcast::Sender<TaskRow>,
    /// Workflow-run changes, fanned out to `workflowRunUpdates` subscribers in this process.
    pub run_updates: broadcast::Sender<WorkflowRunRow>,
    /// Service budget changes, fanned out to `serviceUpdates` subscribers in this process.
    pub service_updates: broadcast::Sender<ServiceRow>,
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
}

impl Services {
    pub fn new(pool: PgPool, commands: Commands, bus: Bus, signing_key: SigningKey) -> Services {
        let (task_updates, _) = broadcast::channel(UPDATES_BUFFER);
        let (run_updates, _) = broadcast::channel(UPDATES_BUFFER);
        let (service_updates, _) = broadcast::channel(UPDATES_BUFFER);
        Services {
            store: commands.store().clone(),
            keys: Arc::new(KeyVerifier::new(pool.clone())),
            pool,
            commands,
            bus,
            signing_key,
            task_updates,
            run_updates,
            service_updates,
            metrics: Arc::new(metrics::Metrics::default()),
            guards: Arc::new(limits::Guards::new(&Limits::default())),
            limits: Limits::default(),
            websockets: Arc::default(),
            sockets: Arc::default(),
        }
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
}

impl App {
    pub fn new(services: Services) -> App {
        let dashboard = dashboard::Dashboard::new(&services.limits.dashboard);
        App { schema: schema::build(Some(services.clone())), services, dashboard }
    }
}

/// Serves the gateway on `listener` until `shutdown`, then finishes the requests in flight.
pub async fn serve(listener: TcpListener, services: Services, shutdown: CancellationToken) -> std::io::Result<()> {
    let mut forwarders = tokio::task::JoinSet::new();
    forwarders.spawn(forward_updates(services.clone(), "tasks", services.task_updates.clone(), shutdown.clone()));
    forwarders.spawn(forward_updates(services.clone(), "workflows", services.run_updates.clone(), shutdown.clone()));
    forwarders.spawn(forward_updates(services.clone(), "services", services.service_updates.clone(), shutdown.clone()));
    // People's sockets follow their sessions and accounts, changed on any gateway.
    forwarders.spawn(session::follow(services.clone(), shutdown.clone()));
    // A forwarder that panics is reported, not dropped: its subscribers would silently stop.
    tokio::spawn(async move {
        while let Some(ended) = forwarders.join_next().await {
            match ended {
                Err(error) if error.is_panic() => tracing::error!(%error, "read-model updates: a forwarder panicked"),
                _ => {}
            }
        }
    });
    let app = http::router(App::new(services));
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Feeds `sender` from a projection's change notifications on the bus.
async fn forward_updates<T: serde::de::DeserializeOwned>(
    services: Services,
    projection: &'static str,
    sender: broadcast::Sender<T>,
    shutdown: CancellationToken,
) {
    let subject = services.bus.names.readmodel(projection);
    loop {
        let mut subscription = match services.bus.client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(projection, %error, "updates: cannot subscribe; retrying");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue }
            }
        };
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = subscription.next() => m,
            };
            let Some(message) = message else { break };
            match serde_json::from_slice::<T>(&message.payload) {
                Ok(row) => {
                    let _ = sender.send(row);
                }
                Err(error) => tracing::warn!(projection, %error, "updates: unreadable notification"),
            }
        }
    }
}
