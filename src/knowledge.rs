//! The knowledge base's side of the binary: which embedding provider semantic search uses
//! (`DEVART_EMBEDDINGS`: the local model's pools, or an OpenAI-compatible API), and `devart
//! knowledge import`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use devart_embed::{
    EmbedPool, Embedder, Embeddings, ModelFiles, PoolConfig, RemoteConfig, RemoteEmbeddings, RemoteKey,
    DEFAULT_MODEL_DIR,
};

use crate::Secret;

/// The OpenAI API's base URL, unless configured otherwise.
pub const EMBEDDINGS_URL_DEFAULT: &str = "https://api.openai.com";
/// The remote model asked for unless configured otherwise: one that answers 384 dimensions when
/// asked (`dimensions`).
pub const EMBEDDINGS_MODEL_DEFAULT: &str = "text-embedding-3-small";

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
    /// The OpenAI-compatible API's base URL (`DEVART_EMBEDDINGS=openai`); requests go to
    /// `<url>/v1/embeddings`.
    #[arg(long, env = "DEVART_EMBEDDINGS_URL", default_value = EMBEDDINGS_URL_DEFAULT, global = true)]
    pub embeddings_url: String,
    /// The remote model; it must answer 384-wide vectors when asked for `dimensions: 384`.
    #[arg(long, env = "DEVART_EMBEDDINGS_MODEL", default_value = EMBEDDINGS_MODEL_DEFAULT, global = true)]
    pub embeddings_model: String,
    /// The remote API's key, sent as a bearer token; none for an API that wants none.
    #[arg(long, env = "DEVART_EMBEDDINGS_API_KEY", hide_env_values = true, value_parser = any_secret, global = true)]
    pub embeddings_api_key: Option<Secret>,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        KnowledgeConfig {
            embeddings: Provider::Local,
            model_dir: PathBuf::from(DEFAULT_MODEL_DIR),
            embeddings_url: EMBEDDINGS_URL_DEFAULT.to_owned(),
            embeddings_model: EMBEDDINGS_MODEL_DEFAULT.to_owned(),
            embeddings_api_key: None,
        }
    }
}

/// Takes any text: a refused value would be echoed in clap's error message.
fn any_secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret(s.to_owned()))
}

impl KnowledgeConfig {
    /// Keyword search only.
    pub fn off() -> Self {
        KnowledgeConfig { embeddings: Provider::Off, ..KnowledgeConfig::default() }
    }

    /// The remote API at `url`, asking for `model` with `key`.
    pub fn openai(url: &str, model: &str, key: Option<&str>) -> Self {
        KnowledgeConfig {
            embeddings: Provider::Openai,
            embeddings_url: url.to_owned(),
            embeddings_model: model.to_owned(),
            embeddings_api_key: key.map(|key| Secret(key.to_owned())),
            ..KnowledgeConfig::default()
        }
    }

    /// The remote provider's configuration, checked. Errors name the settings, never the key.
    pub fn remote(&self) -> anyhow::Result<RemoteConfig> {
        let key = match &self.embeddings_api_key {
            Some(key) => Some(RemoteKey::new(key.0.clone()).context("DEVART_EMBEDDINGS_API_KEY")?),
            None => None,
        };
        let config = RemoteConfig { api_key: key, ..RemoteConfig::new(&self.embeddings_url, &self.embeddings_model) };
        // Checked now, so that a bad setting stops devart at startup rather than at the first search.
        RemoteEmbeddings::new(config.clone()).context("DEVART_EMBEDDINGS_URL or DEVART_EMBEDDINGS_MODEL")?;
        Ok(config)
    }
}

/// Retries of a search query's embedding: a search waits some 20 s at most (within the gateway's
/// request timeout), then answers `UNAVAILABLE`; documents' chunks are given the provider's defaults, and the embedding worker
/// tries their batch again after that.
const QUERY_RETRIES: u32 = 2;
/// The longest a search query's embedding waits before a retry, whatever the API asks.
const QUERY_RETRY_WAIT_MAX: Duration = Duration::from_secs(2);
/// How long one attempt at a search query's embedding may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

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
                let config = self.remote()?;
                let query = RemoteConfig {
                    max_retries: QUERY_RETRIES,
                    retry_wait_max: QUERY_RETRY_WAIT_MAX,
                    retry_wait_first: config.retry_wait_first.min(QUERY_RETRY_WAIT_MAX),
                    timeout: QUERY_TIMEOUT,
                    ..config.clone()
                };
                // Two providers, so that a bulk import holds none of the requests searches make.
                let ingest = RemoteEmbeddings::new(config)?;
                let query = RemoteEmbeddings::new(query)?;
                if self.embeddings_api_key.is_none() {
                    tracing::info!("DEVART_EMBEDDINGS_API_KEY is not set: the embeddings API is called without a key");
                }
                tracing::info!(model = ingest.model(), "semantic search on, through a remote embeddings API");
                Ok(Semantic::On { ingest: Arc::new(ingest), query: Arc::new(query) })
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

