//! The registry of architectures: [`ModelConfig`] and [`Lm`], a configuration and a model of any
//! of them, chosen from the checkpoint's `model_type`.
//!
//! Adding an architecture is one file implementing [`Architecture`] and [`Decoder`]
//! (see [`crate::architecture`]) plus one line in the `architectures!` list at the bottom.

use std::path::Path;

use burn::module::Param;
use burn::nn::Embedding;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::layer_stack::{LayerInputs, LayerStack};
use crate::nn::{AttentionMasks, LayerCache, Projection};
use crate::{Architecture, Decoder, Init, ModelError};

/// Generates [`ModelConfig`] and [`Lm`] with one variant per architecture, and their methods by
/// delegation to the variant's [`Architecture`] / [`Decoder`] implementation.
macro_rules! architectures {
    ($($(#[$doc:meta])* $variant:ident($config:ty, $model:ident)),+ $(,)?) => {
        /// The configuration of a supported architecture.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "architecture", rename_all = "snake_case")]
        pub enum ModelConfig {
            $($(#[$doc])* $variant($config),)+
        }

        /// A causal LM of any supported architecture.
        // Moved by value through optimizer steps; boxing the larger variants would buy nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Module, Debug)]
        pub enum Lm<B: Backend> {
            $($(#[$doc])* $variant($model<B>),)+
        }

        /// Every `model_type` ganpo reads, in registry order.
        pub fn supported_model_types() -> Vec<&'static str> {
            [$(<$config as Architecture>::MODEL_TYPES),+].concat()
        }

        impl ModelConfig {
            /// Reads an HF `config.json` (parsed) of any registered architecture; `path` is for
            /// error messages.
            pub fn from_hf(json: &Value, path: &Path) -> Result<Self, ModelError> {
                let model_type = json.get("model_type").and_then(Value::as_str);
                $(
                    if model_type.is_some_and(|t| <$config>::MODEL_TYPES.contains(&t)) {
                        return Ok(Self::$variant(<$config>::from_hf(json, path)?));
                    }
                )+
                Err(ModelError::UnsupportedArchitecture {
                    path: path.to_path_buf(),
                    model_type: model_type.unwrap_or("(missing)").to_string(),
                    supported: supported_model_types().join(", "),
                })
            }

            /// The HF `config.json` of this configuration (`dir` names the export in errors).
            pub fn to_hf(&self, dir: &Path) -> Result<Value, ModelError> {
                match self { $(Self::$variant(c) => c.to_hf(dir),)+ }
            }

            /// The checkpoint's `model_type`.
            pub fn model_type(&self) -> &'static str {
                match self { $(Self::$variant(c) => c.model_type(),)+ }
            }

            /// A randomly initialized model drawn by `init`.
            pub fn init_with<B: Backend>(&self, init: Init, device: &B::Device) -> Lm<B> {
                match self { $(Self::$variant(c) => Lm::$variant(Architecture::init_with(c, init, device)),)+ }
            }

            /// Vocabulary size.
            pub fn vocab_size(&self) -> usize {
                match self { $(Self::$variant(c) => Architecture::vocab_size(c),)+ }
            }

            /// Width of the last hidden state.
            pub fn hidden_size(&self) -> usize {
                match self { $(Self::$variant(c) => Architecture::hidden_size(c),)+ }
            }

            /// Decoder layers.
            pub fn num_layers(&self) -> usize {
                match self { $(Self::$variant(c) => Architecture::num_layers(c),)+ }
            }

            fn set_num_layers(&mut self, n: usize) {
                match self { $(Self::$variant(c) => c.set_num_layers(n),)+ }
            }

            /// Whether the LM head is the embedding matrix.
            pub fn tied_embeddings(&self) -> bool {
                match self { $(Self::$variant(c) => c.tied_embeddings(),)+ }
            }
        }

        impl<B: Backend> LayerStack<B> for Lm<B> {
            fn attention_windows(&self) -> Vec<Option<usize>> {
                match self { $(Lm::$variant(m) => m.attention_windows(),)+ }
            }

            fn num_layers(&self) -> usize {
                match self { $(Lm::$variant(m) => m.num_layers(),)+ }
            }

            fn layer_inputs(
                &self,
                positions: Tensor<B, 2, Int>,
                max_position: usize,
                masks: AttentionMasks<B>,
            ) -> LayerInputs<B> {
                match self { $(Lm::$variant(m) => m.layer_inputs(positions, max_position, masks),)+ }
            }

            fn embed(&self, input_ids: Tensor<B, 2, Int>, inputs: &LayerInputs<B>) -> Tensor<B, 3> {
                match self { $(Lm::$variant(m) => m.embed(input_ids, inputs),)+ }
            }

            fn layer(
                &self,
                index: usize,
                x: Tensor<B, 3>,
                inputs: &LayerInputs<B>,
                cache: Option<&mut LayerCache<B>>,
            ) -> Tensor<B, 3> {
                match self { $(Lm::$variant(m) => m.layer(index, x, inputs, cache),)+ }
            }

            fn final_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
                match self { $(Lm::$variant(m) => m.final_norm(x),)+ }
            }

            fn head_rows(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
                match self { $(Lm::$variant(m) => m.head_rows(hidden),)+ }
            }
        }

        impl<B: Backend> Decoder<B> for Lm<B> {
            fn head<const D: usize>(&self, hidden: Tensor<B, D>) -> Tensor<B, D> {
                match self { $(Lm::$variant(m) => m.head(hidden),)+ }
            }

            fn truncate_layers(&mut self, n: usize) {
                match self { $(Lm::$variant(m) => m.truncate_layers(n),)+ }
            }

            fn embed_tokens(&self) -> &Embedding<B> {
                match self { $(Lm::$variant(m) => m.embed_tokens(),)+ }
            }

            fn embed_tokens_mut(&mut self) -> &mut Embedding<B> {
                match self { $(Lm::$variant(m) => m.embed_tokens_mut(),)+ }
            }

            fn remove_lm_head(&mut self) {
                match self { $(Lm::$variant(m) => m.remove_lm_head(),)+ }
            }

            fn projections(&mut self) -> Vec<(String, &mut dyn Projection<B>)> {
                match self { $(Lm::$variant(m) => m.projections(),)+ }
            }

            fn default_lora_targets(&self) -> &'static [&'static str] {
                match self { $(Lm::$variant(m) => m.default_lora_targets(),)+ }
            }
        }
    };
}

crate::causal_lm_via_decoder!(Lm);

use crate::gemma::{Gemma, GemmaConfig};
use crate::gpt2::{Gpt2, Gpt2Config};
use crate::llama::{Llama, LlamaConfig};

architectures! {
    /// Llama 2/3, SmolLM2, Mistral, Qwen2, Qwen3.
    Llama(LlamaConfig, Llama),
    /// GPT-2.
    Gpt2(Gpt2Config, Gpt2),
    /// Gemma 2 and Gemma 3 (text).
    Gemma(GemmaConfig, Gemma),
}

impl ModelConfig {
    /// A randomly initialized model of this configuration, drawn as transformers does.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Lm<B> {
        self.init_with(Init::Transformers, device)
    }

    /// This configuration with `n` decoder layers; `n` must be between 1 and the current count.
    pub fn with_layers(&self, n: usize) -> Result<Self, ModelError> {
        let have = self.num_layers();
        if n == 0 || n > have {
            return Err(ModelError::InvalidConfig {
                path: "config.json".into(),
                key: "num_hidden_layers".into(),
                message: format!("cannot keep {n} layers of {have}: expected 1 to {have}"),
            });
        }
        let mut c = self.clone();
        c.set_num_layers(n);
        Ok(c)
    }
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
        Decoder::truncate_layers(self, n);
        Ok(config)
    }

    /// The token embedding matrix, `[vocab, hidden]` (`embed_tokens` / `wte`).
    pub fn input_embeddings(&self) -> Tensor<B, 2> {
        self.embed_tokens().weight.val()
    }

    /// Replaces the token embedding matrix (and so a tied LM head); `weight` must have the
    /// current matrix's shape.
    pub fn set_input_embeddings(&mut self, weight: Tensor<B, 2>) -> Result<(), ModelError> {
        let (want, got) = (self.input_embeddings().dims(), weight.dims());
        if got != want {
            return Err(ModelError::EmbeddingShape { want, got });
        }
        // A fresh leaf: whatever computed `weight` is not part of the model's graph.
        self.embed_tokens_mut().weight = Param::from_tensor(weight.detach());
        Ok(())
    }
}
