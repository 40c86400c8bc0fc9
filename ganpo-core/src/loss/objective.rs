//! A weighted combination of preference losses and its hyperparameters.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::kind::PairTerms;
use super::metrics::{orpo_metrics, preference_metrics};
use super::{KtoWeights, LossError, LossKind, PreferenceInputs, PreferenceMetrics, UnpairedInputs};

/// One loss of a combination and its weight.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedLoss {
    /// The loss.
    pub kind: LossKind,
    /// Its weight in the total (TRL's `loss_weights`).
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

/// The base preference objective: `sum_k weight_k * mean_pairs(loss_k)`, TRL's combination rule.
///
/// Defaults follow TRL: DPO `sigmoid`, `beta = 0.1`, no label smoothing, SimPO `gamma = 0.5`.
///
/// # Example
/// ```
/// use burn::backend::NdArray;
/// use burn::prelude::*;
/// use ganpo_core::{LossKind, PairLengths, PreferenceInputs, PreferenceLoss};
///
/// let device = Default::default();
/// let t = |v: [f32; 2]| Tensor::<NdArray, 1>::from_floats(v, &device);
/// let inputs = PreferenceInputs {
///     policy_chosen: t([-10.0, -12.0]),
///     policy_rejected: t([-11.0, -9.0]),
///     reference: Some((t([-10.5, -12.0]), t([-10.5, -9.5]))),
///     lengths: PairLengths::new(vec![5, 6], vec![4, 3]).unwrap(),
///     logit_sums: None,
///     wpo_log_weights: None,
///     chosen_sequence: None,
/// };
/// let out = PreferenceLoss::default().compute(&inputs).unwrap();
/// // z = 0.1 * ((0.5 - -0.5), (0 - 0.5)) = (0.1, -0.05); loss = mean(-log sigmoid(z))
/// let expected = ((1.0 + (-0.1f64).exp()).ln() + (1.0 + 0.05f64.exp()).ln()) / 2.0;
/// let loss: f32 = out.loss.into_scalar();
/// assert!((loss as f64 - expected).abs() < 1e-6);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreferenceLoss {
    /// The losses and their weights.
    pub losses: Vec<WeightedLoss>,
    /// Temperature `beta` (> 0).
    pub beta: f64,
    /// Label smoothing `eps`: in `[0, 0.5)` for `robust`, `[0, 1]` otherwise.
    pub label_smoothing: f64,
    /// SimPO's target reward margin `gamma`.
    pub simpo_gamma: f64,
    /// DiscoPOP's temperature `tau` (TRL's `discopop_tau`).
    pub discopop_tau: f64,
    /// The f-divergence of the scores `sigmoid`, `robust`, `hinge`, `ipo`, `exo_pair`,
    /// `discopop` and `sigmoid_norm` compare (TRL's `f_divergence_type`); the other losses and
    /// the reward metrics use the log-ratios.
    pub f_divergence_type: super::FDivergence,
    /// The alpha of `alpha_divergence` (TRL's `f_alpha_divergence_coef`).
    pub f_alpha_divergence_coef: f64,
    /// WPO (TRL's `use_weighting`): each pair's loss is weighted by
    /// `exp(mean aligned log-prob of the chosen + of the rejected completion)` under the policy,
    /// detached ([`PreferenceInputs::wpo_log_weights`]).
    pub use_weighting: bool,
    /// LD-DPO (TRL's `ld_alpha`, in `[0, 1]`): the weight of the tokens past the shorter
    /// completion's length in both sides' summed log-probs. It acts where the log-probs are summed
    /// ([`crate::ScoredRows::length_desensitized`]); the loss only checks it.
    pub ld_alpha: Option<f64>,
    /// KTO's weight of the desirable examples' losses (TRL's `desirable_weight`; default 1).
    pub desirable_weight: Option<f64>,
    /// KTO's weight of the undesirable examples' losses (TRL's `undesirable_weight`; default 1).
    pub undesirable_weight: Option<f64>,
}

impl Default for PreferenceLoss {
    fn default() -> Self {
        Self {
            losses: vec![WeightedLoss {
                kind: LossKind::Sigmoid,
                weight: 1.0,
            }],
            beta: 0.1,
            label_smoothing: 0.0,
            simpo_gamma: 0.5,
            discopop_tau: 0.05,
            f_divergence_type: super::FDivergence::ReverseKl,
            f_alpha_divergence_coef: 0.5,
            use_weighting: false,
            ld_alpha: None,
            desirable_weight: None,
            undesirable_weight: None,
        }
    }
}

/// The scalar loss and the metrics of one batch.
#[derive(Clone, Debug)]
pub struct PreferenceOutput<B: Backend> {
    /// The weighted total, `[1]`, with gradient to the policy log-probs.
    pub loss: Tensor<B, 1>,
    /// TRL-named metrics, detached.
    pub metrics: PreferenceMetrics<B>,
}

impl PreferenceLoss {
    /// A single loss kind with the default hyperparameters.
    pub fn single(kind: LossKind) -> Self {
        Self {
            losses: vec![WeightedLoss { kind, weight: 1.0 }],
            ..Self::default()
        }
    }

