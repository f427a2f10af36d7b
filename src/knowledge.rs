//! The knowledge base's side of the binary: which embedding provider semantic search uses
//! (`DEVART_EMBEDDINGS`), and the pools it runs on.

use std::path::PathBuf;
use std::sync::Arc;

use devart_embed::{EmbedPool, Embedder, Embeddings, ModelFiles, PoolConfig, DEFAULT_MODEL_DIR};

/// Where vectors come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    /// all-MiniLM-L6-v2 in this process (`DEVART_MODEL_DIR`, installed by `scripts/models`).
    Local,
    /// An OpenAI-compatible `/v1/embeddings` API.
    Openai,
    /// No semantic search: keyword search only.
    Off,
}

/// How the knowledge base embeds; environment first.
#[derive(Debug, Clone, clap::Args)]
pub struct KnowledgeConfig {
    /// The embedding provider of semantic and hybrid search.
    #[arg(long, env = "DEVART_EMBEDDINGS", value_enum, default_value = "local", global = true)]
    pub embeddings: Provider,
    /// Where the local model's files are (`scripts/models` installs them there).
    #[arg(long, env = "DEVART_MODEL_DIR", default_value = DEFAULT_MODEL_DIR, global = true)]
    pub model_dir: PathBuf,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        KnowledgeConfig { embeddings: Provider::Local, model_dir: PathBuf::from(DEFAULT_MODEL_DIR) }
    }
}

impl KnowledgeConfig {
    /// Keyword search only.
    pub fn off() -> Self {
        KnowledgeConfig { embeddings: Provider::Off, ..KnowledgeConfig::default() }
    }
}

/// Threads of the pool that embeds search queries, apart from the one that embeds documents, so
/// that a bulk import never makes a search wait behind it.
const QUERY_THREADS: usize = 1;

/// What semantic search runs on in this process, or why it is off.
#[derive(Debug, Clone)]
pub enum Semantic {
    On {
        /// Embeds documents' chunks (the embedding worker); `DEVART_EMBED_THREADS` threads.
        ingest: Arc<dyn Embeddings>,
        /// Embeds search queries (the gateway).
        query: Arc<dyn Embeddings>,
    },
    /// Off, and what to do about it: said by search and by the documents' status.
    Off(String),
}

impl Semantic {
    pub fn ingest(&self) -> Option<Arc<dyn Embeddings>> {
        match self {
            Semantic::On { ingest, .. } => Some(ingest.clone()),
            Semantic::Off(_) => None,
        }
    }
}

impl KnowledgeConfig {
    /// Starts the configured provider. A local model that is not installed (or does not load)
    /// turns semantic search off with a reason saying how to install it; the rest of devart runs.
    pub async fn semantic(&self) -> anyhow::Result<Semantic> {
        match self.embeddings {
            Provider::Off => Ok(Semantic::Off("semantic search is turned off (DEVART_EMBEDDINGS=off)".into())),
            Provider::Openai => {
                anyhow::bail!("DEVART_EMBEDDINGS=openai: the remote embeddings provider is not yet available")
            }
            Provider::Local => {
                let dir = self.model_dir.clone();
                let loaded = tokio::task::spawn_blocking(move || -> Result<_, devart_embed::EmbedError> {
                    let embedder = Arc::new(Embedder::load(&ModelFiles::locate(&dir)?)?);
                    let ingest = EmbedPool::start(embedder.clone(), PoolConfig::from_env()?)?;
                    let query =
                        EmbedPool::start(embedder, PoolConfig { threads: QUERY_THREADS, ..PoolConfig::default() })?;
                    Ok((ingest, query))
                })
                .await?;
                match loaded {
                    Ok((ingest, query)) => {
                        tracing::info!(
                            model = ingest.version(),
                            threads = ingest.config().threads,
                            "semantic search on"
                        );
                        Ok(Semantic::On { ingest: Arc::new(ingest), query: Arc::new(query) })
                    }
                    Err(error) => {
                        let reason = format!("semantic search is off: {error}");
                        tracing::warn!("{reason}");
                        Ok(Semantic::Off(reason))
                    }
                }
            }
        }
    }
}
