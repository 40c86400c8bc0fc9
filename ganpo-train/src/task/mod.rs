//! Built-in tasks whose reward code computes exactly, so every number a run prints can be checked.
//!
//! - [`sentiment`]: a synthetic review language and its sentiment oracle, the quickstart's task.
//!
//! [`write_task`] lays a task out as ordinary files — an untrained model directory (config and
//! tokenizer), SFT text and prompt files — which the `sft`, `sample`, `train`, `kl` and `score`
//! commands take like any user's files.

pub mod sentiment;

use std::path::{Path, PathBuf};

use ganpo_models::ModelConfig;
use ganpo_models::export::hf_config;
use ganpo_models::llama::{Family, LlamaConfig};
use ganpo_models::nn::RopeScaling;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::io::{write_json, write_jsonl};
use sentiment::ReviewStyle;

/// Sizes of a task instance and of its model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Seed of everything drawn.
    pub seed: u64,
    /// Reviews for supervised fine-tuning.
    pub sft_examples: usize,
    /// Prompts from which preference pairs are sampled.
    pub train_prompts: usize,
    /// Held-out prompts (evaluation pairs, rewards, KL).
    pub eval_prompts: usize,
    /// Width of the model.
    pub hidden_size: usize,
    /// Decoder layers of the model.
    pub layers: usize,
}

impl Default for TaskSpec {
    fn default() -> Self {
        Self {
            seed: 0,
            sft_examples: 4000,
            train_prompts: 512,
            eval_prompts: 128,
            hidden_size: 64,
            layers: 2,
        }
    }
}

/// Where [`write_task`] put each file.
#[derive(Clone, Debug)]
pub struct TaskFiles {
    /// The untrained model: `config.json` and tokenizer files, no weights.
    pub model: PathBuf,
    /// SFT examples, JSONL with a `text` field.
    pub sft: PathBuf,
    /// Training prompts, JSONL with a `prompt` field.
    pub train_prompts: PathBuf,
    /// Held-out prompts, JSONL with a `prompt` field.
    pub eval_prompts: PathBuf,
}

impl TaskFiles {
    /// The layout under `dir`.
    pub fn under(dir: &Path) -> Self {
        Self {
            model: dir.join("model"),
            sft: dir.join("sft.jsonl"),
            train_prompts: dir.join("prompts-train.jsonl"),
            eval_prompts: dir.join("prompts-eval.jsonl"),
        }
    }
}

/// The Llama-architecture model of the sentiment task: `hidden_size` wide, `layers` deep, 4
/// query and 2 key/value heads, tied embeddings.
pub fn model_config(spec: &TaskSpec) -> ModelConfig {
    let heads = 4;
    ModelConfig::Llama(LlamaConfig {
        family: Family::Llama,
        vocab_size: sentiment::vocabulary().len(),
        hidden_size: spec.hidden_size,
        intermediate_size: 2 * spec.hidden_size,
        num_hidden_layers: spec.layers,
        num_attention_heads: heads,
        num_key_value_heads: heads / 2,
        head_dim: spec.hidden_size / heads,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: RopeScaling::Default,
        tie_word_embeddings: true,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        qk_norm: false,
        sliding_window: None,
        max_position_embeddings: 64,
    })
}

/// Writes the sentiment task under `dir` ([`TaskFiles::under`]): the model directory, SFT reviews
/// (each followed by nothing: the SFT step appends EOS), and disjoint draws of prompts.
pub fn write_task(dir: &Path, spec: &TaskSpec) -> std::io::Result<TaskFiles> {
    let files = TaskFiles::under(dir);
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let style = ReviewStyle::default();
    let sft: Vec<_> = (0..spec.sft_examples)
        .map(|_| serde_json::json!({"text": style.review(&mut rng).join(" ")}))
        .collect();
    let prompts = |n: usize, rng: &mut StdRng| -> Vec<serde_json::Value> {
        (0..n)
            .map(|_| serde_json::json!({"prompt": style.prompt(rng)}))
            .collect()
    };
    let train = prompts(spec.train_prompts, &mut rng);
    let eval = prompts(spec.eval_prompts, &mut rng);
    write_json(
        &files.model.join("config.json"),
        &hf_config(&model_config(spec)).map_err(std::io::Error::other)?,
    )?;
    write_json(
        &files.model.join("tokenizer.json"),
        &sentiment::tokenizer_json(),
    )?;
    write_json(
        &files.model.join("tokenizer_config.json"),
        &sentiment::tokenizer_config_json(),
    )?;
    write_json(
        &files.model.join("generation_config.json"),
        &sentiment::generation_config_json(),
    )?;
    write_jsonl(&files.sft, &sft)?;
    write_jsonl(&files.train_prompts, &train)?;
    write_jsonl(&files.eval_prompts, &eval)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ganpo_models::Tokenizer;

    #[test]
    fn the_tokenizer_round_trips_and_splits_like_trl_expects() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_task(
            dir.path(),
            &TaskSpec {
                sft_examples: 3,
                train_prompts: 2,
                eval_prompts: 2,
                ..TaskSpec::default()
            },
        )
        .unwrap();
        let tok = Tokenizer::from_dir(&files.model).unwrap();
        assert_eq!(tok.eos_token.as_deref(), Some(sentiment::EOS));
        assert_eq!(tok.eos_token_ids, vec![1]);
        assert_eq!(tok.pad_token_id, Some(0));
        let prompt = tok.encode("the plot was", true).unwrap();
        let completion = tok.encode(" very good<eos>", true).unwrap();
        let whole = tok.encode("the plot was very good<eos>", true).unwrap();
        assert_eq!([prompt.clone(), completion.clone()].concat(), whole);
        assert_eq!(prompt.len(), 3);
        assert!(!whole.contains(&2), "no unknown word: {whole:?}");
        assert_eq!(tok.decode(&completion, true).unwrap(), " very good");
        assert_eq!(tok.decode(&prompt, true).unwrap(), "the plot was");
        assert_eq!(tok.encode(" splendid", true).unwrap(), vec![2]);
        tok.check_vocab(model_config(&TaskSpec::default()).vocab_size())
            .unwrap();
    }
}
