//! Cost outliers: tasks whose cost the detector flagged as unusual against comparable tasks, and
//! their acknowledgment.

use async_graphql::{ComplexObject, Context, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use devart_domain::money::Money;
use devart_domain::outliers::{CostOutlier as Flag, Score};
use devart_domain::task::{Message, Task as TaskAggregate, TaskCommand};
use devart_projections::analytics::{TaskFacts, TASK_COLUMNS};
use uuid::Uuid;

use super::id;
use crate::auth::Role;
use crate::error::gql;
use crate::schema::budgets::Decimal;
use crate::schema::tasks::{task_by_id, Task};
use crate::schema::{command_context, domain, page_size, parse_id, person, read, reads, require, services};

/// A task whose cost was flagged as unusual against comparable tasks, and why.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct CostOutlier {
    pub task_id: ID,
    /// The task's cost when it was judged.
    pub cost: Decimal,
    /// The comparable tasks' median cost.
    pub median: Decimal,
    /// The spread of the comparable tasks' log costs: their median absolute deviation × 1.4826 (or,
    /// when more than half of them cost the same, their mean absolute deviation × 1.2533).
    pub mad: f64,
    /// How many spreads the task's log cost lies above the median.
    pub z_score: f64,
    /// The `outliers.threshold` in effect, which the z-score passed.
    pub threshold: f64,
    /// How many comparable tasks it was judged against.
    pub comparable: i32,
    /// The comparison group: `stage:<workflow>/<stage>` or `capabilities:<capabilities>`.
    pub group: String,
    /// The flag in a sentence.
    pub why: String,
    pub flagged_at: DateTime<Utc>,
    pub acknowledged: bool,
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Who acknowledged it: `user:<subject>`.
    pub acknowledged_by: Option<String>,
    pub note: Option<String>,
}

#[ComplexObject]
impl CostOutlier {
    async fn task(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Task>> {
        task_by_id(ctx, parse_id("taskId", &self.task_id)?).await
    }
}

impl CostOutlier {
    pub(crate) fn from_facts(facts: TaskFacts) -> Option<CostOutlier> {
        let flag = Flag {
            cost: Money::from_micros(facts.outlier_cost?),
            median: Money::from_micros(facts.outlier_median?),
            mad: Score::from_f64(facts.outlier_mad?),
            z_score: Score::from_f64(facts.outlier_z_score?),
            threshold: Score::from_f64(facts.outlier_threshold?),
            comparable: u32::try_from(facts.outlier_comparable?).unwrap_or_default(),
            group: facts.outlier_group?,
        };
        Some(CostOutlier {
            task_id: id(facts.task_id),
            cost: Decimal(flag.cost),
            median: Decimal(flag.median),
            mad: flag.mad.get(),
            z_score: flag.z_score.get(),
            threshold: flag.threshold.get(),
            comparable: i32::try_from(flag.comparable).unwrap_or(i32::MAX),
            why: flag.why(),
            group: flag.group,
            flagged_at: facts.outlier_flagged_at?,
            acknowledged: facts.outlier_acknowledged_at.is_some(),
            acknowledged_at: facts.outlier_acknowledged_at,
            acknowledged_by: facts.outlier_acknowledged_by,
            note: facts.outlier_note,
        })
    }
}

/// A task's last cost-outlier flag, as the analytics read model holds it.
pub(crate) async fn outlier_of(ctx: &Context<'_>, task_id: Uuid) -> async_graphql::Result<Option<CostOutlier>> {
    reads::load(ctx, reads::OutlierOf(task_id)).await
}

#[derive(Default)]
pub struct OutliersQuery;

#[Object]
impl OutliersQuery {
    /// Tasks whose cost was flagged as unusual, newest flag first; only those acknowledged (or
    /// not) when `acknowledged` is given.
    async fn outliers(
        &self,
        ctx: &Context<'_>,
        acknowledged: Option<bool>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<CostOutlier>> {
        person(ctx)?;
        let limit = page_size(first)?;
        let rows: Vec<TaskFacts> = sqlx::query_as(&format!(
            "select {} from analytics_tasks \
             where outlier_flagged_at is not null \
               and ($1::bool is null or (outlier_acknowledged_at is not null) = $1) \
             order by outlier_flagged_at desc, task_id limit $2",
            TASK_COLUMNS.join(", ")
        ))
        .bind(acknowledged)
        .bind(limit as i64)
        .fetch_all(read(ctx).await?.conn())
        .await
        .map_err(gql)?;
        Ok(rows.into_iter().filter_map(CostOutlier::from_facts).collect())
    }
}

#[derive(Default)]
pub struct OutliersMutation;

#[Object]
impl OutliersMutation {
    /// Acknowledges a task's cost-outlier flag (supervisor), saying why the cost is fine. The task
    /// is not flagged again unless its cost grows. Returns the task; its `costOutlier` follows a
    /// moment later, once the analytics read model has the acknowledgment.
    async fn acknowledge_outlier(&self, ctx: &Context<'_>, task_id: ID, note: String) -> async_graphql::Result<Task> {
        let caller = require(ctx, Role::Supervisor)?;
        let id = parse_id("taskId", &task_id)?;
        let note = domain(Message::parse("note", &note))?;
        let context = command_context(ctx, &caller);
        let folded = services(ctx)
            .commands
            .execute::<TaskAggregate>(id, TaskCommand::AcknowledgeOutlier { note }, &context, None)
            .await
            .map_err(gql)?;
        Ok(folded.into())
    }
}
