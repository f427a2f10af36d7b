//! The agent aggregate: a worker that registers, holds an API key, and can be switched off.

use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainError};
use crate::task::Capabilities;

/// An agent's display name: trimmed, 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct AgentName(String);

parsed_from!(AgentName, String, DomainError, |v| AgentName::parse(&v));

impl AgentName {
    pub const LEN_MAX: usize = 100;

    pub fn parse(value: &str) -> Result<AgentName, DomainError> {
        let value = value.trim();
        if value.is_empty() || value.chars().count() > Self::LEN_MAX || value.chars().any(char::is_control) {
            return Err(DomainError::invalid("name", format!("must be 1 to {} printable characters", Self::LEN_MAX)));
        }
        Ok(AgentName(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentStatus {
    #[default]
    Absent,
    Active,
    Inactive,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct AgentState {
    pub id: Uuid,
    pub status: AgentStatus,
    pub name: String,
    pub capabilities: Vec<String>,
    /// The public half of the current API key; the secret's hash is kept outside the events.
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCommand {
    /// `key_id` names the key the write side generated and hashed.
    Register {
        id: Uuid,
        name: AgentName,
        capabilities: Capabilities,
        key_id: String,
    },
    RotateKey {
        key_id: String,
    },
    SetActive(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    Registered { id: Uuid, name: String, capabilities: Vec<String>, key_id: String },
    KeyRotated { key_id: String },
    Activated,
    Deactivated,
}

impl AgentEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            AgentEvent::Registered { .. } => "AgentRegistered",
            AgentEvent::KeyRotated { .. } => "AgentKeyRotated",
            AgentEvent::Activated => "AgentActivated",
            AgentEvent::Deactivated => "AgentDeactivated",
        }
    }
}

pub struct Agent;

impl Aggregate for Agent {
    const KIND: &'static str = "agent";
    type State = AgentState;
    type Command = AgentCommand;
    type Event = AgentEvent;

    fn decide(state: &AgentState, command: &AgentCommand) -> Result<Vec<AgentEvent>, DomainError> {
        use AgentCommand as C;
        match (state.status, command) {
            (AgentStatus::Absent, C::Register { id, name, capabilities, key_id }) => Ok(vec![AgentEvent::Registered {
                id: *id,
                name: name.as_str().to_owned(),
                capabilities: capabilities.to_strings(),
                key_id: key_id.clone(),
            }]),
            (_, C::Register { id, .. }) => Err(DomainError::Conflict(format!("agent {id} already exists"))),
            (AgentStatus::Absent, _) => Err(DomainError::NotFound(format!("agent {}", state.id))),
            (_, C::RotateKey { key_id }) => Ok(vec![AgentEvent::KeyRotated { key_id: key_id.clone() }]),
            (AgentStatus::Active, C::SetActive(false)) => Ok(vec![AgentEvent::Deactivated]),
            (AgentStatus::Inactive, C::SetActive(true)) => Ok(vec![AgentEvent::Activated]),
            (_, C::SetActive(_)) => Ok(vec![]),
        }
    }

    fn evolve(mut state: AgentState, event: &AgentEvent) -> AgentState {
        match event {
            AgentEvent::Registered { id, name, capabilities, key_id } => {
                state = AgentState {
                    id: *id,
                    status: AgentStatus::Active,
                    name: name.clone(),
                    capabilities: capabilities.clone(),
                    key_id: key_id.clone(),
                };
            }
            AgentEvent::KeyRotated { key_id } => state.key_id = key_id.clone(),
            AgentEvent::Activated => state.status = AgentStatus::Active,
            AgentEvent::Deactivated => state.status = AgentStatus::Inactive,
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;

    fn registered() -> AgentEvent {
        AgentEvent::Registered {
            id: Uuid::from_u128(1),
            name: "builder".into(),
            capabilities: vec!["rust".into()],
            key_id: "k1".into(),
        }
    }

    #[test]
    fn registers_once() {
        let register = AgentCommand::Register {
            id: Uuid::from_u128(1),
            name: AgentName::parse(" builder ").unwrap(),
            capabilities: Capabilities::parse(&["rust"]).unwrap(),
            key_id: "k1".into(),
        };
        given::<Agent>([]).when(register.clone()).then([registered()]);
        given::<Agent>([registered()])
            .when(register)
            .then_error(DomainError::Conflict(format!("agent {} already exists", Uuid::from_u128(1))));
    }

    #[test]
    fn activation_only_records_changes() {
        given::<Agent>([registered()]).when(AgentCommand::SetActive(true)).then([]);
        given::<Agent>([registered()]).when(AgentCommand::SetActive(false)).then([AgentEvent::Deactivated]);
        given::<Agent>([registered(), AgentEvent::Deactivated])
            .when(AgentCommand::SetActive(true))
            .then([AgentEvent::Activated]);
    }

    #[test]
    fn an_unknown_agent_is_not_found() {
        given::<Agent>([])
            .when(AgentCommand::RotateKey { key_id: "k2".into() })
            .then_error(DomainError::NotFound(format!("agent {}", Uuid::nil())));
    }
}
