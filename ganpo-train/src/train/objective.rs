//! What one batch of pairs contributes: model passes, the base loss with TRL's metrics, and the
//! latents GANPO compares.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::ganpo::LatentBatch;
use ganpo_core::{
    LossError, LossKind, Pooling, PreferenceInputs, PreferenceLoss, ScoredRows, TokenStatistics,
    UnpairedInputs, next_token_targets,
};
use ganpo_models::{CausalLm, LayerStack, RowsOutput};

use super::checkpointing::{Trunk, checkpointed_pass};
use super::chunked_logps::{HeadLeaf, chunked_head_pass};
use super::precision::to_float;
use crate::data::PairBatch;

/// One model's outputs on a batch (`2n` rows, chosen first).
#[derive(Clone, Debug)]
pub struct ModelPass<B: Backend> {
    /// Summed completion log-probs, `[2n]`.
    pub logps: Tensor<B, 1>,
    /// Scored completion tokens per row (the first completion token of a row that starts with
    /// one has no context and is not scored, as in TRL), `[2n]`, detached.
    pub scored: Tensor<B, 1>,
    /// Sums of mean logits over scored positions, `[2n]`, detached.
    pub logit_sums: Tensor<B, 1>,
    /// Entropy sums, top-1 hits and (with WPO) aligned log-prob sums over scored positions,
    /// `[2n]` each, detached (policy only).
    pub stats: Option<TokenStatistics<B>>,
    /// With ORPO: the summed log-probs of every token of each sequence after its first (chosen
    /// rows only; tracked) and their counts, `[2n]` each.
    pub sequence: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    /// Last-layer hidden states, `[2n, seq, d]`.
    pub hidden: Tensor<B, 3>,
    /// With activation checkpointing: what the backward pass recomputes the layers from
    /// (`hidden` is then its leaf).
    pub trunk: Option<Trunk<B>>,
    /// With chunked log-probs: what the backward pass recomputes the LM head from (`logps` is
    /// then its leaf).
    pub head: Option<HeadLeaf<B>>,
}

/// How a pass scores a batch's completion tokens, from the run's settings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scoring {
    /// LD-DPO's weight of the longer completion's tail (`loss.ld_alpha`), in the policy's and
    /// the reference's summed log-probs alike.
    pub ld_alpha: Option<f64>,
    /// Whether the statistics include WPO's terms (`loss.use_weighting`).
    pub wpo: bool,
    /// Whether the chosen sequences' prompt tokens are scored too, for ORPO's NLL term.
    pub sequence_nll: bool,
    /// Score the LM head this many rows at a time (`train.logprob_chunk_rows`); `None` = all.
    pub chunk_rows: Option<usize>,
}

impl Scoring {
    /// The scoring `loss` asks for, with the LM head chunked by `chunk_rows`.
    pub fn new(loss: &PreferenceLoss, chunk_rows: Option<usize>) -> Self {
        Self {
            ld_alpha: loss.ld_alpha,
            wpo: loss.use_weighting,
            sequence_nll: loss.losses.iter().any(|l| l.kind == LossKind::Orpo),
            chunk_rows,
        }
    }

    /// What a reference pass needs of this scoring: its log-prob sums only (LD-DPO's weights
    /// and the LM head's chunks), not the policy's WPO terms or ORPO's NLL rows.
    pub fn for_reference(self) -> Self {
        Self {
            wpo: false,
            sequence_nll: false,
            ..self
        }
    }
}

/// Runs `model` on `batch`, with the LM head on the scored (completion) positions only; with
/// `scoring.chunk_rows`, on that many rows at a time
/// ([`ScoredRows::chunked_logps_and_statistics`]) when the model is a [`LayerStack`] (else all at
/// once). A model computing in another dtype (mixed precision) has its logits and hidden states
/// cast to the backend's default float dtype (f32) before they are scored. On an autodiff
/// backend this pass is tracked only without chunking (the trainer's tracked chunked pass is
/// [`policy_pass`]).
pub fn model_pass<B: Backend, M: CausalLm<B>>(
    model: &M,
    batch: &PairBatch<B>,
    with_stats: bool,
    scoring: Scoring,
) -> ModelPass<B> {
    let rows = scored_rows(batch, scoring);
    if let (Some(chunk), Some(stack)) = (scoring.chunk_rows, model.layer_stack()) {
        let hidden = model.hidden_states(batch.ids.clone(), batch.attention.clone());
        let head = |h| to_float(stack.head_rows(h));
        let (s, stats) = rows.chunked_logps_and_statistics(
            rows.gather(hidden.clone()),
            &head,
            chunk,
            with_stats,
        );
        return ModelPass {
            logps: s.logps,
            scored: s.token_counts,
            logit_sums: s.logit_sums,
            stats,
            sequence: s.sequence,
            hidden: to_float(hidden),
            trunk: None,
            head: None,
        };
    }
    let out = model.forward_rows(batch.ids.clone(), batch.attention.clone(), &rows);
    scored_pass(out, &rows, with_stats, None)
}

