//! PEFT adapter directories: `adapter_config.json` and `adapter_model.safetensors`, the tensors
//! named `base_model.model.<module>.lora_A.weight` (`[r, in]`) and `...lora_B.weight`
//! (`[out, r]`), as `peft.PeftModel.from_pretrained` reads them and `save_pretrained` writes them.

use std::path::Path;

use burn::prelude::*;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, PathFilter};
use serde_json::{Value, json};

use super::{LoraConfig, TargetModules, attach_one, set_enabled};
use crate::export::{ExportFiles, TokenizerFiles, write_export};
use crate::hf::read_json;
use crate::weights::{apply_filtered, read_safetensors};
use crate::{Decoder, Lm, ModelError};

/// The files of a PEFT adapter directory.
const PEFT_FILES: ExportFiles = ExportFiles {
    config: "adapter_config.json",
    weights: "adapter_model.safetensors",
};

/// PEFT's prefix of every module name in an adapter file (`PeftModelForCausalLM.base_model.model`).
const PREFIX: &str = "base_model.model.";

/// Writes the adapters of `model` as a PEFT adapter directory at `dir` (atomically; an existing
/// `dir` is an error), with the tokenizer files `tokenizer` names (as TRL saves them beside an
/// adapter). `config` is the run's `[lora]`; `base_model` is recorded as
/// `base_model_name_or_path`.
pub fn save_adapter<B: Backend>(
    model: &Lm<B>,
    config: &LoraConfig,
    base_model: &str,
    tokenizer: TokenizerFiles<'_>,
    dir: &Path,
) -> Result<(), ModelError> {
    let filter = PathFilter::new().with_regex(r"\.lora_[AB]\.weight$");
    let mut tensors = model.collect(Some(filter), Some(Box::new(BurnToPyTorchAdapter)), true);
    if tensors.is_empty() {
        return Err(ModelError::Lora {
            key: "lora".into(),
            message: "the model carries no adapters to export".into(),
        });
    }
    for t in &mut tensors {
        t.path_stack = Some(
            std::iter::once("base_model".to_string())
                .chain(std::iter::once("model".to_string()))
                .chain(t.full_path().split('.').map(str::to_string))
                .collect(),
        );
    }
    let targets = match &config.target_modules {
        Some(TargetModules::Pattern(p)) => json!(p),
        Some(TargetModules::Names(n)) => json!(n),
        None => json!(model.default_lora_targets()),
    };
    let json = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "use_rslora": config.rslora,
        "target_modules": targets,
        "fan_in_fan_out": matches!(model, Lm::Gpt2(_)),
        "bias": "none",
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "use_dora": false,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": null,
    });
    write_export(json, tensors, tokenizer, dir, &PEFT_FILES)
}

