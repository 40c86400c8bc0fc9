//! Summed completion log-probabilities: the quantity every preference loss is built on.

use burn::prelude::*;

mod row_terms;

pub use row_terms::TokenStatistics;
use row_terms::{Asked, RowTerms, row_logps, row_terms};

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
    /// With [`ScoredRows::with_sequence_rows`]: the sums of the log-probs of every sequence row
    /// (completion and context), `[batch]`, carrying the gradient, and their counts.
    pub sequence: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
}

/// The positions a loss scores (the completion tokens of a `[batch, seq]` mask), as rows.
///
/// A preference batch scores only its completion tokens, often less than half of `batch * seq`
/// once prompts and padding are left out. Gathering those rows from the last hidden states
/// *before* the LM head means the `[rows, vocab]` logits, their log-softmax and its gradient are
/// computed for them alone; [`ScoredRows::logps`] then sums the rows of each sequence.
///
/// # Example
/// ```
/// use burn::backend::NdArray;
/// use burn::prelude::*;
/// use ganpo_core::ScoredRows;
///
/// let device = Default::default();
/// let labels = Tensor::<NdArray, 2, Int>::from_data([[5, 1, 3], [2, 0, 0]], &device);
/// let mask = Tensor::<NdArray, 2, Bool>::from_data([[false, true, true], [true, false, false]], &device);
/// let rows = ScoredRows::new(labels, mask);
/// assert_eq!(rows.len(), 3);
/// // Hidden states [batch, seq, d]; only the three scored positions reach the head.
/// let hidden = Tensor::<NdArray, 3>::zeros([2, 3, 8], &device);
/// assert_eq!(rows.gather(hidden).dims(), [3, 8]);
/// // Uniform logits over a vocabulary of 4: each scored token has log-probability ln(1/4).
/// let out = rows.logps(Tensor::zeros([3, 4], &device));
/// let logps: Vec<f32> = out.logps.into_data().to_vec().unwrap();
/// assert!((logps[0] - 2.0 * 0.25f32.ln()).abs() < 1e-6 && (logps[1] - 0.25f32.ln()).abs() < 1e-6);
/// ```
#[derive(Clone, Debug)]
pub struct ScoredRows<B: Backend> {
    /// Flat indices `b * seq + t` of the scored positions in row-major order, `[rows]`.
    index: Tensor<B, 1, Int>,
    /// The labels at those positions, `[rows]`.
    labels: Tensor<B, 1, Int>,
    /// `[batch, rows]`, 1 where a row belongs to the sequence: per-sequence sums are one matmul
    /// (deterministic on every backend, unlike a scatter-add).
    membership: Tensor<B, 2>,
    /// The weights of the log-prob sums, `[batch, rows]`, when they are not `membership`
    /// ([`Self::length_desensitized`]).
    logp_weights: Option<Tensor<B, 2>>,
    /// `[batch, rows]`, 1 where a row is one of the sequence's rows
    /// ([`Self::with_sequence_rows`]), completion or context.
    sequence: Option<Tensor<B, 2>>,
    /// Scored (completion) rows per sequence, on the host.
    counts: Vec<usize>,
    /// Each row's sequence and whether it is a completion row, on the host.
    row_of: Vec<(usize, bool)>,
    /// Whether statistics include the WPO terms ([`Self::with_wpo_terms`]).
    wpo: bool,
    batch: usize,
    rows: usize,
}

impl<B: Backend> ScoredRows<B> {
    /// The positions where `mask` (`[batch, seq]`) is true, with their `labels` (`[batch, seq]`;
    /// values elsewhere are ignored). Reads the mask back to the host once.
    pub fn new(labels: Tensor<B, 2, Int>, mask: Tensor<B, 2, Bool>) -> Self {
        Self::build(labels, mask, None)
    }

