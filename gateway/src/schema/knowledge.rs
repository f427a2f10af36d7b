//! The knowledge base: documents written by supervisors and admins (and by agents while
//! `knowledge.agentsMayWrite` is true), read and searched by everyone who reads tasks.
//!
//! Search has three modes. Keyword: the chunks' `tsvector` (`websearch_to_tsquery` syntax, ranked
//! by `ts_rank`, the heading weighing more than the text). Semantic: the query embedded by the
//! process's provider, the nearest chunk vectors by cosine distance through the HNSW index
//! (`hnsw.ef_search` at least [`EF_SEARCH_MIN`], iterative scans for filters, so a filtered search
//! returns as many hits as exist), only vectors of the provider's own model. Hybrid: both,
//! [`HYBRID_DEPTH`] deep each, fused by reciprocal rank fusion ([`RRF_K`]). (A keyword half that
//! matched any of the query's words, for questions in plain language, ranked tens of thousands
//! of chunks per question at 100,000: 126 ms at p99, past the 100 ms hybrid search may take.) Each hit has its
//! document, chunk, score and an excerpt with the query's words marked (`<mark>`…`</mark>`, the
//! rest HTML-escaped). Without a provider, semantic and hybrid answer `UNAVAILABLE` with how to
//! turn them on; a provider that fails (the model's pool, a remote API) is `UNAVAILABLE` too.

use async_graphql::{ComplexObject, Context, Enum, InputObject, Json, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use devart_commands::documents::NewDocument;
use devart_commands::Folded;
use devart_domain::document::{
    chunks, Content, Document as DocumentAggregate, DocumentState, Metadata, Source, Tags, Title, UpdateDocument,
};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use super::{caller, command_context, domain, new_aggregate_id, parse_id, person, read, require, services};
use crate::auth::{Caller, Role};
use crate::error::{bad_input, error, gql, internal, Code};
use crate::metrics::SearchModeLabel;
use crate::QueryEmbeddings;

/// What `searchKnowledge` and `documents` answer at most.
const FIRST_MAX: i32 = 100;
/// Candidates a semantic search examines at least (`hnsw.ef_search`): recall@10 above 0.98 at
/// 100,000 chunks (BENCHMARKS.md).
pub const EF_SEARCH_MIN: i64 = 100;
/// Hits of each kind a hybrid search fuses.
pub const HYBRID_DEPTH: i64 = 50;
/// Reciprocal rank fusion's constant: a hit ranked `r` (from 1) by one kind adds `1 / (RRF_K + r)`.
pub const RRF_K: f64 = 60.0;

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
    /// Who changed it last.
    pub updated_by: String,
    /// The version and model the embedding worker last applied, if it has.
    #[graphql(skip)]
    pub embedded: Option<(i64, String)>,
    /// As it stood in the past (`documentAt`), not as the read models hold it now.
    #[graphql(skip)]
    pub past: bool,
}

/// Whether semantic search finds a document as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum DocumentSearchStatus {
    /// Its chunks are embedded as of its current version: every mode finds it.
    Searchable,
    /// Keyword search finds it; the embedding worker has not reached this version yet.
    Embedding,
    /// Its vectors were made by another model than the one search uses now: semantic search finds
    /// it again after `devart projections rebuild embeddings`.
    OtherModel,
    /// No embedding provider is configured here: keyword search only (`knowledgeStatus.reason`).
    KeywordOnly,
}

#[ComplexObject]
impl KnowledgeDocument {
    /// Whether semantic search finds it as it is now; null for a document as it stood in the past.
    async fn search_status(&self, ctx: &Context<'_>) -> Option<DocumentSearchStatus> {
        if self.past {
            return None;
        }
        let QueryEmbeddings::On(provider) = &services(ctx).semantic else {
            return Some(DocumentSearchStatus::KeywordOnly);
        };
        Some(match &self.embedded {
            Some((_, model)) if model != provider.model() => DocumentSearchStatus::OtherModel,
            Some((version, _)) if *version == self.version => DocumentSearchStatus::Searchable,
            _ => DocumentSearchStatus::Embedding,
        })
    }

