//! Reward models and reward functions, in one place: what a reward model is fitted to
//! ([`data`], read from files by [`rows`]), its training as TRL's `RewardTrainer` trains it
//! ([`train`], settings and reports in [`config`], resumable through [`checkpoint`]), a trained
//! one as a scorer ([`model`]), and the built-in exact rewards ([`function`]).
//!
//! - [`data`]: [`RewardData`] (labelled texts or pairs as token ids), [`reward_ids`], batches;
//! - [`rows`]: [`load_reward_data`], reward-model files checked row by row;
//! - [`config`]: [`RewardConfig`], [`Trainable`], [`RewardStep`], [`RewardEval`];
//! - [`train`]: [`train_reward_model`], [`evaluate_reward_model`];
//! - [`checkpoint`]: [`RewardCheckpoints`], periodic checkpoints and exact resume;
//! - [`model`]: [`RewardModel`], a trained classifier as a reward (`model:DIR`);
//! - [`function`]: [`Reward`], reward functions by name (`oracle:sentiment`).

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod function;
pub mod model;
pub mod rows;
pub mod train;

pub use checkpoint::RewardCheckpoints;
pub use config::{RewardConfig, RewardEval, RewardStep, Trainable};
pub use data::{RewardData, RewardPair, reward_ids};
pub use function::Reward;
pub use model::RewardModel;
pub use rows::{LabelNames, load_reward_data};
pub use train::{evaluate_reward_model, train_reward_model};
