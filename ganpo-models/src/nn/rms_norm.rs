//! Root-mean-square layer norm with HF's parameter name (`weight`), scaling by `weight` or, as
//! Gemma does, by `1 + weight`.

use burn::module::Param;
use burn::prelude::*;

/// `x / sqrt(mean(x^2) + eps) * weight` over the last dimension (`* (1 + weight)` for Gemma).
///
/// burn's own `RmsNorm` calls its scale `gamma`; this one is named like the checkpoints
/// (`...norm.weight`) so that loading needs no remapping.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Scale, `[d]`.
    pub weight: Param<Tensor<B, 1>>,
    eps: f64,
    unit_offset: bool,
}

impl<B: Backend> RmsNorm<B> {
    /// A norm of width `d` with unit scale.
    pub fn new(d: usize, eps: f64, device: &B::Device) -> Self {
        Self::with_offset(d, eps, false, device)
    }

    /// A norm of width `d` with unit scale that multiplies by `1 + weight` when `unit_offset`
    /// (Gemma; the weight then starts at zero) and by `weight` otherwise.
    pub fn with_offset(d: usize, eps: f64, unit_offset: bool, device: &B::Device) -> Self {
        let weight = if unit_offset {
            Tensor::zeros([d], device)
        } else {
            Tensor::ones([d], device)
        };
        Self {
            weight: Param::from_tensor(weight),
            eps,
            unit_offset,
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
        let scale = if self.unit_offset {
            self.weight.val().add_scalar(1.0)
        } else {
            self.weight.val()
        };
        x / rms * scale.unsqueeze::<D>()
    }
}
