//! The user's events on the wire.

use devart_domain::user::{UserEvent, UserRole};
use devart_domain::DomainError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Wire;

/// Roles are `viewer`, `supervisor` or `admin`. The password's hash is never in an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserCreated {
    pub user_id: Uuid,
    pub email: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRoleChanged {
    pub role: String,
    pub previous: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDeactivated {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserReactivated {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserPasswordChanged {}

impl From<UserEvent> for Wire {
    fn from(event: UserEvent) -> Wire {
        match event {
            UserEvent::Created { id, email, role } => {
                UserCreated { user_id: id, email, role: role.as_str().to_owned() }.into()
            }
            UserEvent::RoleChanged { role, previous } => {
                UserRoleChanged { role: role.as_str().to_owned(), previous: previous.as_str().to_owned() }.into()
            }
            UserEvent::Deactivated => UserDeactivated {}.into(),
            UserEvent::Reactivated => UserReactivated {}.into(),
            UserEvent::PasswordChanged => UserPasswordChanged {}.into(),
        }
    }
}

/// Roles on the wire are only ever written from [`UserRole::as_str`]; any other text is a damaged
/// payload, and reading it as some role would hand out (or take away) rights nobody granted.
fn role(text: &str) -> Result<UserRole, DomainError> {
    UserRole::parse(text).map_err(|_| DomainError::invalid("role", format!("`{text}` is not a role")))
}

impl TryFrom<UserCreated> for UserEvent {
    type Error = DomainError;
    fn try_from(w: UserCreated) -> Result<Self, DomainError> {
        Ok(UserEvent::Created { id: w.user_id, email: w.email, role: role(&w.role)? })
    }
}

impl TryFrom<UserRoleChanged> for UserEvent {
    type Error = DomainError;
    fn try_from(w: UserRoleChanged) -> Result<Self, DomainError> {
        Ok(UserEvent::RoleChanged { role: role(&w.role)?, previous: role(&w.previous)? })
    }
}

impl From<UserDeactivated> for UserEvent {
    fn from(_: UserDeactivated) -> Self {
        UserEvent::Deactivated
    }
}

impl From<UserReactivated> for UserEvent {
    fn from(_: UserReactivated) -> Self {
        UserEvent::Reactivated
    }
}

impl From<UserPasswordChanged> for UserEvent {
    fn from(_: UserPasswordChanged) -> Self {
        UserEvent::PasswordChanged
    }
}
