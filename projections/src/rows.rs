//! One row per aggregate: the fold-and-upsert most read models are.
//!
//! A read model of this kind says which row each event changes, how a row starts, and how an event
//! folds into it ([`AggregateRows`]); [`fold_and_upsert`] loads the rows a batch touches in one
//! statement, folds each one over all of its events in the batch, writes each changed row once
//! (one statement for the batch, every column bound as one array), and returns the changed rows
//! for live subscribers. What is folded may be more than the row: the tasks read model folds the
//! domain's own state beside it and turns it into columns once per row, not once per event.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use devart_commands::Recorded;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::Serialize;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{FromRow, PgConnection, Postgres, Row};
use uuid::Uuid;

use crate::{ApplyError, ColumnError, Projection, RowError, Target};

/// A read model table with one row per aggregate, keyed by the aggregate's id.
pub trait AggregateRows {
    /// A stored row, and what live subscribers receive of it, as JSON.
    type Row: for<'r> FromRow<'r, PgRow> + Serialize + HasId + Send + Sync + Unpin;
    /// What is folded for each row over a batch: the row itself, or a state beside it.
    type Folded: Send;

    /// The table's name ([`Target::table`] finds the copy a rebuild fills).
    const TABLE: &'static str;
    /// Its columns, key first, as they are read and written, and how each travels.
    const COLUMNS: &'static [(&'static str, Sql)];

    /// The row `recorded` changes, if any.
    fn row_of(&self, recorded: &Recorded) -> Option<Uuid>;
    /// A stored row, ready to fold events into; fails on a column that does not decode.
    fn open(&self, row: Self::Row) -> Result<Self::Folded, ColumnError>;
    /// A row not stored yet, as the first event naming it begins it (then folded in); `None` if
    /// that event begins no row (work reported by an agent that is not one of ours).
    fn start(&self, id: Uuid, recorded: &Recorded) -> Option<Self::Folded>;
    /// Folds `recorded` in; `false` if it turned out not to change the row.
    fn fold(&mut self, folded: &mut Self::Folded, recorded: &Recorded) -> bool;
    /// The row to write, once the batch is folded in.
    fn close(&self, folded: Self::Folded) -> Self::Row;
    /// Whether the row is deleted rather than written (a deleted task); subscribers hear of it.
    fn deleted(&self, _row: &Self::Row) -> bool {
        false
    }
    /// Binds `rows` to the write statement: one array per column, in [`Self::COLUMNS`] order
    /// ([`column`] makes them).
    fn bind<'q>(rows: &[&'q Self::Row], query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments>;
}

/// A read model of one row per aggregate is a projection by being one: its one table is its name.
impl<T: AggregateRows + Default + Send + Sync + 'static> Projection for T {
    fn name(&self) -> &'static str {
        T::TABLE
    }

    fn tables(&self) -> &'static [&'static str] {
        const { &[T::TABLE] }
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: Target,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, ApplyError>> {
        async move { fold_and_upsert(conn, target, &mut T::default(), events).await }.boxed()
    }
}

/// A read-model row keyed by its aggregate's id.
pub trait HasId {
    fn id(&self) -> Uuid;
}

/// How a column travels in the statement that writes a batch: as one array per column, unnested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sql {
    Uuid,
    Text,
    SmallInt,
    Int,
    BigInt,
    Bool,
    Timestamptz,
    /// `text[]`, bound as one JSON array per row (`Json(&row.tags)`): `unnest` cannot take a
    /// ragged `text[][]`.
    TextArray,
    /// `jsonb`, bound as `Json(&row.document)`.
    Jsonb,
}

impl Sql {
    /// The type of the array the column is bound as.
    fn array(self) -> &'static str {
        match self {
            Sql::Uuid => "uuid[]",
            Sql::Text => "text[]",
            Sql::TextArray | Sql::Jsonb => "jsonb[]",
            Sql::SmallInt => "smallint[]",
            Sql::Int => "int[]",
            Sql::BigInt => "bigint[]",
            Sql::Bool => "bool[]",
            Sql::Timestamptz => "timestamptz[]",
        }
    }

    /// The value stored, from the unnested column `r.<column>`.
    fn stored(self, column: &str) -> String {
        match self {
            Sql::TextArray => format!("array(select jsonb_array_elements_text(r.{column}))"),
            _ => format!("r.{column}"),
        }
    }
}

/// The columns of `columns`, as a select list.
pub fn column_list(columns: &[(&str, Sql)]) -> String {
    columns.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

/// One column of `rows`, to bind as an array.
pub fn column<'q, R, T>(rows: &[&'q R], value: impl Fn(&'q R) -> T) -> Vec<T> {
    rows.iter().map(|r| value(r)).collect()
}

