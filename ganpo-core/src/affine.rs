//! Affine maps over the last dimension, computed as one 2-D matrix product.
//!
//! burn's `Linear` broadcasts its `[d_in, d_out]` weight to the input's rank and runs a batched
//! matmul. On the NdArray backend that is measurably slower than folding the leading dimensions
//! into rows and running a single `[rows, d_in] x [d_in, d_out]` product, forward and backward
//! (the broadcast weight's gradient is a batched product summed afterwards). Every linear layer of
//! ganpo's models and discriminators goes through [`linear`] / [`affine`] instead.

use burn::nn::Linear;
use burn::prelude::*;

/// `x @ weight (+ bias)` over the last dimension of `x`: `[..., d_in]` to `[..., d_out]`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::prelude::*;
/// use ganpo_core::affine::affine;
///
/// let device = Default::default();
/// let x = Tensor::<NdArray, 3>::from_floats([[[1.0, 2.0]], [[3.0, 4.0]]], &device);
/// let w = Tensor::<NdArray, 2>::from_floats([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], &device);
/// let b = Tensor::<NdArray, 1>::from_floats([0.5, 0.5, 0.5], &device);
/// let y = affine(x, w, Some(b));
/// assert_eq!(y.dims(), [2, 1, 3]);
/// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![1.5, 2.5, 3.5, 3.5, 4.5, 7.5]);
/// ```
pub fn affine<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let mut dims = x.dims();
    let [d_in, d_out] = weight.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = x.reshape([rows, d_in]).matmul(weight);
    let y = match bias {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    };
    dims[D - 1] = d_out;
    y.reshape(dims)
}

/// A burn `Linear` layer applied through [`affine`] (the same result as `layer.forward(x)`).
pub fn linear<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    affine(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::LinearConfig;

    type B = Autodiff<NdArray>;

    /// Same values and gradients as burn's broadcasting `Linear::forward`.
    #[test]
    fn matches_burn_linear_forward_and_backward() {
        let device = Default::default();
        let layer = LinearConfig::new(5, 3).init::<B>(&device);
        let x = Tensor::<B, 3>::random([2, 4, 5], burn::tensor::Distribution::Default, &device)
            .require_grad();
        let ours = linear(&layer, x.clone());
        let theirs = layer.forward(x.clone());
        let diff = (ours.clone() - theirs.clone()).abs().max().into_scalar();
        assert!(diff < 1e-6, "forward differs by {diff}");
        let g1 = (ours * 1.7).sum().backward();
        let g2 = (theirs * 1.7).sum().backward();
        let w1 = layer.weight.grad(&g1).unwrap();
        let w2 = layer.weight.grad(&g2).unwrap();
        let dw = (w1 - w2).abs().max().into_scalar();
        assert!(dw < 1e-5, "weight gradients differ by {dw}");
        let dx = (x.grad(&g1).unwrap() - x.grad(&g2).unwrap())
            .abs()
            .max()
            .into_scalar();
        assert!(dx < 1e-6, "input gradients differ by {dx}");
    }
}
