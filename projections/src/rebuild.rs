//! Rebuilding a read model from the event store, without taking it away from readers.
//!
//! The rebuild fills aside copies of the projection's tables from the store at full speed, then,
//! holding the projection's lock (so the live worker pauses between batches), catches up to the
//! head, swaps the copies in and moves the checkpoint, all in one transaction. Only read models
//! are rebuilt: a reactor's history is acted on once. [`checksums`] tells whether two copies of a
//! read model hold the same rows (the live tables and a rebuild, or a replay into a schema).

use std::time::{Duration, Instant};

use devart_commands::{EventStore, Recorded};
use devart_domain::Position;
use sqlx::{PgConnection, PgPool};

use crate::worker::WorkerError;
use crate::{lock_key, Projection, Target};

const READ_BATCH: usize = 5_000;

#[derive(Debug, Clone)]
pub struct RebuildReport {
    pub events: u64,
    pub position: Position,
    pub elapsed: Duration,
}

/// Rebuilds `projection`; `progress(done, total)` is called after each batch.
#[tracing::instrument(skip_all, fields(projection = projection.name()))]
pub async fn rebuild(
    pool: &PgPool,
    store: &EventStore,
    projection: &dyn Projection,
    mut progress: impl FnMut(u64, u64),
) -> Result<RebuildReport, WorkerError> {
    let started = Instant::now();
    let name = projection.name();
    for table in projection.tables() {
        let aside = Target::Rebuild.table(table);
        sqlx::query(&format!("drop table if exists {aside}")).execute(pool).await?;
        sqlx::query(&format!("create table {aside} (like {table} including all)")).execute(pool).await?;
    }
    let target = store.head().await?;
    let mut conn = pool.acquire().await?;
    let mut at = Position::START;
    let mut events = 0u64;
    progress(0, target.0);
    while at < target {
        let batch = store.read_all(at, Some(target), READ_BATCH).await?;
        let Some(last) = batch.last().and_then(|r| r.meta.position) else {
            break;
        };
        for part in batch.chunks(projection.batch_max().max(1)) {
            apply_aside(&mut conn, projection, part).await?;
            events += part.len() as u64;
            if let Some(end) = part.last().and_then(|r| r.meta.position) {
                progress(end.0, target.0);
            }
        }
        at = last;
    }
    drop(conn);

    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock($1)").bind(lock_key(name)).execute(&mut *tx).await?;
    loop {
        let batch = store.read_all(at, None, READ_BATCH).await?;
        let Some(last) = batch.last().and_then(|r| r.meta.position) else {
            break;
        };
        apply_aside(&mut tx, projection, &batch).await?;
        events += batch.len() as u64;
        at = last;
    }
    for table in projection.tables() {
        let aside = Target::Rebuild.table(table);
        sqlx::query(&format!("drop table {table}")).execute(&mut *tx).await?;
        sqlx::query(&format!("alter table {aside} rename to {table}")).execute(&mut *tx).await?;
    }
    // The new tables get the database roles' grants and row policies the old ones had.
    sqlx::query("select devart_secure_read_models()").execute(&mut *tx).await?;
    sqlx::query(
        "insert into projection_checkpoints (name, position) values ($1, $2) \
         on conflict (name) do update set position = excluded.position, updated_at = now()",
    )
    .bind(name)
    .bind(at.0 as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    progress(at.0, at.0);
    Ok(RebuildReport { events, position: at, elapsed: started.elapsed() })
}

/// One batch of a rebuild, into the aside copies; the changed rows are nobody's business yet.
#[tracing::instrument(
    name = "apply_batch",
    skip_all,
    fields(kind = "rebuild", name = projection.name(), events = batch.len())
)]
async fn apply_aside(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    batch: &[Recorded],
) -> Result<(), WorkerError> {
    projection.apply(conn, Target::Rebuild, batch).await?;
    Ok(())
}

/// Each of `projection`'s tables in `schema` (`public`: the live ones) with a checksum of its rows:
/// equal checksums, equal rows.
pub async fn checksums(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let mut sums = Vec::with_capacity(projection.tables().len());
    for table in projection.tables() {
        let sum: String = sqlx::query_scalar(&format!(
            "select coalesce(md5(string_agg(t::text, '|' order by t::text)), 'empty') from \"{schema}\".{table} t"
        ))
        .fetch_one(&mut *conn)
        .await?;
        sums.push((table.to_string(), sum));
    }
    Ok(sums)
}
