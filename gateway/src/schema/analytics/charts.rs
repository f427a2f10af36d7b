//! The charts of an `analytics` window: each field of [`Analytics`] is one query over the
//! analytics read model, run only when asked for.

use async_graphql::{ComplexObject, Context, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use devart_domain::money::Money;
use devart_projections::analytics::TASKS;
use uuid::Uuid;

use super::{id, money, rate, Analytics, Bucket};
use crate::error::{bad_input, gql, internal};
use crate::schema::budgets::Decimal;
use crate::schema::tasks::{task_by_id, Task, TaskStatus};
use crate::schema::{parse_id, read};

/// `topTasks` lists at most this many.
const TOP_MAX: i32 = 100;

/// Cost in one bucket.
#[derive(Debug, Clone, SimpleObject)]
pub struct CostBucket {
    pub start: DateTime<Utc>,
    pub cost: Decimal,
    /// Per service, dearest first; only services that spent.
    pub services: Vec<ServiceCostPoint>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct ServiceCostPoint {
    pub service_id: ID,
    pub name: Option<String>,
    pub cost: Decimal,
}

/// What a task cost.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct TaskCost {
    pub task_id: ID,
    /// Charges naming the task in the window.
    pub cost: Decimal,
    pub charges: i64,
    /// Every charge naming the task, whenever.
    pub total_cost: Option<Decimal>,
    pub status: Option<TaskStatus>,
    /// The agent of its last attempt.
    pub agent_id: Option<ID>,
    /// The tasks its cost compares with (see `outliers`).
    pub cost_group: Option<String>,
}

#[ComplexObject]
impl TaskCost {
    async fn task(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Task>> {
        task_by_id(ctx, parse_id("taskId", &self.task_id)?).await
    }
}

/// An agent's spending and outcomes in the window.
#[derive(Debug, Clone, SimpleObject)]
pub struct AgentAnalytics {
    pub agent_id: ID,
    pub name: Option<String>,
    /// Charges it made.
    pub cost: Decimal,
    pub charges: i64,
    /// Tasks completed in the window by this agent.
    pub tasks_completed: i64,
    /// Tasks that failed for good in the window with this agent on their last attempt.
    pub tasks_failed: i64,
    /// Completed ÷ (completed + failed); null without either.
    pub success_rate: Option<f64>,
}

/// A service's charges in the window.
#[derive(Debug, Clone, SimpleObject)]
pub struct ServiceAnalytics {
    pub service_id: ID,
    pub name: Option<String>,
    pub cost: Decimal,
    pub charges: i64,
    /// Distinct tasks the charges named.
    pub tasks: i64,
}

/// Tasks created, completed, failed for good and cancelled in the window, and per bucket.
#[derive(Debug, Clone, SimpleObject)]
pub struct Completion {
    pub created: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Completed ÷ (completed + failed): of the tasks whose work ended, how many succeeded. Null
    /// when none ended.
    pub rate: Option<f64>,
    pub over_time: Vec<CompletionBucket>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct CompletionBucket {
    pub start: DateTime<Utc>,
    pub created: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub rate: Option<f64>,
}

/// How long something took, in seconds, over the window and per bucket; null figures where
/// nothing was measured.
#[derive(Debug, Clone, SimpleObject)]
pub struct Durations {
    pub count: i64,
    pub mean_seconds: Option<f64>,
    pub p50_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
    pub over_time: Vec<DurationBucket>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct DurationBucket {
    pub start: DateTime<Utc>,
    pub count: i64,
    pub mean_seconds: Option<f64>,
    pub p50_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
}

/// The queue in one bucket: tasks pending (waiting, due or not) and in progress at its end, and
/// the most at once during it.
#[derive(Debug, Clone, SimpleObject)]
pub struct QueueDepthBucket {
    pub start: DateTime<Utc>,
    pub pending: i64,
    pub pending_max: i64,
    pub in_progress: i64,
    pub in_progress_max: i64,
}

/// The window's buckets, `$1` to `$2` by `$3` hours: the start of every query that charts. The
/// queries using it group by `date_trunc($4, …, 'UTC')`, which lands on the same starts.
const BUCKETS: &str =
    "buckets as (select generate_series($1::timestamptz, $2::timestamptz - make_interval(hours => $3), \
                       make_interval(hours => $3)) as start)";

impl Analytics {
    /// Duration statistics of `end - begin` (columns of `analytics_tasks`) over the tasks whose
    /// `end` falls in the window.
    async fn durations(&self, ctx: &Context<'_>, begin: &str, end: &str) -> async_graphql::Result<Durations> {
        let measured = format!(
            "measured as (select date_trunc($4, {end}, 'UTC') as start, \
                                 extract(epoch from {end} - {begin})::float8 as seconds \
                          from analytics_tasks where {end} >= $1 and {end} < $2 and {begin} is not null)"
        );
        let stats = "count(*) as n, avg(seconds) as mean, \
                     percentile_cont(0.5) within group (order by seconds) as p50, \
                     percentile_cont(0.95) within group (order by seconds) as p95";
        let (count, mean, p50, p95): (i64, Option<f64>, Option<f64>, Option<f64>) = self
            .bind(sqlx::query_as(&format!("with {BUCKETS}, {measured} select {stats} from measured")))
            .fetch_one(read(ctx).await?.conn())
            .await
            .map_err(gql)?;
        type Row = (DateTime<Utc>, i64, Option<f64>, Option<f64>, Option<f64>);
        let rows: Vec<Row> = self
            .bind(sqlx::query_as(&format!(
                "with {BUCKETS}, {measured}, per_bucket as (select start, {stats} from measured group by start) \
                 select b.start, coalesce(p.n, 0), p.mean, p.p50, p.p95 \
                 from buckets b left join per_bucket p on p.start = b.start order by b.start"
            )))
            .fetch_all(read(ctx).await?.conn())
            .await
            .map_err(gql)?;
        Ok(Durations {
            count,
            mean_seconds: mean,
            p50_seconds: p50,
            p95_seconds: p95,
            over_time: rows
                .into_iter()
                .map(|(start, count, mean, p50, p95)| DurationBucket {
                    start,
                    count,
                    mean_seconds: mean,
                    p50_seconds: p50,
                    p95_seconds: p95,
                })
                .collect(),
        })
    }

    /// Binds the window to a query that uses [`BUCKETS`]: `$1` its start, `$2` its end, `$3` the
    /// bucket's hours and `$4` its `date_trunc` unit.
    fn bind<'q, O>(
        &self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query.bind(self.start).bind(self.end).bind(self.bucket.hours()).bind(self.bucket.unit())
    }
}

/// Analytics over a window of whole buckets, for charts. Each field is computed when asked for.
#[Object]
impl Analytics {
    /// The window's start: `from`, rounded down to its bucket's start.
    async fn from(&self) -> DateTime<Utc> {
        self.start
    }

    /// The window's end (exclusive): `to`, rounded up to a bucket's start.
    async fn to(&self) -> DateTime<Utc> {
        self.end
    }

    async fn bucket(&self) -> Bucket {
        self.bucket
    }

    /// Every charge settled in the window.
    async fn total_cost(&self, ctx: &Context<'_>) -> async_graphql::Result<Decimal> {
        let total: i64 = sqlx::query_scalar(
            "select coalesce(sum(cost), 0)::bigint from analytics_costs_hourly where hour >= $1 and hour < $2",
        )
        .bind(self.start)
        .bind(self.end)
        .fetch_one(read(ctx).await?.conn())
        .await
        .map_err(gql)?;
        Ok(money(total))
    }

    /// Cost per bucket, in total and per service: every bucket of the window, empty ones too.
    async fn cost_over_time(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<CostBucket>> {
        type Row = (DateTime<Utc>, Option<Uuid>, Option<String>, Option<i64>);
        let rows: Vec<Row> = self
            .bind(sqlx::query_as(&format!(
                "with {BUCKETS}, \
                  costs as (select date_trunc($4, hour, 'UTC') as start, service_id, sum(cost)::bigint as cost \
                            from analytics_costs_hourly where hour >= $1 and hour < $2 group by 1, 2) \
             select b.start, c.service_id, s.name, c.cost \
             from buckets b left join costs c on c.start = b.start \
                  left join analytics_services s on s.service_id = c.service_id \
             order by b.start, c.cost desc, c.service_id"
            )))
            .fetch_all(read(ctx).await?.conn())
            .await
            .map_err(gql)?;
        let mut buckets: Vec<CostBucket> = Vec::new();
        for (start, service, name, cost) in rows {
            if buckets.last().is_none_or(|b| b.start != start) {
                buckets.push(CostBucket { start, cost: money(0), services: Vec::new() });
            }
            let bucket = buckets.last_mut().expect("pushed");
            if let (Some(service), Some(cost)) = (service, cost) {
                bucket.cost = Decimal(bucket.cost.0.saturating_add(Money::from_micros(cost)));
                bucket.services.push(ServiceCostPoint { service_id: id(service), name, cost: money(cost) });
            }
        }
        Ok(buckets)
    }

    /// The tasks whose charges in the window cost most, dearest first.
    async fn top_tasks(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 10, desc = "1 to 100")] first: i32,
    ) -> async_graphql::Result<Vec<TaskCost>> {
        if !(1..=TOP_MAX).contains(&first) {
            return Err(bad_input("first", format!("must be between 1 and {TOP_MAX}, got {first}")));
        }
        type Row = (Uuid, i64, i64, Option<i64>, Option<String>, Option<Uuid>, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "select c.task_id, sum(c.amount)::bigint as in_window, count(*), t.cost, t.status, t.agent_id, \
                    t.cost_group \
             from analytics_charges c left join analytics_tasks t on t.task_id = c.task_id \
             where c.occurred_at >= $1 and c.occurred_at < $2 and c.task_id is not null \
             group by c.task_id, t.cost, t.status, t.agent_id, t.cost_group \
             order by in_window desc, c.task_id limit $3",
        )
        .bind(self.start)
        .bind(self.end)
        .bind(i64::from(first))
        .fetch_all(read(ctx).await?.conn())
        .await
        .map_err(gql)?;
        rows.into_iter()
            .map(|(task_id, cost, charges, total, status, agent, group)| {
                let status = status.map(|s| TaskStatus::read(TASKS, task_id, &s)).transpose().map_err(internal)?;
                Ok(TaskCost {
                    task_id: id(task_id),
                    cost: money(cost),
                    charges,
                    total_cost: total.map(money),
                    status,
                    agent_id: agent.map(id),
                    cost_group: group,
                })
            })
            .collect()
    }

    /// Per agent that spent or finished tasks in the window, biggest spender first.
    async fn agents(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AgentAnalytics>> {
        let rows: Vec<(Uuid, Option<String>, i64, i64, i64, i64)> = sqlx::query_as(
            "with spent as (select agent_id, sum(amount)::bigint as cost, count(*) as charges \
                            from analytics_charges \
                            where occurred_at >= $1 and occurred_at < $2 and agent_id is not null \
                            group by agent_id), \
                  outcomes as (select agent_id, \
                                      count(*) filter (where completed_at >= $1 and completed_at < $2) as completed, \
                                      count(*) filter (where failed_at >= $1 and failed_at < $2) as failed \
                               from analytics_tasks \
                               where agent_id is not null \
                                 and ((completed_at >= $1 and completed_at < $2) \
                                      or (failed_at >= $1 and failed_at < $2)) \
                               group by agent_id) \
             select coalesce(s.agent_id, o.agent_id) as id, a.name, coalesce(s.cost, 0), coalesce(s.charges, 0), \
                    coalesce(o.completed, 0), coalesce(o.failed, 0) \
             from spent s full join outcomes o on o.agent_id = s.agent_id \
                  left join agents a on a.id = coalesce(s.agent_id, o.agent_id) \
             order by 3 desc, 1",
        )
        .bind(self.start)
        .bind(self.end)
        .fetch_all(read(ctx).await?.conn())
        .await
        .map_err(gql)?;
        Ok(rows
            .into_iter()
            .map(|(agent, name, cost, charges, completed, failed)| AgentAnalytics {
                agent_id: id(agent),
                name,
                cost: money(cost),
                charges,
                tasks_completed: completed,
                tasks_failed: failed,
                success_rate: rate(completed, failed),
            })
            .collect())
    }

    /// Per service that was charged in the window, dearest first.
    async fn services(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ServiceAnalytics>> {
        let rows: Vec<(Uuid, Option<String>, i64, i64, i64)> = sqlx::query_as(
            "select c.service_id, s.name, sum(c.amount)::bigint, count(*), count(distinct c.task_id) \
             from analytics_charges c left join analytics_services s on s.service_id = c.service_id \
             where c.occurred_at >= $1 and c.occurred_at < $2 \
             group by c.service_id, s.name order by 3 desc, 1",
        )
        .bind(self.start)
        .bind(self.end)
        .fetch_all(read(ctx).await?.conn())
        .await
        .map_err(gql)?;
        Ok(rows
            .into_iter()
            .map(|(service, name, cost, charges, tasks)| ServiceAnalytics {
                service_id: id(service),
                name,
                cost: money(cost),
                charges,
                tasks,
            })
            .collect())
    }

    /// Tasks created, completed, failed and cancelled, and the completion rate, in the window and
    /// per bucket.
    async fn completion(&self, ctx: &Context<'_>) -> async_graphql::Result<Completion> {
        let ended = |column: &str, kind: &str| {
            format!(
                "select date_trunc($4, {column}, 'UTC') as start, '{kind}' as kind from analytics_tasks \
                 where {column} >= $1 and {column} < $2"
            )
        };
        let rows: Vec<(DateTime<Utc>, i64, i64, i64, i64)> = self
            .bind(sqlx::query_as(&format!(
                "with {BUCKETS}, ends as ({} union all {} union all {} union all {}) \
             select b.start, count(*) filter (where e.kind = 'created'), \
                    count(*) filter (where e.kind = 'completed'), count(*) filter (where e.kind = 'failed'), \
                    count(*) filter (where e.kind = 'cancelled') \
             from buckets b left join ends e on e.start = b.start group by b.start order by b.start",
                ended("created_at", "created"),
                ended("completed_at", "completed"),
                ended("failed_at", "failed"),
                ended("cancelled_at", "cancelled"),
            )))
            .fetch_all(read(ctx).await?.conn())
            .await
            .map_err(gql)?;
        let over_time: Vec<CompletionBucket> = rows
            .into_iter()
            .map(|(start, created, completed, failed, cancelled)| CompletionBucket {
                start,
                created,
                completed,
                failed,
                cancelled,
                rate: rate(completed, failed),
            })
            .collect();
        // The window is made of whole buckets: its totals are theirs.
        let sum = |f: fn(&CompletionBucket) -> i64| over_time.iter().map(f).sum::<i64>();
        let (completed, failed) = (sum(|b| b.completed), sum(|b| b.failed));
        Ok(Completion {
            created: sum(|b| b.created),
            completed,
            failed,
            cancelled: sum(|b| b.cancelled),
            rate: rate(completed, failed),
            over_time,
        })
    }

    /// From a task's creation to its first claim, over the tasks first claimed in the window.
    async fn time_to_claim(&self, ctx: &Context<'_>) -> async_graphql::Result<Durations> {
        self.durations(ctx, "created_at", "first_claimed_at").await
    }

    /// From a task's creation to its completion, over the tasks completed in the window.
    async fn time_to_complete(&self, ctx: &Context<'_>) -> async_graphql::Result<Durations> {
        self.durations(ctx, "created_at", "completed_at").await
    }

    /// Queue depth per bucket: every bucket of the window, a quiet one keeping the depth before it.
    async fn queue_depth(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<QueueDepthBucket>> {
        let rows: Vec<(DateTime<Utc>, i64, i64, i64, i64)> = sqlx::query_as(&format!(
            "with {BUCKETS} \
             select b.start, coalesce(e.pending, 0), \
                    greatest(coalesce(s.pending, 0), coalesce(m.pending_max, 0)), \
                    coalesce(e.in_progress, 0), \
                    greatest(coalesce(s.in_progress, 0), coalesce(m.in_progress_max, 0)) \
             from buckets b \
             left join lateral (select pending, in_progress from analytics_queue_hourly \
                                where hour < b.start + make_interval(hours => $3) order by hour desc limit 1) e \
                  on true \
             left join lateral (select pending, in_progress from analytics_queue_hourly \
                                where hour < b.start order by hour desc limit 1) s on true \
             left join lateral (select max(pending_max) as pending_max, max(in_progress_max) as in_progress_max \
                                from analytics_queue_hourly \
                                where hour >= b.start and hour < b.start + make_interval(hours => $3)) m on true \
             order by b.start"
        ))
        .bind(self.start)
        .bind(self.end)
        .bind(self.bucket.hours())
        .fetch_all(read(ctx).await?.conn())
        .await
        .map_err(gql)?;
        Ok(rows
            .into_iter()
            .map(|(start, pending, pending_max, in_progress, in_progress_max)| QueueDepthBucket {
                start,
                pending,
                pending_max,
                in_progress,
                in_progress_max,
            })
            .collect())
    }
}
