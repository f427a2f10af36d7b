//! `kill -9` of `devart serve` in the middle of a stream of commands loses nothing and repeats
//! nothing: every acknowledged task is stored once, published once, and on the board once.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{eventually, stream_messages, TestEnv};

const TASKS: usize = 1_000;
const CLIENTS: usize = 8;

fn spawn_serve(env: &TestEnv, listen: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_devart"))
        .arg("serve")
        .env("DATABASE_URL", &env.config.database_url)
        .env("NATS_URL", &env.config.nats_url)
        .env("DEVART_NATS_PREFIX", &env.config.nats_prefix)
        .env("DEVART_JWT_SECRET", &env.config.jwt_secret.as_ref().unwrap().0)
        .env("DEVART_LISTEN", listen)
        .env("DEVART_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("devart serve starts")
}

#[tokio::test]
async fn kill_9_during_a_thousand_create_task_calls_loses_and_repeats_nothing() {
    let env = TestEnv::new().await;
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let url = format!("http://{listen}/graphql");
    let token = env.token(devart_gateway::Role::Admin);
    let mut server = spawn_serve(&env, &listen);

    // Clients retry each call (same Idempotency-Key) until it is acknowledged.
    let acknowledged: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    let next = Arc::new(Mutex::new(0usize));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, token, acknowledged, next) = (url.clone(), token.clone(), acknowledged.clone(), next.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        if *n == TASKS {
                            return;
                        }
                        *n += 1;
                        *n - 1
                    };
                    loop {
                        let sent = http
                            .post(&url)
                            .bearer_auth(&token)
                            .header("Idempotency-Key", format!("crash-{i}"))
                            .json(&json!({ "query": "mutation($t: String!) { createTask(input: { title: $t }) { id } }", "variables": { "t": format!("task {i}") } }))
                            .send()
                            .await;
                        let id = match sent {
                            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok().and_then(|v| {
                                v["data"]["createTask"]["id"].as_str().map(str::to_owned)
                            }),
                            _ => None,
                        };
                        match id {
                            Some(id) => {
                                acknowledged.lock().unwrap().insert(i, id);
                                break;
                            }
                            None => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
            })
        })
        .collect();

    eventually(Duration::from_secs(60), || async { (acknowledged.lock().unwrap().len() >= TASKS / 3).then_some(()) })
        .await;
    server.kill().expect("kill -9");
    server.wait().unwrap();
    let at_kill = acknowledged.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut server = spawn_serve(&env, &listen);
    for client in clients {
        client.await.unwrap();
    }
    assert!(at_kill < TASKS, "the kill landed in the middle ({at_kill} acknowledged)");
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.len(), TASKS);

    // Let the restarted relay and projection catch up.
    let head = eventually(Duration::from_secs(60), || async {
        let unsequenced: i64 =
            sqlx::query_scalar("select count(*) from events where position is null").fetch_one(&env.pool).await.ok()?;
        let head = env.store.head().await.ok()?;
        (unsequenced == 0 && head.0 >= TASKS as u64).then_some(head)
    })
    .await;
    env.wait_projected("tasks", head.0).await;
    eventually(Duration::from_secs(60), || async {
        let stream = env.bus.jetstream.get_stream(env.bus.names.stream()).await.ok()?;
        (stream.get_info().await.ok()?.state.last_sequence >= head.0).then_some(())
    })
    .await;
    server.kill().unwrap();
    server.wait().unwrap();

    let ids: HashSet<String> = acknowledged.values().cloned().collect();
    assert_eq!(ids.len(), TASKS, "each call made its own task");

    // In the event store, once each, and nothing else.
    let created: Vec<(String, i64)> =
        sqlx::query_as("select stream_id, count(*) from events where event_type = 'TaskCreated' group by stream_id")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(created.len(), TASKS);
    assert!(created.iter().all(|(_, n)| *n == 1), "no task created twice");
    let stored: HashSet<String> = created.into_iter().map(|(s, _)| s.trim_start_matches("task-").to_owned()).collect();
    assert_eq!(stored, ids);
    assert_eq!(head.0, TASKS as u64, "positions are dense: one per event");

    // On JetStream, once each, in order.
    let messages = stream_messages(&env.bus).await;
    assert_eq!(messages.len(), TASKS);
    let mut published = HashSet::new();
    for (i, (seq, headers, _)) in messages.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(headers.get("ce-position").unwrap().as_str(), seq.to_string());
        assert!(published.insert(headers.get("ce-subject").unwrap().as_str().trim_start_matches("task-").to_owned()));
    }
    assert_eq!(published, ids);

    // On the board, once each.
    let rows: Vec<uuid::Uuid> = sqlx::query_scalar("select id from tasks").fetch_all(&env.pool).await.unwrap();
    assert_eq!(rows.len(), TASKS);
    assert_eq!(rows.iter().map(|id| id.to_string()).collect::<HashSet<_>>(), ids);
    env.cleanup().await;
}
