//! Where each projection stands.

use chrono::{DateTime, Utc};
use devart_domain::Position;
use sqlx::PgPool;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    /// The last position its read model reflects.
    pub checkpoint: Position,
    /// The last position in the store.
    pub head: Position,
    /// Events not applied yet.
    pub lag: u64,
    pub updated_at: DateTime<Utc>,
}

pub async fn status(pool: &PgPool) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let head: Option<i64> = sqlx::query_scalar("select max(position) from events").fetch_one(pool).await?;
    let head = Position(head.unwrap_or(0) as u64);
    let rows: Vec<(String, i64, DateTime<Utc>)> =
        sqlx::query_as("select name, position, updated_at from projection_checkpoints order by name")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(name, position, updated_at)| {
            let checkpoint = Position(position as u64);
            ProjectionStatus { name, checkpoint, head, lag: head.0.saturating_sub(checkpoint.0), updated_at }
        })
        .collect())
}
