//! The agent aggregate: a worker that registers, holds an API key, and can be switched off, by a
//! supervisor or by quarantine after failing attempt after attempt, and may have a daily cap on what
//! it spends.

use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainError};
use crate::money::Money;
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
    /// Why the agent was quarantined, while it is (cleared when it is activated again).
    pub quarantined: Option<String>,
    /// What it may settle and reserve in a day (UTC), across services; none: no cap of its own.
    #[serde(serialize_with = "crate::money::optional_decimal")]
    pub daily_spending_cap: Option<Money>,
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
    /// The agent failed `failures` attempts in a row: it is deactivated, with the reason kept.
    Quarantine {
        failures: u32,
        reason: String,
    },
    /// A supervisor caps what the agent may spend in a day, or lifts the cap (`None`).
    SetDailySpendingCap(Option<Money>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    Registered {
        id: Uuid,
        name: String,
        capabilities: Vec<String>,
        key_id: String,
    },
    KeyRotated {
        key_id: String,
    },
    Activated,
    Deactivated,
    /// Deactivated for failing `failures` attempts in a row; a supervisor activates it again.
    Quarantined {
        failures: u32,
        reason: String,
    },
    /// From now on, authorizations by the agent that would take what it settled today (UTC) plus
    /// what it holds reserved past `daily_cap` are refused; `None`: no cap of its own.
    DailySpendingCapSet {
        daily_cap: Option<Money>,
    },
}

impl AgentEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            AgentEvent::Registered { .. } => "AgentRegistered",
            AgentEvent::KeyRotated { .. } => "AgentKeyRotated",
            AgentEvent::Activated => "AgentActivated",
            AgentEvent::Deactivated => "AgentDeactivated",
            AgentEvent::Quarantined { .. } => "AgentQuarantined",
            AgentEvent::DailySpendingCapSet { .. } => "AgentDailySpendingCapSet",
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
            (AgentStatus::Active, C::Quarantine { failures, reason }) => {
                Ok(vec![AgentEvent::Quarantined { failures: *failures, reason: reason.clone() }])
            }
            // Switched off already (by a supervisor, or quarantined): nothing to add.
            (_, C::Quarantine { .. }) => Ok(vec![]),
            (_, C::SetDailySpendingCap(cap)) if *cap == state.daily_spending_cap => Ok(vec![]),
            (_, C::SetDailySpendingCap(cap)) => Ok(vec![AgentEvent::DailySpendingCapSet { daily_cap: *cap }]),
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
                    quarantined: None,
                    daily_spending_cap: None,
                };
            }
            AgentEvent::KeyRotated { key_id } => state.key_id = key_id.clone(),
            AgentEvent::Activated => {
                state.status = AgentStatus::Active;
                state.quarantined = None;
            }
            AgentEvent::Deactivated => state.status = AgentStatus::Inactive,
            AgentEvent::Quarantined { reason, .. } => {
                state.status = AgentStatus::Inactive;
                state.quarantined = Some(reason.clone());
            }
            AgentEvent::DailySpendingCapSet { daily_cap } => state.daily_spending_cap = *daily_cap,
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
    fn a_quarantine_deactivates_an_active_agent_once_and_an_activation_lifts_it() {
        let quarantine = AgentCommand::Quarantine { failures: 3, reason: "3 failed attempts in a row".into() };
        let quarantined = AgentEvent::Quarantined { failures: 3, reason: "3 failed attempts in a row".into() };
        given::<Agent>([registered()]).when(quarantine.clone()).then([quarantined.clone()]);
        given::<Agent>([registered(), quarantined.clone()]).when(quarantine.clone()).then([]);
        given::<Agent>([registered(), AgentEvent::Deactivated]).when(quarantine).then([]);
        let state = Agent::fold(&[registered(), quarantined.clone()]);
        assert_eq!(
            (state.status, state.quarantined.as_deref()),
            (AgentStatus::Inactive, Some("3 failed attempts in a row"))
        );
        let state = Agent::fold(&[registered(), quarantined, AgentEvent::Activated]);
        assert_eq!((state.status, state.quarantined), (AgentStatus::Active, None));
    }

    #[test]
    fn a_daily_cap_is_set_changed_and_lifted_and_the_same_cap_again_is_nothing() {
        let cap = Money::parse("dailyCap", "5.00").unwrap();
        let set = AgentEvent::DailySpendingCapSet { daily_cap: Some(cap) };
        given::<Agent>([registered()]).when(AgentCommand::SetDailySpendingCap(Some(cap))).then([set.clone()]);
        given::<Agent>([registered(), set.clone()]).when(AgentCommand::SetDailySpendingCap(Some(cap))).then([]);
        given::<Agent>([registered(), set.clone()])
            .when(AgentCommand::SetDailySpendingCap(None))
            .then([AgentEvent::DailySpendingCapSet { daily_cap: None }]);
        assert_eq!(Agent::fold(&[registered(), set]).daily_spending_cap, Some(cap));
    }

    #[test]
    fn an_unknown_agent_is_not_found() {
        given::<Agent>([])
            .when(AgentCommand::RotateKey { key_id: "k2".into() })
            .then_error(DomainError::NotFound(format!("agent {}", Uuid::nil())));
    }
}
