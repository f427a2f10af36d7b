//! The bounded inference pool: a fixed number of OS threads run the model, fed by a bounded queue,
//! answered through oneshot channels, so async callers never block their runtime and embedding work
//! can never take more than its threads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::model::{BATCH_TEXTS_DEFAULT, BATCH_TEXTS_MAX};
use crate::{EmbedError, Embedder, Embedding};

/// The environment variable for the number of inference threads.
pub const THREADS_ENV: &str = "DEVART_EMBED_THREADS";
/// Inference threads when [`THREADS_ENV`] is not set: one, so that on a small host embedding never
/// takes more than one core from the gateway and the event relay.
pub const THREADS_DEFAULT: usize = 1;
/// The most inference threads a pool may have.
pub const THREADS_MAX: usize = 64;
/// Requests (of at most one batch of texts each) that may wait in the queue by default.
pub const QUEUE_REQUESTS_DEFAULT: usize = 32;
/// The largest queue a pool may have. With texts cut at [`crate::MAX_TEXT_BYTES`], the default queue
/// holds at most 8 MiB of text and the largest (with [`BATCH_TEXTS_MAX`]) 512 MiB.
pub const QUEUE_REQUESTS_MAX: usize = 256;

/// How big a pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// OS threads that run the model, each single-threaded: the pool's whole CPU use.
    pub threads: usize,
    /// Requests that may wait for a thread; a caller beyond that waits to enqueue (back-pressure).
    pub queue_requests: usize,
    /// Texts per forward pass, and so per request: a caller's texts are split into requests of this
    /// many, and a thread adds queued requests to its batch up to this many texts.
    pub batch_texts: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            threads: THREADS_DEFAULT,
            queue_requests: QUEUE_REQUESTS_DEFAULT,
            batch_texts: BATCH_TEXTS_DEFAULT,
        }
    }
}

impl PoolConfig {
    /// The defaults, with the thread count from `DEVART_EMBED_THREADS` when it is set.
    pub fn from_env() -> Result<Self, EmbedError> {
        let mut config = PoolConfig::default();
        if let Ok(value) = std::env::var(THREADS_ENV) {
            config.threads = value
                .trim()
                .parse()
                .map_err(|_| EmbedError::Config(format!("{THREADS_ENV}={value:?} is not a number of threads")))?;
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), EmbedError> {
        if !(1..=THREADS_MAX).contains(&self.threads) {
            return Err(EmbedError::Config(format!("{} threads, expected 1..={THREADS_MAX}", self.threads)));
        }
        if !(1..=BATCH_TEXTS_MAX).contains(&self.batch_texts) {
            return Err(EmbedError::Config(format!(
                "{} texts per batch, expected 1..={BATCH_TEXTS_MAX}",
                self.batch_texts
            )));
        }
        if !(1..=QUEUE_REQUESTS_MAX).contains(&self.queue_requests) {
            return Err(EmbedError::Config(format!(
                "a queue of {} requests, expected 1..={QUEUE_REQUESTS_MAX}",
                self.queue_requests
            )));
        }
        Ok(())
    }
}

/// What the pool has done, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Forward passes running right now.
    pub running: usize,
    /// The most forward passes that ever ran at once; never above the thread count.
    pub running_max: usize,
    /// Forward passes run.
    pub batches_total: u64,
    /// Texts embedded.
    pub texts_total: u64,
    /// Requests that found a worker already holding others and joined its batch.
    pub merged_requests_total: u64,
}

#[derive(Default)]
struct Counters {
    running: AtomicUsize,
    running_max: AtomicUsize,
    batches_total: AtomicU64,
    texts_total: AtomicU64,
    merged_requests_total: AtomicU64,
}

type Reply = Result<Vec<Embedding>, EmbedError>;

/// One caller's texts, at most [`PoolConfig::batch_texts`] of them.
struct Request {
    texts: Vec<String>,
    reply: oneshot::Sender<Reply>,
}

