//! What an architecture file provides, and everything ganpo derives from it.
//!
//! An architecture is one file (`llama/`, `gpt2.rs`, `gemma.rs`) that implements two traits:
//! - [`Architecture`] on its configuration: the `model_type`s it reads, `config.json` in and out,
//!   sizes, and a randomly initialized model;
//! - [`Decoder`] on its burn module: the layer walk (with a KV cache for generation), the LM head,
//!   the attention windows its layers use, and its token embeddings.
//!
//! Registering it is one line in `auto.rs`'s `architectures!` list, which generates the
//! [`ModelConfig`](crate::ModelConfig) and [`Lm`](crate::Lm) enums over every architecture.
//! `causal_lm_via_decoder!(Model)` makes a [`Decoder`] a [`CausalLm`] (the trainer's contract);
//! loading, generation, export and `ganpo inspect` go through these traits only.

use std::path::Path;

use burn::nn::Embedding;
use burn::prelude::*;
use ganpo_core::ScoredRows;
use serde_json::Value;

#[cfg(doc)]
use crate::CausalLm;
use crate::layer_stack::LayerStack;
use crate::nn::{AttentionMasks, Init, KvCache, Projection};
use crate::{LmOutput, ModelError, RowsOutput};

/// The configuration side of an architecture.
pub trait Architecture: Clone + Sized {
    /// The burn module this configuration describes.
    type Model<B: Backend>: Decoder<B>;

    /// The `model_type`s of `config.json` this architecture reads.
    const MODEL_TYPES: &'static [&'static str];

    /// Reads an HF `config.json` (parsed) whose `model_type` is one of [`Self::MODEL_TYPES`];
    /// `path` names the file in errors.
    fn from_hf(json: &Value, path: &Path) -> Result<Self, ModelError>;

    /// The HF `config.json` transformers loads this configuration from; an error (naming `dir`,
    /// the export's destination) when no transformers config can describe it.
    fn to_hf(&self, dir: &Path) -> Result<Value, ModelError>;

    /// The checkpoint's `model_type` (one of [`Self::MODEL_TYPES`]).
    fn model_type(&self) -> &'static str;

    /// A randomly initialized model, drawn by `init`.
    fn init_with<B: Backend>(&self, init: Init, device: &B::Device) -> Self::Model<B>;

    /// Vocabulary size.
    fn vocab_size(&self) -> usize;

    /// Width of the last hidden state.
    fn hidden_size(&self) -> usize;

    /// Decoder layers.
    fn num_layers(&self) -> usize;

    /// Sets the number of decoder layers (the caller checks `1..=num_layers()`).
    fn set_num_layers(&mut self, n: usize);

    /// Whether the LM head is the token embedding matrix.
    fn tied_embeddings(&self) -> bool;
}

/// The module side of an architecture: a decoder-only transformer ganpo runs, a
/// [`LayerStack`] (embedding, layers, final norm) plus what whole-model code needs.
pub trait Decoder<B: Backend>: LayerStack<B> {
    /// The last hidden states (after the final norm), `[batch, new, hidden]`, of `input_ids`
    /// (`[batch, new]`) at `positions` (`[batch, new]`, below `max_position`); each layer
    /// attends as `masks` says for its window, and `cache` (when given) holds the keys and values
    /// of earlier positions and is extended with these.
    fn hidden_at(
        &self,
        input_ids: Tensor<B, 2, Int>,
        positions: Tensor<B, 2, Int>,
        max_position: usize,
        masks: &AttentionMasks<B>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let inputs = self.layer_inputs(positions, max_position, masks.clone());
        self.hidden_from(input_ids, &inputs, cache)
    }

    /// The LM head: logits `[.., vocab]` of hidden states `[.., hidden]` (with the final soft-cap
    /// where the architecture has one).
    fn head<const D: usize>(&self, hidden: Tensor<B, D>) -> Tensor<B, D>;

    /// Keeps the first `n` decoder layers (the final norm and head stay).
    fn truncate_layers(&mut self, n: usize);

    /// The token embeddings, `[vocab, hidden]`.
    fn embed_tokens(&self) -> &Embedding<B>;

