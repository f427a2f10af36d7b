//! People: signing in, accounts and roles (admin), and the security log of refused attempts.

use async_graphql::{Context, InputObject, Object, SimpleObject, Subscription, ID};
use base64::Engine;
use chrono::{DateTime, Utc};
use devart_domain::user::{Email, Password, UserState, UserStatus};
use devart_projections::rows::AggregateRows;
use devart_projections::users::{UserRow, UsersProjection, COLUMNS};
use devart_projections::{ColumnError, RowError};
use futures::{Stream, StreamExt};
use rand::RngCore;

use super::{
    caller, command_context, domain, from_row, from_rows, page_size, parse_id, read, require, services, RequestMeta,
};
use crate::auth::Role;
use crate::error::{error, gql, Code};

#[derive(Debug, Clone, SimpleObject)]
pub struct User {
    pub id: ID,
    pub email: String,
    pub role: Role,
    pub active: bool,
    /// The user's stream version.
    pub version: i64,
}

impl From<devart_commands::handler::Folded<UserState>> for User {
    fn from(folded: devart_commands::handler::Folded<UserState>) -> Self {
        let state = folded.state;
        User {
            id: ID(state.id.to_string()),
            email: state.email,
            role: Role::of(state.role),
            active: state.status == UserStatus::Active,
            version: folded.version as i64,
        }
    }
}

/// A user's row as the API shows it; a role that is none of ours is an error naming the row, never
/// a viewer made up.
impl TryFrom<UserRow> for User {
    type Error = RowError;

    fn try_from(row: UserRow) -> Result<User, RowError> {
        let role = Role::parse(&row.role).ok_or_else(|| {
            ColumnError::new("role", format!("`{}` is not a role", row.role)).in_row(UsersProjection::TABLE, row.id)
        })?;
        Ok(User { id: ID(row.id.to_string()), email: row.email, role, active: row.active, version: row.version })
    }
}

/// A signed-in user's bearer token.
#[derive(Debug, Clone, SimpleObject)]
pub struct Session {
    /// Send as `Authorization: Bearer <token>`. The user's current role and activation are
    /// checked on every request, so a change of role or a deactivation applies at once.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user: User,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct UserCreation {
    pub user: User,
    /// The generated password, shown this once, when none was given.
    pub password: Option<String>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct PasswordReset {
    pub user: User,
    /// The new password, shown this once.
    pub password: String,
}

/// A new random password (144 bits), and its text.
fn generated_password() -> async_graphql::Result<(Password, String)> {
    let mut bytes = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    Ok((domain(Password::parse(&text))?, text))
}

#[derive(Debug, InputObject)]
pub struct CreateUserInput {
    pub email: String,
    pub role: Role,
    /// 12 to 1024 characters; when omitted, one is generated and returned once.
    pub password: Option<String>,
}

/// An attempt devart refused.
#[derive(Debug, Clone, SimpleObject, sqlx::FromRow)]
pub struct SecurityEvent {
    pub at: DateTime<Utc>,
    /// `LOGIN_FAILED`, `KEY_REFUSED` or `TOKEN_REFUSED`.
    pub kind: String,
    /// The address, key id or user the attempt claimed to be; never a secret.
    pub subject: String,
    pub reason: String,
}

#[derive(Default)]
pub struct PeopleQuery;

#[Object]
impl PeopleQuery {
    /// Every user (admin); anyone else sees only themselves.
    async fn users(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<User>> {
        let caller = caller(ctx)?;
        if caller.agent.is_some() {
            return Err(error(Code::Forbidden, "agents do not see people"));
        }
        let rows: Vec<UserRow> = sqlx::query_as(&format!("select {COLUMNS} from users order by created_at, id"))
            .fetch_all(read(ctx).await?.conn())
            .await
            .map_err(gql)?;
        from_rows(rows)
    }

    /// Refused sign-ins, API keys and tokens, newest first (admin).
    async fn security_log(&self, ctx: &Context<'_>, first: Option<i32>) -> async_graphql::Result<Vec<SecurityEvent>> {
        require(ctx, Role::Admin)?;
        let limit = page_size(first)?;
        sqlx::query_as("select at, kind, subject, reason from security_log order by at desc, id desc limit $1")
            .bind(limit as i64)
            .fetch_all(read(ctx).await?.conn())
            .await
            .map_err(gql)
    }
}

#[derive(Default)]
pub struct PeopleMutation;

#[Object]
impl PeopleMutation {
    /// Signs in with an email and a password; open without a token. Failures are recorded in the
    /// security log and do not tell an unknown address from a wrong password.
    async fn login(&self, ctx: &Context<'_>, email: String, password: String) -> async_graphql::Result<Session> {
        let s = services(ctx);
        let address =
            ctx.data_opt::<RequestMeta>().and_then(|m| m.client).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        // The same check, limits and answers as `POST /session`.
        let account = crate::session::sign_in(s, address, &email, &password).await.map_err(|e| e.error())?;
        let ttl = crate::session::lifetime();
        let role = Role::of(account.role);
        let user = match s.commands.load::<devart_domain::user::User>(account.id).await {
            Ok(folded) => User::from(folded),
            Err(e) => return Err(gql(e)),
        };
        Ok(Session { token: s.signing_key.issue_for_user(account.id, role, ttl), expires_at: Utc::now() + ttl, user })
    }

