//! Chunked log-probs: the policy's LM head and log-softmax run on a few scored rows at a time,
//! forward and backward, so no `[rows, vocab]` tensor exists for all rows at once (with a 262k
//! vocabulary those are the largest tensors of a step).
//!
//! [`chunked_head_pass`] runs the head untracked, chunk by chunk, and hands the loss a fresh
//! leaf for the summed log-probs (`[2n]`). The step back-propagates the base loss to that leaf
//! alone; [`backward_through_head`] then recomputes each chunk with autodiff from a leaf of its
//! hidden rows and back-propagates `sum(logps * grad)`, which gives the head's parameter
//! gradients and the hidden rows' gradient, chunk by chunk. The rest of the model receives that
//! gradient through the surrogate `sum(hidden_rows * grad)`, back-propagated with the GANPO term
//! in one pass. The gradients are the vector-Jacobian products of the unchunked pass, summed in
//! another order.

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::{ScoredRows, TokenStatistics};
use ganpo_models::LayerStack;

use super::objective::ModelPass;
use super::precision::to_float;

/// What a chunked head pass keeps for the backward pass.
#[derive(Clone, Debug)]
pub struct HeadLeaf<B: Backend> {
    /// The scored rows' last hidden states, `[rows, d]`, tracked: their graph reaches the
    /// model's layers (or the checkpointed trunk's leaf).
    pub hidden_rows: Tensor<B, 2>,
    /// The summed log-probs, `[2n]` (with ORPO `[4n]`: then the sequence sums), as a tracked
    /// leaf: what the loss was computed from.
    pub leaf: Tensor<B, 1>,
    /// The scored rows and their labels.
    pub rows: ScoredRows<B>,
    /// Rows per chunk.
    pub chunk_rows: usize,
}

/// The scored log-probs and statistics of the policy's last hidden states `hidden` (tracked),
/// computed untracked by `inner`'s LM head `chunk_rows` rows at a time; `logps` is a leaf that
/// [`backward_through_head`] differentiates through the head.
pub fn chunked_head_pass<B: AutodiffBackend>(
    inner: &dyn LayerStack<B::InnerBackend>,
    hidden: Tensor<B, 3>,
    rows: ScoredRows<B>,
    chunk_rows: usize,
    with_stats: bool,
) -> (ModelPass<B>, HeadLeaf<B>) {
    let hidden_rows = rows.gather(hidden.clone());
    let head = |h| to_float(inner.head_rows(h));
    let (s, stats) = rows.inner().chunked_logps_and_statistics(
        hidden_rows.clone().inner(),
        &head,
        chunk_rows,
        with_stats,
    );
    // One leaf for every tracked sum: the log-probs, then (ORPO) the sequence sums.
    let b = s.logps.dims()[0];
    let (leaf, counts) = match s.sequence {
        Some((sums, counts)) => (Tensor::cat(vec![s.logps, sums], 0), Some(counts)),
        None => (s.logps, None),
    };
    let leaf = Tensor::from_inner(leaf).require_grad();
    let pass = ModelPass {
        logps: leaf.clone().slice(s![0..b]),
        scored: Tensor::from_inner(s.token_counts),
        logit_sums: Tensor::from_inner(s.logit_sums),
        stats: stats.map(TokenStatistics::from_inner),
        sequence: counts.map(|c| (leaf.clone().slice(s![b..2 * b]), Tensor::from_inner(c))),
        hidden: to_float(hidden),
        trunk: None,
        head: None,
    };
    let head = HeadLeaf {
        hidden_rows,
        leaf,
        rows,
        chunk_rows,
    };
    (pass, head)
}

/// The gradients of the LM head's parameters of `policy` (whose layers `stack` is), given the
/// loss's gradient with respect to the leaf of `head` (`logps_grad`, `[2n]`, or `[4n]` with
/// ORPO's sequence sums), recomputing one
/// chunk at a time; and the tracked surrogate `sum(hidden_rows * d loss / d hidden_rows)`, whose
/// backward pass carries the same gradient into the layers below.
pub fn backward_through_head<B: AutodiffBackend, M: AutodiffModule<B>>(
    policy: &M,
    stack: &dyn LayerStack<B>,
    head: HeadLeaf<B>,
    logps_grad: Tensor<B::InnerBackend, 1>,
) -> (GradientsParams, Tensor<B, 1>) {
    let rows = head.rows;
    let row_grads = rows.inner().per_row(logps_grad);
    let detached = head.hidden_rows.clone().detach();
    let mut acc = GradientsAccumulator::<M>::new();
    let hidden_grads: Vec<_> = rows
        .chunks(head.chunk_rows)
        .map(|range| {
            let x = detached.clone().slice(s![range.clone(), ..]).require_grad();
            let logps = rows.chunk_logps(range.clone(), to_float(stack.head_rows(x.clone())));
            let weights = Tensor::from_inner(row_grads.clone().slice(s![range]));
            let grads = (logps * weights).sum().backward();
            let dx = x.grad(&grads).expect("the head reads its input");
            acc.accumulate(policy, GradientsParams::from_grads(grads, policy));
            dx
        })
        .collect();
    let surrogate = match hidden_grads.is_empty() {
        true => head.hidden_rows.sum() * 0.0,
        false => (head.hidden_rows * Tensor::from_inner(Tensor::cat(hidden_grads, 0))).sum(),
    };
    (acc.grads(), to_float(surrogate))
}
