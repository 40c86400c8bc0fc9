//! What a preference loss consumes: log-probabilities of chosen and rejected completions.

use burn::prelude::*;

use super::LossError;

/// Completion lengths in tokens of each pair, known on the host, checked to be non-zero.
///
/// Lengths come from the data pipeline (which tokenized the completions), so checking them needs
/// no device synchronization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairLengths {
    chosen: Vec<usize>,
    rejected: Vec<usize>,
}

impl PairLengths {
    /// Checks that both sides have the same number of pairs, at least one, and that no
    /// completion is empty (the error names the pair and the side).
    pub fn new(chosen: Vec<usize>, rejected: Vec<usize>) -> Result<Self, LossError> {
        if chosen.is_empty() {
            return Err(LossError::EmptyBatch);
        }
        if rejected.len() != chosen.len() {
            return Err(LossError::BatchMismatch {
                what: "rejected lengths",
                found: rejected.len(),
                expected: chosen.len(),
            });
        }
        for (side, lengths) in [("chosen", &chosen), ("rejected", &rejected)] {
            if let Some(index) = lengths.iter().position(|&n| n == 0) {
                return Err(LossError::EmptyCompletion { index, side });
            }
        }
        Ok(Self { chosen, rejected })
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.chosen.len()
    }

    /// Always false: a `PairLengths` holds at least one pair.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Chosen completion lengths.
    pub fn chosen(&self) -> &[usize] {
        &self.chosen
    }

    /// Rejected completion lengths.
    pub fn rejected(&self) -> &[usize] {
        &self.rejected
    }

    pub(crate) fn tensors<B: Backend>(&self, device: &B::Device) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let to = |v: &[usize]| {
            let data: Vec<f32> = v.iter().map(|&n| n as f32).collect();
            Tensor::<B, 1>::from_data(TensorData::new(data, [v.len()]), device)
        };
        (to(&self.chosen), to(&self.rejected))
    }
}

/// Summed completion log-probabilities of a batch of pairs, `[n]` each.
#[derive(Clone, Debug)]
pub struct PreferenceInputs<B: Backend> {
    /// Policy log-prob of each chosen completion (carries the gradient).
    pub policy_chosen: Tensor<B, 1>,
    /// Policy log-prob of each rejected completion (carries the gradient).
    pub policy_rejected: Tensor<B, 1>,
    /// Reference log-probs `(chosen, rejected)`; needed by every loss but SimPO and SFT.
    pub reference: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    /// Completion lengths in tokens.
    pub lengths: PairLengths,
    /// Per-sequence sums of mean logits `(chosen, rejected)` for the `logits/*` metrics.
    pub logit_sums: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    /// WPO's log-weights `(chosen, rejected)`, detached: the mean over each completion's scored
    /// tokens of [`TokenStatistics::aligned_logps`](crate::TokenStatistics); needed with
    /// `use_weighting`.
    pub wpo_log_weights: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    /// ORPO's NLL inputs: the summed log-probs of every token of each chosen sequence after its
    /// first (prompt and completion, carrying the gradient) and their counts, `[n]` each
    /// ([`SequenceLogps::sequence`](crate::SequenceLogps) of the chosen rows).
    pub chosen_sequence: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
}

impl<B: Backend> PreferenceInputs<B> {
    pub(crate) fn check(&self) -> Result<(), LossError> {
        let n = self.lengths.len();
        let mut sizes = vec![
            ("policy_chosen", self.policy_chosen.dims()[0]),
            ("policy_rejected", self.policy_rejected.dims()[0]),
        ];
        let optional = [
            (("reference chosen", "reference rejected"), &self.reference),
            (
                ("chosen logit sums", "rejected logit sums"),
                &self.logit_sums,
            ),
            (
                ("chosen sequence log-probs", "chosen sequence counts"),
                &self.chosen_sequence,
            ),
            (
                ("chosen WPO log-weights", "rejected WPO log-weights"),
                &self.wpo_log_weights,
            ),
        ];
        for ((first, second), pair) in optional {
            if let Some((a, b)) = pair {
                sizes.push((first, a.dims()[0]));
                sizes.push((second, b.dims()[0]));
            }
        }
        check_sizes(sizes, n)
    }
}

/// Fails with the first input whose size is not `expected`, naming it.
pub(crate) fn check_sizes(
    sizes: impl IntoIterator<Item = (&'static str, usize)>,
    expected: usize,
) -> Result<(), LossError> {
    match sizes.into_iter().find(|&(_, found)| found != expected) {
        Some((what, found)) => Err(LossError::BatchMismatch {
            what,
            found,
            expected,
        }),
        None => Ok(()),
    }
}
