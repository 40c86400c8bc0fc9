//! The SwiGLU MLP (HF names: `gate_proj`, `up_proj`, `down_proj`).

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::silu;
use ganpo_core::affine::linear;

use super::LlamaConfig;
use crate::nn::init::{self, INIT_STD, Init};

/// `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `hidden -> intermediate`, through SiLU.
    pub gate_proj: Linear<B>,
    /// `hidden -> intermediate`.
    pub up_proj: Linear<B>,
    /// `intermediate -> hidden`.
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// Randomly initialized MLP for `c`, drawn by `init`.
    pub fn new(c: &LlamaConfig, init: Init, device: &B::Device) -> Self {
        let linear = |i, o| init::linear(i, o, c.mlp_bias, (init, INIT_STD), device);
        Self {
            gate_proj: linear(c.hidden_size, c.intermediate_size),
            up_proj: linear(c.hidden_size, c.intermediate_size),
            down_proj: linear(c.intermediate_size, c.hidden_size),
        }
    }

    /// `x`: `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gated = silu(linear(&self.gate_proj, x.clone())) * linear(&self.up_proj, x);
        linear(&self.down_proj, gated)
    }
}
