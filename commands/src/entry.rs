//! [`Commands`], the write side's entry point: the [`Engine`] with this process's live settings.
//!
//! `Commands` carries only the engine-level verbs: loading and executing against any aggregate,
//! and the settings. The engine knows no aggregate; each aggregate module (`queue`, `agents`,
//! `budgets`, `users`, `workflows`) defines its own handle to that aggregate's commands, beside its
//! [`Stored`] implementation and the write-side tables it keeps, with the accessor that lends it
//! (`commands.tasks()`, `commands.agents()`, `commands.services()`, `commands.users()`,
//! `commands.workflows()`). This module knows none of them either: it depends on the engine and on
//! the settings (a leaf), whose copy it holds and whose one command, which updates that copy too,
//! is here.

use devart_domain::settings::{Key, Settings, SettingsCommand, SettingsState, SETTINGS_ID};
use uuid::Uuid;

use crate::bus::Bus;
use crate::handler::{Alongside, CommandError, Engine, Folded, Stored};
use crate::relay::Nudge;
use crate::settings::LiveSettings;
use crate::store::{CommandContext, EventStore, StoreError};

/// The write side's entry point: every change to devart goes through here.
#[derive(Clone)]
pub struct Commands {
    engine: Engine,
    /// The settings in effect, kept current by [`crate::settings::watch`].
    settings: LiveSettings,
}

impl Commands {
    pub fn new(store: EventStore, nudge: Nudge, bus: Option<Bus>) -> Commands {
        Commands { engine: Engine::new(store, nudge, bus), settings: LiveSettings::default() }
    }

    /// The engine the commands run through.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The settings in effect in this process.
    pub fn settings(&self) -> &LiveSettings {
        &self.settings
    }

    pub fn store(&self) -> &EventStore {
        self.engine.store()
    }

    /// Loads an aggregate's current state from its stream ([`Engine::load`]).
    pub async fn load<A: Stored>(&self, id: Uuid) -> Result<Folded<A::State>, StoreError> {
        self.engine.load::<A>(id).await
    }

    /// Decides `command` against aggregate `id` and appends the outcome ([`Engine::execute`]).
    pub async fn execute<A: Stored>(
        &self,
        id: Uuid,
        command: A::Command,
        context: &CommandContext,
        expected_version: Option<u64>,
    ) -> Result<Folded<A::State>, CommandError> {
        self.engine.execute::<A>(id, command, context, expected_version).await
    }

    /// [`Commands::execute`], with `alongside` in the append's transaction ([`Engine::execute_with`]).
    pub async fn execute_with<A: Stored>(
        &self,
        id: Uuid,
        command: A::Command,
        context: &CommandContext,
        expected_version: Option<u64>,
        alongside: Option<&Alongside<A>>,
    ) -> Result<Folded<A::State>, CommandError> {
        self.engine.execute_with::<A>(id, command, context, expected_version, alongside).await
    }

    /// Sets a setting; in effect in this process at once, in every other within a second.
    pub async fn update_setting(
        &self,
        key: Key,
        value: serde_json::Value,
        context: &CommandContext,
    ) -> Result<Folded<SettingsState>, CommandError> {
        let folded = self.execute::<Settings>(SETTINGS_ID, SettingsCommand::Set { key, value }, context, None).await?;
        self.settings.set(folded.version, folded.state.clone());
        Ok(folded)
    }

    /// The settings as stored, with the version they are at.
    pub async fn load_settings(&self) -> Result<Folded<SettingsState>, CommandError> {
        Ok(self.load::<Settings>(SETTINGS_ID).await?)
    }
}
