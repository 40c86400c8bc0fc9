//! Loading an HF model directory (`config.json` + safetensors weights).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde_json::Value;

use crate::ModelError;
use crate::auto::{Lm, ModelConfig};
use burn_store::TensorSnapshot;

use crate::weights::{apply, read_safetensors};

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(ModelError::io(path))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The weight files of an HF directory: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(ModelError::Io {
            path: single,
            reason: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither model.safetensors nor model.safetensors.index.json exists in the directory",
            ),
        });
    }
    let json = read_json(&index)?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| ModelError::Json {
            path: index.clone(),
            message: "missing `weight_map` object".into(),
        })?;
    let mut files = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| ModelError::Json {
            path: index.clone(),
            message: format!("weight_map[{tensor}] is not a file name"),
        })?;
        files.insert(dir.join(file));
    }
    Ok(files.into_iter().collect())
}

/// How many tensors of each dtype the weight files of an HF directory hold (headers only).
pub fn weight_dtypes(dir: &Path) -> Result<std::collections::BTreeMap<String, usize>, ModelError> {
    let mut counts = std::collections::BTreeMap::new();
    for file in weight_files(dir)? {
        let bytes = std::fs::read(&file).map_err(ModelError::io(&file))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
            ModelError::BadWeights {
                path: file.clone(),
                message: format!("not a safetensors file: {e}"),
            }
        })?;
        for info in meta.tensors().values() {
            *counts.entry(format!("{:?}", info.dtype)).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// Checkpoint tensors that are buffers of the original implementation, not parameters.
pub(crate) fn is_buffer(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
        || name.ends_with(".attn.bias")
        || name.ends_with(".attn.masked_bias")
}

/// Loads a model of any supported architecture from an HF directory (`config.json` and
/// `model.safetensors` or a sharded index), weights converted to f32.
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(ModelConfig, Lm<B>), ModelError> {
    let config_path = dir.join("config.json");
    let config = ModelConfig::from_hf(&read_json(&config_path)?, &config_path)?;
    let mut model = config.init::<B>(device);
    let tensors = read_checkpoint(dir)?;
    let tied = config.tied_embeddings();
    apply(&mut model, tensors, dir, |name| {
        is_buffer(name) || (tied && name == "lm_head.weight")
    })?;
    Ok((config, model))
}

/// Every tensor of the safetensors checkpoint in `dir` (single file or shards), as snapshots
/// named like the checkpoint.
pub(crate) fn read_checkpoint(dir: &Path) -> Result<Vec<TensorSnapshot>, ModelError> {
    let mut tensors = Vec::new();
    for file in weight_files(dir)? {
        tensors.extend(read_safetensors(&file)?);
    }
    Ok(tensors)
}
