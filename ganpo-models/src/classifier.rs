//! Sequence classifiers and reward models: a causal LM backbone with a linear `score` head read at
//! the last real token. This is HF's `LlamaForSequenceClassification` /
//! `GPT2ForSequenceClassification` (and their Mistral / Qwen siblings), the model TRL's
//! `RewardTrainer` trains: one label gives a scalar reward (Bradley-Terry), several labels give
//! class logits (cross-entropy).

use std::path::Path;

use burn::nn::Linear;
use burn::prelude::*;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, TensorSnapshot};
use serde_json::{Value, json};

use crate::Decoder;
use crate::export::{HF_FILES, TokenizerFiles, write_export};
use crate::hf::{read_checkpoint, read_json};
use crate::nn::init;
use crate::nn::positions;
use crate::weights::apply;
use crate::{CausalLm, Lm, ModelConfig, ModelError, Tokenizer};

/// Field name of the backbone inside [`SequenceClassifier`]; HF checkpoints store the backbone's
/// tensors without it (`model.layers.0...`, `transformer.h.0...`).
const BACKBONE: &str = "backbone";

/// A causal LM backbone with a linear head on the hidden state of each sequence's last real token.
#[derive(Module, Debug)]
pub struct SequenceClassifier<B: Backend> {
    /// The causal LM whose last hidden states are read (its LM head, if any, is not used).
    pub backbone: Lm<B>,
    /// The head `[hidden -> labels]`, no bias (HF's `score.weight`).
    pub score: Linear<B>,
    labels: Vec<String>,
}

impl<B: Backend> SequenceClassifier<B> {
    /// A classifier over `backbone` with a new head for `labels` (one label: a scalar reward),
    /// initialized as transformers does (normal, std 0.02).
    pub fn new(backbone: Lm<B>, labels: Vec<String>, device: &B::Device) -> Self {
        let hidden = backbone.hidden_size();
        let score = init::linear(
            hidden,
            labels.len().max(1),
            false,
            init::TRANSFORMERS,
            device,
        );
        Self {
            backbone,
            score,
            labels,
        }
    }

    /// The label names, in the order of the output columns.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Scores `input_ids` (`[batch, seq]`): `[batch, labels]`, read at each row's last position
    /// whose `attention_mask` is true (left or right padding).
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> Tensor<B, 2> {
        self.forward_pooled(self.pool(input_ids, attention_mask))
    }

    /// The hidden state of each row's last real token, `[batch, hidden]`: what the head reads.
    /// Training only the head can compute these once ([`Self::forward_pooled`]).
    pub fn pool(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> Tensor<B, 2> {
        let [b, s] = input_ids.dims();
        let device = input_ids.device();
        let hidden = self
            .backbone
            .hidden_states(input_ids, attention_mask.clone());
        let h = hidden.dims()[2];
        let last = (positions::<B>(b, s, &device) * attention_mask.int()).argmax(1);
        hidden
            .gather(1, last.reshape([b, 1, 1]).expand([b, 1, h]))
            .reshape([b, h])
    }

    /// The head alone on pooled hidden states (`[batch, hidden]` from [`Self::pool`]).
    pub fn forward_pooled(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        ganpo_core::affine::linear(&self.score, pooled.unsqueeze_dim::<3>(1)).squeeze_dim(1)
    }

    /// The reward of each row: the score itself for one label, else the log-odds of the last
    /// label against the first (for `negative, positive` labels: how positive the text is).
    pub fn reward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> Tensor<B, 1> {
        reward_of(self.forward(input_ids, attention_mask))
    }
}

/// Rewards from classifier outputs (`[batch, labels]`): the score for one label, else the last
/// column minus the first.
pub fn reward_of<B: Backend>(scores: Tensor<B, 2>) -> Tensor<B, 1> {
    let [b, n] = scores.dims();
    if n == 1 {
        return scores.reshape([b]);
    }
    (scores.clone().slice([0..b, n - 1..n]) - scores.slice([0..b, 0..1])).reshape([b])
}

/// Whether an HF `config.json` (parsed) describes a sequence classifier.
pub fn is_classifier_config(json: &Value) -> bool {
    json.get("architectures")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .any(|s| s.ends_with("ForSequenceClassification"))
        })
}

