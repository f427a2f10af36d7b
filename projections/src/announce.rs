//! What read models announce: after a batch commits, its worker publishes each row the batch
//! changed, one core-NATS message a row, as JSON on `{prefix}.v1.readmodel.<name>`. Live
//! subscriptions are fed from these, so a subscriber learns of a change without reading the
//! database, and only once the change is there to be read.
//!
//! Every read model announces in the same way: [`Projection::apply`] returns the rows that changed
//! and the worker publishes them ([`publish`]). What a read model announces is typed by its
//! [`Announced`] (each module's `ANNOUNCED`): its name and its row, so that a listener names the
//! read model and gets its rows, not a subject and a guess at their type. Most announce their
//! rows; analytics announces the facts of the tasks whose cost-outlier flag was raised or
//! acknowledged.
//!
//! An announcement is a hint, not a record: core NATS drops it when nobody listens or NATS is
//! away. The read model itself stays the truth.
//!
//! [`Projection::apply`]: crate::Projection::apply

use std::marker::PhantomData;

use devart_commands::bus::BusNames;
use devart_commands::Bus;
use serde::de::DeserializeOwned;

/// The announcements of one read model: its name, and the rows it announces.
pub struct Announced<R> {
    name: &'static str,
    row: PhantomData<fn() -> R>,
}

impl<R> Announced<R> {
    pub const fn new(name: &'static str) -> Announced<R> {
        Announced { name, row: PhantomData }
    }

    /// The read model's name, as [`crate::Projection::name`] has it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The subject its announcements are published on.
    pub fn subject(&self, names: &BusNames) -> String {
        names.readmodel(self.name)
    }
}

impl<R: DeserializeOwned> Announced<R> {
    /// One announced row.
    pub fn decode(&self, payload: &[u8]) -> Result<R, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

impl<R> Clone for Announced<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Announced<R> {}

/// Publishes the rows read model `name` changed, once their batch committed. Never waits long for
/// NATS: an announcement is a hint (see the module's doc).
pub(crate) async fn publish(bus: &Bus, name: &str, rows: Vec<serde_json::Value>) -> Result<(), serde_json::Error> {
    let subject = bus.names.readmodel(name);
    for row in rows {
        bus.notify(subject.clone(), serde_json::to_vec(&row)?.into()).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{agents, all, analytics, claims, knowledge, services, tasks, users, workflows};

    #[test]
    fn each_announcement_names_a_registered_read_model() {
        let names = [
            tasks::ANNOUNCED.name(),
            agents::ANNOUNCED.name(),
            users::ANNOUNCED.name(),
            services::ANNOUNCED.name(),
            workflows::ANNOUNCED.name(),
            analytics::ANNOUNCED.name(),
            claims::ANNOUNCED.name(),
            knowledge::ANNOUNCED.name(),
        ];
        let registered: Vec<&str> = all().iter().map(|p| p.name()).collect();
        for name in names {
            assert!(registered.contains(&name), "`{name}` announces but is no read model");
        }
        assert_eq!(registered.len(), names.len(), "a read model that announces nothing has no ANNOUNCED");
    }
}
