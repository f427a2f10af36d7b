//! People: accounts, password sign-in and roles, and the security log of refused attempts.
//!
//! A user's password is stored only as an argon2id hash in `user_credentials`, written in the same
//! transaction as the user's events but never part of them. The row also holds the user's current
//! role and activation, so a token check reads one row by primary key and a changed role or a
//! deactivation takes effect on the next request.

use devart_domain::user::{Email, Password, User, UserCommand, UserEvent, UserRole, UserState};
use devart_domain::{DomainError, Event};
use futures::FutureExt;
use sqlx::PgPool;
use uuid::Uuid;

use crate::entry::Commands;
use crate::handler::{Alongside, CommandError};
use crate::hashing::{self, HashError};
use crate::store::{CommandContext, Folded, StoreError, Stored};

impl Stored for User {
    fn wrap(event: UserEvent) -> Event {
        Event::User(event)
    }
    fn unwrap(event: &Event) -> Option<&UserEvent> {
        match event {
            Event::User(e) => Some(e),
            _ => None,
        }
    }
}

/// A user as their credentials row says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: Uuid,
    pub email: String,
    pub role: UserRole,
    pub active: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Unknown address or wrong password: the two are not told apart.
    #[error("invalid email or password")]
    Invalid,
    /// The password was right, but the user is deactivated.
    #[error("the user is deactivated")]
    Deactivated,
    /// The credentials could not be checked (the database or hashing failed; the cause is
    /// logged): no verdict, try again.
    #[error("sign-in is unavailable; try again")]
    Unavailable,
}

/// What the security log records: attempts devart refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A sign-in with an unknown address, a wrong password, or as a deactivated user.
    LoginFailed,
    /// An agent's API key that is malformed, unknown, wrong or deactivated.
    KeyRefused,
    /// A bearer token that is malformed, expired, badly signed, or names a deactivated user.
    TokenRefused,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::LoginFailed => "LOGIN_FAILED",
            Refusal::KeyRefused => "KEY_REFUSED",
            Refusal::TokenRefused => "TOKEN_REFUSED",
        }
    }
}

/// Records a refused attempt. `subject` names who was claimed (an address, a key's public id),
/// never a secret. A failure to record is logged, not returned: the refusal stands either way.
pub async fn record_refusal(pool: &PgPool, kind: Refusal, subject: &str, reason: &str) {
    let subject: String = subject.chars().filter(|c| !c.is_control()).take(254).collect();
    let result = sqlx::query("insert into security_log (kind, subject, reason) values ($1, $2, $3)")
        .bind(kind.as_str())
        .bind(&subject)
        .bind(reason)
        .execute(pool)
        .await;
    if let Err(error) = result {
        tracing::warn!(kind = kind.as_str(), %error, "security log: cannot record a refusal");
    }
}

/// Hashes a password with argon2id on the hashing pool.
async fn hash(password: &Password) -> Result<String, StoreError> {
    Ok(hashing::hash(password.expose().to_owned()).await?)
}

/// Checks `password` against a PHC hash on the hashing pool. With no hash, checks against a fixed
/// one, so an unknown address costs the same time as a wrong password.
async fn verify(password: &str, phc: Option<String>) -> Result<bool, HashError> {
    static DECOY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    let known = phc.is_some();
    let phc = match phc {
        Some(phc) => phc,
        None => DECOY.get_or_try_init(|| hashing::hash("decoy".into())).await?.clone(),
    };
    let matches = hashing::verify(password.to_owned(), phc).await?;
    Ok(known && matches)
}

/// Runs `sql` (`$1` the user's id, `$2` a text value) beside the user's events.
fn beside(sql: &'static str, id: Uuid, value: String) -> Box<Alongside<User>> {
    Box::new(move |conn, _| {
        let value = value.clone();
        async move { sqlx::query(sql).bind(id).bind(value).execute(conn).await.map(drop) }.boxed()
    })
}

/// A second address taken by a concurrent creation surfaces as the unique index's violation.
fn taken(error: CommandError, email: &Email) -> CommandError {
    match &error {
        CommandError::Store(StoreError::Db(sqlx::Error::Database(db))) if db.is_unique_violation() => {
            DomainError::Conflict(format!("a user with email {} already exists", email.as_str())).into()
        }
        _ => error,
    }
}

