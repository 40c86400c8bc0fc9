//! A pre-norm Transformer encoder layer with explicit train / eval mode.
//!
//! Same computation and parameter names as PyTorch's
//! `nn.TransformerEncoderLayer(norm_first=True, activation="gelu", batch_first=True)`:
//! `x = x + drop(attn(norm1(x)))`, `x = x + drop(linear2(drop(gelu(linear1(norm2(x))))))`, with
//! dropout also on the attention weights. Burn's own encoder applies dropout whenever autodiff is
//! on, which would make GANPO's eval-mode generator pass random; this one follows [`Mode`].

use crate::affine::{affine, linear};
use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;

use crate::activation::gelu;
use crate::attention::{Scores, attention_weights};

use crate::init::{xavier_linear, xavier_uniform};
use crate::mode::{Mode, dropout};

/// Multi-head self-attention with a packed input projection (PyTorch's `nn.MultiheadAttention`).
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// Packed query/key/value projection, `[3 * d, d]` (PyTorch layout).
    pub in_proj_weight: Param<Tensor<B, 2>>,
    /// Packed query/key/value bias, `[3 * d]`.
    pub in_proj_bias: Param<Tensor<B, 1>>,
    /// Output projection.
    pub out_proj: Linear<B>,
    n_heads: usize,
    dropout: f64,
}

impl<B: Backend> SelfAttention<B> {
    /// Xavier-uniform projections, zero biases.
    pub fn new(d: usize, n_heads: usize, dropout: f64, device: &B::Device) -> Self {
        assert!(
            d.is_multiple_of(n_heads),
            "width {d} is not divisible by {n_heads} heads"
        );
        Self {
            in_proj_weight: Param::from_tensor(xavier_uniform(3 * d, d, device)),
            in_proj_bias: Param::from_tensor(Tensor::zeros([3 * d], device)),
            out_proj: xavier_linear(d, d, device),
            n_heads,
            dropout,
        }
    }

    /// `x`: `[n, seq, d]`; `key_mask`: `[n, seq]`, true = key may be attended to.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        key_mask: Option<Tensor<B, 2, Bool>>,
        mode: Mode,
    ) -> Tensor<B, 3> {
        let [n, seq, d] = x.dims();
        let (h, dh) = (self.n_heads, d / self.n_heads);
        let qkv = affine(
            x,
            self.in_proj_weight.val().transpose(),
            Some(self.in_proj_bias.val()),
        );
        let heads = |i: usize| {
            qkv.clone()
                .slice(s![.., .., i * d..(i + 1) * d])
                .reshape([n, seq, h, dh])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (heads(0), heads(1), heads(2));
        // q is scaled before the product, as PyTorch's multi-head attention does.
        let masked = key_mask.map(|mask| {
            mask.bool_not()
                .reshape([n, 1, 1, seq])
                .expand([n, h, seq, seq])
        });
        let weights = attention_weights(q, k, masked, Scores::new(dh));
        let weights = dropout(weights, self.dropout, mode);
        let context = weights.matmul(v).swap_dims(1, 2).reshape([n, seq, d]);
        linear(&self.out_proj, context)
    }
}

/// One pre-norm encoder layer (PyTorch names: `self_attn`, `linear1`, `linear2`, `norm1`, `norm2`).
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// Self-attention block.
    pub self_attn: SelfAttention<B>,
    /// Feed-forward expansion `d -> d_ff`.
    pub linear1: Linear<B>,
    /// Feed-forward contraction `d_ff -> d`.
    pub linear2: Linear<B>,
    /// Norm before attention.
    pub norm1: LayerNorm<B>,
    /// Norm before the feed-forward block.
    pub norm2: LayerNorm<B>,
    dropout: f64,
}

impl<B: Backend> EncoderLayer<B> {
    /// A layer of width `d` with `n_heads` heads and feed-forward width `d_ff`.
    pub fn new(d: usize, n_heads: usize, d_ff: usize, dropout: f64, device: &B::Device) -> Self {
        Self {
            self_attn: SelfAttention::new(d, n_heads, dropout, device),
            linear1: xavier_linear(d, d_ff, device),
            linear2: xavier_linear(d_ff, d, device),
            norm1: LayerNormConfig::new(d).with_epsilon(1e-5).init(device),
            norm2: LayerNormConfig::new(d).with_epsilon(1e-5).init(device),
            dropout,
        }
    }

    /// `x`: `[n, seq, d]`; `key_mask`: `[n, seq]`, true = position may be attended to.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        key_mask: Option<Tensor<B, 2, Bool>>,
        mode: Mode,
    ) -> Tensor<B, 3> {
        let attn = self
            .self_attn
            .forward(self.norm1.forward(x.clone()), key_mask, mode);
        let x = x + dropout(attn, self.dropout, mode);
        let ff = gelu(linear(&self.linear1, self.norm2.forward(x.clone())));
        let ff = linear(&self.linear2, dropout(ff, self.dropout, mode));
        x + dropout(ff, self.dropout, mode)
    }
}
