//! `devart export`, `import`, `replay` and `checksum`: a history taken elsewhere, or looked at as
//! of an earlier point.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use devart_commands::history::At;
use devart_commands::{Commands, EventStore, Nudge, Recorded};
use devart_domain::Position;
use devart_projections::Target;

use crate::Config;

const BATCH: usize = 5_000;

/// Writes sequenced events with positions in `from..=to` as CloudEvents JSON, one per line.
pub async fn export(config: &Config, from: u64, to: Option<u64>, out: &mut impl Write) -> anyhow::Result<u64> {
    let store = EventStore::new(config.pool().await?);
    let mut after = Position(from.saturating_sub(1));
    let until = to.map(Position);
    let mut written = 0;
    loop {
        let batch = store.read_all(after, until, BATCH).await?;
        let Some(last) = batch.last().and_then(|r| r.meta.position) else { break };
        for recorded in &batch {
            serde_json::to_writer(&mut *out, &devart_commands::bus::cloudevent_json(recorded))?;
            out.write_all(b"\n")?;
        }
        written += batch.len() as u64;
        after = last;
    }
    out.flush()?;
    Ok(written)
}

/// Reads an export into this instance, which must hold no events, then rebuilds the write side and
/// every read model from it. Returns the number of events imported.
pub async fn import(config: &Config, input: impl BufRead) -> anyhow::Result<u64> {
    let pool = config.pool().await?;
    let store = EventStore::new(pool.clone());
    let mut next = 1;
    let mut batch: Vec<Recorded> = Vec::with_capacity(BATCH);
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("line {}: not JSON", n + 1))?;
        let recorded = devart_commands::bus::from_cloudevent_json(&value).with_context(|| {
            let position = value.get("position").and_then(|p| p.as_str()).and_then(|p| p.parse::<u64>().ok());
            match position {
                Some(position) => format!("line {} (position {position})", n + 1),
                None => format!("line {}", n + 1),
            }
        })?;
        batch.push(recorded);
        if batch.len() == BATCH {
            next = devart_commands::portable::import_batch(&store, &batch, next).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        next = devart_commands::portable::import_batch(&store, &batch, next).await?;
    }
    while store.chain().await?.is_some() {}
    let commands = Commands::new(store.clone(), Nudge::default(), None);
    commands.restore_write_side().await?;
    for projection in devart_projections::all() {
        devart_projections::rebuild::rebuild(&pool, &store, projection.as_ref(), |_, _| {}).await?;
    }
    Ok(next - 1)
}

/// Every read model's tables and a checksum of their rows, in `schema` (default: the live ones).
pub async fn checksums(config: &Config, schema: Option<&str>) -> anyhow::Result<Vec<(String, String)>> {
    let pool = config.pool().await?;
    let mut conn = pool.acquire().await?;
    let schema = schema.unwrap_or("public");
    let mut sums = Vec::new();
    for projection in devart_projections::all() {
        sums.extend(
            devart_projections::rebuild::checksums(&mut conn, projection.as_ref(), schema)
                .await
                .with_context(|| format!("reading the tables of {} in {schema}", projection.name()))?,
        );
    }
    Ok(sums)
}

/// What a replay did.
pub struct Replayed {
    pub events: u64,
    pub elapsed: Duration,
}

/// Rebuilds every read model as of `until` into the tables of schema `schema` (created, or emptied
/// if it exists), leaving the live ones alone. `progress(done, total)` is called after each batch.
pub async fn replay(
    config: &Config,
    until: At,
    schema: &str,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Replayed> {
    anyhow::ensure!(
        !schema.is_empty()
            && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && schema != "public",
        "the schema name must be lower case letters, digits and _, and not `public`"
    );
    let pool = config.pool().await?;
    let store = EventStore::new(pool.clone());
    let mut conn = pool.acquire().await?;
    sqlx::query(&format!("create schema if not exists {schema}")).execute(&mut *conn).await?;
    let projections = devart_projections::all();
    for projection in &projections {
        for table in projection.tables() {
            sqlx::query(&format!("drop table if exists {schema}.{table}")).execute(&mut *conn).await?;
            sqlx::query(&format!("create table {schema}.{table} (like public.{table} including all)"))
                .execute(&mut *conn)
                .await?;
        }
    }
    // Unqualified table names now resolve to the replay's copies first.
    sqlx::query(&format!("set search_path to {schema}, public")).execute(&mut *conn).await?;
    let head = store.head().await?;
    let last = match until {
        At::Position(p) => p.min(head),
        At::Time(_) => head,
    };
    let started = Instant::now();
    let (mut at, mut events) = (Position::START, 0u64);
    progress(0, last.0);
    let result: anyhow::Result<()> = async {
        while at < last {
            let batch = store.read_all(at, Some(last), BATCH).await?;
            let Some(end) = batch.last().and_then(|r| r.meta.position) else { break };
            let batch: Vec<Recorded> = match until {
                At::Time(t) => batch.into_iter().filter(|r| r.meta.occurred_at <= t).collect(),
                At::Position(_) => batch,
            };
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            for projection in &projections {
                projection.apply(&mut tx, Target::Live, &batch).await?;
            }
            tx.commit().await?;
            events += batch.len() as u64;
            at = end;
            progress(at.0, last.0);
        }
        Ok(())
    }
    .await;
    // The connection goes back to the pool: give it back its usual search path.
    sqlx::query("reset search_path").execute(&mut *conn).await?;
    result?;
    Ok(Replayed { events, elapsed: started.elapsed() })
}
