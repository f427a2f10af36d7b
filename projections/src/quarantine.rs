//! Quarantine: a reactor that switches off an agent failing attempt after attempt.
//!
//! It counts each agent's failed attempts in a row (reported failures and expired leases; a
//! completed task, or the agent's activation, starts the count again) in `agent_failure_streaks`,
//! which commits with its checkpoint. When a count reaches `agents.quarantineAfterFailures` the
//! agent is quarantined (`AgentQuarantined`: deactivated with the reason kept, its tasks back in
//! the queue) by a command whose id is derived from the failure that reached it, so a batch
//! reacted to again after a crash quarantines no one twice. A supervisor activates the agent again.

use std::collections::HashMap;

use devart_commands::{Commands, Recorded};
use devart_domain::agent::{Agent, AgentEvent};
use devart_domain::task::TaskEvent;
use devart_domain::Event;
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{ApplyError, Reactor};

pub struct Quarantine {
    commands: Commands,
}

impl Quarantine {
    pub const NAME: &'static str = "quarantine";

    pub fn new(commands: Commands) -> Quarantine {
        Quarantine { commands }
    }

    async fn react(&self, conn: &mut PgConnection, events: &[Recorded]) -> Result<(), ApplyError> {
        let agents: Vec<Uuid> = events.iter().filter_map(agent_of).collect();
        if agents.is_empty() {
            return Ok(());
        }
        let stored: Vec<(Uuid, i32)> =
            sqlx::query_as("select agent_id, streak from agent_failure_streaks where agent_id = any($1)")
                .bind(&agents)
                .fetch_all(&mut *conn)
                .await?;
        let mut streaks: HashMap<Uuid, u32> = stored.into_iter().map(|(a, s)| (a, s.max(0) as u32)).collect();
        let limit = self.commands.settings().current().quarantine_after_failures();
        for recorded in events {
            let Some(agent_id) = agent_of(recorded) else { continue };
            let streak = streaks.entry(agent_id).or_default();
            match &recorded.event {
                Event::Task(TaskEvent::AttemptFailed { .. } | TaskEvent::LeaseExpired { .. }) => {
                    *streak += 1;
                    if limit.is_some_and(|limit| *streak >= limit) {
                        let reason = format!("{streak} failed attempts in a row");
                        let context = crate::caused_by(Quarantine::NAME, recorded, agent_id);
                        self.commands.agents().quarantine(agent_id, *streak, reason, &context).await?;
                        tracing::warn!(agent = %agent_id, failures = *streak, "agent quarantined");
                        *streak = 0;
                    }
                }
                _ => *streak = 0,
            }
        }
        let (ids, counts): (Vec<Uuid>, Vec<i32>) = streaks.into_iter().map(|(a, s)| (a, s as i32)).unzip();
        sqlx::query(
            "insert into agent_failure_streaks (agent_id, streak) select * from unnest($1::uuid[], $2::int[]) \
             on conflict (agent_id) do update set streak = excluded.streak",
        )
        .bind(&ids)
        .bind(&counts)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// The agent whose count `recorded` moves: a failed or completed attempt, or its activation.
fn agent_of(recorded: &Recorded) -> Option<Uuid> {
    match &recorded.event {
        Event::Task(
            TaskEvent::AttemptFailed { agent_id, .. }
            | TaskEvent::LeaseExpired { agent_id, .. }
            | TaskEvent::Completed { agent_id, .. },
        ) => Some(*agent_id),
        Event::Agent(AgentEvent::Activated) => recorded.meta.stream_id.id_of(<Agent as devart_domain::Aggregate>::KIND),
        _ => None,
    }
}

impl Reactor for Quarantine {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn react<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Quarantine::react(self, conn, events).boxed()
    }
}
