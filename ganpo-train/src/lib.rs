//! # ganpo-train
//!
//! The `ganpo` command-line tool and the code behind it:
//! - [`data`]: preference datasets (JSONL; standard, conversational and implicit-prompt formats),
//!   TRL 1.x tokenization, truncation, batching;
//! - [`config`]: the run configuration (`run.toml` + `--set key=value`);
//! - [`train`]: the GANPO trainer, evaluation, checkpoints;
//! - [`bench`]: the timed training step of a named model shape (`ganpo bench`);
//! - [`rollout`]: sampling completions, rewards, pairs from scored samples, the sampled KL;
//! - [`experiment`]: the IMDb evidence experiment's configuration and data;
//! - [`task`]: built-in tasks with an exact reward (the quickstart's synthetic sentiment language);
//! - [`io`]: atomic file writes;
//! - [`toy`]: the smallest end-to-end GANPO run, a tiny causal LM preference-trained with DPO and
//!   with DPO + GANPO from the same start, on a synthetic task, on any compiled-in backend.

pub mod bench;
pub mod config;
pub mod data;
pub mod experiment;
pub mod io;
pub mod rollout;
pub mod task;
pub mod toy;
pub mod train;
