//! Summed completion log-probabilities: the quantity every preference loss is built on.

use burn::prelude::*;

/// Per-sequence log-probability statistics of the masked (completion) tokens.
#[derive(Clone, Debug)]
pub struct SequenceLogps<B: Backend> {
    /// Sum of the masked tokens' log-probabilities, `[batch]`; carries the gradient.
    pub logps: Tensor<B, 1>,
    /// Number of masked tokens, `[batch]` (as floats, for dividing).
    pub token_counts: Tensor<B, 1>,
    /// Sum over masked positions of the mean logit over the vocabulary, `[batch]`, detached.
    /// Divided by the total token count it gives TRL's `logits/chosen` and `logits/rejected`.
    pub logit_sums: Tensor<B, 1>,
}

/// Sums the log-probabilities of `labels` under `logits` over the positions where `mask` is true.
///
/// - `logits`: `[batch, seq, vocab]`; the distribution at position `t` predicts `labels[t]`
///   (use [`next_token_targets`] to build such labels from input ids).
/// - `labels`: `[batch, seq]` token ids; values at unmasked positions are ignored (they may be
///   padding or `-100`), values at masked positions must lie in `0..vocab`.
/// - `mask`: `[batch, seq]`, true at the positions to score (the completion tokens).
///
/// The log-softmax is computed as `x[label] - max - log(sum(exp(x - max)))` with the row maximum
/// as a constant shift, so it is stable for logits of any magnitude, and it never builds the full
/// log-softmax tensor.
///
/// **Memory.** `logits` is taken by value and its buffer is reused for the shifted logits where
/// the backend operates in place (NdArray, CubeCL and fusion backends do on uniquely owned
/// tensors). Peak extra memory is then **one** `[batch, seq, vocab]` float tensor (the
/// exponentials, freed as soon as they are summed) plus `O(batch * seq)`; under autodiff the
/// shifted logits themselves are what the backward pass keeps, and the exponentials are
/// recomputed there.
///
/// # Example
/// ```
/// use burn::backend::NdArray;
/// use burn::prelude::*;
/// use ganpo_core::sequence_logps;
///
/// let device = Default::default();
/// // One sequence, two positions, uniform over a vocabulary of 4.
/// let logits = Tensor::<NdArray, 3>::zeros([1, 2, 4], &device);
/// let labels = Tensor::<NdArray, 2, Int>::from_data([[1, 3]], &device);
/// let mask = Tensor::<NdArray, 2, Bool>::from_data([[true, true]], &device);
/// let out = sequence_logps(logits, labels, mask);
/// let logp: f32 = out.logps.into_scalar();
/// assert!((logp - 2.0 * (0.25f32).ln()).abs() < 1e-6);
/// ```
pub fn sequence_logps<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Bool>,
) -> SequenceLogps<B> {
    let [batch, seq, vocab] = logits.dims();
    let maskf = mask.clone().float();
    let token_counts = maskf.clone().sum_dim(1).reshape([batch]);
    let logit_sums = (logits.clone().detach().sum_dim(2).reshape([batch, seq]) / vocab as f64
        * maskf)
        .sum_dim(1)
        .reshape([batch]);
    let logps = token_logps(logits, labels, mask)
        .sum_dim(1)
        .reshape([batch]);
    SequenceLogps {
        logps,
        token_counts,
        logit_sums,
    }
}

/// Per-position log-probabilities of `labels` under `logits`, `[batch, seq]`, zero where `mask`
/// is false; the terms [`sequence_logps`] sums (same shapes, stability and memory).
pub fn token_logps<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Bool>,
) -> Tensor<B, 2> {
    let [batch, seq, _] = logits.dims();
    assert_eq!(labels.dims(), [batch, seq], "labels must be [batch, seq]");
    assert_eq!(mask.dims(), [batch, seq], "mask must be [batch, seq]");
    let labels = labels.mask_fill(mask.clone().bool_not(), 0);
    let picked = logits
        .clone()
        .gather(2, labels.unsqueeze_dim(2))
        .reshape([batch, seq]);
    let max = logits.clone().detach().max_dim(2);
    let shifted = logits - max.clone();
    let log_sum_exp = shifted.exp().sum_dim(2).log() + max;
    (picked - log_sum_exp.reshape([batch, seq])) * mask.float()
}

/// Builds next-token targets from input ids: `labels[t] = input_ids[t + 1]` and
/// `mask[t] = completion_mask[t + 1]`, with the last position masked out.
///
/// Feed the model `input_ids` and pass its logits with these labels to [`sequence_logps`]; this is
/// TRL's shift (logits at `t` score the token at `t + 1`) without slicing the logits.
pub fn next_token_targets<B: Backend>(
    input_ids: Tensor<B, 2, Int>,
    completion_mask: Tensor<B, 2, Bool>,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Bool>) {
    let [batch, seq] = input_ids.dims();
    let device = input_ids.device();
    if seq == 0 {
        return (input_ids, completion_mask);
    }
    let labels = Tensor::cat(
        vec![
            input_ids.slice(s![.., 1..]),
            Tensor::<B, 2, Int>::zeros([batch, 1], &device),
        ],
        1,
    );
    let mask = Tensor::cat(
        vec![
            completion_mask.slice(s![.., 1..]),
            Tensor::<B, 2, Bool>::from_data(
                TensorData::new(vec![false; batch], [batch, 1]),
                &device,
            ),
        ],
        1,
    );
    (labels, mask)
}

/// Detached per-sequence statistics of the predictive distribution at masked positions: the sum
/// of token entropies `-sum_v p log p` and the number of positions whose most likely token is the
/// label, `[batch]` each. Divided by the token counts they give TRL's `entropy` and
/// `mean_token_accuracy` metrics. Costs one extra `[batch, seq, vocab]` pass, outside autodiff.
pub fn token_statistics<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Bool>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let [batch, seq, _] = logits.dims();
    let logits = logits.detach();
    let maskf = mask.float();
    let max = logits.clone().max_dim(2);
    let shifted = logits.clone() - max;
    let exp = shifted.clone().exp();
    let z = exp.clone().sum_dim(2);
    // H = log Z - sum(e * s) / Z, with s the shifted logits and e = exp(s).
    let entropy = (z.clone().log() - (exp * shifted).sum_dim(2) / z).reshape([batch, seq]);
    let top1 = logits.argmax(2).reshape([batch, seq]).equal(labels).float();
    (
        (entropy * maskf.clone()).sum_dim(1).reshape([batch]),
        (top1 * maskf).sum_dim(1).reshape([batch]),
    )
}
