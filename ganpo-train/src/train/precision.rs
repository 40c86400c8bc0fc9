//! Mixed precision: forward and backward passes in a compute dtype (bf16 on GPUs) while the
//! optimizer keeps f32 master weights.
//!
//! Each step maps the f32 policy to a copy ([`compute_copy`]) whose trainable parameters are
//! fresh leaves `cast(master)` under the masters' ids; the gradients collected from that copy
//! are cast to the masters' dtype ([`grads_like`]) before clipping and the optimizer, which
//! never sees the low-precision copy. (Leaves rather than tracked casts: a step back-propagates
//! several times through the same parameters - micro-batches, recomputed layers, LM-head
//! chunks - and a cast node shared by those passes would not carry each one's gradient to the
//! master.) Model outputs (logits, hidden states) are cast
//! back to f32 before log-softmax, losses and the discriminators, as PyTorch's autocast does for
//! softmax and losses. The frozen reference is cast once and kept in the compute dtype, and so
//! is a LoRA policy's frozen base ([`cast_frozen`]): f32 masters exist only for what trains.

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;

/// Casts float parameters to `dtype`: all of them, or (`frozen_only`) those that take no
/// gradient. A parameter already in `dtype` is kept as it is (no copy).
struct Cast {
    dtype: DType,
    frozen_only: bool,
}

impl<B: Backend> ModuleMapper<B> for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let skip = self.frozen_only && param.is_require_grad();
        let (id, tensor, mapper) = param.consume();
        let tensor = match skip || tensor.dtype() == self.dtype {
            true => tensor,
            false => tensor.cast(self.dtype),
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// `module` with every float parameter cast to `dtype` (same parameter ids; under autodiff the
/// casts are tracked, so gradients reach the original parameters).
pub fn cast_module<B: Backend, M: Module<B>>(module: M, dtype: DType) -> M {
    module.map(&mut Cast {
        dtype,
        frozen_only: false,
    })
}

/// `module` with the float parameters that take no gradient (a LoRA policy's frozen base) cast
/// to `dtype` once and for all, the trainable ones (its adapters) left as f32 masters. The
/// per-step [`cast_module`] then finds the base in `dtype` already and copies nothing, and the
/// reference (the policy with its adapters off) shares it.
pub fn cast_frozen<B: Backend, M: Module<B>>(module: M, dtype: DType) -> M {
    module.map(&mut Cast {
        dtype,
        frozen_only: true,
    })
}

/// Makes trainable parameters fresh leaves in `dtype` (see the module doc), frozen ones cast.
struct Leaves(DType);

impl<B: Backend> ModuleMapper<B> for Leaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let trainable = param.is_require_grad();
        let (id, tensor, mapper) = param.consume();
        let tensor = match (trainable, tensor.dtype() == self.0) {
            (true, _) => tensor.cast(self.0).detach().require_grad(),
            (false, true) => tensor,
            (false, false) => tensor.cast(self.0),
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// The policy of one step in the compute dtype: every trainable parameter a fresh leaf
/// `cast(master)` with the master's id, so the gradients any number of backward passes leave on
/// it are collected by `GradientsParams::from_grads(grads, &copy)` under the masters' ids (then
/// cast by [`grads_like`]).
pub fn compute_copy<B: AutodiffBackend, M: AutodiffModule<B>>(masters: &M, dtype: DType) -> M {
    masters.clone().map(&mut Leaves(dtype))
}

/// Re-registers each gradient in `grads` in the dtype of its parameter in `masters`.
struct ToMasters<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    _backend: core::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ToMasters<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let dtype = param.val().dtype();
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let g = if g.dtype() == dtype { g } else { g.cast(dtype) };
            self.grads.register(param.id, g);
        }
    }
}

/// `grads` (from a [`compute_copy`], in the compute dtype) in the dtypes of the parameters of
/// `masters` (f32), for clipping and the optimizer.
pub fn grads_like<B: AutodiffBackend, M: AutodiffModule<B>>(
    masters: &M,
    mut grads: GradientsParams,
) -> GradientsParams {
    masters.visit(&mut ToMasters::<B> {
        grads: &mut grads,
        _backend: core::marker::PhantomData,
    });
    grads
}

/// `x` in the backend's default float dtype (f32), where mixed precision computed it in another.
pub fn to_float<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let float = <B::FloatElem as burn::tensor::Element>::dtype();
    if x.dtype() == float { x } else { x.cast(float) }
}
