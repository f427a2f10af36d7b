//! The cost-outlier detector: a reactor that flags tasks whose cost is unusual against comparable
//! tasks (see [`devart_domain::outliers`]).
//!
//! It reads the global order with its own durable consumer and checkpoint, as the workflow
//! orchestrator does, outside the path of any command. A task is judged when it completes, and
//! again at each charge naming it after that: its cost against the latest completed, charged tasks
//! of its group, once there are at least `outliers.minimumSamples` of them (a group's first tasks
//! have too little history to be judged). A cost whose robust z-score passes `outliers.threshold`
//! is flagged with a task command (`TaskFlaggedAsCostOutlier`).
//!
//! Every judgment is made on the history as of the event that triggered it: costs are summed from
//! the charges up to that event's position, comparable tasks are those completed by then. So the
//! same events judged again, in whatever batches, give the same verdicts, whatever happened since.
//! A task whose flag is open is not judged again, nor one acknowledged at no less than its cost
//! then: a person found it fine. Each command's id is derived from the event that triggered it, and
//! the task aggregate flags a task once (again only after an acknowledgment, and only for a higher
//! cost), so processing the same events again flags nothing twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use devart_commands::{CommandError, Commands, Recorded};
use devart_domain::money::Money;
use devart_domain::outliers::{judge, Score};
use devart_domain::service::ServiceEvent;
use devart_domain::task::{Task, TaskCommand, TaskEvent};
use devart_domain::{Aggregate, DomainError, Event};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::analytics::{AnalyticsProjection, CHARGES, TASKS};
use crate::{ApplyError, Projection, Reactor};

/// A group's comparables are its latest completions, at most this many: the baseline follows what
/// work costs now, and judging stays cheap however large the group grows.
pub const COMPARABLES_MAX: i64 = 1_000;
/// How long a batch waits for the analytics read model to reach it before the batch is retried.
const ANALYTICS_WAIT: Duration = Duration::from_secs(30);
const ANALYTICS_POLL: Duration = Duration::from_millis(25);

pub struct OutlierDetector {
    commands: Commands,
}

/// What the detector needs of a task's row in the analytics read model, as it stands.
#[derive(Debug, sqlx::FromRow)]
struct Facts {
    task_id: Uuid,
    cost_group: String,
    completed_position: Option<i64>,
    flag_open: bool,
    acknowledged_cost: Option<i64>,
}

impl Facts {
    /// Whether the task's cost, at `cost`, is worth judging: not while its flag is open, and once
    /// acknowledged only above the cost it had then.
    fn worth_judging(&self, cost: Money) -> bool {
        !self.flag_open && self.acknowledged_cost.is_none_or(|acknowledged| cost.micros() > acknowledged)
    }
}

/// A comparable task as of a position, with its cost then.
#[derive(Debug, sqlx::FromRow)]
struct Comparable {
    task_id: Uuid,
    cost: i64,
}

impl OutlierDetector {
    pub const NAME: &'static str = "cost-outlier-detector";

    pub fn new(commands: Commands) -> OutlierDetector {
        OutlierDetector { commands }
    }

