//! devart's write side. Only this crate writes events.
//!
//! # Layout
//! - [`store`]: the Postgres event store: append with an expected version in one statement,
//!   idempotent by command id; read a stream; read the global order; sequence committed events.
//!   [`Stored`] is how an aggregate sits in it (its events inside `Event`, the rows it keeps
//!   beside them), [`Folded`] its state folded from a stream.
//! - [`handler`]: the engine, [`Engine`]: load, fold, decide, append; decide again on a concurrent
//!   writer; answer a retried command id; remember the state an append left a stream in. It knows
//!   no aggregate, only [`Stored`].
//! - [`entry`]: [`Commands`], the entry point: the engine with this process's live settings, and
//!   the engine-level verbs (load, execute, the settings). Each aggregate module defines its own
//!   handle to its commands, beside its [`Stored`] implementation and the write-side tables it
//!   keeps, and the accessor on [`Commands`] that lends it: call sites read
//!   `commands.tasks().claim(…)`, `commands.agents().register(…)`,
//!   `commands.services().authorize_usage(…)`, `commands.users().login(…)`,
//!   `commands.workflows().start(…)`.
//! - [`history`]: time travel: aggregates as of a position or a moment; a stream's changes.
//! - [`portable`]: importing an exported history into an empty instance; restoring the write side.
//! - [`queue`]: tasks ([`queue::Tasks`]): creating them, and the task queue beside their events:
//!   claims, lease expiry, release.
//! - [`agents`]: registering agents ([`agents::Agents`]), their API keys (hashed, beside their
//!   events), activation; verifying a presented key.
//! - [`budgets`]: services and their budgets ([`budgets::Services`]): snapshots beside the events,
//!   authorizations that reserve, charges that settle, fallbacks, the budget clock.
//! - [`spending`]: what each task has settled and reserved across services, beside its cap; the
//!   rows authorizations and charges naming a capped task lock and decide on.
//! - [`documents`]: the knowledge base's documents ([`documents::Documents`]).
//! - [`hashing`]: argon2id hashing of passwords and keys on a bounded pool of its own.
//! - [`users`]: people ([`users::Users`]): accounts, password sign-in, roles; the security log of
//!   refused attempts.
//! - [`settings`]: the settings stream and every process's current copy of it; a leaf that
//!   depends on the store alone ([`Commands::update_setting`] changes them).
//! - [`workflows`]: defining workflows, starting runs, creating stage tasks, and the
//!   orchestration that moves runs on as their tasks end ([`workflows::Workflows`]).
//! - [`chain`]: the hash chain over the global order, and its verification.
//! - [`codec`]: the versioned wire types; postcard in the store, JSON on the bus and in the audit.
//! - [`relay`]: the sequencer and the JetStream publisher.
//! - [`bus`]: stream and subject names, CloudEvents headers, stream and consumer set-up.
//! - [`db`]: connecting, creating the database, migrations, generated secrets.
//!
//! No module imports one that imports it back, and the engine names no aggregate:
//! `tests/layering.rs` reads the sources and fails otherwise.

pub mod agents;
pub mod budgets;
pub mod bus;
pub mod chain;
pub mod claims;
pub mod codec;
pub mod db;
pub mod documents;
pub mod entry;
pub mod feed;
pub mod handler;
pub mod hashing;
pub mod history;
pub mod portable;
pub mod queue;
pub mod relay;
pub mod settings;
pub mod spending;
pub mod store;
pub mod users;
pub mod workflows;

pub use bus::{Bus, BusNames};
pub use entry::Commands;
pub use handler::{CommandError, Engine};
pub use relay::Nudge;
pub use store::{CommandContext, EventStore, Folded, Recorded, StoreError, Stored};
