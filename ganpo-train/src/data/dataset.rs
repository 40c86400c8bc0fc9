//! A tokenized preference dataset: checked records turned into token ids, ready for batching.

use std::path::PathBuf;

use super::DataError;
use super::batch::Truncation;
use super::source::{RecordError, SourcedRecord};
use super::tokenize::{PairTokenizer, TokenizedPair};

/// Tokenized pairs with the file and line each came from.
#[derive(Clone, Debug, Default)]
pub struct PreferenceDataset {
    /// The pairs.
    pub pairs: Vec<TokenizedPair>,
    /// `(file, line)` of each pair.
    pub sources: Vec<(PathBuf, usize)>,
    /// Pairs dropped because their prompt alone fills `max_length` (TRL drops them too).
    pub dropped_too_long: usize,
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

    /// The pairs at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Self {
        Self {
            pairs: indices.iter().map(|&i| self.pairs[i].clone()).collect(),
            sources: indices.iter().map(|&i| self.sources[i].clone()).collect(),
            dropped_too_long: 0,
        }
    }
}
