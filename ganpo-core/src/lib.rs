//! # ganpo-core
//!
//! The GANPO objective for preference optimization of causal language models, generic over the
//! burn backend and free of I/O:
//!
//! - [`affine`]: linear layers as one 2-D matmul (faster than burn's broadcasting `Linear` on CPU);
//! - [`logprobs`]: summed completion log-probabilities from logits, the quantity every preference
//!   loss is built on;
//! - [`loss`]: offline preference losses with TRL's definitions and metric names (DPO `sigmoid`,
//!   `robust`, `hinge`, `ipo`, `sigmoid_norm`, SimPO, `sft`, and weighted combinations);
//! - [`spectral_norm`]: a spectrally normalized linear layer with persistent power-iteration state;
//! - [`discriminator`]: the reference `transformer` discriminator and a cheaper `mlp` one, which
//!   score a sequence of last-layer hidden states;
//! - [`ganpo`]: the latent adversarial regularizer: two discriminators (chosen / rejected), the
//!   relativistic-average "quad" losses with running means, the generator term and diagnostics;
//! - [`reward_loss`]: reward-model losses (Bradley-Terry, cross-entropy) as TRL's `RewardTrainer`
//!   defines them;
//! - [`backend`]: run-time choice among the compiled-in backends (`cpu`, `wgpu`, `cuda`).
//!
//! `docs/ganpo.md` states the objective and its settings; `docs/architecture.md` shows how the
//! pieces meet in one training step.

pub mod activation;
pub mod affine;
pub mod attention;
pub mod backend;
pub mod discriminator;
pub mod ganpo;
mod init;
pub mod logprobs;
pub mod loss;
pub mod metrics;
pub mod mode;
pub mod reward_loss;
pub mod spectral_norm;

pub use discriminator::{Discriminator, DiscriminatorConfig};
pub use ganpo::{Ganpo, GanpoConfig, MeanMode, Pooling};
pub use logprobs::{
    ScoredRows, SequenceLogps, TokenStatistics, next_token_targets, sequence_logps, token_logps,
};
pub use loss::{
    LossError, LossKind, PairLengths, PreferenceInputs, PreferenceLoss, UnpairedInputs,
};
pub use mode::Mode;
