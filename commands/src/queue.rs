//! The task queue: the write-side table claims are made from, kept in step with task events.
//!
//! `task_queue` holds one row per task that waits (`pending`) or is being worked (`claimed`). Every
//! task command writes the row its new state calls for in the very statement that appends its
//! events ([`sync`], through [`Stored::beside`]), so the queue and the events
//! never disagree. A claim locks the best fitting pending row with `FOR UPDATE SKIP LOCKED`, decides the
//! claim against the task's stream in the same transaction and appends `TaskClaimed`: concurrent
//! claimers never wait for each other and never get the same task. Should two ever pick the same
//! stream version anyway, the event store's expected-version check refuses the second.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use devart_domain::task::{CreateTask, Task, TaskCommand, TaskState, TaskStatus};
use devart_domain::{Actor, ActorKind, Aggregate, DomainError, Event, StreamId};
use rand::Rng;
use sqlx::{Arguments, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::entry::Commands;
use crate::handler::CommandError;
use crate::store::{self, fold, Beside, CommandContext, Folded, StoreError, Stored};

/// Leases last 30 s unless the claim asks otherwise; between 5 s and 1 h.
pub const LEASE_DEFAULT: TimeDelta = TimeDelta::seconds(30);
pub const LEASE_MIN: TimeDelta = TimeDelta::seconds(1);
pub const LEASE_MAX: TimeDelta = TimeDelta::hours(1);
/// How often the reaper looks for leases that ran out.
pub const REAPER_INTERVAL: Duration = Duration::from_millis(250);
/// How many claims are retried when a concurrent writer changed the picked task.
const CLAIM_RETRIES_MAX: usize = 16;

/// The change that writes the queue row `state` calls for: a pending or claimed row while the task
/// waits or is worked, none once it is over; its spending cap, if it has one; and when its first
/// pending request for approval runs out, if it has one.
pub(crate) fn sync(state: &TaskState, now: DateTime<Utc>) -> Beside {
    let queue = match state.status {
        TaskStatus::Pending => queued(state, "pending", now),
        TaskStatus::InProgress => queued(state, "claimed", now),
        _ => Beside::new("delete from task_queue where task_id = $1", |a| a.add(state.id)),
    };
    let queue = match state.max_cost {
        Some(max_cost) => crate::spending::cap(queue, state.id, max_cost),
        None => queue,
    };
    if state.approvals.is_empty() {
        return queue;
    }
    match state.approval_due() {
        Some(due) => queue.and(
            "insert into approval_deadlines (task_id, due) values ($1, $2) \
             on conflict (task_id) do update set due = excluded.due",
            |a| {
                a.add(state.id)?;
                a.add(due)
            },
        ),
        None => queue.and("delete from approval_deadlines where task_id = $1", |a| a.add(state.id)),
    }
}

/// The change that writes `state`'s queue row, `queued` (`pending` or `claimed`).
fn queued(state: &TaskState, queued: &'static str, now: DateTime<Utc>) -> Beside {
    let lease = state.lease.filter(|_| state.status == TaskStatus::InProgress);
    Beside::new(
        "insert into task_queue (task_id, priority, created_at, run_after, required_capabilities, state, agent_id, \
                                 lease_expires_at, failures, workflow_id) \
         values ($1, $2, $3, coalesce($4, '-infinity'), $5, $6, $7, $8, $9, $10) \
         on conflict (task_id) do update set priority = excluded.priority, run_after = excluded.run_after, \
             required_capabilities = excluded.required_capabilities, state = excluded.state, \
             agent_id = excluded.agent_id, lease_expires_at = excluded.lease_expires_at, \
             failures = excluded.failures, workflow_id = excluded.workflow_id",
        |a| {
            a.add(state.id)?;
            a.add(i16::from(state.priority))?;
            a.add(now)?;
            a.add(state.run_after)?;
            a.add(&state.required_capabilities)?;
            a.add(queued)?;
            a.add(lease.map(|l| l.agent_id))?;
            a.add(lease.map(|l| l.expires_at))?;
            a.add(state.failures as i32)?;
            a.add(state.stage.as_ref().and_then(|s| s.workflow_id))
        },
    )
}

impl Stored for Task {
    fn wrap(event: Self::Event) -> Event {
        Event::Task(event)
    }
    fn unwrap(event: &Event) -> Option<&Self::Event> {
        match event {
            Event::Task(e) => Some(e),
            _ => None,
        }
    }

    /// The task queue.
    fn beside(state: &TaskState, now: DateTime<Utc>) -> Option<Beside> {
        Some(sync(state, now))
    }
}

/// What a heartbeat answers.
#[derive(Debug, Clone)]
pub struct Beat {
    /// The task after the heartbeat.
    pub task: Folded<TaskState>,
    /// A pause stopped the work, for this reason: the task is back in the queue and the agent is
    /// to stop working on it.
    pub stop: Option<String>,
}

/// What an agent asks for when it claims.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub agent_id: Uuid,
    /// The capabilities to claim with: tasks requiring only these (or fewer) fit.
    pub capabilities: Vec<String>,
    pub lease: TimeDelta,
}

