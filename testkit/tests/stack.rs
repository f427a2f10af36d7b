//! The kit against the real Postgres and NATS: a stack is a migrated database and a stream of its
//! own, and leaves nothing behind; a devart that cannot start says why instead of hanging.

use devart::Role;
use devart_testkit::{Error, Server, Stack, StackOptions};
use serde_json::json;
use sqlx::Connection;

async fn database_exists(admin_url: &str, name: &str) -> bool {
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stack_is_a_migrated_database_and_a_stream_of_its_own_and_is_removed_without_trace() {
    let options = StackOptions::for_tests();
    let admin_url = format!("{}/postgres", options.postgres_url);
    let stack = Stack::create(options).await.unwrap();
    let name = stack.database().to_owned();
    assert!(database_exists(&admin_url, &name).await);
    let events: i64 = sqlx::query_scalar("select count(*) from events").fetch_one(&stack.pool).await.unwrap();
    assert_eq!(events, 0, "a fresh store");
    let stream = stack.bus.names.stream();
    stack.bus.jetstream.get_stream(&stream).await.expect("the stack's event stream");

    let server = Server::start(&stack.config, &[Role::Gateway]).await.unwrap();
    let me = server.client().data("{ me { role } }", json!({})).await.unwrap();
    assert_eq!(me["me"]["role"], "ADMIN", "{me}");
    let refused = server.client().anonymous().data("{ me { role } }", json!({})).await.unwrap_err();
    assert!(matches!(refused, Error::Graphql(_)), "{refused:?}");
    server.stop().await.unwrap();

    let bus = stack.bus.clone();
    stack.remove().await.unwrap();
    assert!(!database_exists(&admin_url, &name).await, "the database is dropped");
    assert!(bus.jetstream.get_stream(&stream).await.is_err(), "the stream is deleted");
}

#[tokio::test]
async fn a_devart_that_cannot_start_says_why() {
    let stack = Stack::create(StackOptions::for_tests()).await.unwrap();
    let mut config = stack.config.clone();
    // A database that does not exist: devart's roles end at once.
    config.database_url = format!("{}_missing", config.database_url);
    let error = Server::start(&config, &[Role::Gateway]).await.err().expect("no server");
    assert!(matches!(error, Error::Stopped(_)), "{error:?}");
    stack.remove().await.unwrap();
}

#[tokio::test]
async fn names_that_would_not_survive_sql_are_refused_before_anything_is_made() {
    let options = StackOptions { database: "devart_t; drop database postgres".into(), ..StackOptions::for_tests() };
    let error = Stack::create(options).await.err().expect("refused");
    assert!(matches!(error, Error::InvalidName(_)), "{error:?}");
}
