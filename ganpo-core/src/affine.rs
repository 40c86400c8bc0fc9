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
    let x = x.reshape([rows, d_in]);
    dims[D - 1] = d_out;
    let Some(bias) = bias else {
        return x.matmul(weight).reshape(dims);
    };
    // burn 0.21's fusion (wgpu, CUDA) computes a one-row product whose operands are fused
    // element-wise results and whose bias is folded into its writes wrong (docs/benchmarks.md,
    // "wgpu on lavapipe"): a decoding step, or a discriminator head on one pair. A zero second
    // row keeps every backend off that pattern; each row of a product is computed alone, so the
    // first row's values are the one-row product's, bit for bit (`tests::one_row_padding`).
    if rows == 1 {
        let padded = Tensor::cat(vec![x.clone(), x.zeros_like()], 0);
        let y = padded.matmul(weight) + bias.unsqueeze::<2>();
        return y.narrow(0, 0, 1).reshape(dims);
    }
    (x.matmul(weight) + bias.unsqueeze::<2>()).reshape(dims)
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

    /// One row with a bias (the padded path) gives the unpadded product's values bit for bit on
    /// the CPU, and its gradients.
    #[test]
    fn one_row_padding() {
        let device = Default::default();
        let layer = LinearConfig::new(37, 11).init::<B>(&device);
        let (w, b) = (layer.weight.val(), layer.bias.as_ref().unwrap().val());
        let x = Tensor::<B, 3>::random([1, 1, 37], burn::tensor::Distribution::Default, &device)
            .require_grad();
        let ours = linear(&layer, x.clone() * 1.5);
        let plain =
            ((x.clone() * 1.5).reshape([1, 37]).matmul(w) + b.unsqueeze::<2>()).reshape([1, 1, 11]);
        assert_eq!(ours.to_data(), plain.to_data());
        let g1 = (ours * 1.7).sum().backward();
        let g2 = (plain * 1.7).sum().backward();
        let flat = |t: Tensor<NdArray, 2>| t.reshape([-1]);
        for (name, a, b) in [
            (
                "x",
                flat(x.grad(&g1).unwrap().reshape([1, 37])),
                flat(x.grad(&g2).unwrap().reshape([1, 37])),
            ),
            (
                "weight",
                flat(layer.weight.grad(&g1).unwrap()),
                flat(layer.weight.grad(&g2).unwrap()),
            ),
            (
                "bias",
                layer.bias.as_ref().unwrap().grad(&g1).unwrap(),
                layer.bias.as_ref().unwrap().grad(&g2).unwrap(),
            ),
        ] {
            let diff = (a - b).abs().max().into_scalar();
            assert!(diff < 1e-6, "{name}: gradients differ by {diff}");
        }
    }

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
