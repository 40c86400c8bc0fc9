//! What each scored row contributes (its label's log-probability, mean logit and statistics)
//! from one log-softmax of its logits, and the per-sequence statistics they sum to.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Per-sequence sums over the scored tokens, `[batch]` each, detached
/// ([`ScoredRows::statistics`](super::ScoredRows::statistics)).
#[derive(Clone, Debug)]
pub struct TokenStatistics<B: Backend> {
    /// Sums of the token entropies `-sum_v p log p` (TRL's `entropy` once divided by the count).
    pub entropy: Tensor<B, 1>,
    /// Positions whose most likely token is the label (TRL's `mean_token_accuracy`).
    pub top1: Tensor<B, 1>,
    /// With [`ScoredRows::with_wpo_terms`](super::ScoredRows::with_wpo_terms): sums of
    /// `log p(label) - log sum_v p_v^2`, the log-probability aligned to the token distribution's
    /// own sharpness; WPO weights a sequence by the exponential of its mean (TRL's
    /// `use_weighting`).
    pub aligned_logps: Option<Tensor<B, 1>>,
}

impl<B: Backend> TokenStatistics<B> {
    pub(super) fn map<C: Backend>(
        self,
        f: impl Fn(Tensor<B, 1>) -> Tensor<C, 1>,
    ) -> TokenStatistics<C> {
        TokenStatistics {
            entropy: f(self.entropy),
            top1: f(self.top1),
            aligned_logps: self.aligned_logps.map(&f),
        }
    }
}

impl<B: burn::tensor::backend::AutodiffBackend> TokenStatistics<B> {
    /// Statistics computed without autodiff, as constants of an autodiff backend's graph.
    pub fn from_inner(inner: TokenStatistics<B::InnerBackend>) -> Self {
        inner.map(Tensor::from_inner)
    }
}

/// What each scored row contributes, `[rows]` each: its label's log-probability (tracked), its
/// mean logit and, when asked, its statistics (detached).
pub(super) struct RowTerms<B: Backend> {
    pub picked: Tensor<B, 1>,
    pub mean_logits: Tensor<B, 1>,
    pub stats: Option<TokenStatistics<B>>,
}

impl<B: Backend> RowTerms<B> {
    /// The terms of consecutive chunks of rows, as one.
    pub fn cat(chunks: Vec<Self>) -> Self {
        let mut picked = Vec::with_capacity(chunks.len());
        let mut mean_logits = Vec::with_capacity(chunks.len());
        let mut stats = Vec::with_capacity(chunks.len());
        for c in chunks {
            picked.push(c.picked);
            mean_logits.push(c.mean_logits);
            stats.extend(c.stats);
        }
        let stats = (!stats.is_empty()).then(|| {
            let wpo = stats[0].aligned_logps.is_some();
            let mut entropy = Vec::with_capacity(stats.len());
            let mut top1 = Vec::with_capacity(stats.len());
            let mut aligned = Vec::with_capacity(stats.len());
            for s in stats {
                entropy.push(s.entropy);
                top1.push(s.top1);
                aligned.extend(s.aligned_logps);
            }
            TokenStatistics {
                entropy: Tensor::cat(entropy, 0),
                top1: Tensor::cat(top1, 0),
                aligned_logps: wpo.then(|| Tensor::cat(aligned, 0)),
            }
        });
        Self {
            picked: Tensor::cat(picked, 0),
            mean_logits: Tensor::cat(mean_logits, 0),
            stats,
        }
    }
}

/// The statistics a pass computes besides the log-probs.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Asked {
    Nothing,
    Statistics,
    StatisticsAndWpo,
}

/// The [`RowTerms`] of rows with `logits` (`[rows, vocab]`) and `labels` (`[rows]`): one fused,
/// max-shifted log-softmax (stable for logits of any magnitude, one autodiff node), from which
/// the labels' entries are gathered.
pub(super) fn row_terms<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    asked: Asked,
) -> RowTerms<B> {
    let rows = labels.dims()[0];
    // Read before the log-softmax, which NdArray writes in place of uniquely owned logits.
    let mean_logits = logits.clone().detach().mean_dim(1).reshape([rows]);
    let log_probs = log_softmax(logits, 1);
    let picked = pick(log_probs.clone(), labels.clone());
    let stats = (asked != Asked::Nothing).then(|| {
        let log_probs = log_probs.detach();
        let top1 = log_probs
            .clone()
            .argmax(1)
            .reshape([rows])
            .equal(labels)
            .float();
        let probs = log_probs.clone().exp();
        let aligned_logps = (asked == Asked::StatisticsAndWpo).then(|| {
            // log sum_v p_v^2 >= -2 log vocab: no underflow in the sum of squares.
            let log_sum_sq = (probs.clone() * probs.clone())
                .sum_dim(1)
                .log()
                .reshape([rows]);
            picked.clone().detach() - log_sum_sq
        });
        let entropy = (probs * log_probs).sum_dim(1).neg().reshape([rows]);
        TokenStatistics {
            entropy,
            top1,
            aligned_logps,
        }
    });
    RowTerms {
        picked,
        mean_logits,
        stats,
    }
}

/// Log-probabilities of `labels` (`[rows]`) under `logits` (`[rows, vocab]`), `[rows]`.
pub(super) fn row_logps<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    pick(log_softmax(logits, 1), labels)
}

/// The entries of `log_probs` (`[rows, vocab]`) at `labels` (`[rows]`), `[rows]`.
fn pick<B: Backend>(log_probs: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let rows = labels.dims()[0];
    log_probs.gather(1, labels.unsqueeze_dim(1)).reshape([rows])
}
