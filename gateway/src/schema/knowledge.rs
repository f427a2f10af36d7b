//! The knowledge base: documents written by supervisors and admins (and by agents while
//! `knowledge.agentsMayWrite` is true), read and searched by everyone who reads tasks.
//!
//! Search is keyword search over the chunks' `tsvector` (`websearch_to_tsquery` syntax, ranked by
//! `ts_rank`, the heading weighing more than the text), each hit with its document, chunk, score
//! and a highlighted excerpt (`<mark>`…`</mark>`, the rest HTML-escaped). Semantic and hybrid
//! search answer `UNAVAILABLE` until the embedding worker exists.

use async_graphql::{ComplexObject, Context, Enum, InputObject, Json, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use devart_commands::documents::NewDocument;
use devart_commands::Folded;
use devart_domain::document::{
    chunks, Content, Document as DocumentAggregate, DocumentState, Metadata, Source, Tags, Title, UpdateDocument,
};
use uuid::Uuid;

use super::{caller, command_context, domain, new_aggregate_id, parse_id, person, read, require, services};
use crate::auth::{Caller, Role};
use crate::error::{bad_input, error, gql, internal, Code};
use crate::metrics::SearchModeLabel;

/// What `searchKnowledge` and `documents` answer at most.
const FIRST_MAX: i32 = 100;

/// A document of the knowledge base.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex, name = "KnowledgeDocument")]
pub struct KnowledgeDocument {
    pub id: ID,
    pub title: String,
    /// Markdown.
    pub content: String,
    /// Lower case, sorted.
    pub tags: Vec<String>,
    /// Where it comes from; empty when nobody said.
    pub source: String,
    /// A JSON object.
    pub metadata: Json<serde_json::Value>,
    /// Its stream version: what `updateDocument(expectedVersion:)` names.
    pub version: i64,
    /// How many chunks search finds it by.
    pub chunk_count: i32,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
}

#[ComplexObject]
impl KnowledgeDocument {
    /// Its chunks as search holds them, in order (empty until the read model has the document).
    async fn chunks(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<KnowledgeChunk>> {
        let id = parse_id("id", &self.id)?;
        let rows: Vec<ChunkRow> = sqlx::query_as(
            "select ordinal, heading, text, char_start, char_end from knowledge_chunks \
             where document_id = $1 order by ordinal",
        )
        .bind(id)
        .fetch_all(read(ctx).await?.conn())
        .await
        .map_err(gql)?;
        Ok(rows.into_iter().map(KnowledgeChunk::from).collect())
    }
}

/// A piece of a document's content, by headings and paragraphs.
#[derive(Debug, Clone, SimpleObject)]
pub struct KnowledgeChunk {
    /// Its place in the document, from 0.
    pub ordinal: i32,
    /// The headings it sits under, joined by " › ".
    pub heading: String,
    pub text: String,
    /// Its characters in the document's content: `charStart` up to, not including, `charEnd`.
    pub char_start: i32,
    pub char_end: i32,
}

#[derive(sqlx::FromRow)]
struct ChunkRow {
    ordinal: i32,
    heading: String,
    text: String,
    char_start: i32,
    char_end: i32,
}

impl From<ChunkRow> for KnowledgeChunk {
    fn from(r: ChunkRow) -> Self {
        KnowledgeChunk {
            ordinal: r.ordinal,
            heading: r.heading,
            text: r.text,
            char_start: r.char_start,
            char_end: r.char_end,
        }
    }
}

/// One search hit: a chunk, the document it is part of, how well it matches, and an excerpt with
/// the matching words in `<mark>`…`</mark>` (everything else HTML-escaped).
#[derive(Debug, Clone, SimpleObject)]
pub struct KnowledgeHit {
    pub document: KnowledgeHitDocument,
    pub chunk: KnowledgeChunk,
    /// Higher is better; comparable within one search.
    pub score: f64,
    pub excerpt: String,
}

/// What a hit says of its document.
#[derive(Debug, Clone, SimpleObject)]
pub struct KnowledgeHitDocument {
    pub id: ID,
    pub title: String,
    pub tags: Vec<String>,
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum SearchMode {
    /// By meaning, over the chunks' embeddings: not yet available.
    Semantic,
    /// By words: Postgres full-text search.
    Keyword,
    /// Both, fused: not yet available.
    Hybrid,
}

impl SearchMode {
    fn label(self) -> &'static str {
        match self {
            SearchMode::Semantic => "semantic",
            SearchMode::Keyword => "keyword",
            SearchMode::Hybrid => "hybrid",
        }
    }
}

#[derive(Debug, Clone, InputObject)]
pub struct AddDocumentInput {
    /// 1 to 200 characters.
    pub title: String,
    /// Markdown, 1 byte to 1 MiB.
    pub content: String,
    /// At most 32, each 1 to 64 of `a-z0-9-_./:` (lower-cased).
    #[graphql(default)]
    pub tags: Vec<String>,
    /// At most 500 characters.
    pub source: Option<String>,
    /// A JSON object, at most 64 KiB.
    pub metadata: Option<Json<serde_json::Value>>,
}

/// The fields to change; those left out stay.
#[derive(Debug, Clone, InputObject)]
pub struct UpdateDocumentInput {
    pub title: Option<String>,
    pub content: Option<String>,
    pub source: Option<String>,
    pub metadata: Option<Json<serde_json::Value>>,
}

#[derive(sqlx::FromRow)]
struct DocumentRow {
    id: Uuid,
    title: String,
    content: String,
    tags: Vec<String>,
    source: String,
    metadata: serde_json::Value,
    version: i64,
    chunk_count: i32,
    created_at: DateTime<Utc>,
    created_by: String,
    updated_at: DateTime<Utc>,
}

const DOCUMENT_COLUMNS: &str =
    "id, title, content, tags, source, metadata, version, chunk_count, created_at, created_by, updated_at";

impl From<DocumentRow> for KnowledgeDocument {
    fn from(r: DocumentRow) -> Self {
        KnowledgeDocument {
            id: ID(r.id.to_string()),
            title: r.title,
            content: r.content,
            tags: r.tags,
            source: r.source,
            metadata: Json(r.metadata),
            version: r.version,
            chunk_count: r.chunk_count,
            created_at: r.created_at,
            created_by: r.created_by,
            updated_at: r.updated_at,
        }
    }
}

/// The document as a command or a moment in its history left it.
fn of_folded(folded: Folded<DocumentState>) -> async_graphql::Result<KnowledgeDocument> {
    let state = folded.state;
    let metadata = serde_json::from_str(&state.metadata).map_err(internal)?;
    let now = Utc::now();
    Ok(KnowledgeDocument {
        id: ID(state.id.to_string()),
        chunk_count: i32::try_from(chunks::split(&state.content).len()).unwrap_or(i32::MAX),
        title: state.title,
        content: state.content,
        tags: state.tags,
        source: state.source,
        metadata: Json(metadata),
        version: folded.version as i64,
        created_at: folded.created_at.unwrap_or(now),
        created_by: folded.created_by.unwrap_or_default(),
        updated_at: folded.updated_at.unwrap_or(now),
    })
}

/// A caller who may write documents: a supervisor or an admin, or an agent while
/// `knowledge.agentsMayWrite` is true.
fn writer(ctx: &Context<'_>) -> async_graphql::Result<Caller> {
    let caller = caller(ctx)?;
    if caller.agent.is_some() {
        if services(ctx).commands.settings().current().agents_may_write_knowledge() {
            return Ok(caller.clone());
        }
        return Err(error(Code::Forbidden, "agents write documents only while knowledge.agentsMayWrite is true"));
    }
    require(ctx, Role::Supervisor)
}

fn first_of(first: i32) -> async_graphql::Result<i64> {
    if (1..=FIRST_MAX).contains(&first) {
        Ok(i64::from(first))
    } else {
        Err(bad_input("first", format!("must be between 1 and {FIRST_MAX}, got {first}")))
    }
}

/// The excerpt `ts_headline` marked with `\u{2}` … `\u{3}`, HTML-escaped, marks as `<mark>`.
fn excerpt_html(marked: &str) -> String {
    let mut out = String::with_capacity(marked.len() + 16);
    for c in marked.chars() {
        match c {
            '\u{2}' => out.push_str("<mark>"),
            '\u{3}' => out.push_str("</mark>"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(sqlx::FromRow)]
struct HitRow {
    document_id: Uuid,
    title: String,
    tags: Vec<String>,
    source: String,
    ordinal: i32,
    heading: String,
    text: String,
    char_start: i32,
    char_end: i32,
    score: f64,
    excerpt: String,
}

#[derive(Default)]
pub struct KnowledgeQuery;

#[Object]
impl KnowledgeQuery {
    /// A live document, or null.
    async fn document(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<KnowledgeDocument>> {
        caller(ctx)?;
        let id = parse_id("id", &id)?;
        let row: Option<DocumentRow> =
            sqlx::query_as(&format!("select {DOCUMENT_COLUMNS} from documents where id = $1"))
                .bind(id)
                .fetch_optional(read(ctx).await?.conn())
                .await
                .map_err(gql)?;
        Ok(row.map(KnowledgeDocument::from))
    }

    /// Live documents, with this tag if given, the latest changed first.
    async fn documents(
        &self,
        ctx: &Context<'_>,
        tag: Option<String>,
        #[graphql(default = 50)] first: i32,
    ) -> async_graphql::Result<Vec<KnowledgeDocument>> {
        caller(ctx)?;
        let first = first_of(first)?;
        let tag = tag.map(|t| domain(Tags::parse(&[t]))).transpose()?.map(|t| t.to_strings());
        let rows: Vec<DocumentRow> = sqlx::query_as(&format!(
            "select {DOCUMENT_COLUMNS} from documents where ($1::text[] is null or tags @> $1) \
             order by updated_at desc, id limit $2"
        ))
        .bind(tag)
        .bind(first)
        .fetch_all(read(ctx).await?.conn())
        .await
        .map_err(gql)?;
        Ok(rows.into_iter().map(KnowledgeDocument::from).collect())
    }

    /// A document as it stood at `at` (a position, or an RFC 3339 time): null if it did not exist
    /// yet. A removed document is shown as it was last. People only, like the other time travel.
    async fn document_at(
        &self,
        ctx: &Context<'_>,
        id: ID,
        at: String,
    ) -> async_graphql::Result<Option<KnowledgeDocument>> {
        person(ctx)?;
        let id = parse_id("id", &id)?;
        let at = devart_commands::history::At::parse(&at).map_err(|m| bad_input("at", m))?;
        let folded = services(ctx).commands.load_at::<DocumentAggregate>(id, at).await.map_err(gql)?;
        if folded.version == 0 {
            return Ok(None);
        }
        of_folded(folded).map(Some)
    }

    /// Searches the documents' chunks, best first. `tags`: only documents with all of them;
    /// `source`: only documents from it. Keyword mode reads `query` as web-search syntax
    /// (`"exact phrase"`, `-excluded`, `or`).
    async fn search_knowledge(
        &self,
        ctx: &Context<'_>,
        query: String,
        #[graphql(default = 10)] first: i32,
        tags: Option<Vec<String>>,
        source: Option<String>,
        #[graphql(default_with = "SearchMode::Keyword")] mode: SearchMode,
    ) -> async_graphql::Result<Vec<KnowledgeHit>> {
        caller(ctx)?;
        services(ctx).metrics.knowledge_searches.get_or_create(&SearchModeLabel { mode: mode.label().into() }).inc();
        if mode != SearchMode::Keyword {
            return Err(error(Code::Unavailable, "semantic search needs the embedding worker, not yet available"));
        }
        let first = first_of(first)?;
        if query.trim().is_empty() || query.chars().count() > 1_000 {
            return Err(bad_input("query", "must be 1 to 1000 characters"));
        }
        let tags = tags.map(|t| domain(Tags::parse(&t))).transpose()?.map(|t| t.to_strings());
        let source = source.map(|s| domain(Source::parse(&s))).transpose()?.map(|s| s.as_str().to_owned());
        let rows: Vec<HitRow> = sqlx::query_as(
            "with q as (select websearch_to_tsquery('english', $1) as query), \
             best as ( \
                 select c.document_id, c.ordinal, c.heading, c.text, c.char_start, c.char_end, \
                        ts_rank(c.tsv, q.query)::float8 as score, q.query \
                 from knowledge_chunks c join documents d on d.id = c.document_id, q \
                 where c.tsv @@ q.query \
                   and ($2::text[] is null or d.tags @> $2) \
                   and ($3::text is null or d.source = $3) \
                 order by score desc, c.document_id, c.ordinal \
                 limit $4) \
             select b.document_id, d.title, d.tags, d.source, b.ordinal, b.heading, b.text, b.char_start, \
                    b.char_end, b.score, \
                    ts_headline('english', translate(b.text, chr(2) || chr(3), ''), b.query, \
                        'StartSel=' || chr(2) || ', StopSel=' || chr(3) || ', MaxWords=35, MinWords=15, MaxFragments=2') \
                        as excerpt \
             from best b join documents d on d.id = b.document_id \
             order by b.score desc, b.document_id, b.ordinal",
        )
        .bind(&query)
        .bind(tags)
        .bind(source)
        .bind(first)
        .fetch_all(read(ctx).await?.conn())
        .await
        .map_err(gql)?;
        Ok(rows
            .into_iter()
            .map(|r| KnowledgeHit {
                document: KnowledgeHitDocument {
                    id: ID(r.document_id.to_string()),
                    title: r.title,
                    tags: r.tags,
                    source: r.source,
                },
                chunk: KnowledgeChunk {
                    ordinal: r.ordinal,
                    heading: r.heading,
                    text: r.text,
                    char_start: r.char_start,
                    char_end: r.char_end,
                },
                score: r.score,
                excerpt: excerpt_html(&r.excerpt),
            })
            .collect())
    }
}

#[derive(Default)]
pub struct KnowledgeMutation;

#[Object]
impl KnowledgeMutation {
    /// Adds a document (supervisor, admin; an agent while `knowledge.agentsMayWrite` is true). It
    /// is searchable once the read model has it, within a second.
    async fn add_document(
        &self,
        ctx: &Context<'_>,
        input: AddDocumentInput,
    ) -> async_graphql::Result<KnowledgeDocument> {
        let caller = writer(ctx)?;
        let document = NewDocument {
            title: domain(Title::parse(&input.title))?,
            content: domain(Content::parse(&input.content))?,
            tags: domain(Tags::parse(&input.tags))?,
            source: domain(Source::parse(input.source.as_deref().unwrap_or_default()))?,
            metadata: input.metadata.map(|m| domain(Metadata::from_value(&m.0))).transpose()?.unwrap_or_default(),
        };
        let context = command_context(ctx, &caller);
        let id = new_aggregate_id(ctx, &context);
        of_folded(services(ctx).commands.documents().add(id, document, &context).await.map_err(gql)?)
    }

    /// Changes the fields given; with `expectedVersion`, only if the document is still at that
    /// version (`CONFLICT` otherwise).
    async fn update_document(
        &self,
        ctx: &Context<'_>,
        id: ID,
        expected_version: Option<i64>,
        input: UpdateDocumentInput,
    ) -> async_graphql::Result<KnowledgeDocument> {
        let caller = writer(ctx)?;
        let id = parse_id("id", &id)?;
        let expected = match expected_version {
            Some(v) if v < 0 => return Err(bad_input("expectedVersion", "must not be negative")),
            v => v.map(|v| v as u64),
        };
        let update = UpdateDocument {
            title: input.title.as_deref().map(Title::parse).transpose().map_err(gql)?,
            content: input.content.as_deref().map(Content::parse).transpose().map_err(gql)?,
            source: input.source.as_deref().map(Source::parse).transpose().map_err(gql)?,
            metadata: input.metadata.map(|m| Metadata::from_value(&m.0)).transpose().map_err(gql)?,
        };
        let context = command_context(ctx, &caller);
        of_folded(services(ctx).commands.documents().update(id, update, expected, &context).await.map_err(gql)?)
    }

    /// Replaces a document's tags with `tags`.
    async fn tag_document(
        &self,
        ctx: &Context<'_>,
        id: ID,
        tags: Vec<String>,
    ) -> async_graphql::Result<KnowledgeDocument> {
        let caller = writer(ctx)?;
        let id = parse_id("id", &id)?;
        let tags = domain(Tags::parse(&tags))?;
        let context = command_context(ctx, &caller);
        of_folded(services(ctx).commands.documents().tag(id, tags, &context).await.map_err(gql)?)
    }

    /// Removes a document from the knowledge base and from search; its history stays
    /// (`history(streamId: "document-<id>")`, `documentAt`). True once removed.
    async fn remove_document(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let caller = writer(ctx)?;
        let id = parse_id("id", &id)?;
        let context = command_context(ctx, &caller);
        services(ctx).commands.documents().remove(id, &context).await.map_err(gql)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_escape_the_text_and_mark_the_matches() {
        assert_eq!(excerpt_html("a <b> & \u{2}x\u{3}"), "a &lt;b&gt; &amp; <mark>x</mark>");
    }
}
