//! The user aggregate: a person who signs in with an email and a password and acts with a role.
//!
//! The password's hash is not part of the aggregate: like an agent's key, it is written beside the
//! events by the write side and never travels in events, the audit trail or the bus.

use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainError};

/// What a person may do. Ordered: each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum UserRole {
    /// Reads everything a person may read, changes nothing.
    #[default]
    Viewer,
    /// Runs the work: tasks, agents' activation, budgets, settings.
    Supervisor,
    /// Everything, including people.
    Admin,
}

parsed_from!(UserRole, String, DomainError, |v| UserRole::parse(&v));

impl UserRole {
    pub const ALL: [UserRole; 3] = [UserRole::Viewer, UserRole::Supervisor, UserRole::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Viewer => "viewer",
            UserRole::Supervisor => "supervisor",
            UserRole::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Result<UserRole, DomainError> {
        UserRole::ALL
            .into_iter()
            .find(|r| r.as_str() == value)
            .ok_or_else(|| DomainError::invalid("role", "must be viewer, supervisor or admin"))
    }
}

/// A sign-in address: trimmed, lower-cased, one `@` with text on both sides, at most 254
/// characters, no spaces or control characters. Deliverability is not this type's business.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Email(String);

parsed_from!(Email, String, DomainError, |v| Email::parse(&v));

impl Email {
    pub const LEN_MAX: usize = 254;