/// The statement that writes a batch of rows: inserted, or updated in every column but the key.
fn upsert_statement(table: &str, columns: &[(&str, Sql)]) -> String {
    let names = column_list(columns);
    let stored: Vec<String> = columns.iter().map(|(name, sql)| sql.stored(name)).collect();
    let arrays: Vec<String> =
        columns.iter().enumerate().map(|(i, (_, sql))| format!("${}::{}", i + 1, sql.array())).collect();
    let key = columns[0].0;
    let updates: Vec<String> = columns[1..].iter().map(|(name, _)| format!("{name} = excluded.{name}")).collect();
    format!(
        "insert into {table} ({names}) select {} from unnest({}) as r({names}) on conflict ({key}) do update set {}",
        stored.join(", "),
        arrays.join(", "),
        updates.join(", ")
    )
}

/// Applies `events` to the rows of `model`'s table in `target`: loads the rows they touch, folds
/// each over its events, writes each changed row once (deletes the deleted ones) and returns the
/// changed rows as JSON, in the order of their first change.
#[tracing::instrument(name = "fold_and_upsert", skip_all, fields(table = M::TABLE, events = events.len(), rows = tracing::field::Empty))]
pub async fn fold_and_upsert<M: AggregateRows>(
    conn: &mut PgConnection,
    target: Target,
    model: &mut M,
    events: &[Recorded],
) -> Result<Vec<serde_json::Value>, ApplyError> {
    let ids: Vec<Uuid> = events.iter().filter_map(|r| model.row_of(r)).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let table = target.table(M::TABLE);
    let mut folding: HashMap<Uuid, M::Folded> = HashMap::with_capacity(ids.len());
    for (id, row) in rows_by_id::<M::Row>(conn, &table, M::COLUMNS[0].0, &column_list(M::COLUMNS), &ids).await? {
        folding.insert(id, model.open(row).map_err(|e| e.in_row(&table, id))?);
    }
    // In first-change order, for notifications; `seen` keeps the check O(1) per event.
    let mut changed: Vec<Uuid> = Vec::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    for recorded in events {
        let Some(id) = model.row_of(recorded) else { continue };
        let folded = match folding.entry(id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => match model.start(id, recorded) {
                Some(started) => entry.insert(started),
                None => continue,
            },
        };
        if model.fold(folded, recorded) && seen.insert(id) {
            changed.push(id);
        }
    }
    tracing::Span::current().record("rows", changed.len());
    let mut rows: HashMap<Uuid, M::Row> = HashMap::with_capacity(changed.len());
    for (id, folded) in folding {
        if seen.contains(&id) {
            rows.insert(id, model.close(folded));
        }
    }
    let (deleted, live): (Vec<&M::Row>, Vec<&M::Row>) =
        changed.iter().map(|id| &rows[id]).partition(|r| model.deleted(r));
    if !deleted.is_empty() {
        let ids: Vec<Uuid> = deleted.iter().map(|r| r.id()).collect();
        sqlx::query(&format!("delete from {table} where {} = any($1)", M::COLUMNS[0].0))
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
    }
    if !live.is_empty() {
        let statement = upsert_statement(&table, M::COLUMNS);
        M::bind(&live, sqlx::query(&statement)).execute(&mut *conn).await?;
    }
    let mut notifications = Vec::with_capacity(changed.len());
    for id in &changed {
        notifications.push(serde_json::to_value(&rows[id])?);
    }
    Ok(notifications)
}

/// The rows of `table` whose `key` is one of `ids`, by key: what a batch starts from before
/// folding events in. A row with a column that does not decode fails the read, naming the row.
pub async fn rows_by_id<R>(
    conn: &mut PgConnection,
    table: &str,
    key: &str,
    columns: &str,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, R>, ApplyError>
where
    R: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let rows: Vec<PgRow> =
        sqlx::query(&format!("select {columns} from {table} where {key} = any($1)")).bind(ids).fetch_all(conn).await?;
    let mut by_id = HashMap::with_capacity(rows.len());
    for row in rows {
        let id: Uuid = row.try_get(key)?;
        let decoded = R::from_row(&row).map_err(|error| match error {
            sqlx::Error::ColumnDecode { index, source } => ApplyError::Row(RowError {
                table: table.to_owned(),
                row: id.to_string(),
                column: index.trim_matches('"').to_owned(),
                problem: source.to_string(),
            }),
            other => ApplyError::Db(other),
        })?;
        by_id.insert(id, decoded);
    }
    Ok(by_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_statement_updates_every_column_but_the_key() {
        let statement =
            upsert_statement("t", &[("id", Sql::Uuid), ("tags", Sql::TextArray), ("doc", Sql::Jsonb), ("n", Sql::Int)]);
        assert_eq!(
            statement,
            "insert into t (id, tags, doc, n) \
             select r.id, array(select jsonb_array_elements_text(r.tags)), r.doc, r.n \
             from unnest($1::uuid[], $2::jsonb[], $3::jsonb[], $4::int[]) as r(id, tags, doc, n) \
             on conflict (id) do update set tags = excluded.tags, doc = excluded.doc, n = excluded.n"
        );
    }
}