    /// The token embeddings, to replace them.
    fn embed_tokens_mut(&mut self) -> &mut Embedding<B>;

    /// Every projection a LoRA adapter can target (attention and MLP linears; not the LM head),
    /// with its module name as PEFT spells it (`model.layers.0.self_attn.q_proj`).
    fn projections(&mut self) -> Vec<(String, &mut dyn Projection<B>)>;

    /// The module names PEFT adapts when `target_modules` is not given (its per-architecture
    /// defaults: `q_proj`, `v_proj` for Llama and Gemma, `c_attn` for GPT-2).
    fn default_lora_targets(&self) -> &'static [&'static str];

    /// Drops a separate LM head: a sequence classifier's backbone has none (a no-op when the
    /// head is tied to the embeddings).
    fn remove_lm_head(&mut self) {}
}

/// Implements [`CausalLm`] for a [`Decoder`] type (one line per architecture file): whole
/// sequences from position 0 through [`Decoder::hidden_at`], the LM head on every position or, for
/// [`CausalLm::forward_rows`], on the scored rows only. (A blanket implementation over every
/// `Decoder` would forbid models outside this crate from implementing `CausalLm` themselves.)
#[macro_export]
macro_rules! causal_lm_via_decoder {
    ($model:ident) => {
        impl<B: burn::prelude::Backend> $crate::CausalLm<B> for $model<B> {
            fn forward(
                &self,
                input_ids: burn::prelude::Tensor<B, 2, burn::prelude::Int>,
                attention_mask: burn::prelude::Tensor<B, 2, burn::prelude::Bool>,
            ) -> $crate::LmOutput<B> {
                $crate::architecture::decoder_forward(self, input_ids, attention_mask)
            }

            fn forward_rows(
                &self,
                input_ids: burn::prelude::Tensor<B, 2, burn::prelude::Int>,
                attention_mask: burn::prelude::Tensor<B, 2, burn::prelude::Bool>,
                rows: &ganpo_core::ScoredRows<B>,
            ) -> $crate::RowsOutput<B> {
                $crate::architecture::decoder_forward_rows(self, input_ids, attention_mask, rows)
            }

            fn hidden_states(
                &self,
                input_ids: burn::prelude::Tensor<B, 2, burn::prelude::Int>,
                attention_mask: burn::prelude::Tensor<B, 2, burn::prelude::Bool>,
            ) -> burn::prelude::Tensor<B, 3> {
                $crate::LayerStack::full_hidden(self, input_ids, attention_mask)
            }

            fn layer_stack(&self) -> Option<&dyn $crate::LayerStack<B>> {
                Some(self)
            }

            fn set_adapters_enabled(&mut self, enabled: bool) -> usize {
                $crate::lora::set_enabled(self, enabled)
            }

            fn hidden_size(&self) -> usize {
                $crate::Decoder::embed_tokens(self).weight.dims()[1]
            }

            fn vocab_size(&self) -> usize {
                $crate::Decoder::embed_tokens(self).weight.dims()[0]
            }
        }
    };
}

/// [`CausalLm::forward`] of a decoder: hidden states, then the LM head on every position.
pub fn decoder_forward<B: Backend, M: Decoder<B>>(
    model: &M,
    input_ids: Tensor<B, 2, Int>,
    attention_mask: Tensor<B, 2, Bool>,
) -> LmOutput<B> {
    let hidden = model.full_hidden(input_ids, attention_mask);
    LmOutput {
        logits: model.head(hidden.clone()),
        hidden,
    }
}

/// [`CausalLm::forward_rows`] of a decoder: the LM head on the scored rows only.
pub fn decoder_forward_rows<B: Backend, M: Decoder<B>>(
    model: &M,
    input_ids: Tensor<B, 2, Int>,
    attention_mask: Tensor<B, 2, Bool>,
    rows: &ScoredRows<B>,
) -> RowsOutput<B> {
    let hidden = model.full_hidden(input_ids, attention_mask);
    RowsOutput {
        logits: model.head(rows.gather(hidden.clone())),
        hidden,
    }
}
