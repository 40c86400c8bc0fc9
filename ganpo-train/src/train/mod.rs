//! Training: the GANPO step, its schedule and clipping, evaluation, checkpoints.
//!
//! - [`trainer`]: [`Trainer`], the loop, evaluation, checkpoints and resume;
//! - [`step`]: [`Trainer::step`] as named phases (reference, discriminators, policy, optimizer);
//! - [`objective`]: model passes, the base loss with TRL's metrics, the latents;
//! - [`checkpointing`], [`chunked_logps`]: activation checkpointing and chunked log-probs, each
//!   a pass that keeps a leaf and a backward pass that recomputes from it;
//! - [`reference`]: the reference's outputs, live or cached before training;
//! - [`ref_sync`]: TR-DPO's synced reference (`train.sync_ref_model`);
//! - [`eval`]: held-out metrics as TRL's `evaluate()` reports them;
//! - [`precision`]: mixed precision (compute dtype, f32 master weights);
//! - [`profile`]: per-phase wall time of steps, for benchmarks;
//! - [`schedule`], [`clip`]: warm-up + decay, global-norm clipping;
//! - [`sft`]: supervised fine-tuning (next-token cross-entropy), the step before preferences;
//! - [`checkpoint`], [`state`]: atomic checkpoints and what resuming needs;
//! - [`metrics`]: averaging metrics between log lines;
//! - `data_parallel` (feature `collective`): one run on several devices (replicas,
//!   burn-collective's all-reduce); `collective.rs` holds what the replicas synchronise;
//!   `cluster` (same feature): a run across several processes or machines.

pub mod checkpoint;
pub mod checkpointing;
pub mod chunked_logps;
pub mod clip;
#[cfg(feature = "collective")]
pub mod cluster;
mod collective;
#[cfg(feature = "collective")]
pub mod data_parallel;
pub mod eval;
pub mod metrics;
pub mod objective;
mod params;
pub mod precision;
pub mod profile;
pub mod ref_sync;
pub mod reference;
pub mod schedule;
pub mod sft;
pub mod state;
pub mod step;
pub mod trainer;

pub use clip::clip_grad_norm;
#[cfg(feature = "collective")]
pub use cluster::Cluster;
pub use eval::{EvalSettings, evaluate};
pub use params::{param_bytes, trainable_params};
pub use schedule::{lr_multiplier, warmup_steps};
pub use sft::{SftConfig, SftExample, SftStep, sft};
pub use state::TrainState;
pub use trainer::{LogEntry, TrainError, Trainer};
