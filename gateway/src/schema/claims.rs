//! The kill switch: pausing and resuming the handing out of work, and the pauses in effect.

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use devart_commands::codec::claims::Scope as WireScope;
use devart_domain::claims::{Claims, Scope, CLAIMS_ID};
use devart_domain::task::{Capability, Message};
use devart_domain::{Aggregate, DomainError, StreamId};
use devart_projections::claims::{ClaimPausesProjection, ClaimPausesRow, PauseEntry, COLUMNS};
use devart_projections::rows::AggregateRows;
use futures::{Stream, StreamExt};
use sqlx::PgConnection;

use super::{caller, command_context, domain, parse_id, read, require, services};
use crate::auth::Role;
use crate::error::bad_input;
use crate::error::gql;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ClaimScopeKind {
    /// Every task.
    All,
    /// The tasks that require one capability.
    Capability,
    /// The tasks of one workflow's runs.
    Workflow,
}

/// What a pause covers: everything, one capability, or one workflow.
#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub struct ClaimScope {
    pub kind: ClaimScopeKind,
    /// For `CAPABILITY`.
    pub capability: Option<String>,
    /// For `WORKFLOW`: the workflow (template) whose runs' tasks are covered.
    pub workflow_id: Option<ID>,
}

#[derive(Debug, Clone, InputObject)]
pub struct ClaimScopeInput {
    pub kind: ClaimScopeKind,
    /// Required with `CAPABILITY`, refused otherwise.
    pub capability: Option<String>,
    /// Required with `WORKFLOW`, refused otherwise.
    pub workflow_id: Option<ID>,
}

impl ClaimScopeInput {
    fn parse(&self) -> async_graphql::Result<Scope> {
        let kind = format!("{:?}", self.kind).to_uppercase();
        let extra = |field: &str| bad_input(field, format!("not taken with kind {kind}"));
        match (self.kind, &self.capability, &self.workflow_id) {
            (ClaimScopeKind::All, None, None) => Ok(Scope::All),
            (ClaimScopeKind::Capability, Some(c), None) => match Capability::parse(c) {
                Ok(capability) => Ok(Scope::Capability(capability)),
                Err(DomainError::Invalid { message, .. }) => Err(bad_input("scope.capability", message)),
                Err(other) => domain(Err(other)),
            },
            (ClaimScopeKind::Workflow, None, Some(w)) => Ok(Scope::Workflow(parse_id("scope.workflowId", w)?)),
            (ClaimScopeKind::Capability, None, _) => {
                Err(bad_input("scope.capability", "required with kind CAPABILITY"))
            }
            (ClaimScopeKind::Workflow, _, None) => Err(bad_input("scope.workflowId", "required with kind WORKFLOW")),
            (_, Some(_), _) => Err(extra("scope.capability")),
            (_, _, Some(_)) => Err(extra("scope.workflowId")),
        }
    }
}

impl From<&WireScope> for ClaimScope {
    fn from(scope: &WireScope) -> ClaimScope {
        match scope {
            WireScope::All => ClaimScope { kind: ClaimScopeKind::All, capability: None, workflow_id: None },
            WireScope::Capability(c) => {
                ClaimScope { kind: ClaimScopeKind::Capability, capability: Some(c.clone()), workflow_id: None }
            }
            WireScope::Workflow(w) => {
                ClaimScope { kind: ClaimScopeKind::Workflow, capability: None, workflow_id: Some(ID(w.to_string())) }
            }
        }
    }
}

/// A pause in effect: no claim hands out a task in its scope.
#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct ClaimPause {
    pub scope: ClaimScope,
    pub reason: String,
    /// Work under way goes on (true), or is stopped at its agent's next heartbeat and goes back to
    /// the queue without using up an attempt (false).
    pub drain: bool,
    pub paused_at: DateTime<Utc>,
    /// Who paused: `user:<id>`, …
    pub paused_by: String,
}

impl From<&PauseEntry> for ClaimPause {
    fn from(entry: &PauseEntry) -> ClaimPause {
        ClaimPause {
            scope: (&entry.scope).into(),
            reason: entry.reason.clone(),
            drain: entry.drain,
            paused_at: entry.paused_at,
            paused_by: entry.paused_by.clone(),
        }
    }
}

