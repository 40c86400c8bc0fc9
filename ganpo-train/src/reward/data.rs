//! Reward-model examples: token ids of texts with a label, or of preference pairs, and their
//! padded batches.

use burn::prelude::*;
use ganpo_models::Tokenizer;

/// Token ids a reward model reads for `text` (a prompt and its completion, concatenated): the
/// tokenizer's encoding with its special tokens, no EOS appended (transformers reads the last
/// token that is not padding, and padding is often EOS), the first `max_length` tokens kept.
pub fn reward_ids(
    tokenizer: &Tokenizer,
    text: &str,
    max_length: usize,
) -> Result<Vec<u32>, ganpo_models::ModelError> {
    let mut ids = tokenizer.encode(text, true)?;
    ids.truncate(max_length.max(1));
    Ok(ids)
}

/// What a reward model is fitted to.
#[derive(Clone, Debug, PartialEq)]
pub enum RewardData {
    /// Texts with a class index each: cross-entropy over the classifier's labels.
    Labelled(Vec<(Vec<u32>, usize)>),
    /// Preference pairs: Bradley-Terry on the reward of chosen against rejected.
    Pairs(Vec<RewardPair>),
}

/// One preference pair of token sequences (prompt included in both).
#[derive(Clone, Debug, PartialEq)]
pub struct RewardPair {
    /// The preferred text's ids.
    pub chosen: Vec<u32>,
    /// The dispreferred text's ids.
    pub rejected: Vec<u32>,
    /// How much the chosen reward should exceed the rejected one (TRL's `margin` column).
    pub margin: Option<f32>,
}

impl RewardData {
    /// Number of examples (texts or pairs).
    pub fn len(&self) -> usize {
        match self {
            Self::Labelled(v) => v.len(),
            Self::Pairs(v) => v.len(),
        }
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens of each example (both texts of a pair), for length-grouped batches.
    pub(crate) fn lengths(&self) -> Vec<usize> {
        match self {
            Self::Labelled(v) => v.iter().map(|(ids, _)| ids.len()).collect(),
            Self::Pairs(v) => v
                .iter()
                .map(|p| p.chosen.len() + p.rejected.len())
                .collect(),
        }
    }

    /// The sequences of examples `idx`, in the order the scores come back: each text, or every
    /// chosen text then every rejected one.
    pub(crate) fn sequences(&self, idx: &[usize]) -> Vec<&[u32]> {
        match self {
            Self::Labelled(v) => idx.iter().map(|&i| v[i].0.as_slice()).collect(),
            Self::Pairs(v) => idx
                .iter()
                .map(|&i| v[i].chosen.as_slice())
                .chain(idx.iter().map(|&i| v[i].rejected.as_slice()))
                .collect(),
        }
    }
}

/// Right-padded ids and attention mask of `rows`.
pub(crate) fn collate<B: Backend>(
    rows: &[&[u32]],
    pad: u32,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Bool>) {
    let len = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for r in rows {
        for j in 0..len {
            ids.push(r.get(j).copied().unwrap_or(pad) as i64);
            mask.push(j < r.len());
        }
    }
    let shape = [rows.len(), len];
    (
        Tensor::from_data(TensorData::new(ids, shape), device),
        Tensor::from_data(TensorData::new(mask, shape), device),
    )
}
