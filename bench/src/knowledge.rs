//! The knowledge base at `--knowledge-chunks` chunks (100,000 by default), in a whole devart serve
//! with the local model: ingest through `addDocument` until every chunk is embedded, then search
//! over GraphQL in each mode, the HNSW index's recall against an exact scan of the same vectors,
//! and a tag filter that matches 5 % of the chunks.
//!
//! Each document is one sentence (15 to 25 tokens) drawn from a technical vocabulary, with an
//! identifier of its own (`KB-<n>`), so it is one chunk; a full chunk of 1,000 characters costs the
//! model about ten times as much (the `embed` benchmark measures those). Baselines, in the same
//! run: the model embedding the same sentences on a pool of its own with as many threads as the
//! server's (`DEVART_EMBED_THREADS`), and the search statements sent straight to Postgres (with the
//! query embedded the same way), without GraphQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use devart_embed::{EmbedPool, Embedder, PoolConfig};
use rand::{Rng as _, SeedableRng as _};
use sqlx::PgPool;

use super::*;

/// Mutations in flight while adding documents.
const WRITERS: usize = 16;
/// Queries timed per mode, one after the other.
const QUERIES: usize = 300;
/// Queries whose top 10 the recall compares.
const RECALL_QUERIES: usize = 200;
/// Sentences the raw embedding baseline embeds.
const BASELINE_TEXTS: usize = 2_000;
/// One document in this many carries the tag `rare`: 5 %.
const RARE_EVERY: usize = 20;

const SUBJECTS: &[&str] = &[
    "the gateway",
    "a projection worker",
    "the relay",
    "an agent",
    "the scheduler",
    "the billing job",
    "the cache",
    "a reviewer",
    "the database",
    "the CI pipeline",
    "the load balancer",
    "the search index",
    "a webhook",
    "the deploy script",
    "the message broker",
    "the auth service",
    "a cron job",
    "the backup agent",
    "the metrics exporter",
    "the sandbox",
    "the container registry",
    "a feature flag",
    "the rate limiter",
    "the audit log",
    "the queue",
    "a supervisor",
    "the embedding model",
    "the object store",
    "the DNS resolver",
    "the config loader",
    "the certificate manager",
    "the token issuer",
    "a canary release",
    "the migration tool",
    "the alert router",
    "the log shipper",
    "the build cache",
    "the secrets vault",
    "the API client",
    "a test runner",
];
const VERBS: &[&str] = &[
    "retries",
    "rejects",
    "caches",
    "logs",
    "signs",
    "compresses",
    "replicates",
    "schedules",
    "throttles",
    "validates",
    "encrypts",
    "drops",
    "batches",
    "indexes",
    "rotates",
    "archives",
    "forwards",
    "deduplicates",
    "verifies",
    "restarts",
    "pauses",
    "rebuilds",
    "streams",
    "merges",
    "splits",
    "ranks",
    "expires",
    "audits",
    "mirrors",
    "uploads",
    "parses",
    "reconciles",
    "snapshots",
    "monitors",
    "quarantines",
    "approves",
    "charges",
    "cancels",
    "migrates",
    "prunes",
];
const OBJECTS: &[&str] = &[
    "expired tokens",
    "failed builds",
    "large payloads",
    "webhook deliveries",
    "monthly invoices",
    "stale leases",
    "pull requests",
    "database connections",
    "log lines",
    "container images",
    "API keys",
    "review comments",
    "test reports",
    "budget reservations",
    "user sessions",
    "search queries",
    "schema migrations",
    "event batches",
    "TLS certificates",
    "dead letters",
    "cost outliers",
    "feature toggles",
    "shard assignments",
    "disk snapshots",
    "approval requests",
    "rate limit counters",
    "workflow runs",
    "commit statuses",
    "DNS records",
    "metrics samples",
    "retry timers",
    "backup archives",
    "access policies",
    "queue messages",
    "password hashes",
    "job artifacts",
    "health checks",
    "config files",
    "cache entries",
    "price tables",
];
const CONTEXTS: &[&str] = &[
    "after a deploy",
    "during the nightly backup",
    "when the disk is full",
    "for every pull request",
    "before the monthly close",
    "under heavy load",
    "when a node restarts",
    "after a network partition",
    "at the start of each hour",
    "when the budget runs out",
    "during a failover",
    "for each new tenant",
    "when a secret rotates",
    "before the release freeze",
    "while the queue drains",
    "after three failures",
    "on every schema change",
    "when the cache misses",
    "during peak traffic",
    "for archived projects",
];

