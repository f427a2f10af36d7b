//! devart's write side. Only this crate writes events.
//!
//! # Layout
//! - [`store`]: the Postgres event store: append with an expected version in one statement,
//!   idempotent by command id; read a stream; read the global order; sequence committed events.
//! - [`handler`]: [`Commands`], which loads, folds, decides (via `devart_domain`) and appends.
//! - [`history`]: time travel: aggregates as of a position or a moment; a stream's changes.
//! - [`portable`]: importing an exported history into an empty instance; restoring the write side.
//! - [`queue`]: the task queue beside the task events: claims, lease expiry, release.
//! - [`budgets`]: services and their budgets: snapshots beside the events, authorizations that
//!   reserve, charges that settle, fallbacks, the budget clock.
//! - [`hashing`]: argon2id hashing of passwords and keys on a bounded pool of its own.
//! - [`users`]: people: accounts, password sign-in, roles; the security log of refused attempts.
//! - [`settings`]: changing live settings, and every process's current copy of them.
//! - [`workflows`]: defining workflows, starting runs, creating stage tasks, and the
//!   orchestration that moves runs on as their tasks end.
//! - [`chain`]: the hash chain over the global order, and its verification.
//! - [`codec`]: the versioned wire types; postcard in the store, JSON on the bus and in the audit.
//! - [`relay`]: the sequencer and the JetStream publisher.
//! - [`bus`]: stream and subject names, CloudEvents headers, stream and consumer set-up.
//! - [`db`]: connecting, creating the database, migrations, generated secrets.

pub mod agents;
pub mod budgets;
pub mod bus;
pub mod chain;
pub mod codec;
pub mod db;
pub mod entry;
pub mod feed;
pub mod handler;
pub mod hashing;
pub mod history;
pub mod portable;
pub mod queue;
pub mod relay;
pub mod settings;
pub mod store;
pub mod users;
pub mod workflows;

pub use bus::{Bus, BusNames};
pub use entry::Commands;
pub use handler::{CommandError, Engine};
pub use relay::Nudge;
pub use store::{CommandContext, EventStore, Folded, Recorded, StoreError, Stored};