/// What `devart knowledge import` does with a folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Files that were not imported, each with why (too large, not UTF-8, removed before…).
    pub skipped: Vec<(PathBuf, String)>,
}

/// A Markdown file read as a document: its title, content and tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkdownFile {
    pub title: String,
    pub content: String,
    pub tags: Vec<String>,
}

/// Reads a Markdown file's optional front matter (between `---` lines at the very top; `title:` and
/// `tags:` as `a, b` or `[a, b]`; other keys are ignored) and its title: the front matter's, else
/// the first `# ` heading's, else `stem`. The content is the text after the front matter.
pub fn read_markdown(text: &str, stem: &str) -> MarkdownFile {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (mut title, mut tags, mut content) = (None, Vec::new(), text);
    if let Some(rest) = text.strip_prefix("---\n").or_else(|| text.strip_prefix("---\r\n")) {
        if let Some(end) = rest.find("\n---").filter(|&end| {
            let after = &rest[end + 4..];
            after.is_empty() || after.starts_with('\n') || after.starts_with("\r\n")
        }) {
            for line in rest[..end].lines() {
                let Some((key, value)) = line.split_once(':') else { continue };
                let value = value.trim();
                match key.trim() {
                    "title" => title = Some(value.trim_matches(['"', '\'']).to_owned()),
                    "tags" => {
                        tags = value
                            .trim_matches(['[', ']'])
                            .split(',')
                            .map(|t| t.trim().trim_matches(['"', '\'']).to_owned())
                            .filter(|t| !t.is_empty())
                            .collect()
                    }
                    _ => {}
                }
            }
            content = rest[end + 4..].trim_start_matches(['\r', '\n']);
        }
    }
    let title = title.filter(|t| !t.is_empty()).unwrap_or_else(|| {
        content
            .lines()
            .find_map(|l| l.strip_prefix("# ").map(|h| h.trim().to_owned()))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| stem.to_owned())
    });
    MarkdownFile { title, content: content.to_owned(), tags }
}

