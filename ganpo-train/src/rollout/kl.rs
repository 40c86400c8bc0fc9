//! Completion log-probabilities of whole sequences, and the sampled KL divergence they give.

use burn::prelude::*;
use ganpo_core::{ScoredRows, next_token_targets};
use ganpo_models::CausalLm;

use super::MeanEstimate;

/// `log p(completion | prompt)` under `model` for each `(prompt ids, completion ids)` row, in
/// right-padded batches of `batch_rows`; `f64` sums of the per-token log-probs.
pub fn completion_logps<B: Backend, M: CausalLm<B>>(
    model: &M,
    rows: &[(Vec<u32>, Vec<u32>)],
    batch_rows: usize,
    pad_id: u32,
    device: &B::Device,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch_rows.max(1)) {
        let b = chunk.len();
        let len = chunk
            .iter()
            .map(|(p, c)| p.len() + c.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let (mut ids, mut attention, mut completion) = (
            Vec::with_capacity(b * len),
            Vec::with_capacity(b * len),
            Vec::with_capacity(b * len),
        );
        for (p, c) in chunk {
            for j in 0..len {
                let token = p.get(j).or_else(|| c.get(j.wrapping_sub(p.len())));
                ids.push(token.copied().unwrap_or(pad_id) as i64);
                attention.push(j < p.len() + c.len());
                completion.push(j >= p.len() && j < p.len() + c.len());
            }
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, len]), device);
        let attention =
            Tensor::<B, 2, Bool>::from_data(TensorData::new(attention, [b, len]), device);
        let completion =
            Tensor::<B, 2, Bool>::from_data(TensorData::new(completion, [b, len]), device);
        let (labels, mask) = next_token_targets(ids.clone(), completion);
        let rows = ScoredRows::new(labels, mask);
        let logits = model.forward_rows(ids, attention, &rows).logits;
        let float = <B::FloatElem as burn::tensor::Element>::dtype();
        let logits = if logits.dtype() == float {
            logits
        } else {
            logits.cast(float)
        };
        let logps = rows.logps(logits).logps;
        out.extend(
            logps
                .into_data()
                .convert::<f64>()
                .to_vec::<f64>()
                .unwrap_or_default(),
        );
    }
    out
}

/// The sampled estimate of `KL(policy || reference)` from completions drawn from the policy (at
/// temperature 1, without top-k / top-p): the mean of `log p(y|x) - log q(y|x)` with its standard
/// error. Each argument holds one log-prob per sample, in the same order.
pub fn sampled_kl(policy_logps: &[f64], reference_logps: &[f64]) -> MeanEstimate {
    assert_eq!(policy_logps.len(), reference_logps.len());
    let diffs: Vec<f64> = policy_logps
        .iter()
        .zip(reference_logps)
        .map(|(p, q)| p - q)
        .collect();
    MeanEstimate::of(&diffs)
}
