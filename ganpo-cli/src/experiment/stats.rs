//! Confidence intervals of means over a few seeds.

use serde::{Deserialize, Serialize};

/// A mean with the half-width of its 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The mean.
    pub mean: f64,
    /// Half-width of the 95% interval (Student's t with `n - 1` degrees of freedom); `None` for
    /// a single value.
    pub half_width: Option<f64>,
    /// Number of values.
    pub n: usize,
}

/// Two-sided 95% quantiles of Student's t for 1..=30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

impl Interval {
    /// The mean of `values` with its t-interval (normal quantile 1.96 beyond 30 degrees of
    /// freedom): `of(&[1.0, 2.0, 3.0])` is 2 ± 4.303 / sqrt(3).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let half_width = (n >= 2).then(|| {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let t = T95.get(n - 2).copied().unwrap_or(1.96);
            t * (var / n as f64).sqrt()
        });
        Self {
            mean,
            half_width,
            n,
        }
    }

    /// `mean ± half-width` with `digits` decimals (the mean alone for one value).
    pub fn display(&self, digits: usize) -> String {
        match self.half_width {
            Some(h) => format!("{:.digits$} ± {:.digits$}", self.mean, h),
            None => format!("{:.digits$}", self.mean),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_interval_of_three_values() {
        let i = Interval::of(&[1.0, 2.0, 3.0]);
        assert_eq!(i.mean, 2.0);
        // sd 1, n 3: 4.303 / sqrt(3)
        assert!((i.half_width.unwrap() - 2.4843).abs() < 1e-4);
    }
}
