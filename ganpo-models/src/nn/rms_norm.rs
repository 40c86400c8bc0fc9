//! Root-mean-square layer norm with HF's parameter name (`weight`).

use burn::module::Param;
use burn::prelude::*;

/// `x / sqrt(mean(x^2) + eps) * weight` over the last dimension.
///
/// burn's own `RmsNorm` calls its scale `gamma`; this one is named like the checkpoints
/// (`...norm.weight`) so that loading needs no remapping.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Scale, `[d]`.
    pub weight: Param<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// A norm of width `d` with unit scale.
    pub fn new(d: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            eps,
        }
    }

    /// Normalizes `x` (`[..., d]`).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let rms = x
            .clone()
            .square()
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        x / rms * self.weight.val().unsqueeze::<D>()
    }
}
