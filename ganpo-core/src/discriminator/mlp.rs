//! A cheap discriminator: pool the latents, then a spectral-normalized MLP.

use crate::activation::gelu;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::pooling::masked_mean;
use crate::mode::{Mode, dropout};
use crate::spectral_norm::SnLinear;

/// Settings of [`MlpDiscriminator`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpDiscriminatorConfig {
    /// Width of the hidden layers.
    pub hidden: usize,
    /// Number of hidden layers (each `Linear + GELU + dropout`) before the output layer.
    pub layers: usize,
    /// Dropout after each hidden layer, train mode only.
    pub dropout: f64,
}

impl Default for MlpDiscriminatorConfig {
    fn default() -> Self {
        Self {
            hidden: 512,
            layers: 2,
            dropout: 0.1,
        }
    }
}

impl MlpDiscriminatorConfig {
    /// Builds the discriminator for latents of width `d_model`.
    pub fn init<B: Backend>(&self, d_model: usize, device: &B::Device) -> MlpDiscriminator<B> {
        let mut widths = vec![d_model];
        widths.extend(std::iter::repeat_n(self.hidden, self.layers));
        widths.push(1);
        MlpDiscriminator {
            layers: widths
                .windows(2)
                .map(|w| SnLinear::new(w[0], w[1], true, device))
                .collect(),
            dropout: self.dropout,
        }
    }
}

/// Masked mean pool over positions, then `[SN-Linear, GELU, dropout]*` and an SN-Linear to 1.
#[derive(Module, Debug)]
pub struct MlpDiscriminator<B: Backend> {
    /// The spectral-normalized layers, the last one to a single logit.
    pub layers: Vec<SnLinear<B>>,
    dropout: f64,
}

impl<B: Backend> MlpDiscriminator<B> {
    /// Scores `latents` (`[n, seq, d_model]`), `[n]`; see [`super::Discriminator::forward`].
    pub fn forward(
        &self,
        latents: Tensor<B, 3>,
        mask: Option<Tensor<B, 2, Bool>>,
        mode: Mode,
    ) -> Tensor<B, 1> {
        let n = latents.dims()[0];
        let mut x = masked_mean(latents, mask);
        let last = self.layers.len() - 1;
        for layer in &self.layers[..last] {
            x = dropout(gelu(layer.forward(x, mode)), self.dropout, mode);
        }
        self.layers[last].forward(x, mode).reshape([n])
    }
}
