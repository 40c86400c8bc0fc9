//! Running means of discriminator scores, the "average" of the relativistic-average losses.

use burn::module::RunningState;
use burn::prelude::*;

/// Six exponential moving averages of batch-mean scores, in this order:
/// `m_c[R+]`, `m_c[R-]`, `m_c[P+]`, `m_r[R+]`, `m_r[R-]`, `m_r[P-]`.
///
/// They live on the device (updating them needs no synchronization) and are module state, saved
/// with the [`super::Ganpo`] record.
#[derive(Module, Debug)]
pub struct RunningMeans<B: Backend> {
    /// The six means, `[6]`.
    pub values: RunningState<Tensor<B, 1>>,
    /// How many updates have happened, `[1]` (0 = the next batch initialises the means).
    pub updates: RunningState<Tensor<B, 1>>,
}

/// Index of `m_c[R+]` in [`RunningMeans::values`].
pub const C_REF_CHOSEN: usize = 0;
/// Index of `m_c[R-]`.
pub const C_REF_REJECTED: usize = 1;
/// Index of `m_c[P+]`.
pub const C_POLICY_CHOSEN: usize = 2;
/// Index of `m_r[R+]`.
pub const R_REF_CHOSEN: usize = 3;
/// Index of `m_r[R-]`.
pub const R_REF_REJECTED: usize = 4;
/// Index of `m_r[P-]`.
pub const R_POLICY_REJECTED: usize = 5;

impl<B: Backend> RunningMeans<B> {
    /// Zero means, no updates yet.
    pub fn new(device: &B::Device) -> Self {
        Self {
            values: RunningState::new(Tensor::zeros([6], device)),
            updates: RunningState::new(Tensor::zeros([1], device)),
        }
    }

    /// Blends the batch means (`[6]`, same order) in with `momentum` (or takes them as they are on
    /// the first update) and returns the new means, detached.
    pub fn update(&self, batch: Tensor<B, 1>, momentum: f64) -> Tensor<B, 1> {
        let old = self.values.value_sync().detach();
        let updates = self.updates.value_sync().detach();
        let w = updates.clone().greater_elem(0.0).float() * momentum;
        let new = old * w.clone() + batch.detach() * w.neg().add_scalar(1.0);
        self.values.update(new.clone());
        self.updates.update(updates.add_scalar(1.0));
        new
    }

    /// The current means, `[6]`.
    pub fn current(&self) -> Tensor<B, 1> {
        self.values.value_sync().detach()
    }

    /// Number of updates so far (one device synchronization).
    pub fn update_count(&self) -> u64 {
        self.updates.value_sync().into_scalar().elem::<f64>() as u64
    }
}
