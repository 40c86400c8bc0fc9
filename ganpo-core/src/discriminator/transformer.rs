//! The reference GANPO discriminator.

use crate::activation::gelu;
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use super::encoder::EncoderLayer;
use super::pooling::masked_mean;
use crate::mode::Mode;
use crate::spectral_norm::SnLinear;

/// Settings of [`TransformerDiscriminator`]; the defaults are the reference's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransformerDiscriminatorConfig {
    /// Width inside the discriminator.
    pub hidden: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub ff: usize,
    /// Dropout probability (attention weights, residual branches, feed-forward), train mode only.
    pub dropout: f64,
    /// Learned positions; longer inputs are cut to this many positions.
    pub max_positions: usize,
}

impl Default for TransformerDiscriminatorConfig {
    fn default() -> Self {
        Self {
            hidden: 512,
            layers: 2,
            heads: 8,
            ff: 2048,
            dropout: 0.1,
            max_positions: 2048,
        }
    }
}

impl TransformerDiscriminatorConfig {
    /// Builds the discriminator for latents of width `d_model`: Xavier-uniform weights, zero
    /// biases, positions drawn from N(0, 0.02).
    pub fn init<B: Backend>(
        &self,
        d_model: usize,
        device: &B::Device,
    ) -> TransformerDiscriminator<B> {
        let h = self.hidden;
        TransformerDiscriminator {
            project_in: SnLinear::new(d_model, h, true, device),
            pos_embedding: Param::from_tensor(Tensor::random(
                [1, self.max_positions, h],
                Distribution::Normal(0.0, 0.02),
                device,
            )),
            layers: (0..self.layers)
                .map(|_| EncoderLayer::new(h, self.heads, self.ff, self.dropout, device))
                .collect(),
            head: vec![
                SnLinear::new(h, h, true, device),
                SnLinear::new(h, 1, true, device),
            ],
        }
    }
}

/// Spectral-normalized projection, learned positions, pre-norm encoder, masked mean, SN head.
///
/// Parameter names follow the reference PyTorch module (`project_in`, `pos_embedding`,
/// `layers.N.self_attn.in_proj_weight`, ...; its `transformer.layers` are `layers` here and its
/// `head.0` / `head.2` are `head.0` / `head.1`).
#[derive(Module, Debug)]
pub struct TransformerDiscriminator<B: Backend> {
    /// `d_model -> hidden`, spectral-normalized.
    pub project_in: SnLinear<B>,
    /// Learned positions, `[1, max_positions, hidden]`.
    pub pos_embedding: Param<Tensor<B, 3>>,
    /// Pre-norm encoder layers.
    pub layers: Vec<EncoderLayer<B>>,
    /// `hidden -> hidden`, GELU, `hidden -> 1`, both spectral-normalized.
    pub head: Vec<SnLinear<B>>,
}

impl<B: Backend> TransformerDiscriminator<B> {
    /// Scores `latents` (`[n, seq, d_model]`), `[n]`; see [`super::Discriminator::forward`].
    pub fn forward(
        &self,
        latents: Tensor<B, 3>,
        mask: Option<Tensor<B, 2, Bool>>,
        mode: Mode,
    ) -> Tensor<B, 1> {
        let [n, seq, _] = latents.dims();
        let [_, max_positions, _] = self.pos_embedding.dims();
        let keep = seq.min(max_positions);
        let (latents, mask) = if keep < seq {
            (
                latents.slice(s![.., 0..keep, ..]),
                mask.map(|m| m.slice(s![.., 0..keep])),
            )
        } else {
            (latents, mask)
        };
        let mut x = self.project_in.forward(latents, mode)
            + self.pos_embedding.val().slice(s![.., 0..keep, ..]);
        for layer in &self.layers {
            x = layer.forward(x, mask.clone(), mode);
        }
        let pooled = masked_mean(x, mask);
        let hidden = gelu(self.head[0].forward(pooled, mode));
        self.head[1].forward(hidden, mode).reshape([n])
    }
}