/// A running pool. Cheap to share behind an `Arc`; dropping the last handle closes the queue, and the
/// threads end once it is drained.
pub struct EmbedPool {
    queue: mpsc::Sender<Request>,
    counters: Arc<Counters>,
    version: String,
    config: PoolConfig,
    /// Each thread is the only thread of its own rayon pool, so candle's and gemm's parallel loops
    /// run inline on it instead of spreading over every core. Held so the pools live as long as this.
    _threads: Vec<rayon::ThreadPool>,
}

impl std::fmt::Debug for EmbedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedPool").field("version", &self.version).field("config", &self.config).finish()
    }
}

impl EmbedPool {
    /// Starts `config.threads` threads sharing `embedder`. Does not block; loading the model
    /// ([`Embedder::load`]) is what takes time.
    pub fn start(embedder: impl Into<Arc<Embedder>>, config: PoolConfig) -> Result<Self, EmbedError> {
        config.validate()?;
        let embedder: Arc<Embedder> = embedder.into();
        let version = embedder.version().to_string();
        let (queue, receiver) = mpsc::channel(config.queue_requests);
        let receiver = Arc::new(Mutex::new(receiver));
        let counters = Arc::new(Counters::default());
        let mut threads = Vec::with_capacity(config.threads);
        for index in 0..config.threads {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(move |_| format!("devart-embed-{index}"))
                .build()
                .map_err(|e| EmbedError::Config(format!("cannot start an inference thread: {e}")))?;
            let (embedder, receiver, counters) = (embedder.clone(), receiver.clone(), counters.clone());
            let batch_texts = config.batch_texts;
            pool.spawn(move || work(&embedder, &receiver, &counters, batch_texts));
            threads.push(pool);
        }
        Ok(EmbedPool { queue, counters, version, config, _threads: threads })
    }

    /// Loads the model from `$DEVART_MODEL_DIR` (or the default directory) and starts a pool sized by
    /// [`PoolConfig::from_env`]. Blocking (a fraction of a second); call it at startup or through
    /// `spawn_blocking`.
    pub fn start_default() -> Result<Self, EmbedError> {
        let config = PoolConfig::from_env()?;
        Self::start(Embedder::load_default()?, config)
    }

    /// The version of the model behind the pool, as [`Embedder::version`].
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How the pool was sized.
    pub fn config(&self) -> PoolConfig {
        self.config
    }

    /// What the pool has done so far.
    pub fn stats(&self) -> PoolStats {
        let c = &self.counters;
        PoolStats {
            running: c.running.load(Ordering::Relaxed),
            running_max: c.running_max.load(Ordering::Relaxed),
            batches_total: c.batches_total.load(Ordering::Relaxed),
            texts_total: c.texts_total.load(Ordering::Relaxed),
            merged_requests_total: c.merged_requests_total.load(Ordering::Relaxed),
        }
    }

    /// Embeds the texts, in order. Large inputs are split into requests of at most
    /// [`PoolConfig::batch_texts`] texts that the threads share; when the queue is full this waits for room
    /// (back-pressure) rather than failing. Cancel-safe: dropping the future abandons the texts not yet
    /// embedded.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedding>, EmbedError> {
        // By length, so that a forward pass pads little; answered in the caller's order.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut slots: Vec<Option<String>> = texts.into_iter().map(Some).collect();
        let sorted: Vec<String> = order.iter().map(|&i| slots[i].take().unwrap_or_default()).collect();
        let vectors = self.embed_in_order(sorted).await?;
        if vectors.len() != order.len() {
            return Err(EmbedError::Inference(format!("{} vectors for {} texts", vectors.len(), order.len())));
        }
        let mut out = vec![[0.0; crate::DIMENSIONS]; vectors.len()];
        for (vector, &i) in vectors.into_iter().zip(&order) {
            out[i] = vector;
        }
        Ok(out)
    }

    async fn embed_in_order(&self, texts: Vec<String>) -> Result<Vec<Embedding>, EmbedError> {
        let batch_texts = self.config.batch_texts;
        let mut pending = Vec::with_capacity(texts.len().div_ceil(batch_texts));
        let mut texts = texts.into_iter().peekable();
        while texts.peek().is_some() {
            let chunk: Vec<String> = texts.by_ref().take(batch_texts).collect();
            let (reply, answer) = oneshot::channel();
            self.queue.send(Request { texts: chunk, reply }).await.map_err(|_| EmbedError::PoolClosed)?;
            pending.push(answer);
        }
        let mut out = Vec::new();
        for answer in pending {
            out.extend(answer.await.map_err(|_| EmbedError::PoolClosed)??);
        }
        Ok(out)
    }

    /// Embeds one text, such as a search query.
    pub async fn embed_one(&self, text: impl Into<String>) -> Result<Embedding, EmbedError> {
        let mut vectors = self.embed(vec![text.into()]).await?;
        vectors.pop().ok_or_else(|| EmbedError::Inference("no vector for one text".into()))
    }
}

