//! The model itself: tokenization, the BERT forward pass, mean pooling and normalisation, on the
//! calling thread.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::{EmbedError, Embedding, ModelFiles, DIMENSIONS};

/// The model's name, the first half of every [`Embedder::version`].
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// Tokens per text, `[CLS]` and `[SEP]` included; the rest of a longer text is cut off. The model was
/// trained on 128 and accepts 512; 256 keeps a knowledge-base chunk of a page or so whole at twice
/// the cost of 128.
pub const MAX_TOKENS: usize = 256;

/// Bytes of a text that reach the tokenizer. [`MAX_TOKENS`] tokens are far shorter than this, so only
/// text that would be cut off anyway is dropped, and a huge input costs no more than this much work.
pub const MAX_TEXT_BYTES: usize = 32 * 1024;

/// Texts in one forward pass by default. Sorted by length, batches of 8 to 16 are about as fast as
/// larger ones; 8 pads less and needs half the activations' memory (with 2 threads on 256-token
/// texts, the benchmark's peak resident memory is 530 MiB at 8 and 821 MiB at 16).
pub const BATCH_TEXTS_DEFAULT: usize = 8;
/// The most texts one forward pass may take.
pub const BATCH_TEXTS_MAX: usize = 64;

/// A loaded all-MiniLM-L6-v2, ready to embed on the calling thread (blocking: tens of milliseconds
/// per text). Shared read-only by the threads of an [`crate::EmbedPool`], which is how async code
/// should use it.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    /// `all-MiniLM-L6-v2@` and the first 12 hex digits of the weights' sha256.
    version: String,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("version", &self.version).finish_non_exhaustive()
    }
}

/// What [`model_version`] and [`check_config`] read without loading the weights into a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// As [`Embedder::version`] would say.
    pub version: String,
    /// Size of the weights file.
    pub weights_bytes: u64,
}

/// The version string for weights with this sha256: the model name, `@`, 12 hex digits.
fn version_of(sha256: &[u8]) -> String {
    let hex: String = sha256.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{MODEL_NAME}@{hex}")
}

fn read(path: &Path) -> Result<Vec<u8>, EmbedError> {
    std::fs::read(path).map_err(|e| EmbedError::Read { path: path.to_path_buf(), reason: e.to_string() })
}

