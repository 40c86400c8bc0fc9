//! A tokenized preference dataset: checked records turned into token ids, ready for batching.

use std::path::PathBuf;

use super::DataError;
use super::batch::Truncation;
use super::source::{RecordError, Records, SourcedRecord, SourcedUnpaired};
use super::tokenize::{PairTokenizer, TokenizedPair};

/// Tokenized pairs with the file and line each came from.
///
/// An unpaired (KTO) dataset holds one example per entry, in the same shape: `chosen` is the
/// example's completion and `rejected` its KL completion (another example's completion, which
/// the example's prompt is scored with to estimate the KL term), and [`Self::unpaired`] holds the
/// labels.
#[derive(Clone, Debug, Default)]
pub struct PreferenceDataset {
    /// The pairs (or unpaired examples with their KL completions).
    pub pairs: Vec<TokenizedPair>,
    /// `(file, line)` of each pair.
    pub sources: Vec<(PathBuf, usize)>,
    /// Pairs dropped because their prompt alone fills `max_length` (TRL drops them too).
    pub dropped_too_long: usize,
    /// For unpaired data: the labels and how the KL completions were chosen.
    pub unpaired: Option<Unpaired>,
}

/// The labels of an unpaired (KTO) dataset and how its KL completions were assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpaired {
    /// Whether each example's completion is desirable.
    pub labels: Vec<bool>,
    /// Each example's KL completion is the completion of the example before it within
    /// consecutive blocks of this many examples (the first takes the block's last), as TRL
    /// builds them with its per-device train batch size.
    pub kl_block: usize,
}

impl PreferenceDataset {
    /// Tokenizes `records`; a record that fails to tokenize (for example, a chat template that
    /// raises) is reported like a malformed row, or dropped into `skipped` with `skip_invalid`.
    pub fn build(
        records: &[SourcedRecord],
        tokenizer: &PairTokenizer<'_>,
        truncation: &Truncation,
        skip_invalid: bool,
        skipped: &mut Vec<RecordError>,
    ) -> Result<Self, DataError> {
        let mut out = Self::default();
        let mut errors = Vec::new();
        for r in records {
            match tokenizer.tokenize(&r.record) {
                Ok(pair) if truncation.drops(&pair) => out.dropped_too_long += 1,
                Ok(pair) => {
                    out.pairs.push(pair);
                    out.sources.push((r.file.clone(), r.line));
                }
                Err(e) => errors.push(RecordError {
                    file: r.file.clone(),
                    line: r.line,
                    field: String::new(),
                    problem: format!("cannot tokenize: {e}"),
                }),
            }
        }
        if !errors.is_empty() && !skip_invalid {
            return Err(DataError::Invalid {
                errors,
                total: records.len(),
            });
        }
        skipped.extend(errors);
        Ok(out)
    }

    /// Tokenizes `records` for `loss`: pairs for a paired loss; for an unpaired one (KTO)
    /// unpaired examples, or pairs split into them as TRL's `KTOTrainer` does
    /// ([`Records::as_unpaired`]), with KL completions cycled in blocks of `kl_block` (the
    /// per-device batch size). Unpaired examples for a paired loss are refused, naming the first.
    /// Rows that fail to tokenize go to `records.skipped` with `skip_invalid`.
    pub fn from_records(
        records: &mut Records,
        tokenizer: &PairTokenizer<'_>,
        truncation: &Truncation,
        loss: &ganpo_core::PreferenceLoss,
        kl_block: usize,
        skip_invalid: bool,
    ) -> Result<Self, DataError> {
        if loss.is_unpaired() {
            let examples = records.as_unpaired();
            let skipped = &mut records.skipped;
            return Self::build_unpaired(
                &examples,
                tokenizer,
                truncation,
                kl_block,
                skip_invalid,
                skipped,
            );
        }
        if let Some(first) = records.unpaired.first() {
            return Err(DataError::UnpairedForPairedLoss {
                at: (first.file.clone(), first.line),
                loss: loss.losses[0].kind.name(),
            });
        }
        Self::build(
            &records.records,
            tokenizer,
            truncation,
            skip_invalid,
            &mut records.skipped,
        )
    }