/// The Markdown files under `folder` (`.md`, `.markdown`), recursively, hidden ones left out, in
/// path order.
pub fn markdown_files(folder: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut dirs = vec![folder.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md" || e == "markdown") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The id of the document imported from `source`: the same on every import, so importing a
/// folder again updates its documents instead of adding copies.
pub fn imported_id(source: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, format!("devart:knowledge:{source}").as_bytes())
}

/// Imports every Markdown file under `folder` as a document whose source is `prefix` joined with
/// the file's path in the folder, tagged with `tags` and its front matter's: added when new,
/// updated (content, title, tags) when changed, left alone when not. A file that is not a valid
/// document (not UTF-8, over 1 MiB, bad tags) is skipped with the reason; a database that fails
/// stops the import (what was imported stays, and importing again continues). `progress(done,
/// total, path)` is called after each file.
pub async fn import_folder(
    commands: &devart_commands::Commands,
    folder: &std::path::Path,
    prefix: &str,
    tags: &[String],
    mut progress: impl FnMut(usize, usize, &std::path::Path),
) -> anyhow::Result<ImportReport> {
    use anyhow::Context as _;
    use devart_commands::documents::NewDocument;
    use devart_domain::document::{Content, Document, DocumentStatus, Metadata, Source, Tags, Title, UpdateDocument};

    let files = markdown_files(folder).with_context(|| format!("reading {}", folder.display()))?;
    // A command id of its own for each command, one correlation for the whole import.
    let first = devart_commands::CommandContext::new(devart_domain::Actor::system("knowledge-import"));
    let context = || devart_commands::CommandContext {
        correlation_id: first.correlation_id,
        ..devart_commands::CommandContext::new(first.actor.clone())
    };
    let mut report = ImportReport::default();
    for (n, path) in files.iter().enumerate() {
        let relative = path.strip_prefix(folder).unwrap_or(path).to_string_lossy().replace('\\', "/");
        let source = if prefix.is_empty() { relative } else { format!("{}/{relative}", prefix.trim_end_matches('/')) };
        let outcome: Result<Option<bool>, String> = async {
            let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
            let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let file = read_markdown(&text, &stem);
            let all_tags: Vec<String> = tags.iter().cloned().chain(file.tags).collect();
            let title: String = file.title.chars().take(Title::LEN_MAX).collect();
            let (title, content, tags, source) = (
                Title::parse(&title).map_err(|e| e.to_string())?,
                Content::parse(&file.content).map_err(|e| e.to_string())?,
                Tags::parse(&all_tags).map_err(|e| e.to_string())?,
                Source::parse(&source).map_err(|e| e.to_string())?,
            );
            let id = imported_id(source.as_str());
            let existing = commands.load::<Document>(id).await.map_err(|e| format!("database: {e}"))?;
            match existing.state.status {
                DocumentStatus::Absent => {
                    let document = NewDocument { title, content, tags, source, metadata: Metadata::default() };
                    commands.documents().add(id, document, &context()).await.map_err(|e| e.to_string())?;
                    Ok(Some(true))
                }
                DocumentStatus::Live => {
                    let update =
                        UpdateDocument { title: Some(title), content: Some(content), source: None, metadata: None };
                    let updated =
                        commands.documents().update(id, update, None, &context()).await.map_err(|e| e.to_string())?;
                    let tagged = commands.documents().tag(id, tags, &context()).await.map_err(|e| e.to_string())?;
                    Ok((tagged.version > existing.version || updated.version > existing.version).then_some(false))
                }
                DocumentStatus::Removed => {
                    Err(format!("document {id} from {} was removed; not added again", source.as_str()))
                }
            }
        }
        .await;
        match outcome {
            Ok(Some(true)) => report.added += 1,
            Ok(Some(false)) => report.updated += 1,
            Ok(None) => report.unchanged += 1,
            Err(reason) if reason.starts_with("database: ") => anyhow::bail!("{}: {reason}", path.display()),
            Err(reason) => report.skipped.push((path.clone(), reason)),
        }
        progress(n + 1, files.len(), path);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_gives_the_title_and_tags_and_is_not_content() {
        let file = read_markdown(
            "---\ntitle: \"Use Postgres\"\ntags: [adr, storage]\nstatus: accepted\n---\n# ADR 1\n\nWe use it.\n",
            "0001",
        );
        assert_eq!(file.title, "Use Postgres");
        assert_eq!(file.tags, ["adr", "storage"]);
        assert_eq!(file.content, "# ADR 1\n\nWe use it.\n");
    }

    #[test]
    fn without_front_matter_the_first_heading_or_the_file_name_is_the_title() {
        assert_eq!(read_markdown("intro\n# Deploys\n\ntext", "deploys").title, "Deploys");
        assert_eq!(read_markdown("no heading here", "notes").title, "notes");
        // A rule further down is not front matter.
        let file = read_markdown("# A\n\n---\n\nb", "a");
        assert_eq!((file.title.as_str(), file.content.as_str()), ("A", "# A\n\n---\n\nb"));
    }

    #[test]
    fn remote_settings_are_checked_without_showing_the_key() {
        let good = KnowledgeConfig::openai("http://127.0.0.1:9/openai", "text-embedding-3-small", Some("sk-hunter2"));
        let remote = good.remote().unwrap();
        assert_eq!(remote.base_url, "http://127.0.0.1:9/openai");
        assert!(!format!("{good:?} {remote:?}").contains("hunter2"));
        for bad in [
            KnowledgeConfig::openai("not a url", "m", None),
            KnowledgeConfig::openai("http://127.0.0.1:9", "", None),
            KnowledgeConfig::openai("http://127.0.0.1:9", "m", Some("sk-hunter2 with a space")),
            KnowledgeConfig::openai("http://127.0.0.1:9", "m", Some("")),
        ] {
            let error = format!("{:#}", bad.remote().unwrap_err());
            assert!(error.contains("DEVART_EMBEDDINGS_"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn an_imported_documents_id_follows_its_source() {
        assert_eq!(imported_id("adr/0001.md"), imported_id("adr/0001.md"));
        assert_ne!(imported_id("adr/0001.md"), imported_id("adr/0002.md"));
    }
}