    pub fn parse(value: &str) -> Result<Email, DomainError> {
        let value = value.trim().to_lowercase();
        let well_formed = value.chars().count() <= Self::LEN_MAX
            && !value.chars().any(|c| c.is_whitespace() || c.is_control())
            && matches!(value.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
        if !well_formed {
            return Err(DomainError::invalid("email", "must be an address like name@example.org"));
        }
        Ok(Email(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password as chosen: 12 to 1024 characters. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub const LEN_MIN: usize = 12;
    pub const LEN_MAX: usize = 1024;

    pub fn parse(value: &str) -> Result<Password, DomainError> {
        let length = value.chars().count();
        if !(Self::LEN_MIN..=Self::LEN_MAX).contains(&length) {
            return Err(DomainError::invalid(
                "password",
                format!("must be {} to {} characters", Self::LEN_MIN, Self::LEN_MAX),
            ));
        }
        Ok(Password(value.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(…)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserStatus {
    #[default]
    Absent,
    Active,
    Inactive,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct UserState {
    pub id: Uuid,
    pub status: UserStatus,
    pub email: String,
    pub role: UserRole,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    Create {
        id: Uuid,
        email: Email,
        role: UserRole,
    },
    ChangeRole(UserRole),
    /// `actor` is the user issuing the command, when a person does: nobody deactivates themselves.
    SetActive {
        active: bool,
        actor: Option<Uuid>,
    },
    ChangePassword,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEvent {
    Created {
        id: Uuid,
        email: String,
        role: UserRole,
    },
    RoleChanged {
        role: UserRole,
        previous: UserRole,
    },
    Deactivated,
    Reactivated,
    /// The password changed; its hash is not recorded here.
    PasswordChanged,
}

impl UserEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            UserEvent::Created { .. } => "UserCreated",
            UserEvent::RoleChanged { .. } => "UserRoleChanged",
            UserEvent::Deactivated => "UserDeactivated",
            UserEvent::Reactivated => "UserReactivated",
            UserEvent::PasswordChanged => "UserPasswordChanged",
        }
    }
}

pub struct User;

impl Aggregate for User {
    const KIND: &'static str = "user";
    type State = UserState;
    type Command = UserCommand;
    type Event = UserEvent;

    fn decide(state: &UserState, command: &UserCommand) -> Result<Vec<UserEvent>, DomainError> {
        use UserCommand as C;
        match (state.status, command) {
            (UserStatus::Absent, C::Create { id, email, role }) => {
                Ok(vec![UserEvent::Created { id: *id, email: email.as_str().to_owned(), role: *role }])
            }
            (_, C::Create { id, .. }) => Err(DomainError::Conflict(format!("user {id} already exists"))),
            (UserStatus::Absent, _) => Err(DomainError::NotFound(format!("user {}", state.id))),
            (_, C::ChangeRole(role)) if *role == state.role => Ok(vec![]),
            (_, C::ChangeRole(role)) => Ok(vec![UserEvent::RoleChanged { role: *role, previous: state.role }]),
            (_, C::SetActive { actor: Some(actor), active: false }) if *actor == state.id => {
                Err(DomainError::Conflict("a user cannot deactivate themselves".into()))
            }
            (UserStatus::Active, C::SetActive { active: false, .. }) => Ok(vec![UserEvent::Deactivated]),
            (UserStatus::Inactive, C::SetActive { active: true, .. }) => Ok(vec![UserEvent::Reactivated]),
            (_, C::SetActive { .. }) => Ok(vec![]),
            (UserStatus::Inactive, C::ChangePassword) => {
                Err(DomainError::Conflict(format!("user {} is deactivated", state.id)))
            }
            (UserStatus::Active, C::ChangePassword) => Ok(vec![UserEvent::PasswordChanged]),
        }
    }

    fn evolve(mut state: UserState, event: &UserEvent) -> UserState {
        match event {
            UserEvent::Created { id, email, role } => {
                state = UserState { id: *id, status: UserStatus::Active, email: email.clone(), role: *role };
            }
            UserEvent::RoleChanged { role, .. } => state.role = *role,
            UserEvent::Deactivated => state.status = UserStatus::Inactive,
            UserEvent::Reactivated => state.status = UserStatus::Active,
            UserEvent::PasswordChanged => {}
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;

    fn created() -> UserEvent {
        UserEvent::Created { id: Uuid::from_u128(1), email: "ada@example.org".into(), role: UserRole::Viewer }
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse(" Ada@Example.ORG ").unwrap().as_str(), "ada@example.org");
        for bad in
            ["", "ada", "@example.org", "ada@", "a b@example.org", "a@b@c", &format!("{}@x.org", "a".repeat(260))]
        {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_have_a_length_and_stay_hidden() {
        assert!(Password::parse("short").is_err());
        let password = Password::parse("correct horse battery").unwrap();
        assert_eq!(format!("{password:?}"), "Password(…)");
    }

    #[test]
    fn a_user_is_created_once_and_changes_role_only_when_it_differs() {
        let create = UserCommand::Create {
            id: Uuid::from_u128(1),
            email: Email::parse("ada@example.org").unwrap(),
            role: UserRole::Viewer,
        };
        given::<User>([]).when(create.clone()).then([created()]);
        given::<User>([created()])
            .when(create)
            .then_error(DomainError::Conflict(format!("user {} already exists", Uuid::from_u128(1))));
        given::<User>([created()]).when(UserCommand::ChangeRole(UserRole::Viewer)).then([]);
        given::<User>([created()])
            .when(UserCommand::ChangeRole(UserRole::Admin))
            .then([UserEvent::RoleChanged { role: UserRole::Admin, previous: UserRole::Viewer }]);
    }

    #[test]
    fn deactivation_is_recorded_once_and_never_by_oneself() {
        let me = Uuid::from_u128(1);
        given::<User>([created()])
            .when(UserCommand::SetActive { active: false, actor: Some(Uuid::from_u128(2)) })
            .then([UserEvent::Deactivated]);
        given::<User>([created()])
            .when(UserCommand::SetActive { active: false, actor: Some(me) })
            .then_error(DomainError::Conflict("a user cannot deactivate themselves".into()));
        given::<User>([created(), UserEvent::Deactivated])
            .when(UserCommand::SetActive { active: false, actor: None })
            .then([]);
        given::<User>([created(), UserEvent::Deactivated])
            .when(UserCommand::ChangePassword)
            .then_error(DomainError::Conflict(format!("user {me} is deactivated")));
    }

    #[test]
    fn an_unknown_user_is_not_found() {
        given::<User>([])
            .when(UserCommand::ChangeRole(UserRole::Admin))
            .then_error(DomainError::NotFound(format!("user {}", Uuid::nil())));
    }
}
