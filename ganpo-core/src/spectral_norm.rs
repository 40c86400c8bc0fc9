//! Spectral normalization (Miyato et al., 2018) as a reusable linear layer.
//!
//! The layer divides its weight by an estimate of its largest singular value, so the map is
//! (about) 1-Lipschitz, which keeps the GAN discriminators well behaved. The estimate comes from
//! one step of power iteration per training forward pass on persistent vectors `u` and `v`;
//! evaluation passes reuse the stored vectors and change nothing. The vectors are module state
//! ([`RunningState`]), so they are saved and loaded with the module's record.
//!
//! Field names and layouts follow PyTorch's `torch.nn.utils.spectral_norm`
//! (`weight_orig [out, in]`, `weight_u [out]`, `weight_v [in]`, `bias`), so a PyTorch state dict
//! maps onto this module without renaming or transposing.

use burn::module::{Param, RunningState};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::init::{l2_normalize, xavier_uniform};
use crate::mode::Mode;

/// A linear layer `y = x W^T / sigma(W) + b` with spectral normalization.
#[derive(Module, Debug)]
pub struct SnLinear<B: Backend> {
    /// Unnormalized weight, `[d_output, d_input]`.
    pub weight_orig: Param<Tensor<B, 2>>,
    /// Bias, `[d_output]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Power-iteration estimate of the top left singular vector, `[d_output]`.
    pub weight_u: RunningState<Tensor<B, 1>>,
    /// Power-iteration estimate of the top right singular vector, `[d_input]`.
    pub weight_v: RunningState<Tensor<B, 1>>,
}

impl<B: Backend> SnLinear<B> {
    /// A layer with Xavier-uniform weight, zero bias (if `bias`) and random unit `u`, `v`.
    pub fn new(d_input: usize, d_output: usize, bias: bool, device: &B::Device) -> Self {
        let unit = |n: usize| {
            l2_normalize(Tensor::<B, 1>::random(
                [n],
                Distribution::Normal(0.0, 1.0),
                device,
            ))
        };
        Self {
            weight_orig: Param::from_tensor(xavier_uniform(d_output, d_input, device)),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_output], device))),
            weight_u: RunningState::new(unit(d_output)),
            weight_v: RunningState::new(unit(d_input)),
        }
    }

    /// `[d_input, d_output]` of the layer.
    pub fn dims(&self) -> [usize; 2] {
        let [out, inp] = self.weight_orig.dims();
        [inp, out]
    }

    /// The normalized weight `W / sigma`, `[d_output, d_input]`.
    ///
    /// In [`Mode::Train`] this first runs one power-iteration step
    /// (`v = normalize(W^T u)`, `u = normalize(W v)`) and stores the new `u`, `v`; in
    /// [`Mode::Eval`] it uses the stored vectors. `sigma = u^T W v` with `u`, `v` constant, so the
    /// gradient flows through both `W` and `sigma`, as in PyTorch.
    pub fn normalized_weight(&self, mode: Mode) -> Tensor<B, 2> {
        let (w, sigma) = self.weight_and_sigma(mode);
        w / sigma
    }

    /// `W` and `sigma = u^T W v` (`[1, 1]`), running one power iteration in training mode.
    fn weight_and_sigma(&self, mode: Mode) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let w = self.weight_orig.val();
        let [out, inp] = w.dims();
        let (u, v) = if mode.is_train() {
            let wd = w.clone().detach();
            let u = self.weight_u.value_sync().detach();
            let v = l2_normalize(
                wd.clone()
                    .transpose()
                    .matmul(u.reshape([out, 1]))
                    .reshape([inp]),
            );
            let u = l2_normalize(wd.matmul(v.clone().reshape([inp, 1])).reshape([out]));
            self.weight_u.update(u.clone());
            self.weight_v.update(v.clone());
            (u, v)
        } else {
            (
                self.weight_u.value_sync().detach(),
                self.weight_v.value_sync().detach(),
            )
        };
        let sigma = u
            .reshape([1, out])
            .matmul(w.clone())
            .matmul(v.reshape([inp, 1]));
        (w, sigma)
    }

    /// The current estimate `sigma = u^T W v` of the largest singular value (no state change).
    pub fn sigma(&self) -> f64 {
        let w = self.weight_orig.val().detach();
        let [out, inp] = w.dims();
        let u = self.weight_u.value_sync().detach().reshape([1, out]);
        let v = self.weight_v.value_sync().detach().reshape([inp, 1]);
        u.matmul(w).matmul(v).into_scalar().elem::<f64>()
    }

    /// Applies the layer to `x` of shape `[..., d_input]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>, mode: Mode) -> Tensor<B, D> {
        // `W^T / sigma`, the transposed view divided, rather than `(W / sigma)^T`: the same
        // quotients (bit for bit on the CPU), but burn 0.21's GPU fusion computes a one-row
        // product with the latter form and a bias wrong (docs/benchmarks.md, lavapipe).
        let (w, sigma) = self.weight_and_sigma(mode);
        crate::affine::affine(
            x,
            w.transpose() / sigma,
            self.bias.as_ref().map(|b| b.val()),
        )
    }
}