/// The completion positions a loss scores, with their next-token labels, weighted and with the
/// statistics `scoring` asks for.
fn scored_rows<B: Backend>(batch: &PairBatch<B>, scoring: Scoring) -> ScoredRows<B> {
    let (labels, mask) = next_token_targets(batch.ids.clone(), batch.completion.clone());
    let rows = match scoring.sequence_nll {
        true => {
            // Every token of a chosen sequence after its first (TRL's ORPO NLL), none of the
            // rejected ones.
            let [rows, seq] = batch.attention.dims();
            let n = batch.pairs;
            let device = batch.attention.device();
            let none = Tensor::<B, 2, Int>::zeros([rows - n, seq], &device).bool();
            let chosen = batch.attention.clone().slice_assign(s![n..rows, ..], none);
            let (_, sequence) = next_token_targets(batch.ids.clone(), chosen);
            ScoredRows::with_sequence_rows(labels, mask, sequence)
        }
        false => ScoredRows::new(labels, mask),
    };
    let rows = match scoring.ld_alpha {
        Some(alpha) => rows.length_desensitized(alpha),
        None => rows,
    };
    if scoring.wpo {
        rows.with_wpo_terms()
    } else {
        rows
    }
}

/// The policy's tracked pass as a [`LayerStack`] (`stack`; `inner` is the same without
/// autodiff): with `checkpointing` ([`super::checkpointing`]) its layers run without autodiff
/// and everything after the last hidden state is tracked from a leaf of it; with
/// `scoring.chunk_rows` ([`super::chunked_logps`]) the LM head runs untracked, that many rows at
/// a time, and the loss is computed from a leaf of the summed log-probs.
pub fn policy_pass<B: AutodiffBackend>(
    stack: &dyn LayerStack<B>,
    inner: &dyn LayerStack<B::InnerBackend>,
    batch: &PairBatch<B>,
    with_stats: bool,
    checkpointing: bool,
    scoring: Scoring,
) -> ModelPass<B> {
    let (hidden, trunk) = if checkpointing {
        let trunk = checkpointed_pass(inner, batch.ids.clone(), batch.attention.clone());
        (trunk.leaf.clone(), Some(trunk))
    } else {
        let hidden = stack.full_hidden(batch.ids.clone(), batch.attention.clone());
        (hidden, None)
    };
    let rows = scored_rows(batch, scoring);
    let Some(chunk) = scoring.chunk_rows else {
        let out = RowsOutput {
            logits: stack.head_rows(rows.gather(hidden.clone())),
            hidden,
        };
        return scored_pass(out, &rows, with_stats, trunk);
    };
    let (pass, head) = chunked_head_pass(inner, hidden, rows, chunk, with_stats);
    ModelPass {
        trunk,
        head: Some(head),
        ..pass
    }
}

/// The scored log-probs and statistics of a pass's row logits.
fn scored_pass<B: Backend>(
    out: RowsOutput<B>,
    rows: &ScoredRows<B>,
    with_stats: bool,
    trunk: Option<Trunk<B>>,
) -> ModelPass<B> {
    let (s, stats) = rows.logps_and_statistics(to_float(out.logits), with_stats);
    ModelPass {
        logps: s.logps,
        scored: s.token_counts,
        logit_sums: s.logit_sums,
        stats,
        sequence: s.sequence,
        hidden: to_float(out.hidden),
        trunk,
        head: None,
    }
}

/// `x[0..n]` and `x[n..2n]`.
pub fn halves<B: Backend>(x: Tensor<B, 1>, n: usize) -> (Tensor<B, 1>, Tensor<B, 1>) {
    (x.clone().slice(s![0..n]), x.slice(s![n..2 * n]))
}

/// The latents of a batch for the discriminators, with the masks `pooling` selects: chosen
/// against rejected rows, or for unpaired (KTO) data the desirable examples as `D_c`'s set and
/// the undesirable ones as `D_r`'s (their KL rows are not compared). `None` for an unpaired batch
/// without both kinds: the relativistic losses compare the two sets' means, so such a batch
/// contributes no GANPO term.
pub fn latent_batch<B: Backend>(
    policy: Tensor<B, 3>,
    reference: Tensor<B, 3>,
    batch: &PairBatch<B>,
    pooling: Pooling,
) -> Option<LatentBatch<B>> {
    let n = batch.pairs;
    let (chosen, rejected): (Vec<usize>, Vec<usize>) = match &batch.labels {
        None => ((0..n).collect(), (n..2 * n).collect()),
        Some(labels) => (0..n).partition(|&i| labels[i]),
    };
    if chosen.is_empty() || rejected.is_empty() {
        return None;
    }
    let mask = |at: &[usize]| {
        pooling.select(
            take_rows(batch.attention.clone(), at),
            take_rows(batch.completion.clone(), at),
        )
    };
    Some(LatentBatch {
        policy_chosen: take_rows(policy.clone(), &chosen),
        policy_rejected: take_rows(policy, &rejected),
        reference_chosen: take_rows(reference.clone(), &chosen),
        reference_rejected: take_rows(reference, &rejected),
        chosen_mask: mask(&chosen),
        rejected_mask: mask(&rejected),
    })
}

