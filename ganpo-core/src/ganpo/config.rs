//! Settings of the GANPO regularizer.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Ganpo, RunningMeans};
use crate::discriminator::DiscriminatorConfig;

/// Which positions of the latents the discriminators attend to and pool over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Completion (response) tokens only.
    Completion,
    /// Every non-padding token, prompt included.
    #[default]
    Sequence,
    /// Every position, padding included (what the reference trainer does).
    None,
}

impl Pooling {
    /// The mask this pooling uses for one side of a batch, from its attention mask (true = real
    /// token) and completion mask (true = completion token); `None` = every position.
    pub fn select<B: Backend>(
        self,
        attention_mask: Tensor<B, 2, Bool>,
        completion_mask: Tensor<B, 2, Bool>,
    ) -> Option<Tensor<B, 2, Bool>> {
        match self {
            Pooling::Completion => Some(completion_mask),
            Pooling::Sequence => Some(attention_mask),
            Pooling::None => None,
        }
    }
}

/// How the relativistic-average terms estimate the mean score of the other set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeanMode {
    /// Exponential moving averages of batch-mean scores (`m <- momentum * m + (1 - momentum) *
    /// batch_mean`, initialised to the first batch mean), updated in every discriminator pass,
    /// used as constants: the reference trainer's behaviour.
    #[default]
    Ema,
    /// Plain means over the current batch, part of the graph: the paper's formula.
    Batch,
}

/// Settings of the GANPO regularizer; the defaults are the reference's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GanpoConfig {
    /// Discriminator architecture (the same for `D_c` and `D_r`).
    pub discriminator: DiscriminatorConfig,
    /// `lambda`: weight of the generator term in the policy loss.
    pub adv_weight: f64,
    /// Positions the discriminators see.
    pub pooling: Pooling,
    /// Running (`ema`) or batch means.
    pub mean: MeanMode,
    /// EMA momentum, in `[0, 1)`.
    pub momentum: f64,
    /// Start the discriminators from the official trainer's checkpoints in this folder
    /// (`disc_chosen.pt` / `disc_rejected.pt`, or `.safetensors`); the trainer reads them
    /// (`ganpo_train::official`). `None`: freshly initialized.
    pub init_from: Option<std::path::PathBuf>,
}

impl Default for GanpoConfig {
    fn default() -> Self {
        Self {
            discriminator: DiscriminatorConfig::default(),
            adv_weight: 1.0,
            pooling: Pooling::default(),
            mean: MeanMode::default(),
            momentum: 0.9,
            init_from: None,
        }
    }
}

/// A setting of [`GanpoConfig`] outside its valid range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid GANPO setting `{key}` = {value}: expected {expected}")]
pub struct ConfigError {
    /// The config key, dotted (`discriminator.heads`).
    pub key: &'static str,
    /// The value given.
    pub value: String,
    /// What is expected instead.
    pub expected: &'static str,
}

impl GanpoConfig {
    /// Checks every setting; call it on configs that come from users before [`GanpoConfig::init`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, value: &dyn std::fmt::Display, expected| {
            Err(ConfigError {
                key,
                value: value.to_string(),
                expected,
            })
        };
        if !(self.adv_weight.is_finite() && self.adv_weight >= 0.0) {
            return err("adv_weight", &self.adv_weight, "a finite number >= 0");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return err("momentum", &self.momentum, "a value in [0, 1)");
        }
        let (hidden, dropout) = match &self.discriminator {
            DiscriminatorConfig::Transformer(t) => {
                if t.heads == 0 || !t.hidden.is_multiple_of(t.heads) {
                    return err(
                        "discriminator.heads",
                        &t.heads,
                        "a divisor of discriminator.hidden",
                    );
                }
                if t.layers == 0 || t.ff == 0 || t.max_positions == 0 {
                    return err(
                        "discriminator.layers/ff/max_positions",
                        &0,
                        "positive sizes",
                    );
                }
                (t.hidden, t.dropout)
            }
            DiscriminatorConfig::Mlp(m) => (m.hidden, m.dropout),
        };
        if hidden == 0 {
            return err("discriminator.hidden", &hidden, "a positive width");
        }
        if !(0.0..1.0).contains(&dropout) {
            return err("discriminator.dropout", &dropout, "a probability in [0, 1)");
        }
        Ok(())
    }

    /// Builds the two discriminators for latents of width `d_model`, and empty running means.
    ///
    /// # Panics
    /// If a setting is invalid (see [`GanpoConfig::validate`]).
    pub fn init<B: Backend>(&self, d_model: usize, device: &B::Device) -> Ganpo<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        Ganpo {
            chosen: self.discriminator.init(d_model, device),
            rejected: self.discriminator.init(d_model, device),
            means: RunningMeans::new(device),
            adv_weight: self.adv_weight,
            momentum: self.momentum,
            batch_means: self.mean == MeanMode::Batch,
        }
    }
}
