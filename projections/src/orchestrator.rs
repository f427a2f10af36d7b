//! The workflow orchestrator: a reactor that moves workflow runs on.
//!
//! It reads the global order with its own durable consumer and checkpoint, and for each batch
//! issues the commands that move workflow runs on
//! ([`commands.workflows().orchestrate`](devart_commands::workflows::Workflows::orchestrate)): a
//! stage task's end is recorded in its run, and the stages that become ready get their tasks. Its
//! commands are committed before its checkpoint, so a crash repeats a batch's commands rather than
//! losing them; each of them is idempotent, so repeating changes nothing.

use devart_commands::{Commands, Recorded};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::PgConnection;

use crate::{ApplyError, Reactor};

pub struct Orchestrator {
    commands: Commands,
}

impl Orchestrator {
    pub const NAME: &'static str = "workflow-orchestrator";

    pub fn new(commands: Commands) -> Orchestrator {
        Orchestrator { commands }
    }
}

impl Reactor for Orchestrator {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn react<'a>(
        &'a self,
        _conn: &'a mut PgConnection,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        async move { Ok(self.commands.workflows().orchestrate(events).await?) }.boxed()
    }
}
