//! Per-phase wall time of training steps, for benchmarks (`ganpo bench`).

use std::time::Instant;

use burn::prelude::Backend;

/// The phases a step is split into, in the order they run.
pub const PHASES: [&str; 5] = [
    "reference_forward",
    "policy_forward",
    "discriminator_step",
    "policy_backward",
    "optimizer",
];

/// Accumulated seconds per phase. Each lap waits for the device to finish its queued work first
/// (`Backend::sync`), so asynchronous backends are timed where the work happens — which costs
/// a little overlap, so profiled steps are slightly slower than unprofiled ones.
#[derive(Clone, Debug)]
pub struct PhaseTimes {
    last: Instant,
    seconds: [f64; PHASES.len()],
}

impl Default for PhaseTimes {
    fn default() -> Self {
        Self {
            last: Instant::now(),
            seconds: [0.0; PHASES.len()],
        }
    }
}

impl PhaseTimes {
    /// Starts timing from now (the work before belongs to no phase).
    pub fn start<B: Backend>(&mut self, device: &B::Device) {
        let _ = B::sync(device);
        self.last = Instant::now();
    }

    /// Adds the time since the last lap to `phase` (one of [`PHASES`]).
    pub fn lap<B: Backend>(&mut self, phase: &str, device: &B::Device) {
        let _ = B::sync(device);
        let now = Instant::now();
        let i = PHASES
            .iter()
            .position(|p| *p == phase)
            .expect("a known phase");
        self.seconds[i] += (now - self.last).as_secs_f64();
        self.last = now;
    }

    /// `(phase, seconds)` in [`PHASES`] order.
    pub fn seconds(&self) -> Vec<(&'static str, f64)> {
        PHASES.iter().copied().zip(self.seconds).collect()
    }
}