    /// [`Self::new`] over the rows where `mask` or `sequence` is true: the log-prob sums,
    /// counts and statistics stay those of `mask`'s (completion) rows, and
    /// [`SequenceLogps::sequence`] sums every row of `sequence` besides: ORPO's NLL term, which
    /// TRL takes over the chosen prompt and completion alike.
    ///
    /// # Example
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::prelude::*;
    /// use ganpo_core::ScoredRows;
    ///
    /// let device = Default::default();
    /// let labels = Tensor::<NdArray, 2, Int>::zeros([1, 4], &device);
    /// let completion = Tensor::<NdArray, 2, Bool>::from_data([[false, false, true, true]], &device);
    /// let sequence = Tensor::<NdArray, 2, Bool>::from_data([[true, true, true, true]], &device);
    /// let rows = ScoredRows::with_sequence_rows(labels, completion, sequence);
    /// // Uniform logits over 4 tokens for the 4 rows the head now runs on.
    /// let out = rows.logps(Tensor::zeros([4, 4], &device));
    /// let l = 0.25f32.ln();
    /// assert!((out.logps.into_scalar() - 2.0 * l).abs() < 1e-6);
    /// let (sums, counts) = out.sequence.unwrap();
    /// assert!((sums.into_scalar() - 4.0 * l).abs() < 1e-6 && counts.into_scalar() == 4.0);
    /// ```
    pub fn with_sequence_rows(
        labels: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Bool>,
        sequence: Tensor<B, 2, Bool>,
    ) -> Self {
        Self::build(labels, mask, Some(sequence))
    }

