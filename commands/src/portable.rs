//! Moving a history between instances: importing exported events into an empty instance, and
//! bringing the write-side tables (the task queue, the budget snapshots) in step with them.

use devart_domain::agent::{Agent, AgentStatus};
use devart_domain::claims::{Claims, CLAIMS_ID};
use devart_domain::service::Service;
use devart_domain::task::Task;
use devart_domain::user::{User, UserStatus};
use devart_domain::{Aggregate, StreamId};
use uuid::Uuid;

use crate::entry::Commands;
use crate::handler::CommandError;
use crate::store::{fold, EventStore, Recorded, StoreError, Stored};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the instance already holds events; import only into an empty one")]
    NotEmpty,
    #[error("event {0} has no position; export sequenced events only")]
    Unsequenced(Uuid),
    #[error("events must come in position order without gaps: expected position {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> Self {
        ImportError::Store(StoreError::Db(e))
    }
}

/// Writes exported events into an empty store, each at its original position, stream version,
/// time, actor and correlation; `next` is the position the batch must start at. Returns the next
/// position expected.
pub async fn import_batch(store: &EventStore, batch: &[Recorded], next: u64) -> Result<u64, ImportError> {
    if next == 1 && store.head().await?.0 > 0 {
        return Err(ImportError::NotEmpty);
    }
    let mut expected = next;
    let (mut ids, mut streams, mut versions, mut positions, mut types, mut schemas, mut payloads) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut times, mut kinds, mut actors, mut correlations, mut causations, mut commands) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for recorded in batch {
        let m = &recorded.meta;
        let position = m.position.ok_or(ImportError::Unsequenced(m.event_id))?.0;
        if position != expected {
            return Err(ImportError::OutOfOrder { expected, got: position });
        }
        expected += 1;
        let (event_type, schema_version, payload) = crate::codec::encode(&recorded.event);
        ids.push(m.event_id);
        streams.push(m.stream_id.as_str().to_owned());
        versions.push(m.stream_version as i64);
        positions.push(position as i64);
        types.push(event_type);
        schemas.push(schema_version as i16);
        payloads.push(payload);
        times.push(m.occurred_at);
        kinds.push(m.actor.kind.as_str());
        actors.push(m.actor.id.clone());
        correlations.push(m.correlation_id);
        causations.push(m.causation_id);
        // The original command ids do not travel; one derived from the event stands in.
        commands.push(Uuid::new_v5(&m.event_id, b"imported"));
    }
    sqlx::query(
        "insert into events (event_id, stream_id, stream_version, position, event_type, schema_version, payload, \
                             occurred_at, actor_kind, actor_id, correlation_id, causation_id, command_id) \
         select * from unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::smallint[], \
                              $7::bytea[], $8::timestamptz[], $9::text[], $10::text[], $11::uuid[], $12::uuid[], \
                              $13::uuid[])",
    )
    .bind(&ids)
    .bind(&streams)
    .bind(&versions)
    .bind(&positions)
    .bind(&types)
    .bind(&schemas)
    .bind(&payloads)
    .bind(&times)
    .bind(&kinds)
    .bind(&actors)
    .bind(&correlations)
    .bind(&causations)
    .bind(&commands)
    .execute(store.pool())
    .await?;
    Ok(expected)
}

/// What [`Commands::restore_write_side`] rebuilt: how many tasks, services, agents and users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub tasks: usize,
    pub services: usize,
    pub agents: usize,
    pub users: usize,
}

/// The stand-in for a secret that does not travel: not a PHC string, so it verifies nothing.
const NO_SECRET: &str = "!";

