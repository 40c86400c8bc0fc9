//! From tokenized pairs to padded tensor batches: truncation, padding, ordering, splitting.

use burn::prelude::*;
use ganpo_core::PairLengths;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::tokenize::TokenizedPair;

/// Which end of a too-long sequence survives truncation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TruncationMode {
    /// Keep the first `max_length` tokens (TRL's default).
    #[default]
    KeepStart,
    /// Keep the last `max_length` tokens.
    KeepEnd,
}

/// Sequence-length limits, as TRL 1.x's `max_length` / `truncation_mode`, plus the
/// `max_prompt_length` of TRL 0.x.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Truncation {
    /// Longest prompt + completion sequence; `None` = no limit.
    pub max_length: Option<usize>,
    /// Longest prompt, applied first (the prompt keeps its start or end per `mode`); `None` = no
    /// limit (TRL 1.x has no such option).
    pub max_prompt_length: Option<usize>,
    /// Which end survives.
    pub mode: TruncationMode,
}

impl Default for Truncation {
    fn default() -> Self {
        Self {
            max_length: Some(1024),
            max_prompt_length: None,
            mode: TruncationMode::KeepStart,
        }
    }
}

impl Truncation {
    /// Whether TRL drops this example before training: with `keep_start`, a prompt that alone
    /// fills `max_length` would leave no completion token.
    pub fn drops(&self, pair: &TokenizedPair) -> bool {
        let prompt = self.prompt_len(pair.prompt.len());
        matches!(
            (self.mode, self.max_length),
            (TruncationMode::KeepStart, Some(max)) if prompt >= max
        )
    }

    fn prompt_len(&self, len: usize) -> usize {
        self.max_prompt_length.map_or(len, |m| len.min(m))
    }

    /// One side of a pair after truncation: `(ids, completion_mask)`.
    pub fn apply(&self, prompt: &[u32], completion: &[u32]) -> (Vec<u32>, Vec<bool>) {
        let p = self.prompt_len(prompt.len());
        let prompt = match self.mode {
            TruncationMode::KeepStart => &prompt[..p],
            TruncationMode::KeepEnd => &prompt[prompt.len() - p..],
        };
        let mut ids: Vec<u32> = prompt.iter().chain(completion).copied().collect();
        let mut mask: Vec<bool> = (0..ids.len()).map(|i| i >= prompt.len()).collect();
        if let Some(max) = self.max_length.filter(|&m| ids.len() > m) {
            let range = match self.mode {
                TruncationMode::KeepStart => 0..max,
                TruncationMode::KeepEnd => ids.len() - max..ids.len(),
            };
            ids = ids[range.clone()].to_vec();
            mask = mask[range].to_vec();
        }
        (ids, mask)
    }
}

/// A padded batch of `n` pairs on the host: rows `0..n` are prompt + chosen, rows `n..2n`
/// prompt + rejected, right-padded to the longest row.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBatch {
    /// Number of pairs.
    pub pairs: usize,
    /// Padded length.
    pub seq: usize,
    /// `[2n * seq]` token ids.
    pub ids: Vec<i64>,
    /// `[2n * seq]`, true = real token.
    pub attention: Vec<bool>,
    /// `[2n * seq]`, true = completion token.
    pub completion: Vec<bool>,
    /// Completion tokens per chosen row.
    pub chosen_lengths: Vec<usize>,
    /// Completion tokens per rejected row.
    pub rejected_lengths: Vec<usize>,
    /// Real (non-padding) tokens in the batch.
    pub tokens: usize,
    /// Unpaired (KTO) batches: whether each example is desirable; rows `0..n` are then the
    /// examples and rows `n..2n` their KL rows.
    pub labels: Option<Vec<bool>>,
}

/// Truncates and pads `pairs` into one batch (padding with `pad_id`, length rounded up to a
/// multiple of `pad_to_multiple_of` when set), as TRL's `DataCollatorForPreference` does.
pub fn collate(
    pairs: &[&TokenizedPair],
    truncation: &Truncation,
    pad_id: u32,
    pad_to_multiple_of: Option<usize>,
) -> HostBatch {
    let rows: Vec<(Vec<u32>, Vec<bool>)> = pairs
        .iter()
        .map(|p| truncation.apply(&p.prompt, &p.chosen))
        .chain(
            pairs
                .iter()
                .map(|p| truncation.apply(&p.prompt, &p.rejected)),
        )
        .collect();
    let mut seq = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
    if let Some(m) = pad_to_multiple_of.filter(|&m| m > 1) {
        seq = seq.div_ceil(m) * m;
    }
    let n = pairs.len();
    let mut batch = HostBatch {
        pairs: n,
        seq,
        ids: Vec::with_capacity(2 * n * seq),
        attention: Vec::with_capacity(2 * n * seq),
        completion: Vec::with_capacity(2 * n * seq),
        chosen_lengths: Vec::with_capacity(n),
        rejected_lengths: Vec::with_capacity(n),
        tokens: 0,
        labels: None,
    };
    for (r, (ids, mask)) in rows.iter().enumerate() {
        let pad = seq - ids.len();
        batch.tokens += ids.len();
        batch.ids.extend(ids.iter().map(|&i| i as i64));
        batch.ids.extend(std::iter::repeat_n(pad_id as i64, pad));
        batch.attention.extend(std::iter::repeat_n(true, ids.len()));
        batch.attention.extend(std::iter::repeat_n(false, pad));
        batch.completion.extend(mask);
        batch.completion.extend(std::iter::repeat_n(false, pad));
        let len = mask.iter().filter(|&&m| m).count();
        if r < n {
            batch.chosen_lengths.push(len);
        } else {
            batch.rejected_lengths.push(len);
        }
    }
    batch
}

