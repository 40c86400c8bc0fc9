//! Loading a model, and its tokenizer when one comes with it, from a path.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::{Lm, ModelConfig, ModelError, Tokenizer, hf};

/// A loaded model with what came with it.
#[derive(Debug)]
pub struct LoadedModel<B: Backend> {
    /// The architecture and its sizes.
    pub config: ModelConfig,
    /// The model, weights in f32.
    pub model: Lm<B>,
    /// The tokenizer, when the checkpoint has one (`tokenizer.json` in an HF directory).
    pub tokenizer: Option<Tokenizer>,
    /// Where it was loaded from.
    pub source: PathBuf,
}

/// Whether `path` is a file with extension `ext` (case-insensitive).
fn has_extension(path: &Path, ext: &str) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// Loads the model at `path`: an HF directory (`config.json`, safetensors weights, optional
/// `tokenizer.json`), a `.gguf` file, or an `.onnx` file with `config.json` (and optionally
/// `tokenizer.json`) next to it. A tokenizer whose ids exceed the model's vocabulary is an error.
pub fn load_model<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<LoadedModel<B>, ModelError> {
    if has_extension(path, "onnx") {
        let (config, model) = crate::onnx::load_onnx::<B>(path, device)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tokenizer = tokenizer_in(dir, &config)?;
        return Ok(LoadedModel {
            config,
            model,
            tokenizer,
            source: path.to_path_buf(),
        });
    }
    if has_extension(path, "gguf") {
        let (config, model, tokenizer) = crate::gguf::load_gguf::<B>(path, device)?;
        if let Some(tok) = &tokenizer {
            tok.check_vocab(config.vocab_size())?;
        }
        return Ok(LoadedModel {
            config,
            model,
            tokenizer,
            source: path.to_path_buf(),
        });
    }
    if !path.is_dir() {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            reason: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "expected an HF model directory (config.json + model.safetensors), a .gguf file or an .onnx file",
            ),
        });
    }
    let (config, model) = hf::load::<B>(path, device)?;
    let tokenizer = tokenizer_in(path, &config)?;
    Ok(LoadedModel {
        config,
        model,
        tokenizer,
        source: path.to_path_buf(),
    })
}

/// The tokenizer of `dir` when it has a `tokenizer.json`, checked against the model's vocabulary.
pub(crate) fn tokenizer_in(
    dir: &Path,
    config: &ModelConfig,
) -> Result<Option<Tokenizer>, ModelError> {
    if !dir.join("tokenizer.json").is_file() {
        return Ok(None);
    }
    let tok = Tokenizer::from_dir(dir)?;
    tok.check_vocab(config.vocab_size())?;
    Ok(Some(tok))
}

/// How many tensors of each stored dtype the checkpoint at `path` holds (HF directory, GGUF or
/// ONNX).
pub fn weight_dtypes(path: &Path) -> Result<std::collections::BTreeMap<String, usize>, ModelError> {
    if has_extension(path, "onnx") {
        return crate::onnx::weight_dtypes(path);
    }
    if path.is_file() {
        let file = crate::gguf::GgufFile::open(path)?;
        let mut counts = std::collections::BTreeMap::new();
        for t in &file.tensors {
            *counts
                .entry(crate::gguf::GgmlType::name_of(t.ggml_type))
                .or_insert(0) += 1;
        }
        return Ok(counts);
    }
    hf::weight_dtypes(path)
}
