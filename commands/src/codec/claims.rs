//! The kill switch's events on the wire.

use devart_domain::claims::{ClaimsEvent, Scope as DomainScope};
use devart_domain::task::Capability;
use devart_domain::DomainError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Wire;

/// What a pause covers: `"all"`, `{"capability": "rust"}` or `{"workflow": "<id>"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    All,
    Capability(String),
    Workflow(Uuid),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimsPaused {
    pub scope: Scope,
    pub reason: String,
    /// Work under way goes on (true) or is stopped at its next heartbeat (false).
    pub drain: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimsResumed {
    pub scope: Scope,
}

impl From<DomainScope> for Scope {
    fn from(scope: DomainScope) -> Scope {
        match scope {
            DomainScope::All => Scope::All,
            DomainScope::Capability(c) => Scope::Capability(c.as_str().to_owned()),
            DomainScope::Workflow(w) => Scope::Workflow(w),
        }
    }
}

impl TryFrom<Scope> for DomainScope {
    type Error = DomainError;
    fn try_from(scope: Scope) -> Result<DomainScope, DomainError> {
        Ok(match scope {
            Scope::All => DomainScope::All,
            Scope::Capability(c) => DomainScope::Capability(Capability::parse(&c)?),
            Scope::Workflow(w) => DomainScope::Workflow(w),
        })
    }
}

impl From<ClaimsEvent> for Wire {
    fn from(event: ClaimsEvent) -> Wire {
        match event {
            ClaimsEvent::Paused { scope, reason, drain } => ClaimsPaused { scope: scope.into(), reason, drain }.into(),
            ClaimsEvent::Resumed { scope } => ClaimsResumed { scope: scope.into() }.into(),
        }
    }
}

impl TryFrom<ClaimsPaused> for ClaimsEvent {
    type Error = DomainError;
    fn try_from(w: ClaimsPaused) -> Result<Self, DomainError> {
        Ok(ClaimsEvent::Paused { scope: w.scope.try_into()?, reason: w.reason, drain: w.drain })
    }
}

impl TryFrom<ClaimsResumed> for ClaimsEvent {
    type Error = DomainError;
    fn try_from(w: ClaimsResumed) -> Result<Self, DomainError> {
        Ok(ClaimsEvent::Resumed { scope: w.scope.try_into()? })
    }
}
