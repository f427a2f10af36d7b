//! The relay: every event published to JetStream once, in global order, as a CloudEvent.

use std::time::Duration;

use devart::{Config, Role};
use devart_commands::{Bus, Nudge};
use devart_domain::task::{Capabilities, CreateTask, Description, Priority, Title};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{eventually, stream_messages, TestEnv};

fn create(title: &str) -> CreateTask {
    CreateTask {
        id: Uuid::now_v7(),
        title: Title::parse(title).unwrap(),
        description: Description::parse("d").unwrap(),
        priority: Priority::parse(4).unwrap(),
        required_capabilities: Capabilities::parse(&["rust"]).unwrap(),
        ..CreateTask::new(Uuid::nil(), Title::parse("t").unwrap())
    }
}

async fn wait_published(env: &TestEnv, count: u64) {
    eventually(Duration::from_secs(20), || async {
        let stream = env.bus.jetstream.get_stream(env.bus.names.stream()).await.ok()?;
        (stream.get_info().await.ok()?.state.last_sequence >= count).then_some(())
    })
    .await;
}

#[tokio::test]
async fn every_event_is_published_once_in_order_as_a_cloudevent_and_a_restart_resumes() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    for i in 0..20 {
        commands.tasks().create(create(&format!("task {i}")), &env.context()).await.unwrap();
    }
    let relay = env.start(&[Role::Relay]).await;
    wait_published(&env, 20).await;
    relay.stop().await;

    // More events while no relay runs; a new relay resumes where the stream ends.
    for i in 20..30 {
        commands.tasks().create(create(&format!("task {i}")), &env.context()).await.unwrap();
    }
    let relay = env.start(&[Role::Relay]).await;
    wait_published(&env, 30).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.stop().await;

    let messages = stream_messages(&env.bus).await;
    assert_eq!(messages.len(), 30, "each event once");
    let stored = env.store.read_all(devart_domain::Position::START, None, 100).await.unwrap();
    for ((seq, headers, payload), recorded) in messages.iter().zip(&stored) {
        let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(Some(*seq), recorded.meta.position.map(|p| p.0), "stream sequence N carries position N");
        assert_eq!(header("ce-position"), Some(seq.to_string()));
        assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(header("ce-id"), Some(recorded.meta.event_id.to_string()));
        assert_eq!(header("Nats-Msg-Id"), Some(recorded.meta.event_id.to_string()));
        assert_eq!(header("ce-type").as_deref(), Some("devart.TaskCreated.v3"));
        assert_eq!(header("ce-subject"), Some(recorded.meta.stream_id.to_string()));
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        let data: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(data["priority"], 4);
        assert_eq!(data["requiredCapabilities"], serde_json::json!(["rust"]));
        let decoded = devart_commands::bus::decode_message(Some(headers), payload).unwrap();
        assert_eq!(&decoded, recorded, "a consumer reads back exactly what was stored");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn commands_are_accepted_while_nats_is_away_and_the_backlog_drains_when_it_returns() {
    let env = TestEnv::new().await;
    // A relay whose NATS is unreachable: sequencing goes on, publishing waits.
    let away = Config { nats_url: "nats://127.0.0.1:1".into(), ..env.config.clone() };
    let away_bus = Bus::connect(&away.nats_url, env.bus.names.clone()).await.unwrap();
    let commands = devart_commands::Commands::new(env.store.clone(), Nudge::default(), Some(away_bus.clone()));
    let shutdown = CancellationToken::new();
    let sequenced = Nudge::default();
    let sequencer = tokio::spawn(devart_commands::relay::run_sequencer(
        env.store.clone(),
        Some(away_bus.clone()),
        Nudge::default(),
        sequenced.clone(),
        shutdown.clone(),
    ));
    let publisher =
        tokio::spawn(devart_commands::relay::run_publisher(env.store.clone(), away_bus, sequenced, shutdown.clone()));
    let started = std::time::Instant::now();
    for i in 0..50 {
        commands.tasks().create(create(&format!("offline {i}")), &env.context()).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(5), "commands do not wait for NATS");
    eventually(Duration::from_secs(10), || async { (env.store.head().await.unwrap().0 == 50).then_some(()) }).await;
    assert_eq!(stream_messages(&env.bus).await.len(), 0);
    shutdown.cancel();
    sequencer.await.unwrap();
    publisher.await.unwrap();

    // NATS is back (a relay that reaches it): the backlog drains, in order, once.
    let relay = env.start(&[Role::Relay]).await;
    wait_published(&env, 50).await;
    relay.stop().await;
    let messages = stream_messages(&env.bus).await;
    assert_eq!(messages.len(), 50);
    assert!(messages.iter().enumerate().all(|(i, (seq, _, _))| *seq == i as u64 + 1));
    env.cleanup().await;
}
