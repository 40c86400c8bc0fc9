//! The Llama family: Llama 2/3.x, SmolLM2, Mistral, Qwen2/2.5, Qwen3.
//!
//! Field names follow the HF checkpoints (`model.layers.N.self_attn.q_proj.weight`, ...), so
//! loading maps file names onto module paths one to one.

mod attention;
mod config;
mod mlp;

use burn::nn::{Embedding, Linear};
use burn::prelude::*;
use ganpo_core::attention::Scores;

pub use attention::{Attention, AttentionSpec};
pub use config::{Family, LlamaConfig};
pub use mlp::Mlp;

use crate::Decoder;
use crate::layer_stack::{LayerInputs, LayerStack};
use crate::nn::init::{self, INIT_STD, Init};
use crate::nn::{AttentionMasks, LayerCache, Projection, RmsNorm, Rotary, lm_head};

/// PEFT's default `target_modules` for Llama-family and Gemma models.
pub(crate) const DEFAULT_LORA_TARGETS: &[&str] = &["q_proj", "v_proj"];

/// The projections of `model.layers.N.{self_attn, mlp}` (Llama family and Gemma), named as PEFT
/// names them.
pub(crate) fn layer_projections<'a, B: Backend>(
    layers: impl Iterator<Item = (&'a mut Attention<B>, &'a mut Mlp<B>)>,
) -> Vec<(String, &'a mut dyn Projection<B>)> {
    let mut all = Vec::new();
    for (i, (attn, mlp)) in layers.enumerate() {
        all.extend(attn.projections(&format!("model.layers.{i}.self_attn.")));
        all.extend(mlp.projections(&format!("model.layers.{i}.mlp.")));
    }
    all
}

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
    /// The shape of this model's attention layers.
    pub fn attention_spec(&self) -> AttentionSpec {
        AttentionSpec {
            hidden_size: self.hidden_size,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            qkv_bias: self.qkv_bias,
            o_bias: self.o_bias,
            qk_norm_eps: self.qk_norm.then_some(self.rms_norm_eps),
            unit_offset_norms: false,
            scores: Scores::new(self.head_dim),
        }
    }

    /// A randomly initialized model, drawn as transformers does (load weights with
    /// [`crate::load_model`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Llama<B> {
        self.init_with(Init::Transformers, device)
    }

    /// A randomly initialized model drawn by `init`.
    pub fn init_with<B: Backend>(&self, init: Init, device: &B::Device) -> Llama<B> {
        let layer = || DecoderLayer {
            self_attn: Attention::new(&self.attention_spec(), init, device),
            mlp: Mlp::new(
                self.hidden_size,
                self.intermediate_size,
                self.mlp_bias,
                false,
                init,
                device,
            ),
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

impl<B: Backend> LayerStack<B> for Llama<B> {
    fn attention_windows(&self) -> Vec<Option<usize>> {
        vec![self.sliding_window]
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }

    fn layer_inputs(
        &self,
        positions: Tensor<B, 2, Int>,
        max_position: usize,
        masks: AttentionMasks<B>,
    ) -> LayerInputs<B> {
        LayerInputs {
            rotary: vec![self.rotary.tables_at(positions.clone(), max_position)],
            positions,
            masks,
        }
    }

    fn embed(&self, input_ids: Tensor<B, 2, Int>, _: &LayerInputs<B>) -> Tensor<B, 3> {
        self.model.embed_tokens.forward(input_ids)
    }

    fn layer(
        &self,
        index: usize,
        x: Tensor<B, 3>,
        inputs: &LayerInputs<B>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 3> {
        let layer = &self.model.layers[index];
        let masked = inputs.masks.get(self.sliding_window);
        let normed = layer.input_layernorm.forward(x.clone());
        let x = x + layer
            .self_attn
            .forward(normed, masked, &inputs.rotary[0], cache);
        x.clone() + layer.mlp.forward(layer.post_attention_layernorm.forward(x))
    }

    fn final_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.model.norm.forward(x)
    }

    fn head_rows(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head(hidden)
    }
}

impl<B: Backend> Decoder<B> for Llama<B> {
    fn head<const D: usize>(&self, hidden: Tensor<B, D>) -> Tensor<B, D> {
        lm_head(self.lm_head.as_ref(), &self.model.embed_tokens, hidden)
    }

    fn truncate_layers(&mut self, n: usize) {
        self.model.layers.truncate(n);
    }

    fn embed_tokens(&self) -> &Embedding<B> {
        &self.model.embed_tokens
    }

    fn embed_tokens_mut(&mut self) -> &mut Embedding<B> {
        &mut self.model.embed_tokens
    }

    fn projections(&mut self) -> Vec<(String, &mut dyn Projection<B>)> {
        let layers = self.model.layers.iter_mut();
        layer_projections(layers.map(|l| (&mut l.self_attn, &mut l.mlp)))
    }

    fn default_lora_targets(&self) -> &'static [&'static str] {
        DEFAULT_LORA_TARGETS
    }

    fn remove_lm_head(&mut self) {
        self.lm_head = None;
    }
}

crate::causal_lm_via_decoder!(Llama);