/// The label names an HF `config.json` states: `id2label` in id order, or `num_labels`
/// generic names (`LABEL_0`...), as transformers names them.
fn labels_of(json: &Value, path: &Path) -> Result<Vec<String>, ModelError> {
    let bad = |message: String| ModelError::InvalidConfig {
        path: path.to_path_buf(),
        key: "id2label".into(),
        message,
    };
    if let Some(map) = json.get("id2label").and_then(Value::as_object) {
        let mut labels = vec![None; map.len()];
        for (id, name) in map {
            let i: usize = id
                .parse()
                .ok()
                .filter(|i| *i < map.len())
                .ok_or_else(|| bad(format!("key `{id}` is not an id below {}", map.len())))?;
            labels[i] = Some(
                name.as_str()
                    .ok_or_else(|| bad(format!("label of id {id} is not a string")))?
                    .to_string(),
            );
        }
        return labels
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad("ids must be 0..n without gaps".into()));
    }
    match json.get("num_labels").and_then(Value::as_u64) {
        Some(n) if n > 0 => Ok((0..n).map(|i| format!("LABEL_{i}")).collect()),
        _ => Err(bad(
            "neither `id2label` nor a positive `num_labels` is given".into(),
        )),
    }
}

/// A classifier loaded from an HF directory, with what came with it.
#[derive(Debug)]
pub struct LoadedClassifier<B: Backend> {
    /// The backbone's architecture and sizes.
    pub config: ModelConfig,
    /// The classifier, weights in f32.
    pub model: SequenceClassifier<B>,
    /// The tokenizer, when the directory has a `tokenizer.json`.
    pub tokenizer: Option<Tokenizer>,
}

/// Loads a sequence classifier from an HF directory whose `config.json` names a
/// `*ForSequenceClassification` architecture (as transformers or [`export_classifier`] writes
/// it): the backbone's tensors, no LM head, and `score.weight`.
pub fn load_classifier<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<LoadedClassifier<B>, ModelError> {
    let config_path = dir.join("config.json");
    let json = read_json(&config_path)?;
    if !is_classifier_config(&json) {
        return Err(ModelError::InvalidConfig {
            path: config_path,
            key: "architectures".into(),
            message: "expected a *ForSequenceClassification architecture (a reward model or \
                      classifier, as `ganpo reward train` writes it)"
                .into(),
        });
    }
    let config = ModelConfig::from_hf(&json, &config_path)?;
    let labels = labels_of(&json, &config_path)?;
    let mut backbone = config.init::<B>(device);
    backbone.remove_lm_head(); // a classifier checkpoint has none; the head is never run
    let mut model = SequenceClassifier {
        backbone,
        score: init::linear(
            config.hidden_size(),
            labels.len(),
            false,
            init::TRANSFORMERS,
            device,
        ),
        labels,
    };
    let tensors = read_checkpoint(dir)?
        .into_iter()
        .map(|mut t| {
            if let Some(stack) = t.path_stack.as_mut().filter(|s| s[0] != "score") {
                stack.insert(0, BACKBONE.to_string());
            }
            t
        })
        .collect();
    apply(&mut model, tensors, dir, |name| {
        crate::hf::is_buffer(name) || name.ends_with("lm_head.weight")
    })?;
    let tokenizer = crate::load::tokenizer_in(dir, &config)?;
    Ok(LoadedClassifier {
        config,
        model,
        tokenizer,
    })
}

/// Writes `model` as an HF directory that transformers loads as
/// `<Architecture>ForSequenceClassification` (`config.json` with `id2label` and `pad_token_id`,
/// `model.safetensors`, tokenizer files), atomically as [`crate::export::export_hf`] does.
/// `pad_token_id` is required by transformers to score batches.
pub fn export_classifier<B: Backend>(
    model: &SequenceClassifier<B>,
    config: &ModelConfig,
    pad_token_id: u32,
    tokenizer: TokenizerFiles<'_>,
    dir: &Path,
) -> Result<(), ModelError> {
    let mut json = config.to_hf(dir)?;
    let causal = json["architectures"][0].as_str().unwrap_or_default();
    let architecture = causal
        .strip_suffix("LMHeadModel")
        .or_else(|| causal.strip_suffix("ForCausalLM"))
        .unwrap_or(causal);
    json["architectures"] = json!([format!("{architecture}ForSequenceClassification")]);
    let labels = model.labels();
    json["num_labels"] = json!(labels.len());
    json["id2label"] = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), json!(l)))
        .collect();
    json["label2id"] = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), json!(i)))
        .collect();
    json["pad_token_id"] = json!(pad_token_id);
    let tensors: Vec<TensorSnapshot> = model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|mut t| {
            if let Some(stack) = t.path_stack.as_mut().filter(|s| s[0] == BACKBONE) {
                stack.remove(0);
            }
            t
        })
        .filter(|t| !t.full_path().ends_with("lm_head.weight"))
        .collect();
    write_export(json, tensors, tokenizer, dir, &HF_FILES)
}