    /// Whether the losses read unpaired examples (KTO) rather than pairs.
    pub fn is_unpaired(&self) -> bool {
        self.losses.iter().any(|l| l.kind.is_unpaired())
    }

    /// KTO's side weights (1 where unset).
    pub fn kto_weights(&self) -> KtoWeights {
        KtoWeights {
            desirable: self.desirable_weight.unwrap_or(1.0),
            undesirable: self.undesirable_weight.unwrap_or(1.0),
        }
    }

    /// Whether any loss of the combination needs reference log-probabilities.
    pub fn needs_reference(&self) -> bool {
        self.losses.iter().any(|l| l.kind.needs_reference())
    }

    /// Checks the hyperparameters.
    pub fn validate(&self) -> Result<(), LossError> {
        let invalid = |key, value, expected| {
            Err(LossError::InvalidSetting {
                key,
                value,
                expected,
            })
        };
        if self.losses.is_empty() {
            return invalid("losses", 0.0, "at least one loss");
        }
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return invalid("beta", self.beta, "a finite number > 0");
        }
        let eps = self.label_smoothing;
        let robust = self.losses.iter().any(|l| l.kind == LossKind::Robust);
        if robust && !(0.0..0.5).contains(&eps) {
            return invalid(
                "label_smoothing",
                eps,
                "a value in [0, 0.5) for the robust loss",
            );
        }
        if !(0.0..=1.0).contains(&eps) {
            return invalid("label_smoothing", eps, "a value in [0, 1]");
        }
        let exo = self.losses.iter().any(|l| l.kind == LossKind::ExoPair);
        if exo && !(eps > 0.0 && eps < 1.0) {
            return invalid(
                "label_smoothing",
                eps,
                "a value in (0, 1) for exo_pair (it takes log eps and log(1 - eps))",
            );
        }
        if !self.f_alpha_divergence_coef.is_finite() {
            return invalid(
                "f_alpha_divergence_coef",
                self.f_alpha_divergence_coef,
                "a finite number",
            );
        }
        if self.f_divergence_type != super::FDivergence::ReverseKl
            && let Some(l) = self.losses.iter().find(|l| !l.kind.takes_f_divergence())
        {
            return Err(LossError::DivergenceWithLoss {
                divergence: self.f_divergence_type.name(),
                loss: l.kind.name(),
            });
        }
        if !(self.discopop_tau.is_finite() && self.discopop_tau > 0.0) {
            return invalid("discopop_tau", self.discopop_tau, "a finite number > 0");
        }
        if !self.simpo_gamma.is_finite() {
            return invalid("simpo_gamma", self.simpo_gamma, "a finite number");
        }
        if let Some(l) = self.losses.iter().find(|l| !l.weight.is_finite()) {
            return invalid("weight", l.weight, "a finite number");
        }
        if let Some(alpha) = self.ld_alpha
            && !(0.0..=1.0).contains(&alpha)
        {
            return invalid("ld_alpha", alpha, "a value in [0, 1]");
        }
        for (key, w) in [
            ("desirable_weight", self.desirable_weight),
            ("undesirable_weight", self.undesirable_weight),
        ] {
            if let Some(w) = w
                && !(w.is_finite() && w >= 0.0)
            {
                return invalid(key, w, "a finite number >= 0");
            }
        }
        self.check_options()?;
        self.check_unpaired()
    }

    /// Refuses `use_weighting` and `ld_alpha` beside the losses they have no form for.
    fn check_options(&self) -> Result<(), LossError> {
        let refuse = |option, kind: LossKind, why| {
            Err(LossError::OptionWithLoss {
                option,
                loss: kind.name(),
                why,
            })
        };
        for kind in self.losses.iter().map(|l| l.kind) {
            match kind {
                LossKind::Aot | LossKind::AotUnpaired if self.use_weighting => {
                    return refuse(
                        "use_weighting",
                        kind,
                        "it sorts the pairs, which would misalign the per-pair weights (TRL refuses it too)",
                    );
                }
                LossKind::Simpo | LossKind::Orpo
                    if self.use_weighting || self.ld_alpha.is_some() =>
                {
                    let option = if self.use_weighting {
                        "use_weighting"
                    } else {
                        "ld_alpha"
                    };
                    return refuse(
                        option,
                        kind,
                        "WPO and LD-DPO are DPOTrainer options; SimPO and ORPO are losses of \
                         CPOTrainer and ORPOTrainer, which have neither",
                    );
                }
                LossKind::Sft if self.use_weighting => {
                    return refuse(
                        "use_weighting",
                        kind,
                        "TRL 1.16 fails on this combination (it weights the SFT term in place), so \
                         there is no reference to match; weight the preference losses only",
                    );
                }
                LossKind::Sft if self.ld_alpha.is_some() => {
                    return refuse(
                        "ld_alpha",
                        kind,
                        "TRL's SFT term reads the unweighted token log-probs, which ganpo does not \
                         keep beside the LD-weighted sums; drop sft or ld_alpha",
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Refuses KTO beside other losses and beside the options it has no form for, and KTO's
    /// weights beside paired losses.
    fn check_unpaired(&self) -> Result<(), LossError> {
        let refuse = |option, loss: LossKind, why| {
            Err(LossError::OptionWithLoss {
                option,
                loss: loss.name(),
                why,
            })
        };
        let Some(kto) = self.losses.iter().map(|l| l.kind).find(|k| k.is_unpaired()) else {
            let kto_option = match (self.desirable_weight, self.undesirable_weight) {
                (Some(_), _) => Some("desirable_weight"),
                (None, Some(_)) => Some("undesirable_weight"),
                (None, None) => None,
            };
            return match kto_option {
                Some(option) => refuse(
                    option,
                    self.losses[0].kind,
                    "only KTO weighs desirable and undesirable examples",
                ),
                None => Ok(()),
            };
        };
        if self.losses.len() > 1 {
            return refuse(
                "losses",
                kto,
                "KTO reads unpaired examples and stands alone (TRL's KTOTrainer has one loss_type)",
            );
        }
        let why = "KTOTrainer has no such option";
        if self.use_weighting {
            return refuse("use_weighting", kto, why);
        }
        if self.ld_alpha.is_some() {
            return refuse("ld_alpha", kto, why);
        }
        if self.label_smoothing != 0.0 {
            return refuse("label_smoothing", kto, why);
        }
        Ok(())
    }

    /// KTO's loss and TRL's `KTOTrainer` metrics on unpaired examples
    /// ([`LossKind::Kto`] has the formula).
    pub fn compute_unpaired<B: Backend>(
        &self,
        inputs: &UnpairedInputs<B>,
    ) -> Result<PreferenceOutput<B>, LossError> {
        self.validate()?;
        let l = self.losses[0];
        if !l.kind.is_unpaired() {
            return Err(LossError::WrongInputs {
                loss: l.kind.name(),
                expected: "paired",
                call: "PreferenceLoss::compute",
            });
        }
        let (loss, metrics) = super::kto::kto(inputs, self.beta, self.kto_weights(), l.weight)?;
        Ok(PreferenceOutput { loss, metrics })
    }

    /// Computes the loss and the metrics.
    ///
    /// Rewards follow the trainer TRL would use: `beta * (pi - ref)` (DPOTrainer) when reference
    /// log-probs are given, `beta * pi / |y|` (CPOTrainer's SimPO) when they are not.
    pub fn compute<B: Backend>(
        &self,
        inputs: &PreferenceInputs<B>,
    ) -> Result<PreferenceOutput<B>, LossError> {
        self.validate()?;
        if let Some(l) = self.losses.iter().find(|l| l.kind.is_unpaired()) {
            return Err(LossError::WrongInputs {
                loss: l.kind.name(),
                expected: "unpaired",
                call: "PreferenceLoss::compute_unpaired",
            });
        }
        inputs.check()?;
        if inputs.reference.is_none()
            && let Some(l) = self.losses.iter().find(|l| l.kind.needs_reference())
        {
            return Err(LossError::MissingReference(l.kind.name()));
        }
        let orpo = self.losses.iter().any(|l| l.kind == LossKind::Orpo);
        let sequence_nll = match (&inputs.chosen_sequence, orpo) {
            (_, false) => None,
            (Some((sums, counts)), true) => Some(sums.clone().sum().neg() / counts.clone().sum()),
            (None, true) => return Err(LossError::MissingSequenceLogps),
        };
        let device = inputs.policy_chosen.device();
        let (len_w, len_l) = inputs.lengths.tensors::<B>(&device);
        let terms = PairTerms {
            pi_w: inputs.policy_chosen.clone(),
            pi_l: inputs.policy_rejected.clone(),
            reference: inputs.reference.clone(),
            len_w,
            len_l,
            beta: self.beta,
            eps: self.label_smoothing,
            gamma: self.simpo_gamma,
            tau: self.discopop_tau,
            divergence: self.f_divergence_type,
            alpha: self.f_alpha_divergence_coef,
            sequence_nll,
        };
        let weights = match (&inputs.wpo_log_weights, self.use_weighting) {
            (_, false) => None,
            (Some((c, r)), true) => Some((c.clone() + r.clone()).detach().exp()),
            (None, true) => return Err(LossError::MissingWpoWeights),
        };
        let loss = self
            .losses
            .iter()
            .map(|l| {
                let per_pair = l.kind.per_pair(&terms);
                let per_pair = match &weights {
                    Some(w) => per_pair * w.clone(),
                    None => per_pair,
                };
                per_pair.mean() * l.weight
            })
            .reduce(|a, b| a + b)
            .expect("validate() guarantees at least one loss");
        let metrics = match self.losses.as_slice() {
            [l] if l.kind == LossKind::Orpo => orpo_metrics(&terms, inputs.logit_sums.clone()),
            _ => {
                let sft = self.losses.iter().any(|l| l.kind == LossKind::Sft);
                preference_metrics(&terms, inputs.logit_sums.clone(), sft)
            }
        };
        Ok(PreferenceOutput { loss, metrics })
    }
}
