//! A trained reward model as a reward function: an HF sequence-classifier directory (as
//! `ganpo reward train` or transformers writes it) with its tokenizer, scoring texts in batches.

use std::path::Path;

use burn::prelude::*;
use ganpo_models::classifier::{SequenceClassifier, load_classifier};
use ganpo_models::{ModelError, Tokenizer};

use super::data::{collate, reward_ids};
use crate::data::longest_first;

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
    /// forward pass. Batches are cut from the texts sorted by length, so they pad little; a
    /// text's reward does not depend on the batch it is scored in (padding is masked and comes
    /// after its last token).
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
        let order = longest_first(&ids.iter().map(Vec::len).collect::<Vec<_>>());
        let mut out = vec![0.0; texts.len()];
        for chunk in order.chunks(batch.max(1)) {
            let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let (tokens, mask) = collate::<B>(&rows, pad, device);
            let rewards = self.model.reward(tokens, mask).into_data();
            for (&i, r) in chunk.iter().zip(rewards.iter::<f64>()) {
                out[i] = r;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use super::*;
    use crate::task::{TaskSpec, model_config, write_task};

    #[test]
    fn a_texts_reward_does_not_depend_on_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TaskSpec {
            sft_examples: 3,
            train_prompts: 2,
            eval_prompts: 2,
            ..TaskSpec::default()
        };
        let files = write_task(dir.path(), &spec).unwrap();
        let device = Default::default();
        let backbone = model_config(&spec).init::<NdArray>(&device);
        let labels = vec!["negative".to_string(), "positive".to_string()];
        let rm = RewardModel {
            model: SequenceClassifier::new(backbone, labels, &device),
            tokenizer: Tokenizer::from_dir(&files.model).unwrap(),
            max_length: 64,
        };
        // Lengths 1 to 9 words, out of order, so batches of 4 mix and reorder them.
        let words = [
            "the", "plot", "was", "very", "good", "the", "plot", "was", "very",
        ];
        let texts: Vec<String> = [3, 9, 1, 6, 2, 8, 5, 7, 4]
            .iter()
            .map(|&n| words[..n].join(" "))
            .collect();
        let batched = rm.score(&texts, 4, &device).unwrap();
        let alone: Vec<f64> = texts
            .iter()
            .map(|t| rm.score(std::slice::from_ref(t), 1, &device).unwrap()[0])
            .collect();
        assert_eq!(batched, alone);
        let distinct: std::collections::BTreeSet<u64> = alone.iter().map(|r| r.to_bits()).collect();
        assert_eq!(
            distinct.len(),
            texts.len(),
            "every text scores differently: {alone:?}"
        );
    }
}
