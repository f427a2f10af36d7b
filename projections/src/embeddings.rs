//! The knowledge base's vectors: the embedding worker's read model (`knowledge_embedded`, one row
//! per document, and `knowledge_vectors`, one unit vector per chunk under an HNSW index).
//!
//! It consumes the same global order as every read model, in batches of at most
//! [`BATCH_EVENTS`] events: each batch is folded per document first, so that only a document's
//! last content in the batch is embedded, and all of the batch's chunks go to the provider at
//! once (the local pool spreads them over its threads) before anything is written; the writes then
//! commit with the checkpoint, as for any read model. The chunks are split by the same pure
//! function as `knowledge_chunks` ([`chunks::split`]), and each vector carries its chunk text's
//! md5, so search can tell when the two read models are at different versions of a document.
//!
//! Each vector is stored with the model that made it ([`Embeddings::model`]); vectors of two
//! models are never compared, and a change of model is `devart projections rebuild embeddings`.
//! A provider that fails (a remote API away) fails the batch, which is tried again; nothing is
//! skipped.

use std::collections::HashMap;
use std::sync::Arc;

use devart_commands::Recorded;
use devart_domain::document::{chunks, Document, DocumentEvent};
use devart_domain::{Aggregate, Event};
use devart_embed::Embeddings;
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::announce::Announced;
use crate::{ApplyError, Projection, Target};

pub const NAME: &str = "embeddings";
pub const EMBEDDED: &str = "knowledge_embedded";
pub const VECTORS: &str = "knowledge_vectors";

/// Events per transaction: embedding is slow (tens of chunks a second on a small host), so a
/// batch is kept short enough that progress commits every few seconds.
pub const BATCH_EVENTS: usize = 32;

/// A document whose vectors a batch changed: the stream version they now reflect.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedChange {
    pub id: Uuid,
    pub version: i64,
    pub removed: bool,
}

/// What it announces: each document whose vectors changed, once its batch committed.
pub const ANNOUNCED: Announced<EmbeddedChange> = Announced::new(NAME);

/// The text a chunk is embedded as: its headings, then its text, so that a chunk is found by
/// what its section is about as well as by what it says.
pub fn embedded_text(chunk: &chunks::Chunk) -> String {
    if chunk.heading.is_empty() {
        chunk.text.clone()
    } else {
        format!("{}\n\n{}", chunk.heading, chunk.text)
    }
}

/// The read model of the vectors, made by `provider`.
pub struct EmbeddingsProjection {
    provider: Arc<dyn Embeddings>,
}

impl EmbeddingsProjection {
    pub fn new(provider: Arc<dyn Embeddings>) -> Self {
        EmbeddingsProjection { provider }
    }
}

/// What a batch did to one document, its events folded in order.
#[derive(Debug, Default)]
struct Pending {
    /// The last content, if the batch changed it.
    content: Option<String>,
    tags: Option<Vec<String>>,
    source: Option<String>,
    version: i64,
    removed: bool,
}

impl Pending {
    fn fold(&mut self, event: &DocumentEvent, version: i64) {
        self.version = version;
        match event {
            DocumentEvent::Added { content, tags, source, .. } => {
                *self = Pending {
                    content: Some(content.clone()),
                    tags: Some(tags.clone()),
                    source: Some(source.clone()),
                    version,
                    removed: false,
                };
            }
            DocumentEvent::Updated { content, source, .. } => {
                if let Some(content) = content {
                    self.content = Some(content.clone());
                }
                if let Some(source) = source {
                    self.source = Some(source.clone());
                }
            }
            DocumentEvent::Tagged { tags } => self.tags = Some(tags.clone()),
            DocumentEvent::Removed => *self = Pending { version, removed: true, ..Pending::default() },
        }
    }
}

