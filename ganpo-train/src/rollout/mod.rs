//! What happens after (or between) trainings: sampling completions, scoring them with a reward,
//! turning scored samples into preference pairs, and measuring the sampled KL to a reference.
//!
//! - [`sample`]: [`sample_completions`], several samples per prompt, batched and seeded;
//! - [`pairs`]: [`best_worst_pairs`], chosen = best, rejected = worst, with optional label noise;
//! - [`kl`]: [`completion_logps`] and [`sampled_kl`];
//! - [`stats`]: [`MeanEstimate`], a mean with its standard error.

pub mod kl;
pub mod pairs;
pub mod sample;
pub mod stats;

pub use kl::{completion_logps, sampled_kl};
pub use pairs::{PairSettings, PairStats, best_worst_pairs};
pub use sample::{Sample, sample_completions};
pub use stats::MeanEstimate;
