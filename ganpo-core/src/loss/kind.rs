//! The individual preference losses and their per-pair formulas.

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, relu, sigmoid};
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
    /// EXO (reverse KL to the smoothed labels, `eps` in (0, 1)):
    /// `sigmoid(z) (log sigmoid(z) - log(1 - eps)) + sigmoid(-z) (log sigmoid(-z) - log eps)`.
    ExoPair,
    /// NCA: `-log sigmoid(r_w) - log sigmoid(-r_w) / 2 - log sigmoid(-r_l) / 2`, with
    /// `r = beta * (pi - ref)` each side's implicit reward.
    NcaPair,
    /// BCO on pairs: `-log sigmoid(r_w) - log sigmoid(-r_l)` (TRL 1.16's code: no running reward
    /// mean, whatever older docs say).
    BcoPair,
    /// SPPO with hard labels: `(w - 1 / (2 beta))^2 + (l + 1 / (2 beta))^2` on the log-ratios.
    SppoHard,
    /// AOT: the label-smoothed logistic loss on `beta * (sort(pi_w - pi_l) - sort(ref_w - ref_l))`,
    /// sorted over the batch.
    Aot,
    /// AOT for unpaired data: the same on `beta * (sort(w) - sort(l))` of the log-ratios.
    AotUnpaired,
    /// APO-zero: `1 - sigmoid(r_w) + sigmoid(r_l)`.
    ApoZero,
    /// APO-down: `sigmoid(r_w) + 1 - sigmoid(z)`.
    ApoDown,
    /// DiscoPOP: `-log sigmoid(z) (1 - m) + exp(-z) m` with `m = sigmoid(z / tau)`.
    Discopop,
    /// ORPO (no reference; `trl.experimental.orpo`): `nll - beta * log sigmoid(o)` with the log
    /// odds ratio `o = (a_w - a_l) - (log(1 - exp(a_w)) - log(1 - exp(a_l)))` of the length-averaged
    /// log-probs `a = pi / |y|`, and `nll` the mean NLL of the chosen sequences' tokens, prompt
    /// included, as TRL computes it.
    Orpo,
    /// KTO (TRL's `KTOTrainer`, unpaired data): `w_d (1 - sigmoid(beta (r - z)))` for a desirable
    /// completion, `w_u (1 - sigmoid(beta (z - r)))` for an undesirable one, `r = pi - ref` and
    /// `z` the clamped KL estimate of mismatched pairs
    /// ([`PreferenceLoss::compute_unpaired`](crate::PreferenceLoss::compute_unpaired)).
    Kto,
}

impl LossKind {
    /// Every loss kind.
    pub const ALL: [LossKind; 18] = [
        LossKind::Sigmoid,
        LossKind::Robust,
        LossKind::Hinge,
        LossKind::Ipo,
        LossKind::SigmoidNorm,
        LossKind::Simpo,
        LossKind::Sft,
        LossKind::ExoPair,
        LossKind::NcaPair,
        LossKind::BcoPair,
        LossKind::SppoHard,
        LossKind::Aot,
        LossKind::AotUnpaired,
        LossKind::ApoZero,
        LossKind::ApoDown,
        LossKind::Discopop,
        LossKind::Orpo,
        LossKind::Kto,
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
            LossKind::ExoPair => "exo_pair",
            LossKind::NcaPair => "nca_pair",
            LossKind::BcoPair => "bco_pair",
            LossKind::SppoHard => "sppo_hard",
            LossKind::Aot => "aot",
            LossKind::AotUnpaired => "aot_unpaired",
            LossKind::ApoZero => "apo_zero",
            LossKind::ApoDown => "apo_down",
            LossKind::Discopop => "discopop",
            LossKind::Orpo => "orpo",
            LossKind::Kto => "kto",
        }
    }

    /// Whether an f-divergence other than the reverse KL has a form for this loss (TRL's
    /// `f_divergence_loss_types`).
    pub fn takes_f_divergence(self) -> bool {
        matches!(
            self,
            LossKind::Sigmoid
                | LossKind::SigmoidNorm
                | LossKind::Hinge
                | LossKind::Ipo
                | LossKind::ExoPair
                | LossKind::Robust
                | LossKind::Discopop
                | LossKind::Sft
        )
    }

    /// Whether the loss reads unpaired examples (prompt, completion, label) rather than pairs.
    pub fn is_unpaired(self) -> bool {
        self == LossKind::Kto
    }

    /// Whether the loss compares the policy against reference log-probabilities.
    pub fn needs_reference(self) -> bool {
        !matches!(self, LossKind::Simpo | LossKind::Sft | LossKind::Orpo)
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
    /// DiscoPOP's temperature.
    pub tau: f64,
    /// How log-ratios become scores, and the alpha of the alpha-divergence.
    pub divergence: super::FDivergence,
    pub alpha: f64,
    /// ORPO's NLL term, `[1]`, when the batch has the chosen sequences' log-probs.
    pub sequence_nll: Option<Tensor<B, 1>>,
}

