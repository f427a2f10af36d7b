//! Agents at work: claiming tasks, keeping them, reporting their outcome; supervisors steering
//! the queue.

use async_graphql::{Context, Json, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, TimeDelta, Utc};
use devart_commands::queue::{ClaimRequest, LEASE_MAX, LEASE_MIN};
use devart_domain::task::{Message, Percent, Task as TaskAggregate, TaskCommand, TaskStatus as DomainTaskStatus};
use futures::{Stream, StreamExt};
use rand::Rng;
use sqlx::PgConnection;
use uuid::Uuid;

use super::claims::ClaimPause;
use super::tasks::Task;
use super::{caller, command_context, document, domain, parse_id, person, read, require, services};
use crate::auth::{Caller, Role};
use crate::error::{bad_input, error, gql, Code};

/// The agent calling; refuses people.
fn agent(ctx: &Context<'_>) -> async_graphql::Result<(Caller, Uuid)> {
    let caller = caller(ctx)?;
    match caller.agent {
        Some(id) => Ok((caller.clone(), id)),
        None => Err(error(Code::Forbidden, "only an agent (authenticated by its API key) does this")),
    }
}

/// The lease asked for, or the `queue.defaultLeaseSeconds` setting.
fn lease(ctx: &Context<'_>, seconds: Option<i32>) -> async_graphql::Result<TimeDelta> {
    let Some(seconds) = seconds else { return Ok(services(ctx).commands.settings().current().default_lease()) };
    let lease = TimeDelta::seconds(i64::from(seconds));
    if (LEASE_MIN..=LEASE_MAX).contains(&lease) {
        Ok(lease)
    } else {
        Err(bad_input(
            "leaseSeconds",
            format!("must be between {} and {}, got {seconds}", LEASE_MIN.num_seconds(), LEASE_MAX.num_seconds()),
        ))
    }
}

/// What a heartbeat tells the agent.
#[derive(Debug, Clone, SimpleObject)]
pub struct Heartbeat {
    pub task: Task,
    /// The task was cancelled: stop working on it; reports on it are refused from now on.
    pub cancelled: bool,
    /// A pause of claims stopped the work (`pauseClaims` with `drain: false`): the task is back in
    /// the queue, no attempt used; stop working on it.
    pub stop: bool,
    /// Why, when `stop`.
    pub stop_reason: Option<String>,
    /// The lease now runs until then (unchanged once cancelled).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// This agent's requests for approval in its current attempt, answered or not: a step waits
    /// until its request is `APPROVED`, and is not taken once `DENIED`.
    pub approvals: Vec<super::approvals::ApprovalRequest>,
}

/// The queue at a glance, exact as of the query.
#[derive(Debug, Clone, SimpleObject)]
pub struct QueueStats {
    /// Tasks waiting to be claimed (due or not).
    pub pending: i64,
    /// Pending tasks whose `runAfter` has passed.
    pub due: i64,
    pub by_priority: Vec<PriorityDepth>,
    pub by_capability: Vec<CapabilityDepth>,
    /// How long the oldest due task has waited, in seconds.
    pub oldest_pending_age_seconds: Option<f64>,
    /// Tasks held by an agent under a lease.
    pub in_flight: i64,
    /// Pending tasks that failed before and wait for another attempt.
    pub retrying: i64,
    /// Tasks that failed for good.
    pub failed: i64,
    /// The pauses of claims in effect, broadest first (`pauseClaims`); none while work is handed out.
    pub pauses: Vec<ClaimPause>,
}

#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct PriorityDepth {
    pub priority: i32,
    pub pending: i64,
}

#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct CapabilityDepth {
    /// A capability some pending task requires.
    pub capability: String,
    pub pending: i64,
}

#[derive(Default)]
pub struct WorkQuery;

#[Object]
impl WorkQuery {
    /// Queue depth by priority and capability, the oldest wait, and tasks in flight, retrying and failed.
    async fn queue_stats(&self, ctx: &Context<'_>) -> async_graphql::Result<QueueStats> {
        person(ctx)?;
        let (snapshot, _) = QueueSnapshot::read(read(ctx).await?.conn()).await?;
        Ok(QueueStats::of(&snapshot, Utc::now()))
    }
}

/// The queue's statistics as read, before the oldest wait is measured: two reads of an unchanged
/// queue are equal, however much later the second is.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSnapshot {
    pending: i64,
    due: i64,
    by_priority: Vec<PriorityDepth>,
    by_capability: Vec<CapabilityDepth>,
    /// Since when the oldest due task has waited.
    oldest_due_since: Option<DateTime<Utc>>,
    in_flight: i64,
    retrying: i64,
    failed: i64,
    pauses: Vec<ClaimPause>,
}