    /// Judges the tasks `events` completed or charged, and flags the outliers among them. Reads
    /// the analytics read model through `conn` once it has applied `events`.
    pub async fn detect(&self, conn: &mut PgConnection, events: &[Recorded]) -> Result<(), CommandError> {
        // Each event that makes a task's cost due for judging, with its position, in order.
        let triggers: Vec<(&Recorded, Uuid, i64)> = events
            .iter()
            .filter_map(|recorded| {
                let task_id = match &recorded.event {
                    Event::Task(TaskEvent::Completed { .. }) => recorded.meta.stream_id.id_of(Task::KIND),
                    Event::Service(ServiceEvent::UsageCharged { task_id, .. }) => *task_id,
                    _ => None,
                };
                Some((recorded, task_id?, recorded.meta.position?.0 as i64))
            })
            .collect();
        let Some(last) = triggers.iter().map(|(_, _, position)| *position).max() else {
            return Ok(());
        };
        wait_for_analytics(conn, last).await?;
        let ids: Vec<Uuid> = triggers.iter().map(|(_, id, _)| *id).collect();
        let tasks = facts_of(conn, &ids).await?;
        let settings = self.commands.settings().current();
        let threshold = Score::from_f64(settings.outlier_threshold());
        let minimum = settings.outlier_minimum_samples();

        for (trigger, task_id, position) in triggers {
            // A charge before the task completed: it is judged when it completes.
            let Some(task) = tasks.get(&task_id).filter(|t| t.completed_position.is_some_and(|c| c <= position)) else {
                continue;
            };
            let comparables = comparables(conn, &task.cost_group, position).await?;
            // The task itself is the latest comparable, unless it completed long before.
            let cost = match comparables.iter().find(|c| c.task_id == task_id) {
                Some(own) => Money::from_micros(own.cost),
                None => cost_as_of(conn, task_id, position).await?,
            };
            if !task.worth_judging(cost) {
                continue;
            }
            let others: Vec<Money> =
                comparables.iter().filter(|c| c.task_id != task_id).map(|c| Money::from_micros(c.cost)).collect();
            let Some(verdict) = judge(cost, &others, minimum) else { continue };
            let Some(outlier) = verdict.flag(cost, threshold, task.cost_group.clone()) else { continue };
            tracing::info!(
                %task_id, cost = %outlier.cost, median = %outlier.median, z_score = %outlier.z_score,
                group = outlier.group, "cost outlier"
            );
            let context = crate::caused_by(OutlierDetector::NAME, trigger, task_id);
            match self.commands.execute::<Task>(task_id, TaskCommand::FlagCostOutlier(outlier), &context, None).await {
                Ok(_) => {}
                // Deleted since, say: nothing left to flag.
                Err(CommandError::Domain(error @ (DomainError::NotFound(_) | DomainError::Conflict(_)))) => {
                    tracing::debug!(%task_id, %error, "cost outlier not flagged");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// The rows of these tasks, by id.
async fn facts_of(conn: &mut PgConnection, ids: &[Uuid]) -> Result<HashMap<Uuid, Facts>, sqlx::Error> {
    let rows: Vec<Facts> = sqlx::query_as(&format!(
        "select task_id, cost_group, completed_position, \
                outlier_flagged_at is not null and outlier_acknowledged_at is null as flag_open, \
                outlier_acknowledged_cost as acknowledged_cost \
         from {TASKS} where task_id = any($1)"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.task_id, r)).collect())
}

/// The latest tasks of `group` completed by `position` and charged by then, with their cost then.
async fn comparables(conn: &mut PgConnection, group: &str, position: i64) -> Result<Vec<Comparable>, sqlx::Error> {
    sqlx::query_as(&format!(
        "with latest as (select task_id, completed_position from {TASKS} \
                         where cost_group = $1 and completed_position <= $2 \
                         order by completed_position desc limit $3) \
         select l.task_id, sum(c.amount)::bigint as cost \
         from latest l join {CHARGES} c on c.task_id = l.task_id and c.position <= $2 \
         group by l.task_id having sum(c.amount) > 0"
    ))
    .bind(group)
    .bind(position)
    .bind(COMPARABLES_MAX)
    .fetch_all(conn)
    .await
}

/// A task's cost as of `position`.
async fn cost_as_of(conn: &mut PgConnection, task_id: Uuid, position: i64) -> Result<Money, sqlx::Error> {
    let cost: i64 = sqlx::query_scalar(&format!(
        "select coalesce(sum(amount), 0)::bigint from {CHARGES} where task_id = $1 and position <= $2"
    ))
    .bind(task_id)
    .bind(position)
    .fetch_one(conn)
    .await?;
    Ok(Money::from_micros(cost))
}

/// Waits until the analytics read model has applied everything up to `position`.
async fn wait_for_analytics(conn: &mut PgConnection, position: i64) -> Result<(), CommandError> {
    let started = Instant::now();
    loop {
        let at: i64 = sqlx::query_scalar("select position from projection_checkpoints where name = $1")
            .bind(AnalyticsProjection.name())
            .fetch_one(&mut *conn)
            .await?;
        if at >= position {
            return Ok(());
        }
        if started.elapsed() > ANALYTICS_WAIT {
            return Err(DomainError::Conflict(format!(
                "the analytics read model is at position {at}, behind {position}; retrying"
            ))
            .into());
        }
        tokio::time::sleep(ANALYTICS_POLL).await;
    }
}

impl Reactor for OutlierDetector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn react<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        async move { Ok(self.detect(conn, events).await?) }.boxed()
    }
}
