//! Cost outliers: tasks whose cost the detector flagged as unusual against comparable tasks, and
//! their acknowledgment.

use async_graphql::{ComplexObject, Context, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use devart_domain::money::Money;
use devart_domain::outliers::{CostOutlier as Flag, Score};
use devart_domain::task::{Message, Task as TaskAggregate, TaskCommand};
use devart_projections::analytics::{TaskFacts, TASKS, TASK_COLUMNS};
use devart_projections::{ColumnError, RowError};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use super::id;
use crate::auth::Role;
use crate::error::gql;
use crate::schema::budgets::Decimal;
use crate::schema::tasks::{task_by_id, Task};
use crate::schema::{
    command_context, domain, from_row, from_rows, page_size, parse_id, person, read, reads, require, services,
};

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

/// A flagged task's facts as its flag. Every figure of the flag is needed: a flagged row that lacks
/// one, or counts a negative number of comparable tasks, is an error naming the row, never a flag
/// made up or left out.
impl TryFrom<TaskFacts> for CostOutlier {
    type Error = RowError;

    fn try_from(facts: TaskFacts) -> Result<CostOutlier, RowError> {
        let row = facts.task_id;
        let bad = |column: &'static str, problem: String| ColumnError::new(column, problem).in_row(TASKS, row);
        let needed = |column: &'static str| move || bad(column, "missing on a flagged task".into());
        let flagged_at = facts
            .outlier_flagged_at
            .ok_or_else(|| bad("outlier_flagged_at", "missing: the task's cost was never flagged".into()))?;
        let comparable = facts.outlier_comparable.ok_or_else(needed("outlier_comparable"))?;
        let flag = Flag {
            cost: Money::from_micros(facts.outlier_cost.ok_or_else(needed("outlier_cost"))?),
            median: Money::from_micros(facts.outlier_median.ok_or_else(needed("outlier_median"))?),
            mad: Score::from_f64(facts.outlier_mad.ok_or_else(needed("outlier_mad"))?),
            z_score: Score::from_f64(facts.outlier_z_score.ok_or_else(needed("outlier_z_score"))?),
            threshold: Score::from_f64(facts.outlier_threshold.ok_or_else(needed("outlier_threshold"))?),
            comparable: u32::try_from(comparable)
                .map_err(|_| bad("outlier_comparable", format!("`{comparable}` is not a number of tasks")))?,
            group: facts.outlier_group.ok_or_else(needed("outlier_group"))?,
        };
        Ok(CostOutlier {
            task_id: id(row),
            cost: Decimal(flag.cost),
            median: Decimal(flag.median),
            mad: flag.mad.get(),
            z_score: flag.z_score.get(),
            threshold: flag.threshold.get(),
            comparable,
            why: flag.why(),
            group: flag.group,
            flagged_at,
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
        from_rows(rows)
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

#[derive(Default)]
pub struct OutliersSubscription;

#[Subscription]
impl OutliersSubscription {
    /// A task's cost-outlier flag each time one is raised or acknowledged.
    async fn outlier_updates(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<CostOutlier>>> {
        person(ctx)?;
        let updates = services(ctx).live.outliers.subscribe();
        Ok(updates.map(|facts| from_row(facts.as_ref().clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flagged() -> TaskFacts {
        let at = DateTime::UNIX_EPOCH;
        TaskFacts {
            task_id: Uuid::from_u128(21),
            status: "COMPLETED".into(),
            created_at: at,
            first_claimed_at: None,
            completed_at: Some(at),
            failed_at: None,
            cancelled_at: None,
            agent_id: None,
            attempts: 1,
            required_capabilities: Vec::new(),
            workflow_run_id: None,
            stage_key: None,
            cost_group: "capabilities:".into(),
            cost: 9_000_000,
            charges: 1,
            completed_position: Some(4),
            outlier_flagged_at: Some(at),
            outlier_cost: Some(9_000_000),
            outlier_median: Some(1_000_000),
            outlier_mad: Some(0.2),
            outlier_z_score: Some(7.5),
            outlier_threshold: Some(3.5),
            outlier_comparable: Some(12),
            outlier_group: Some("capabilities:".into()),
            outlier_acknowledged_at: None,
            outlier_acknowledged_by: None,
            outlier_note: None,
            outlier_acknowledged_cost: None,
        }
    }

    #[test]
    fn a_negative_number_of_comparable_tasks_is_an_error_not_zero() {
        let error = CostOutlier::try_from(TaskFacts { outlier_comparable: Some(-3), ..flagged() }).unwrap_err();
        assert_eq!((error.table.as_str(), error.column.as_str()), ("analytics_tasks", "outlier_comparable"));
        assert_eq!(error.row, Uuid::from_u128(21).to_string());
        assert!(error.problem.contains("`-3`"), "{error}");
        assert_eq!(CostOutlier::try_from(flagged()).unwrap().comparable, 12);
    }

    #[test]
    fn a_flagged_row_missing_a_figure_is_an_error_not_left_out() {
        let error = CostOutlier::try_from(TaskFacts { outlier_median: None, ..flagged() }).unwrap_err();
        assert_eq!(error.column, "outlier_median");
        let error = CostOutlier::try_from(TaskFacts { outlier_flagged_at: None, ..flagged() }).unwrap_err();
        assert_eq!(error.column, "outlier_flagged_at");
    }
}