impl<B: Backend> PairTerms<B> {
    fn logratios(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let (ref_w, ref_l) = self
            .reference
            .clone()
            .expect("reference presence is checked before computing a loss");
        (self.pi_w.clone() - ref_w, self.pi_l.clone() - ref_l)
    }

    /// The f-divergence scores of both sides (the log-ratios for the reverse KL).
    fn scores(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let (w, l) = self.logratios();
        let f = |x| self.divergence.score(x, self.alpha);
        (f(w), f(l))
    }

    /// ORPO's log odds ratio of the length-averaged log-probs, `[n]`.
    pub fn log_odds(&self) -> Tensor<B, 1> {
        let a_w = self.pi_w.clone() / self.len_w.clone();
        let a_l = self.pi_l.clone() / self.len_l.clone();
        (a_w.clone() - a_l.clone()) - (log1mexp(a_w) - log1mexp(a_l))
    }

    /// Margin of length-averaged scores (IPO, `sigmoid_norm`).
    fn averaged_margin(&self) -> Tensor<B, 1> {
        let (w, l) = self.scores();
        w / self.len_w.clone() - l / self.len_l.clone()
    }
}

/// `log(1 - exp(x))` for `x <= 0`, branching at `-ln 2` as TRL's `log1mexp` does: `log1p(-exp(x))`
/// below, `log(-expm1(x))` above, with `expm1(x) = 2 t / (1 - t)`, `t = tanh(x / 2)` (exact, and
/// accurate near 0 where `exp(x) - 1` cancels).
fn log1mexp<B: Backend>(x: Tensor<B, 1>) -> Tensor<B, 1> {
    let far = x.clone().exp().neg().log1p();
    let t = (x.clone() / 2.0).tanh();
    let near = (t.clone() * -2.0 / t.neg().add_scalar(1.0)).log();
    near.mask_where(x.lower_elem(-std::f64::consts::LN_2), far)
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
                let (w, l) = t.scores();
                smoothed_logistic((w - l) * t.beta, t.eps)
            }
            LossKind::Robust => {
                let (w, l) = t.scores();
                let z = (w - l) * t.beta;
                let clean = log_sigmoid(z.clone()).neg() * (1.0 - t.eps);
                let flipped = log_sigmoid(z.neg()).neg() * t.eps;
                (clean - flipped) / (1.0 - 2.0 * t.eps)
            }
            LossKind::Hinge => {
                let (w, l) = t.scores();
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
            LossKind::ExoPair => {
                let (w, l) = t.scores();
                let z = (w - l) * t.beta;
                let chosen =
                    sigmoid(z.clone()) * log_sigmoid(z.clone()).sub_scalar((-t.eps).ln_1p());
                let rejected =
                    sigmoid(z.clone().neg()) * log_sigmoid(z.neg()).sub_scalar(t.eps.ln());
                chosen + rejected
            }
            LossKind::NcaPair => {
                let (w, l) = t.logratios();
                let (rw, rl) = (w * t.beta, l * t.beta);
                log_sigmoid(rw.clone()).neg()
                    - log_sigmoid(rw.neg()) * 0.5
                    - log_sigmoid(rl.neg()) * 0.5
            }
            LossKind::BcoPair => {
                let (w, l) = t.logratios();
                log_sigmoid(w * t.beta).neg() - log_sigmoid((l * t.beta).neg())
            }
            LossKind::SppoHard => {
                let (w, l) = t.logratios();
                let half = 0.5 / t.beta;
                w.sub_scalar(half).powi_scalar(2) + l.add_scalar(half).powi_scalar(2)
            }
            LossKind::Aot => {
                let (ref_w, ref_l) = t.reference.clone().expect("checked before computing");
                let policy = (t.pi_w.clone() - t.pi_l.clone()).sort(0);
                let reference = (ref_w - ref_l).sort(0);
                smoothed_logistic((policy - reference) * t.beta, t.eps)
            }
            LossKind::AotUnpaired => {
                let (w, l) = t.logratios();
                smoothed_logistic((w.sort(0) - l.sort(0)) * t.beta, t.eps)
            }
            LossKind::ApoZero => {
                let (w, l) = t.logratios();
                sigmoid(w * t.beta).neg().add_scalar(1.0) + sigmoid(l * t.beta)
            }
            LossKind::ApoDown => {
                let (w, l) = t.logratios();
                let z = (w.clone() - l) * t.beta;
                sigmoid(w * t.beta) + sigmoid(z).neg().add_scalar(1.0)
            }
            LossKind::Discopop => {
                let (w, l) = t.scores();
                let z = (w - l) * t.beta;
                let m = sigmoid(z.clone() / t.tau);
                let logistic = log_sigmoid(z.clone()).neg();
                let exponential = z.neg().exp();
                logistic * m.clone().neg().add_scalar(1.0) + exponential * m
            }
            LossKind::Orpo => {
                let n = t.pi_w.dims()[0];
                let nll = t
                    .sequence_nll
                    .clone()
                    .expect("sequence log-probs are checked before computing a loss");
                nll.expand([n]) - log_sigmoid(t.log_odds()) * t.beta
            }
            LossKind::Kto => unreachable!("PreferenceLoss::compute refuses unpaired losses"),
        }
    }
}
