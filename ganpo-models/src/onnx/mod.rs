//! ONNX files: the weights of a built-in architecture, read from an ONNX export.
//!
//! An ONNX export of a transformers model (by `torch.onnx.export`, or Hugging Face Optimum, which
//! writes `model.onnx` next to `config.json` and the tokenizer files) holds the weights as graph
//! initializers. [`load_onnx`] takes the architecture from that `config.json` and finds each HF
//! tensor among the initializers: by name where the exporter kept it
//! (`model.layers.0.input_layernorm.weight`, any wrapper prefix such as `m.` ignored), otherwise
//! through the node that uses it: a linear layer's weight the exporter stored transposed under a
//! generated name (`onnx::MatMul_609`, `val_79`) is the second input of a `MatMul` (or `Gemm`)
//! whose node name or `namespace` metadata records the module (`/model/layers.0/self_attn/q_proj/
//! MatMul`), so it is `model.layers.0.self_attn.q_proj.weight`, transposed back. External-data
//! files (`model.onnx.data`) are read as well.
//!
//! A model whose architecture ganpo does not implement comes in through burn-onnx's code
//! generation instead, and plugs into the trainer through [`crate::CausalLm`]:
//! `examples/onnx-import` shows it.

mod reader;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::prelude::*;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot};

pub use reader::{Initializer, OnnxFile, Use, dtype_name, module_path};

use crate::weights::{apply, f32_snapshot};
use crate::{Lm, ModelConfig, ModelError};

/// Where one HF tensor is among an ONNX file's initializers.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// Index into [`OnnxFile::initializers`].
    pub initializer: usize,
    /// Whether the stored matrix is the transpose of the HF tensor (`x @ W^T` folded).
    pub transposed: bool,
}

/// The names an initializer may stand for, with whether it is stored transposed: its own name
/// when it looks like a parameter path, and the names its uses imply.
fn candidates(init: &Initializer) -> Vec<(String, bool, bool)> {
    // (name, transposed, from the initializer's own name)
    let mut out = Vec::new();
    if init.name.contains('.') && !init.name.contains("::") {
        out.push((init.name.clone(), false, true));
    }
    for u in &init.uses {
        let Some(module) = &u.module else { continue };
        let derived = match (u.op_type.as_str(), u.input) {
            ("MatMul", 1) if init.shape.len() == 2 => Some(("weight", true)),
            ("Gemm", 1) if init.shape.len() == 2 => Some(("weight", !u.trans_b)),
            ("Gemm", 2) => Some(("bias", false)),
            ("Gather", 0) => Some(("weight", false)),
            _ => None,
        };
        if let Some((kind, transposed)) = derived {
            out.push((format!("{module}.{kind}"), transposed, false));
        }
    }
    out
}

/// Whether `candidate` names `expected` (equal, or `expected` behind a wrapper prefix such as
/// `m.`).
fn names(candidate: &str, expected: &str) -> bool {
    candidate == expected
        || candidate
            .strip_suffix(expected)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// Finds each of the `expected` HF tensor names among the file's initializers. A name an
/// initializer carries itself wins over one derived from a node; names not found are absent
/// from the map.
pub fn resolve(file: &OnnxFile, expected: &[String]) -> HashMap<String, Found> {
    let mut found: HashMap<String, (Found, bool)> = HashMap::new();
    for (i, init) in file.initializers.iter().enumerate() {
        for (candidate, transposed, own) in candidates(init) {
            // The longest expected name the candidate ends with (`lm_head.weight` must not claim
            // `model.lm_head.weight`-like paths of another module).
            let Some(name) = expected
                .iter()
                .filter(|e| names(&candidate, e))
                .max_by_key(|e| e.len())
            else {
                continue;
            };
            let better = match found.get(name) {
                None => true,
                Some((_, was_own)) => own && !was_own,
            };
            if better {
                let f = Found {
                    initializer: i,
                    transposed,
                };
                found.insert(name.clone(), (f, own));
            }
        }
    }
    found.into_iter().map(|(k, (f, _))| (k, f)).collect()
}

/// The sibling file `name` of the ONNX file at `path`.
fn sibling(path: &Path, name: &str) -> PathBuf {
    path.parent().unwrap_or(Path::new(".")).join(name)
}

/// Loads a built-in architecture from an ONNX export: `config.json` next to the file says which
/// (as in an Optimum export directory), the weights come from the graph's initializers.
/// A tensor the model needs and the graph lacks is an error naming it.
pub fn load_onnx<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(ModelConfig, Lm<B>), ModelError> {
    let config_path = sibling(path, "config.json");
    if !config_path.is_file() {
        return Err(ModelError::Io {
            path: config_path,
            reason: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "an ONNX model needs the transformers config.json of its architecture next to it \
                 (the layout of an Optimum export); without one, use burn-onnx code generation \
                 (examples/onnx-import)",
            ),
        });
    }
    let config = ModelConfig::from_hf(&crate::hf::read_json(&config_path)?, &config_path)?;
    let mut model = config.init::<B>(device);
    let expected: Vec<String> = model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .iter()
        .map(|s| s.full_path())
        .collect();
    let file = Rc::new(OnnxFile::open(path)?);
    let found = resolve(&file, &expected);
    let mut snapshots = Vec::new();
    for (name, f) in found {
        let init = &file.initializers[f.initializer];
        // Fail on unsupported dtypes now, naming the initializer.
        if !dtype_name(init.data_type).1 {
            file.read(init)?;
        }
        let stored = init.shape.clone();
        let shape = if f.transposed {
            vec![stored[1], stored[0]]
        } else {
            stored.clone()
        };
        let file = Rc::clone(&file);
        let data_shape = shape.clone();
        let data_fn = Rc::new(move || {
            let init = &file.initializers[f.initializer];
            let values = file
                .read(init)
                .map_err(|e| burn_store::TensorSnapshotError::DataError(e.to_string()))?;
            let values = if f.transposed {
                transpose(&values, stored[0], stored[1])
            } else {
                values
            };
            Ok(TensorData::new(values, data_shape.clone()))
        });
        snapshots.push(f32_snapshot(&name, shape, data_fn));
    }
    apply(&mut model, snapshots, path, |_| false)?;
    Ok((config, model))
}

/// `[rows, cols]` row-major values transposed to `[cols, rows]`.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// How many initializers of each ONNX data type the file holds.
pub fn weight_dtypes(path: &Path) -> Result<std::collections::BTreeMap<String, usize>, ModelError> {
    let file = OnnxFile::open(path)?;
    let mut counts = std::collections::BTreeMap::new();
    for init in &file.initializers {
        *counts.entry(dtype_name(init.data_type).0).or_insert(0) += 1;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_prefixes_match_at_segment_boundaries() {
        assert!(names("m.model.norm.weight", "model.norm.weight"));
        assert!(names("model.norm.weight", "model.norm.weight"));
        assert!(!names("m.xmodel.norm.weight", "model.norm.weight"));
    }

    #[test]
    fn transpose_is_exact() {
        assert_eq!(
            transpose(&[1., 2., 3., 4., 5., 6.], 2, 3),
            vec![1., 4., 2., 5., 3., 6.]
        );
    }
}