    /// Tokenizes unpaired examples and gives each its KL completion (see [`Unpaired`]) after
    /// dropping those whose prompt alone fills `max_length`, as TRL does; errors as [`Self::build`].
    pub fn build_unpaired(
        records: &[SourcedUnpaired],
        tokenizer: &PairTokenizer<'_>,
        truncation: &Truncation,
        kl_block: usize,
        skip_invalid: bool,
        skipped: &mut Vec<RecordError>,
    ) -> Result<Self, DataError> {
        let mut out = Self::default();
        let mut labels = Vec::new();
        let mut errors = Vec::new();
        for r in records {
            let example = match tokenizer.tokenize_unpaired(&r.record) {
                Ok(e) => e,
                Err(e) => {
                    errors.push(RecordError {
                        file: r.file.clone(),
                        line: r.line,
                        field: String::new(),
                        problem: format!("cannot tokenize: {e}"),
                    });
                    continue;
                }
            };
            let pair = TokenizedPair {
                prompt: example.prompt,
                rejected: example.completion.clone(),
                chosen: example.completion,
            };
            if truncation.drops(&pair) {
                out.dropped_too_long += 1;
                continue;
            }
            out.pairs.push(pair);
            out.sources.push((r.file.clone(), r.line));
            labels.push(r.record.label);
        }
        if !errors.is_empty() && !skip_invalid {
            return Err(DataError::Invalid {
                errors,
                total: records.len(),
            });
        }
        skipped.extend(errors);
        out.unpaired = Some(Unpaired {
            labels,
            kl_block: kl_block.max(1),
        });
        out.assign_kl_completions();
        Ok(out)
    }

    /// Sets each unpaired example's KL completion: within each block of `kl_block` examples,
    /// the completion of the one before it (TRL's `[y_n, y_1, ..., y_{n-1}]`).
    fn assign_kl_completions(&mut self) {
        let Some(u) = &self.unpaired else {
            return;
        };
        for block in self.pairs.chunks_mut(u.kl_block) {
            let completions: Vec<Vec<u32>> = block.iter().map(|p| p.chosen.clone()).collect();
            let n = block.len();
            for (j, pair) in block.iter_mut().enumerate() {
                pair.rejected = completions[(j + n - 1) % n].clone();
            }
        }
    }

    /// The labels of the examples at `indices` (unpaired data only).
    pub fn labels_of(&self, indices: &[usize]) -> Option<Vec<bool>> {
        let u = self.unpaired.as_ref()?;
        Some(indices.iter().map(|&i| u.labels[i]).collect())
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Longest side (prompt + longer completion) of each pair, for length grouping.
    pub fn lengths(&self) -> Vec<usize> {
        self.pairs
            .iter()
            .map(|p| p.prompt.len() + p.chosen.len().max(p.rejected.len()))
            .collect()
    }

    /// The pairs at `indices`, in that order. Unpaired examples get their KL completions anew
    /// from the subset's own blocks, so a held-out split never scores another split's completions.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let mut out = Self {
            pairs: indices.iter().map(|&i| self.pairs[i].clone()).collect(),
            sources: indices.iter().map(|&i| self.sources[i].clone()).collect(),
            dropped_too_long: 0,
            unpaired: self.unpaired.as_ref().map(|u| Unpaired {
                labels: indices.iter().map(|&i| u.labels[i]).collect(),
                kl_block: u.kl_block,
            }),
        };
        out.assign_kl_completions();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(completion: u32) -> TokenizedPair {
        TokenizedPair {
            prompt: vec![1, completion],
            chosen: vec![completion],
            rejected: vec![completion],
        }
    }

    #[test]
    fn kl_completions_cycle_within_blocks_and_anew_in_a_subset() {
        let mut data = PreferenceDataset {
            pairs: (10..15).map(example).collect(),
            sources: (1..6).map(|l| (PathBuf::from("d.jsonl"), l)).collect(),
            dropped_too_long: 0,
            unpaired: Some(Unpaired {
                labels: vec![true, false, true, true, false],
                kl_block: 2,
            }),
        };
        data.assign_kl_completions();
        let kl =
            |d: &PreferenceDataset| -> Vec<u32> { d.pairs.iter().map(|p| p.rejected[0]).collect() };
        // Blocks [10, 11], [12, 13], [14]: each takes the completion before it in its block.
        assert_eq!(kl(&data), vec![11, 10, 13, 12, 14]);
        let sub = data.subset(&[4, 0, 2]);
        assert_eq!(kl(&sub), vec![10, 14, 12]);
        assert_eq!(sub.labels_of(&[0, 1, 2]), Some(vec![false, true, true]));
        // Prompts stay with their examples.
        assert_eq!(sub.pairs[0].prompt, vec![1, 14]);
    }
}
