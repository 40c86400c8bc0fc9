//! The gated MLP (HF names: `gate_proj`, `up_proj`, `down_proj`): SwiGLU for the Llama family,
//! GeGLU (tanh GELU) for Gemma.

use burn::prelude::*;
use burn::tensor::activation::silu;
use ganpo_core::activation::gelu_tanh;

use crate::nn::init::{self, INIT_STD, Init};
use crate::nn::{Linear, Projection};

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
        let linear = |i, o| Linear::from(init::linear(i, o, bias, (init, INIT_STD), device));
        Self {
            gate_proj: linear(hidden, intermediate),
            up_proj: linear(hidden, intermediate),
            down_proj: linear(intermediate, hidden),
            gelu,
        }
    }

    /// `x`: `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = self.gate_proj.forward(x.clone());
        let gate = if self.gelu {
            gelu_tanh(gate)
        } else {
            silu(gate)
        };
        let gated = gate * self.up_proj.forward(x);
        self.down_proj.forward(gated)
    }

    /// The three projections with their module names under `prefix` (`...mlp.`).
    pub fn projections(&mut self, prefix: &str) -> Vec<(String, &mut dyn Projection<B>)> {
        vec![
            (
                format!("{prefix}gate_proj"),
                &mut self.gate_proj as &mut dyn Projection<B>,
            ),
            (format!("{prefix}up_proj"), &mut self.up_proj),
            (format!("{prefix}down_proj"), &mut self.down_proj),
        ]
    }
}