impl Projection for EmbeddingsProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &[EMBEDDED, VECTORS]
    }

    fn batch_max(&self) -> usize {
        BATCH_EVENTS
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: Target,
        events: &'a [Recorded],
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, ApplyError>> {
        async move {
            // The documents in the order the batch first touched them, each with its events folded.
            let mut order: Vec<Uuid> = Vec::new();
            let mut pending: HashMap<Uuid, Pending> = HashMap::new();
            for recorded in events {
                let Event::Document(event) = &recorded.event else { continue };
                let Some(id) = recorded.meta.stream_id.id_of(Document::KIND) else { continue };
                let entry = pending.entry(id).or_insert_with(|| {
                    order.push(id);
                    Pending::default()
                });
                entry.fold(event, recorded.meta.stream_version as i64);
            }
            if order.is_empty() {
                return Ok(Vec::new());
            }

            // Embedded before anything is written: the transaction writes for a moment only. A
            // chunk whose embedded text is unchanged keeps its vector: an edit re-embeds only the
            // chunks it changed.
            let (embedded, table) = (target.table(EMBEDDED), target.table(VECTORS));
            let model = self.provider.model();
            let mut split: HashMap<Uuid, Vec<(chunks::Chunk, String)>> = HashMap::new();
            for id in &order {
                if let Some(content) = &pending[id].content {
                    let pieces = chunks::split(content).into_iter().map(|c| {
                        let hash = md5_hex(&embedded_text(&c));
                        (c, hash)
                    });
                    split.insert(*id, pieces.collect());
                }
            }
            let mut known: HashMap<String, String> = HashMap::new();
            if !split.is_empty() {
                let ids: Vec<Uuid> = split.keys().copied().collect();
                let rows: Vec<(String, String)> = sqlx::query_as(&format!(
                    "select embedded_md5, embedding::text from {table} where document_id = any($1) and model = $2"
                ))
                .bind(&ids)
                .bind(model)
                .fetch_all(&mut *conn)
                .await?;
                known.extend(rows);
            }
            let mut missing: Vec<(String, String)> = Vec::new();
            for (chunk, hash) in split.values().flatten() {
                if !known.contains_key(hash) && !missing.iter().any(|(h, _)| h == hash) {
                    missing.push((hash.clone(), embedded_text(chunk)));
                }
            }
            if !missing.is_empty() {
                let texts = missing.iter().map(|(_, text)| text.clone()).collect();
                let vectors = self.provider.embed(texts).await?;
                if vectors.len() != missing.len() {
                    return Err(ApplyError::Embed(devart_embed::EmbedError::Inference(format!(
                        "{} vectors for {} chunks",
                        vectors.len(),
                        missing.len()
                    ))));
                }
                for ((hash, _), vector) in missing.into_iter().zip(vectors) {
                    known.insert(hash, vector_literal(&vector));
                }
            }

            let mut changed = Vec::with_capacity(order.len());
            for id in order {
                let change = &pending[&id];
                if change.removed {
                    sqlx::query(&format!("delete from {table} where document_id = $1")).bind(id).execute(&mut *conn).await?;
                    sqlx::query(&format!("delete from {embedded} where document_id = $1"))
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                } else {
                    let pieces = split.get(&id);
                    let count = pieces.map(|p| i32::try_from(p.len()).unwrap_or(i32::MAX));
                    // Tags and source the batch did not change are the row's.
                    sqlx::query(&format!(
                        "insert into {embedded} as e (document_id, version, tags, source, model, chunk_count, embedded_at) \
                         values ($1, $2, coalesce($3, (select tags from {embedded} where document_id = $1), '{{}}'), \
                                 coalesce($4, (select source from {embedded} where document_id = $1), ''), \
                                 $5, coalesce($6, 0), now()) \
                         on conflict (document_id) do update set version = excluded.version, tags = excluded.tags, \
                             source = excluded.source, \
                             model = case when $6::int is null then e.model else excluded.model end, \
                             chunk_count = coalesce($6, e.chunk_count), \
                             embedded_at = case when $6::int is null then e.embedded_at else excluded.embedded_at end"
                    ))
                    .bind(id)
                    .bind(change.version)
                    .bind(&change.tags)
                    .bind(&change.source)
                    .bind(model)
                    .bind(count)
                    .execute(&mut *conn)
                    .await?;
                    match pieces {
                        Some(pieces) => write_vectors(conn, &table, &embedded, id, model, pieces, &known).await?,
                        None if change.tags.is_some() || change.source.is_some() => {
                            sqlx::query(&format!(
                                "update {table} v set tags = e.tags, source = e.source from {embedded} e \
                                 where v.document_id = $1 and e.document_id = $1"
                            ))
                            .bind(id)
                            .execute(&mut *conn)
                            .await?;
                        }
                        None => {}
                    }
                }
                changed.push(serde_json::to_value(EmbeddedChange { id, version: change.version, removed: change.removed })?);
            }
            Ok(changed)
        }
        .boxed()
    }
}

