//! GGUF checkpoints (the format of llama.cpp and most local models).
//!
//! [`load_gguf`] reads the container ([`GgufFile`]), derives the model config from the metadata
//! (architectures `llama`, `qwen2`, `qwen3`, `gemma2`, `gemma3`), renames llama.cpp's tensors to
//! HF names, dequantizes them to f32 ([`dequantize`]), undoes the row permutation llama.cpp
//! applies to the Q and K projections of `llama` models (it stores them for interleaved RoPE;
//! ganpo, like HF, rotates halves) and the `+ 1` it adds to Gemma's norm weights.

mod dequant;
mod reader;
mod tokenizer;

use std::path::Path;
use std::rc::Rc;

use burn::prelude::*;

pub use dequant::{GgmlType, SUPPORTED_TYPES, dequantize};
pub use reader::{GgufFile, TensorInfo, Value};
pub use tokenizer::tokenizer_from_gguf;

use crate::gemma::{GemmaConfig, Generation};
use crate::llama::{Family, LlamaConfig};
use crate::nn::RopeScaling;
use crate::weights::{apply, f32_snapshot};
use crate::{Lm, ModelConfig, ModelError};

/// The f32 values of one tensor of `file`.
pub fn read_tensor(file: &GgufFile, info: &TensorInfo) -> Result<Vec<f32>, ModelError> {
    let bad = |message: String| ModelError::BadWeights {
        path: file.path.clone(),
        message,
    };
    let ty = GgmlType::from_id(info.ggml_type).ok_or_else(|| ModelError::UnsupportedDtype {
        path: file.path.clone(),
        name: info.name.clone(),
        dtype: format!(
            "{} (supported: {SUPPORTED_TYPES})",
            GgmlType::name_of(info.ggml_type)
        ),
    })?;
    let n: usize = info.shape.iter().product();
    let len = ty.byte_len(n).ok_or_else(|| {
        bad(format!(
            "tensor `{}` has {n} values, not a whole number of {ty:?} blocks",
            info.name
        ))
    })?;
    let data = file
        .bytes
        .get(info.offset..info.offset.saturating_add(len))
        .ok_or_else(|| {
            bad(format!(
                "tensor `{}` runs past the end of the file",
                info.name
            ))
        })?;
    Ok(dequantize(ty, data))
}

