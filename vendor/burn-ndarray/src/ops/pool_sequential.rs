//! ganpo patch: without `std` there are no threads; parallel loops run on the calling thread.

use alloc::vec::Vec;

/// Threads a parallel loop may use: the calling one.
pub(crate) fn threads() -> usize {
    1
}

/// Runs `kernel` on every part, in order, on the calling thread.
pub(crate) fn run<T: Send>(parts: Vec<T>, kernel: impl Fn(T) + Sync) {
    parts.into_iter().for_each(kernel)
}
