//! Projections: exactly-once application, gap filling, and rebuilds that readers never notice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use devart::Role;
use devart_domain::task::{Capabilities, CreateTask, Description, Priority, Task, TaskCommand, Title, UpdateTask};
use devart_domain::Position;
use devart_projections::tasks::TasksProjection;
use devart_projections::worker::apply_in_order;
use uuid::Uuid;

use crate::support::TestEnv;

fn create(title: &str, priority: i64) -> CreateTask {
    CreateTask {
        id: Uuid::now_v7(),
        title: Title::parse(title).unwrap(),
        description: Description::default(),
        priority: Priority::parse(priority).unwrap(),
        required_capabilities: Capabilities::default(),
        ..CreateTask::new(Uuid::nil(), Title::parse("t").unwrap())
    }
}

/// Creates `n` tasks, updates every third, deletes every fifth.
async fn history(env: &TestEnv, n: usize) {
    let commands = env.commands();
    for i in 0..n {
        let task =
            commands.tasks().create(create(&format!("task {i}"), (i % 5 + 1) as i64), &env.context()).await.unwrap();
        let id = task.state.id;
        if i % 3 == 0 {
            let update =
                UpdateTask { title: Some(Title::parse(&format!("task {i}, renamed")).unwrap()), ..Default::default() };
            commands.execute::<Task>(id, TaskCommand::Update(update), &env.context(), None).await.unwrap();
        }
        if i % 5 == 0 {
            commands.execute::<Task>(id, TaskCommand::Delete, &env.context(), None).await.unwrap();
        }
    }
}

/// The task board, applied at most two events to a transaction.
struct TwoAtATime;

impl devart_projections::Projection for TwoAtATime {
    fn name(&self) -> &'static str {
        devart_projections::Projection::name(&TasksProjection)
    }

    fn tables(&self) -> &'static [&'static str] {
        devart_projections::Projection::tables(&TasksProjection)
    }

    fn batch_max(&self) -> usize {
        2
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut sqlx::PgConnection,
        target: devart_projections::Target,
        events: &'a [devart_commands::Recorded],
    ) -> futures::future::BoxFuture<'a, Result<Vec<serde_json::Value>, devart_projections::ApplyError>> {
        assert!(events.len() <= 2, "a batch of {}", events.len());
        devart_projections::Projection::apply(&TasksProjection, conn, target, events)
    }
}

#[tokio::test]
async fn a_gap_longer_than_a_batch_is_filled_a_batch_at_a_time() {
    let env = TestEnv::new().await;
    history(&env, 4).await;
    env.sequence_all().await;
    let events = env.store.read_all(Position::START, None, 1_000).await.unwrap();
    let head = Position(events.len() as u64);
    assert!(head.0 >= 6, "{head}");
    // Only the last event delivered: each call fills two of the positions before it from the store.
    let last = &events[events.len() - 1..];
    let mut checkpoints = Vec::new();
    loop {
        let (_, checkpoint) = apply_in_order(&env.pool, &env.store, &TwoAtATime, last).await.unwrap();
        checkpoints.push(checkpoint.0);
        if checkpoint == head {
            break;
        }
        assert!(checkpoints.len() < 100, "{checkpoints:?}");
    }
    let expected: Vec<u64> = (1..=head.0).filter(|p| p % 2 == 0 || *p == head.0).collect();
    assert_eq!(checkpoints, expected);
    let rows: i64 = sqlx::query_scalar("select count(*) from tasks").fetch_one(&env.pool).await.unwrap();
    assert_eq!(rows, 3, "4 created, 1 deleted");
    env.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_batch_changes_nothing_and_a_gap_is_filled_from_the_store() {
    let env = TestEnv::new().await;
    history(&env, 10).await;
    env.sequence_all().await;
    let events = env.store.read_all(Position::START, None, 1_000).await.unwrap();
    let head = events.len() as u64;

    // Delivered out of order, with a hole: the batch starting at position 3 is completed from the store.
    let (_, checkpoint) = apply_in_order(&env.pool, &env.store, &TasksProjection, &events[2..5]).await.unwrap();
    assert_eq!(checkpoint, Position(5));
    let (_, checkpoint) = apply_in_order(&env.pool, &env.store, &TasksProjection, &events[5..]).await.unwrap();
    assert_eq!(checkpoint, Position(head));
    let after_once = env.checksum("tasks").await;

    // Everything again: skipped.
    let (changed, checkpoint) = apply_in_order(&env.pool, &env.store, &TasksProjection, &events).await.unwrap();
    assert!(changed.is_empty());
    assert_eq!(checkpoint, Position(head));
    assert_eq!(env.checksum("tasks").await, after_once);

    let rows: i64 = sqlx::query_scalar("select count(*) from tasks").fetch_one(&env.pool).await.unwrap();
    assert_eq!(rows, 8, "10 created, 2 deleted");
    env.cleanup().await;
}

#[tokio::test]
async fn the_live_read_model_equals_a_rebuild_and_readers_keep_reading_during_it() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Relay, Role::Projections]).await;
    history(&env, 300).await;
    let head = loop {
        env.sequence_all().await;
        let head = env.store.head().await.unwrap();
        if head.0 > 0 {
            break head;
        }
    };
    env.wait_projected("tasks", head.0).await;
    let live = env.checksum("tasks").await;

    // A reader that must never find the board missing or empty while the rebuild runs.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let pool = env.pool.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut reads = 0;
            while !stop.load(Ordering::SeqCst) {
                let count: i64 = sqlx::query_scalar("select count(*) from tasks").fetch_one(&pool).await.unwrap();
                assert!(count > 0, "readers always see a board");
                reads += 1;
            }
            reads
        })
    };
    let report =
        devart_projections::rebuild::rebuild(&env.pool, &env.store, &TasksProjection, |_, _| {}).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    assert!(reader.await.unwrap() > 0);
    assert_eq!(report.position, head);
    assert_eq!(env.checksum("tasks").await, live, "a rebuild from the store equals the live read model");

    // The live worker carries on after the swap.
    let more = env.commands().tasks().create(create("after the rebuild", 2), &env.context()).await.unwrap();
    env.sequence_all().await;
    let head = env.store.head().await.unwrap();
    env.wait_projected("tasks", head.0).await;
    let title: String = sqlx::query_scalar("select title from tasks where id = $1")
        .bind(more.state.id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(title, "after the rebuild");
    running.stop().await;
    env.cleanup().await;
}
