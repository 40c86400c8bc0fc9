//! TRL-named metrics of a preference batch.

use burn::prelude::*;

use super::kind::PairTerms;
use crate::metrics::Metrics;

/// `rewards/{chosen,rejected,accuracies,margins}`, `logps/{chosen,rejected}`, and when available
/// `logits/{chosen,rejected}` and `nll_loss`, as TRL's DPOTrainer computes them.
pub type PreferenceMetrics<B> = Metrics<B>;

/// `rewards/{chosen,rejected,accuracies,margins}` of per-pair rewards.
fn reward_entries<B: Backend>(
    chosen: Tensor<B, 1>,
    rejected: Tensor<B, 1>,
) -> Vec<(&'static str, Tensor<B, 1>)> {
    vec![
        ("rewards/chosen", chosen.clone().mean()),
        ("rewards/rejected", rejected.clone().mean()),
        (
            "rewards/accuracies",
            chosen.clone().greater(rejected.clone()).float().mean(),
        ),
        ("rewards/margins", (chosen - rejected).mean()),
    ]
}

pub(crate) fn preference_metrics<B: Backend>(
    t: &PairTerms<B>,
    logit_sums: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    sft: bool,
) -> Metrics<B> {
    let pi_w = t.pi_w.clone().detach();
    let pi_l = t.pi_l.clone().detach();
    let (chosen, rejected) = match &t.reference {
        Some((ref_w, ref_l)) => (
            (pi_w.clone() - ref_w.clone().detach()) * t.beta,
            (pi_l.clone() - ref_l.clone().detach()) * t.beta,
        ),
        None => (
            pi_w.clone() / t.len_w.clone() * t.beta,
            pi_l.clone() / t.len_l.clone() * t.beta,
        ),
    };
    let mut entries = reward_entries(chosen, rejected);
    entries.extend([
        ("logps/chosen", pi_w.clone().mean()),
        ("logps/rejected", pi_l.mean()),
    ]);
    if let Some((c, r)) = logit_sums {
        entries.push(("logits/chosen", c.sum() / t.len_w.clone().sum()));
        entries.push(("logits/rejected", r.sum() / t.len_l.clone().sum()));
    }
    if sft {
        entries.push(("nll_loss", pi_w.sum().neg() / t.len_w.clone().sum()));
    }
    Metrics::new(entries)
}

/// ORPOTrainer's metrics: rewards `beta * pi / |y|`, `logps/*` length-averaged, `nll_loss`,
/// `log_odds_ratio` (mean `log sigmoid(o)`) and `log_odds_chosen` (mean `o`). Its `logits/*` are
/// DPOTrainer's (mean over completion tokens), not ORPOTrainer's mean over every position of the
/// padded batch, prompt and padding included.
pub(crate) fn orpo_metrics<B: Backend>(
    t: &PairTerms<B>,
    logit_sums: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
) -> Metrics<B> {
    let a_w = t.pi_w.clone().detach() / t.len_w.clone();
    let a_l = t.pi_l.clone().detach() / t.len_l.clone();
    let (chosen, rejected) = (a_w.clone() * t.beta, a_l.clone() * t.beta);
    let log_odds = t.log_odds().detach();
    let nll = t
        .sequence_nll
        .clone()
        .expect("ORPO has its NLL term")
        .detach();
    let mut entries = reward_entries(chosen, rejected);
    entries.extend([
        ("logps/chosen", a_w.mean()),
        ("logps/rejected", a_l.mean()),
        ("nll_loss", nll),
        (
            "log_odds_ratio",
            burn::tensor::activation::log_sigmoid(log_odds.clone()).mean(),
        ),
        ("log_odds_chosen", log_odds.mean()),
    ]);
    if let Some((c, r)) = logit_sums {
        entries.push(("logits/chosen", c.sum() / t.len_w.clone().sum()));
        entries.push(("logits/rejected", r.sum() / t.len_l.clone().sum()));
    }
    Metrics::new(entries)
}