    /// Creates a user (admin). Without a password, one is generated and returned once.
    async fn create_user(&self, ctx: &Context<'_>, input: CreateUserInput) -> async_graphql::Result<UserCreation> {
        let caller = require(ctx, Role::Admin)?;
        let email = domain(Email::parse(&input.email))?;
        let (password, generated) = match &input.password {
            Some(p) => (domain(Password::parse(p))?, None),
            None => {
                let (password, text) = generated_password()?;
                (password, Some(text))
            }
        };
        let context = command_context(ctx, &caller);
        let folded = services(ctx)
            .commands
            .users()
            .create(email, input.role.domain(), &password, &context)
            .await
            .map_err(gql)?;
        Ok(UserCreation { user: folded.into(), password: generated })
    }

    /// Gives a user another role (admin), in effect from their next request.
    async fn change_role(&self, ctx: &Context<'_>, user_id: ID, role: Role) -> async_graphql::Result<User> {
        let caller = require(ctx, Role::Admin)?;
        let id = parse_id("userId", &user_id)?;
        let context = command_context(ctx, &caller);
        Ok(services(ctx).commands.users().change_role(id, role.domain(), &context).await.map_err(gql)?.into())
    }

    /// Deactivates a user (admin): their tokens and sign-ins are refused from now on.
    async fn deactivate_user(&self, ctx: &Context<'_>, user_id: ID) -> async_graphql::Result<User> {
        let caller = require(ctx, Role::Admin)?;
        let id = parse_id("userId", &user_id)?;
        let context = command_context(ctx, &caller);
        Ok(services(ctx).commands.users().set_active(id, false, caller.user, &context).await.map_err(gql)?.into())
    }

    /// Reactivates a deactivated user (admin).
    async fn reactivate_user(&self, ctx: &Context<'_>, user_id: ID) -> async_graphql::Result<User> {
        let caller = require(ctx, Role::Admin)?;
        let id = parse_id("userId", &user_id)?;
        let context = command_context(ctx, &caller);
        Ok(services(ctx).commands.users().set_active(id, true, caller.user, &context).await.map_err(gql)?.into())
    }

    /// Gives a user a new, generated password (admin), returned this once: for a person who lost
    /// theirs, and for the people of an imported instance, whose passwords do not travel.
    async fn reset_password(&self, ctx: &Context<'_>, user_id: ID) -> async_graphql::Result<PasswordReset> {
        let caller = require(ctx, Role::Admin)?;
        let id = parse_id("userId", &user_id)?;
        let (password, text) = generated_password()?;
        let context = command_context(ctx, &caller);
        let folded = services(ctx).commands.users().reset_password(id, &password, &context).await.map_err(gql)?;
        Ok(PasswordReset { user: folded.into(), password: text })
    }

    /// Changes the signed-in user's own password.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> async_graphql::Result<User> {
        let caller = caller(ctx)?.clone();
        let Some(id) = caller.user else {
            return Err(error(Code::Forbidden, "only a signed-in user has a password to change"));
        };
        let new = domain(Password::parse(&new_password))?;
        let context = command_context(ctx, &caller);
        let folded =
            services(ctx).commands.users().change_password(id, &current_password, &new, &context).await.map_err(gql)?;
        Ok(folded.into())
    }
}

#[derive(Default)]
pub struct PeopleSubscription;

#[Subscription]
impl PeopleSubscription {
    /// Users each time one changed (created, a new role, deactivated or reactivated), admins
    /// only; optionally of one user.
    async fn user_updates(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<User>>> {
        require(ctx, Role::Admin)?;
        let id = id.map(|i| parse_id("id", &i)).transpose()?;
        let updates = services(ctx).live.users.subscribe();
        Ok(updates.filter_map(move |row| {
            futures::future::ready(id.is_none_or(|id| id == row.id).then(|| from_row(row.as_ref().clone())))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(role: &str) -> UserRow {
        UserRow {
            id: uuid::Uuid::from_u128(5),
            email: "vera@example.org".into(),
            role: role.into(),
            active: true,
            version: 1,
            position: 1,
            created_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_role_that_is_none_of_ours_is_an_error_not_a_viewer() {
        let error = User::try_from(row("owner")).unwrap_err();
        assert_eq!((error.table.as_str(), error.column.as_str()), ("users", "role"));
        assert_eq!(error.row, uuid::Uuid::from_u128(5).to_string());
        assert!(error.problem.contains("`owner`"), "{error}");
        assert_eq!(User::try_from(row("supervisor")).unwrap().role, Role::Supervisor);
    }
}
