//! Grouped-query self-attention with rotary positions (HF names: `q_proj`, `k_proj`, `v_proj`,
//! `o_proj`, and the per-head `q_norm`, `k_norm` of Qwen3 and Gemma 3), shared by the Llama
//! family and Gemma.

use burn::prelude::*;
use ganpo_core::attention::{Scores, attention};

use crate::nn::init::{self, INIT_STD, Init};
use crate::nn::{LayerCache, Linear, Projection, RmsNorm, RotaryTables};

/// The shape of one attention layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionSpec {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Query heads.
    pub heads: usize,
    /// Key / value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Bias on the q, k, v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    /// Per-head RMS norm on queries and keys, with this epsilon (Qwen3, Gemma 3).
    pub qk_norm_eps: Option<f64>,
    /// Gemma's `(1 + w)` norms (zero-initialized weights) rather than `w`.
    pub unit_offset_norms: bool,
    /// How scores are scaled and capped.
    pub scores: Scores,
}

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
    scores: Scores,
}

impl<B: Backend> Attention<B> {
    /// Randomly initialized attention of shape `c`, drawn by `init`.
    pub fn new(c: &AttentionSpec, init: Init, device: &B::Device) -> Self {
        let (h, kv, d) = (c.heads, c.kv_heads, c.head_dim);
        let linear = |i, o, bias| Linear::from(init::linear(i, o, bias, (init, INIT_STD), device));
        let norm = || {
            c.qk_norm_eps
                .map(|eps| RmsNorm::with_offset(d, eps, c.unit_offset_norms, device))
        };
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
            scores: c.scores,
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
        let q = heads(self.q_proj.forward(x.clone()), h, &self.q_norm);
        let k = heads(self.k_proj.forward(x.clone()), kv, &self.k_norm);
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, s, kv, d])
            .swap_dims(1, 2);
        let (k, v) = match cache {
            Some(cache) => cache.extend(k, v),
            None => (k, v),
        };
        let context = attention(q, k, v, Some(masked), self.scores);
        let context = context.swap_dims(1, 2).reshape([b, s, h * d]);
        self.o_proj.forward(context)
    }

    /// The four projections with their module names under `prefix` (`...self_attn.`).
    pub fn projections(&mut self, prefix: &str) -> Vec<(String, &mut dyn Projection<B>)> {
        vec![
            (
                format!("{prefix}q_proj"),
                &mut self.q_proj as &mut dyn Projection<B>,
            ),
            (format!("{prefix}k_proj"), &mut self.k_proj),
            (format!("{prefix}v_proj"), &mut self.v_proj),
            (format!("{prefix}o_proj"), &mut self.o_proj),
        ]
    }
}
