//! The users read model: one row per person, with their role and activation. No credentials.

use chrono::{DateTime, Utc};
use devart_commands::Recorded;
use devart_domain::user::{User, UserRole, UserState, UserStatus};
use devart_domain::{Aggregate, Event};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::Postgres;
use uuid::Uuid;

use crate::announce::Announced;
use crate::rows::{column, AggregateRows, HasId, Sql};
use crate::ColumnError;

/// A row of `users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    /// `viewer`, `supervisor` or `admin`.
    pub role: String,
    pub active: bool,
    pub version: i64,
    pub position: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl HasId for UserRow {
    fn id(&self) -> Uuid {
        self.id
    }
}

pub const COLUMNS: &str = "id, email, role, active, version, position, created_at, updated_at";

/// The read model's name.
const NAME: &str = "users";

/// What it announces: people's rows.
pub const ANNOUNCED: Announced<UserRow> = Announced::new(NAME);

#[derive(Default)]
pub struct UsersProjection;

impl AggregateRows for UsersProjection {
    type Row = UserRow;
    type Folded = (UserState, UserRow);

    const TABLE: &'static str = "users";
    const COLUMNS: &'static [(&'static str, Sql)] = &[
        ("id", Sql::Uuid),
        ("email", Sql::Text),
        ("role", Sql::Text),
        ("active", Sql::Bool),
        ("version", Sql::BigInt),
        ("position", Sql::BigInt),
        ("created_at", Sql::Timestamptz),
        ("updated_at", Sql::Timestamptz),
    ];

    fn row_of(&self, recorded: &Recorded) -> Option<Uuid> {
        match recorded.event {
            Event::User(_) => recorded.meta.stream_id.id_of(User::KIND),
            _ => None,
        }
    }

    fn open(&self, row: UserRow) -> Result<(UserState, UserRow), ColumnError> {
        let role = UserRole::parse(&row.role).map_err(|e| ColumnError::new("role", format!("`{}`: {e}", row.role)))?;
        let status = if row.active { UserStatus::Active } else { UserStatus::Inactive };
        Ok((UserState { id: row.id, status, email: row.email.clone(), role }, row))
    }

    fn start(&self, id: Uuid, recorded: &Recorded) -> Option<(UserState, UserRow)> {
        let at = recorded.meta.occurred_at;
        let row = UserRow {
            id,
            email: String::new(),
            role: String::new(),
            active: false,
            version: 0,
            position: 0,
            created_at: at,
            updated_at: at,
        };
        Some((UserState::default(), row))
    }

    fn fold(&mut self, (state, row): &mut (UserState, UserRow), recorded: &Recorded) -> bool {
        let Event::User(event) = &recorded.event else { return false };
        let meta = &recorded.meta;
        *state = User::evolve(std::mem::take(state), event);
        row.email = state.email.clone();
        row.role = state.role.as_str().to_owned();
        row.active = state.status == UserStatus::Active;
        row.version = meta.stream_version as i64;
        row.position = meta.position.map_or(row.position, |p| p.0 as i64);
        row.updated_at = meta.occurred_at;
        true
    }

    fn close(&self, (_, row): (UserState, UserRow)) -> UserRow {
        row
    }

    fn bind<'q>(rows: &[&'q UserRow], query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(column(rows, |r| r.id))
            .bind(column(rows, |r| r.email.as_str()))
            .bind(column(rows, |r| r.role.as_str()))
            .bind(column(rows, |r| r.active))
            .bind(column(rows, |r| r.version))
            .bind(column(rows, |r| r.position))
            .bind(column(rows, |r| r.created_at))
            .bind(column(rows, |r| r.updated_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::column_list;

    #[test]
    fn the_columns_read_are_the_columns_written() {
        assert_eq!(COLUMNS, column_list(UsersProjection::COLUMNS));
    }

    #[test]
    fn a_stored_role_that_is_not_a_role_is_an_error_not_a_viewer() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let row = UserRow {
            id: Uuid::from_u128(1),
            email: "a@example.org".into(),
            role: "root".into(),
            active: true,
            version: 1,
            position: 1,
            created_at: at,
            updated_at: at,
        };
        let error = UsersProjection.open(row).unwrap_err().in_row("users", Uuid::from_u128(1));
        assert_eq!(error.table, "users");
        assert_eq!(error.row, Uuid::from_u128(1).to_string());
        assert_eq!(error.column, "role");
        assert!(error.problem.starts_with("`root`"), "{error}");
    }
}
