//! A stored read-model row that does not decode stops its read model's batch with an error naming
//! the table and the row, and the checkpoint stays where it was; a good row still folds as before.
//! Against a database of its own on the Postgres of `DEVART_TEST_POSTGRES`.

use chrono::{DateTime, Utc};
use devart_commands::{EventStore, Recorded};
use devart_domain::service::{Service, ServiceEvent};
use devart_domain::task::{Task, TaskEvent};
use devart_domain::user::{User, UserEvent};
use devart_domain::{Actor, Aggregate, Event, EventMeta, Position, StreamId};
use devart_projections::services::ServicesProjection;
use devart_projections::tasks::TasksProjection;
use devart_projections::users::UsersProjection;
use devart_projections::worker::{apply_in_order, checkpoint, WorkerError};
use devart_projections::{ApplyError, Projection, RowError};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

fn server_url() -> String {
    std::env::var("DEVART_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-05T10:00:00Z").unwrap().with_timezone(&Utc)
}

fn recorded(stream_id: StreamId, position: u64, event: Event) -> Recorded {
    Recorded {
        meta: EventMeta {
            event_id: Uuid::now_v7(),
            stream_id,
            stream_version: 2,
            position: Some(Position(position)),
            event_type: event.event_type().into(),
            schema_version: 1,
            occurred_at: at(),
            actor: Actor::system("test"),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
        },
        event,
    }
}

/// The row error a batch of `events` for `projection` fails with.
async fn row_error(pool: &PgPool, projection: &dyn Projection, events: &[Recorded]) -> RowError {
    let store = EventStore::new(pool.clone());
    let before = checkpoint(pool, projection.name()).await.unwrap();
    let error = apply_in_order(pool, &store, projection, events).await.unwrap_err();
    assert_eq!(checkpoint(pool, projection.name()).await.unwrap(), before, "the checkpoint stays");
    match error {
        WorkerError::Apply(ApplyError::Row(error)) => error,
        other => panic!("not a row error: {other}"),
    }
}

#[tokio::test]
async fn a_stored_row_that_does_not_decode_fails_the_batch_naming_table_and_row() {
    let name = format!("devart_projections_rows_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", server_url())).await.unwrap();
    sqlx::query(&format!("create database {name}")).execute(&mut admin).await.unwrap();
    let pool = devart_commands::db::connect(&format!("{}/{name}", server_url()), 4).await.unwrap();
    devart_commands::db::migrate(&pool).await.unwrap();

    // A task whose status is not one: not taken for a pending task.
    let task = Uuid::now_v7();
    sqlx::query(
        "insert into tasks (id, title, description, status, priority, required_capabilities, version, position, \
                            created_at, updated_at, created_by) \
         values ($1, 'a task', '', 'PENDNG', 3, '{}', 1, 1, $2, $2, 'system:test')",
    )
    .bind(task)
    .bind(at())
    .execute(&pool)
    .await
    .unwrap();
    let renamed = Event::Task(TaskEvent::Updated {
        title: Some("renamed".into()),
        description: None,
        required_capabilities: None,
    });
    let events = [recorded(StreamId::new(Task::KIND, task), 1, renamed.clone())];
    let error = row_error(&pool, &TasksProjection, &events).await;
    assert_eq!((error.table.as_str(), error.column.as_str()), ("tasks", "status"));
    assert_eq!(error.row, task.to_string());
    assert!(error.to_string().contains("PENDNG"), "{error}");

    // Its errors column, not a list of attempt errors: not taken for none.
    sqlx::query("update tasks set status = 'PENDING', errors = '{\"attempt\": 1}' where id = $1")
        .bind(task)
        .execute(&pool)
        .await
        .unwrap();
    let error = row_error(&pool, &TasksProjection, &events).await;
    assert_eq!((error.table.as_str(), error.column.as_str(), error.row.clone()), ("tasks", "errors", task.to_string()));

    // Mended, the same batch applies.
    sqlx::query("update tasks set errors = '[]' where id = $1").bind(task).execute(&pool).await.unwrap();
    let store = EventStore::new(pool.clone());
    let (changed, position) = apply_in_order(&pool, &store, &TasksProjection, &events).await.unwrap();
    assert_eq!((changed.len(), position), (1, Position(1)));
    let title: String =
        sqlx::query_scalar("select title from tasks where id = $1").bind(task).fetch_one(&pool).await.unwrap();
    assert_eq!(title, "renamed");

    // A person whose role is not one: not taken for a viewer.
    let user = Uuid::now_v7();
    sqlx::query(
        "insert into users (id, email, role, active, version, position, created_at, updated_at) \
         values ($1, 'a@example.org', 'root', true, 1, 1, $2, $2)",
    )
    .bind(user)
    .bind(at())
    .execute(&pool)
    .await
    .unwrap();
    let events = [recorded(StreamId::new(User::KIND, user), 1, Event::User(UserEvent::Deactivated))];
    let error = row_error(&pool, &UsersProjection, &events).await;
    assert_eq!((error.table.as_str(), error.column.as_str(), error.row.clone()), ("users", "role", user.to_string()));

    // A service whose folded state does not decode: the batch does not start from nothing.
    let service = Uuid::now_v7();
    sqlx::query(
        "insert into services (id, name, status, monthly_budget_micros, spent_micros, reserved_micros, period, \
                               state, version, position, updated_at) \
         values ($1, 'gpt', 'ACTIVE', 0, 0, 0, '2026-11', '{\"id\": 7}', 1, 1, $2)",
    )
    .bind(service)
    .bind(at())
    .execute(&pool)
    .await
    .unwrap();
    let events = [recorded(StreamId::new(Service::KIND, service), 1, Event::Service(ServiceEvent::Activated))];
    let error = row_error(&pool, &ServicesProjection, &events).await;
    assert_eq!(
        (error.table.as_str(), error.column.as_str(), error.row.clone()),
        ("services", "state", service.to_string())
    );

    pool.close().await;
    sqlx::query(&format!("drop database {name} with (force)")).execute(&mut admin).await.unwrap();
}
