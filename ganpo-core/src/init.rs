//! Weight initializers shared by the discriminators (the reference uses Xavier-uniform weights
//! and zero biases everywhere).

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::Distribution;

/// Xavier-uniform `[rows, cols]` matrix, `U(-a, a)` with `a = sqrt(6 / (rows + cols))`.
pub(crate) fn xavier_uniform<B: Backend>(
    rows: usize,
    cols: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let a = (6.0 / (rows + cols) as f64).sqrt();
    Tensor::random([rows, cols], Distribution::Uniform(-a, a), device)
}

/// A burn [`Linear`] (weight `[d_in, d_out]`) with Xavier-uniform weight and zero bias.
pub(crate) fn xavier_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    device: &B::Device,
) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(xavier_uniform(d_in, d_out, device)),
        bias: Some(Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

/// L2-normalizes a vector, as PyTorch's `F.normalize(x, dim=0, eps=1e-12)`.
pub(crate) fn l2_normalize<B: Backend>(x: Tensor<B, 1>) -> Tensor<B, 1> {
    let norm = x.clone().square().sum().sqrt().clamp_min(1e-12);
    x / norm
}
