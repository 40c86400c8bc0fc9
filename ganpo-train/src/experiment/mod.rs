//! The IMDb evidence experiment (`ganpo experiment run`): GANPO against DPO and SimPO on a real
//! pretrained model, with a learned sentiment reward, label noise, temperatures and a shifted
//! prompt distribution.
//!
//! - [`config`]: [`ExperimentConfig`], the experiment file and its `--quick` overrides;
//! - [`reviews`]: the IMDb / Rotten Tomatoes reviews and the prompts made from them;
//! - [`stats`]: means with 95% confidence intervals over seeds.

pub mod config;
pub mod reviews;
pub mod stats;

pub use config::{ExperimentConfig, expand_assets};
pub use reviews::{Review, Source, read_reviews};
