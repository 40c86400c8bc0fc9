//! Settings of a reward-model run and what it reports.

use serde::{Deserialize, Serialize};

/// Which parameters training updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trainable {
    /// The head only: the backbone is frozen, so each text's pooled hidden state is computed
    /// once and the epochs cost almost nothing (a linear probe).
    Head,
    /// Every parameter (full fine-tuning).
    All,
}

impl std::str::FromStr for Trainable {
    type Err = String;

    /// `head` or `all`, as `--trainable` and the experiment file spell them.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "head" => Ok(Self::Head),
            "all" => Ok(Self::All),
            other => Err(format!(
                "unknown trainable `{other}`: expected `head` or `all`"
            )),
        }
    }
}

/// Settings of a reward-model run (AdamW with PyTorch's defaults, warm-up then cosine decay).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Examples (texts or pairs) per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Fraction of the steps spent warming up.
    pub warmup_ratio: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clipping.
    pub max_grad_norm: Option<f64>,
    /// TRL's `center_rewards_coefficient` (pairs only): pulls rewards towards zero mean.
    pub center_rewards_coefficient: Option<f64>,
    /// What is trained.
    pub trainable: Trainable,
    /// Seed of the data order.
    pub seed: u64,
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 16,
            lr: 1e-4,
            warmup_ratio: 0.05,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
            center_rewards_coefficient: None,
            trainable: Trainable::All,
            seed: 0,
        }
    }
}

/// What one step reports (TRL's names where TRL has them).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct RewardStep {
    /// 1-based step.
    pub step: usize,
    /// Steps of the whole run.
    pub total: usize,
    /// The loss of the batch.
    pub loss: f64,
    /// Share of the batch ranked or classified correctly.
    pub accuracy: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub learning_rate: f64,
}

/// Held-out metrics: loss and accuracy (pairs ranked, or texts classified, correctly), the mean
/// reward, and for pairs the mean reward margin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardEval {
    /// Mean loss.
    pub loss: f64,
    /// Share correct.
    pub accuracy: f64,
    /// Mean reward of every text scored.
    pub mean_reward: f64,
    /// Mean `reward(chosen) - reward(rejected)` (0 for labelled texts).
    pub margin: f64,
    /// Examples evaluated.
    pub n: usize,
}