    fn build(
        labels: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Bool>,
        sequence: Option<Tensor<B, 2, Bool>>,
    ) -> Self {
        let [batch, seq] = mask.dims();
        assert_eq!(labels.dims(), [batch, seq], "labels must be [batch, seq]");
        let device = mask.device();
        let read = |m: Tensor<B, 2, Bool>| -> Vec<bool> {
            m.into_data()
                .convert::<bool>()
                .into_vec()
                .expect("a bool mask reads back as bools")
        };
        let flags = read(mask);
        let extra = sequence.map(|m| {
            assert_eq!(
                m.dims(),
                [batch, seq],
                "the sequence mask must be [batch, seq]"
            );
            read(m)
        });
        let in_sequence = |i: usize| extra.as_ref().is_some_and(|e| e[i]);
        let index: Vec<i64> = (0..batch * seq)
            .filter(|&i| flags[i] || in_sequence(i))
            .map(|i| i as i64)
            .collect();
        let rows = index.len();
        let mut membership = vec![false; batch * rows];
        let mut sequence_membership = vec![false; batch * rows];
        let mut counts = vec![0; batch];
        let mut row_of = Vec::with_capacity(rows);
        for (r, &i) in index.iter().enumerate() {
            let (i, b) = (i as usize, i as usize / seq);
            membership[b * rows + r] = flags[i];
            sequence_membership[b * rows + r] = in_sequence(i);
            counts[b] += flags[i] as usize;
            row_of.push((b, flags[i]));
        }
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [rows]), &device);
        let labels = labels.reshape([batch * seq]).select(0, index.clone());
        let matrix = |m: Vec<bool>| {
            Tensor::<B, 2, Bool>::from_data(TensorData::new(m, [batch, rows]), &device).float()
        };
        Self {
            index,
            labels,
            membership: matrix(membership),
            logp_weights: None,
            sequence: extra.is_some().then(|| matrix(sequence_membership)),
            counts,
            row_of,
            wpo: false,
            batch,
            rows,
        }
    }

    /// LD-DPO's length desensitization (TRL's `ld_alpha`) for a batch of `n` chosen sequences
    /// followed by their `n` rejected ones: in each pair the first `min(len_w, len_l)` scored
    /// tokens of both sides count fully and the longer side's tail counts `alpha` times, in the
    /// summed log-probs and their gradient. Counts and statistics stay unweighted.
    ///
    /// # Example
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::prelude::*;
    /// use ganpo_core::ScoredRows;
    ///
    /// let device = Default::default();
    /// // A chosen completion of one token, a rejected one of three.
    /// let labels = Tensor::<NdArray, 2, Int>::zeros([2, 3], &device);
    /// let mask = Tensor::<NdArray, 2, Bool>::from_data([[true, false, false], [true, true, true]], &device);
    /// let rows = ScoredRows::new(labels, mask).length_desensitized(0.5);
    /// // Uniform logits over 4 tokens: ln(1/4) per token, the rejected tail at half weight.
    /// let logps: Vec<f32> = rows.logps(Tensor::zeros([4, 4], &device)).logps.into_data().to_vec().unwrap();
    /// let l = 0.25f32.ln();
    /// assert!((logps[0] - l).abs() < 1e-6 && (logps[1] - 2.0 * l).abs() < 1e-6);
    /// ```
    pub fn length_desensitized(mut self, alpha: f64) -> Self {
        let n = self.batch / 2;
        assert_eq!(
            2 * n,
            self.batch,
            "LD-DPO needs n chosen then n rejected sequences"
        );
        let mut weights = vec![0f64; self.batch * self.rows];
        let mut seen = vec![0; self.batch];
        for (r, &(b, scored)) in self.row_of.iter().enumerate() {
            if !scored {
                continue;
            }
            let partner = if b < n { b + n } else { b - n };
            let shared = self.counts[b].min(self.counts[partner]);
            weights[b * self.rows + r] = if seen[b] < shared { 1.0 } else { alpha };
            seen[b] += 1;
        }
        let device = self.membership.device();
        let data = TensorData::new(weights, [self.batch, self.rows]);
        self.logp_weights = Some(Tensor::from_data(data, &device));
        self
    }

    /// Adds the WPO terms (TRL's `use_weighting`) to the statistics:
    /// [`TokenStatistics::aligned_logps`].
    pub fn with_wpo_terms(mut self) -> Self {
        self.wpo = true;
        self
    }

    /// Number of scored positions.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no position is scored.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Flat indices `b * seq + t` of the scored positions, `[rows]`.
    pub fn index(&self) -> Tensor<B, 1, Int> {
        self.index.clone()
    }

    /// The scored rows of `x` (`[batch, seq, d]`), `[rows, d]`.
    pub fn gather(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, s, d] = x.dims();
        x.reshape([b * s, d]).select(0, self.index.clone())
    }

    /// Sums `values` (`[rows]`) per sequence, `[batch]`.
    pub fn per_sequence(&self, values: Tensor<B, 1>) -> Tensor<B, 1> {
        self.membership
            .clone()
            .matmul(values.reshape([self.rows, 1]))
            .reshape([self.batch])
    }

    /// Per-sequence log-probability statistics from the logits of the scored rows
    /// (`[rows, vocab]`, e.g. the LM head applied to [`Self::gather`] of the hidden states).
    ///
    /// Each row's log-softmax is one fused, max-shifted pass (stable for logits of any
    /// magnitude) and one autodiff node, from which the labels' entries are gathered.
    /// **Memory:** `logits` is taken by value; on NdArray the log-softmax is written in place of
    /// uniquely owned logits, so beyond them only `O(rows)` is allocated in the forward pass.
    pub fn logps(&self, logits: Tensor<B, 2>) -> SequenceLogps<B> {
        self.logps_and_statistics(logits, false).0
    }

    /// [`Self::logps`] and, with `statistics`, the [`Self::statistics`] of the same logits from
    /// the same log-softmax (one pass over `[rows, vocab]` fewer than computing them apart).
    pub fn logps_and_statistics(
        &self,
        logits: Tensor<B, 2>,
        statistics: bool,
    ) -> (SequenceLogps<B>, Option<TokenStatistics<B>>) {
        if self.is_empty() {
            return self.nothing_scored(statistics);
        }
        let terms = row_terms(logits, self.labels.clone(), self.asked(statistics));
        self.sequence_sums(terms)
    }

    /// [`Self::logps_and_statistics`] of `head(hidden_rows)` computed `chunk_rows` rows at a
    /// time, so that no `[rows, vocab]` tensor exists for all rows at once: `hidden_rows` are the
    /// scored rows' last hidden states (`[rows, d]`, [`Self::gather`]) and `head` the LM head.
    /// The values equal the unchunked ones (each row's log-softmax is its own). On an autodiff
    /// backend every chunk's graph would be kept: a trainer runs this untracked and recomputes
    /// the chunks in its backward pass ([`Self::chunk_logps`]).
    ///
    /// # Example
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::prelude::*;
    /// use ganpo_core::ScoredRows;
    ///
    /// let device = Default::default();
    /// let labels = Tensor::<NdArray, 2, Int>::from_data([[1, 2, 3, 0]], &device);
    /// let mask = Tensor::<NdArray, 2, Bool>::from_data([[true, true, true, false]], &device);
    /// let rows = ScoredRows::new(labels, mask);
    /// let hidden = Tensor::<NdArray, 2>::from_data([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], &device);
    /// let weight = Tensor::<NdArray, 2>::from_data([[1.0, -1.0, 0.5, 2.0], [0.0, 3.0, -2.0, 1.0]], &device);
    /// let head = |h: Tensor<NdArray, 2>| h.matmul(weight.clone());
    /// let whole = rows.logps(head(hidden.clone())).logps.into_scalar();
    /// let (chunked, _) = rows.chunked_logps_and_statistics(hidden, &head, 2, false);
    /// assert!((chunked.logps.into_scalar() - whole).abs() < 1e-6);
    /// ```
    pub fn chunked_logps_and_statistics(
        &self,
        hidden_rows: Tensor<B, 2>,
        head: &dyn Fn(Tensor<B, 2>) -> Tensor<B, 2>,
        chunk_rows: usize,
        statistics: bool,
    ) -> (SequenceLogps<B>, Option<TokenStatistics<B>>) {
        if self.is_empty() {
            return self.nothing_scored(statistics);
        }
        let chunks: Vec<RowTerms<B>> = self
            .chunks(chunk_rows)
            .map(|r| {
                let logits = head(hidden_rows.clone().slice(s![r.clone(), ..]));
                row_terms(
                    logits,
                    self.labels.clone().slice(s![r]),
                    self.asked(statistics),
                )
            })
            .collect();
        let terms = RowTerms::cat(chunks);
        self.sequence_sums(terms)
    }

    /// The row ranges of `chunk_rows` rows each (the last one shorter) that
    /// [`Self::chunked_logps_and_statistics`] walks.
    pub fn chunks(&self, chunk_rows: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
        let (rows, step) = (self.rows, chunk_rows.max(1));
        (0..rows)
            .step_by(step)
            .map(move |a| a..(a + step).min(rows))
    }

    /// The log-probabilities of the labels of the rows `range` under their `logits`
    /// (`[range.len(), vocab]`), `[range.len()]`: the same terms [`Self::logps`] sums, for a
    /// chunk recomputed with autodiff in a backward pass.
    pub fn chunk_logps(&self, range: std::ops::Range<usize>, logits: Tensor<B, 2>) -> Tensor<B, 1> {
        row_logps(logits, self.labels.clone().slice(s![range]))
    }

    /// Each row's share of per-sequence values (e.g. the gradient of a loss with respect to
    /// the summed log-probs), `[rows]`: the transpose of the log-prob sums (weighted under
    /// [`Self::length_desensitized`]). `values` is `[batch]`, or with
    /// [`Self::with_sequence_rows`] `[2 * batch]`: the log-prob sums' values, then the sequence
    /// sums'.
    pub fn per_row(&self, values: Tensor<B, 1>) -> Tensor<B, 1> {
        let sums = self.sums();
        let k = sums.dims()[0];
        sums.transpose()
            .matmul(values.reshape([k, 1]))
            .reshape([self.rows])
    }

    /// The matrix of the tracked sums, `[batch, rows]` (the log-prob sums) or `[2 * batch, rows]`
    /// (and the sequence sums).
    fn sums(&self) -> Tensor<B, 2> {
        let logps = self
            .logp_weights
            .clone()
            .unwrap_or_else(|| self.membership.clone());
        match &self.sequence {
            Some(s) => Tensor::cat(vec![logps, s.clone()], 0),
            None => logps,
        }
    }

    /// The zeros of a batch without scored positions.
    fn nothing_scored(&self, statistics: bool) -> (SequenceLogps<B>, Option<TokenStatistics<B>>) {
        let token_counts = self.token_counts();
        let zeros = token_counts.zeros_like();
        let stats = statistics.then(|| TokenStatistics {
            entropy: zeros.clone(),
            top1: zeros.clone(),
            aligned_logps: self.wpo.then(|| zeros.clone()),
        });
        let sequence = self
            .sequence
            .as_ref()
            .map(|_| (zeros.clone(), zeros.clone()));
        let out = SequenceLogps {
            logps: zeros.clone(),
            token_counts,
            logit_sums: zeros,
            sequence,
        };
        (out, stats)
    }

    /// Which statistics a pass computes.
    fn asked(&self, statistics: bool) -> Asked {
        match (statistics, self.wpo) {
            (false, _) => Asked::Nothing,
            (true, false) => Asked::Statistics,
            (true, true) => Asked::StatisticsAndWpo,
        }
    }

    /// Scored tokens per sequence, `[batch]`.
    fn token_counts(&self) -> Tensor<B, 1> {
        self.membership.clone().sum_dim(1).reshape([self.batch])
    }

    /// Per-sequence sums of the rows' terms.
    fn sequence_sums(&self, terms: RowTerms<B>) -> (SequenceLogps<B>, Option<TokenStatistics<B>>) {
        let stats = terms
            .stats
            .map(|s| s.map(|x| self.per_sequence(x).detach()));
        let b = self.batch;
        let sums = self.sums().matmul(terms.picked.reshape([self.rows, 1]));
        let k = sums.dims()[0];
        let sums = sums.reshape([k]);
        let sequence = self.sequence.as_ref().map(|s| {
            let counts = s.clone().sum_dim(1).reshape([b]);
            (sums.clone().slice(s![b..2 * b]), counts)
        });
        let out = SequenceLogps {
            logps: sums.slice(s![0..b]),
            token_counts: self.token_counts(),
            logit_sums: self.per_sequence(terms.mean_logits).detach(),
            sequence,
        };
        (out, stats)
    }

    /// The detached [`TokenStatistics`] of the scored rows' logits (`[rows, vocab]`).
    pub fn statistics(&self, logits: Tensor<B, 2>) -> TokenStatistics<B> {
        let (_, stats) = self.logps_and_statistics(logits.detach(), true);
        stats.expect("asked for statistics")
    }
}

