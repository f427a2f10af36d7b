//! Time travel: an aggregate as it stood at any position or moment, and each event's change.

use chrono::TimeDelta;
use devart::Role;
use devart_commands::queue::ClaimRequest;
use devart_domain::agent::AgentName;
use devart_domain::task::{Capabilities, CreateTask, Task, TaskCommand, Title};
use devart_domain::{Actor, Position};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::TestEnv;

#[tokio::test]
async fn task_at_three_moments_returns_three_states_and_history_shows_each_change() {
    let env = TestEnv::new().await;
    let commands = env.commands();
    let (agent, _) = commands
        .agents()
        .register(AgentName::parse("ada").unwrap(), Capabilities::default(), &env.context())
        .await
        .unwrap();
    let agent = agent.state.id;
    let id = Uuid::now_v7();
    commands.tasks().create(CreateTask::new(id, Title::parse("write docs").unwrap()), &env.context()).await.unwrap();
    let agent_context = || devart_commands::CommandContext::new(Actor::agent(agent.to_string()));
    let claim = ClaimRequest { agent_id: agent, capabilities: vec![], lease: TimeDelta::seconds(60) };
    commands.tasks().claim(&claim, &agent_context()).await.unwrap().expect("claimed");
    let complete = TaskCommand::Complete { agent_id: agent, result: None };
    commands.execute::<Task>(id, complete, &agent_context(), None).await.unwrap();
    env.sequence_all().await;
    let positions: Vec<(i64, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("select position, occurred_at from events where stream_id = $1 order by stream_version")
            .bind(format!("task-{id}"))
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(positions.len(), 3);

    let running = env.start(&[Role::Gateway]).await;
    let task_at = |at: String| {
        let running = &running;
        async move {
            let body = running
                .graphql(
                    "query($id: ID!, $at: String!) { taskAt(id: $id, at: $at) { status attempt lease { agentId } } }",
                    json!({ "id": id, "at": at }),
                )
                .await;
            body["data"]["taskAt"].clone()
        }
    };
    let before = positions[0].0 - 1;
    assert_eq!(task_at(before.to_string()).await, Value::Null, "not created yet");
    let states: Vec<Value> = futures::future::join_all(positions.iter().map(|(p, _)| task_at(p.to_string()))).await;
    let statuses: Vec<&str> = states.iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["PENDING", "IN_PROGRESS", "COMPLETED"]);
    assert_eq!(states[1]["lease"]["agentId"], agent.to_string());
    // The same by time.
    let by_time = task_at(positions[1].1.to_rfc3339()).await;
    assert_eq!(by_time["status"], "IN_PROGRESS");
    let bad = running
        .graphql("{ taskAt(id: \"00000000-0000-0000-0000-000000000000\", at: \"yesterday\") { id } }", json!({}))
        .await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    let history = running
        .graphql(
            "query($s: String!) { history(streamId: $s) { event { type position } changes } }",
            json!({ "s": format!("task-{id}") }),
        )
        .await;
    let entries = history["data"]["history"].as_array().unwrap_or_else(|| panic!("{history}"));
    let types: Vec<&str> = entries.iter().map(|e| e["event"]["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["TaskCreated", "TaskClaimed", "TaskCompleted"]);
    assert_eq!(entries[0]["changes"]["status"], json!({ "from": "ABSENT", "to": "PENDING" }));
    assert_eq!(entries[1]["changes"]["status"], json!({ "from": "PENDING", "to": "IN_PROGRESS" }));
    assert_eq!(entries[1]["changes"]["attempt"], json!({ "from": 0, "to": 1 }));
    assert_eq!(entries[2]["changes"]["status"], json!({ "from": "IN_PROGRESS", "to": "COMPLETED" }));
    assert!(entries[2]["changes"].get("title").is_none(), "only what changed");

    let agent_at = running
        .graphql(
            "query($id: ID!, $at: String!) { agentAt(id: $id, at: $at) { name active } }",
            json!({ "id": agent, "at": positions[0].0.to_string() }),
        )
        .await;
    assert_eq!(agent_at["data"]["agentAt"], json!({ "name": "ada", "active": true }));
    assert_eq!(Position(positions[2].0 as u64), env.store.head().await.unwrap());
    running.stop().await;
    env.cleanup().await;
}