/// The rows `spans` (each a range of rows) of a row-major `[rows * seq]` buffer.
fn rows_of<T: Copy>(v: &[T], spans: &[std::ops::Range<usize>], seq: usize) -> Vec<T> {
    spans
        .iter()
        .flat_map(|r| v[r.start * seq..r.end * seq].iter().copied())
        .collect()
}

/// A batch of pairs on a device, ready for a forward pass.
#[derive(Clone, Debug)]
pub struct PairBatch<B: Backend> {
    /// `[2n, seq]` ids, chosen rows first.
    pub ids: Tensor<B, 2, Int>,
    /// `[2n, seq]`, true = real token.
    pub attention: Tensor<B, 2, Bool>,
    /// `[2n, seq]`, true = completion token.
    pub completion: Tensor<B, 2, Bool>,
    /// Completion lengths (checked non-zero).
    pub lengths: PairLengths,
    /// Number of pairs.
    pub pairs: usize,
    /// Unpaired (KTO) batches: whether each example is desirable (rows `0..n` are the examples,
    /// rows `n..2n` their KL rows).
    pub labels: Option<Vec<bool>>,
}

impl HostBatch {
    /// The batch with `labels` (`Some` for unpaired data: see [`HostBatch::labels`]).
    pub fn with_labels(self, labels: Option<Vec<bool>>) -> Self {
        Self { labels, ..self }
    }

    /// The pairs `range` of the batch (their chosen and rejected rows, labels included), padded
    /// as the whole batch is: a data-parallel replica's share.
    pub fn pairs_in(&self, range: std::ops::Range<usize>) -> Self {
        let n = self.pairs;
        let spans = [range.clone(), n + range.start..n + range.end];
        let rows = |v: &[bool]| rows_of(v, &spans, self.seq);
        let attention = rows(&self.attention);
        Self {
            pairs: range.len(),
            seq: self.seq,
            tokens: attention.iter().filter(|&&a| a).count(),
            ids: rows_of(&self.ids, &spans, self.seq),
            attention,
            completion: rows(&self.completion),
            chosen_lengths: self.chosen_lengths[range.clone()].to_vec(),
            rejected_lengths: self.rejected_lengths[range.clone()].to_vec(),
            labels: self.labels.as_ref().map(|l| l[range].to_vec()),
        }
    }

    /// Moves the batch to `device`. Fails when a completion was truncated away entirely.
    pub fn to_device<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<PairBatch<B>, ganpo_core::LossError> {
        let shape = [2 * self.pairs, self.seq];
        Ok(PairBatch {
            ids: Tensor::from_data(TensorData::new(self.ids.clone(), shape), device),
            attention: Tensor::from_data(TensorData::new(self.attention.clone(), shape), device),
            completion: Tensor::from_data(TensorData::new(self.completion.clone(), shape), device),
            lengths: PairLengths::new(self.chosen_lengths.clone(), self.rejected_lengths.clone())?,
            pairs: self.pairs,
            labels: self.labels.clone(),
        })
    }
}

/// The order in which one epoch visits `lengths.len()` examples.
///
/// Deterministic in `(seed, epoch)`. With `shuffle` the examples are permuted; with
/// `group_by_length` the permutation is cut into mega-batches of `50 * batch_size` examples, each
/// sorted by decreasing length, so batches hold similar lengths and pad less (the scheme of
/// transformers' `LengthGroupedSampler`).
pub fn epoch_order(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: u64,
    shuffle: bool,
    group_by_length: bool,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    if shuffle {
        let mut rng = StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        order.shuffle(&mut rng);
    }
    if group_by_length {
        for mega in order.chunks_mut(50 * batch_size.max(1)) {
            mega.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        }
    }
    order
}

/// Indices `0..lengths.len()` from the longest example to the shortest (ties in index order):
/// batches cut from it pad least. For passes without gradients, whose results do not depend on
/// the order (evaluation, scoring).
pub fn longest_first(lengths: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    order
}