impl<B: burn::tensor::backend::AutodiffBackend> ScoredRows<B> {
    /// The same rows on the inner backend (no autodiff), without reading the mask again.
    pub fn inner(&self) -> ScoredRows<B::InnerBackend> {
        ScoredRows {
            index: self.index.clone().inner(),
            labels: self.labels.clone().inner(),
            membership: self.membership.clone().inner(),
            logp_weights: self.logp_weights.clone().map(|w| w.inner()),
            sequence: self.sequence.clone().map(|s| s.inner()),
            counts: self.counts.clone(),
            row_of: self.row_of.clone(),
            wpo: self.wpo,
            batch: self.batch,
            rows: self.rows,
        }
    }
}

/// Sums the log-probabilities of `labels` under `logits` over the positions where `mask` is true.
///
/// - `logits`: `[batch, seq, vocab]`; the distribution at position `t` predicts `labels[t]`
///   (use [`next_token_targets`] to build such labels from input ids).
/// - `labels`: `[batch, seq]` token ids; values at unmasked positions are ignored (they may be
///   padding or `-100`), values at masked positions must lie in `0..vocab`.
/// - `mask`: `[batch, seq]`, true at the positions to score (the completion tokens).
///
/// The masked rows are gathered first and scored by [`ScoredRows::logps`] (stability and memory
/// as described there). A caller that owns the model should gather the hidden states instead
/// and run the LM head on the scored rows only, as the trainer does.
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
    let rows = ScoredRows::new(labels, mask);
    rows.logps(rows.gather(logits))
}