    /// Its chunks, in order: as search holds them (empty until the read model has the document),
    /// or, for a document as it stood in the past, as its content then splits.
    async fn chunks(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<KnowledgeChunk>> {
        if self.past {
            return Ok(chunks::split(&self.content).into_iter().map(KnowledgeChunk::from).collect());
        }
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

impl From<chunks::Chunk> for KnowledgeChunk {
    fn from(c: chunks::Chunk) -> Self {
        let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        KnowledgeChunk {
            ordinal: as_i32(c.ordinal as usize),
            heading: c.heading,
            text: c.text,
            char_start: as_i32(c.char_start),
            char_end: as_i32(c.char_end),
        }
    }
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
    /// By meaning: the chunks nearest the query's embedding (cosine).
    Semantic,
    /// By words: Postgres full-text search.
    Keyword,
    /// Both, fused by reciprocal rank.
    Hybrid,
}

/// Whether semantic search runs here, and how far the vectors are.
#[derive(Debug, Clone, SimpleObject)]
pub struct KnowledgeStatus {
    /// True when semantic and hybrid search work in this gateway.
    pub semantic: bool,
    /// The model queries are embedded with, when on.
    pub model: Option<String>,
    /// Why semantic search is off, and how to turn it on.
    pub reason: Option<String>,
    /// Live documents.
    pub documents: i64,
    /// Their chunks.
    pub chunks: i64,
    /// Chunks with a vector of the current model.
    pub embedded_chunks: i64,
    /// Documents whose current version semantic search does not reflect yet.
    pub pending_documents: i64,
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
    updated_by: String,
    embedded_version: Option<i64>,
    embedded_model: Option<String>,
}

/// A document's columns, and what the embedding worker applied of it: `from {DOCUMENTS}`.
const DOCUMENT_COLUMNS: &str = "d.id, d.title, d.content, d.tags, d.source, d.metadata, d.version, d.chunk_count, \
     d.created_at, d.created_by, d.updated_at, d.updated_by, e.version as embedded_version, e.model as embedded_model";
const DOCUMENTS: &str = "documents d left join knowledge_embedded e on e.document_id = d.id";

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
            updated_by: r.updated_by,
            embedded: r.embedded_version.zip(r.embedded_model),
            past: false,
        }
    }
}

/// The document as a command or a moment in its history left it.
/// `updated_by` changed it last; `past`: it is as it stood then, not as the read models hold it.
fn of_folded(
    folded: Folded<DocumentState>,
    updated_by: String,
    past: bool,
) -> async_graphql::Result<KnowledgeDocument> {
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
        updated_by,
        embedded: None,
        past,
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
            sqlx::query_as(&format!("select {DOCUMENT_COLUMNS} from {DOCUMENTS} where d.id = $1"))
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
            "select {DOCUMENT_COLUMNS} from {DOCUMENTS} where ($1::text[] is null or d.tags @> $1) \
             order by d.updated_at desc, d.id limit $2"
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
        let stream = devart_domain::StreamId::new(<DocumentAggregate as devart_domain::Aggregate>::KIND, id);
        let events = services(ctx).store.read_stream(&stream, Some(folded.version)).await.map_err(gql)?;
        let updated_by = events.last().map(|e| e.meta.actor.to_string()).unwrap_or_default();
        of_folded(folded, updated_by, true).map(Some)
    }

    /// Searches the documents' chunks, best first. `tags`: only documents with all of them;
    /// `source`: only documents from it. Keyword mode reads `query` as web-search syntax
    /// (`"exact phrase"`, `-excluded`, `or`); semantic mode by meaning; hybrid fuses both.
    /// Semantic and hybrid search find a document once its status is `SEARCHABLE`.
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
        let first = first_of(first)?;
        if query.trim().is_empty() || query.chars().count() > 1_000 {
            return Err(bad_input("query", "must be 1 to 1000 characters"));
        }
        let filter = Filter {
            tags: tags.map(|t| domain(Tags::parse(&t))).transpose()?.map(|t| t.to_strings()),
            source: source.map(|s| domain(Source::parse(&s))).transpose()?.map(|s| s.as_str().to_owned()),
        };
        match mode {
            SearchMode::Keyword => keyword(ctx, &query, &filter, first).await,
            SearchMode::Semantic => {
                let near = embed_query(ctx, &query).await?;
                semantic(ctx, &near, &query, &filter, first).await
            }
            SearchMode::Hybrid => {
                let near = embed_query(ctx, &query).await?;
                let depth = HYBRID_DEPTH.max(first);
                let by_words = keyword(ctx, &query, &filter, depth).await?;
                let by_meaning = semantic(ctx, &near, &query, &filter, depth).await?;
                Ok(fuse(by_words, by_meaning, first as usize))
            }
        }
    }

    /// Whether semantic search runs here, with the model, and how far the embedding worker is.
    async fn knowledge_status(&self, ctx: &Context<'_>) -> async_graphql::Result<KnowledgeStatus> {
        caller(ctx)?;
        let (model, reason) = match &services(ctx).semantic {
            QueryEmbeddings::On(provider) => (Some(provider.model().to_owned()), None),
            QueryEmbeddings::Off(reason) => (None, Some(reason.clone())),
        };
        let (documents, chunks, embedded_chunks, pending_documents): (i64, i64, i64, i64) = sqlx::query_as(
            "select (select count(*) from documents), \
                    (select count(*) from knowledge_chunks), \
                    (select count(*) from knowledge_vectors where model = $1), \
                    (select count(*) from documents d left join knowledge_embedded e on e.document_id = d.id \
                     where e.version is distinct from d.version or e.model is distinct from $1)",
        )
        .bind(&model)
        .fetch_one(read(ctx).await?.conn())
        .await
        .map_err(gql)?;
        Ok(KnowledgeStatus {
            semantic: model.is_some(),
            model,
            reason,
            documents,
            chunks,
            embedded_chunks,
            pending_documents,
        })
    }
}