/// The task queue's commands: `commands.tasks()`.
#[derive(Clone, Copy)]
pub struct Tasks<'a> {
    commands: &'a Commands,
}

impl Commands {
    /// The task queue's commands: creating tasks, claiming them, expiring and releasing leases.
    pub fn tasks(&self) -> Tasks<'_> {
        Tasks { commands: self }
    }
}

impl Tasks<'_> {
    /// Creates a task; its parent, if named, must exist. An agent creates tasks only as successors
    /// of a task it holds.
    pub async fn create(
        self,
        command: CreateTask,
        context: &CommandContext,
    ) -> Result<Folded<TaskState>, CommandError> {
        let agent = (context.actor.kind == ActorKind::Agent).then(|| Uuid::parse_str(&context.actor.id).ok()).flatten();
        match command.parent_task_id {
            Some(parent) => {
                let parent_state = self.commands.load::<Task>(parent).await?.state;
                if matches!(parent_state.status, TaskStatus::Absent | TaskStatus::Deleted) {
                    return Err(DomainError::invalid("parentTaskId", format!("task {parent} does not exist")).into());
                }
                let holds = |agent: Uuid| {
                    parent_state.status == TaskStatus::InProgress
                        && parent_state.lease.is_some_and(|l| l.agent_id == agent)
                };
                if let Some(agent) = agent.filter(|a| !holds(*a)) {
                    return Err(DomainError::Forbidden(format!(
                        "agent {agent} does not hold task {parent}; successors are created by the task's agent"
                    ))
                    .into());
                }
            }
            None if context.actor.kind == ActorKind::Agent => {
                return Err(DomainError::Forbidden(
                    "an agent creates tasks only as successors of a task it holds (give parentTaskId)".into(),
                )
                .into());
            }
            None => {}
        }
        self.commands.execute::<Task>(command.id, TaskCommand::Create(command), context, None).await
    }

    /// Claims the most important due task the agent can do: highest priority, then oldest. `None`
    /// when nothing fits, or what fits is paused. The agent must be active (checked in the claim's
    /// transaction, so a deactivation is never overtaken by a claim), and a pause is never
    /// overtaken either ([`crate::claims`]).
    pub async fn claim(
        self,
        request: &ClaimRequest,
        context: &CommandContext,
    ) -> Result<Option<Folded<TaskState>>, CommandError> {
        let stream_prefix = format!("{}-", Task::KIND);
        for _ in 0..CLAIM_RETRIES_MAX {
            let now = Utc::now();
            let mut tx = self.commands.store().pool().begin().await?;
            // Before the gate is read: a pause being appended is waited for, then seen.
            crate::claims::hold_shared(&mut tx).await?;
            // Picks, locks and reads the task's stream in one go, outside the paused scopes (a
            // pause of everything stops the pick before it reads the queue).
            let rows = sqlx::query(&format!(
                "with agent as (select 1 from agent_keys where agent_id = $3 and active for share), \
                      gate as (select all_paused, capabilities, workflows from claim_gate where id = 1), \
                      picked as materialized ( \
                          select q.task_id from task_queue q \
                          where q.state = 'pending' and q.run_after <= $1 and q.required_capabilities <@ $2 \
                            and exists (select 1 from agent) \
                            and exists (select 1 from gate where not all_paused) \
                            and not (q.required_capabilities && (select capabilities from gate)) \
                            and (q.workflow_id is null or not (array[q.workflow_id] <@ (select workflows from gate))) \
                          order by q.priority desc, q.created_at, q.task_id \
                          limit 1 for update of q skip locked) \
                 select picked.task_id, {} from picked \
                 left join events e on e.stream_id = $4 || picked.task_id::text \
                 order by e.stream_version",
                store::COLUMNS
            ))
            .bind(now)
            .bind(&request.capabilities)
            .bind(request.agent_id)
            .bind(&stream_prefix)
            .fetch_all(&mut *tx)
            .await?;
            let Some(task_id) = rows.first().map(|row| row.get::<Uuid, _>("task_id")) else {
                tx.rollback().await?;
                return Ok(None);
            };
            let recorded = rows
                .iter()
                .filter(|row| row.get::<Option<Uuid>, _>("event_id").is_some())
                .map(store::decode_row)
                .collect::<Result<Vec<_>, _>>()?;
            if recorded.is_empty() {
                // A row without a task: nothing to claim, nothing to keep.
                sqlx::query("delete from task_queue where task_id = $1").bind(task_id).execute(&mut *tx).await?;
                tx.commit().await?;
                continue;
            }
            let stream_id = StreamId::new(Task::KIND, task_id);
            let mut folded = fold::<Task>(&recorded);
            let command = TaskCommand::Claim { agent_id: request.agent_id, now, lease_expires_at: now + request.lease };
            let events = match Task::decide(&folded.state, &command) {
                Ok(events) => events,
                Err(refused) => {
                    // The row and the stream disagree; the stream is the truth: mend the row.
                    tracing::warn!(%task_id, %refused, "queue row out of step with its task; mending it");
                    sync(&folded.state, now).execute(&mut *tx).await?;
                    tx.commit().await?;
                    continue;
                }
            };
            let after = events.iter().fold(folded.state.clone(), Task::evolve);
            let wrapped: Vec<Event> = events.into_iter().map(Event::Task).collect();
            let beside = Some(sync(&after, now));
            match store::append_beside_with(&mut *tx, &stream_id, folded.version, &wrapped, context, beside).await {
                Ok(appended) => {
                    tx.commit().await?;
                    self.commands.engine().appended().await;
                    folded.state = after;
                    folded.version = appended.stream_version;
                    folded.updated_at = Some(appended.occurred_at);
                    self.commands.engine().appended_state(&stream_id, folded.clone());
                    return Ok(Some(folded));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::DuplicateCommand(_)) => {
                    // A retried claim: answer with what the first one claimed.
                    drop(tx);
                    return self.claimed_by(context).await.map(Some);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(DomainError::Conflict("the queue is too busy; try again".into()).into())
    }

    async fn claimed_by(self, context: &CommandContext) -> Result<Folded<TaskState>, CommandError> {
        let outcome = self
            .commands
            .store()
            .command_outcome(context.command_id)
            .await?
            .ok_or(CommandError::CommandIdReused(context.command_id))?;
        let stream_id = StreamId::parse(&outcome.stream_id)
            .ok()
            .filter(|s| s.id_of(Task::KIND).is_some())
            .ok_or(CommandError::CommandIdReused(context.command_id))?;
        Ok(fold::<Task>(&self.commands.store().read_stream(&stream_id, Some(outcome.stream_version)).await?))
    }

    /// Extends `agent_id`'s lease on `task_id` to `lease_expires_at`, unless a pause that stops work
    /// under way covers the task: then the task goes back to the queue, no attempt used, and the
    /// answer says why the agent is to stop.
    pub async fn heartbeat(
        self,
        task_id: Uuid,
        agent_id: Uuid,
        lease_expires_at: DateTime<Utc>,
        context: &CommandContext,
    ) -> Result<Beat, CommandError> {
        let pauses = crate::claims::current(self.commands.store().pool()).await?;
        let command = TaskCommand::Heartbeat { agent_id, lease_expires_at, pauses: pauses.clone() };
        let folded = self.commands.execute::<Task>(task_id, command, context, None).await?;
        let held = folded.state.lease.is_some_and(|l| l.agent_id == agent_id);
        let released = !held && folded.state.status == TaskStatus::Pending;
        let stop = pauses.stop_reason(&folded.state).filter(|_| released);
        Ok(Beat { task: folded, stop })
    }

    /// Puts back in the queue every task whose lease ran out by `now`; returns how many.
    pub async fn expire_leases(self, now: DateTime<Utc>, limit: i64) -> Result<usize, CommandError> {
        let expired: Vec<Uuid> = sqlx::query_scalar(
            "select task_id from task_queue where state = 'claimed' and lease_expires_at <= $1 \
             order by lease_expires_at limit $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.commands.store().pool())
        .await?;
        self.on_each(expired, "leases", || TaskCommand::ExpireLease { now, jitter: rand::thread_rng().gen() }).await
    }

    /// Brings every pending request for approval that ran out by `now` to its default; returns
    /// for how many tasks.
    pub async fn time_out_approvals(self, now: DateTime<Utc>, limit: i64) -> Result<usize, CommandError> {
        let due: Vec<Uuid> =
            sqlx::query_scalar("select task_id from approval_deadlines where due <= $1 order by due limit $2")
                .bind(now)
                .bind(limit)
                .fetch_all(self.commands.store().pool())
                .await?;
        self.on_each(due, "approvals", || TaskCommand::TimeOutApprovals { now }).await
    }

    /// Runs `command()` on each of `tasks` as the system actor `actor`; returns how many it
    /// changed. A refusal means another process, a heartbeat or an outcome got there first:
    /// nothing to do.
    async fn on_each(
        self,
        tasks: Vec<Uuid>,
        actor: &str,
        command: impl Fn() -> TaskCommand,
    ) -> Result<usize, CommandError> {
        let mut count = 0;
        for task_id in tasks {
            let context = CommandContext::new(Actor::system(actor));
            match self.commands.execute::<Task>(task_id, command(), &context, None).await {
                Ok(_) => count += 1,
                Err(CommandError::Domain(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(count)
    }

    /// Puts back in the queue every task `agent_id` holds, without counting a failure.
    pub async fn release_of(
        self,
        agent_id: Uuid,
        reason: &str,
        context: &CommandContext,
    ) -> Result<usize, CommandError> {
        let held: Vec<Uuid> =
            sqlx::query_scalar("select task_id from task_queue where state = 'claimed' and agent_id = $1")
                .bind(agent_id)
                .fetch_all(self.commands.store().pool())
                .await?;
        let mut count = 0;
        for task_id in held {
            let command = TaskCommand::Release { agent_id, reason: reason.to_owned() };
            let mut context = context.clone();
            context.command_id = Uuid::new_v5(&context.command_id, task_id.as_bytes());
            match self.commands.execute::<Task>(task_id, command, &context, None).await {
                Ok(_) => count += 1,
                Err(CommandError::Domain(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(count)
    }
}

/// Expires leases, and requests for approval nobody answered, every [`REAPER_INTERVAL`] until
/// shutdown. Any number of processes may run it:
/// each expiry is a command that only one of them gets to append.
pub async fn run_lease_reaper(commands: Commands, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(REAPER_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        match commands.tasks().expire_leases(Utc::now(), 500).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "leases expired; tasks queued again"),
            Err(error) => tracing::warn!(%error, "expiring leases"),
        }
        match commands.tasks().time_out_approvals(Utc::now(), 500).await {
            Ok(0) => {}
            Ok(tasks) => tracing::info!(tasks, "requests for approval ran out; their defaults apply"),
            Err(error) => tracing::warn!(%error, "timing out requests for approval"),
        }
    }
}
