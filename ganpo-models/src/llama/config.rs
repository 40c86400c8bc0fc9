//! Settings of the Llama family, read from an HF `config.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use burn::prelude::Backend;
use serde_json::json;

use super::Llama;
use crate::config_reader::{ConfigReader, rope_scaling};
use crate::nn::{Init, RopeScaling};
use crate::{Architecture, ModelError};

/// Which member of the family a checkpoint is; decides the details the config leaves implicit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Llama 2 / 3.x, SmolLM / SmolLM2.
    Llama,
    /// Mistral (optional sliding-window attention).
    Mistral,
    /// Qwen2 / Qwen2.5 (bias on the q, k, v projections).
    Qwen2,
    /// Qwen3 (RMS norm on queries and keys per head).
    Qwen3,
}

/// Everything that shapes a Llama-family model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Family member.
    pub family: Family,
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
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMS norm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE frequency scaling.
    pub rope_scaling: RopeScaling,
    /// LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Bias on the q, k, v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    /// Bias in the MLP.
    pub mlp_bias: bool,
    /// RMS norm on queries and keys per head (Qwen3).
    pub qk_norm: bool,
    /// Each token attends to at most this many positions (itself included), if set.
    pub sliding_window: Option<usize>,
    /// Longest context the checkpoint declares (`max_position_embeddings`).
    pub max_position_embeddings: usize,
}

impl Architecture for LlamaConfig {
    type Model<B: Backend> = Llama<B>;

    const MODEL_TYPES: &'static [&'static str] = &["llama", "mistral", "qwen2", "qwen3"];

    /// Reads an HF `config.json` (already parsed); `path` is for error messages.
    ///
    /// Accepts both the top-level `rope_theta` / `rope_scaling` of transformers 4 and the
    /// `rope_parameters` object of transformers 5.
    fn from_hf(json: &Value, path: &Path) -> Result<Self, ModelError> {
        let r = ConfigReader { json, path };
        let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
        let family = match model_type {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            other => {
                return Err(ModelError::UnsupportedArchitecture {
                    path: path.to_path_buf(),
                    model_type: if other.is_empty() {
                        "(missing)".into()
                    } else {
                        other.into()
                    },
                    supported: Self::MODEL_TYPES.join(", "),
                });
            }
        };
        let hidden_size = r.usize("hidden_size")?;
        let num_attention_heads = r.usize("num_attention_heads")?;
        let num_key_value_heads = r
            .usize_opt("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if !num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(r.invalid(
                "num_key_value_heads",
                format!("{num_key_value_heads} does not divide num_attention_heads = {num_attention_heads}"),
            ));
        }
        let head_dim = match r.usize_opt("head_dim")? {
            Some(d) => d,
            None if hidden_size.is_multiple_of(num_attention_heads) => {
                hidden_size / num_attention_heads
            }
            None => {
                return Err(r.invalid(
                    "head_dim",
                    "missing, and hidden_size is not a multiple of num_attention_heads",
                ));
            }
        };
        if head_dim % 2 != 0 {
            return Err(r.invalid(
                "head_dim",
                format!("{head_dim} is odd; rotary embeddings need an even width"),
            ));
        }

        let rope_params = json.get("rope_parameters").filter(|v| v.is_object());
        let rope_theta = match rope_params.and_then(|p| p.get("rope_theta")) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| r.invalid("rope_parameters.rope_theta", "expected a number"))?,
            None => r.f64_or("rope_theta", 10000.0)?,
        };
        let scaling = rope_params.or_else(|| json.get("rope_scaling").filter(|v| v.is_object()));
        let rope_scaling = match scaling {
            None => RopeScaling::Default,
            Some(s) => rope_scaling(s).map_err(|m| r.invalid("rope_parameters", m))?,
        };

        let (qkv_bias, o_bias) = match family {
            Family::Qwen2 => (true, false),
            _ => {
                let b = r.bool_or("attention_bias", false)?;
                (b, b)
            }
        };
        let sliding_window = match family {
            Family::Mistral => r.usize_opt("sliding_window")?,
            Family::Qwen2 | Family::Qwen3 if r.bool_or("use_sliding_window", false)? => {
                return Err(r.invalid(
                    "use_sliding_window",
                    "per-layer sliding windows are not supported",
                ));
            }
            _ => None,
        };
        Ok(Self {
            family,
            vocab_size: r.usize("vocab_size")?,
            hidden_size,
            intermediate_size: r.usize("intermediate_size")?,
            num_hidden_layers: r.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: r.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: r.bool_or("tie_word_embeddings", false)?,
            qkv_bias,
            o_bias,
            mlp_bias: r.bool_or("mlp_bias", false)?,
            qk_norm: family == Family::Qwen3,
            sliding_window,
            max_position_embeddings: r.usize_opt("max_position_embeddings")?.unwrap_or(2048),
        })
    }

    fn to_hf(&self, dir: &Path) -> Result<Value, ModelError> {
        if let RopeScaling::Factors { .. } = self.rope_scaling {
            return Err(ModelError::InvalidConfig {
                path: dir.to_path_buf(),
                key: "rope_freqs.weight".into(),
                message: "these per-frequency RoPE factors are not Llama 3 scaling (low/high freq \
                          factor 1/4), so no transformers config.json can describe them"
                    .into(),
            });
        }
        Ok(hf_json(self))
    }

    fn model_type(&self) -> &'static str {
        match self.family {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }

    fn init_with<B: Backend>(&self, init: Init, device: &B::Device) -> Llama<B> {
        LlamaConfig::init_with(self, init, device)
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
    }

    fn tied_embeddings(&self) -> bool {
        self.tie_word_embeddings
    }
}

/// transformers' `config.json` for `c`.
fn hf_json(c: &LlamaConfig) -> Value {
    let (model_type, architecture) = match c.family {
        Family::Llama => ("llama", "LlamaForCausalLM"),
        Family::Mistral => ("mistral", "MistralForCausalLM"),
        Family::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
        Family::Qwen3 => ("qwen3", "Qwen3ForCausalLM"),
    };
    let mut v = json!({
        "model_type": model_type,
        "architectures": [architecture],
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings,
        "hidden_act": "silu",
        "mlp_bias": c.mlp_bias,
        "torch_dtype": "float32",
    });
    if c.family != Family::Qwen2 {
        v["attention_bias"] = json!(c.qkv_bias);
    }
    if c.family == Family::Mistral {
        v["sliding_window"] = json!(c.sliding_window);
    }
    match &c.rope_scaling {
        RopeScaling::Default => {}
        RopeScaling::Linear { factor } => {
            v["rope_scaling"] = json!({"rope_type": "linear", "factor": factor})
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            v["rope_scaling"] = json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": *original_max_position_embeddings as u64,
            })
        }
        // Not a transformers rope type: `export_hf` refuses such a model before writing.
        RopeScaling::Factors { factors } => {
            v["rope_scaling"] = json!({"rope_type": "ganpo_factors", "factors": factors})
        }
    }
    v
}
