//! Where the model's files are, and whether they are all there.

use std::path::{Path, PathBuf};

use crate::EmbedError;

/// The environment variable that names the model directory.
pub const MODEL_DIR_ENV: &str = "DEVART_MODEL_DIR";

/// Where `scripts/models` installs the model when `DEVART_MODEL_DIR` is not set: state of a root-run
/// service on a Debian host belongs under `/var/lib`, outside the checkout, so that every build and
/// worktree of devart shares one copy and no weights ever sit in the repository.
pub const DEFAULT_MODEL_DIR: &str = "/var/lib/devart/models/all-minilm-l6-v2";

const WEIGHTS: &str = "model.safetensors";
const TOKENIZER: &str = "tokenizer.json";
const CONFIG: &str = "config.json";
const POOLING: &str = "1_Pooling/config.json";

/// The files of an installed model, each known to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The directory they were found in.
    pub dir: PathBuf,
    /// The weights (safetensors, f32).
    pub weights: PathBuf,
    /// The tokenizer (Hugging Face `tokenizer.json`; its padding and truncation are overridden).
    pub tokenizer: PathBuf,
    /// The BERT configuration.
    pub config: PathBuf,
    /// The sentence-transformers pooling configuration, checked to be mean pooling when present.
    pub pooling: Option<PathBuf>,
}

impl ModelFiles {
    /// The model directory: `$DEVART_MODEL_DIR` when set and not empty, else [`DEFAULT_MODEL_DIR`].
    pub fn default_dir() -> PathBuf {
        match std::env::var_os(MODEL_DIR_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from(DEFAULT_MODEL_DIR),
        }
    }

    /// Finds the model in [`ModelFiles::default_dir`].
    pub fn locate_default() -> Result<Self, EmbedError> {
        Self::locate(Self::default_dir())
    }

    /// Finds `model.safetensors`, `tokenizer.json` and `config.json` (and `1_Pooling/config.json` if
    /// present) in `dir`. A missing directory or file is an error that says how to install the model.
    pub fn locate(dir: impl AsRef<Path>) -> Result<Self, EmbedError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(EmbedError::MissingDir { dir });
        }
        let require = |file: &'static str| {
            let path = dir.join(file);
            if path.is_file() {
                Ok(path)
            } else {
                Err(EmbedError::MissingFile { dir: dir.clone(), file })
            }
        };
        let weights = require(WEIGHTS)?;
        let tokenizer = require(TOKENIZER)?;
        let config = require(CONFIG)?;
        let pooling = Some(dir.join(POOLING)).filter(|path| path.is_file());
        Ok(ModelFiles { dir, weights, tokenizer, config, pooling })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_says_how_to_install() {
        let error = ModelFiles::locate("/nonexistent/devart-model").unwrap_err();
        assert!(matches!(error, EmbedError::MissingDir { .. }), "{error:?}");
        assert!(error.to_string().contains("scripts/models"), "{error}");
    }

    #[test]
    fn a_missing_file_is_named_with_the_install_command() {
        let dir = std::env::temp_dir().join(format!("devart-embed-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(WEIGHTS), b"x").unwrap();
        std::fs::write(dir.join(CONFIG), b"{}").unwrap();
        let error = ModelFiles::locate(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(error, EmbedError::MissingFile { file: TOKENIZER, .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("tokenizer.json") && message.contains("scripts/models"), "{message}");
    }
}
