//! devart's read models and the workers that keep them.
//!
//! # Layout
//! - [`Projection`]: what a read model is: a name, the tables it owns, and how a batch of events
//!   changes them. [`tasks::TasksProjection`] is the task board, [`agents::AgentsProjection`] the
//!   roster of agents, [`workflows::WorkflowsProjection`] the workflows and their runs,
//!   [`services::ServicesProjection`] the services and their budgets,
//!   [`analytics::AnalyticsProjection`] the facts behind cost, throughput and queue charts,
//!   [`users::UsersProjection`] the people and their roles.
//! - [`orchestrator`]: the workflow orchestrator, a process manager that rides on the same worker.
//! - [`alerts`]: the consumer that records budget alerts in the `alert_deliveries` outbox, on the
//!   same worker too.
//! - [`outliers`]: the cost-outlier detector, another process manager on the same worker.
//! - [`worker`]: the live worker, fed by the projection's durable JetStream consumer.
//! - [`rebuild`]: rebuilding a read model from the event store, aside, then swapped in.
//! - [`status`]: where each projection is, and how far behind.
//!
//! **Invariant:** a read-model change and its projection's checkpoint commit in one transaction,
//! and a batch only ever starts right after the checkpoint. A redelivered event is skipped; a
//! missing one is read from the store. So each event is applied exactly once, in order.

pub mod agents;
pub mod alerts;
pub mod analytics;
pub mod orchestrator;
pub mod outliers;
pub mod rebuild;
pub mod services;
pub mod status;
pub mod tasks;
pub mod users;
pub mod worker;
pub mod workflows;

use std::sync::Arc;

use devart_commands::Recorded;
use futures::future::BoxFuture;
use sqlx::PgConnection;

/// Where a batch is applied: the live tables, or the aside copies a rebuild fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Live,
    Rebuild,
}

impl Target {
    /// The physical name of one of the projection's tables.
    pub fn table(self, base: &str) -> String {
        match self {
            Target::Live => base.to_owned(),
            Target::Rebuild => format!("{base}__rebuild"),
        }
    }
}

/// A read model built from events.
pub trait Projection: Send + Sync + 'static {
    /// Its name in `projection_checkpoints`, `projections status` and consumer names.
    fn name(&self) -> &'static str;
    /// The tables it owns; a rebuild re-creates each aside and swaps it in.
    fn tables(&self) -> &'static [&'static str];
    /// Applies `events` (consecutive positions, in order) to `target`; returns the changed rows as
    /// JSON, for live subscribers.
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: Target,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, sqlx::Error>>;
}

/// Every projection devart runs.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(tasks::TasksProjection),
        Arc::new(agents::AgentsProjection),
        Arc::new(workflows::WorkflowsProjection),
        Arc::new(services::ServicesProjection),
        Arc::new(analytics::AnalyticsProjection),
        Arc::new(users::UsersProjection),
    ]
}

pub fn by_name(name: &str) -> Option<Arc<dyn Projection>> {
    all().into_iter().find(|p| p.name() == name)
}

/// The rows of `table` with these ids, by id: what a batch starts from before folding events in.
pub(crate) async fn rows_by_id<R>(
    conn: &mut PgConnection,
    table: &str,
    columns: &str,
    ids: &[uuid::Uuid],
) -> Result<std::collections::HashMap<uuid::Uuid, R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin + HasId,
{
    let rows: Vec<R> =
        sqlx::query_as(&format!("select {columns} from {table} where id = any($1)")).bind(ids).fetch_all(conn).await?;
    Ok(rows.into_iter().map(|r| (r.id(), r)).collect())
}

/// A read-model row keyed by its aggregate's id.
pub(crate) trait HasId {
    fn id(&self) -> uuid::Uuid;
}

/// The advisory-lock key that serializes a projection's live batches with its rebuild's swap.
pub(crate) fn lock_key(name: &str) -> i64 {
    // FNV-1a: stable across builds and processes.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    hash as i64
}
