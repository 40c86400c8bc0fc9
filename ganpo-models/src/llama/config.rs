//! Settings of the Llama family, read from an HF `config.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ModelError;
use crate::nn::RopeScaling;

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

/// `model_type`s [`LlamaConfig::from_hf`] accepts.
pub const SUPPORTED_MODEL_TYPES: &str = "llama, mistral, qwen2, qwen3";

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

struct Reader<'a> {
    json: &'a Value,
    path: &'a Path,
}

impl Reader<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ModelError {
        ModelError::InvalidConfig {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>, ModelError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| Some(n as usize))
                .ok_or_else(|| {
                    self.invalid(key, format!("expected a positive integer, found {v}"))
                }),
        }
    }

    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.usize_opt(key)?
            .ok_or_else(|| self.invalid(key, "missing"))
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, ModelError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.invalid(key, format!("expected a number, found {v}"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.invalid(key, format!("expected true or false, found {v}"))),
        }
    }
}

impl LlamaConfig {
    /// Reads an HF `config.json` (already parsed); `path` is for error messages.
    ///
    /// Accepts both the top-level `rope_theta` / `rope_scaling` of transformers 4 and the
    /// `rope_parameters` object of transformers 5.
    pub fn from_hf(json: &Value, path: &Path) -> Result<Self, ModelError> {
        let r = Reader { json, path };
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
                    supported: SUPPORTED_MODEL_TYPES,
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
}

/// Parses a `rope_parameters` / `rope_scaling` object.
fn rope_scaling(s: &Value) -> Result<RopeScaling, String> {
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| {
        s.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("`{key}` missing for rope_type {kind}"))
    };
    match kind {
        "default" => Ok(RopeScaling::Default),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        other => Err(format!(
            "rope_type `{other}` is not supported (supported: default, linear, llama3)"
        )),
    }
}
