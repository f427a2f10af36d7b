//! The live settings' events on the wire.

use devart_domain::settings::SettingsEvent;
use serde::{Deserialize, Serialize};

use super::Wire;

/// `value` and `previous` are JSON documents, as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingChanged {
    pub key: String,
    pub value: String,
    pub previous: String,
}

impl From<SettingsEvent> for Wire {
    fn from(event: SettingsEvent) -> Wire {
        match event {
            SettingsEvent::Changed { key, value, previous } => SettingChanged { key, value, previous }.into(),
        }
    }
}

impl From<SettingChanged> for SettingsEvent {
    fn from(w: SettingChanged) -> Self {
        SettingsEvent::Changed { key: w.key, value: w.value, previous: w.previous }
    }
}