/// Replaces document `id`'s vectors with one per chunk, in one statement after the delete; each
/// chunk's vector is in `vectors` by the md5 of its embedded text.
async fn write_vectors(
    conn: &mut PgConnection,
    table: &str,
    embedded: &str,
    id: Uuid,
    model: &str,
    pieces: &[(chunks::Chunk, String)],
    vectors: &HashMap<String, String>,
) -> Result<(), ApplyError> {
    let mut literals = Vec::with_capacity(pieces.len());
    for (chunk, hash) in pieces {
        let vector = vectors.get(hash).ok_or_else(|| {
            devart_embed::EmbedError::Inference(format!("no vector for chunk {} of document {id}", chunk.ordinal))
        })?;
        literals.push(vector.as_str());
    }
    sqlx::query(&format!("delete from {table} where document_id = $1")).bind(id).execute(&mut *conn).await?;
    let ordinals: Vec<i32> = pieces.iter().map(|(c, _)| i32::try_from(c.ordinal).unwrap_or(i32::MAX)).collect();
    let texts: Vec<&str> = pieces.iter().map(|(c, _)| c.text.as_str()).collect();
    let hashes: Vec<&str> = pieces.iter().map(|(_, h)| h.as_str()).collect();
    sqlx::query(&format!(
        "insert into {table} (document_id, ordinal, text_md5, embedded_md5, tags, source, model, embedding) \
         select $1, u.ordinal, md5(u.text), u.hash, e.tags, e.source, $2, u.embedding::vector \
         from unnest($3::int[], $4::text[], $5::text[], $6::text[]) as u(ordinal, text, hash, embedding), {embedded} e \
         where e.document_id = $1"
    ))
    .bind(id)
    .bind(model)
    .bind(&ordinals)
    .bind(&texts)
    .bind(&hashes)
    .bind(&literals)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The md5 of `text`, in hex, as Postgres' `md5()` writes it.
fn md5_hex(text: &str) -> String {
    use md5::Digest as _;
    md5::Md5::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// pgvector's text form of a vector, `[x,y,…]`, each float written so that it reads back exactly.
pub fn vector_literal(vector: &[f32]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(vector.len() * 12 + 2);
    out.push('[');
    for (i, x) in vector.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{x}");
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_each_documents_last_content_and_its_tags() {
        let mut p = Pending::default();
        let added = DocumentEvent::Added {
            id: Uuid::nil(),
            title: "t".into(),
            content: "one".into(),
            tags: vec!["a".into()],
            source: "s".into(),
            metadata: "{}".into(),
        };
        p.fold(&added, 1);
        p.fold(&DocumentEvent::Updated { title: None, content: Some("two".into()), source: None, metadata: None }, 2);
        p.fold(&DocumentEvent::Tagged { tags: vec!["b".into()] }, 3);
        assert_eq!(
            (p.content.as_deref(), p.tags.as_deref(), p.source.as_deref(), p.version),
            (Some("two"), Some(&["b".to_string()][..]), Some("s"), 3)
        );
        p.fold(&DocumentEvent::Removed, 4);
        assert!(p.removed && p.content.is_none() && p.version == 4);
    }

    #[test]
    fn vector_literals_read_back_exactly() {
        let v = [0.1f32, -1.0e-7, 0.333_333_34];
        let literal = vector_literal(&v);
        let parsed: Vec<f32> = literal.trim_matches(['[', ']']).split(',').map(|x| x.parse().unwrap()).collect();
        assert_eq!(parsed, v);
    }
}