/// The `[lora]` settings an `adapter_config.json` describes; options ganpo does not implement
/// (DoRA, per-module ranks, trained biases, extra saved modules) are errors naming the key.
pub fn read_adapter_config(dir: &Path) -> Result<LoraConfig, ModelError> {
    let path = dir.join(PEFT_FILES.config);
    let json = read_json(&path)?;
    let invalid = |key: &str, message: String| ModelError::InvalidConfig {
        path: path.clone(),
        key: key.into(),
        message,
    };
    let peft_type = json.get("peft_type").and_then(Value::as_str);
    if peft_type != Some("LORA") {
        return Err(invalid(
            "peft_type",
            format!("expected \"LORA\", found {peft_type:?}"),
        ));
    }
    let number = |key: &str, default: f64| match json.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| invalid(key, format!("expected a number, found {v}"))),
    };
    let r = number("r", 8.0)?;
    if r < 1.0 || r.fract() != 0.0 {
        return Err(invalid(
            "r",
            format!("expected a positive integer, found {r}"),
        ));
    }
    let unsupported = |key: &str, ok: &dyn Fn(&Value) -> bool| match json.get(key) {
        Some(v) if !ok(v) => Err(invalid(key, format!("{v} is not supported by ganpo"))),
        _ => Ok(()),
    };
    let empty = |v: &Value| v.is_null() || v.as_object().is_some_and(|o| o.is_empty());
    unsupported("use_dora", &|v| v == &json!(false) || v.is_null())?;
    unsupported("rank_pattern", &empty)?;
    unsupported("alpha_pattern", &empty)?;
    unsupported("bias", &|v| v == &json!("none"))?;
    unsupported("modules_to_save", &|v| {
        v.is_null() || v.as_array().is_some_and(|a| a.is_empty())
    })?;
    // Options that change which weights an adapter has or how it applies them.
    let off = |v: &Value| v.is_null() || v == &json!(false);
    for key in [
        "layers_to_transform",
        "lora_bias",
        "exclude_modules",
        "layer_replication",
        "target_parameters",
        "trainable_token_indices",
        "use_qalora",
        "use_bdlora",
        "alora_invocation_tokens",
    ] {
        unsupported(key, &off)?;
    }
    let target_modules = match json.get("target_modules") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<TargetModules>(v.clone()).map_err(|_| {
                invalid(
                    "target_modules",
                    format!("expected a string or a list of names, found {v}"),
                )
            })?,
        ),
    };
    let rslora = match json.get("use_rslora") {
        None | Some(Value::Null) => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid("use_rslora", format!("expected true or false, found {v}")))?,
    };
    Ok(LoraConfig {
        r: r as usize,
        alpha: number("lora_alpha", 8.0)?,
        dropout: number("lora_dropout", 0.0)?,
        target_modules,
        rslora,
    })
}

/// `base_model_name_or_path` of the adapter at `dir`, when it records one.
pub fn adapter_base(dir: &Path) -> Result<Option<String>, ModelError> {
    let json = read_json(&dir.join(PEFT_FILES.config))?;
    Ok(json
        .get("base_model_name_or_path")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string))
}

/// Whether `dir` holds a PEFT adapter (an `adapter_config.json`).
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(PEFT_FILES.config).is_file()
}

/// Loads the PEFT adapter at `dir` onto `model` (frozen first): the adapters go exactly on the
/// modules the adapter file holds tensors for, with its rank, scale and dropout. Returns the
/// adapted model and its `[lora]` settings. An adapter for another base (a module this model
/// lacks, a shape that differs) is an error naming the file.
pub fn load_adapter<B: Backend>(
    model: Lm<B>,
    dir: &Path,
) -> Result<(Lm<B>, LoraConfig), ModelError> {
    let config = read_adapter_config(dir)?;
    let weights = dir.join(PEFT_FILES.weights);
    let mut tensors = read_safetensors(&weights)?;
    let bad = |message: String| ModelError::BadWeights {
        path: weights.clone(),
        message,
    };
    let mut modules = Vec::new();
    for t in &mut tensors {
        let name = t.full_path();
        let Some(inner) = name.strip_prefix(PREFIX) else {
            return Err(bad(format!(
                "tensor `{name}` is not a PEFT adapter tensor (expected `{PREFIX}...`)"
            )));
        };
        let Some(module) = inner
            .strip_suffix(".lora_A.weight")
            .or_else(|| inner.strip_suffix(".lora_B.weight"))
        else {
            return Err(bad(format!(
                "tensor `{name}` is neither a lora_A nor a lora_B weight"
            )));
        };
        if !modules.iter().any(|m| m == module) {
            modules.push(module.to_string());
        }
        t.path_stack = Some(inner.split('.').map(str::to_string).collect());
    }
    let mut model = model.no_grad();
    let mut found = Vec::new();
    for (name, projection) in model.projections() {
        if modules.contains(&name) {
            attach_one(&name, projection.parts(), &config, None);
            found.push(name);
        }
    }
    if let Some(missing) = modules.iter().find(|m| !found.contains(m)) {
        return Err(bad(format!(
            "the adapter has tensors for `{missing}`, which this model does not have as a \
             projection: it was made for another base model"
        )));
    }
    let filter = PathFilter::new().with_regex(r"\.lora_[AB]\.weight$");
    apply_filtered(&mut model, tensors, &weights, |_| false, Some(filter))?;
    set_enabled(&mut model, true);
    Ok((model, config))
}
