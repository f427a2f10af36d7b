//! Reads under the caller's database role.
//!
//! Each read runs in a read-only transaction that first switches to the caller's database role
//! (`devart_viewer`, `devart_supervisor`, `devart_admin` or `devart_agent`) and sets their identity
//! (`devart.user_id`, `devart.agent_id`), all local to the transaction. The grants and row policies
//! of those roles (`devart_secure_read_models()` in the migrations) then decide what the query
//! can see: a resolver with a bug cannot show an agent another agent's row, read a credential, or
//! change anything.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::auth::Caller;

/// A read-only transaction under a caller's role. Dropping it ends the transaction.
pub struct Reader {
    tx: Transaction<'static, Postgres>,
}

impl Reader {
    pub async fn begin(pool: &PgPool, caller: &Caller) -> Result<Reader, sqlx::Error> {
        let mut tx = pool.begin().await?;
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
}
