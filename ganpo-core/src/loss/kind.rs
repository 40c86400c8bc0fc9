//! The individual preference losses and their per-pair formulas.

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, relu};
use serde::{Deserialize, Serialize};

/// One offline preference loss, named as TRL's `loss_type`.
///
/// With `z = beta * ((pi_w - ref_w) - (pi_l - ref_l))` (summed completion log-probs of the policy
/// `pi` and reference `ref` for the chosen `w` and rejected `l` completion), label smoothing `eps`
/// and `|y|` the completion length:
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// DPO: `-log sigmoid(z)`; with label smoothing (cDPO)
    /// `-(1 - eps) log sigmoid(z) - eps log sigmoid(-z)`.
    Sigmoid,
    /// Robust DPO: `(-(1 - eps) log sigmoid(z) + eps log sigmoid(-z)) / (1 - 2 eps)`.
    Robust,
    /// SLiC-style hinge: `relu(1 - z)`.
    Hinge,
    /// IPO: `(h - 1 / (2 beta))^2` with `h` the margin of length-averaged log-ratios.
    Ipo,
    /// Length-normalized DPO: the `sigmoid` loss on `beta * h`, `h` as for IPO.
    SigmoidNorm,
    /// SimPO (no reference): the `sigmoid` loss on
    /// `beta * pi_w / |y_w| - beta * pi_l / |y_l| - gamma`.
    Simpo,
    /// Supervised fine-tuning: mean negative log-likelihood per chosen completion token.
    Sft,
}

impl LossKind {
    /// Every loss kind.
    pub const ALL: [LossKind; 7] = [
        LossKind::Sigmoid,
        LossKind::Robust,
        LossKind::Hinge,
        LossKind::Ipo,
        LossKind::SigmoidNorm,
        LossKind::Simpo,
        LossKind::Sft,
    ];

    /// TRL's name for the loss.
    pub fn name(self) -> &'static str {
        match self {
            LossKind::Sigmoid => "sigmoid",
            LossKind::Robust => "robust",
            LossKind::Hinge => "hinge",
            LossKind::Ipo => "ipo",
            LossKind::SigmoidNorm => "sigmoid_norm",
            LossKind::Simpo => "simpo",
            LossKind::Sft => "sft",
        }
    }

    /// Whether the loss compares the policy against reference log-probabilities.
    pub fn needs_reference(self) -> bool {
        !matches!(self, LossKind::Simpo | LossKind::Sft)
    }
}

/// Everything a per-pair formula may use, as `[n]` tensors on the same device.
pub(crate) struct PairTerms<B: Backend> {
    pub pi_w: Tensor<B, 1>,
    pub pi_l: Tensor<B, 1>,
    /// `(ref_w, ref_l)` when the batch has reference log-probs.
    pub reference: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    pub len_w: Tensor<B, 1>,
    pub len_l: Tensor<B, 1>,
    pub beta: f64,
    pub eps: f64,
    pub gamma: f64,
}

impl<B: Backend> PairTerms<B> {
    fn logratios(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let (ref_w, ref_l) = self
            .reference
            .clone()
            .expect("reference presence is checked before computing a loss");
        (self.pi_w.clone() - ref_w, self.pi_l.clone() - ref_l)
    }

    /// Margin of length-averaged log-ratios (IPO, `sigmoid_norm`).
    fn averaged_margin(&self) -> Tensor<B, 1> {
        let (w, l) = self.logratios();
        w / self.len_w.clone() - l / self.len_l.clone()
    }
}

/// `-(1 - eps) log sigmoid(x) - eps log sigmoid(-x)`, the label-smoothed logistic loss.
fn smoothed_logistic<B: Backend>(x: Tensor<B, 1>, eps: f64) -> Tensor<B, 1> {
    let clean = log_sigmoid(x.clone()).neg();
    if eps == 0.0 {
        return clean;
    }
    clean * (1.0 - eps) - log_sigmoid(x.neg()) * eps
}

impl LossKind {
    /// The loss of each pair, `[n]` (for `sft`, the batch value repeated, as TRL does).
    pub(crate) fn per_pair<B: Backend>(self, t: &PairTerms<B>) -> Tensor<B, 1> {
        match self {
            LossKind::Sigmoid => {
                let (w, l) = t.logratios();
                smoothed_logistic((w - l) * t.beta, t.eps)
            }
            LossKind::Robust => {
                let (w, l) = t.logratios();
                let z = (w - l) * t.beta;
                let clean = log_sigmoid(z.clone()).neg() * (1.0 - t.eps);
                let flipped = log_sigmoid(z.neg()).neg() * t.eps;
                (clean - flipped) / (1.0 - 2.0 * t.eps)
            }
            LossKind::Hinge => {
                let (w, l) = t.logratios();
                relu(((w - l) * t.beta).neg().add_scalar(1.0))
            }
            LossKind::Ipo => t
                .averaged_margin()
                .sub_scalar(1.0 / (2.0 * t.beta))
                .powi_scalar(2),
            LossKind::SigmoidNorm => smoothed_logistic(t.averaged_margin() * t.beta, t.eps),
            LossKind::Simpo => {
                let margin = t.pi_w.clone() / t.len_w.clone() - t.pi_l.clone() / t.len_l.clone();
                smoothed_logistic((margin * t.beta).sub_scalar(t.gamma), t.eps)
            }
            LossKind::Sft => {
                let n = t.pi_w.dims()[0];
                let nll = t.pi_w.clone().sum().neg() / t.len_w.clone().sum();
                nll.expand([n])
            }
        }
    }
}
