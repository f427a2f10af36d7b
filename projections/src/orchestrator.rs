//! The workflow orchestrator: a process manager fed like a projection.
//!
//! It reads the global order with its own durable consumer and checkpoint, and for each batch
//! issues the commands that move workflow runs on ([`Commands::orchestrate`]): a stage task's end
//! is recorded in its run, and the stages that become ready get their tasks. Its commands are
//! committed before its checkpoint, so a crash repeats a batch's commands rather than losing them;
//! each of them is idempotent, so repeating changes nothing. It owns no tables and is never
//! rebuilt.

use devart_commands::{CommandError, Commands, Recorded, StoreError};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::PgConnection;

use crate::{Projection, Target};

pub struct Orchestrator {
    commands: Commands,
}

impl Orchestrator {
    pub const NAME: &'static str = "workflow-orchestrator";

    pub fn new(commands: Commands) -> Orchestrator {
        Orchestrator { commands }
    }
}

impl Projection for Orchestrator {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    fn apply<'a>(
        &'a self,
        _conn: &'a mut PgConnection,
        _target: Target,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, sqlx::Error>> {
        async move {
            match self.commands.orchestrate(events).await {
                Ok(()) => Ok(Vec::new()),
                Err(CommandError::Store(StoreError::Db(e))) => Err(e),
                // Anything else is retried with the batch, like a database error.
                Err(other) => Err(sqlx::Error::Protocol(format!("workflow orchestration: {other}"))),
            }
        }
        .boxed()
    }
}
