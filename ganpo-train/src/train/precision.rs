//! Mixed precision: forward and backward passes in a compute dtype (bf16 on GPUs) while the
//! optimizer keeps f32 master weights.
//!
//! Each step maps the f32 policy to a copy whose parameters are `cast(master)`: the casts are
//! part of the autodiff graph, so the gradients arrive at the f32 master parameters in f32 and
//! the optimizer never sees the low-precision copy. Model outputs (logits, hidden states) are cast
//! back to f32 before log-softmax, losses and the discriminators, as PyTorch's autocast does for
//! softmax and losses. The frozen reference is cast once and kept in the compute dtype.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::DType;
use serde::{Deserialize, Serialize};

/// The dtype of the forward and backward passes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeDtype {
    /// Full precision: no casts.
    #[default]
    F32,
    /// bfloat16 (GPU backends).
    Bf16,
    /// float16 (GPU backends).
    F16,
    /// float64 (the CPU backend; a numerics check of the mixed-precision path).
    F64,
}

impl ComputeDtype {
    /// The burn dtype to cast to; `None` for `f32` (nothing to do).
    pub fn cast_to(self) -> Option<DType> {
        match self {
            ComputeDtype::F32 => None,
            ComputeDtype::Bf16 => Some(DType::BF16),
            ComputeDtype::F16 => Some(DType::F16),
            ComputeDtype::F64 => Some(DType::F64),
        }
    }

    /// Whether the backend named `backend` computes in this dtype.
    pub fn supported_on(self, backend: &str) -> bool {
        match backend {
            "cpu" | "ndarray" => matches!(self, ComputeDtype::F32 | ComputeDtype::F64),
            _ => true,
        }
    }
}

struct Cast(DType);

impl<B: Backend> ModuleMapper<B> for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.cast(self.0), mapper)
    }
}

/// `module` with every float parameter cast to `dtype` (same parameter ids; under autodiff the
/// casts are tracked, so gradients reach the original parameters).
pub fn cast_module<B: Backend, M: Module<B>>(module: M, dtype: DType) -> M {
    module.map(&mut Cast(dtype))
}
