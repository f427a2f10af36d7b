//! devart's read models, the reactors, and the workers that feed both from the global order.
//!
//! # Two kinds of consumer
//! - A [`Projection`] is a read model: it owns tables, and a batch of events changes them. It can
//!   be rebuilt from the store aside and swapped in ([`rebuild`]), and checksummed
//!   ([`rebuild::checksums`]), so a rebuild can be compared with the live tables. Most read models
//!   keep one row per aggregate: they describe that row and its fold ([`rows::AggregateRows`]),
//!   which makes them projections named after their table, and [`rows::fold_and_upsert`] does the
//!   rest.
//! - A [`Reactor`] keeps no read model: it acts on what happened, through
//!   [`devart_commands::Commands`] or by recording into an outbox table of its own. It is never
//!   rebuilt: replaying its history would act again.
//!
//! Both are fed by [`worker`]: one durable JetStream consumer and one checkpoint per name, the
//! same batching, redelivery and gap handling ([`worker::run`], [`worker::run_reactor`]), each
//! batch applied in an `apply_batch` span.
//! [`status`] says where each stands.
//!
//! # The registry
//! Every read model and every reactor devart runs is a module below and a line in [`all`] or in
//! [`reactors`]; nothing else has to list them. A new read model is a module implementing
//! [`Projection`], its migration (its tables, their grants in `devart_secure_read_models()`) and
//! its line in [`all`]; a new reactor, a module implementing [`Reactor`], the migration of its
//! outbox if it has one, and its line in [`reactors`].
//!
//! # Invariants
//! - **Exactly once, in order.** A batch only ever starts right after the consumer's checkpoint: a
//!   redelivered event is skipped, a missing one is read from the store. A read-model change, and
//!   a reactor's outbox rows, commit in one transaction with the checkpoint. So each event is
//!   applied exactly once, in order.
//! - **A reactor's commands commit before its checkpoint.** A crash repeats a batch's commands
//!   rather than losing them, so each must be idempotent: its command id derived from the events
//!   that caused it (the workflow orchestrator, the cost-outlier detector).
//! - **Read models are never silently defaulted.** A stored column that does not decode into its
//!   domain value fails the batch with a [`RowError`] naming the table and the row.

use std::sync::Arc;

use devart_commands::{CommandContext, CommandError, Commands, Recorded};
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

// Read models: each is one line in `all`.
pub mod agents;
pub mod analytics;
pub mod claims;
pub mod embeddings;
pub mod knowledge;
pub mod services;
pub mod tasks;
pub mod users;
pub mod workflows;

// Reactors: each is one line in `reactors`.
pub mod alerts;
pub mod orchestrator;
pub mod outliers;
pub mod quarantine;

// What feeds them, and what they announce.
pub mod announce;
pub mod rebuild;
pub mod rows;
pub mod status;
pub mod worker;

/// Every read model devart keeps: what `devart migrate` gives a consumer, `projections rebuild
/// --all` rebuilds and `devart replay` replays.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(tasks::TasksProjection),
        Arc::new(agents::AgentsProjection),
        Arc::new(workflows::WorkflowsProjection),
        Arc::new(services::ServicesProjection),
        Arc::new(analytics::AnalyticsProjection),
        Arc::new(users::UsersProjection),
        Arc::new(claims::ClaimPausesProjection),
        Arc::new(knowledge::KnowledgeProjection),
    ]
}

/// The read models that need an embedding provider (the knowledge base's vectors,
/// [`embeddings::EmbeddingsProjection`]): run, rebuilt and listed beside [`all`] where a provider
/// is configured, and left at their checkpoint where none is.
pub fn embedded(provider: Arc<dyn devart_embed::Embeddings>) -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(embeddings::EmbeddingsProjection::new(provider))]
}

/// Every reactor devart runs, built from what they act through.
pub fn reactors(with: &ReactorParts) -> Vec<Arc<dyn Reactor>> {
    vec![
        Arc::new(orchestrator::Orchestrator::new(with.commands.clone())),
        Arc::new(outliers::OutlierDetector::new(with.commands.clone())),
        Arc::new(alerts::Alerts::new(with.alert_channels.clone())),
        Arc::new(quarantine::Quarantine::new(with.commands.clone())),
    ]
}