/// One thread's life: take a request, add whatever else is already queued up to a batch, embed,
/// answer; until the queue closes.
fn work(embedder: &Embedder, receiver: &Mutex<mpsc::Receiver<Request>>, counters: &Counters, batch_texts: usize) {
    loop {
        let mut batch = {
            let mut receiver = receiver.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some(first) = receiver.blocking_recv() else { return };
            let mut texts = first.texts.len();
            let mut batch = vec![first];
            while texts < batch_texts {
                let Ok(next) = receiver.try_recv() else { break };
                texts += next.texts.len();
                batch.push(next);
            }
            batch
        };
        // A caller that gave up needs no answer.
        batch.retain(|request| !request.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        counters.merged_requests_total.fetch_add(batch.len() as u64 - 1, Ordering::Relaxed);

        // Tokenized request by request, so that a text the tokenizer refuses fails its own caller only.
        let mut ready = Vec::with_capacity(batch.len());
        let mut tokens = Vec::new();
        for request in batch {
            match guarded(|| request.texts.iter().map(|text| embedder.tokenize(text)).collect::<Result<Vec<_>, _>>()) {
                Ok(mut tokenized) => {
                    tokens.append(&mut tokenized);
                    ready.push(request);
                }
                Err(error) => {
                    let _ = request.reply.send(Err(error));
                }
            }
        }
        if ready.is_empty() {
            continue;
        }

        let running = counters.running.fetch_add(1, Ordering::SeqCst) + 1;
        counters.running_max.fetch_max(running, Ordering::SeqCst);
        let result = guarded(|| embedder.embed_tokens(&tokens, batch_texts));
        counters.running.fetch_sub(1, Ordering::SeqCst);
        counters.batches_total.fetch_add(tokens.len().div_ceil(batch_texts) as u64, Ordering::Relaxed);

        match result {
            Ok(vectors) => {
                counters.texts_total.fetch_add(vectors.len() as u64, Ordering::Relaxed);
                let mut vectors = vectors.into_iter();
                for request in ready {
                    let mine = vectors.by_ref().take(request.texts.len()).collect();
                    let _ = request.reply.send(Ok(mine));
                }
            }
            Err(error) => {
                tracing::warn!(%error, texts = tokens.len(), "embedding batch failed");
                for request in ready {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Runs `f`, turning a panic into an error: a panic inside the tokenizer or candle must not take the
/// thread, and with it the pool, away (rayon aborts the process on a panic in a spawned job).
fn guarded<T>(f: impl FnOnce() -> Result<T, EmbedError>) -> Result<T, EmbedError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(EmbedError::Inference("the model panicked".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bounded() {
        assert!(PoolConfig { threads: 0, ..PoolConfig::default() }.validate().is_err());
        assert!(PoolConfig { threads: THREADS_MAX + 1, ..PoolConfig::default() }.validate().is_err());
        assert!(PoolConfig { queue_requests: 0, ..PoolConfig::default() }.validate().is_err());
        assert!(PoolConfig { batch_texts: 0, ..PoolConfig::default() }.validate().is_err());
        assert!(PoolConfig { batch_texts: BATCH_TEXTS_MAX + 1, ..PoolConfig::default() }.validate().is_err());
        assert!(PoolConfig::default().validate().is_ok());
    }
}