/// Document `n`'s sentence: a subject, a verb, an object and a context, and its own identifier.
fn sentence(rng: &mut rand::rngs::StdRng, n: usize) -> String {
    let pick = |rng: &mut rand::rngs::StdRng, words: &[&'static str]| words[rng.gen_range(0..words.len())];
    let (s, v, o, c) = (pick(rng, SUBJECTS), pick(rng, VERBS), pick(rng, OBJECTS), pick(rng, CONTEXTS));
    format!("{} {v} {o} {c} (ref KB-{n}).", capitalised(s))
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// A question in other words than the documents': what an agent would ask.
fn question(rng: &mut rand::rngs::StdRng) -> String {
    let pick = |rng: &mut rand::rngs::StdRng, words: &[&'static str]| words[rng.gen_range(0..words.len())];
    format!("why does {} {} {} {}", pick(rng, SUBJECTS), pick(rng, VERBS), pick(rng, OBJECTS), pick(rng, CONTEXTS))
}

pub(crate) async fn knowledge(scratch: &Stack, args: &Args) -> anyhow::Result<Vec<Row>> {
    let total = args.knowledge_chunks as usize;
    let devart = Server::start(&scratch.config, &[Role::Gateway, Role::Relay, Role::Projections]).await?;
    let api = devart.client().clone();
    let status = api.data("{ knowledgeStatus { semantic model reason } }", json!({})).await?;
    anyhow::ensure!(
        status["knowledgeStatus"]["semantic"] == true,
        "semantic search is off in the server: {}",
        status["knowledgeStatus"]["reason"]
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let texts: Vec<String> = (0..total).map(|n| sentence(&mut rng, n)).collect();
    let texts = Arc::new(texts);

    // Ingest: every document through addDocument, then until the vectors have caught up.
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = JoinSet::new();
    for _ in 0..WRITERS {
        let (api, texts, next) = (api.clone(), texts.clone(), next.clone());
        writers.spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(text) = texts.get(n) else { return anyhow::Ok(()) };
                let tags = if n % RARE_EVERY == 0 { vec!["rare"] } else { vec!["common"] };
                api.data(
                    "mutation($input: AddDocumentInput!) { addDocument(input: $input) { id } }",
                    json!({ "input": { "title": format!("Note {n}"), "content": text, "tags": tags, "source": "bench" } }),
                )
                .await?;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    let written = started.elapsed();
    tracing::info!(documents = total, ?written, "documents added; waiting for the read models");
    let keyword_ready = caught_up(&scratch.pool, "knowledge", started).await?;
    let embedded = caught_up(&scratch.pool, "embeddings", started).await?;
    let chunks: i64 = sqlx::query_scalar("select count(*) from knowledge_vectors").fetch_one(&scratch.pool).await?;
    anyhow::ensure!(chunks as usize == total, "{chunks} vectors for {total} documents");

    // The raw baseline: the model alone on the same sentences, with the server's thread count.
    let embedder = Arc::new(tokio::task::spawn_blocking(Embedder::load_default).await??);
    let config = PoolConfig::from_env()?;
    let raw = EmbedPool::start(embedder.clone(), config)?;
    let sample: Vec<String> = texts.iter().take(BASELINE_TEXTS).cloned().collect();
    raw.embed(sample.iter().take(64).cloned().collect()).await?; // warm-up
    let raw_started = Instant::now();
    raw.embed(sample).await?;
    let raw_rate = BASELINE_TEXTS as f64 / raw_started.elapsed().as_secs_f64();
    let ingest_rate = total as f64 / embedded.as_secs_f64();
    let query_pool = EmbedPool::start(embedder, PoolConfig { threads: 1, ..PoolConfig::default() })?;
    let model = query_pool.version().to_owned();

    let mut rows = vec![
        Row {
            name: format!("add {total} one-chunk documents over GraphQL ({WRITERS} writers)"),
            figure: total as f64 / written.as_secs_f64(),
            unit: "docs/s",
            baseline: None,
            target: Target::None,
        },
        Row {
            name: format!("  … until keyword search has all {total}"),
            figure: keyword_ready.as_secs_f64(),
            unit: "s",
            baseline: None,
            target: Target::None,
        },
        Row {
            name: format!(
                "ingest {total} chunks until embedded, {} thread{} (baseline: the model alone)",
                config.threads,
                if config.threads == 1 { "" } else { "s" }
            ),
            figure: ingest_rate,
            unit: "chunks/s",
            baseline: Some(raw_rate),
            target: Target::RatioAtLeast(0.7),
        },
    ];

    // Recall@10 of the index (with the gateway's ef_search) against an exact scan.
    let mut qrng = rand::rngs::StdRng::seed_from_u64(7);
    let questions: Vec<String> = (0..RECALL_QUERIES.max(QUERIES)).map(|_| question(&mut qrng)).collect();
    let mut found = 0usize;
    for q in questions.iter().take(RECALL_QUERIES) {
        let vector = devart_projections::embeddings::vector_literal(&query_pool.embed_one(q.clone()).await?);
        let approximate = nearest(&scratch.pool, &vector, &model, false).await?;
        let exact = nearest(&scratch.pool, &vector, &model, true).await?;
        found += approximate.iter().filter(|hit| exact.contains(hit)).count();
    }
    rows.push(Row {
        name: format!("recall@10 of the HNSW index against an exact scan ({RECALL_QUERIES} questions)"),
        figure: found as f64 / (RECALL_QUERIES * 10) as f64,
        unit: "",
        baseline: None,
        target: Target::AtLeast(0.98),
    });

    // Each mode through GraphQL, against the same statement sent straight to Postgres.
    let search = "query($q: String!, $mode: SearchMode!, $tags: [String!]) { \
        searchKnowledge(query: $q, first: 10, mode: $mode, tags: $tags) { score document { id } } }";
    let timed = |q: String, mode: &'static str, tags: Option<Vec<&'static str>>| {
        let api = api.clone();
        async move {
            let sent = Instant::now();
            let data = api.data(search, json!({ "q": q, "mode": mode, "tags": tags })).await?;
            let hits = data["searchKnowledge"].as_array().map_or(0, Vec::len);
            anyhow::Ok((sent.elapsed(), hits))
        }
    };
    let mut raw_semantic = Vec::new();
    for q in questions.iter().take(QUERIES) {
        let sent = Instant::now();
        let vector = devart_projections::embeddings::vector_literal(&query_pool.embed_one(q.clone()).await?);
        nearest(&scratch.pool, &vector, &model, false).await?;
        raw_semantic.push(sent.elapsed());
    }
    let raw_semantic = Stats::of(raw_semantic);
    let mut raw_keyword = Vec::new();
    let keywords: Vec<String> = (0..QUERIES).map(|i| format!("KB-{}", (i * 7919) % total)).collect();
    for q in &keywords {
        let sent = Instant::now();
        sqlx::query(
            "select document_id, ordinal from knowledge_chunks where tsv @@ websearch_to_tsquery('english', $1) \
             order by ts_rank(tsv, websearch_to_tsquery('english', $1)) desc limit 10",
        )
        .bind(q)
        .fetch_all(&scratch.pool)
        .await?;
        raw_keyword.push(sent.elapsed());
    }
    let raw_keyword = Stats::of(raw_keyword);
    let mut by_mode = Vec::new();
    for (mode, queries, baseline, target) in [
        ("SEMANTIC", &questions, Some(&raw_semantic), Some(50.0)),
        ("KEYWORD", &keywords, Some(&raw_keyword), None),
        ("HYBRID", &questions, None, Some(100.0)),
    ] {
        let mut sample = Vec::new();
        for q in queries.iter().take(QUERIES) {
            sample.push(timed(q.clone(), mode, None).await?.0);
        }
        by_mode.push((mode, Stats::of(sample), baseline, target));
    }
    for (mode, stats, baseline, target) in by_mode {
        let what = match mode {
            "SEMANTIC" => "a question, the query's embedding included",
            "KEYWORD" => "an identifier",
            _ => "a question, both kinds fused",
        };
        let name = format!("searchKnowledge {} ({what}) at {total} chunks", mode.to_lowercase());
        rows.push(Row {
            name: format!("{name}, p50"),
            figure: millis(stats.p50),
            unit: "ms",
            baseline: baseline.map(|b| millis(b.p50)),
            target: Target::None,
        });
        rows.push(Row {
            name: format!("{name}, p99 (baseline: embedding and SQL alone)"),
            figure: millis(stats.p99),
            unit: "ms",
            baseline: baseline.map(|b| millis(b.p99)),
            target: target.map_or(Target::None, Target::AtMost),
        });
    }

    // A filter that keeps 5 % of the chunks still fills the page.
    let mut fewest = usize::MAX;
    let mut filtered = Vec::new();
    for q in questions.iter().take(QUERIES / 3) {
        let (took, hits) = timed(q.clone(), "SEMANTIC", Some(vec!["rare"])).await?;
        fewest = fewest.min(hits);
        filtered.push(took);
    }
    let filtered = Stats::of(filtered);
    rows.push(Row {
        name: format!("semantic search with a tag on 5 % of the chunks: fewest hits of 10 ({} questions)", QUERIES / 3),
        figure: fewest as f64,
        unit: "hits",
        baseline: None,
        target: Target::AtLeast(10.0),
    });
    rows.push(Row {
        name: "  … its p99, the query's embedding included".into(),
        figure: millis(filtered.p99),
        unit: "ms",
        baseline: None,
        target: Target::None,
    });
    devart.stop().await?;
    Ok(rows)
}

/// The 10 chunks nearest `vector`, by the index as the gateway asks it, or by an exact scan.
async fn nearest(pool: &PgPool, vector: &str, model: &str, exact: bool) -> anyhow::Result<Vec<(uuid::Uuid, i32)>> {
    let mut tx = pool.begin().await?;
    let ef = devart_gateway::schema::knowledge::EF_SEARCH_MIN.to_string();
    sqlx::query("select set_config('hnsw.ef_search', $1, true), set_config('enable_indexscan', $2, true)")
        .bind(ef)
        .bind(if exact { "off" } else { "on" })
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query_as(
        "select document_id, ordinal from knowledge_vectors where model = $2 \
         order by embedding <=> $1::vector limit 10",
    )
    .bind(vector)
    .bind(model)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// How long after `since` read model `name` had applied everything in the store.
async fn caught_up(pool: &PgPool, name: &str, since: Instant) -> anyhow::Result<Duration> {
    let mut last_log = Instant::now();
    loop {
        let (head, at): (i64, Option<i64>) = sqlx::query_as(
            "select coalesce((select max(position) from events), 0), \
                    (select position from projection_checkpoints where name = $1)",
        )
        .bind(name)
        .fetch_one(pool)
        .await
        .context("reading the checkpoints")?;
        let unsequenced: i64 =
            sqlx::query_scalar("select count(*) from events where position is null").fetch_one(pool).await?;
        if unsequenced == 0 && at == Some(head) {
            return Ok(since.elapsed());
        }
        if last_log.elapsed() > Duration::from_secs(30) {
            tracing::info!(name, head, at, "waiting for the read model");
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
