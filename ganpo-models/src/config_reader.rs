//! Reading HF `config.json` files: typed values with errors that name the file and the key, and
//! the RoPE settings every rotary architecture shares.

use std::path::Path;

use serde_json::Value;

use crate::ModelError;
use crate::nn::RopeScaling;

/// Typed reads of an HF `config.json`, each error naming the file and the key.
pub(crate) struct ConfigReader<'a> {
    /// The parsed file.
    pub json: &'a Value,
    /// The file, for errors.
    pub path: &'a Path,
}

impl ConfigReader<'_> {
    pub(crate) fn invalid(&self, key: &str, message: impl Into<String>) -> ModelError {
        ModelError::InvalidConfig {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn usize_opt(&self, key: &str) -> Result<Option<usize>, ModelError> {
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

    pub(crate) fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.usize_opt(key)?
            .ok_or_else(|| self.invalid(key, "missing"))
    }

    pub(crate) fn f64_or(&self, key: &str, default: f64) -> Result<f64, ModelError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.invalid(key, format!("expected a number, found {v}"))),
        }
    }

    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.invalid(key, format!("expected true or false, found {v}"))),
        }
    }
}

/// Parses a `rope_parameters` / `rope_scaling` object.
pub(crate) fn rope_scaling(s: &Value) -> Result<RopeScaling, String> {
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
