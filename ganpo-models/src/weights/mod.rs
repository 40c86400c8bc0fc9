//! Checkpoint tensors by HF name, and applying them to a module.
//!
//! Every format reader produces [`TensorSnapshot`]s named like HF checkpoints and holding f32
//! data (converted lazily, when the module asks for them); [`apply`] puts them into a module whose
//! field paths are those names, transposing `Linear` weights from PyTorch's `[out, in]` to burn's
//! `[in, out]`. A tensor the module needs but the checkpoint lacks, or one whose shape is off, is
//! an error: nothing keeps its random initialization.

mod safetensors;

use std::path::Path;

use std::rc::Rc;

use burn::module::ParamId;
use burn::prelude::*;
use burn::tensor::DType;
use burn_store::{
    ModuleSnapshot, PathFilter, PyTorchToBurnAdapter, TensorSnapshot, TensorSnapshotError,
};

pub use self::safetensors::read_safetensors;
use crate::ModelError;

/// Puts `tensors` into `module`. `path` names the checkpoint in errors; checkpoint tensors that
/// match no module field and whose names match `ignorable` are dropped silently, others are
/// logged.
pub fn apply<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    tensors: Vec<TensorSnapshot>,
    path: &Path,
    ignorable: impl Fn(&str) -> bool,
) -> Result<(), ModelError> {
    apply_filtered(module, tensors, path, ignorable, None)
}

/// [`apply`] to the module tensors `filter` selects only (the others are neither loaded nor
/// missing): an adapter file applied to the adapters of a whole model.
pub fn apply_filtered<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    tensors: Vec<TensorSnapshot>,
    path: &Path,
    ignorable: impl Fn(&str) -> bool,
    filter: Option<PathFilter>,
) -> Result<(), ModelError> {
    let mut result = module.apply(
        tensors,
        filter.clone(),
        Some(Box::new(PyTorchToBurnAdapter)),
        true,
    );
    // burn-store reports the tensors the filter left out as missing, too.
    if let Some(filter) = &filter {
        result.missing.retain(|(name, _)| filter.matches(name));
    }
    if !result.errors.is_empty() {
        let message = result
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ModelError::BadTensors {
            path: path.to_path_buf(),
            message,
        });
    }
    if !result.missing.is_empty() {
        let names = result
            .missing
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        return Err(ModelError::MissingTensors {
            path: path.to_path_buf(),
            names,
        });
    }
    let unused: Vec<_> = result.unused.iter().filter(|n| !ignorable(n)).collect();
    if !unused.is_empty() {
        tracing::warn!(checkpoint = %path.display(), ?unused, "checkpoint tensors not used by the model");
    }
    Ok(())
}

/// A snapshot named like the HF tensor `name` (`model.layers.0.mlp.up_proj.weight`) whose f32
/// data `data_fn` produces when the module asks for it.
pub(crate) fn f32_snapshot(
    name: &str,
    shape: Vec<usize>,
    data_fn: Rc<dyn Fn() -> Result<TensorData, TensorSnapshotError>>,
) -> TensorSnapshot {
    let path_stack = name.split('.').map(str::to_string).collect();
    TensorSnapshot::from_closure(
        data_fn,
        DType::F32,
        shape.into(),
        path_stack,
        vec![],
        ParamId::new(),
    )
}
