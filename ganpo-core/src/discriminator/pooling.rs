//! Masked mean pooling over sequence positions.

use burn::prelude::*;

/// Mean of `x` (`[n, seq, d]`) over the positions where `mask` (`[n, seq]`) is true, `[n, d]`;
/// the plain mean over all positions when `mask` is `None`.
///
/// A row with no true position pools to zeros (the count is clamped to `1e-9`, as in the
/// reference). Positions outside the mask contribute exactly nothing, whatever their values, as
/// long as they are finite.
pub fn masked_mean<B: Backend>(x: Tensor<B, 3>, mask: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 2> {
    let [n, seq, d] = x.dims();
    match mask {
        None => x.mean_dim(1).reshape([n, d]),
        Some(mask) => {
            let m = mask.float().reshape([n, seq, 1]);
            let count = m.clone().sum_dim(1).clamp_min(1e-9);
            ((x * m).sum_dim(1) / count).reshape([n, d])
        }
    }
}