/// What a search is narrowed to.
struct Filter {
    tags: Option<Vec<String>>,
    source: Option<String>,
}

/// A query's embedding, and the model that made it (the only one whose vectors it is compared with).
struct Near {
    model: String,
    literal: String,
}

async fn embed_query(ctx: &Context<'_>, query: &str) -> async_graphql::Result<Near> {
    let provider = match &services(ctx).semantic {
        QueryEmbeddings::On(provider) => provider,
        QueryEmbeddings::Off(reason) => return Err(error(Code::Unavailable, reason.clone())),
    };
    let mut vectors = provider
        .embed(vec![query.to_owned()])
        .await
        .map_err(|e| error(Code::Unavailable, format!("embedding the query: {e}")))?;
    let vector = vectors.pop().ok_or_else(|| error(Code::Unavailable, "embedding the query: no vector"))?;
    Ok(Near { model: provider.model().to_owned(), literal: devart_projections::embeddings::vector_literal(&vector) })
}

/// The excerpt: the chunk's text with the query's words marked (`\u{2}` … `\u{3}`, as
/// [`excerpt_html`] reads them); `$q` is the `tsquery`.
const EXCERPT: &str = "ts_headline('english', translate(c.text, chr(2) || chr(3), ''), q.query, \
     'StartSel=' || chr(2) || ', StopSel=' || chr(3) || ', MaxWords=35, MinWords=15, MaxFragments=2')";

async fn keyword(
    ctx: &Context<'_>,
    query: &str,
    filter: &Filter,
    first: i64,
) -> async_graphql::Result<Vec<KnowledgeHit>> {
    let rows: Vec<HitRow> = sqlx::query_as(&format!(
        "with q as (select websearch_to_tsquery('english', $1) as query), \
         best as ( \
             select c.document_id, c.ordinal, ts_rank(c.tsv, q.query)::float8 as score \
             from knowledge_chunks c join documents d on d.id = c.document_id, q \
             where c.tsv @@ q.query \
               and ($2::text[] is null or d.tags @> $2) \
               and ($3::text is null or d.source = $3) \
             order by score desc, c.document_id, c.ordinal \
             limit $4) \
         select b.document_id, d.title, d.tags, d.source, c.ordinal, c.heading, c.text, c.char_start, \
                c.char_end, b.score, {EXCERPT} as excerpt \
         from best b join knowledge_chunks c on c.document_id = b.document_id and c.ordinal = b.ordinal \
              join documents d on d.id = b.document_id, q \
         order by b.score desc, b.document_id, b.ordinal"
    ))
    .bind(query)
    .bind(&filter.tags)
    .bind(&filter.source)
    .bind(first)
    .fetch_all(read(ctx).await?.conn())
    .await
    .map_err(gql)?;
    Ok(rows.into_iter().map(KnowledgeHit::from).collect())
}

