//! Where a run is: everything besides weights and optimizer moments that resuming needs.

use serde::{Deserialize, Serialize};

/// Progress counters of a run, saved in every checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken (or skipped for a non-finite value).
    pub step: usize,
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Micro-batches of the current epoch already consumed.
    pub batch_in_epoch: usize,
    /// Consecutive steps skipped for a non-finite loss or gradient.
    pub nonfinite_consecutive: usize,
    /// All steps skipped for a non-finite loss or gradient.
    pub nonfinite_total: usize,
    /// Real (non-padding) tokens trained on.
    pub tokens: u64,
}
