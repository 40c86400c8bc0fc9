//! A trained reward model as a reward function: an HF sequence-classifier directory (as
//! `ganpo reward train` or transformers writes it) with its tokenizer, scoring texts in batches.

use std::path::Path;

use burn::prelude::*;
use ganpo_models::classifier::{SequenceClassifier, load_classifier};
use ganpo_models::{ModelError, Tokenizer};

use crate::train::reward::{collate, reward_ids};

/// A reward model and the tokenizer its inputs are made with.
#[derive(Debug)]
pub struct RewardModel<B: Backend> {
    /// The classifier; its reward is [`SequenceClassifier::reward`].
    pub model: SequenceClassifier<B>,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Longest input in tokens; longer texts keep their start.
    pub max_length: usize,
}

impl<B: Backend> RewardModel<B> {
    /// Loads the classifier directory `dir`, which must hold a `tokenizer.json`.
    pub fn load(dir: &Path, max_length: usize, device: &B::Device) -> Result<Self, ModelError> {
        let loaded = load_classifier::<B>(dir, device)?;
        let tokenizer = loaded.tokenizer.ok_or_else(|| ModelError::Io {
            path: dir.join("tokenizer.json"),
            reason: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "a reward model needs its tokenizer",
            ),
        })?;
        Ok(Self {
            model: loaded.model,
            tokenizer,
            max_length,
        })
    }

    /// The reward of each text (a prompt and its completion, concatenated), `batch` texts per
    /// forward pass.
    pub fn score(
        &self,
        texts: &[String],
        batch: usize,
        device: &B::Device,
    ) -> Result<Vec<f64>, ModelError> {
        let ids = texts
            .iter()
            .map(|t| reward_ids(&self.tokenizer, t, self.max_length))
            .collect::<Result<Vec<_>, _>>()?;
        let pad = crate::data::pad_id(&self.tokenizer);
        let mut out = Vec::with_capacity(texts.len());
        for chunk in ids.chunks(batch.max(1)) {
            let rows: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
            let (ids, mask) = collate::<B>(&rows, pad, device);
            let r: Vec<f32> = self
                .model
                .reward(ids, mask)
                .into_data()
                .to_vec()
                .unwrap_or_default();
            out.extend(r.into_iter().map(f64::from));
        }
        Ok(out)
    }
}
