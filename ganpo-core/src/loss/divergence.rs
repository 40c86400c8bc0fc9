//! The f-divergence that turns log-ratios into DPO's scores (TRL's `f_divergence_type`).

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;
use serde::{Deserialize, Serialize};

/// Which f-divergence regularizes the policy against the reference ("Beyond Reverse KL", Wang
/// et al. 2023): DPO's margin is taken on `f'(pi / ref)` instead of the log-ratio. With `x` the
/// log-ratio `log pi - log ref` of one completion:
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FDivergence {
    /// `x` (standard DPO).
    #[default]
    ReverseKl,
    /// `1 - exp(-x)`.
    ForwardKl,
    /// `log 2 + log sigmoid(x)` (Jensen-Shannon).
    JsDivergence,
    /// `(exp((alpha - 1) x) - 1) / (alpha - 1)`, the exponent clamped at 80 as TRL does (and
    /// `x` itself when `alpha` is within 1e-6 of 1); `alpha` is `f_alpha_divergence_coef`.
    AlphaDivergence,
}

impl FDivergence {
    /// TRL's name.
    pub fn name(self) -> &'static str {
        match self {
            FDivergence::ReverseKl => "reverse_kl",
            FDivergence::ForwardKl => "forward_kl",
            FDivergence::JsDivergence => "js_divergence",
            FDivergence::AlphaDivergence => "alpha_divergence",
        }
    }

    /// The score of log-ratios `x`, elementwise.
    pub fn score<B: Backend>(self, x: Tensor<B, 1>, alpha: f64) -> Tensor<B, 1> {
        match self {
            FDivergence::ReverseKl => x,
            FDivergence::ForwardKl => x.neg().exp().neg().add_scalar(1.0),
            FDivergence::JsDivergence => log_sigmoid(x).add_scalar(std::f64::consts::LN_2),
            FDivergence::AlphaDivergence if (alpha - 1.0).abs() < 1e-6 => x,
            FDivergence::AlphaDivergence => {
                let t = (x * (alpha - 1.0)).clamp_max(80.0);
                t.exp().sub_scalar(1.0) / (alpha - 1.0)
            }
        }
    }
}
