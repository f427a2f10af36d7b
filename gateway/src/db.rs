//! Reads under the caller's database role.
//!
//! Each read runs in a read-only transaction that first switches to the caller's database role
//! (`devart_viewer`, `devart_supervisor`, `devart_admin` or `devart_agent`) and sets their identity
//! (`devart.user_id`, `devart.agent_id`), all local to the transaction. The grants and row policies
//! of those roles (`devart_secure_read_models()` in the migrations) then decide what the query
//! can see: a resolver with a bug cannot show an agent another agent's row, read a credential, or
//! change anything.
//!
//! A query request reads through one such transaction, [`Reads::snapshot`]: `REPEATABLE READ`, so
//! every field of the answer sees the same committed state, whatever commits while it is being
//! resolved; it is opened by the request's first read and ended with the request. A mutation's
//! reads and a subscription's are [`Reads::fresh`]: each read its own transaction, so a mutation's
//! answer sees its own write and each delivered item the state of its moment.

use std::sync::Arc;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::auth::Caller;

/// A read-only transaction under a caller's role. Dropping it ends the transaction.
pub struct Reader {
    tx: Transaction<'static, Postgres>,
}

impl Reader {
    /// A read-only transaction in which each statement sees what had committed when it started.
    pub async fn begin(pool: &PgPool, caller: &Caller) -> Result<Reader, sqlx::Error> {
        let tx = pool.begin().await?;
        Reader::under(tx, caller).await
    }

    /// A read-only transaction whose statements all see one snapshot, taken by this call.
    pub async fn snapshot(pool: &PgPool, caller: &Caller) -> Result<Reader, sqlx::Error> {
        let mut tx = pool.begin().await?;
        // Must come before the first query of the transaction; a plain `SET` takes no snapshot.
        sqlx::Executor::execute(&mut *tx, "set transaction isolation level repeatable read, read only").await?;
        Reader::under(tx, caller).await
    }

    async fn under(mut tx: Transaction<'static, Postgres>, caller: &Caller) -> Result<Reader, sqlx::Error> {
        sqlx::query(
            "select set_config('role', $1, true), set_config('devart.user_id', $2, true), \
                    set_config('devart.agent_id', $3, true), set_config('transaction_read_only', 'on', true)",
        )
        .bind(caller.database_role())
        .bind(caller.user.map(|u| u.to_string()).unwrap_or_default())
        .bind(caller.agent.map(|a| a.to_string()).unwrap_or_default())
        .execute(&mut *tx)
        .await?;
        Ok(Reader { tx })
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Ends the transaction now, rather than when the connection is next used.
    pub async fn end(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

/// How one request reads: through its shared snapshot, or each read on its own.
pub struct Reads {
    pool: PgPool,
    caller: Caller,
    /// The request's snapshot, once its first read opened it; `None` inside for fresh reads.
    shared: Option<Arc<Mutex<Option<Reader>>>>,
}

impl Reads {
    /// Reads that share one snapshot, opened by the first of them: a query's.
    pub fn snapshot(pool: PgPool, caller: Caller) -> Reads {
        Reads { pool, caller, shared: Some(Arc::default()) }
    }

    /// Reads that each open a transaction of their own: a mutation's (which may read after its
    /// write) and a subscription's (each item as of its moment).
    pub fn fresh(pool: PgPool, caller: Caller) -> Reads {
        Reads { pool, caller, shared: None }
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// A transaction to read in: the request's snapshot, held by this read until the guard is
    /// dropped (reads of one request take turns on its one connection), or a fresh one.
    pub async fn reader(&self) -> Result<ReadGuard, sqlx::Error> {
        let Some(shared) = &self.shared else {
            return Ok(ReadGuard::Own(Reader::begin(&self.pool, &self.caller).await?));
        };
        let mut slot = shared.clone().lock_owned().await;
        if slot.is_none() {
            *slot = Some(Reader::snapshot(&self.pool, &self.caller).await?);
        }
        match OwnedMutexGuard::try_map(slot, Option::as_mut) {
            Ok(guard) => Ok(ReadGuard::Shared(guard)),
            // Not reached: the slot was filled above, under the same lock.
            Err(_) => Err(sqlx::Error::Protocol("the request's snapshot is gone".into())),
        }
    }

    /// Ends the request's snapshot, if a read opened it. Reads after this open a new one.
    pub async fn end(&self) -> Result<(), sqlx::Error> {
        let Some(shared) = &self.shared else { return Ok(()) };
        let reader = shared.lock().await.take();
        match reader {
            Some(reader) => reader.end().await,
            None => Ok(()),
        }
    }

    /// Whether this request's reads share a snapshot.
    pub fn is_snapshot(&self) -> bool {
        self.shared.is_some()
    }
}

/// A transaction to read in, for as long as this lives.
pub enum ReadGuard {
    Own(Reader),
    Shared(OwnedMappedMutexGuard<Option<Reader>, Reader>),
}

impl ReadGuard {
    pub fn conn(&mut self) -> &mut PgConnection {
        match self {
            ReadGuard::Own(reader) => reader.conn(),
            ReadGuard::Shared(reader) => reader.conn(),
        }
    }
}