impl Commands {
    /// Rebuilds the write-side tables derived from the events: the task queue, the budget
    /// snapshots, the tasks' spend, the agents' key rows, the people's credentials and the claim gate. Secrets are never in the
    /// events: an imported agent's key and an imported person's password verify nothing until
    /// `rotateAgentKey` and `resetPassword` give them new ones; their activation, capabilities,
    /// addresses and roles come along.
    pub async fn restore_write_side(&self) -> Result<Restored, CommandError> {
        let pool = self.store().pool();
        let streams = |kind: &'static str| {
            sqlx::query_scalar::<_, String>("select distinct stream_id from events where stream_id like $1 || '-%'")
                .bind(kind)
                .fetch_all(pool)
        };
        // A stream id that is not one is damage to report, not a stream to leave out.
        let folded = |stream: &String| {
            let stream = StreamId::parse(stream).map_err(|message| StoreError::Undecodable {
                table: "events",
                key: format!("of stream `{stream}`"),
                message,
            });
            async move { Ok::<_, CommandError>(self.store().read_stream(&stream?, None).await?) }
        };
        // Every task's and agent's spend is summed anew from the services' events below (the caps
        // come back with the tasks' and agents' own events).
        sqlx::query("delete from task_spending").execute(pool).await?;
        sqlx::query("delete from agent_spending").execute(pool).await?;
        let tasks = streams(Task::KIND).await?;
        for stream in &tasks {
            let recorded = folded(stream).await?;
            let task = fold::<Task>(&recorded);
            crate::queue::sync(&task.state, task.created_at.unwrap_or_default()).execute(pool).await?;
        }
        let services = streams(Service::KIND).await?;
        for stream in &services {
            let recorded = folded(stream).await?;
            let service = fold::<Service>(&recorded);
            crate::budgets::write_snapshot(pool, service.state.id, service.version, &service.state).await?;
            // Day by day, so that each agent's row ends with what it settled on its last day.
            let mut before = devart_domain::service::ServiceState::default();
            for day in recorded.chunk_by(|a, b| a.meta.occurred_at.date_naive() == b.meta.occurred_at.date_naive()) {
                let events: Vec<_> = day.iter().filter_map(|r| Service::unwrap(&r.event).cloned()).collect();
                let moves = crate::spending::moved(&before, &events);
                if let Some(change) = crate::spending::and_moved(None, &moves, day[0].meta.occurred_at.date_naive()) {
                    change.execute(pool).await?;
                }
                before = events.iter().fold(before, Service::evolve);
            }
        }
        let agents = streams(Agent::KIND).await?;
        for stream in &agents {
            let recorded = folded(stream).await?;
            let agent = fold::<Agent>(&recorded).state;
            crate::spending::agent_cap(agent.id, agent.daily_spending_cap).execute(pool).await?;
            sqlx::query(
                "insert into agent_keys (key_id, agent_id, secret_hash, active, capabilities) \
                 values ($1, $2, $3, $4, $5) on conflict do nothing",
            )
            .bind(&agent.key_id)
            .bind(agent.id)
            .bind(NO_SECRET)
            .bind(agent.status == AgentStatus::Active)
            .bind(&agent.capabilities)
            .execute(pool)
            .await?;
        }
        let users = streams(User::KIND).await?;
        for stream in &users {
            let recorded = folded(stream).await?;
            let user = fold::<User>(&recorded).state;
            sqlx::query(
                "insert into user_credentials (user_id, email, password_hash, role, active) \
                 values ($1, $2, $3, $4, $5) on conflict do nothing",
            )
            .bind(user.id)
            .bind(&user.email)
            .bind(NO_SECRET)
            .bind(user.role.as_str())
            .bind(user.status == UserStatus::Active)
            .execute(pool)
            .await?;
        }
        // The claim gate: the pauses in effect when the events end.
        let gate = StreamId::new(Claims::KIND, CLAIMS_ID);
        let pauses = fold::<Claims>(&self.store().read_stream(&gate, None).await?).state;
        crate::claims::sync(&pauses).execute(pool).await?;
        Ok(Restored { tasks: tasks.len(), services: services.len(), agents: agents.len(), users: users.len() })
    }
}
