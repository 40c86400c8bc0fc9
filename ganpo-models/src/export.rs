//! Writing a model back as an HF directory that transformers loads.

use std::path::Path;

use burn::prelude::*;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, TensorSnapshot};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::Value;

use crate::{Lm, ModelConfig, ModelError, Tokenizer};

/// The HF `config.json` of a model configuration; an error when no transformers config can
/// describe it (see [`crate::Architecture::to_hf`]).
pub fn hf_config(config: &ModelConfig) -> Result<Value, ModelError> {
    config.to_hf(Path::new("config.json"))
}

/// Where the tokenizer files of an exported directory come from.
#[derive(Clone, Copy, Debug)]
pub enum TokenizerFiles<'a> {
    /// No tokenizer files.
    None,
    /// Copied from an HF model directory (`tokenizer.json` required; `tokenizer_config.json`,
    /// `generation_config.json`, `chat_template.jinja` when present).
    Dir(&'a Path),
    /// Written from a loaded tokenizer (for example one built from GGUF metadata).
    Tokenizer(&'a Tokenizer),
}

/// Writes `model` as an HF directory at `dir`: `config.json`, `model.safetensors` (f32, PyTorch
/// layouts and names) and the tokenizer files `tokenizer` names.
///
/// Everything is written to a temporary sibling directory first and renamed into place, so `dir`
/// either holds a complete export or is untouched; an existing `dir` is an error.
pub fn export_hf<B: Backend>(
    model: &Lm<B>,
    config: &ModelConfig,
    tokenizer: TokenizerFiles<'_>,
    dir: &Path,
) -> Result<(), ModelError> {
    let tensors = model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true);
    write_export(config.to_hf(dir)?, tensors, tokenizer, dir, &HF_FILES)
}

/// The two files of an exported directory: a JSON description and the safetensors weights.
pub(crate) struct ExportFiles {
    /// `config.json` or `adapter_config.json`.
    pub config: &'static str,
    /// `model.safetensors` or `adapter_model.safetensors`.
    pub weights: &'static str,
}

/// A transformers model directory.
pub(crate) const HF_FILES: ExportFiles = ExportFiles {
    config: "config.json",
    weights: "model.safetensors",
};

/// Writes `json` as `files.config`, `tensors` (PyTorch layouts, checkpoint names) as
/// `files.weights` and the tokenizer files into a temporary sibling of `dir`, then renames it to
/// `dir`; refuses an existing `dir`.
pub(crate) fn write_export(
    json: Value,
    tensors: Vec<TensorSnapshot>,
    tokenizer: TokenizerFiles<'_>,
    dir: &Path,
    files: &ExportFiles,
) -> Result<(), ModelError> {
    if dir.exists() {
        return Err(ModelError::Io {
            path: dir.to_path_buf(),
            reason: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "refusing to overwrite an existing path",
            ),
        });
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let tmp = dir.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(ModelError::io(&tmp))?;
    let result = write_all(&json, tensors, tokenizer, &tmp, files)
        .and_then(|()| std::fs::rename(&tmp, dir).map_err(ModelError::io(dir)));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn write_all(
    json: &Value,
    snapshots: Vec<TensorSnapshot>,
    tokenizer: TokenizerFiles<'_>,
    tmp: &Path,
    files: &ExportFiles,
) -> Result<(), ModelError> {
    let config_path = tmp.join(files.config);
    let text = serde_json::to_string_pretty(json).expect("a JSON value serializes");
    std::fs::write(&config_path, text).map_err(ModelError::io(&config_path))?;

    let weights = tmp.join(files.weights);
    let bad = |message: String| ModelError::BadWeights {
        path: weights.clone(),
        message,
    };
    let mut tensors = Vec::new();
    for snapshot in snapshots {
        let data = snapshot
            .to_data()
            .map_err(|e| bad(format!("{}: {e}", snapshot.full_path())))?;
        let data = data.convert::<f32>();
        tensors.push((
            snapshot.full_path(),
            data.shape.to_vec(),
            data.as_bytes().to_vec(),
        ));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| bad(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), &weights)
        .map_err(|e| bad(e.to_string()))?;

    if let TokenizerFiles::Tokenizer(t) = tokenizer {
        t.save_hf(tmp)?;
    }
    if let TokenizerFiles::Dir(src) = tokenizer {
        let required = src.join("tokenizer.json");
        if !required.is_file() {
            return Err(ModelError::Io {
                path: required,
                reason: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no tokenizer file to export",
                ),
            });
        }
        for file in [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
            "chat_template.jinja",
        ] {
            let from = src.join(file);
            if from.is_file() {
                inside(src, &from)?;
                std::fs::copy(&from, tmp.join(file)).map_err(ModelError::io(&from))?;
            }
        }
    }
    Ok(())
}

/// Refuses a file of the model directory `dir` that resolves outside it (a symbolic link to
/// `/etc/passwd` must not be copied into an export). A snapshot of the Hugging Face cache
/// (`models--OWNER--NAME/snapshots/COMMIT`) links its files to `../../blobs/`: the repository
/// folder is its bound.
fn inside(dir: &Path, file: &Path) -> Result<(), ModelError> {
    let mut root = dir.canonicalize().map_err(ModelError::io(dir))?;
    let snapshots = root.parent().filter(|p| p.ends_with("snapshots"));
    if let Some(repo) = snapshots.and_then(Path::parent)
        && repo
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("models--"))
    {
        root = repo.to_path_buf();
    }
    let target = file.canonicalize().map_err(ModelError::io(file))?;
    if target.starts_with(&root) {
        return Ok(());
    }
    Err(ModelError::Io {
        path: file.to_path_buf(),
        reason: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a link to {}, outside the model directory: refusing to copy it into the export",
                target.display()
            ),
        ),
    })
}
