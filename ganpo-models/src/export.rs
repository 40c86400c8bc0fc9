//! Writing a model back as an HF directory that transformers loads.

use std::path::Path;

use burn::prelude::*;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, TensorSnapshot};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::{Value, json};

use crate::llama::{Family, LlamaConfig};
use crate::nn::RopeScaling;
use crate::{Lm, ModelConfig, ModelError, Tokenizer};

/// The HF `config.json` of a model configuration.
pub fn hf_config(config: &ModelConfig) -> Value {
    match config {
        ModelConfig::Llama(c) => llama_config(c),
        ModelConfig::Gpt2(c) => json!({
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "vocab_size": c.vocab_size,
            "n_positions": c.n_positions,
            "n_embd": c.n_embd,
            "n_layer": c.n_layer,
            "n_head": c.n_head,
            "n_inner": c.n_inner,
            "layer_norm_epsilon": c.layer_norm_epsilon,
            "activation_function": if c.tanh_gelu { "gelu_new" } else { "gelu" },
            "tie_word_embeddings": true,
            "torch_dtype": "float32",
        }),
    }
}

fn llama_config(c: &LlamaConfig) -> Value {
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

/// Where the tokenizer files of an exported directory come from.
#[derive(Clone, Copy, Debug)]
pub enum TokenizerFiles<'a> {
    /// No tokenizer files.
    None,
    /// Copied from an HF model directory (`tokenizer.json` required; `tokenizer_config.json`,
    /// `generation_config.json`, `chat_template.jinja` when present).
    Dir(&'a Path),
    /// Written from a loaded tokenizer (for example one built from GGUF metadata).
    Tokenizer(&'a Tokenizer),
}

/// Writes `model` as an HF directory at `dir`: `config.json`, `model.safetensors` (f32, PyTorch
/// layouts and names) and the tokenizer files `tokenizer` names.
///
/// Everything is written to a temporary sibling directory first and renamed into place, so `dir`
/// either holds a complete export or is untouched; an existing `dir` is an error.
pub fn export_hf<B: Backend>(
    model: &Lm<B>,
    config: &ModelConfig,
    tokenizer: TokenizerFiles<'_>,
    dir: &Path,
) -> Result<(), ModelError> {
    let tensors = model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true);
    write_export(config, hf_config(config), tensors, tokenizer, dir)
}

/// Writes `json` as `config.json`, `tensors` (PyTorch layouts, checkpoint names) as
/// `model.safetensors` and the tokenizer files into a temporary sibling of `dir`, then renames it
/// to `dir`; refuses an existing `dir` and a `config` no transformers config can describe.
pub(crate) fn write_export(
    config: &ModelConfig,
    json: Value,
    tensors: Vec<TensorSnapshot>,
    tokenizer: TokenizerFiles<'_>,
    dir: &Path,
) -> Result<(), ModelError> {
    if dir.exists() {
        return Err(ModelError::Io {
            path: dir.to_path_buf(),
            reason: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "refusing to overwrite an existing path",
            ),
        });
    }
    if let ModelConfig::Llama(LlamaConfig {
        rope_scaling: RopeScaling::Factors { .. },
        ..
    }) = config
    {
        return Err(ModelError::InvalidConfig {
            path: dir.to_path_buf(),
            key: "rope_freqs.weight".into(),
            message: "these per-frequency RoPE factors are not Llama 3 scaling (low/high freq \
                      factor 1/4), so no transformers config.json can describe them"
                .into(),
        });
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let tmp = dir.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(ModelError::io(&tmp))?;
    let result = write_all(&json, tensors, tokenizer, &tmp)
        .and_then(|()| std::fs::rename(&tmp, dir).map_err(ModelError::io(dir)));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn write_all(
    json: &Value,
    snapshots: Vec<TensorSnapshot>,
    tokenizer: TokenizerFiles<'_>,
    tmp: &Path,
) -> Result<(), ModelError> {
    let config_path = tmp.join("config.json");
    let text = serde_json::to_string_pretty(json).expect("a JSON value serializes");
    std::fs::write(&config_path, text).map_err(ModelError::io(&config_path))?;

    let weights = tmp.join("model.safetensors");
    let bad = |message: String| ModelError::BadWeights {
        path: weights.clone(),
        message,
    };
    let mut tensors = Vec::new();
    for snapshot in snapshots {
        let data = snapshot
            .to_data()
            .map_err(|e| bad(format!("{}: {e}", snapshot.full_path())))?;
        let data = data.convert::<f32>();
        tensors.push((
            snapshot.full_path(),
            data.shape.to_vec(),
            data.as_bytes().to_vec(),
        ));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| bad(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), &weights)
        .map_err(|e| bad(e.to_string()))?;

    if let TokenizerFiles::Tokenizer(t) = tokenizer {
        t.save_hf(tmp)?;
    }
    if let TokenizerFiles::Dir(src) = tokenizer {
        let required = src.join("tokenizer.json");
        if !required.is_file() {
            return Err(ModelError::Io {
                path: required,
                reason: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no tokenizer file to export",
                ),
            });
        }
        for file in [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
            "chat_template.jinja",
        ] {
            let from = src.join(file);
            if from.is_file() {
                std::fs::copy(&from, tmp.join(file)).map_err(ModelError::io(&from))?;
            }
        }
    }
    Ok(())
}
