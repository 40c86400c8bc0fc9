//! The gated MLP (HF names: `gate_proj`, `up_proj`, `down_proj`): SwiGLU for the Llama family,
//! GeGLU (tanh GELU) for Gemma.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::silu;
use ganpo_core::activation::gelu_tanh;
use ganpo_core::affine::linear;

use crate::nn::init::{self, INIT_STD, Init};

/// `down(act(gate(x)) * up(x))`, `act` SiLU or tanh-approximated GELU.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `hidden -> intermediate`, through SiLU.
    pub gate_proj: Linear<B>,
    /// `hidden -> intermediate`.
    pub up_proj: Linear<B>,
    /// `intermediate -> hidden`.
    pub down_proj: Linear<B>,
    gelu: bool,
}

impl<B: Backend> Mlp<B> {
    /// A randomly initialized `hidden -> intermediate -> hidden` MLP, drawn by `init`; GeGLU
    /// when `gelu`, SwiGLU otherwise.
    pub fn new(
        hidden: usize,
        intermediate: usize,
        bias: bool,
        gelu: bool,
        init: Init,
        device: &B::Device,
    ) -> Self {
        let linear = |i, o| init::linear(i, o, bias, (init, INIT_STD), device);
        Self {
            gate_proj: linear(hidden, intermediate),
            up_proj: linear(hidden, intermediate),
            down_proj: linear(intermediate, hidden),
            gelu,
        }
    }

    /// `x`: `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = linear(&self.gate_proj, x.clone());
        let gate = if self.gelu {
            gelu_tanh(gate)
        } else {
            silu(gate)
        };
        let gated = gate * linear(&self.up_proj, x);
        linear(&self.down_proj, gated)
    }
}
