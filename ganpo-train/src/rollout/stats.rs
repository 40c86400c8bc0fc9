//! A sample mean with its standard error.

use serde::{Deserialize, Serialize};

/// The mean of `n` independent draws and its standard error `s / sqrt(n)` (`s` the sample
/// standard deviation, with Bessel's correction).
///
/// ```
/// use ganpo_train::rollout::MeanEstimate;
///
/// let m = MeanEstimate::of(&[1.0, 2.0, 3.0, 4.0]);
/// assert_eq!(m.mean, 2.5);
/// assert!((m.std_error - (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanEstimate {
    /// The sample mean (NaN without draws).
    pub mean: f64,
    /// Its standard error (NaN with fewer than two draws).
    pub std_error: f64,
    /// Number of draws.
    pub n: usize,
}

impl MeanEstimate {
    /// The estimate from `xs`.
    pub fn of(xs: &[f64]) -> Self {
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
        Self {
            mean,
            std_error: if n > 1 {
                (var / n as f64).sqrt()
            } else {
                f64::NAN
            },
            n,
        }
    }
}

impl std::fmt::Display for MeanEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.4} ± {:.4} (n = {})",
            self.mean, self.std_error, self.n
        )
    }
}
