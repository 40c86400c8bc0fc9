//! Sampling completions of prompts, several per prompt, in batches.

use burn::prelude::*;
use ganpo_models::generate::{GenerationConfig, generate};
use ganpo_models::{Lm, ModelError, Tokenizer};
use serde::{Deserialize, Serialize};

/// One sampled completion: a line of `ganpo sample`'s JSONL output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Index of the prompt in the prompt file (0-based).
    pub prompt_index: usize,
    /// Index of this sample among the prompt's samples.
    pub sample: usize,
    /// The prompt text.
    pub prompt: String,
    /// The completion text (special tokens removed; a leading space kept).
    pub completion: String,
    /// The completion's token ids, the EOS token included when one was produced.
    pub completion_ids: Vec<u32>,
    /// Whether the completion ended with EOS (rather than at the token limit).
    pub finished: bool,
    /// The sampling temperature (0 = greedy).
    pub temperature: f64,
    /// The reward, once scored (`ganpo score`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
}

/// Samples `num_samples` completions of each prompt with `config`, `batch_rows` sequences per
/// generation batch. Batch `k` samples with seed `config.seed + k`, so the output depends only on
/// the inputs and the seed.
pub fn sample_completions<B: Backend>(
    model: &Lm<B>,
    tokenizer: &Tokenizer,
    prompts: &[String],
    num_samples: usize,
    config: &GenerationConfig,
    batch_rows: usize,
    device: &B::Device,
) -> Result<Vec<Sample>, ModelError> {
    let encoded = prompts
        .iter()
        .map(|p| tokenizer.encode(p, true))
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<(usize, usize)> = (0..prompts.len())
        .flat_map(|p| (0..num_samples).map(move |s| (p, s)))
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for (k, chunk) in rows.chunks(batch_rows.max(1)).enumerate() {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&(p, _)| encoded[p].clone()).collect();
        let c = GenerationConfig {
            seed: config.seed.wrapping_add(k as u64),
            ..config.clone()
        };
        let completions = generate(model, &batch, &c, device);
        for (&(p, s), ids) in chunk.iter().zip(completions) {
            out.push(Sample {
                prompt_index: p,
                sample: s,
                prompt: prompts[p].clone(),
                completion: tokenizer.decode(&ids, true)?,
                finished: ids.last().is_some_and(|t| config.eos_token_ids.contains(t)),
                completion_ids: ids,
                temperature: config.temperature,
                reward: None,
            });
        }
    }
    Ok(out)
}
