//! devart's write side. Only this crate writes events.
//!
//! # Layout
//! - [`store`]: the Postgres event store: append with an expected version in one statement,
//!   idempotent by command id; read a stream; read the global order; sequence committed events.
//! - [`handler`]: [`Commands`], which loads, folds, decides (via `devart_domain`) and appends.
//! - [`queue`]: the task queue beside the task events: claims, lease expiry, release.
//! - [`codec`]: the versioned wire types; postcard in the store, JSON on the bus and in the audit.
//! - [`relay`]: the sequencer and the JetStream publisher.
//! - [`bus`]: stream and subject names, CloudEvents headers, stream and consumer set-up.
//! - [`db`]: connecting, creating the database, migrations, generated secrets.

pub mod agents;
pub mod bus;
pub mod codec;
pub mod db;
pub mod feed;
pub mod handler;
pub mod queue;
pub mod relay;
pub mod store;

pub use bus::{Bus, BusNames};
pub use handler::{CommandError, Commands, Folded, Stored};
pub use relay::Nudge;
pub use store::{CommandContext, EventStore, Recorded, StoreError};
