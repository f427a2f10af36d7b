//! The event store: expected versions, idempotent commands, and a global order that never skips.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use devart_commands::store::append_with;
use devart_commands::{CommandContext, CommandError, StoreError};
use devart_domain::task::{Capabilities, CreateTask, Description, Priority, Task, TaskCommand, TaskEvent, Title};
use devart_domain::{Actor, Event, Position, StreamId};
use rand::Rng;
use uuid::Uuid;

use crate::support::TestEnv;

fn create(id: Uuid, title: &str) -> CreateTask {
    CreateTask {
        id,
        title: Title::parse(title).unwrap(),
        description: Description::default(),
        priority: Priority::DEFAULT,
        required_capabilities: Capabilities::default(),
        ..CreateTask::new(Uuid::nil(), Title::parse("t").unwrap())
    }
}

fn created_event(id: Uuid) -> Event {
    Event::Task(TaskEvent::Created {
        id,
        title: "t".into(),
        description: String::new(),
        priority: 3,
        required_capabilities: vec![],
        parent_task_id: None,
        max_attempts: 3,
        run_after: None,
        input: None,
        stage: None,
        requires_approval: false,
    })
}

#[tokio::test]
async fn an_append_at_a_stale_version_is_a_typed_conflict() {
    let env = TestEnv::new().await;
    let id = Uuid::now_v7();
    let stream = StreamId::new("task", id);
    env.store.append(&stream, 0, &[created_event(id)], &env.context()).await.unwrap();
    let stale = env.store.append(&stream, 0, &[created_event(id)], &env.context()).await;
    assert!(matches!(stale, Err(StoreError::Conflict { expected_version: 0, .. })), "{stale:?}");
    let events = env.store.read_stream(&stream, None).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, created_event(id));
    env.cleanup().await;
}

#[tokio::test]
async fn a_retried_command_appends_nothing_twice() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    let context = env.context();
    let id = Uuid::now_v7();
    let first = commands.tasks().create(create(id, "once"), &context).await.unwrap();
    // The same command again (a client retrying after a lost response): same answer, no new event.
    let again = commands.tasks().create(create(id, "once"), &context).await.unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(again.version, 1);
    assert_eq!(again.state, first.state);
    // Concurrent retries of one command still record it once.
    let update =
        devart_domain::task::UpdateTask { title: Some(Title::parse("renamed").unwrap()), ..Default::default() };
    let context = env.context();
    let results = futures::future::join_all(
        (0..8).map(|_| commands.execute::<Task>(id, TaskCommand::Update(update.clone()), &context, None)),
    )
    .await;
    for result in &results {
        assert_eq!(result.as_ref().unwrap().version, 2, "{result:?}");
    }
    let count: i64 = sqlx::query_scalar("select count(*) from events").fetch_one(&env.pool).await.unwrap();
    assert_eq!(count, 2);
    env.cleanup().await;
}

#[tokio::test]
async fn an_expected_version_that_moved_is_refused() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    let id = Uuid::now_v7();
    commands.tasks().create(create(id, "v1"), &env.context()).await.unwrap();
    let refused = commands
        .execute::<Task>(id, TaskCommand::Reprioritize(Priority::parse(5).unwrap()), &env.context(), Some(7))
        .await;
    assert!(matches!(refused, Err(CommandError::VersionMismatch { expected: 7, actual: 1, .. })), "{refused:?}");
    env.cleanup().await;
}

/// Tails the global order the way every consumer does, until `stop` and nothing is left.
async fn tail_positions(env: &TestEnv, stop: Arc<AtomicBool>) -> Vec<Uuid> {
    let mut seen = Vec::new();
    let mut after = Position::START;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        env.store.sequence(1_000).await.unwrap();
        let page = env.store.read_all(after, None, 1_000).await.unwrap();
        for recorded in &page {
            let position = recorded.meta.position.unwrap();
            assert_eq!(position, after.next(), "positions are dense and in order");
            after = position;
            seen.push(recorded.meta.event_id);
        }
        if page.is_empty() {
            if stopping {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A writer that holds its transaction open for `delay` after inserting.
async fn slow_append(env: &TestEnv, delay: Duration) -> Uuid {
    let id = Uuid::now_v7();
    let mut tx = env.pool.begin().await.unwrap();
    let context = CommandContext::new(Actor::system("test"));
    let appended = append_with(&mut *tx, &StreamId::new("task", id), 0, &[created_event(id)], &context).await.unwrap();
    tokio::time::sleep(delay).await;
    tx.commit().await.unwrap();
    appended.event_ids[0]
}

/// The hazard, made deterministic: a transaction that inserted first commits last.
#[tokio::test]
async fn a_late_committing_writer_is_not_skipped() {
    let env = TestEnv::new().await;
    let slow = slow_append(&env, Duration::from_millis(300));
    let fast = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        slow_append(&env, Duration::ZERO).await
    };
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tail_positions(&env, stop.clone());
    let naive = tail_insertion_order(&env, stop.clone());
    let writers = async {
        let ids = tokio::join!(slow, fast);
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.store(true, Ordering::SeqCst);
        ids
    };
    let ((slow_id, fast_id), seen, naive_seen) = tokio::join!(writers, reader, naive);
    assert_eq!(seen, vec![fast_id, slow_id], "the reader sees both, in commit order");
    // The control: following the insertion order (what an identity column gives) loses the slow one.
    assert_eq!(naive_seen, vec![fast_id], "the naive reader skips the late commit");
    env.cleanup().await;
}

/// What a reader following an identity column at insert time would see.
async fn tail_insertion_order(env: &TestEnv, stop: Arc<AtomicBool>) -> Vec<Uuid> {
    let mut seen = Vec::new();
    let mut after = 0i64;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let rows: Vec<(i64, Uuid)> = sqlx::query_as(
            "select insertion_seq, event_id from events where insertion_seq > $1 order by insertion_seq",
        )
        .bind(after)
        .fetch_all(&env.pool)
        .await
        .unwrap();
        for (seq, id) in &rows {
            after = *seq;
            seen.push(*id);
        }
        if rows.is_empty() {
            if stopping {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// 16 concurrent writers with random delays inside their transactions; a reader tailing by
/// position sees every committed event exactly once.
#[tokio::test]
async fn sixteen_slow_writers_and_a_tailing_reader_see_every_event_exactly_once() {
    const WRITERS: usize = 16;
    const PER_WRITER: usize = 40;
    let env = TestEnv::new().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = futures::future::join_all((0..WRITERS).map(|_| async {
        let mut ids = Vec::new();
        for _ in 0..PER_WRITER {
            let delay = Duration::from_millis(rand::thread_rng().gen_range(0..25));
            ids.push(slow_append(&env, delay).await);
        }
        ids
    }));
    let reader = tail_positions(&env, stop.clone());
    let both = async {
        let written: Vec<Uuid> = writers.await.into_iter().flatten().collect();
        stop.store(true, Ordering::SeqCst);
        written
    };
    let (written, seen) = tokio::join!(both, reader);
    assert_eq!(written.len(), WRITERS * PER_WRITER);
    let unique: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no event is seen twice");
    assert_eq!(unique, written.iter().copied().collect(), "every event is seen");
    env.cleanup().await;
}