/// People's commands, and their accounts as they stand: `commands.users()`.
#[derive(Clone, Copy)]
pub struct Users<'a> {
    commands: &'a Commands,
}

impl Commands {
    /// People's commands: creating users, their roles, activation and passwords; signing in; and
    /// their accounts as they stand.
    pub fn users(&self) -> Users<'_> {
        Users { commands: self }
    }
}

impl Users<'_> {
    /// Creates a user who signs in with `email` and `password`.
    pub async fn create(
        self,
        email: Email,
        role: UserRole,
        password: &Password,
        context: &CommandContext,
    ) -> Result<Folded<UserState>, CommandError> {
        if self.account_by_email(email.as_str()).await?.is_some() {
            return Err(DomainError::Conflict(format!("a user with email {} already exists", email.as_str())).into());
        }
        let id = Uuid::now_v7();
        let password_hash = hash(password).await?;
        let (address, role_name) = (email.as_str().to_owned(), role.as_str());
        let alongside: Box<Alongside<User>> = Box::new(move |conn, _| {
            let (address, password_hash) = (address.clone(), password_hash.clone());
            async move {
                sqlx::query(
                    "insert into user_credentials (user_id, email, password_hash, role) values ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(address)
                .bind(password_hash)
                .bind(role_name)
                .execute(conn)
                .await
                .map(drop)
            }
            .boxed()
        });
        let command = UserCommand::Create { id, email: email.clone(), role };
        self.commands
            .execute_with::<User>(id, command, context, None, Some(&*alongside))
            .await
            .map_err(|e| taken(e, &email))
    }

    /// Gives a user another role; their tokens carry it from their next request.
    pub async fn change_role(
        self,
        id: Uuid,
        role: UserRole,
        context: &CommandContext,
    ) -> Result<Folded<UserState>, CommandError> {
        let alongside = beside(
            "update user_credentials set role = $2, updated_at = now() where user_id = $1",
            id,
            role.as_str().into(),
        );
        self.commands.execute_with::<User>(id, UserCommand::ChangeRole(role), context, None, Some(&*alongside)).await
    }

    /// Deactivates or reactivates a user; a deactivated user's tokens and sign-ins are refused.
    /// `actor` is the user asking, if a person is: nobody deactivates themselves.
    pub async fn set_active(
        self,
        id: Uuid,
        active: bool,
        actor: Option<Uuid>,
        context: &CommandContext,
    ) -> Result<Folded<UserState>, CommandError> {
        let alongside = beside(
            "update user_credentials set active = $2::boolean, updated_at = now() where user_id = $1",
            id,
            active.to_string(),
        );
        self.commands
            .execute_with::<User>(id, UserCommand::SetActive { active, actor }, context, None, Some(&*alongside))
            .await
    }

    /// Replaces a user's password once their current one checks out.
    pub async fn change_password(
        self,
        id: Uuid,
        current: &str,
        new: &Password,
        context: &CommandContext,
    ) -> Result<Folded<UserState>, CommandError> {
        let stored: Option<String> =
            sqlx::query_scalar("select password_hash from user_credentials where user_id = $1")
                .bind(id)
                .fetch_optional(self.commands.store().pool())
                .await?;
        if !verify(current, stored).await.map_err(StoreError::from)? {
            return Err(DomainError::Forbidden("the current password is not right".into()).into());
        }
        let alongside = beside(
            "update user_credentials set password_hash = $2, updated_at = now() where user_id = $1",
            id,
            hash(new).await?,
        );
        self.commands.execute_with::<User>(id, UserCommand::ChangePassword, context, None, Some(&*alongside)).await
    }

    /// Gives a user a new password without their current one (an admin's reset): the way back
    /// for a person who lost theirs, and for people of an imported instance, whose passwords do
    /// not travel. Recorded as a `PasswordChanged` by the admin who reset it.
    pub async fn reset_password(
        self,
        id: Uuid,
        new: &Password,
        context: &CommandContext,
    ) -> Result<Folded<UserState>, CommandError> {
        let alongside = beside(
            "update user_credentials set password_hash = $2, updated_at = now() where user_id = $1",
            id,
            hash(new).await?,
        );
        self.commands.execute_with::<User>(id, UserCommand::ChangePassword, context, None, Some(&*alongside)).await
    }

    /// Checks a sign-in. Every refusal is recorded in the security log.
    pub async fn login(self, email: &str, password: &str) -> Result<Account, LoginError> {
        let pool = self.commands.store().pool();
        let address = email.trim().to_lowercase();
        let row: Option<(Uuid, String, String, String, bool)> =
            sqlx::query_as("select user_id, email, password_hash, role, active from user_credentials where email = $1")
                .bind(&address)
                .fetch_optional(pool)
                .await
                .map_err(|error| {
                    tracing::error!(%error, "login: cannot read credentials");
                    LoginError::Unavailable
                })?;
        let mut unreadable = false;
        let (phc, found) = match row {
            Some((id, email, phc, role, active)) => match role_of(id, &role) {
                Ok(role) => (Some(phc), Some(Account { id, email, role, active })),
                // An account whose role cannot be read signs in as nobody: no role is granted
                // that nobody gave. A decoy is still checked, so the time taken tells nothing.
                Err(error) => {
                    tracing::error!(%error, "login: refused");
                    unreadable = true;
                    (None, None)
                }
            },
            None => (None, None),
        };
        let verified = verify(password, phc).await.map_err(|error| {
            tracing::error!(%error, "login: cannot check a password");
            LoginError::Unavailable
        })?;
        let refusal = match &found {
            None if unreadable => Some(("unreadable account", LoginError::Invalid)),
            None => Some(("unknown email", LoginError::Invalid)),
            Some(_) if !verified => Some(("wrong password", LoginError::Invalid)),
            Some(account) if !account.active => Some(("user deactivated", LoginError::Deactivated)),
            Some(_) => None,
        };
        match (refusal, found) {
            (Some((reason, error)), _) => {
                record_refusal(pool, Refusal::LoginFailed, &address, reason).await;
                Err(error)
            }
            (None, Some(account)) => Ok(account),
            (None, None) => unreachable!("an unknown address is always refused"),
        }
    }

    /// A user's account as it stands now, by id.
    pub async fn account(self, id: Uuid) -> Result<Option<Account>, StoreError> {
        let row: Option<(Uuid, String, String, bool)> =
            sqlx::query_as("select user_id, email, role, active from user_credentials where user_id = $1")
                .bind(id)
                .fetch_optional(self.commands.store().pool())
                .await?;
        row.map(|(id, email, role, active)| Ok(Account { id, email, role: role_of(id, &role)?, active })).transpose()
    }

    async fn account_by_email(self, email: &str) -> Result<Option<Uuid>, StoreError> {
        Ok(sqlx::query_scalar("select user_id from user_credentials where email = $1")
            .bind(email)
            .fetch_optional(self.commands.store().pool())
            .await?)
    }
}

