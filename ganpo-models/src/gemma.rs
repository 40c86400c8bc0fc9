//! Gemma 2 and Gemma 3 (text): `model_type` `gemma2` and `gemma3_text`.
//!
//! What sets them apart from the Llama family, all here: RMS norms that scale by `1 + weight`,
//! token embeddings multiplied by `sqrt(hidden_size)`, a GeGLU MLP (tanh GELU), norms before
//! *and* after both the attention and the MLP, scores scaled by `query_pre_attn_scalar^-1/2`,
//! layers that alternate between a sliding window and global attention (`layer_types`), and
//! - Gemma 2: tanh soft-capping of the attention scores and of the final logits;
//! - Gemma 3: per-head q / k norms, and a RoPE base of its own for the sliding layers
//!   (`rope_local_base_freq`, 10k) while global layers use `rope_theta` and its scaling.
//!
//! Field names follow transformers' `Gemma2ForCausalLM` / `Gemma3ForCausalLM`
//! (`model.layers.N.pre_feedforward_layernorm.weight`, ...), so loading needs no remapping.

use std::path::Path;

use burn::nn::{Embedding, Linear};
use burn::prelude::*;
use burn::tensor::activation::tanh;
use ganpo_core::attention::Scores;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config_reader::{ConfigReader, rope_scaling};
use crate::llama::{Attention, AttentionSpec, DEFAULT_LORA_TARGETS, Mlp, layer_projections};
use crate::nn::init::{self, INIT_STD};
use crate::nn::{
    AttentionMasks, Init, LayerCache, Projection, RmsNorm, RopeScaling, Rotary, lm_head,
};
use crate::{Architecture, Decoder, LayerInputs, LayerStack, ModelError};

/// Which Gemma.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Generation {
    /// Gemma 2: attention and final-logit soft-capping.
    Gemma2,
    /// Gemma 3 (text): q / k norms, a local RoPE base for sliding layers.
    Gemma3,
}

/// Everything that shapes a Gemma model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GemmaConfig {
    /// Gemma 2 or 3.
    pub generation: Generation,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key / value heads.
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMS norm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base of the global layers.
    pub rope_theta: f64,
    /// RoPE scaling of the global layers.
    pub rope_scaling: RopeScaling,
    /// RoPE base of the sliding-window layers (Gemma 2: `rope_theta`).
    pub rope_local_base_freq: f64,
    /// Scores are divided by the square root of this.
    pub query_pre_attn_scalar: f64,
    /// Gemma 2's cap of the attention scores.
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma 2's cap of the final logits.
    pub final_logit_softcapping: Option<f64>,
    /// Window of the sliding layers (a token sees itself and the `window - 1` before it).
    pub sliding_window: Option<usize>,
    /// Per layer: true for sliding-window attention, false for global.
    pub sliding_layers: Vec<bool>,
    /// Bias on the attention projections.
    pub attention_bias: bool,
    /// LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Longest context the checkpoint declares.
    pub max_position_embeddings: usize,
}

impl GemmaConfig {
    /// The shape of this model's attention layers.
    fn attention_spec(&self) -> AttentionSpec {
        AttentionSpec {
            hidden_size: self.hidden_size,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            qk_norm_eps: (self.generation == Generation::Gemma3).then_some(self.rms_norm_eps),
            unit_offset_norms: true,
            scores: Scores {
                scale_dim: self.query_pre_attn_scalar,
                softcap: self.attn_logit_softcapping,
            },
        }
    }

    /// The window of layer `i` (`None`: global).
    fn window_of(&self, i: usize) -> Option<usize> {
        self.sliding_window.filter(|_| self.sliding_layers[i])
    }

    /// `layer_types` as transformers writes it.
    fn layer_types(&self) -> Vec<&'static str> {
        self.sliding_layers
            .iter()
            .map(|&s| {
                if s {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
            })
            .collect()
    }
}

/// The RoPE base and scaling of one `rope_parameters` entry (transformers 5).
fn rope_entry(
    r: &ConfigReader<'_>,
    key: &str,
    v: &Value,
) -> Result<(f64, RopeScaling), ModelError> {
    let theta = v
        .get("rope_theta")
        .and_then(Value::as_f64)
        .ok_or_else(|| r.invalid(&format!("{key}.rope_theta"), "expected a number"))?;
    let scaling = rope_scaling(v).map_err(|m| r.invalid(key, m))?;
    Ok((theta, scaling))
}

impl Architecture for GemmaConfig {
    type Model<B: Backend> = Gemma<B>;