/// Rows `rows` (ascending) of `x`: a slice when they are contiguous (pairs' halves), else a
/// gather (an unpaired batch's labels).
fn take_rows<B: Backend, const D: usize, K: burn::tensor::BasicOps<B>>(
    x: Tensor<B, D, K>,
    rows: &[usize],
) -> Tensor<B, D, K> {
    let (first, len) = (rows[0], rows.len());
    if rows[len - 1] == first + len - 1 {
        return x.narrow(0, first, len);
    }
    let device = x.device();
    let at: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    x.select(
        0,
        Tensor::<B, 1, Int>::from_data(TensorData::new(at, [len]), &device),
    )
}

/// Named `[1]` metric tensors, read together later.
pub type NamedValues<B> = Vec<(&'static str, Tensor<B, 1>)>;

/// The base preference loss of a batch and its metrics with TRL's names: `rewards/*`,
/// `logps/*` (and `nll_loss` with `sft`) from [`PreferenceLoss::compute`], plus
/// `logits/chosen`, `logits/rejected`, and, when the pass has them, `entropy` (over all scored
/// completion tokens) and `mean_token_accuracy` (chosen completions).
pub fn base_objective<B: Backend>(
    loss: &PreferenceLoss,
    policy: &ModelPass<B>,
    reference: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    batch: &PairBatch<B>,
) -> Result<(Tensor<B, 1>, NamedValues<B>), LossError> {
    let n = batch.pairs;
    if let Some(labels) = &batch.labels {
        return unpaired_objective(loss, policy, reference, labels.clone());
    }
    let (pc, pr) = halves(policy.logps.clone(), n);
    // WPO's log-weight of a completion: the mean of its aligned log-probs.
    let wpo_log_weights = policy.stats.as_ref().and_then(|s| {
        let aligned = s.aligned_logps.clone()?;
        Some(halves(aligned / policy.scored.clone().clamp_min(1.0), n))
    });
    let out = loss.compute(&PreferenceInputs {
        policy_chosen: pc,
        policy_rejected: pr,
        reference,
        lengths: batch.lengths.clone(),
        logit_sums: None,
        wpo_log_weights,
        chosen_sequence: policy
            .sequence
            .clone()
            .map(|(sums, counts)| (halves(sums, n).0, halves(counts, n).0)),
    })?;
    let mut metrics = named(&out.metrics);
    let (sc, sr) = halves(policy.scored.clone(), n);
    let (lc, lr) = halves(policy.logit_sums.clone(), n);
    let ratio = |a: Tensor<B, 1>, b: Tensor<B, 1>| a.sum() / b.sum().clamp_min(1.0);
    metrics.push(("logits/chosen", ratio(lc, sc.clone())));
    metrics.push(("logits/rejected", ratio(lr, sr)));
    if let Some(stats) = &policy.stats {
        metrics.push((
            "entropy",
            ratio(stats.entropy.clone(), policy.scored.clone()),
        ));
        let (hits, _) = halves(stats.top1.clone(), n);
        metrics.push(("mean_token_accuracy", ratio(hits, sc)));
    }
    Ok((out.loss, metrics))
}

/// KTO's loss of an unpaired batch (rows `0..n` the examples, `n..2n` their KL rows) and its
/// metrics with TRL's `KTOTrainer` names: [`PreferenceLoss::compute_unpaired`]'s, plus
/// `entropy` over the examples' scored completion tokens.
fn unpaired_objective<B: Backend>(
    loss: &PreferenceLoss,
    policy: &ModelPass<B>,
    reference: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    desirable: Vec<bool>,
) -> Result<(Tensor<B, 1>, NamedValues<B>), LossError> {
    let n = desirable.len();
    let kind = loss.losses[0].kind.name();
    let (reference, reference_kl) = reference.ok_or(LossError::MissingReference(kind))?;
    let (logps, logps_kl) = halves(policy.logps.clone(), n);
    let (scored, _) = halves(policy.scored.clone(), n);
    let (logit_sums, _) = halves(policy.logit_sums.clone(), n);
    let out = loss.compute_unpaired(&UnpairedInputs {
        policy: logps,
        reference,
        kl: (logps_kl, reference_kl),
        desirable,
        logit_sums: Some((logit_sums, scored.clone())),
    })?;
    let mut metrics = named(&out.metrics);
    if let Some(stats) = &policy.stats {
        let (entropy, _) = halves(stats.entropy.clone(), n);
        metrics.push(("entropy", entropy.sum() / scored.sum().clamp_min(1.0)));
    }
    Ok((out.loss, metrics))
}

/// A [`Metrics`](ganpo_core::metrics::Metrics)' entries as named `[1]` tensors.
pub(super) fn named<B: Backend>(metrics: &ganpo_core::metrics::Metrics<B>) -> NamedValues<B> {
    let values = metrics.values();
    metrics
        .names()
        .iter()
        .enumerate()
        .map(|(i, &name)| (name, values.clone().slice(s![i..i + 1])))
        .collect()
}
