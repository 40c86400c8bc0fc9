//! # ganpo-train
//!
//! The ganpo trainer as a library, for the `ganpo` binary (crate `ganpo-cli`) and for Burn
//! applications that embed it. It has no command-line, plotting, progress-bar, HTTP or Parquet
//! dependency: `.parquet` files need the `parquet` feature, downloads from the Hugging Face Hub
//! the `hub` feature (what is already in the Hugging Face cache is read without it).
//! - [`data`]: preference datasets (JSONL; standard, conversational and implicit-prompt formats),
//!   TRL 1.x tokenization, truncation, batching;
//! - [`config`]: the run configuration (`run.toml` + `--set key=value`);
//! - [`train`]: the GANPO trainer, evaluation, checkpoints;
//! - [`bench`]: the timed training step of a named model shape (`ganpo bench`);
//! - [`rollout`]: sampling completions, pairs from scored samples, the sampled KL;
//! - [`reward`]: reward models (data, training, checkpoints, scoring) and reward functions;
//! - [`task`]: built-in tasks with an exact reward (the quickstart's synthetic sentiment language);
//! - [`hub`]: models and datasets by Hub id, in the cache Python's `huggingface_hub` shares;
//! - [`io`]: atomic file writes;
//! - [`toy`]: the smallest end-to-end GANPO run, a tiny causal LM preference-trained with DPO and
//!   with DPO + GANPO from the same start, on a synthetic task, on any compiled-in backend.

pub mod bench;
pub mod config;
pub mod data;
pub mod hub;
pub mod io;
pub mod official;
pub mod reward;
pub mod rollout;
pub mod task;
pub mod toy;
pub mod train;