/// Reorders the rows of a Q or K projection from llama.cpp's interleaved-RoPE layout back to HF's
/// rotate-half layout (the inverse of convert_hf_to_gguf.py's `permute`).
pub fn unpermute_rows(values: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let per_head = rows / n_head;
    let half = per_head / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..half {
                let dst = h * per_head + i * half + j;
                let src = h * per_head + j * 2 + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The HF name of llama.cpp tensor `name` in a model of GGUF architecture `arch` (`None`: a
/// tensor the model does not use).
fn hf_name(arch: &str, name: &str) -> Option<String> {
    let gemma = arch.starts_with("gemma");
    Some(match name {
        "token_embd.weight" => "model.embed_tokens.weight".into(),
        "output_norm.weight" => "model.norm.weight".into(),
        "output.weight" => "lm_head.weight".into(),
        _ => {
            let rest = name.strip_prefix("blk.")?;
            let (layer, rest) = rest.split_once('.')?;
            let (module, kind) = rest.rsplit_once('.')?;
            let module = match module {
                "attn_norm" => "input_layernorm",
                // Llama: the MLP's input norm; Gemma: its own pre-feed-forward norm.
                "ffn_norm" if gemma => "pre_feedforward_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "post_attention_norm" if gemma => "post_attention_layernorm",
                "post_ffw_norm" if gemma => "post_feedforward_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "attn_q_norm" => "self_attn.q_norm",
                "attn_k_norm" => "self_attn.k_norm",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                _ => return None,
            };
            format!("model.layers.{layer}.{module}.{kind}")
        }
    })
}

/// GGUF architectures ganpo reads.
const SUPPORTED_ARCHITECTURES: &str = "llama, qwen2, qwen3, gemma2, gemma3";

/// The model config a GGUF file's metadata describes.
pub fn gguf_config(file: &GgufFile) -> Result<ModelConfig, ModelError> {
    let arch = file
        .get("general.architecture")
        .and_then(Value::as_str)
        .ok_or_else(|| ModelError::InvalidConfig {
            path: file.path.clone(),
            key: "general.architecture".into(),
            message: "missing".into(),
        })?;
    match arch {
        "llama" | "qwen2" | "qwen3" => Ok(ModelConfig::Llama(llama_config(file, arch)?)),
        "gemma2" | "gemma3" => Ok(ModelConfig::Gemma(gemma_config(file, arch)?)),
        other => Err(ModelError::UnsupportedArchitecture {
            path: file.path.clone(),
            model_type: other.into(),
            supported: format!("{SUPPORTED_ARCHITECTURES} (GGUF)"),
        }),
    }
}

/// Typed reads of a GGUF file's `ARCH.KEY` metadata, errors naming the key.
struct Meta<'a> {
    file: &'a GgufFile,
    arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    fn invalid(&self, key: &str, message: &str) -> ModelError {
        ModelError::InvalidConfig {
            path: self.file.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// `ARCH.k` as a count, if present.
    fn size(&self, k: &str) -> Result<Option<usize>, ModelError> {
        match self.file.get(&self.key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.invalid(&self.key(k), "expected an integer")),
        }
    }

    /// `ARCH.k` as a count; missing is an error.
    fn required(&self, k: &str) -> Result<usize, ModelError> {
        self.size(k)?
            .ok_or_else(|| self.invalid(&self.key(k), "missing"))
    }

    /// `ARCH.k` as a number, if present.
    fn float(&self, k: &str) -> Option<f64> {
        self.file.get(&self.key(k)).and_then(Value::as_f64)
    }

    /// The tensor called `name`, if the file has one.
    fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.file.tensors.iter().find(|t| t.name == name)
    }

    /// The token embeddings (every model has them; their rows give the vocabulary size).
    fn embeddings(&self) -> Result<&TensorInfo, ModelError> {
        self.tensor("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensors {
                path: self.file.path.clone(),
                names: vec!["token_embd.weight".into()],
            })
    }
}

/// The Llama-family config of a GGUF file of architecture `arch`.
fn llama_config(file: &GgufFile, arch: &str) -> Result<LlamaConfig, ModelError> {
    let m = Meta { file, arch };
    let invalid = |key: &str, message: &str| m.invalid(key, message);
    let family = match arch {
        "qwen2" => Family::Qwen2,
        "qwen3" => Family::Qwen3,
        _ => Family::Llama,
    };
    let key = |k: &str| m.key(k);
    let size = |k: &str| m.size(k);
    let required = |k: &str| m.required(k);
    let float = |k: &str, default: f64| m.float(k).unwrap_or(default);
    let tensor = |name: &str| m.tensor(name);
    let embed = m.embeddings()?;
    let hidden_size = required("embedding_length")?;
    let heads = required("attention.head_count")?;
    let head_dim = size("attention.key_length")?.unwrap_or(hidden_size / heads);
    let rope_theta = float("rope.freq_base", 10000.0);
    let rope_scaling = match file.get(&key("rope.scaling.type")).and_then(Value::as_str) {
        // Llama 3.1+: the scaling is a tensor of per-frequency divisors, not metadata.
        _ if tensor("rope_freqs.weight").is_some() => {
            let info = tensor("rope_freqs.weight").expect("checked");
            let factors: Vec<f64> = read_tensor(file, info)?
                .into_iter()
                .map(f64::from)
                .collect();
            if factors.len() != head_dim / 2 {
                return Err(invalid(
                    "rope_freqs.weight",
                    &format!(
                        "{} values, but head_dim / 2 = {} frequencies",
                        factors.len(),
                        head_dim / 2
                    ),
                ));
            }
            RopeScaling::llama3_from_factors(&factors, rope_theta, head_dim)
                .unwrap_or(RopeScaling::Factors { factors })
        }
        None | Some("none") => RopeScaling::Default,
        Some("linear") => RopeScaling::Linear {
            factor: float("rope.scaling.factor", 1.0),
        },
        Some(other) => {
            return Err(invalid(
                &key("rope.scaling.type"),
                &format!("`{other}` is not supported"),
            ));
        }
    };
    Ok(LlamaConfig {
        family,
        vocab_size: size("vocab_size")?.unwrap_or(embed.shape[0]),
        hidden_size,
        intermediate_size: required("feed_forward_length")?,
        num_hidden_layers: required("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: size("attention.head_count_kv")?.unwrap_or(heads),
        head_dim,
        rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-6),
        rope_theta,
        rope_scaling,
        tie_word_embeddings: tensor("output.weight").is_none(),
        qkv_bias: family == Family::Qwen2,
        o_bias: false,
        mlp_bias: false,
        qk_norm: family == Family::Qwen3,
        sliding_window: None,
        max_position_embeddings: size("context_length")?.unwrap_or(2048),
    })
}

/// The Gemma config of a GGUF file of architecture `gemma2` / `gemma3`. llama.cpp keeps what the
/// metadata leaves out fixed per architecture, and so does this: the layer pattern (Gemma 2
/// alternates sliding and global layers, Gemma 3 has one global layer in six), Gemma 3's local
/// RoPE base (10,000), and the score scale (`head_dim`, or `hidden / heads` for the 27B models,
/// as llama.cpp sets it).
fn gemma_config(file: &GgufFile, arch: &str) -> Result<GemmaConfig, ModelError> {
    let m = Meta { file, arch };
    let (size, required, float) = (|k| m.size(k), |k| m.required(k), |k| m.float(k));
    let embed = m.embeddings()?;
    let generation = if arch == "gemma2" {
        Generation::Gemma2
    } else {
        Generation::Gemma3
    };
    let hidden_size = required("embedding_length")?;
    let heads = required("attention.head_count")?;
    let head_dim = size("attention.key_length")?.unwrap_or(hidden_size / heads);
    let layers = required("block_count")?;
    let is_27b = matches!(
        (generation, layers),
        (Generation::Gemma2, 46) | (Generation::Gemma3, 62)
    );
    let pattern = if generation == Generation::Gemma2 {
        2
    } else {
        6
    };
    let rope_theta = float("rope.freq_base").unwrap_or(10000.0);
    let rope_scaling = match file
        .get(&m.key("rope.scaling.type"))
        .and_then(Value::as_str)
    {
        None | Some("none") => RopeScaling::Default,
        Some("linear") => RopeScaling::Linear {
            factor: float("rope.scaling.factor").unwrap_or(1.0),
        },
        Some(other) => {
            return Err(m.invalid(
                &m.key("rope.scaling.type"),
                &format!("`{other}` is not supported"),
            ));
        }
    };
    Ok(GemmaConfig {
        generation,
        vocab_size: size("vocab_size")?.unwrap_or(embed.shape[0]),
        hidden_size,
        intermediate_size: required("feed_forward_length")?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: size("attention.head_count_kv")?.unwrap_or(heads),
        head_dim,
        rms_norm_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
        rope_theta,
        rope_scaling,
        rope_local_base_freq: match generation {
            Generation::Gemma2 => rope_theta,
            Generation::Gemma3 => 10000.0,
        },
        query_pre_attn_scalar: if is_27b {
            (hidden_size / heads) as f64
        } else {
            head_dim as f64
        },
        attn_logit_softcapping: float("attn_logit_softcapping"),
        final_logit_softcapping: float("final_logit_softcapping"),
        sliding_window: size("attention.sliding_window")?,
        sliding_layers: (0..layers).map(|i| (i + 1) % pattern != 0).collect(),
        attention_bias: false,
        tie_word_embeddings: m.tensor("output.weight").is_none(),
        max_position_embeddings: size("context_length")?.unwrap_or(8192),
    })
}

/// Loads a model from a GGUF file: config from metadata, weights dequantized to f32, and the
/// embedded tokenizer when ganpo can rebuild it ([`tokenizer_from_gguf`]).
pub fn load_gguf<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(ModelConfig, Lm<B>, Option<crate::Tokenizer>), ModelError> {
    let file = Rc::new(GgufFile::open(path)?);
    let tokenizer = tokenizer_from_gguf(&file)?;
    let config = gguf_config(&file)?;
    let arch = file
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // llama.cpp stores the Q / K rows of `llama` models permuted for interleaved RoPE.
    let permuted_heads = match &config {
        ModelConfig::Llama(c) if c.family == Family::Llama => {
            Some((c.num_attention_heads, c.num_key_value_heads))
        }
        _ => None,
    };
    // convert_hf_to_gguf.py stores Gemma's (1 + w) norm weights as 1 + w.
    let norm_shift = if matches!(config, ModelConfig::Gemma(_)) {
        1.0
    } else {
        0.0
    };
    let mut snapshots = Vec::new();
    for (index, info) in file.tensors.iter().enumerate() {
        if info.name == "rope_freqs.weight" {
            continue; // part of the config (rope scaling), not a parameter
        }
        let Some(name) = hf_name(&arch, &info.name) else {
            tracing::warn!(checkpoint = %path.display(), tensor = %info.name, "GGUF tensor not used by the model");
            continue;
        };
        let heads = match (name.rsplit('.').nth(1), permuted_heads) {
            (Some("q_proj"), Some((q, _))) => Some(q),
            (Some("k_proj"), Some((_, kv))) => Some(kv),
            _ => None,
        };
        let shift = if name.ends_with("norm.weight") {
            norm_shift
        } else {
            0.0
        };
        // Fail on unsupported types now, with the tensor named, rather than inside the applier.
        if GgmlType::from_id(info.ggml_type).is_none() {
            read_tensor(&file, info)?;
        }
        let shape = info.shape.clone();
        let file = Rc::clone(&file);
        let data_fn = Rc::new(move || {
            let info = &file.tensors[index];
            let values = read_tensor(&file, info)
                .map_err(|e| burn_store::TensorSnapshotError::DataError(e.to_string()))?;
            let mut values = match heads {
                Some(h) if info.shape.len() == 2 => {
                    unpermute_rows(&values, info.shape[0], info.shape[1], h)
                }
                Some(h) => unpermute_rows(&values, info.shape[0], 1, h),
                None => values,
            };
            if shift != 0.0 {
                values.iter_mut().for_each(|v| *v -= shift);
            }
            Ok(TensorData::new(values, info.shape.clone()))
        });
        snapshots.push(f32_snapshot(&name, shape, data_fn));
    }
    let mut model = config.init::<B>(device);
    apply(&mut model, snapshots, path, |_| false)?;
    Ok((config, model, tokenizer))
}
