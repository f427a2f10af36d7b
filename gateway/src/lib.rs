//! devart's GraphQL gateway. Only this crate knows GraphQL and HTTP.
//!
//! # Layout
//! - [`schema`]: queries, mutations and subscriptions, and their GraphQL types.
//! - [`http`]: the axum router: GraphQL over HTTP and WebSocket, `/healthz`, `/readyz`, `/metrics`.
//! - [`auth`]: JWT bearer tokens and roles.
//! - [`error`]: the one client error shape: a message and an `extensions.code`.
//! - [`metrics`]: Prometheus counters and scrape-time gauges.

pub mod auth;
pub mod error;
pub mod http;
pub mod metrics;
pub mod schema;

use std::sync::Arc;

use devart_commands::agents::KeyVerifier;
use devart_commands::{Bus, Commands, EventStore};
use devart_projections::tasks::TaskRow;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use auth::{Role, SigningKey};

/// How many task-board changes a slow subscriber may fall behind before it skips some.
const TASK_UPDATES_BUFFER: usize = 4_096;

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
    pub metrics: Arc<metrics::Metrics>,
    /// Verifies agents' API keys.
    pub keys: Arc<KeyVerifier>,
}

impl Services {
    pub fn new(pool: PgPool, commands: Commands, bus: Bus, signing_key: SigningKey) -> Services {
        let (task_updates, _) = broadcast::channel(TASK_UPDATES_BUFFER);
        Services {
            store: commands.store().clone(),
            keys: Arc::new(KeyVerifier::new(pool.clone())),
            pool,
            commands,
            bus,
            signing_key,
            task_updates,
            metrics: Arc::new(metrics::Metrics::default()),
        }
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
    tokio::spawn(forward_task_updates(services.clone(), shutdown.clone()));
    let app = http::router(App::new(services));
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// Feeds `taskUpdates` from the projection's change notifications on the bus.
async fn forward_task_updates(services: Services, shutdown: CancellationToken) {
    let subject = services.bus.names.readmodel("tasks");
    loop {
        let mut subscription = match services.bus.client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, "taskUpdates: cannot subscribe; retrying");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue }
            }
        };
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = subscription.next() => m,
            };
            let Some(message) = message else { break };
            match serde_json::from_slice::<TaskRow>(&message.payload) {
                Ok(row) => {
                    let _ = services.task_updates.send(row);
                }
                Err(error) => tracing::warn!(%error, "taskUpdates: unreadable notification"),
            }
        }
    }
}
