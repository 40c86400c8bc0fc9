//! Grouped-query self-attention with rotary positions (HF names: `q_proj`, `k_proj`, `v_proj`,
//! `o_proj`, and Qwen3's `q_norm`, `k_norm`).

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use ganpo_core::affine::linear;

use super::LlamaConfig;
use crate::nn::init::{self, INIT_STD, Init};
use crate::nn::{LayerCache, RmsNorm, RotaryTables};

/// Fill value of masked scores: exp of it underflows to exactly 0 in f32 and bf16.
const MASKED: f64 = -1.0e9;

/// Self-attention of one decoder layer.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection `hidden -> heads * head_dim`.
    pub q_proj: Linear<B>,
    /// Key projection `hidden -> kv_heads * head_dim`.
    pub k_proj: Linear<B>,
    /// Value projection `hidden -> kv_heads * head_dim`.
    pub v_proj: Linear<B>,
    /// Output projection `heads * head_dim -> hidden`.
    pub o_proj: Linear<B>,
    /// Per-head query norm (Qwen3).
    pub q_norm: Option<RmsNorm<B>>,
    /// Per-head key norm (Qwen3).
    pub k_norm: Option<RmsNorm<B>>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

impl<B: Backend> Attention<B> {
    /// Randomly initialized attention for `c`, drawn by `init`.
    pub fn new(c: &LlamaConfig, init: Init, device: &B::Device) -> Self {
        let (h, kv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let linear = |i, o, bias| init::linear(i, o, bias, (init, INIT_STD), device);
        let norm = || c.qk_norm.then(|| RmsNorm::new(d, c.rms_norm_eps, device));
        Self {
            q_proj: linear(c.hidden_size, h * d, c.qkv_bias),
            k_proj: linear(c.hidden_size, kv * d, c.qkv_bias),
            v_proj: linear(c.hidden_size, kv * d, c.qkv_bias),
            o_proj: linear(h * d, c.hidden_size, c.o_bias),
            q_norm: norm(),
            k_norm: norm(),
            n_heads: h,
            n_kv_heads: kv,
            head_dim: d,
        }
    }

    /// `x`: `[batch, seq, hidden]`; `masked`: `[batch, 1, seq, keys]`, true where a query may
    /// not see a key; `rotary`: the tables of the new positions; `cache`: the keys and values
    /// of earlier positions, extended with these (`keys` = cached + `seq`).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        masked: Tensor<B, 4, Bool>,
        rotary: &RotaryTables<B>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (h, kv, d) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let heads = |t: Tensor<B, 3>, n: usize, norm: &Option<RmsNorm<B>>| {
            let t = t.reshape([b, s, n, d]);
            let t = match norm {
                Some(norm) => norm.forward(t),
                None => t,
            };
            rotary.apply(t).swap_dims(1, 2)
        };
        let q = heads(linear(&self.q_proj, x.clone()), h, &self.q_norm);
        let k = heads(linear(&self.k_proj, x.clone()), kv, &self.k_norm);
        let v = linear(&self.v_proj, x)
            .reshape([b, s, kv, d])
            .swap_dims(1, 2);
        let (k, v) = match cache {
            Some(cache) => cache.extend(k, v),
            None => (k, v),
        };
        let t = k.dims()[2];
        // Grouped-query attention: query head i uses key/value head i / (h / kv), as HF repeat_kv.
        let repeat = |x: Tensor<B, 4>| {
            if kv == h {
                x
            } else {
                x.unsqueeze_dim::<5>(2)
                    .expand([b, kv, h / kv, t, d])
                    .reshape([b, h, t, d])
            }
        };
        let (k, v) = (repeat(k), repeat(v));
        // The scale on q ([.., s, d]) rather than on the scores ([.., s, t]): one pass over s x d
        // elements instead of s x t, forward and backward (exact for HF's power-of-two head dims).
        let scores = (q / (d as f64).sqrt()).matmul(k.swap_dims(2, 3));
        let weights = softmax(scores.mask_fill(masked, MASKED), 3);
        let context = weights.matmul(v).swap_dims(1, 2).reshape([b, s, h * d]);
        linear(&self.o_proj, context)
    }
}
