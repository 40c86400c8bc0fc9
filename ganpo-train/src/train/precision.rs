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
