//! Activations whose burn 0.21 versions are not exact enough for this crate.

use burn::prelude::*;

/// Exact (erf) GELU, `x / 2 * (1 + erf(x / sqrt 2))`, as PyTorch's `nn.GELU()`.
///
/// burn 0.21's `gelu` computes this forward but back-propagates the derivative of the *tanh
/// approximation*, an error of about 1e-3 relative in the gradient (caught by this crate's
/// finite-difference tests). Composing it from `erf` gives the exact derivative.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * (x / std::f64::consts::SQRT_2).erf().add_scalar(1.0) * 0.5
}

/// GELU with the tanh approximation (GPT-2's `gelu_new`, PyTorch's `gelu(approximate="tanh")`):
/// `x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))`, composed so autodiff differentiates
/// exactly this function.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let inner =
        (x.clone() + x.clone().powi_scalar(3) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
    x * inner.tanh().add_scalar(1.0) * 0.5
}
