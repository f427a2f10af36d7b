//! Appends: `EventStore::append` against single-row `INSERT`s.

use super::*;

/// (events per append, concurrent writers): single events as `createTask` appends them, then
/// batches as an importer would.
pub(crate) const APPEND_CASES: [(usize, usize); 5] = [(1, 1), (1, 8), (1, 32), (100, 1), (100, 8)];

/// Appends per second through `EventStore::append` (one `TaskCreated` into a new stream each, as a
/// `createTask` does), and events per second in batches of 100; each against single-row (or
/// 100-row) `INSERT`s into a plain table, at the same concurrency and the same durability.
pub(crate) async fn appends(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    sqlx::query(
        "create table bench_raw (id bigserial primary key, stream text not null, payload bytea not null, \
                                 at timestamptz not null)",
    )
    .execute(&scratch.pool)
    .await?;
    let duration = Duration::from_secs(args.duration_secs);
    // Opens every connection and warms both paths before anything is measured.
    let warm_up = Duration::from_millis(500);
    throughput(32, warm_up, |_, deadline| insert_rows(scratch.pool.clone(), 1, deadline)).await?;
    throughput(32, warm_up, |_, deadline| append_tasks(scratch.store.clone(), 1, deadline)).await?;

    let mut rows = Vec::new();
    for (batch, writers) in APPEND_CASES {
        let raw =
            throughput(writers, duration, |_, deadline| insert_rows(scratch.pool.clone(), batch, deadline)).await?;
        let devart =
            throughput(writers, duration, |_, deadline| append_tasks(scratch.store.clone(), batch, deadline)).await?;
        let writers_named = if writers == 1 { "1 writer".to_owned() } else { format!("{writers} writers") };
        let (name, unit) = match batch {
            1 => (format!("append, {writers_named}"), "appends/s"),
            _ => (format!("append {batch} events, {writers_named}"), "events/s"),
        };
        tracing::info!(%name, devart, raw, "measured");
        rows.push(Row { name, figure: devart, unit, baseline: Some(raw), target: Target::RatioAtLeast(0.5) });
    }
    Ok(rows)
}

/// One writer appending `batch` events to a new task stream per append until `deadline`;
/// returns the events appended.
pub(crate) async fn append_tasks(store: EventStore, batch: usize, deadline: Instant) -> anyhow::Result<u64> {
    let mut events = 0;
    while Instant::now() < deadline {
        let id = Uuid::now_v7();
        let context = CommandContext::new(bench_actor());
        store.append(&StreamId::new(Task::KIND, id), 0, &task_history(id, batch), &context).await?;
        events += batch as u64;
    }
    Ok(events)
}

/// The baseline writer: plain autocommit `INSERT`s of `batch` comparable rows (a stream name, the
/// same postcard payload, a timestamp) until `deadline`; returns the rows inserted.
pub(crate) async fn insert_rows(pool: PgPool, batch: usize, deadline: Instant) -> anyhow::Result<u64> {
    let payloads: Vec<Vec<u8>> =
        task_history(Uuid::now_v7(), batch).iter().map(|event| devart_commands::codec::encode(event).2).collect();
    let mut rows = 0;
    while Instant::now() < deadline {
        let stream = StreamId::new(Task::KIND, Uuid::now_v7());
        if batch == 1 {
            sqlx::query("insert into bench_raw (stream, payload, at) values ($1, $2, now())")
                .bind(stream.as_str())
                .bind(&payloads[0])
                .execute(&pool)
                .await?;
        } else {
            sqlx::query("insert into bench_raw (stream, payload, at) select $1, p, now() from unnest($2::bytea[]) p")
                .bind(stream.as_str())
                .bind(&payloads)
                .execute(&pool)
                .await?;
        }
        rows += batch as u64;
    }
    Ok(rows)
}
