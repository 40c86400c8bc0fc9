//! A model of any supported architecture, chosen from the checkpoint's `model_type`.

use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gpt2::{Gpt2, Gpt2Config};
use crate::llama::{Llama, LlamaConfig};
use crate::{CausalLm, Init, LmOutput, ModelError, RowsOutput};
use ganpo_core::ScoredRows;

/// `model_type`s ganpo can load.
pub const SUPPORTED_MODEL_TYPES: &str = "llama, mistral, qwen2, qwen3, gpt2";

/// The configuration of a supported architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "architecture", rename_all = "snake_case")]
pub enum ModelConfig {
    /// Llama, Mistral, Qwen2, Qwen3.
    Llama(LlamaConfig),
    /// GPT-2.
    Gpt2(Gpt2Config),
}

impl ModelConfig {
    /// Reads an HF `config.json` (parsed); `path` is for error messages.
    pub fn from_hf(json: &Value, path: &Path) -> Result<Self, ModelError> {
        match json.get("model_type").and_then(Value::as_str) {
            Some("gpt2") => Ok(Self::Gpt2(Gpt2Config::from_hf(json, path)?)),
            Some("llama" | "mistral" | "qwen2" | "qwen3") => {
                Ok(Self::Llama(LlamaConfig::from_hf(json, path)?))
            }
            other => Err(ModelError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                model_type: other.unwrap_or("(missing)").to_string(),
                supported: SUPPORTED_MODEL_TYPES,
            }),
        }
    }

    /// A randomly initialized model of this configuration, drawn as transformers does.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Lm<B> {
        self.init_with(Init::Transformers, device)
    }

    /// A randomly initialized model drawn by `init`.
    pub fn init_with<B: Backend>(&self, init: Init, device: &B::Device) -> Lm<B> {
        match self {
            Self::Llama(c) => Lm::Llama(c.init_with(init, device)),
            Self::Gpt2(c) => Lm::Gpt2(c.init_with(init, device)),
        }
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Llama(c) => c.vocab_size,
            Self::Gpt2(c) => c.vocab_size,
        }
    }

    /// Width of the last hidden state.
    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Llama(c) => c.hidden_size,
            Self::Gpt2(c) => c.n_embd,
        }
    }

    /// This configuration with `n` decoder layers; `n` must be between 1 and the current count.
    pub fn with_layers(&self, n: usize) -> Result<Self, ModelError> {
        let have = match self {
            Self::Llama(c) => c.num_hidden_layers,
            Self::Gpt2(c) => c.n_layer,
        };
        if n == 0 || n > have {
            return Err(ModelError::InvalidConfig {
                path: "config.json".into(),
                key: "num_hidden_layers".into(),
                message: format!("cannot keep {n} layers of {have}: expected 1 to {have}"),
            });
        }
        let mut c = self.clone();
        match &mut c {
            Self::Llama(c) => c.num_hidden_layers = n,
            Self::Gpt2(c) => c.n_layer = n,
        }
        Ok(c)
    }

    /// Whether the LM head is the embedding matrix.
    pub fn tied_embeddings(&self) -> bool {
        match self {
            Self::Llama(c) => c.tie_word_embeddings,
            Self::Gpt2(_) => true,
        }
    }
}

/// A causal LM of any supported architecture.
// Moved by value through optimizer steps; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Lm<B: Backend> {
    /// Llama family.
    Llama(Llama<B>),
    /// GPT-2.
    Gpt2(Gpt2<B>),
}

impl<B: Backend> Lm<B> {
    /// Keeps the first `n` decoder layers (the final norm and head stay): a shallower, faster
    /// model for tasks that need less depth, such as a small reward model. `config` is the
    /// model's configuration; the result describes the truncated model.
    pub fn truncate_layers(
        &mut self,
        config: &ModelConfig,
        n: usize,
    ) -> Result<ModelConfig, ModelError> {
        let config = config.with_layers(n)?;
        match self {
            Lm::Llama(m) => m.model.layers.truncate(n),
            Lm::Gpt2(m) => m.transformer.h.truncate(n),
        }
        Ok(config)
    }

    /// The token embedding matrix, `[vocab, hidden]` (`embed_tokens` / `wte`).
    pub fn input_embeddings(&self) -> Tensor<B, 2> {
        match self {
            Lm::Llama(m) => m.model.embed_tokens.weight.val(),
            Lm::Gpt2(m) => m.transformer.wte.weight.val(),
        }
    }

    /// Replaces the token embedding matrix (and so a tied LM head); `weight` must have the
    /// current matrix's shape.
    pub fn set_input_embeddings(&mut self, weight: Tensor<B, 2>) -> Result<(), ModelError> {
        let (want, got) = (self.input_embeddings().dims(), weight.dims());
        if got != want {
            return Err(ModelError::EmbeddingShape { want, got });
        }
        // A fresh leaf: whatever computed `weight` is not part of the model's graph.
        let param = Param::from_tensor(weight.detach());
        match self {
            Lm::Llama(m) => m.model.embed_tokens.weight = param,
            Lm::Gpt2(m) => m.transformer.wte.weight = param,
        }
        Ok(())
    }
}

impl<B: Backend> CausalLm<B> for Lm<B> {
    fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> LmOutput<B> {
        match self {
            Lm::Llama(m) => m.forward(input_ids, attention_mask),
            Lm::Gpt2(m) => m.forward(input_ids, attention_mask),
        }
    }

    fn forward_rows(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
        rows: &ScoredRows<B>,
    ) -> RowsOutput<B> {
        match self {
            Lm::Llama(m) => m.forward_rows(input_ids, attention_mask, rows),
            Lm::Gpt2(m) => m.forward_rows(input_ids, attention_mask, rows),
        }
    }

    fn hidden_states(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> Tensor<B, 3> {
        match self {
            Lm::Llama(m) => m.hidden_states(input_ids, attention_mask),
            Lm::Gpt2(m) => m.hidden_states(input_ids, attention_mask),
        }
    }

    fn hidden_size(&self) -> usize {
        match self {
            Lm::Llama(m) => m.hidden_size(),
            Lm::Gpt2(m) => m.hidden_size(),
        }
    }

    fn vocab_size(&self) -> usize {
        match self {
            Lm::Llama(m) => m.vocab_size(),
            Lm::Gpt2(m) => m.vocab_size(),
        }
    }
}