    const MODEL_TYPES: &'static [&'static str] = &["gemma2", "gemma3_text"];

    /// Reads transformers 4's (`rope_theta`, `rope_local_base_freq`, `rope_scaling`,
    /// `sliding_window_pattern`) and transformers 5's (`rope_parameters` per layer type,
    /// `layer_types`) forms of the config.
    fn from_hf(json: &Value, path: &Path) -> Result<Self, ModelError> {
        let r = ConfigReader { json, path };
        let generation = match json.get("model_type").and_then(Value::as_str) {
            Some("gemma2") => Generation::Gemma2,
            Some("gemma3_text") => Generation::Gemma3,
            other => {
                return Err(ModelError::UnsupportedArchitecture {
                    path: path.to_path_buf(),
                    model_type: other.unwrap_or("(missing)").into(),
                    supported: Self::MODEL_TYPES.join(", "),
                });
            }
        };
        match json.get("hidden_activation").and_then(Value::as_str) {
            None | Some("gelu_pytorch_tanh") => {}
            Some(other) => {
                return Err(r.invalid(
                    "hidden_activation",
                    format!("`{other}` is not supported (gelu_pytorch_tanh)"),
                ));
            }
        }
        if r.bool_or("use_bidirectional_attention", false)? {
            return Err(r.invalid(
                "use_bidirectional_attention",
                "bidirectional Gemma (an embedding model) is not a causal LM",
            ));
        }
        let hidden_size = r.usize("hidden_size")?;
        let heads = r.usize("num_attention_heads")?;
        let kv_heads = r.usize_opt("num_key_value_heads")?.unwrap_or(heads);
        if !heads.is_multiple_of(kv_heads) {
            return Err(r.invalid(
                "num_key_value_heads",
                format!("{kv_heads} does not divide num_attention_heads = {heads}"),
            ));
        }
        let head_dim = r.usize_opt("head_dim")?.unwrap_or(hidden_size / heads);
        if head_dim % 2 != 0 {
            return Err(r.invalid("head_dim", format!("{head_dim} is odd")));
        }
        let layers = r.usize("num_hidden_layers")?;

        // RoPE: per layer type (transformers 5), or the legacy top-level keys.
        let params = json.get("rope_parameters").filter(|v| v.is_object());
        let (global, local_theta) = match params {
            Some(p) if p.get("full_attention").is_some() => {
                let full = rope_entry(&r, "rope_parameters.full_attention", &p["full_attention"])?;
                let local = match p.get("sliding_attention") {
                    Some(s) => rope_entry(&r, "rope_parameters.sliding_attention", s)?.0,
                    None => full.0,
                };
                (full, local)
            }
            Some(p) => {
                let full = rope_entry(&r, "rope_parameters", p)?;
                let theta = full.0;
                (full, theta)
            }
            None => {
                let theta = r.f64_or("rope_theta", 10000.0)?;
                let scaling = match json.get("rope_scaling").filter(|v| v.is_object()) {
                    Some(s) => rope_scaling(s).map_err(|m| r.invalid("rope_scaling", m))?,
                    None => RopeScaling::Default,
                };
                let local = match generation {
                    Generation::Gemma2 => theta,
                    Generation::Gemma3 => r.f64_or("rope_local_base_freq", 10000.0)?,
                };
                ((theta, scaling), local)
            }
        };

        let sliding_layers = match json.get("layer_types").filter(|v| !v.is_null()) {
            Some(Value::Array(types)) => {
                let kinds = types
                    .iter()
                    .map(|t| match t.as_str() {
                        Some("sliding_attention") => Ok(true),
                        Some("full_attention") => Ok(false),
                        _ => Err(r.invalid(
                            "layer_types",
                            format!("unknown layer type {t} (sliding_attention, full_attention)"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if kinds.len() != layers {
                    return Err(r.invalid(
                        "layer_types",
                        format!("{} entries for {layers} layers", kinds.len()),
                    ));
                }
                kinds
            }
            Some(other) => {
                return Err(r.invalid("layer_types", format!("expected a list, found {other}")));
            }
            None => {
                let pattern = match generation {
                    Generation::Gemma2 => 2,
                    Generation::Gemma3 => r
                        .usize_opt("sliding_window_pattern")?
                        .or(r.usize_opt("_sliding_window_pattern")?)
                        .unwrap_or(6),
                };
                (0..layers).map(|i| (i + 1) % pattern != 0).collect()
            }
        };
        // A key left out takes transformers' default (Gemma 2 caps scores at 50 and logits at
        // 30; Gemma 3 caps neither); an explicit null turns the cap off.
        let cap = |key: &str, gemma2_default: f64| -> Result<Option<f64>, ModelError> {
            match json.get(key) {
                None => Ok((generation == Generation::Gemma2).then_some(gemma2_default)),
                Some(Value::Null) => Ok(None),
                Some(v) => v.as_f64().filter(|c| *c > 0.0).map(Some).ok_or_else(|| {
                    r.invalid(key, format!("expected a positive number, found {v}"))
                }),
            }
        };
        Ok(Self {
            generation,
            vocab_size: r.usize("vocab_size")?,
            hidden_size,
            intermediate_size: r.usize("intermediate_size")?,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: r.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta: global.0,
            rope_scaling: global.1,
            rope_local_base_freq: local_theta,
            // transformers' defaults where a key is left out: 256 and a 4096-token window.
            query_pre_attn_scalar: r.f64_or("query_pre_attn_scalar", 256.0)?,
            attn_logit_softcapping: cap("attn_logit_softcapping", 50.0)?,
            final_logit_softcapping: cap("final_logit_softcapping", 30.0)?,
            sliding_window: match json.get("sliding_window") {
                None => Some(4096),
                Some(_) => r.usize_opt("sliding_window")?,
            },
            sliding_layers,
            attention_bias: r.bool_or("attention_bias", false)?,
            tie_word_embeddings: r.bool_or("tie_word_embeddings", true)?,
            max_position_embeddings: r.usize_opt("max_position_embeddings")?.unwrap_or(8192),
        })
    }

    fn to_hf(&self, dir: &Path) -> Result<Value, ModelError> {
        let rope = |theta: f64, scaling: &RopeScaling| -> Result<Value, ModelError> {
            let mut v = json!({"rope_type": "default", "rope_theta": theta});
            match scaling {
                RopeScaling::Default => {}
                RopeScaling::Linear { factor } => {
                    v["rope_type"] = json!("linear");
                    v["factor"] = json!(factor);
                }
                _ => {
                    return Err(ModelError::InvalidConfig {
                        path: dir.to_path_buf(),
                        key: "rope_scaling".into(),
                        message: "Gemma exports support default and linear RoPE scaling".into(),
                    });
                }
            }
            Ok(v)
        };
        let (model_type, architecture) = match self.generation {
            Generation::Gemma2 => ("gemma2", "Gemma2ForCausalLM"),
            Generation::Gemma3 => ("gemma3_text", "Gemma3ForCausalLM"),
        };
        let local = rope(self.rope_local_base_freq, &RopeScaling::Default)?;
        Ok(json!({
            "model_type": model_type,
            "architectures": [architecture],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "hidden_activation": "gelu_pytorch_tanh",
            // transformers' config class takes an integer here (every released Gemma has one).
            "query_pre_attn_scalar": if self.query_pre_attn_scalar.fract() == 0.0 {
                json!(self.query_pre_attn_scalar as u64)
            } else {
                json!(self.query_pre_attn_scalar)
            },
            "attn_logit_softcapping": self.attn_logit_softcapping,
            "final_logit_softcapping": self.final_logit_softcapping,
            "sliding_window": self.sliding_window,
            "layer_types": self.layer_types(),
            "rope_parameters": match self.generation {
                Generation::Gemma2 => rope(self.rope_theta, &self.rope_scaling)?,
                Generation::Gemma3 => json!({
                    "full_attention": rope(self.rope_theta, &self.rope_scaling)?,
                    "sliding_attention": local,
                }),
            },
            "attention_bias": self.attention_bias,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "torch_dtype": "float32",
        }))
    }

    fn model_type(&self) -> &'static str {
        match self.generation {
            Generation::Gemma2 => "gemma2",
            Generation::Gemma3 => "gemma3_text",
        }
    }

    fn init_with<B: Backend>(&self, init: Init, device: &B::Device) -> Gemma<B> {
        let norm = || RmsNorm::with_offset(self.hidden_size, self.rms_norm_eps, true, device);
        let spec = self.attention_spec();
        let layer = |i| GemmaDecoderLayer {
            self_attn: Attention::new(&spec, init, device),
            mlp: Mlp::new(
                self.hidden_size,
                self.intermediate_size,
                false,
                true,
                init,
                device,
            ),
            input_layernorm: norm(),
            post_attention_layernorm: norm(),
            pre_feedforward_layernorm: norm(),
            post_feedforward_layernorm: norm(),
            sliding_window: self.window_of(i),
        };
        Gemma {
            model: GemmaModel {
                embed_tokens: init::embedding(self.vocab_size, self.hidden_size, init, device),
                layers: (0..self.num_hidden_layers).map(layer).collect(),
                norm: norm(),
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
            rotary_global: Rotary::new(self.head_dim, self.rope_theta, &self.rope_scaling),
            rotary_local: Rotary::new(
                self.head_dim,
                self.rope_local_base_freq,
                &RopeScaling::Default,
            ),
            embed_scale: (self.hidden_size as f64).sqrt(),
            final_logit_softcapping: self.final_logit_softcapping,
        }
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn num_layers(&self) -> usize {
        self.num_hidden_layers
    }

    fn set_num_layers(&mut self, n: usize) {
        self.num_hidden_layers = n;
        self.sliding_layers.truncate(n);
    }

    fn tied_embeddings(&self) -> bool {
        self.tie_word_embeddings
    }
}

/// One Gemma decoder layer: norms before and after the attention and the MLP.
#[derive(Module, Debug)]
pub struct GemmaDecoderLayer<B: Backend> {
    /// Self-attention.
    pub self_attn: Attention<B>,
    /// GeGLU MLP.
    pub mlp: Mlp<B>,
    /// Norm of the attention's input.
    pub input_layernorm: RmsNorm<B>,
    /// Norm of the attention's output.
    pub post_attention_layernorm: RmsNorm<B>,
    /// Norm of the MLP's input.
    pub pre_feedforward_layernorm: RmsNorm<B>,
    /// Norm of the MLP's output.
    pub post_feedforward_layernorm: RmsNorm<B>,
    sliding_window: Option<usize>,
}

/// The decoder stack (HF's `model.` prefix).
#[derive(Module, Debug)]
pub struct GemmaModel<B: Backend> {
    /// Token embeddings `[vocab, hidden]`, scaled by `sqrt(hidden)` on the way in.
    pub embed_tokens: Embedding<B>,
    /// Decoder layers.
    pub layers: Vec<GemmaDecoderLayer<B>>,
    /// Final norm; its output is the last hidden state.
    pub norm: RmsNorm<B>,
}

/// A Gemma 2 / Gemma 3 causal LM.
#[derive(Module, Debug)]
pub struct Gemma<B: Backend> {
    /// The decoder stack.
    pub model: GemmaModel<B>,
    /// Separate LM head; `None` when tied to the embeddings (every released Gemma).
    pub lm_head: Option<Linear<B>>,
    rotary_global: Rotary,
    rotary_local: Rotary,
    embed_scale: f64,
    final_logit_softcapping: Option<f64>,
}

impl<B: Backend> LayerStack<B> for Gemma<B> {
    fn attention_windows(&self) -> Vec<Option<usize>> {
        let mut windows: Vec<Option<usize>> = Vec::new();
        for layer in &self.model.layers {
            if !windows.contains(&layer.sliding_window) {
                windows.push(layer.sliding_window);
            }
        }
        windows
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }

    /// Rotary tables: `[global, local]` (the same tables twice when both bases agree).
    fn layer_inputs(
        &self,
        positions: Tensor<B, 2, Int>,
        max_position: usize,
        masks: AttentionMasks<B>,
    ) -> LayerInputs<B> {
        let global = self
            .rotary_global
            .tables_at(positions.clone(), max_position);
        let local = if self.rotary_local == self.rotary_global {
            global.clone()
        } else {
            self.rotary_local.tables_at(positions.clone(), max_position)
        };
        LayerInputs {
            positions,
            rotary: vec![global, local],
            masks,
        }
    }

    fn embed(&self, input_ids: Tensor<B, 2, Int>, _: &LayerInputs<B>) -> Tensor<B, 3> {
        self.model.embed_tokens.forward(input_ids) * self.embed_scale
    }

    fn layer(
        &self,
        index: usize,
        x: Tensor<B, 3>,
        inputs: &LayerInputs<B>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 3> {
        let layer = &self.model.layers[index];
        let rotary = match layer.sliding_window {
            Some(_) => &inputs.rotary[1],
            None => &inputs.rotary[0],
        };
        let h = layer.self_attn.forward(
            layer.input_layernorm.forward(x.clone()),
            inputs.masks.get(layer.sliding_window),
            rotary,
            cache,
        );
        let x = x + layer.post_attention_layernorm.forward(h);
        let h = layer
            .mlp
            .forward(layer.pre_feedforward_layernorm.forward(x.clone()));
        x + layer.post_feedforward_layernorm.forward(h)
    }

    fn final_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.model.norm.forward(x)
    }

    fn head_rows(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head(hidden)
    }
}

impl<B: Backend> Decoder<B> for Gemma<B> {
    fn head<const D: usize>(&self, hidden: Tensor<B, D>) -> Tensor<B, D> {
        let logits = lm_head(self.lm_head.as_ref(), &self.model.embed_tokens, hidden);
        match self.final_logit_softcapping {
            Some(cap) => tanh(logits / cap) * cap,
            None => logits,
        }
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

crate::causal_lm_via_decoder!(Gemma);