/// The chunks nearest `near`, as `1 - cosine distance`. The vectors are read in a materialized
/// subquery and ordered again outside, as pgvector's relaxed iterative scans need; a vector whose
/// chunk text is not the one `knowledge_chunks` holds now (the two read models at different
/// versions of a document) is left out rather than shown with another chunk's text.
async fn semantic(
    ctx: &Context<'_>,
    near: &Near,
    query: &str,
    filter: &Filter,
    first: i64,
) -> async_graphql::Result<Vec<KnowledgeHit>> {
    let mut guard = read(ctx).await?;
    let conn = guard.conn();
    let ef_search = (2 * first).clamp(EF_SEARCH_MIN, 1_000);
    sqlx::query(
        "select set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)",
    )
    .bind(ef_search.to_string())
    .execute(&mut *conn)
    .await
    .map_err(gql)?;
    let rows: Vec<HitRow> = sqlx::query_as(&format!(
        "with near as materialized ( \
             select v.document_id, v.ordinal, v.text_md5, v.embedding <=> $1::vector as distance \
             from knowledge_vectors v \
             where v.model = $2 \
               and ($3::text[] is null or v.tags @> $3) \
               and ($4::text is null or v.source = $4) \
             order by v.embedding <=> $1::vector \
             limit $5), \
         q as (select websearch_to_tsquery('english', $6) as query) \
         select n.document_id, d.title, d.tags, d.source, c.ordinal, c.heading, c.text, c.char_start, \
                c.char_end, (1 - n.distance)::float8 as score, {EXCERPT} as excerpt \
         from near n join knowledge_chunks c \
                  on c.document_id = n.document_id and c.ordinal = n.ordinal and md5(c.text) = n.text_md5 \
              join documents d on d.id = n.document_id, q \
         order by n.distance, n.document_id, n.ordinal"
    ))
    .bind(&near.literal)
    .bind(&near.model)
    .bind(&filter.tags)
    .bind(&filter.source)
    .bind(first)
    .bind(query)
    .fetch_all(&mut *conn)
    .await
    .map_err(gql)?;
    Ok(rows.into_iter().map(KnowledgeHit::from).collect())
}

/// Reciprocal rank fusion: each hit scores `1 / (RRF_K + rank)` in each list it is in, summed; a
/// hit in both lists keeps the keyword search's excerpt (it marks the words that matched).
fn fuse(by_words: Vec<KnowledgeHit>, by_meaning: Vec<KnowledgeHit>, first: usize) -> Vec<KnowledgeHit> {
    let mut fused: Vec<KnowledgeHit> = Vec::with_capacity(by_words.len() + by_meaning.len());
    for list in [by_words, by_meaning] {
        for (rank, hit) in list.into_iter().enumerate() {
            let score = 1.0 / (RRF_K + rank as f64 + 1.0);
            match fused.iter_mut().find(|h| h.document.id == hit.document.id && h.chunk.ordinal == hit.chunk.ordinal) {
                Some(seen) => seen.score += score,
                None => fused.push(KnowledgeHit { score, ..hit }),
            }
        }
    }
    fused.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.document.id.cmp(&b.document.id))
            .then_with(|| a.chunk.ordinal.cmp(&b.chunk.ordinal))
    });
    fused.truncate(first);
    fused
}

impl From<HitRow> for KnowledgeHit {
    fn from(r: HitRow) -> Self {
        KnowledgeHit {
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
        }
    }
}

/// A change to a document, as soon as a read model has it.
#[derive(Debug, Clone, SimpleObject)]
pub struct KnowledgeDocumentChange {
    pub id: ID,
    /// The document's version the read model now reflects.
    pub version: i64,
    pub removed: bool,
    /// False: the document and keyword search have this version. True: its vectors have it too,
    /// so semantic search finds it as it now is.
    pub embedded: bool,
}

#[derive(Default)]
pub struct KnowledgeSubscription;

#[Subscription]
impl KnowledgeSubscription {
    /// Each change to a document (to `id`'s only, if given): once when the document and keyword
    /// search have it, once more when its vectors do. Read the document again for the rest.
    async fn document_updates(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = KnowledgeDocumentChange>> {
        caller(ctx)?;
        let only = id.map(|id| parse_id("id", &id)).transpose()?;
        let live = &services(ctx).live;
        let documents = live.documents.subscribe().map(|c| (c.id, c.version, c.removed, false));
        let embedded = live.embedded.subscribe().map(|c| (c.id, c.version, c.removed, true));
        Ok(futures::stream::select(documents, embedded).filter_map(move |(id, version, removed, embedded)| {
            let wanted = only.is_none_or(|only| only == id);
            async move { wanted.then(|| KnowledgeDocumentChange { id: ID(id.to_string()), version, removed, embedded }) }
        }))
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
        of_folded(
            services(ctx).commands.documents().add(id, document, &context).await.map_err(gql)?,
            context.actor.to_string(),
            false,
        )
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
        of_folded(
            services(ctx).commands.documents().update(id, update, expected, &context).await.map_err(gql)?,
            context.actor.to_string(),
            false,
        )
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
        of_folded(
            services(ctx).commands.documents().tag(id, tags, &context).await.map_err(gql)?,
            context.actor.to_string(),
            false,
        )
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
