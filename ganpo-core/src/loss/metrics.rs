//! TRL-named metrics of a preference batch.

use burn::prelude::*;

use super::kind::PairTerms;
use crate::metrics::Metrics;

/// `rewards/{chosen,rejected,accuracies,margins}`, `logps/{chosen,rejected}`, and when available
/// `logits/{chosen,rejected}` and `nll_loss`, as TRL's DPOTrainer computes them.
pub type PreferenceMetrics<B> = Metrics<B>;

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
    let mut entries = vec![
        ("rewards/chosen", chosen.clone().mean()),
        ("rewards/rejected", rejected.clone().mean()),
        (
            "rewards/accuracies",
            chosen.clone().greater(rejected.clone()).float().mean(),
        ),
        ("rewards/margins", (chosen - rejected).mean()),
        ("logps/chosen", pi_w.clone().mean()),
        ("logps/rejected", pi_l.mean()),
    ];
    if let Some((c, r)) = logit_sums {
        entries.push(("logits/chosen", c.sum() / t.len_w.clone().sum()));
        entries.push(("logits/rejected", r.sum() / t.len_l.clone().sum()));
    }
    if sft {
        entries.push(("nll_loss", pi_w.sum().neg() / t.len_w.clone().sum()));
    }
    Metrics::new(entries)
}
