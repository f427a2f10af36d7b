//! The agent's events on the wire.

use devart_domain::agent::AgentEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::service::Amount;
use super::Wire;

/// `keyId` is the public half of the agent's API key; the secret is never in an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRegistered {
    pub agent_id: Uuid,
    pub name: String,
    pub capabilities: Vec<String>,
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentKeyRotated {
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentActivated {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDeactivated {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentQuarantined {
    pub failures: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentDailySpendingCapSet {
    pub daily_cap: Option<Amount>,
}

impl From<AgentEvent> for Wire {
    fn from(event: AgentEvent) -> Wire {
        match event {
            AgentEvent::Registered { id, name, capabilities, key_id } => {
                AgentRegistered { agent_id: id, name, capabilities, key_id }.into()
            }
            AgentEvent::KeyRotated { key_id } => AgentKeyRotated { key_id }.into(),
            AgentEvent::Activated => AgentActivated {}.into(),
            AgentEvent::Deactivated => AgentDeactivated {}.into(),
            AgentEvent::Quarantined { failures, reason } => AgentQuarantined { failures, reason }.into(),
            AgentEvent::DailySpendingCapSet { daily_cap } => {
                AgentDailySpendingCapSet { daily_cap: daily_cap.map(Amount) }.into()
            }
        }
    }
}

impl From<AgentRegistered> for AgentEvent {
    fn from(w: AgentRegistered) -> Self {
        AgentEvent::Registered { id: w.agent_id, name: w.name, capabilities: w.capabilities, key_id: w.key_id }
    }
}

impl From<AgentKeyRotated> for AgentEvent {
    fn from(w: AgentKeyRotated) -> Self {
        AgentEvent::KeyRotated { key_id: w.key_id }
    }
}

impl From<AgentActivated> for AgentEvent {
    fn from(_: AgentActivated) -> Self {
        AgentEvent::Activated
    }
}

impl From<AgentQuarantined> for AgentEvent {
    fn from(w: AgentQuarantined) -> Self {
        AgentEvent::Quarantined { failures: w.failures, reason: w.reason }
    }
}

impl From<AgentDeactivated> for AgentEvent {
    fn from(_: AgentDeactivated) -> Self {
        AgentEvent::Deactivated
    }
}

impl From<AgentDailySpendingCapSet> for AgentEvent {
    fn from(w: AgentDailySpendingCapSet) -> Self {
        AgentEvent::DailySpendingCapSet { daily_cap: w.daily_cap.map(|a| a.0) }
    }
}
