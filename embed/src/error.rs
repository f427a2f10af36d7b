//! The one error type of the crate.

use std::path::PathBuf;

use crate::DIMENSIONS;

/// What the command that installs the model is called, for every message that needs it.
pub const INSTALL_HINT: &str = "install it with `scripts/models` (as root; it honours DEVART_MODEL_DIR)";

/// Why an embedding could not be made. Cloneable so that one failed batch can answer every caller
/// that shared it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    /// The model directory is not there at all.
    #[error("embedding model directory {dir} does not exist: {INSTALL_HINT}")]
    MissingDir { dir: PathBuf },
    /// One of the files the model needs is not in the directory.
    #[error("embedding model file {file} is missing in {dir}: {INSTALL_HINT}")]
    MissingFile { dir: PathBuf, file: &'static str },
    /// A file is there but cannot be read.
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// A file was read but does not describe the model this crate runs.
    #[error("{path} does not hold all-MiniLM-L6-v2 as expected: {reason}; reinstall with `scripts/models`")]
    BadModel { path: PathBuf, reason: String },
    /// The tokenizer refused a text.
    #[error("tokenizer failed: {0}")]
    Tokenize(String),
    /// The forward pass failed (a tensor shape or a kernel), which is a defect rather than bad input.
    #[error("embedding inference failed: {0}")]
    Inference(String),
    /// A pool setting is outside its bounds.
    #[error("invalid embedding pool setting: {0}")]
    Config(String),
    /// The pool's workers are gone (it was shut down or a worker died).
    #[error("the embedding pool is not running")]
    PoolClosed,
    /// A remote embeddings API refused the key (401 or 403), or wants one and none is configured.
    /// What the API said is left out: such a message may quote the key.
    #[error("the embeddings API at {endpoint} refused {}: {status}", if *.keyed { "the API key" } else { "a request without an API key" })]
    KeyRefused { endpoint: String, status: u16, keyed: bool },
    /// A remote embeddings API answered an error (a final one, or a passing one that lasted through
    /// every retry): its status and what it said.
    #[error("the embeddings API at {endpoint} answered {status}: {message}")]
    Remote { endpoint: String, status: u16, message: String },
    /// A remote embeddings API could not be reached or did not answer in time, through every retry.
    #[error("the embeddings API at {endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// A remote model answered vectors of another width than [`DIMENSIONS`].
    #[error("the embeddings model {model} answered vectors of {width} dimensions, expected {DIMENSIONS}")]
    WrongWidth { model: String, width: usize },
    /// A remote embeddings API answered 2xx with something that is not the vectors asked for.
    #[error("the embeddings API at {endpoint} answered unusable vectors: {reason}")]
    BadAnswer { endpoint: String, reason: String },
}

impl From<candle_core::Error> for EmbedError {
    fn from(error: candle_core::Error) -> Self {
        EmbedError::Inference(error.to_string())
    }
}
