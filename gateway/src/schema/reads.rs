//! How a request reads: one snapshot for a query, and per-row lookups batched.
//!
//! [`RequestReads`] gives each query or mutation its [`Reads`] (see `db`): a query's fields all
//! read one `REPEATABLE READ` snapshot under the caller's role, opened by the first read and ended
//! with the request; a mutation's reads are fresh, so its answer sees its write. Subscriptions pass
//! no `execute` here, so their items read fresh too.
//!
//! Beside the reads, each request gets a [`DataLoader`] over [`Rows`]: a task's `parent`,
//! `children` and `costOutlier`, a stage's, a cost's or an outlier's `task`, asked for by every
//! row of a list, become one query per kind instead of one per row, in the same transaction as
//! the request's other reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Context, Data, Response, ServerResult, Variables};
use devart_projections::analytics::{TaskFacts, TASK_COLUMNS as FACT_COLUMNS};
use devart_projections::tasks::{TaskRow, COLUMNS as TASK_COLUMNS};
use uuid::Uuid;

use super::analytics::CostOutlier;
use super::tasks::Task;
use super::{caller, from_row, services};
use crate::auth::Caller;
use crate::db::{ReadGuard, Reads};
use crate::error::{error, gql, Code};
use crate::Services;

/// The request's transaction to read in: its snapshot for a query, a fresh one otherwise.
pub(crate) async fn read(ctx: &Context<'_>) -> async_graphql::Result<ReadGuard> {
    match ctx.data_opt::<Arc<Reads>>() {
        Some(reads) => reads.reader().await.map_err(gql),
        None => fresh(ctx)?.reader().await.map_err(gql),
    }
}

fn fresh(ctx: &Context<'_>) -> async_graphql::Result<Reads> {
    Ok(Reads::fresh(services(ctx).pool.clone(), caller(ctx)?.clone()))
}

/// A task by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TaskId(pub Uuid);

/// The tasks that continue a task, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ChildrenOf(pub Uuid);

/// A task's last cost-outlier flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct OutlierOf(pub Uuid);

/// `key` through the request's loader, batched with the other rows asking; without one (a
/// subscription's item), on its own.
pub(crate) async fn load<K>(ctx: &Context<'_>, key: K) -> async_graphql::Result<Option<<Rows as Loader<K>>::Value>>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
    Rows: Loader<K, Error = async_graphql::Error>,
{
    match ctx.data_opt::<DataLoader<Rows>>() {
        Some(loader) => loader.load_one(key).await,
        None => {
            let rows = Rows { reads: Arc::new(fresh(ctx)?) };
            Ok(rows.load(std::slice::from_ref(&key)).await?.remove(&key))
        }
    }
}

/// The read-model rows per-row fields ask for, read in batches through a request's [`Reads`].
pub struct Rows {
    reads: Arc<Reads>,
}

impl Loader<TaskId> for Rows {
    type Value = Task;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[TaskId]) -> Result<HashMap<TaskId, Task>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let rows: Vec<TaskRow> = sqlx::query_as(&format!("select {TASK_COLUMNS} from tasks where id = any($1)"))
            .bind(&ids)
            .fetch_all(self.reads.reader().await.map_err(gql)?.conn())
            .await
            .map_err(gql)?;
        rows.into_iter().map(|r| Ok((TaskId(r.id), from_row(r)?))).collect()
    }
}

impl Loader<ChildrenOf> for Rows {
    type Value = Vec<Task>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[ChildrenOf]) -> Result<HashMap<ChildrenOf, Vec<Task>>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let rows: Vec<TaskRow> = sqlx::query_as(&format!(
            "select {TASK_COLUMNS} from tasks where parent_task_id = any($1) order by created_at, id"
        ))
        .bind(&ids)
        .fetch_all(self.reads.reader().await.map_err(gql)?.conn())
        .await
        .map_err(gql)?;
        let mut children: HashMap<ChildrenOf, Vec<Task>> = HashMap::new();
        for row in rows {
            if let Some(parent) = row.parent_task_id {
                children.entry(ChildrenOf(parent)).or_default().push(from_row(row)?);
            }
        }
        Ok(children)
    }
}

impl Loader<OutlierOf> for Rows {
    type Value = CostOutlier;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[OutlierOf]) -> Result<HashMap<OutlierOf, CostOutlier>, Self::Error> {
        // Agents may not read the analytics read model; refused here, before the database would
        // refuse it and end the request's snapshot for every other field with it.
        if self.reads.caller().agent.is_some() {
            return Err(error(Code::Forbidden, "agents do not see analytics"));
        }
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let facts: Vec<TaskFacts> = sqlx::query_as(&format!(
            "select {} from analytics_tasks where task_id = any($1) and outlier_flagged_at is not null",
            FACT_COLUMNS.join(", ")
        ))
        .bind(&ids)
        .fetch_all(self.reads.reader().await.map_err(gql)?.conn())
        .await
        .map_err(gql)?;
        facts.into_iter().map(|f| Ok((OutlierOf(f.task_id), from_row(f)?))).collect()
    }
}

/// Gives each query or mutation its reads and loader (see the module's doc).
pub struct RequestReads;

impl ExtensionFactory for RequestReads {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OneRequest::default())
    }
}

#[derive(Default)]
struct OneRequest {
    /// The document's operations, by name, and whether each is a query.
    operations: Mutex<Vec<(Option<String>, bool)>>,
}

impl OneRequest {
    /// Whether the operation about to run is a query (not a mutation or a subscription).
    fn is_query(&self, name: Option<&str>) -> bool {
        let operations = self.operations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        operations.iter().find(|(n, _)| name.is_none() || n.as_deref() == name).is_some_and(|(_, query)| *query)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for OneRequest {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let operations = document
            .operations
            .iter()
            .map(|(name, op)| (name.map(|n| n.to_string()), op.node.ty == OperationType::Query))
            .collect();
        *self.operations.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = operations;
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let (Some(services), Some(caller)) = (ctx.data_opt::<Services>(), ctx.data_opt::<Caller>()) else {
            return next.run(ctx, operation_name).await;
        };
        let (pool, caller) = (services.pool.clone(), caller.clone());
        let reads = Arc::new(if self.is_query(operation_name) {
            Reads::snapshot(pool, caller)
        } else {
            Reads::fresh(pool, caller)
        });
        let mut data = Data::default();
        data.insert(reads.clone());
        data.insert(DataLoader::new(Rows { reads: reads.clone() }, tokio::spawn));
        let response = next.run_with_data(ctx, operation_name, data).await;
        if let Err(error) = reads.end().await {
            tracing::warn!(%error, "a request's snapshot did not end cleanly");
        }
        response
    }
}