/// Roles in `user_credentials` are checked by the table; anything else is an unreadable account,
/// not the least role: reading it as one would hand out or take away rights nobody changed.
fn role_of(id: Uuid, role: &str) -> Result<UserRole, StoreError> {
    UserRole::parse(role).map_err(|_| StoreError::Undecodable {
        table: "user_credentials",
        key: id.to_string(),
        message: format!("role `{role}` is none of viewer, supervisor, admin"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_role_that_is_none_of_the_roles_is_an_error() {
        assert_eq!(role_of(Uuid::nil(), "supervisor").unwrap(), UserRole::Supervisor);
        let error = role_of(Uuid::nil(), "Admin").unwrap_err().to_string();
        assert_eq!(
            error,
            "undecodable user_credentials row 00000000-0000-0000-0000-000000000000: role `Admin` is none of viewer, \
             supervisor, admin"
        );
    }

    #[tokio::test]
    async fn a_password_verifies_against_its_hash_only() {
        let password = Password::parse("correct horse battery").unwrap();
        let phc = hash(&password).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", Some(phc.clone())).await.unwrap());
        assert!(!verify("correct horse battery!", Some(phc)).await.unwrap());
        assert!(!verify("correct horse battery", None).await.unwrap(), "the decoy never matches");
    }
}
