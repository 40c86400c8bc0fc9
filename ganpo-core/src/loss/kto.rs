//! KTO (TRL 1.16's `KTOTrainer`, `loss_type = "kto"`): unpaired completions, each desirable or
//! not, scored against a KL reference point estimated from mismatched prompt/completion pairs.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use super::LossError;
use super::inputs::check_sizes;
use crate::metrics::Metrics;

/// Summed completion log-probabilities of a batch of unpaired examples and of their KL rows.
///
/// An example's KL row is its prompt with another example's completion (TRL cycles the
/// completions of a batch by one); the mean policy-minus-reference log-ratio of the KL rows
/// estimates `KL(policy || reference)`, KTO's reference point.
#[derive(Clone, Debug)]
pub struct UnpairedInputs<B: Backend> {
    /// Policy log-prob of each completion, `[n]` (carries the gradient).
    pub policy: Tensor<B, 1>,
    /// Reference log-prob of each completion, `[n]`.
    pub reference: Tensor<B, 1>,
    /// Policy and reference log-probs of each example's KL row, `[n]` each; the loss detaches
    /// them, as TRL computes them without gradient.
    pub kl: (Tensor<B, 1>, Tensor<B, 1>),
    /// Whether each completion is desirable (TRL's `label`), known on the host.
    pub desirable: Vec<bool>,
    /// Per-sequence sums of mean logits over scored completion positions and the scored counts,
    /// `[n]` each, for `logits/chosen` (desirable rows) and `logits/rejected` (undesirable).
    pub logit_sums: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
}

impl<B: Backend> UnpairedInputs<B> {
    fn check(&self) -> Result<(), LossError> {
        let n = self.desirable.len();
        if n == 0 {
            return Err(LossError::EmptyBatch);
        }
        let mut sizes = vec![
            ("policy log-probs", &self.policy),
            ("reference log-probs", &self.reference),
            ("policy KL log-probs", &self.kl.0),
            ("reference KL log-probs", &self.kl.1),
        ];
        if let Some((sums, counts)) = &self.logit_sums {
            sizes.extend([("logit sums", sums), ("scored counts", counts)]);
        }
        check_sizes(sizes.into_iter().map(|(what, x)| (what, x.dims()[0])), n)
    }
}

/// KTO's settings beside `beta`: how much each side's losses weigh.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KtoWeights {
    /// TRL's `desirable_weight`.
    pub desirable: f64,
    /// TRL's `undesirable_weight`.
    pub undesirable: f64,
}

/// The KTO loss and TRL's metrics of one batch (`weight` is the loss's weight in the list).
///
/// With `r = pi - ref` each completion's log-ratio and
/// `z = clamp_min(mean(pi_KL - ref_KL), 0)`, detached (TRL's `kl`):
/// desirable rows lose `w_d (1 - sigmoid(beta (r - z)))`, undesirable rows
/// `w_u (1 - sigmoid(beta (z - r)))`, and the loss is the mean over all rows. Metrics: `kl`, and
/// for each side present in the batch `rewards/*` (`beta r`), `logps/*` and `logits/*`
/// (desirable = `chosen`), `rewards/margins` when both are.
pub(crate) fn kto<B: Backend>(
    inputs: &UnpairedInputs<B>,
    beta: f64,
    weights: KtoWeights,
    weight: f64,
) -> Result<(Tensor<B, 1>, Metrics<B>), LossError> {
    inputs.check()?;
    let device = inputs.policy.device();
    let n = inputs.desirable.len();
    let host = |f: &dyn Fn(bool) -> f64| {
        let v: Vec<f64> = inputs.desirable.iter().map(|&d| f(d)).collect();
        Tensor::<B, 1>::from_data(TensorData::new(v, [n]).convert::<B::FloatElem>(), &device)
    };
    let sign = host(&|d| if d { 1.0 } else { -1.0 });
    let side_weight = host(&|d| {
        if d {
            weights.desirable
        } else {
            weights.undesirable
        }
    });
    let (kl_policy, kl_reference) = inputs.kl.clone();
    let kl = (kl_policy - kl_reference).mean().detach().clamp_min(0.0);
    let ratio = inputs.policy.clone() - inputs.reference.clone();
    let margin = (ratio.clone() - kl.clone().expand([n])) * sign * beta;
    let per_row = sigmoid(margin).neg().add_scalar(1.0) * side_weight;
    let loss = per_row.mean() * weight;

    let rewards = ratio.detach() * beta;
    let logps = inputs.policy.clone().detach();
    let mut entries = vec![("kl", kl)];
    let sides = [
        (true, ["logits/chosen", "rewards/chosen", "logps/chosen"]),
        (
            false,
            ["logits/rejected", "rewards/rejected", "logps/rejected"],
        ),
    ];
    let mut side_rewards = Vec::new();
    for (label, [logits_name, rewards_name, logps_name]) in sides {
        let count = inputs.desirable.iter().filter(|&&d| d == label).count();
        if count == 0 {
            continue;
        }
        let mask = host(&|d| if d == label { 1.0 } else { 0.0 });
        let masked_sum = |x: &Tensor<B, 1>| (x.clone() * mask.clone()).sum();
        if let Some((sums, counts)) = &inputs.logit_sums {
            let tokens = masked_sum(counts).clamp_min(1.0);
            entries.push((logits_name, masked_sum(sums) / tokens));
        }
        let reward = masked_sum(&rewards) / count as f64;
        side_rewards.push(reward.clone());
        entries.push((rewards_name, reward));
        entries.push((logps_name, masked_sum(&logps) / count as f64));
    }
    if let [chosen, rejected] = side_rewards.as_slice() {
        entries.push(("rewards/margins", chosen.clone() - rejected.clone()));
    }
    Ok((loss, Metrics::new(entries)))
}
