//! The compute dtype: what the forward and backward passes run in (`train.compute_dtype`).

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
