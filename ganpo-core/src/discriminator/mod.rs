//! Discriminators: score a sequence of last-layer hidden states with one logit.
//!
//! GANPO trains two of them (chosen / rejected) to tell the policy's latents from the reference
//! model's. Two architectures:
//! - [`TransformerDiscriminator`], the reference one: spectral-normalized input projection,
//!   learned positions, pre-norm Transformer encoder, masked mean pooling, spectral-normalized
//!   MLP head (about 9.5M parameters for `d_model = 4096`);
//! - [`MlpDiscriminator`]: masked mean pooling first, then a spectral-normalized MLP; much
//!   cheaper, blind to token order.

mod encoder;
mod mlp;
mod pooling;
mod transformer;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use encoder::{EncoderLayer, SelfAttention};
pub use mlp::{MlpDiscriminator, MlpDiscriminatorConfig};
pub use pooling::masked_mean;
pub use transformer::{TransformerDiscriminator, TransformerDiscriminatorConfig};

use crate::mode::Mode;

/// Which discriminator to build, with its settings (serde: `kind = "transformer" | "mlp"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DiscriminatorConfig {
    /// The reference architecture.
    Transformer(TransformerDiscriminatorConfig),
    /// Pool, then a spectral-normalized MLP.
    Mlp(MlpDiscriminatorConfig),
}

impl Default for DiscriminatorConfig {
    fn default() -> Self {
        DiscriminatorConfig::Transformer(TransformerDiscriminatorConfig::default())
    }
}

impl DiscriminatorConfig {
    /// Builds a discriminator for latents of width `d_model`.
    pub fn init<B: Backend>(&self, d_model: usize, device: &B::Device) -> Discriminator<B> {
        match self {
            DiscriminatorConfig::Transformer(c) => {
                Discriminator::Transformer(c.init(d_model, device))
            }
            DiscriminatorConfig::Mlp(c) => Discriminator::Mlp(c.init(d_model, device)),
        }
    }
}

/// A discriminator of either architecture.
// Built twice per run and moved by value through optimizer steps; boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Discriminator<B: Backend> {
    /// See [`TransformerDiscriminator`].
    Transformer(TransformerDiscriminator<B>),
    /// See [`MlpDiscriminator`].
    Mlp(MlpDiscriminator<B>),
}

impl<B: Backend> Discriminator<B> {
    /// Scores each sequence of `latents` (`[n, seq, d_model]`), one logit per sequence, `[n]`.
    ///
    /// `mask` (`[n, seq]`, true = position counts) restricts attention and pooling to the chosen
    /// positions; with `None` every position counts. Positions outside the mask never change a
    /// score.
    pub fn forward(
        &self,
        latents: Tensor<B, 3>,
        mask: Option<Tensor<B, 2, Bool>>,
        mode: Mode,
    ) -> Tensor<B, 1> {
        match self {
            Discriminator::Transformer(d) => d.forward(latents, mask, mode),
            Discriminator::Mlp(d) => d.forward(latents, mask, mode),
        }
    }
}
