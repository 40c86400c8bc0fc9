//! GPT-2: learned positions, LayerNorm, GELU (tanh), fused QKV in `Conv1D` layout.
//!
//! Field names follow HF's `GPT2LMHeadModel` (`transformer.h.N.attn.c_attn.weight`, ...). GPT-2's
//! `Conv1D` stores weights as `[in, out]`, burn's layout already, so those are not transposed on
//! load; the LM head is tied to `wte`.

use std::path::Path;

use burn::nn::{Embedding, LayerNorm, LayerNormConfig};
use burn::prelude::*;
use ganpo_core::activation::{gelu, gelu_tanh};
use ganpo_core::attention::{Scores, attention};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config_reader::ConfigReader;
use crate::layer_stack::{LayerInputs, LayerStack};
pub use crate::nn::Conv1D;
use crate::nn::init::{self, INIT_STD, Init};
use crate::nn::{AttentionMasks, LayerCache, Projection, tied_head};
use crate::{Architecture, Decoder, ModelError};

/// GPT-2 settings from an HF `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Learned positions.
    pub n_positions: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// MLP width (default `4 * n_embd`).
    pub n_inner: usize,
    /// LayerNorm epsilon.
    pub layer_norm_epsilon: f64,
    /// `gelu_new` (tanh approximation) or `gelu` (exact).
    pub tanh_gelu: bool,
}

impl Architecture for Gpt2Config {
    type Model<B: Backend> = Gpt2<B>;

    const MODEL_TYPES: &'static [&'static str] = &["gpt2"];

    /// Reads an HF GPT-2 `config.json`; `path` is for error messages.
    fn from_hf(json: &Value, path: &Path) -> Result<Self, ModelError> {
        let r = ConfigReader { json, path };
        let invalid = |key: &str, message: String| r.invalid(key, message);
        let required = |key: &str| r.usize(key);
        let n_embd = required("n_embd")?;
        let n_head = required("n_head")?;
        if !n_embd.is_multiple_of(n_head) {
            return Err(invalid(
                "n_head",
                format!("{n_head} does not divide n_embd = {n_embd}"),
            ));
        }
        let tanh_gelu = match json
            .get("activation_function")
            .and_then(Value::as_str)
            .unwrap_or("gelu_new")
        {
            "gelu_new" | "gelu_pytorch_tanh" => true,
            "gelu" => false,
            other => {
                return Err(invalid(
                    "activation_function",
                    format!("`{other}` is not supported (gelu_new, gelu)"),
                ));
            }
        };
        for key in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
            if json.get(key).and_then(Value::as_bool) == Some(true) {
                return Err(invalid(key, "is not supported".into()));
            }
        }
        Ok(Self {
            vocab_size: required("vocab_size")?,
            n_positions: required("n_positions")?,
            n_embd,
            n_layer: required("n_layer")?,
            n_head,
            n_inner: r.usize_opt("n_inner")?.unwrap_or(4 * n_embd),
            layer_norm_epsilon: r.f64_or("layer_norm_epsilon", 1e-5)?,
            tanh_gelu,
        })
    }

    fn to_hf(&self, _dir: &Path) -> Result<Value, ModelError> {
        Ok(json!({
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": self.n_inner,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "activation_function": if self.tanh_gelu { "gelu_new" } else { "gelu" },
            "tie_word_embeddings": true,
            "torch_dtype": "float32",
        }))
    }

    fn model_type(&self) -> &'static str {
        "gpt2"
    }

    fn init_with<B: Backend>(&self, init: Init, device: &B::Device) -> Gpt2<B> {
        Gpt2Config::init_with(self, init, device)
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn hidden_size(&self) -> usize {
        self.n_embd
    }

    fn num_layers(&self) -> usize {
        self.n_layer
    }

    fn set_num_layers(&mut self, n: usize) {
        self.n_layer = n;
    }

    fn tied_embeddings(&self) -> bool {
        true
    }
}

impl Gpt2Config {
    /// A randomly initialized model (load weights with [`crate::hf::load`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Gpt2<B> {
        self.init_with(Init::Transformers, device)
    }

    /// A randomly initialized model drawn by `init` (the `Conv1D` layers are GPT-2's own, always
    /// N(0, 0.02); transformers also scales the residual projections).
    pub fn init_with<B: Backend>(&self, init: Init, device: &B::Device) -> Gpt2<B> {
        let ln = || {
            LayerNormConfig::new(self.n_embd)
                .with_epsilon(self.layer_norm_epsilon)
                .init(device)
        };
        // transformers scales the projections back into the residual stream by 1/sqrt(2 n_layer).
        let residual_std = match init {
            Init::Transformers => INIT_STD / ((2 * self.n_layer) as f64).sqrt(),
            Init::Burn => INIT_STD,
        };
        let block = || Block {
            ln_1: ln(),
            attn: Gpt2Attention {
                c_attn: Conv1D::new(self.n_embd, 3 * self.n_embd, INIT_STD, device),
                c_proj: Conv1D::new(self.n_embd, self.n_embd, residual_std, device),
                n_head: self.n_head,
            },
            ln_2: ln(),
            mlp: Gpt2Mlp {
                c_fc: Conv1D::new(self.n_embd, self.n_inner, INIT_STD, device),
                c_proj: Conv1D::new(self.n_inner, self.n_embd, residual_std, device),
                tanh_gelu: self.tanh_gelu,
            },
        };
        Gpt2 {
            transformer: Gpt2Model {
                wte: init::embedding(self.vocab_size, self.n_embd, init, device),
                wpe: init::embedding(self.n_positions, self.n_embd, init, device),
                h: (0..self.n_layer).map(|_| block()).collect(),
                ln_f: ln(),
            },
        }
    }
}