fn bad(path: &Path, reason: impl Into<String>) -> EmbedError {
    EmbedError::BadModel { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads `config.json` (and the pooling config) and checks they describe the model this crate runs:
/// a BERT with 384-wide output, positions for [`MAX_TOKENS`], and mean pooling.
pub fn check_config(files: &ModelFiles) -> Result<BertConfig, EmbedError> {
    let config: BertConfig = serde_json::from_slice(&read(&files.config)?)
        .map_err(|e| bad(&files.config, format!("not a BERT config ({e})")))?;
    if config.hidden_size != DIMENSIONS {
        return Err(bad(&files.config, format!("hidden_size is {}, not {DIMENSIONS}", config.hidden_size)));
    }
    if config.max_position_embeddings < MAX_TOKENS {
        return Err(bad(
            &files.config,
            format!("only {} positions, {MAX_TOKENS} needed", config.max_position_embeddings),
        ));
    }
    if let Some(pooling) = &files.pooling {
        let value: serde_json::Value =
            serde_json::from_slice(&read(pooling)?).map_err(|e| bad(pooling, format!("not JSON ({e})")))?;
        if value.get("pooling_mode_mean_tokens") != Some(&serde_json::Value::Bool(true)) {
            return Err(bad(pooling, "pooling is not mean pooling"));
        }
    }
    Ok(config)
}

/// The version of the installed weights without building the model: checks the config and hashes
/// `model.safetensors` (about 0.1-0.3 s for its 91 MB).
pub fn model_version(files: &ModelFiles) -> Result<ModelInfo, EmbedError> {
    use std::io::Read as _;
    check_config(files)?;
    let error = |e: std::io::Error| EmbedError::Read { path: files.weights.clone(), reason: e.to_string() };
    let mut file = std::fs::File::open(&files.weights).map_err(error)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut weights_bytes = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(error)?;
        if n == 0 {
            break;
        }
        weights_bytes += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok(ModelInfo { version: version_of(&hasher.finalize()), weights_bytes })
}

impl Embedder {
    /// Loads the model from the files found by [`ModelFiles::locate`], on the CPU.
    pub fn load(files: &ModelFiles) -> Result<Self, EmbedError> {
        let config = check_config(files)?;

        let mut tokenizer = Tokenizer::from_file(&files.tokenizer).map_err(|e| bad(&files.tokenizer, e.to_string()))?;
        // The shipped tokenizer pads and truncates to 128: padding is done per batch below instead.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| bad(&files.tokenizer, e.to_string()))?;

        let weights = read(&files.weights)?;
        let version = version_of(&Sha256::digest(&weights));
        let vb = VarBuilder::from_slice_safetensors(&weights, DType::F32, &Device::Cpu)
            .map_err(|e| bad(&files.weights, e.to_string()))?;
        let model = BertModel::load(vb, &config).map_err(|e| bad(&files.weights, e.to_string()))?;
        Ok(Embedder { model, tokenizer, version })
    }

    /// Loads the model from `$DEVART_MODEL_DIR` or the default directory.
    pub fn load_default() -> Result<Self, EmbedError> {
        Self::load(&ModelFiles::locate_default()?)
    }

    /// The model's name, [`MODEL_NAME`].
    pub fn model_name(&self) -> &'static str {
        MODEL_NAME
    }

    /// Which weights made the vectors: `all-MiniLM-L6-v2@<12 hex digits of their sha256>`. Store it
    /// next to every vector; vectors of different versions are not comparable.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The token ids of one text as the model will see them: `[CLS]`, at most [`MAX_TOKENS`] in all.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let encoding = self.tokenizer.encode_fast(clip(text), true).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Embeds the texts, in order: each vector has unit length, so a dot product is the cosine.
    /// Texts are sorted by length and run in batches of at most [`BATCH_TEXTS_DEFAULT`], each padded
    /// to its longest text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, EmbedError> {
        let tokens = texts.iter().map(|text| self.tokenize(text)).collect::<Result<Vec<_>, _>>()?;
        self.embed_tokens(&tokens, BATCH_TEXTS_DEFAULT)
    }

    /// Embeds texts already tokenized by [`Embedder::tokenize`], at most `batch_texts` (clamped to
    /// 1..=[`BATCH_TEXTS_MAX`]) per forward pass.
    pub fn embed_tokens(&self, tokens: &[Vec<u32>], batch_texts: usize) -> Result<Vec<Embedding>, EmbedError> {
        let mut order: Vec<usize> = (0..tokens.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].len()));
        let mut out = vec![[0f32; DIMENSIONS]; tokens.len()];
        for batch in order.chunks(batch_texts.clamp(1, BATCH_TEXTS_MAX)) {
            let vectors = self.forward(batch.iter().map(|&i| tokens[i].as_slice()))?;
            for (&i, vector) in batch.iter().zip(vectors) {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    /// One forward pass over a batch, padded to its longest member.
    fn forward<'a>(
        &self,
        batch: impl ExactSizeIterator<Item = &'a [u32]> + Clone,
    ) -> Result<Vec<Embedding>, EmbedError> {
        let rows = batch.len();
        let width = batch.clone().map(<[u32]>::len).max().unwrap_or(0);
        if rows == 0 {
            return Ok(Vec::new());
        }
        if width == 0 || width > MAX_TOKENS {
            return Err(EmbedError::Tokenize(format!("a text has {width} tokens, expected 1..={MAX_TOKENS}")));
        }
        let mut ids = vec![0u32; rows * width];
        let mut mask = vec![0u32; rows * width];
        for (row, text) in batch.enumerate() {
            ids[row * width..row * width + text.len()].copy_from_slice(text);
            mask[row * width..row * width + text.len()].fill(1);
        }
        let device = &self.model.device;
        let ids = Tensor::from_vec(ids, (rows, width), device)?;
        let mask = Tensor::from_vec(mask, (rows, width), device)?;
        let type_ids = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?; // (rows, width, 384)

        // Mean over the real tokens only, then unit length.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (rows, width, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (rows, 384)
        let counts = mask.sum(1)?; // (rows, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        let unit = mean.broadcast_div(&norm)?;

        let flat = unit.flatten_all()?.to_vec1::<f32>()?;
        if flat.len() != rows * DIMENSIONS {
            return Err(EmbedError::Inference(format!("{} values out, expected {}", flat.len(), rows * DIMENSIONS)));
        }
        Ok(flat
            .chunks_exact(DIMENSIONS)
            .map(|chunk| {
                let mut vector = [0f32; DIMENSIONS];
                vector.copy_from_slice(chunk);
                vector
            })
            .collect())
    }
}

/// The first [`MAX_TEXT_BYTES`] of a text, cut at a character boundary.
pub(crate) fn clip(text: &str) -> &str {
    if text.len() <= MAX_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_keeps_whole_characters() {
        let text = "é".repeat(MAX_TEXT_BYTES); // two bytes each
        let clipped = clip(&text);
        assert!(clipped.len() <= MAX_TEXT_BYTES && clipped.len() > MAX_TEXT_BYTES - 2);
        assert!(clipped.chars().all(|c| c == 'é'));
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn the_version_is_the_name_and_a_hash_prefix() {
        assert_eq!(version_of(&[0xab; 32]), "all-MiniLM-L6-v2@abababababab");
    }
}
