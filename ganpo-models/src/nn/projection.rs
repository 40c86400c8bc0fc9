//! The projections of a decoder layer (`q_proj`, `c_attn`, ...), with an optional LoRA adapter.
//!
//! A projection holds its base `weight` (`[in, out]`, burn's layout) and `bias`, and, once
//! [`crate::lora`] attaches one, PEFT's two adapter matrices under PEFT's names: `lora_A`
//! (`in -> r`) and `lora_B` (`r -> out`), so `q_proj.lora_A.weight` is both the module path and
//! the tensor name in `adapter_model.safetensors`. The output is
//! `x W + b + scale * dropout(x) A B`; with the adapter switched off ([`LoraState::enabled`]) it
//! is exactly `x W + b`, so the reference model is the policy with its adapters off.

// PEFT's tensor names (`lora_A`, `lora_B`) are field names here, so loading needs no remapping.
#![allow(non_snake_case)]

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use ganpo_core::affine::affine;

/// How an attached adapter is applied (not saved with the weights; PEFT keeps it in
/// `adapter_config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraState {
    /// `alpha / r` (or `alpha / sqrt(r)` with rsLoRA).
    pub scale: f64,
    /// Dropout on the adapter's input while training.
    pub dropout: f64,
    /// Whether the adapter is added to the output.
    pub enabled: bool,
}

impl Default for LoraState {
    fn default() -> Self {
        Self {
            scale: 1.0,
            dropout: 0.0,
            enabled: true,
        }
    }
}

/// Mutable views of a projection's parameters, whatever its checkpoint layout.
pub struct ProjectionParts<'a, B: Backend> {
    /// The base weight, `[in, out]`.
    pub weight: &'a mut Param<Tensor<B, 2>>,
    /// The adapter's down-projection `in -> r`.
    pub lora_A: &'a mut Option<burn::nn::Linear<B>>,
    /// The adapter's up-projection `r -> out`.
    pub lora_B: &'a mut Option<burn::nn::Linear<B>>,
    /// How the adapter is applied.
    pub state: &'a mut LoraState,
}

/// A linear map that can carry a LoRA adapter: [`Linear`] and GPT-2's `Conv1D`.
pub trait Projection<B: Backend> {
    /// The parameters, to attach, switch, merge or read an adapter.
    fn parts(&mut self) -> ProjectionParts<'_, B>;
}

/// A linear layer in PyTorch's `nn.Linear` checkpoint layout (`[out, in]` on disk, transposed
/// on load because the struct is named `Linear`), optionally adapted.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// LoRA down-projection (PEFT's `lora_A`), when adapted.
    pub lora_A: Option<burn::nn::Linear<B>>,
    /// LoRA up-projection (PEFT's `lora_B`), when adapted.
    pub lora_B: Option<burn::nn::Linear<B>>,
    /// How the adapter is applied.
    pub lora: LoraState,
}

impl<B: Backend> From<burn::nn::Linear<B>> for Linear<B> {
    fn from(layer: burn::nn::Linear<B>) -> Self {
        Self {
            weight: layer.weight,
            bias: layer.bias,
            lora_A: None,
            lora_B: None,
            lora: LoraState::default(),
        }
    }
}

impl<B: Backend> Linear<B> {
    /// `x W + b`, plus the adapter's `scale * dropout(x) A B` when one is attached and on.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let base = affine(
            x.clone(),
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
        );
        with_adapter(base, x, &self.lora_A, &self.lora_B, &self.lora)
    }
}

impl<B: Backend> Projection<B> for Linear<B> {
    fn parts(&mut self) -> ProjectionParts<'_, B> {
        ProjectionParts {
            weight: &mut self.weight,
            lora_A: &mut self.lora_A,
            lora_B: &mut self.lora_B,
            state: &mut self.lora,
        }
    }
}

/// `base + scale * dropout(x) A B` when both adapter matrices are present and `state` is on;
/// `base` unchanged otherwise. Adapters in another dtype than `x` are cast to it.
pub fn with_adapter<B: Backend, const D: usize>(
    base: Tensor<B, D>,
    x: Tensor<B, D>,
    lora_A: &Option<burn::nn::Linear<B>>,
    lora_B: &Option<burn::nn::Linear<B>>,
    state: &LoraState,
) -> Tensor<B, D> {
    let (Some(a), Some(b)) = (lora_A, lora_B) else {
        return base;
    };
    if !state.enabled {
        return base;
    }
    let x = if state.dropout > 0.0 {
        let dropout: Dropout = DropoutConfig::new(state.dropout).init();
        dropout.forward(x)
    } else {
        x
    };
    // A trainer may hold the frozen base in a compute dtype and the adapters in f32: they are
    // then run in the base's dtype.
    let dtype = x.dtype();
    let weight = |w: Tensor<B, 2>| if w.dtype() == dtype { w } else { w.cast(dtype) };
    let down = affine(x, weight(a.weight.val()), None);
    let up = affine(down, weight(b.weight.val()), None);
    base + up.mul_scalar(state.scale)
}

/// GPT-2's linear layer: `y = x W + b` with `W` stored `[in, out]` (not transposed on load:
/// the struct is not named `Linear`), optionally with a LoRA adapter (PEFT's `lora_A`,
/// `lora_B`, which are `nn.Linear`s even on a `Conv1D`).
#[derive(Module, Debug)]
pub struct Conv1D<B: Backend> {
    /// `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Param<Tensor<B, 1>>,
    /// LoRA down-projection, when adapted.
    pub lora_A: Option<burn::nn::Linear<B>>,
    /// LoRA up-projection, when adapted.
    pub lora_B: Option<burn::nn::Linear<B>>,
    /// How the adapter is applied.
    pub lora: LoraState,
}

impl<B: Backend> Conv1D<B> {
    pub(crate) fn new(d_in: usize, d_out: usize, std: f64, device: &B::Device) -> Self {
        let w = Tensor::random(
            [d_in, d_out],
            burn::tensor::Distribution::Normal(0.0, std),
            device,
        );
        Self {
            weight: Param::from_tensor(w),
            bias: Param::from_tensor(Tensor::zeros([d_out], device)),
            lora_A: None,
            lora_B: None,
            lora: LoraState::default(),
        }
    }

    /// `x W + b`, plus the adapter's output when one is attached and on.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let base = affine(x.clone(), self.weight.val(), Some(self.bias.val()));
        with_adapter(base, x, &self.lora_A, &self.lora_B, &self.lora)
    }
}

impl<B: Backend> Projection<B> for Conv1D<B> {
    fn parts(&mut self) -> ProjectionParts<'_, B> {
        ProjectionParts {
            weight: &mut self.weight,
            lora_A: &mut self.lora_A,
            lora_B: &mut self.lora_B,
            state: &mut self.lora,
        }
    }
}
