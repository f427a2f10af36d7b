//! For auditors: checking that the history is as it was written, and seeing any aggregate as it
//! stood at any point of it.

use async_graphql::{Context, Enum, Json, Object, SimpleObject, ID};
use devart_commands::budgets::Snapshot;
use devart_commands::chain::{self, Tampering, Verdict};
use devart_commands::history::At;
use devart_domain::agent::Agent as AgentAggregate;
use devart_domain::service::Service as ServiceAggregate;
use devart_domain::task::Task as TaskAggregate;
use devart_domain::workflow::WorkflowRun as WorkflowRunAggregate;
use devart_domain::{Position, StreamId};

use super::agents::Agent;
use super::budgets::Service;
use super::events::Event;
use super::tasks::Task;
use super::workflows::WorkflowRun;
use super::{parse_id, parse_position, person, services};
use crate::error::{bad_input, gql};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum TamperKind {
    Modified,
    Removed,
    Inserted,
    Reordered,
}

impl From<Tampering> for TamperKind {
    fn from(t: Tampering) -> Self {
        match t {
            Tampering::Modified => TamperKind::Modified,
            Tampering::Removed => TamperKind::Removed,
            Tampering::Inserted => TamperKind::Inserted,
            Tampering::Reordered => TamperKind::Reordered,
        }
    }
}

/// What checking the hash chain over a range of positions found.
#[derive(Debug, Clone, SimpleObject)]
pub struct IntegrityReport {
    /// Every event in the range is as it was written, where it was written.
    pub ok: bool,
    pub from: String,
    /// The last position checked: the end asked for, or the end of the chain.
    pub to: String,
    pub events_checked: i64,
    /// The first position where the history differs from the chain.
    pub broken_at: Option<String>,
    pub kind: Option<TamperKind>,
    pub detail: Option<String>,
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// Checks the hash chain over positions `from` to `to` (default: all of it).
    async fn verify_integrity(
        &self,
        ctx: &Context<'_>,
        from: Option<String>,
        to: Option<String>,
    ) -> async_graphql::Result<IntegrityReport> {
        person(ctx)?;
        let from = from.map(|f| parse_position("from", &f)).transpose()?.unwrap_or(Position(1));
        let to = to.map(|t| parse_position("to", &t)).transpose()?;
        let verdict = chain::verify(&services(ctx).pool, from, to).await.map_err(gql)?;
        Ok(match verdict {
            Verdict::Intact { from, to, events } => IntegrityReport {
                ok: true,
                from: from.to_string(),
                to: to.to_string(),
                events_checked: events as i64,
                broken_at: None,
                kind: None,
                detail: None,
            },
            Verdict::Broken { position, kind, detail } => IntegrityReport {
                ok: false,
                from: from.to_string(),
                to: to.map_or_else(|| position.to_string(), |t| t.to_string()),
                events_checked: position.0.saturating_sub(from.0) as i64,
                broken_at: Some(position.to_string()),
                kind: Some(kind.into()),
                detail: Some(detail),
            },
        })
    }
}

fn at(field: &str, value: &str) -> async_graphql::Result<At> {
    At::parse(value).map_err(|m| bad_input(field, m))
}

/// One event of a stream with the change it made.
#[derive(Debug, Clone, SimpleObject)]
pub struct HistoryEntry {
    pub event: Event,
    /// `{field: {from, to}}` over the aggregate's state, for each field the event changed.
    pub changes: Json<serde_json::Value>,
}

#[derive(Default)]
pub struct TimeTravelQuery;

#[Object]
impl TimeTravelQuery {
    /// A task as it stood at `at`: a position, or an RFC 3339 time. Null if it did not exist yet.
    async fn task_at(&self, ctx: &Context<'_>, id: ID, at: String) -> async_graphql::Result<Option<Task>> {
        person(ctx)?;
        let (id, at) = (parse_id("id", &id)?, self::at("at", &at)?);
        let folded = services(ctx).commands.load_at::<TaskAggregate>(id, at).await.map_err(gql)?;
        Ok((folded.version > 0).then(|| folded.into()))
    }

    /// An agent as it stood at `at`.
    async fn agent_at(&self, ctx: &Context<'_>, id: ID, at: String) -> async_graphql::Result<Option<Agent>> {
        person(ctx)?;
        let (id, at) = (parse_id("id", &id)?, self::at("at", &at)?);
        let folded = services(ctx).commands.load_at::<AgentAggregate>(id, at).await.map_err(gql)?;
        Ok((folded.version > 0).then(|| folded.into()))
    }

    /// A service and its budget as they stood at `at`.
    async fn service_at(&self, ctx: &Context<'_>, id: ID, at: String) -> async_graphql::Result<Option<Service>> {
        person(ctx)?;
        let (id, at) = (parse_id("id", &id)?, self::at("at", &at)?);
        let folded = services(ctx).commands.load_at::<ServiceAggregate>(id, at).await.map_err(gql)?;
        Ok((folded.version > 0).then(|| Snapshot { state: folded.state, version: folded.version }.into()))
    }

    /// A workflow run as it stood at `at`.
    async fn workflow_run_at(
        &self,
        ctx: &Context<'_>,
        id: ID,
        at: String,
    ) -> async_graphql::Result<Option<WorkflowRun>> {
        person(ctx)?;
        let (id, at) = (parse_id("id", &id)?, self::at("at", &at)?);
        let folded = services(ctx).commands.load_at::<WorkflowRunAggregate>(id, at).await.map_err(gql)?;
        Ok((folded.version > 0).then(|| folded.into()))
    }

    /// Every event of a stream (`task-<id>`, `agent-<id>`, `service-<id>`, …), oldest first, with
    /// the change each made.
    async fn history(&self, ctx: &Context<'_>, stream_id: String) -> async_graphql::Result<Vec<HistoryEntry>> {
        person(ctx)?;
        let stream = StreamId::parse(&stream_id).map_err(|m| bad_input("streamId", m))?;
        let entries = services(ctx).commands.history(&stream).await.map_err(gql)?;
        Ok(entries
            .into_iter()
            .map(|(recorded, changes)| HistoryEntry { event: recorded.into(), changes: Json(changes) })
            .collect())
    }
}
