//! Losses of reward-model training, as TRL's `RewardTrainer` defines them: Bradley-Terry on
//! (chosen, rejected) pairs, and cross-entropy on labelled examples (a classifier whose
//! log-odds serve as the reward).

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, log_softmax};

/// Bradley-Terry loss `-mean(logsigmoid(r_chosen - r_rejected - margin))`, plus
/// `center * mean((r_chosen + r_rejected)^2)` when TRL's `center_rewards_coefficient` is set
/// (it keeps rewards centred on zero). `chosen`, `rejected` and `margin` are `[pairs]`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::prelude::*;
/// use ganpo_core::reward_loss::bradley_terry;
///
/// let d = Default::default();
/// let chosen = Tensor::<NdArray, 1>::from_floats([1.0, 0.0], &d);
/// let rejected = Tensor::<NdArray, 1>::from_floats([0.0, 0.0], &d);
/// let loss: f32 = bradley_terry(chosen, rejected, None, None).into_scalar();
/// // (-ln sigmoid(1) - ln sigmoid(0)) / 2
/// assert!((loss - 0.5032).abs() < 1e-4);
/// ```
pub fn bradley_terry<B: Backend>(
    chosen: Tensor<B, 1>,
    rejected: Tensor<B, 1>,
    margin: Option<Tensor<B, 1>>,
    center: Option<f64>,
) -> Tensor<B, 1> {
    let mut diff = chosen.clone() - rejected.clone();
    if let Some(m) = margin {
        diff = diff - m;
    }
    let loss = log_sigmoid(diff).neg().mean();
    match center {
        Some(c) => loss + (chosen + rejected).powi_scalar(2).mean() * c,
        None => loss,
    }
}

/// Mean cross-entropy of class `logits` (`[batch, classes]`) against `labels` (`[batch]`, class
/// indices).
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [b, _] = logits.dims();
    log_softmax(logits, 1)
        .gather(1, labels.reshape([b, 1]))
        .neg()
        .mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray;

    #[test]
    fn bradley_terry_matches_closed_form() {
        let d = Default::default();
        let c = Tensor::<B, 1>::from_floats([2.0, -1.0, 0.5], &d);
        let r = Tensor::<B, 1>::from_floats([0.5, 1.0, 0.5], &d);
        let m = Tensor::<B, 1>::from_floats([1.0, 0.0, -2.0], &d);
        let softplus = |x: f64| (1.0 + (-x).exp()).ln();
        let plain = (softplus(1.5) + softplus(-2.0) + softplus(0.0)) / 3.0;
        let with_margin = (softplus(0.5) + softplus(-2.0) + softplus(2.0)) / 3.0;
        let centred = plain + 0.1 * (2.5f64.powi(2) + 0.0 + 1.0) / 3.0;
        let got = |m, c2| -> f64 {
            bradley_terry(c.clone(), r.clone(), m, c2)
                .into_scalar()
                .into()
        };
        assert!((got(None, None) - plain).abs() < 1e-6);
        assert!((got(Some(m), None) - with_margin).abs() < 1e-6);
        assert!((got(None, Some(0.1)) - centred).abs() < 1e-6);
    }

    #[test]
    fn cross_entropy_matches_closed_form() {
        let d = Default::default();
        let logits = Tensor::<B, 2>::from_floats([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], &d);
        let labels = Tensor::<B, 1, Int>::from_ints([1, 0], &d);
        let lse = |v: [f64; 3]| v.iter().map(|x| x.exp()).sum::<f64>().ln();
        let want = ((lse([1.0, 2.0, 0.0]) - 2.0) + (lse([0.0, 0.0, 3.0]) - 0.0)) / 2.0;
        let got: f64 = cross_entropy(logits, labels).into_scalar().into();
        assert!((got - want).abs() < 1e-6);
    }
}
