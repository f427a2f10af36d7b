//! Live settings on the write side: the settings stream, and keeping every process's copy current.
//!
//! Each process holds the settings in a [`LiveSettings`], which [`watch`] refreshes: it checks the
//! settings stream's version (one index lookup) every [`WATCH_INTERVAL`] and folds the stream again
//! when it moved, so a change is in effect everywhere within a second, without a restart and
//! without depending on the bus.
//!
//! A leaf: it knows the store and nothing else of this crate, so that [`crate::Commands`], which
//! holds the copy (and changes the settings through [`Commands::update_setting`]), may depend on it.
//!
//! [`Commands::update_setting`]: crate::Commands::update_setting

use std::sync::{Arc, RwLock};
use std::time::Duration;

use devart_domain::settings::{Settings, SettingsEvent, SettingsState, SETTINGS_ID};
use devart_domain::{Aggregate, Event, StreamId};
use tokio_util::sync::CancellationToken;

use crate::store::{fold, EventStore, StoreError, Stored};

pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

impl Stored for Settings {
    fn wrap(event: SettingsEvent) -> Event {
        Event::Settings(event)
    }
    fn unwrap(event: &Event) -> Option<&SettingsEvent> {
        match event {
            Event::Settings(e) => Some(e),
            _ => None,
        }
    }
}

/// This process's copy of the settings; cheap to clone and to read.
#[derive(Clone, Default)]
pub struct LiveSettings {
    inner: Arc<RwLock<(u64, Arc<SettingsState>)>>,
}

impl LiveSettings {
    /// The settings in effect now.
    pub fn current(&self) -> Arc<SettingsState> {
        self.inner.read().expect("settings lock").1.clone()
    }

    /// Reads the settings stream again if it moved past the version held; true if it did.
    pub async fn refresh(&self, store: &EventStore) -> Result<bool, StoreError> {
        let stream = StreamId::new(Settings::KIND, SETTINGS_ID);
        let version: Option<i64> = sqlx::query_scalar("select max(stream_version) from events where stream_id = $1")
            .bind(stream.as_str())
            .fetch_one(store.pool())
            .await?;
        let version = version.unwrap_or(0) as u64;
        if version <= self.inner.read().expect("settings lock").0 {
            return Ok(false);
        }
        let folded = fold::<Settings>(&store.read_stream(&stream, None).await?);
        self.set(folded.version, folded.state);
        Ok(true)
    }

    /// Takes the settings at `version`, unless a newer version is held already.
    pub(crate) fn set(&self, version: u64, state: SettingsState) {
        let mut inner = self.inner.write().expect("settings lock");
        if version > inner.0 {
            *inner = (version, Arc::new(state));
        }
    }
}

/// Keeps `settings` current until `shutdown`.
pub async fn watch(settings: LiveSettings, store: EventStore, shutdown: CancellationToken) {
    loop {
        if let Err(error) = settings.refresh(&store).await {
            tracing::warn!(%error, "settings: cannot refresh; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
    }
}
