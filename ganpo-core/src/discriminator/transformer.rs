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
    ///
    /// With a mask, only the masked positions are computed: they are gathered into a
    /// `[n, longest row, d_model]` block and keep their learned positions, so the result is the
    /// full-sequence computation's (unmasked positions are neither attended to nor pooled) at a
    /// fraction of the cost when the mask covers the completion only. Positions at or beyond
    /// `max_positions` are cut, as without a mask.
    pub fn forward(
        &self,
        latents: Tensor<B, 3>,
        mask: Option<Tensor<B, 2, Bool>>,
        mode: Mode,
    ) -> Tensor<B, 1> {
        let n = latents.dims()[0];
        let [_, max_positions, h] = self.pos_embedding.dims();
        let table = self.pos_embedding.val().reshape([max_positions, h]);
        let (latents, positions, mask) = match mask {
            Some(mask) => {
                let (latents, positions, mask) = compact(latents, mask, max_positions);
                (latents, positions, Some(mask))
            }
            None => {
                let seq = latents.dims()[1].min(max_positions);
                let positions = Tensor::arange(0..seq as i64, &latents.device())
                    .reshape([1, seq])
                    .repeat_dim(0, n);
                (latents.slice(s![.., 0..seq, ..]), positions, None)
            }
        };
        let [_, len] = positions.dims();
        let positions = table
            .select(0, positions.reshape([n * len]))
            .reshape([n, len, h]);
        let mut x = self.project_in.forward(latents, mode) + positions;
        for layer in &self.layers {
            x = layer.forward(x, mask.clone(), mode);
        }
        let pooled = masked_mean(x, mask);
        let hidden = gelu(self.head[0].forward(pooled, mode));
        self.head[1].forward(hidden, mode).reshape([n])
    }
}

/// The masked positions of `latents` (`[n, seq, d]`) below `max_positions`, left-aligned into
/// `[n, len, d]` with `len` the longest row's count (at least 1), their original positions
/// (`[n, len]`) and the mask of the filled slots (`[n, len]`). Reads the mask back once.
fn compact<B: Backend>(
    latents: Tensor<B, 3>,
    mask: Tensor<B, 2, Bool>,
    max_positions: usize,
) -> (Tensor<B, 3>, Tensor<B, 2, Int>, Tensor<B, 2, Bool>) {
    let [n, seq, d] = latents.dims();
    let device = latents.device();
    let flags: Vec<bool> = mask
        .into_data()
        .convert::<bool>()
        .into_vec()
        .expect("a bool mask reads back as bools");
    let kept: Vec<Vec<usize>> = (0..n)
        .map(|r| {
            (0..seq.min(max_positions))
                .filter(|&t| flags[r * seq + t])
                .collect()
        })
        .collect();
    let len = kept.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let (mut rows, mut positions, mut filled) = (
        Vec::with_capacity(n * len),
        Vec::with_capacity(n * len),
        Vec::with_capacity(n * len),
    );
    for (r, ts) in kept.iter().enumerate() {
        for slot in 0..len {
            // Empty slots repeat position 0 of their row; they are masked out of attention and
            // pooling, so their values never reach the score.
            let t = ts.get(slot).copied().unwrap_or(0);
            rows.push((r * seq + t) as i64);
            positions.push(t as i64);
            filled.push(slot < ts.len());
        }
    }
    let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n * len]), &device);
    (
        latents
            .reshape([n * seq, d])
            .select(0, rows)
            .reshape([n, len, d]),
        Tensor::from_data(TensorData::new(positions, [n, len]), &device),
        Tensor::from_data(TensorData::new(filled, [n, len]), &device),
    )
}
