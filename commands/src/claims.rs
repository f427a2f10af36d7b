//! The kill switch's write side: the claim gate, a one-row table every claim reads, kept in step
//! with the `claims` stream by the statement that appends each pause and resume.
//!
//! The order of a pause and the claims around it is made by a lock, not by luck: a claim holds
//! the claims lock shared from before it reads the gate until it commits ([`hold_shared`]), and a
//! pause or resume takes it exclusively before appending. So a pause waits for the claims under
//! way, which are then all before it in the global order (the sequencer orders by commit), and
//! every claim after it reads the gate it wrote.

use chrono::{DateTime, Utc};
use devart_domain::claims::{Claims, ClaimsCommand, ClaimsState, Scope, CLAIMS_ID};
use devart_domain::task::Message;
use devart_domain::Event;
use futures::FutureExt;
use sqlx::{Arguments, PgConnection};

use crate::codec::claims::Scope as WireScope;
use crate::entry::Commands;
use crate::handler::{Alongside, CommandError};
use crate::store::{Beside, CommandContext, Folded, StoreError, Stored};

/// The advisory lock claims hold shared and pauses take exclusively ("devart-claims").
const CLAIMS_LOCK: i64 = 0x6465_7661_7274_636c;

/// Takes the claims lock shared, in `conn`'s transaction, until it ends. Its own statement: the
/// statement after it reads the gate as of after any pause that was being appended.
pub(crate) async fn hold_shared(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock_shared($1)").bind(CLAIMS_LOCK).execute(conn).await.map(drop)
}

/// One pause as the gate's `pauses` column keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct GatePause {
    scope: WireScope,
    reason: String,
    drain: bool,
}

/// The change that writes the gate `state` calls for.
pub(crate) fn sync(state: &ClaimsState) -> Beside {
    let all_paused = state.paused.contains_key(&Scope::All);
    let mut capabilities = Vec::new();
    let mut workflows = Vec::new();
    for scope in state.paused.keys() {
        match scope {
            Scope::All => {}
            Scope::Capability(c) => capabilities.push(c.as_str().to_owned()),
            Scope::Workflow(w) => workflows.push(*w),
        }
    }
    let pauses: Vec<GatePause> = state
        .paused
        .iter()
        .map(|(scope, pause)| GatePause {
            scope: scope.clone().into(),
            reason: pause.reason.clone(),
            drain: pause.drain,
        })
        .collect();
    let pauses = serde_json::to_value(pauses).expect("pauses serialize");
    Beside::new(
        "update claim_gate set all_paused = $1, capabilities = $2, workflows = $3, pauses = $4 where id = 1",
        |a| {
            a.add(all_paused)?;
            a.add(capabilities)?;
            a.add(workflows)?;
            a.add(pauses)
        },
    )
}

impl Stored for Claims {
    fn wrap(event: Self::Event) -> Event {
        Event::Claims(event)
    }
    fn unwrap(event: &Event) -> Option<&Self::Event> {
        match event {
            Event::Claims(e) => Some(e),
            _ => None,
        }
    }

    /// The claim gate.
    fn beside(state: &ClaimsState, _now: DateTime<Utc>) -> Option<Beside> {
        Some(sync(state))
    }
}

/// The kill switch's commands: `commands.claims()`.
#[derive(Clone, Copy)]
pub struct ClaimGate<'a> {
    commands: &'a Commands,
}

impl Commands {
    /// The kill switch's commands: pausing and resuming the handing out of work.
    pub fn claims(&self) -> ClaimGate<'_> {
        ClaimGate { commands: self }
    }
}

impl ClaimGate<'_> {
    /// Stops handing out work in `scope`. With `drain`, tasks being worked go on; without, each is
    /// stopped at its agent's next heartbeat and goes back to the queue, no attempt used.
    pub async fn pause(
        self,
        scope: Scope,
        reason: Message,
        drain: bool,
        context: &CommandContext,
    ) -> Result<Folded<ClaimsState>, CommandError> {
        self.change(ClaimsCommand::Pause { scope, reason, drain }, context).await
    }

    /// Hands out work in `scope` again (what other pauses cover stays paused).
    pub async fn resume(self, scope: Scope, context: &CommandContext) -> Result<Folded<ClaimsState>, CommandError> {
        self.change(ClaimsCommand::Resume { scope }, context).await
    }

    /// The pauses in effect, as the gate has them now.
    pub async fn current(self) -> Result<ClaimsState, CommandError> {
        current(self.commands.store().pool()).await
    }

    async fn change(
        self,
        command: ClaimsCommand,
        context: &CommandContext,
    ) -> Result<Folded<ClaimsState>, CommandError> {
        let exclusive: &Alongside<Claims> = &|conn, _| {
            async move { sqlx::query("select pg_advisory_xact_lock($1)").bind(CLAIMS_LOCK).execute(conn).await.map(drop) }
                .boxed()
        };
        self.commands.execute_with::<Claims>(CLAIMS_ID, command, context, None, Some(exclusive)).await
    }
}

/// The pauses in effect, read from the gate.
pub(crate) async fn current<'c>(executor: impl sqlx::PgExecutor<'c>) -> Result<ClaimsState, CommandError> {
    let pauses: serde_json::Value =
        sqlx::query_scalar("select pauses from claim_gate where id = 1").fetch_one(executor).await?;
    let undecodable = |message: String| StoreError::Undecodable { table: "claim_gate", key: "1".into(), message };
    let pauses: Vec<GatePause> = serde_json::from_value(pauses).map_err(|e| undecodable(e.to_string()))?;
    let mut state = ClaimsState::default();
    for pause in pauses {
        let scope = Scope::try_from(pause.scope).map_err(|e| undecodable(e.to_string()))?;
        state.paused.insert(scope, devart_domain::claims::Pause { reason: pause.reason, drain: pause.drain });
    }
    Ok(state)
}
