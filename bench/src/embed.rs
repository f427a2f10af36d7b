//! Embeddings: the inference pool's throughput on knowledge-base-sized chunks and a search query's
//! latency, against the FP32 rate of a plain matrix product on the same threads.
//!
//! The baseline is candle's own f32 matmul (gemm underneath, as in the model) of two 1024 × 1024
//! matrices, run inside a rayon pool of the same number of threads, in GFLOP/s. A chunk costs the
//! model's forward FLOPs (below), so the baseline becomes a rate of chunks per second the machine
//! could reach if the model did nothing but matmuls of that size; the ratio column is the fraction
//! of it reached.
//!
//! FLOPs of one text of `s` tokens through a BERT of `L` layers, width `h`, feed-forward width `i`,
//! counting a multiply-add as 2: per layer, the Q, K, V and output projections `4 · 2·s·h·h`, the
//! scores and the weighted sum `2 · 2·s·s·h`, the feed-forward `2 · 2·s·h·i`; so
//! `L · (2·s·h·(4h + 2i) + 4·s²·h)`. For all-MiniLM-L6-v2 (L = 6, h = 384, i = 1536): 2.87 GFLOP at
//! 128 tokens, 6.04 GFLOP at 256. Embedding lookups, layer norms, softmax, GELU and pooling are
//! left out (under 1 %).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use candle_core::{Device, Tensor};
use devart_embed::{EmbedPool, Embedder, PoolConfig};
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};

use crate::table::{Row, Target};
use crate::workload::{millis, Stats};
use crate::Args;

const LAYERS: f64 = 6.0;
const WIDTH: f64 = 384.0;
const FEED_FORWARD: f64 = 1536.0;
/// Side of the baseline's square matrices.
const MATMUL_SIDE: usize = 1024;
/// Chunks per `embed` call in the throughput runs: several batches' worth, so every thread is fed.
const CHUNKS_PER_CALL: usize = 64;
/// Queries timed one after the other.
const QUERIES: usize = 300;
/// Chunks per second the 128-token run on 2 threads must reach.
const TARGET_CHUNKS_128_ON_2: f64 = 30.0;

/// The forward FLOPs of one text of `tokens` tokens.
fn flops(tokens: usize) -> f64 {
    let s = tokens as f64;
    LAYERS * (2.0 * s * WIDTH * (4.0 * WIDTH + 2.0 * FEED_FORWARD) + 4.0 * s * s * WIDTH)
}

pub(crate) async fn embed(args: &Args) -> anyhow::Result<Vec<Row>> {
    let embedder = tokio::task::spawn_blocking(Embedder::load_default)
        .await?
        .context("loading the embedding model (install it with scripts/models)")?;
    let embedder = Arc::new(embedder);
    tracing::info!(version = embedder.version(), "model loaded");
    let duration = Duration::from_secs(args.duration_secs);
    let mut rows = Vec::new();

    for threads in [1, 2] {
        let gflops = tokio::task::spawn_blocking(move || matmul_gflops(threads, duration)).await??;
        rows.push(Row {
            name: format!("raw f32 matmul {MATMUL_SIDE}³, {threads} thread{}", plural(threads)),
            figure: gflops,
            unit: "GFLOP/s",
            baseline: None,
            target: Target::None,
        });
        let config = PoolConfig { threads, batch_texts: args.embed_batch as usize, ..PoolConfig::default() };
        let pool = EmbedPool::start(embedder.clone(), config)?;
        for tokens in [128, 256] {
            let chunks = chunks(&embedder, tokens, CHUNKS_PER_CALL)?;
            let rate = throughput(&pool, &chunks, duration).await?;
            let target =
                if threads == 2 && tokens == 128 { Target::AtLeast(TARGET_CHUNKS_128_ON_2) } else { Target::None };
            rows.push(Row {
                name: format!(
                    "embed {tokens}-token chunks, {threads} thread{} (baseline: matmul rate / {:.2} GFLOP)",
                    plural(threads),
                    flops(tokens) / 1e9
                ),
                figure: rate,
                unit: "chunks/s",
                baseline: Some(gflops * 1e9 / flops(tokens)),
                target,
            });
        }
        if threads == 1 {
            let latency = query_latency(&pool).await?;
            let ms = |name: &str, value: Duration| Row {
                name: format!("query (8 words) latency {name}, 1 thread"),
                figure: millis(value),
                unit: "ms",
                baseline: None,
                target: Target::None,
            };
            rows.push(ms("p50", latency.p50));
            rows.push(ms("p99", latency.p99));
        }
    }
    if let Some(peak) = peak_resident_mib() {
        rows.push(Row {
            name: "peak resident memory of the benchmark (VmHWM), model loaded once".into(),
            figure: peak,
            unit: "MiB",
            baseline: None,
            target: Target::None,
        });
    }
    Ok(rows)
}

