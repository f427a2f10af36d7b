//! The kill switch's read model: the pauses in effect, each with who paused, when, and at which
//! position, in one row (the `claims` stream has one aggregate).

use chrono::{DateTime, Utc};
use devart_commands::codec::claims::Scope as WireScope;
use devart_commands::Recorded;
use devart_domain::claims::{Claims, ClaimsEvent, Scope};
use devart_domain::{Aggregate, Event};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::Postgres;
use uuid::Uuid;

use crate::announce::Announced;
use crate::rows::{column, AggregateRows, HasId, Sql};
use crate::ColumnError;

/// One pause in effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseEntry {
    pub scope: WireScope,
    pub reason: String,
    pub drain: bool,
    pub paused_at: DateTime<Utc>,
    /// The actor, as `user:<id>`, `agent:<id>` or `system:<name>`.
    pub paused_by: String,
    /// The pause's event in the global order: no claim after it hands out work in its scope.
    pub position: i64,
}

/// The row of `claim_pauses`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ClaimPausesRow {
    pub id: Uuid,
    /// Broadest scope first.
    pub pauses: Json<Vec<PauseEntry>>,
    pub version: i64,
    pub position: i64,
    pub updated_at: DateTime<Utc>,
}

impl HasId for ClaimPausesRow {
    fn id(&self) -> Uuid {
        self.id
    }
}

pub const COLUMNS: &str = "id, pauses, version, position, updated_at";

const NAME: &str = "claim_pauses";

/// What it announces: the row, whenever a pause begins or ends.
pub const ANNOUNCED: Announced<ClaimPausesRow> = Announced::new(NAME);

#[derive(Default)]
pub struct ClaimPausesProjection;

/// The pauses by scope while a batch is folded in.
type Folded = (Vec<(Scope, PauseEntry)>, ClaimPausesRow);

impl AggregateRows for ClaimPausesProjection {
    type Row = ClaimPausesRow;
    type Folded = Folded;

    const TABLE: &'static str = NAME;
    const COLUMNS: &'static [(&'static str, Sql)] = &[
        ("id", Sql::Uuid),
        ("pauses", Sql::Jsonb),
        ("version", Sql::BigInt),
        ("position", Sql::BigInt),
        ("updated_at", Sql::Timestamptz),
    ];

    fn row_of(&self, recorded: &Recorded) -> Option<Uuid> {
        match recorded.event {
            Event::Claims(_) => recorded.meta.stream_id.id_of(Claims::KIND),
            _ => None,
        }
    }

    fn open(&self, row: ClaimPausesRow) -> Result<Folded, ColumnError> {
        let pauses = row
            .pauses
            .0
            .iter()
            .map(|entry| {
                Scope::try_from(entry.scope.clone())
                    .map(|scope| (scope, entry.clone()))
                    .map_err(|e| ColumnError::new("pauses", format!("a scope that is none: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok((pauses, row))
    }

    fn start(&self, id: Uuid, recorded: &Recorded) -> Option<Folded> {
        let at = recorded.meta.occurred_at;
        Some((Vec::new(), ClaimPausesRow { id, pauses: Json(Vec::new()), version: 0, position: 0, updated_at: at }))
    }

    fn fold(&mut self, (pauses, row): &mut Folded, recorded: &Recorded) -> bool {
        let Event::Claims(event) = &recorded.event else { return false };
        let meta = &recorded.meta;
        let position = meta.position.map_or(row.position, |p| p.0 as i64);
        match event {
            ClaimsEvent::Paused { scope, reason, drain } => {
                let entry = PauseEntry {
                    scope: scope.clone().into(),
                    reason: reason.clone(),
                    drain: *drain,
                    paused_at: meta.occurred_at,
                    paused_by: meta.actor.to_string(),
                    position,
                };
                pauses.retain(|(s, _)| s != scope);
                pauses.push((scope.clone(), entry));
                pauses.sort_by(|a, b| a.0.cmp(&b.0));
            }
            ClaimsEvent::Resumed { scope } => pauses.retain(|(s, _)| s != scope),
        }
        row.pauses = Json(pauses.iter().map(|(_, e)| e.clone()).collect());
        row.version = meta.stream_version as i64;
        row.position = position;
        row.updated_at = meta.occurred_at;
        true
    }

    fn close(&self, (_, row): Folded) -> ClaimPausesRow {
        row
    }

    fn bind<'q>(
        rows: &[&'q ClaimPausesRow],
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(column(rows, |r| r.id))
            .bind(column(rows, |r| Json(&r.pauses.0)))
            .bind(column(rows, |r| r.version))
            .bind(column(rows, |r| r.position))
            .bind(column(rows, |r| r.updated_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::column_list;

    #[test]
    fn the_columns_read_are_the_columns_written() {
        assert_eq!(COLUMNS, column_list(ClaimPausesProjection::COLUMNS));
    }
}