fn listed(row: Option<&ClaimPausesRow>) -> Vec<ClaimPause> {
    row.map(|row| row.pauses.0.iter().map(ClaimPause::from).collect()).unwrap_or_default()
}

/// The pauses in effect, from the read model, through `conn` (the request's snapshot, or the
/// queue statistics' read).
pub(crate) async fn pauses_in_effect(conn: &mut PgConnection) -> async_graphql::Result<Vec<ClaimPause>> {
    let row: Option<ClaimPausesRow> =
        sqlx::query_as(&format!("select {COLUMNS} from claim_pauses")).fetch_optional(conn).await.map_err(gql)?;
    Ok(listed(row.as_ref()))
}

#[derive(Default)]
pub struct ClaimsQuery;

#[Object]
impl ClaimsQuery {
    /// The pauses in effect, broadest first (anyone, agents too: an agent handed nothing can
    /// read why). Their history is in `events(types: ["ClaimsPaused", "ClaimsResumed"])`.
    async fn claim_pauses(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ClaimPause>> {
        caller(ctx)?;
        pauses_in_effect(read(ctx).await?.conn()).await
    }
}

#[derive(Default)]
pub struct ClaimsMutation;

#[Object]
impl ClaimsMutation {
    /// Stops handing out work in `scope` (supervisor): from this pause's event on, `claimTask`
    /// hands out no task in it. With `drain` (the default), tasks being worked go on; without,
    /// each is stopped at its agent's next heartbeat (`heartbeat` answers `stop`) and goes back
    /// to the queue without using up an attempt. Pausing what is paused alike changes nothing.
    /// Returns the pauses in effect.
    async fn pause_claims(
        &self,
        ctx: &Context<'_>,
        scope: ClaimScopeInput,
        reason: String,
        #[graphql(default = true)] drain: bool,
    ) -> async_graphql::Result<Vec<ClaimPause>> {
        let caller = require(ctx, Role::Supervisor)?;
        let scope = scope.parse()?;
        let reason = domain(Message::parse("reason", &reason))?;
        let context = command_context(ctx, &caller);
        services(ctx).commands.claims().pause(scope, reason, drain, &context).await.map_err(gql)?;
        written(ctx).await
    }

    /// Hands out work in `scope` again (supervisor); other pauses stay. Resuming what is not
    /// paused changes nothing. Returns the pauses in effect.
    async fn resume_claims(&self, ctx: &Context<'_>, scope: ClaimScopeInput) -> async_graphql::Result<Vec<ClaimPause>> {
        let caller = require(ctx, Role::Supervisor)?;
        let scope = scope.parse()?;
        let context = command_context(ctx, &caller);
        services(ctx).commands.claims().resume(scope, &context).await.map_err(gql)?;
        written(ctx).await
    }
}

/// The pauses as the `claims` stream has them now, with who paused and when: the read model's own
/// fold over the stream, which the read model may not have caught up with yet.
async fn written(ctx: &Context<'_>) -> async_graphql::Result<Vec<ClaimPause>> {
    let stream = StreamId::new(Claims::KIND, CLAIMS_ID);
    let recorded = services(ctx).commands.store().read_stream(&stream, None).await.map_err(gql)?;
    let mut projection = ClaimPausesProjection;
    let Some(first) = recorded.first() else { return Ok(Vec::new()) };
    let Some(mut folded) = projection.start(CLAIMS_ID, first) else { return Ok(Vec::new()) };
    for event in &recorded {
        projection.fold(&mut folded, event);
    }
    Ok(listed(Some(&projection.close(folded))))
}

#[derive(Default)]
pub struct ClaimsSubscription;

#[Subscription]
impl ClaimsSubscription {
    /// The pauses in effect, each time a pause begins or ends.
    async fn claim_pause_updates(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Vec<ClaimPause>>> {
        caller(ctx)?;
        let updates = services(ctx).live.claims.subscribe();
        Ok(updates.map(|row| listed(Some(row.as_ref()))))
    }
}