/// A command `reactor` issues because of `event`: in its correlation, caused by it, with an id
/// derived from the event, the reactor and `subject` (what the command is about), so that reacting
/// to the same event again is recognised as the same command.
pub(crate) fn caused_by(reactor: &'static str, event: &Recorded, subject: Uuid) -> CommandContext {
    let name = format!("{reactor}\u{0}{subject}");
    CommandContext {
        command_id: Uuid::new_v5(&event.meta.event_id, name.as_bytes()),
        actor: devart_domain::Actor::system(reactor),
        correlation_id: event.meta.correlation_id,
        causation_id: Some(event.meta.event_id),
    }
}

/// What reactors are built from.
#[derive(Clone)]
pub struct ReactorParts {
    /// The command layer, which reactors that cause events go through.
    pub commands: Commands,
    /// The channels budget alerts are recorded for; none records nothing but keeps the checkpoint
    /// up, so that a channel configured later starts from then.
    pub alert_channels: Vec<alerts::Channel>,
}

/// The read model named `name`.
pub fn by_name(name: &str) -> Option<Arc<dyn Projection>> {
    all().into_iter().find(|p| p.name() == name)
}

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
    /// Its name in `projection_checkpoints`, `projections status`, consumer and subject names.
    fn name(&self) -> &'static str;
    /// The tables it owns; a rebuild re-creates each aside and swaps it in.
    fn tables(&self) -> &'static [&'static str];
    /// The most events one transaction applies (the worker splits what it is delivered, a rebuild
    /// what it reads): a read model whose batches are slow keeps them short.
    fn batch_max(&self) -> usize {
        worker::BATCH_MAX
    }
    /// Applies `events` (consecutive positions, in order) to `target`, in `conn`'s transaction;
    /// returns the changed rows as JSON, for live subscribers.
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: Target,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, ApplyError>>;
}

/// A consumer of the global order that keeps no read model and acts on what happened.
pub trait Reactor: Send + Sync + 'static {
    /// Its name in `projection_checkpoints`, `projections status` and consumer names.
    fn name(&self) -> &'static str;
    /// Reacts to `events` (consecutive positions, in order). What it writes through `conn` (its
    /// outbox) commits with its checkpoint; commands it issues through `Commands` commit before
    /// it, so they must be idempotent: a batch after a crash is reacted to again.
    fn react<'a>(&'a self, conn: &'a mut PgConnection, events: &'a [Recorded])
        -> BoxFuture<'a, Result<(), ApplyError>>;
}

/// Why a batch was not applied. Nothing of it committed; the worker tries it again.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Row(#[from] RowError),
    #[error("command: {0}")]
    Command(#[from] CommandError),
    #[error("encoding a row: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("embedding: {0}")]
    Embed(#[from] devart_embed::EmbedError),
}

/// A stored read-model row with a column that does not hold a value of its kind: the read fails
/// rather than guess. Read models hold no secrets, so the row's id and the column may be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table {table}, row {row}: column {column}: {problem}")]
pub struct RowError {
    pub table: String,
    /// The row's key.
    pub row: String,
    pub column: String,
    pub problem: String,
}

/// A column of a row that does not decode; [`RowError`] once the table and row are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnError {
    pub column: &'static str,
    pub problem: String,
}

impl ColumnError {
    pub fn new(column: &'static str, problem: impl Into<String>) -> ColumnError {
        ColumnError { column, problem: problem.into() }
    }

    /// Names the table and the row.
    pub fn in_row(self, table: &str, row: impl std::fmt::Display) -> RowError {
        RowError {
            table: table.to_owned(),
            row: row.to_string(),
            column: self.column.to_owned(),
            problem: self.problem,
        }
    }
}

/// The advisory-lock key that serializes a consumer's live batches with each other (one worker
/// per name applies at a time, whatever runs how many) and with a rebuild's swap.
pub(crate) fn lock_key(name: &str) -> i64 {
    // FNV-1a: stable across builds and processes.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    hash as i64
}