/// Per-position log-probabilities of `labels` under `logits`, `[batch, seq]`, zero where `mask`
/// is false; the terms [`sequence_logps`] sums (same shapes and stability), for callers that
/// need every position (SFT, per-token dumps).
pub fn token_logps<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Bool>,
) -> Tensor<B, 2> {
    let [batch, seq, vocab] = logits.dims();
    assert_eq!(labels.dims(), [batch, seq], "labels must be [batch, seq]");
    assert_eq!(mask.dims(), [batch, seq], "mask must be [batch, seq]");
    let labels = labels.mask_fill(mask.clone().bool_not(), 0);
    let logps = row_logps(
        logits.reshape([batch * seq, vocab]),
        labels.reshape([batch * seq]),
    );
    logps.reshape([batch, seq]) * mask.float()
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    type B = NdArray;

    fn case() -> (Tensor<B, 3>, Tensor<B, 2, Int>, Tensor<B, 2, Bool>) {
        let device = Default::default();
        let logits = Tensor::<B, 3>::random([3, 5, 7], Distribution::Normal(0.0, 3.0), &device);
        let labels = Tensor::<B, 2, Int>::from_data(
            [[1, 6, 0, -100, 2], [3, 3, 5, 4, 0], [-100, -100, 1, 2, 6]],
            &device,
        );
        let mask = labels.clone().greater_equal_elem(0);
        // The middle sequence scores nothing: its sums must be zero, its neighbours unaffected.
        let mask = mask.slice_assign(
            s![1..2, ..],
            Tensor::<B, 2, Bool>::from_data([[false; 5]], &device),
        );
        (logits, labels, mask)
    }

    #[test]
    fn row_sums_equal_the_masked_sum_of_per_position_logps() {
        let (logits, labels, mask) = case();
        let per_position = token_logps(logits.clone(), labels.clone(), mask.clone())
            .sum_dim(1)
            .reshape([3]);
        let rows = ScoredRows::new(labels, mask);
        assert_eq!(rows.len(), 7);
        let out = rows.logps(rows.gather(logits));
        let (a, b): (Vec<f32>, Vec<f32>) = (
            out.logps.into_data().to_vec().unwrap(),
            per_position.into_data().to_vec().unwrap(),
        );
        assert_eq!(a[1], 0.0);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4, "{a:?} vs {b:?}");
        }
        let counts: Vec<f32> = out.token_counts.into_data().to_vec().unwrap();
        assert_eq!(counts, [4.0, 0.0, 3.0]);
    }

    #[test]
    fn statistics_are_entropies_and_hits_summed_per_sequence() {
        let (logits, labels, mask) = case();
        let values: Vec<f32> = logits.clone().into_data().to_vec().unwrap();
        let ids: Vec<i64> = labels
            .clone()
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        let flags: Vec<bool> = mask.clone().into_data().to_vec().unwrap();
        let (mut entropy, mut hits) = ([0f64; 3], [0f64; 3]);
        for (p, &on) in flags.iter().enumerate() {
            if !on {
                continue;
            }
            let row = &values[p * 7..(p + 1) * 7];
            let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
            entropy[p / 5] -= row
                .iter()
                .map(|&x| (x as f64).exp() / z * ((x as f64) - z.ln()))
                .sum::<f64>();
            let best = (0..7).max_by(|&i, &j| row[i].total_cmp(&row[j])).unwrap();
            hits[p / 5] += (best as i64 == ids[p]) as u8 as f64;
        }
        let rows = ScoredRows::new(labels, mask);
        let stats = rows.statistics(rows.gather(logits));
        assert!(
            stats.aligned_logps.is_none(),
            "WPO terms were not asked for"
        );
        let h: Vec<f32> = stats.entropy.into_data().to_vec().unwrap();
        let a: Vec<f32> = stats.top1.into_data().to_vec().unwrap();
        for s in 0..3 {
            assert!(
                (h[s] as f64 - entropy[s]).abs() < 1e-4,
                "{h:?} vs {entropy:?}"
            );
            assert_eq!(a[s] as f64, hits[s]);
        }
    }

    #[test]
    fn chunked_rows_give_the_unchunked_values() {
        let (logits, labels, mask) = case();
        let device = Default::default();
        let rows = ScoredRows::new(labels, mask).with_wpo_terms();
        let hidden = rows.gather(logits);
        let weight = Tensor::<B, 2>::random([7, 11], Distribution::Normal(0.0, 1.0), &device);
        let head = |h: Tensor<B, 2>| h.matmul(weight.clone());
        let (whole, whole_stats) = rows.logps_and_statistics(head(hidden.clone()), true);
        let read = |t: Tensor<B, 1>| t.into_data().to_vec::<f32>().unwrap();
        for chunk in [1, 2, 3, 7, 100] {
            let ranges: Vec<_> = rows.chunks(chunk).collect();
            assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), 7);
            assert_eq!(ranges.len(), 7usize.div_ceil(chunk));
            let (out, stats) =
                rows.chunked_logps_and_statistics(hidden.clone(), &head, chunk, true);
            let close = |a: Vec<f32>, b: Vec<f32>| {
                for (x, y) in a.iter().zip(&b) {
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                        "{chunk}: {a:?} vs {b:?}"
                    );
                }
            };
            close(read(out.logps), read(whole.logps.clone()));
            close(read(out.logit_sums), read(whole.logit_sums.clone()));
            assert_eq!(read(out.token_counts), read(whole.token_counts.clone()));
            let (s, w) = (stats.unwrap(), whole_stats.clone().unwrap());
            close(read(s.entropy), read(w.entropy));
            close(
                read(s.aligned_logps.unwrap()),
                read(w.aligned_logps.unwrap()),
            );
            assert_eq!(read(s.top1), read(w.top1));
        }
    }

    #[test]
    fn per_row_spreads_sequence_values_over_their_rows() {
        let (_, labels, mask) = case();
        let device = Default::default();
        let rows = ScoredRows::new(labels, mask);
        let per_row = rows.per_row(Tensor::<B, 1>::from_data([1.0, 2.0, 3.0], &device));
        // Rows in row-major order: four of sequence 0, none of 1, three of 2.
        assert_eq!(
            per_row.into_data().to_vec::<f32>().unwrap(),
            [1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0]
        );
    }

    #[test]
    fn length_desensitized_rows_weigh_the_longer_tail_in_sums_and_per_row() {
        let device = Default::default();
        // Two pairs: chosen lengths 3 and 1, rejected lengths 1 and 2.
        let mask = Tensor::<B, 2, Bool>::from_data(
            [
                [true, true, true],
                [false, true, false],
                [true, false, false],
                [false, true, true],
            ],
            &device,
        );
        let labels = Tensor::<B, 2, Int>::zeros([4, 3], &device);
        let rows = ScoredRows::new(labels, mask).length_desensitized(0.25);
        let per_row = rows.per_row(Tensor::<B, 1>::from_data([1.0, 2.0, 3.0, 4.0], &device));
        assert_eq!(
            per_row.into_data().to_vec::<f32>().unwrap(),
            [1.0, 0.25, 0.25, 2.0, 3.0, 4.0, 1.0]
        );
        // Uniform logits over 4 tokens: each token ln(1/4); counts stay unweighted.
        let out = rows.logps(Tensor::zeros([7, 4], &device));
        let l = 0.25f32.ln();
        let logps: Vec<f32> = out.logps.into_data().to_vec().unwrap();
        for (got, want) in logps.iter().zip([1.5 * l, l, l, 1.25 * l]) {
            assert!((got - want).abs() < 1e-6, "{logps:?}");
        }
        let counts: Vec<f32> = out.token_counts.into_data().to_vec().unwrap();
        assert_eq!(counts, [3.0, 1.0, 1.0, 2.0]);
    }

    #[test]
    fn wpo_terms_are_the_label_log_prob_less_log_sum_of_squared_probs() {
        let (logits, labels, mask) = case();
        let ids: Vec<i64> = labels.clone().into_data().to_vec().unwrap();
        let flags: Vec<bool> = mask.clone().into_data().to_vec().unwrap();
        let values: Vec<f32> = logits.clone().into_data().to_vec().unwrap();
        let mut aligned = [0f64; 3];
        for p in 0..15 {
            if !flags[p] {
                continue;
            }
            let row: Vec<f64> = values[p * 7..(p + 1) * 7]
                .iter()
                .map(|&x| x as f64)
                .collect();
            let z: f64 = row.iter().map(|x| x.exp()).sum();
            let sum_sq: f64 = row.iter().map(|x| (x.exp() / z).powi(2)).sum();
            aligned[p / 5] += row[ids[p] as usize] - z.ln() - sum_sq.ln();
        }
        let rows = ScoredRows::new(labels, mask).with_wpo_terms();
        let stats = rows.statistics(rows.gather(logits));
        let got: Vec<f32> = stats.aligned_logps.unwrap().into_data().to_vec().unwrap();
        for s in 0..3 {
            assert!(
                (got[s] as f64 - aligned[s]).abs() < 1e-4,
                "{got:?} vs {aligned:?}"
            );
        }
    }

    #[test]
    fn a_batch_without_scored_positions_gives_zeros() {
        let (logits, labels, _) = case();
        let none = labels.clone().greater_elem(100);
        let out = sequence_logps(logits.clone(), labels.clone(), none.clone());
        let logps: Vec<f32> = out.logps.into_data().to_vec().unwrap();
        assert_eq!(logps, [0.0; 3]);
        let rows = ScoredRows::new(labels, none);
        assert!(rows.is_empty());
        let stats = rows.statistics(rows.gather(logits));
        assert_eq!(stats.entropy.into_data().to_vec::<f32>().unwrap(), [0.0; 3]);
    }
}
