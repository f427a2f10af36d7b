//! The knowledge base's read model: the live documents (`documents`) and the chunks keyword
//! search reads (`knowledge_chunks`, with a generated `tsvector`).
//!
//! Two tables, so not [`crate::rows::AggregateRows`]: each event is applied by its own statements,
//! in the batch's transaction with the checkpoint. A content change rewrites the document's chunks
//! whole ([`devart_domain::document::chunks::split`]); removal deletes the row and its chunks.
//! It announces which documents changed ([`DocumentChange`]), not their text.

use devart_commands::Recorded;
use devart_domain::document::{chunks, Document, DocumentEvent};
use devart_domain::{Aggregate, Event};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::announce::Announced;
use crate::{ApplyError, Projection, Target};

const NAME: &str = "knowledge";
pub const DOCUMENTS: &str = "documents";
pub const CHUNKS: &str = "knowledge_chunks";

/// A document a batch changed: its version after the change, and whether it is gone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentChange {
    pub id: Uuid,
    pub version: i64,
    pub removed: bool,
}

/// What it announces: each document change, once its batch committed.
pub const ANNOUNCED: Announced<DocumentChange> = Announced::new(NAME);

#[derive(Default)]
pub struct KnowledgeProjection;

impl Projection for KnowledgeProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &[DOCUMENTS, CHUNKS]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: Target,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, ApplyError>> {
        async move {
            let mut changed = Vec::new();
            for recorded in events {
                if let Some(change) = apply_one(conn, target, recorded).await? {
                    changed.push(serde_json::to_value(change)?);
                }
            }
            Ok(changed)
        }
        .boxed()
    }
}

async fn apply_one(
    conn: &mut PgConnection,
    target: Target,
    recorded: &Recorded,
) -> Result<Option<DocumentChange>, ApplyError> {
    let Event::Document(event) = &recorded.event else { return Ok(None) };
    let Some(id) = recorded.meta.stream_id.id_of(Document::KIND) else { return Ok(None) };
    let (documents, chunks) = (target.table(DOCUMENTS), target.table(CHUNKS));
    let meta = &recorded.meta;
    let version = meta.stream_version as i64;
    let position = meta.position.map_or(0, |p| p.0 as i64);
    let actor = meta.actor.to_string();
    match event {
        DocumentEvent::Added { title, content, tags, source, metadata, .. } => {
            let count = write_chunks(conn, &chunks, id, content).await?;
            sqlx::query(&format!(
                "insert into {documents} (id, title, content, tags, source, metadata, version, position, \
                 created_at, created_by, updated_at, updated_by, chunk_count) \
                 values ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $9, $10, $11)"
            ))
            .bind(id)
            .bind(title)
            .bind(content)
            .bind(tags)
            .bind(source)
            .bind(metadata)
            .bind(version)
            .bind(position)
            .bind(meta.occurred_at)
            .bind(&actor)
            .bind(count)
            .execute(&mut *conn)
            .await?;
        }
        DocumentEvent::Updated { title, content, source, metadata } => {
            let count = match content {
                Some(content) => {
                    sqlx::query(&format!("delete from {chunks} where document_id = $1"))
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                    Some(write_chunks(conn, &chunks, id, content).await?)
                }
                None => None,
            };
            sqlx::query(&format!(
                "update {documents} set title = coalesce($2, title), content = coalesce($3, content), \
                 source = coalesce($4, source), metadata = coalesce($5::jsonb, metadata), \
                 chunk_count = coalesce($6, chunk_count), version = $7, position = $8, updated_at = $9, \
                 updated_by = $10 where id = $1"
            ))
            .bind(id)
            .bind(title)
            .bind(content)
            .bind(source)
            .bind(metadata)
            .bind(count)
            .bind(version)
            .bind(position)
            .bind(meta.occurred_at)
            .bind(&actor)
            .execute(&mut *conn)
            .await?;
        }
        DocumentEvent::Tagged { tags } => {
            sqlx::query(&format!(
                "update {documents} set tags = $2, version = $3, position = $4, updated_at = $5, updated_by = $6 \
                 where id = $1"
            ))
            .bind(id)
            .bind(tags)
            .bind(version)
            .bind(position)
            .bind(meta.occurred_at)
            .bind(&actor)
            .execute(&mut *conn)
            .await?;
        }
        DocumentEvent::Removed => {
            sqlx::query(&format!("delete from {chunks} where document_id = $1")).bind(id).execute(&mut *conn).await?;
            sqlx::query(&format!("delete from {documents} where id = $1")).bind(id).execute(&mut *conn).await?;
        }
    }
    Ok(Some(DocumentChange { id, version, removed: matches!(event, DocumentEvent::Removed) }))
}

/// Splits `content` and inserts its chunks for document `id` in one statement; their number.
async fn write_chunks(conn: &mut PgConnection, table: &str, id: Uuid, content: &str) -> Result<i32, ApplyError> {
    let pieces = chunks::split(content);
    let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let ordinals: Vec<i32> = pieces.iter().map(|c| as_i32(c.ordinal as usize)).collect();
    let headings: Vec<&str> = pieces.iter().map(|c| c.heading.as_str()).collect();
    let texts: Vec<&str> = pieces.iter().map(|c| c.text.as_str()).collect();
    let starts: Vec<i32> = pieces.iter().map(|c| as_i32(c.char_start)).collect();
    let ends: Vec<i32> = pieces.iter().map(|c| as_i32(c.char_end)).collect();
    sqlx::query(&format!(
        "insert into {table} (document_id, ordinal, heading, text, char_start, char_end) \
         select $1, * from unnest($2::int[], $3::text[], $4::text[], $5::int[], $6::int[])"
    ))
    .bind(id)
    .bind(&ordinals)
    .bind(&headings)
    .bind(&texts)
    .bind(&starts)
    .bind(&ends)
    .execute(&mut *conn)
    .await?;
    Ok(as_i32(pieces.len()))
}
