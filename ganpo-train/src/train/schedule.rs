//! Learning-rate schedules: linear warm-up from 0, then linear, cosine or constant.

use crate::config::Scheduler;

/// The learning-rate multiplier for optimizer step `step` (0-based) of `total`, as transformers'
/// `get_{linear,cosine,constant}_schedule_with_warmup` computes it: `step / warmup` during
/// warm-up (so the first step of a warm-up uses 0), then the decay over the remaining steps.
///
/// ```
/// use ganpo_train::config::Scheduler;
/// use ganpo_train::train::lr_multiplier;
///
/// assert_eq!(lr_multiplier(Scheduler::Linear, 0, 10, 2), 0.0);
/// assert_eq!(lr_multiplier(Scheduler::Linear, 1, 10, 2), 0.5);
/// assert_eq!(lr_multiplier(Scheduler::Linear, 2, 10, 2), 1.0);
/// assert_eq!(lr_multiplier(Scheduler::Linear, 6, 10, 2), 0.5);
/// assert!((lr_multiplier(Scheduler::Cosine, 6, 10, 2) - 0.5).abs() < 1e-12);
/// ```
pub fn lr_multiplier(scheduler: Scheduler, step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
    match scheduler {
        Scheduler::Constant => 1.0,
        Scheduler::Linear => (1.0 - progress).max(0.0),
        Scheduler::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
    }
}

/// Warm-up steps: `warmup_steps` if set, else `ceil(warmup_ratio * total)` (transformers' rule).
pub fn warmup_steps(warmup_steps: Option<usize>, warmup_ratio: f64, total: usize) -> usize {
    warmup_steps.unwrap_or_else(|| (warmup_ratio * total as f64).ceil() as usize)
}