/// The process's peak resident set (`VmHWM`), in MiB, where `/proc` has it.
fn peak_resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib / 1024.0)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// GFLOP/s of repeated 1024 × 1024 f32 products on a rayon pool of `threads` threads.
fn matmul_gflops(threads: usize, duration: Duration) -> anyhow::Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    pool.install(|| {
        let a = Tensor::randn(0f32, 1.0, (MATMUL_SIDE, MATMUL_SIDE), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 1.0, (MATMUL_SIDE, MATMUL_SIDE), &Device::Cpu)?;
        a.matmul(&b)?; // warm-up
        let started = Instant::now();
        let mut products = 0u64;
        while started.elapsed() < duration {
            let c = a.matmul(&b)?;
            std::hint::black_box(c);
            products += 1;
        }
        let side = MATMUL_SIDE as f64;
        Ok(products as f64 * 2.0 * side * side * side / started.elapsed().as_secs_f64() / 1e9)
    })
}

/// `count` different texts of exactly `tokens` tokens each: words that are one token each, drawn at
/// random, plus `[CLS]` and `[SEP]`.
fn chunks(embedder: &Embedder, tokens: usize, count: usize) -> anyhow::Result<Vec<String>> {
    const WORDS: &str = "the queue holds tasks that agents claim under a lease and renew with a heart beat while \
        supervisors watch budgets and limits for every team project service event stream \
        version position command state reply error message build test deploy review merge branch \
        commit release change file line code data table index query search result page user time \
        day week month year number value price cost report plan goal work job run start stop wait";
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    for word in &words {
        if embedder.tokenize(word)?.len() != 3 {
            bail!("{word:?} is not a single token");
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(tokens as u64);
    (0..count)
        .map(|_| {
            let text: Vec<&str> = (0..tokens - 2).map(|_| *words.choose(&mut rng).expect("words")).collect();
            let text = text.join(" ");
            let got = embedder.tokenize(&text)?.len();
            if got != tokens {
                bail!("a chunk meant to be {tokens} tokens has {got}");
            }
            Ok(text)
        })
        .collect()
}

/// Chunks per second through the pool, calls of [`CHUNKS_PER_CALL`] chunks repeated for `duration`
/// after one warm-up call.
async fn throughput(pool: &EmbedPool, chunks: &[String], duration: Duration) -> anyhow::Result<f64> {
    pool.embed(chunks.to_vec()).await?;
    let started = Instant::now();
    let mut embedded = 0usize;
    while started.elapsed() < duration {
        embedded += pool.embed(chunks.to_vec()).await?.len();
    }
    Ok(embedded as f64 / started.elapsed().as_secs_f64())
}

/// A short query's latency through the pool, one at a time (each a different query).
async fn query_latency(pool: &EmbedPool) -> anyhow::Result<Stats> {
    const WORDS: [&str; 12] =
        ["how", "do", "I", "rotate", "the", "JWT", "secret", "without", "downtime", "for", "agents", "quickly"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut sample = Vec::with_capacity(QUERIES);
    for _ in 0..QUERIES {
        let mut words = WORDS;
        words.shuffle(&mut rng);
        let query = words[..8].join(" ") + if rng.gen_bool(0.5) { "?" } else { "" };
        let started = Instant::now();
        pool.embed_one(query).await?;
        sample.push(started.elapsed());
    }
    Ok(Stats::of(sample))
}
