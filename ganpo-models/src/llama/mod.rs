//! The Llama family: Llama 2/3.x, SmolLM2, Mistral, Qwen2/2.5, Qwen3.
//!
//! Field names follow the HF checkpoints (`model.layers.N.self_attn.q_proj.weight`, ...), so
//! loading maps file names onto module paths one to one.

mod attention;
mod config;
mod mlp;

use burn::nn::{Embedding, Linear};
use burn::prelude::*;
use ganpo_core::ScoredRows;
use ganpo_core::affine::linear;

pub use attention::Attention;
pub use config::{Family, LlamaConfig, SUPPORTED_MODEL_TYPES};
pub use mlp::Mlp;

use crate::nn::init::{self, INIT_STD, Init};
use crate::nn::{KvCache, RmsNorm, Rotary, attention_mask, positions, tied_head};
use crate::{CausalLm, LmOutput, RowsOutput};

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Self-attention.
    pub self_attn: Attention<B>,
    /// MLP.
    pub mlp: Mlp<B>,
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
}

/// The decoder stack (HF's `model.` prefix).
#[derive(Module, Debug)]
pub struct LlamaModel<B: Backend> {
    /// Token embeddings `[vocab, hidden]`.
    pub embed_tokens: Embedding<B>,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final norm; its output is the last hidden state.
    pub norm: RmsNorm<B>,
}

/// A Llama-family causal LM.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// The decoder stack.
    pub model: LlamaModel<B>,
    /// Separate LM head `[hidden -> vocab]`; `None` when tied to the embeddings.
    pub lm_head: Option<Linear<B>>,
    rotary: Rotary,
    sliding_window: Option<usize>,
}

impl LlamaConfig {
    /// A randomly initialized model, drawn as transformers does (load weights with
    /// [`crate::load_model`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Llama<B> {
        self.init_with(Init::Transformers, device)
    }

    /// A randomly initialized model drawn by `init`.
    pub fn init_with<B: Backend>(&self, init: Init, device: &B::Device) -> Llama<B> {
        let layer = || DecoderLayer {
            self_attn: Attention::new(self, init, device),
            mlp: Mlp::new(self, init, device),
            input_layernorm: RmsNorm::new(self.hidden_size, self.rms_norm_eps, device),
            post_attention_layernorm: RmsNorm::new(self.hidden_size, self.rms_norm_eps, device),
        };
        Llama {
            model: LlamaModel {
                embed_tokens: init::embedding(self.vocab_size, self.hidden_size, init, device),
                layers: (0..self.num_hidden_layers).map(|_| layer()).collect(),
                norm: RmsNorm::new(self.hidden_size, self.rms_norm_eps, device),
            },
            lm_head: (!self.tie_word_embeddings).then(|| {
                init::linear(
                    self.hidden_size,
                    self.vocab_size,
                    false,
                    (init, INIT_STD),
                    device,
                )
            }),
            rotary: Rotary::new(self.head_dim, self.rope_theta, &self.rope_scaling),
            sliding_window: self.sliding_window,
        }
    }
}

impl<B: Backend> Llama<B> {
    /// Runs `input_ids` (`[batch, new]`) at `positions` (`[batch, new]`, below `max_position`)
    /// with attention mask `masked` (`[batch, 1, new, keys]`, true = hidden), extending `cache`
    /// when given (incremental decoding).
    pub fn forward_at(
        &self,
        input_ids: Tensor<B, 2, Int>,
        positions: Tensor<B, 2, Int>,
        max_position: usize,
        masked: Tensor<B, 4, Bool>,
        cache: Option<&mut KvCache<B>>,
    ) -> LmOutput<B> {
        let hidden = self.hidden_at(input_ids, positions, max_position, masked, cache);
        LmOutput {
            logits: self.head(hidden.clone()),
            hidden,
        }
    }

    /// [`Self::forward_at`] without the LM head: the last hidden states.
    pub fn hidden_at(
        &self,
        input_ids: Tensor<B, 2, Int>,
        positions: Tensor<B, 2, Int>,
        max_position: usize,
        masked: Tensor<B, 4, Bool>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let rotary = self.rotary.tables_at(positions, max_position);
        let mut x = self.model.embed_tokens.forward(input_ids);
        for (i, layer) in self.model.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let normed = layer.input_layernorm.forward(x.clone());
            x = x + layer
                .self_attn
                .forward(normed, masked.clone(), &rotary, layer_cache);
            x = x.clone() + layer.mlp.forward(layer.post_attention_layernorm.forward(x));
        }
        self.model.norm.forward(x)
    }

    /// The LM head: logits of `hidden` (`[batch, seq, hidden]` or `[rows, hidden]`).
    pub fn head<const D: usize>(&self, hidden: Tensor<B, D>) -> Tensor<B, D> {
        match &self.lm_head {
            Some(head) => linear(head, hidden),
            None => tied_head(hidden, self.model.embed_tokens.weight.val()),
        }
    }

    /// Number of decoder layers (the length of a [`KvCache`] for this model).
    pub fn num_layers(&self) -> usize {
        self.model.layers.len()
    }

    /// The sliding window, if the model attends to a bounded past.
    pub fn sliding_window(&self) -> Option<usize> {
        self.sliding_window
    }
}

impl<B: Backend> CausalLm<B> for Llama<B> {
    fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask_2d: Tensor<B, 2, Bool>,
    ) -> LmOutput<B> {
        let hidden = self.hidden_states(input_ids, attention_mask_2d);
        LmOutput {
            logits: self.head(hidden.clone()),
            hidden,
        }
    }

    fn forward_rows(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask_2d: Tensor<B, 2, Bool>,
        rows: &ScoredRows<B>,
    ) -> RowsOutput<B> {
        let hidden = self.hidden_states(input_ids, attention_mask_2d);
        RowsOutput {
            logits: self.head(rows.gather(hidden.clone())),
            hidden,
        }
    }

    fn hidden_states(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask_2d: Tensor<B, 2, Bool>,
    ) -> Tensor<B, 3> {
        let [b, s] = input_ids.dims();
        let positions = positions::<B>(b, s, &input_ids.device());
        let masked = attention_mask(attention_mask_2d, self.sliding_window);
        self.hidden_at(input_ids, positions, s.max(1), masked, None)
    }

    fn hidden_size(&self) -> usize {
        self.model.norm.weight.dims()[0]
    }

    fn vocab_size(&self) -> usize {
        self.model.embed_tokens.weight.dims()[0]
    }
}