impl QueueSnapshot {
    /// Reads the statistics through `conn` (under a person's role), and when the next delayed task
    /// falls due, which changes them without an event.
    pub async fn read(conn: &mut PgConnection) -> async_graphql::Result<(QueueSnapshot, Option<DateTime<Utc>>)> {
        type Counts = (i64, i64, i64, i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
        let (pending, due, in_flight, retrying, oldest, next_due): Counts = sqlx::query_as(
            "select count(*) filter (where state = 'pending'), \
                    count(*) filter (where state = 'pending' and run_after <= now()), \
                    count(*) filter (where state = 'claimed'), \
                    count(*) filter (where state = 'pending' and failures > 0), \
                    min(greatest(created_at, run_after)) filter (where state = 'pending' and run_after <= now()), \
                    min(run_after) filter (where state = 'pending' and run_after > now()) \
             from task_queue",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(gql)?;
        let by_priority: Vec<(i16, i64)> = sqlx::query_as(
            "select priority, count(*) from task_queue where state = 'pending' group by priority order by priority desc",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(gql)?;
        let by_capability: Vec<(String, i64)> = sqlx::query_as(
            "select c, count(*) from task_queue, unnest(required_capabilities) c where state = 'pending' \
             group by c order by count(*) desc, c",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(gql)?;
        let failed: i64 = sqlx::query_scalar("select count(*) from tasks where status = 'FAILED'")
            .fetch_one(&mut *conn)
            .await
            .map_err(gql)?;
        let pauses = super::claims::pauses_in_effect(&mut *conn).await?;
        let snapshot = QueueSnapshot {
            pending,
            due,
            by_priority: by_priority
                .into_iter()
                .map(|(priority, pending)| PriorityDepth { priority: i32::from(priority), pending })
                .collect(),
            by_capability: by_capability
                .into_iter()
                .map(|(capability, pending)| CapabilityDepth { capability, pending })
                .collect(),
            oldest_due_since: oldest,
            in_flight,
            retrying,
            failed,
            pauses,
        };
        Ok((snapshot, next_due))
    }
}

impl QueueStats {
    /// The statistics of `snapshot`, the oldest wait measured at `now`.
    pub fn of(snapshot: &QueueSnapshot, now: DateTime<Utc>) -> QueueStats {
        let s = snapshot.clone();
        QueueStats {
            pending: s.pending,
            due: s.due,
            by_priority: s.by_priority,
            by_capability: s.by_capability,
            oldest_pending_age_seconds: s
                .oldest_due_since
                .map(|at| (now - at).to_std().map_or(0.0, |wait| wait.as_secs_f64())),
            in_flight: s.in_flight,
            retrying: s.retrying,
            failed: s.failed,
            pauses: s.pauses,
        }
    }
}

#[derive(Default)]
pub struct WorkSubscription;

#[Subscription]
impl WorkSubscription {
    /// The queue's statistics at once, then each time the queue changed: at most about four a
    /// second (changes in between are coalesced), and only when they differ. Every subscriber of
    /// a process shares one read per change.
    async fn queue_stats_updates(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<QueueStats>>> {
        person(ctx)?;
        let values = services(ctx).live.queue.now_and_after();
        Ok(values.map(|value| value.map(|snapshot| QueueStats::of(&snapshot, Utc::now()))))
    }
}

#[derive(Default)]
pub struct WorkMutation;

#[Object]
impl WorkMutation {
    /// Claims the most important due task this agent can do (agent): highest priority first, then
    /// oldest; null when nothing fits. `capabilities` narrows the agent's registered ones.
    async fn claim_task(
        &self,
        ctx: &Context<'_>,
        capabilities: Option<Vec<String>>,
        #[graphql(desc = "how long the lease lasts without a heartbeat: 1 to 3600 s, 30 by default")]
        lease_seconds: Option<i32>,
    ) -> async_graphql::Result<Option<Task>> {
        let (caller, agent_id) = agent(ctx)?;
        let capabilities = match capabilities {
            None => caller.capabilities.clone(),
            Some(asked) => {
                if let Some(other) = asked.iter().find(|c| !caller.capabilities.contains(c)) {
                    return Err(bad_input(
                        "capabilities",
                        format!("`{other}` is not one of this agent's capabilities"),
                    ));
                }
                asked
            }
        };
        let request = ClaimRequest { agent_id, capabilities, lease: lease(ctx, lease_seconds)? };
        let context = command_context(ctx, &caller);
        let claimed = services(ctx).commands.tasks().claim(&request, &context).await.map_err(gql)?;
        Ok(claimed.map(Task::from))
    }

    /// Extends the lease on a task this agent holds (agent); says whether it was cancelled.
    async fn heartbeat(
        &self,
        ctx: &Context<'_>,
        task_id: ID,
        lease_seconds: Option<i32>,
    ) -> async_graphql::Result<Heartbeat> {
        let (caller, agent_id) = agent(ctx)?;
        let id = parse_id("taskId", &task_id)?;
        let lease_expires_at = Utc::now() + lease(ctx, lease_seconds)?;
        let context = command_context(ctx, &caller);
        let beat =
            services(ctx).commands.tasks().heartbeat(id, agent_id, lease_expires_at, &context).await.map_err(gql)?;
        let folded = beat.task;
        let cancelled = folded.state.status == DomainTaskStatus::Cancelled;
        let lease_expires_at = folded.state.lease.map(|l| l.expires_at).filter(|_| !cancelled && beat.stop.is_none());
        let attempt = folded.state.attempt;
        let approvals = folded
            .state
            .approvals
            .iter()
            .filter(|a| a.agent_id == agent_id && a.attempt == attempt)
            .map(|a| super::approvals::ApprovalRequest::of(id, devart_projections::tasks::ApprovalRow::of(a)))
            .collect();
        Ok(Heartbeat {
            approvals,
            task: folded.into(),
            cancelled,
            stop: beat.stop.is_some(),
            stop_reason: beat.stop,
            lease_expires_at,
        })
    }

    /// Reports how far along a task this agent holds is (agent).
    async fn report_progress(
        &self,
        ctx: &Context<'_>,
        task_id: ID,
        message: String,
        #[graphql(desc = "0 to 100")] percent: Option<i32>,
    ) -> async_graphql::Result<Task> {
        let (caller, agent_id) = agent(ctx)?;
        let id = parse_id("taskId", &task_id)?;
        let command = TaskCommand::ReportProgress {
            agent_id,
            message: domain(Message::parse("message", &message))?,
            percent: percent.map(|p| domain(Percent::parse(i64::from(p)))).transpose()?,
        };
        task_command(ctx, &caller, id, command).await
    }

    /// Completes a task this agent holds (agent), with an optional JSON result.
    async fn complete_task(
        &self,
        ctx: &Context<'_>,
        task_id: ID,
        result: Option<Json<serde_json::Value>>,
    ) -> async_graphql::Result<Task> {
        let (caller, agent_id) = agent(ctx)?;
        let id = parse_id("taskId", &task_id)?;
        let result = result.map(|r| document("result", &r.0)).transpose()?;
        task_command(ctx, &caller, id, TaskCommand::Complete { agent_id, result }).await
    }

    /// Fails the current attempt of a task this agent holds (agent). A retryable failure is
    /// retried after an exponential backoff with jitter while attempts remain; otherwise, or on the
    /// last attempt, the task fails for good.
    async fn fail_task(
        &self,
        ctx: &Context<'_>,
        task_id: ID,
        error: String,
        #[graphql(default = true)] retryable: bool,
    ) -> async_graphql::Result<Task> {
        let (caller, agent_id) = agent(ctx)?;
        let id = parse_id("taskId", &task_id)?;
        let command = TaskCommand::Fail {
            agent_id,
            error: domain(Message::parse("error", &error))?,
            retryable,
            now: Utc::now(),
            jitter: rand::thread_rng().gen(),
        };
        task_command(ctx, &caller, id, command).await
    }

    /// Cancels a pending or in-progress task (supervisor); its agent learns it at its next heartbeat.
    async fn cancel_task(&self, ctx: &Context<'_>, id: ID, reason: Option<String>) -> async_graphql::Result<Task> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("id", &id)?;
        let reason = reason.map(|r| domain(Message::parse("reason", &r)).map(|m| m.as_str().to_owned())).transpose()?;
        task_command(ctx, &caller, id, TaskCommand::Cancel { reason }).await
    }

    /// Gives a failed task a fresh set of attempts (supervisor).
    async fn retry_task(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Task> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("id", &id)?;
        task_command(ctx, &caller, id, TaskCommand::Retry).await
    }
}

async fn task_command(
    ctx: &Context<'_>,
    caller: &Caller,
    id: Uuid,
    command: TaskCommand,
) -> async_graphql::Result<Task> {
    let context = command_context(ctx, caller);
    let folded = services(ctx).commands.execute::<TaskAggregate>(id, command, &context, None).await.map_err(gql)?;
    Ok(folded.into())
}
