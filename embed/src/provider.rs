//! What the knowledge base embeds through: [`Embeddings`], implemented by the local
//! [`crate::EmbedPool`] and by a remote OpenAI-compatible API.

use futures::future::BoxFuture;

use crate::{EmbedError, EmbedPool, Embedding};

/// A source of unit-length [`crate::DIMENSIONS`]-wide vectors. Callers hold it as
/// `Arc<dyn Embeddings>`: the embedding worker for chunks, the gateway for queries.
pub trait Embeddings: Send + Sync + std::fmt::Debug + 'static {
    /// The model's name and version, stored beside every vector it makes: vectors of two models
    /// are never compared, and a change of model is a rebuild of the vectors.
    fn model(&self) -> &str;

    /// Embeds `texts`, in order, one vector each.
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Embedding>, EmbedError>>;
}

impl Embeddings for EmbedPool {
    fn model(&self) -> &str {
        self.version()
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Embedding>, EmbedError>> {
        Box::pin(EmbedPool::embed(self, texts))
    }
}
