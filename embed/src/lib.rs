//! Sentence embeddings for the knowledge base: all-MiniLM-L6-v2 (384 dimensions) run on the CPU
//! with candle, behind a bounded pool of inference threads; or, instead, an OpenAI-compatible API.
//!
//! # Layout
//! - [`files`]: where the model is ([`ModelFiles::locate`], `DEVART_MODEL_DIR`, [`DEFAULT_MODEL_DIR`])
//!   and the typed error that says how to install it (`scripts/models`).
//! - [`model`]: [`Embedder`], synchronous: tokenization (truncated at [`MAX_TOKENS`], padded per
//!   batch), the BERT forward pass, attention-masked mean pooling and L2 normalisation, with a
//!   [`Embedder::version`] to store next to every vector.
//! - [`provider`]: [`Embeddings`], what callers hold: the local pool, or a remote API.
//! - [`pool`]: [`EmbedPool`], asynchronous: a fixed number of threads fed by a bounded queue, so
//!   that ingest and search never block the tokio runtime nor take more CPU than they were given.
//! - [`remote`]: [`RemoteEmbeddings`], an OpenAI-compatible `/v1/embeddings` API instead of the
//!   local model: batched, bounded, retried with backoff, its vectors checked and normalised.
//!
//! **Invariant:** only [`remote`] talks to the network, and only to the endpoint it is configured
//! with; the local model is installed beforehand, never fetched here.

pub mod error;
pub mod files;
pub mod model;
pub mod pool;
pub mod provider;
pub mod remote;

pub use error::{EmbedError, INSTALL_HINT};
pub use files::{ModelFiles, DEFAULT_MODEL_DIR, MODEL_DIR_ENV};
pub use model::{
    check_config, model_version, Embedder, ModelInfo, BATCH_TEXTS_DEFAULT, BATCH_TEXTS_MAX, MAX_TEXT_BYTES, MAX_TOKENS,
    MODEL_NAME,
};
pub use pool::{EmbedPool, PoolConfig, PoolStats, THREADS_ENV};
pub use provider::Embeddings;
pub use remote::{RemoteConfig, RemoteEmbeddings, RemoteKey};

/// Width of every vector.
pub const DIMENSIONS: usize = 384;

/// One unit-length vector.
pub type Embedding = [f32; DIMENSIONS];

/// The cosine of two unit vectors (their dot product).
pub fn cosine(a: &Embedding, b: &Embedding) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
