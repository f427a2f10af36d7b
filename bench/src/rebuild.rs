//! Projection rebuild: the tasks projection's rebuild against a plain SQL copy.

use super::*;

/// Events per second the tasks projection rebuilds from `--rebuild-events` stored events; against
/// an `insert … select` in SQL of one `tasks`-shaped row per event into a copy of `tasks` (same
/// columns, same indexes), which is what Postgres alone does with the same input.
pub(crate) async fn rebuild(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    let Seeded { events, sequenced_per_sec } = seed(scratch, args.rebuild_events, args.events_per_task).await?;
    let baseline = raw_copy_rate(&scratch.pool).await?;
    let report = devart_projections::rebuild::rebuild(&scratch.pool, &scratch.store, &TasksProjection, |_, _| {})
        .await
        .context("rebuilding the tasks projection")?;
    if report.events != events {
        bail!("the rebuild replayed {} events, not {events}", report.events);
    }
    let figure = report.events as f64 / report.elapsed.as_secs_f64();
    let workload = format!("{} events, {}/task", number(events as f64), args.events_per_task);
    // `devart replay`: every read model, into a schema of its own.
    let replayed = devart::portable::replay(
        &scratch.config,
        devart_commands::history::At::Position(report.position),
        "bench_replay",
        |_, _| {},
    )
    .await
    .context("replaying into a separate schema")?;
    if replayed.events != events {
        bail!("the replay applied {} events, not {events}", replayed.events);
    }
    Ok(vec![
        Row {
            name: format!("tasks rebuild, {workload}"),
            figure,
            unit: "events/s",
            baseline: Some(baseline),
            target: Target::AtLeast(50_000.0),
        },
        Row {
            name: format!("replay, every read model, {workload}"),
            figure: replayed.events as f64 / replayed.elapsed.as_secs_f64(),
            unit: "events/s",
            baseline: Some(baseline),
            target: Target::AtLeast(50_000.0),
        },
        // The ceiling of sustained ingest: every event passes the one sequencer at a time.
        Row {
            name: format!("sequencer, {workload}"),
            figure: sequenced_per_sec,
            unit: "events/s",
            baseline: None,
            target: Target::None,
        },
    ])
}

pub(crate) async fn raw_copy_rate(pool: &PgPool) -> anyhow::Result<f64> {
    sqlx::query("create table bench_tasks (like tasks including all)").execute(pool).await?;
    let started = Instant::now();
    let copied = sqlx::query(
        "insert into bench_tasks (id, title, description, status, priority, required_capabilities, \
                                  parent_task_id, version, position, created_at, updated_at, created_by) \
         select event_id, event_type, '', 'PENDING', 3, array['rust'], null, stream_version, position, \
                occurred_at, occurred_at, actor_kind || ':' || actor_id \
         from events where position is not null",
    )
    .execute(pool)
    .await
    .context("copying events into bench_tasks")?
    .rows_affected();
    Ok(copied as f64 / started.elapsed().as_secs_f64())
}