/// Causal self-attention with a fused QKV projection.
#[derive(Module, Debug)]
pub struct Gpt2Attention<B: Backend> {
    /// `n_embd -> 3 * n_embd` (queries, keys, values).
    pub c_attn: Conv1D<B>,
    /// Output projection.
    pub c_proj: Conv1D<B>,
    n_head: usize,
}

/// The MLP.
#[derive(Module, Debug)]
pub struct Gpt2Mlp<B: Backend> {
    /// Expansion.
    pub c_fc: Conv1D<B>,
    /// Contraction.
    pub c_proj: Conv1D<B>,
    tanh_gelu: bool,
}

/// One pre-norm block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub ln_1: LayerNorm<B>,
    /// Attention.
    pub attn: Gpt2Attention<B>,
    /// Norm before the MLP.
    pub ln_2: LayerNorm<B>,
    /// MLP.
    pub mlp: Gpt2Mlp<B>,
}

/// The decoder stack (HF's `transformer.` prefix).
#[derive(Module, Debug)]
pub struct Gpt2Model<B: Backend> {
    /// Token embeddings, also the LM head.
    pub wte: Embedding<B>,
    /// Learned positions.
    pub wpe: Embedding<B>,
    /// Blocks.
    pub h: Vec<Block<B>>,
    /// Final norm; its output is the last hidden state.
    pub ln_f: LayerNorm<B>,
}

/// GPT-2 with its tied LM head.
#[derive(Module, Debug)]
pub struct Gpt2<B: Backend> {
    /// The decoder stack.
    pub transformer: Gpt2Model<B>,
}

impl<B: Backend> Gpt2Attention<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        masked: Tensor<B, 4, Bool>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let (h, hd) = (self.n_head, d / self.n_head);
        let qkv = self.c_attn.forward(x);
        let part = |i: usize| {
            qkv.clone()
                .slice(s![.., .., i * d..(i + 1) * d])
                .reshape([b, s, h, hd])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let (k, v) = match cache {
            Some(cache) => cache.extend(k, v),
            None => (k, v),
        };
        let context = attention(q, k, v, Some(masked), Scores::new(hd));
        self.c_proj
            .forward(context.swap_dims(1, 2).reshape([b, s, d]))
    }
}

impl<B: Backend> Gpt2Mlp<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.c_fc.forward(x);
        let x = if self.tanh_gelu {
            gelu_tanh(x)
        } else {
            gelu(x)
        };
        self.c_proj.forward(x)
    }
}

impl<B: Backend> LayerStack<B> for Gpt2<B> {
    fn attention_windows(&self) -> Vec<Option<usize>> {
        vec![None]
    }

    fn num_layers(&self) -> usize {
        self.transformer.h.len()
    }

    /// No rotary tables: GPT-2's positions are learned and added in [`LayerStack::embed`].
    fn layer_inputs(
        &self,
        positions: Tensor<B, 2, Int>,
        _max_position: usize,
        masks: AttentionMasks<B>,
    ) -> LayerInputs<B> {
        LayerInputs {
            positions,
            rotary: Vec::new(),
            masks,
        }
    }

    fn embed(&self, input_ids: Tensor<B, 2, Int>, inputs: &LayerInputs<B>) -> Tensor<B, 3> {
        let t = &self.transformer;
        t.wte.forward(input_ids) + t.wpe.forward(inputs.positions.clone())
    }

    fn layer(
        &self,
        index: usize,
        x: Tensor<B, 3>,
        inputs: &LayerInputs<B>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 3> {
        let block = &self.transformer.h[index];
        let masked = inputs.masks.get(None);
        let x = x.clone() + block.attn.forward(block.ln_1.forward(x), masked, cache);
        x.clone() + block.mlp.forward(block.ln_2.forward(x))
    }

    fn final_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.transformer.ln_f.forward(x)
    }

    fn head_rows(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head(hidden)
    }
}

impl<B: Backend> Decoder<B> for Gpt2<B> {
    fn head<const D: usize>(&self, hidden: Tensor<B, D>) -> Tensor<B, D> {
        tied_head(hidden, self.transformer.wte.weight.val())
    }

    fn truncate_layers(&mut self, n: usize) {
        self.transformer.h.truncate(n);
    }

    fn embed_tokens(&self) -> &Embedding<B> {
        &self.transformer.wte
    }

    fn embed_tokens_mut(&mut self) -> &mut Embedding<B> {
        &mut self.transformer.wte
    }

    fn projections(&mut self) -> Vec<(String, &mut dyn Projection<B>)> {
        let mut all: Vec<(String, &mut dyn Projection<B>)> = Vec::new();
        for (i, block) in self.transformer.h.iter_mut().enumerate() {
            let p = format!("transformer.h.{i}.");
            all.push((format!("{p}attn.c_attn"), &mut block.attn.c_attn));
            all.push((format!("{p}attn.c_proj"), &mut block.attn.c_proj));
            all.push((format!("{p}mlp.c_fc"), &mut block.mlp.c_fc));
            all.push((format!("{p}mlp.c_proj"), &mut block.mlp.c_proj));
        }
        all
    }

    fn default_lora_targets(&self) -> &'static [&'static str] {
        &["c_attn"]
    }
}

crate::causal_lm_via_decoder!(Gpt2);