/// Splits indices `0..n` into `(train, eval)` with `eval_fraction` of them (at least one when the
/// fraction is positive) held out, chosen by a permutation seeded with `seed`.
pub fn split_indices(n: usize, eval_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    if eval_fraction <= 0.0 || n < 2 {
        return ((0..n).collect(), Vec::new());
    }
    let k = ((n as f64 * eval_fraction).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut eval = order[..k].to_vec();
    let mut train = order[k..].to_vec();
    eval.sort_unstable();
    train.sort_unstable();
    (train, eval)
}

/// The padding id: the tokenizer's pad token, else its first EOS token, else 0 (TRL's rule).
pub fn pad_id(tokenizer: &ganpo_models::Tokenizer) -> u32 {
    tokenizer
        .pad_token_id
        .or_else(|| tokenizer.eos_token_ids.first().copied())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(p: &[u32], c: &[u32], r: &[u32]) -> TokenizedPair {
        TokenizedPair {
            prompt: p.to_vec(),
            chosen: c.to_vec(),
            rejected: r.to_vec(),
        }
    }

    #[test]
    fn collate_matches_trls_docstring_example() {
        // DataCollatorForPreference's documented example (pad id 0).
        let a = pair(&[1, 2, 3], &[4, 5], &[6]);
        let b = pair(&[7, 8], &[9], &[10, 11]);
        let no_limit = Truncation {
            max_length: None,
            ..Default::default()
        };
        let batch = collate(&[&a, &b], &no_limit, 0, None);
        assert_eq!(batch.seq, 5);
        assert_eq!(
            batch.ids,
            vec![1, 2, 3, 4, 5, 7, 8, 9, 0, 0, 1, 2, 3, 6, 0, 7, 8, 10, 11, 0]
        );
        let ones = |v: &[bool]| v.iter().map(|&b| b as u8).collect::<Vec<_>>();
        assert_eq!(
            ones(&batch.attention),
            vec![1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0]
        );
        assert_eq!(
            ones(&batch.completion),
            vec![0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0]
        );
        assert_eq!(batch.chosen_lengths, vec![2, 1]);
        assert_eq!(batch.rejected_lengths, vec![1, 2]);
        assert_eq!(collate(&[&a, &b], &no_limit, 0, Some(4)).seq, 8);
    }

    #[test]
    fn truncation_modes() {
        let t = |max_length, max_prompt_length, mode| Truncation {
            max_length,
            max_prompt_length,
            mode,
        };
        let (p, c) = ([1, 2, 3, 4], [5, 6, 7]);
        let keep_start = t(Some(5), None, TruncationMode::KeepStart);
        assert_eq!(
            keep_start.apply(&p, &c),
            (vec![1, 2, 3, 4, 5], vec![false, false, false, false, true])
        );
        let keep_end = t(Some(5), None, TruncationMode::KeepEnd);
        assert_eq!(
            keep_end.apply(&p, &c),
            (vec![3, 4, 5, 6, 7], vec![false, false, true, true, true])
        );
        let prompt_cut = t(None, Some(2), TruncationMode::KeepEnd);
        assert_eq!(prompt_cut.apply(&p, &c).0, vec![3, 4, 5, 6, 7]);
        let prompt_cut = t(None, Some(2), TruncationMode::KeepStart);
        assert_eq!(prompt_cut.apply(&p, &c).0, vec![1, 2, 5, 6, 7]);
        assert!(t(Some(4), None, TruncationMode::KeepStart).drops(&pair(&p, &c, &c)));
        assert!(!t(Some(4), None, TruncationMode::KeepEnd).drops(&pair(&p, &c, &c)));
        assert!(!t(Some(4), Some(3), TruncationMode::KeepStart).drops(&pair(&p, &c, &c)));
    }

    #[test]
    fn orders_are_seeded_permutations() {
        let lengths: Vec<usize> = (0..40).map(|i| (i * 7) % 13).collect();
        let a = epoch_order(&lengths, 4, 1, 0, true, false);
        assert_eq!(a, epoch_order(&lengths, 4, 1, 0, true, false));
        assert_ne!(a, epoch_order(&lengths, 4, 1, 1, true, false));
        assert_ne!(a, epoch_order(&lengths, 4, 2, 0, true, false));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..40).collect::<Vec<_>>());
        assert_eq!(
            epoch_order(&lengths, 4, 1, 0, false, false),
            (0..40).collect::<Vec<_>>()
        );
        let grouped = epoch_order(&lengths, 4, 1, 0, true, true);
        assert!(grouped.windows(2).all(|w| lengths[w[0]] >= lengths[w[1]]));
        let (train, eval) = split_indices(40, 0.1, 3);
        assert_eq!((train.len(), eval.len()), (36, 4));
        assert!(eval.iter().all(|i| !train.contains(i)));
        assert_eq!(split_indices(40, 0.1, 3), (train, eval));
    }
}
