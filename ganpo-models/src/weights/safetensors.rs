//! Reading `.safetensors` files (single or sharded) into f32 snapshots.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use burn::tensor::{DType, TensorData};
use burn_store::{TensorSnapshot, TensorSnapshotError};
use safetensors::{Dtype, SafeTensors};

use super::f32_snapshot;
use crate::ModelError;

/// Reads every tensor of the safetensors file at `path` as a lazily converted f32 snapshot.
///
/// F32, F16 and BF16 tensors are accepted; any other dtype is an error naming the tensor.
pub fn read_safetensors(path: &Path) -> Result<Vec<TensorSnapshot>, ModelError> {
    let bytes = std::fs::read(path).map_err(ModelError::io(path))?;
    let bytes: Arc<[u8]> = bytes.into();
    let bad = |message: String| ModelError::BadWeights {
        path: path.to_path_buf(),
        message,
    };
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let mut snapshots = Vec::new();
    for (name, view) in file.tensors() {
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(ModelError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    name,
                    dtype: format!("{other:?}"),
                });
            }
        };
        let shape = view.shape().to_vec();
        // Offsets of this tensor inside the file's bytes, so the closure can convert on demand.
        let start = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
        let range = start..start + view.data().len();
        let data_bytes = Arc::clone(&bytes);
        let data_shape = shape.clone();
        let data_fn =
            Rc::new(move || -> Result<TensorData, TensorSnapshotError> {
                let raw = data_bytes[range.clone()].to_vec();
                Ok(TensorData::from_bytes_vec(raw, data_shape.clone(), dtype)
                    .convert_dtype(DType::F32))
            });
        snapshots.push(f32_snapshot(&name, shape, data_fn));
    }
    Ok(snapshots)
}
