//! Text to token ids and back, with the special tokens a model directory declares.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::ModelError;
use crate::hf::read_json;

/// A tokenizer from `tokenizer.json` (HF `tokenizers`), plus the special tokens and chat template
/// of `tokenizer_config.json` (or `chat_template.jinja`) and the stop tokens of
/// `generation_config.json`.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// Tokens that end a generation (`generation_config.json`'s `eos_token_id`, else
    /// `tokenizer_config.json`'s `eos_token`).
    pub eos_token_ids: Vec<u32>,
    /// Text of the end-of-sequence token (`tokenizer_config.json`'s `eos_token`), which TRL appends
    /// to completions.
    pub eos_token: Option<String>,
    /// Beginning-of-sequence token, if the model uses one.
    pub bos_token_id: Option<u32>,
    /// Padding token, if declared.
    pub pad_token_id: Option<u32>,
    /// The Jinja chat template, if declared.
    pub chat_template: Option<String>,
    /// The file the chat template was read from (`tokenizer_config.json`, `chat_template.jinja`
    /// or a GGUF file), for errors that name it.
    pub chat_template_file: Option<PathBuf>,
}

fn token_text(v: &Value) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))
}

impl Tokenizer {
    /// Reads `tokenizer.json`, and `tokenizer_config.json` / `generation_config.json` when present,
    /// from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("tokenizer.json");
        let mut tok = Self::from_file(&path)?;
        let config_path = dir.join("tokenizer_config.json");
        if config_path.is_file() {
            let config = read_json(&config_path)?;
            let id = |key: &str| -> Result<Option<u32>, ModelError> {
                match config.get(key).filter(|v| !v.is_null()) {
                    None => Ok(None),
                    Some(v) => {
                        let text = token_text(v).ok_or_else(|| ModelError::Json {
                            path: config_path.clone(),
                            message: format!(
                                "`{key}` is neither a string nor an object with `content`"
                            ),
                        })?;
                        tok.inner
                            .token_to_id(text)
                            .map(Some)
                            .ok_or_else(|| ModelError::Json {
                                path: config_path.clone(),
                                message: format!(
                                    "`{key}` = {text:?} is not in the vocabulary of {}",
                                    path.display()
                                ),
                            })
                    }
                }
            };
            tok.bos_token_id = id("bos_token")?;
            tok.pad_token_id = id("pad_token")?;
            tok.eos_token_ids = id("eos_token")?.into_iter().collect();
            tok.eos_token = config
                .get("eos_token")
                .and_then(token_text)
                .map(str::to_string);
            tok.chat_template = match config.get("chat_template") {
                Some(Value::String(t)) => Some(t.clone()),
                // Named templates: [{"name": "default", "template": ...}, ...].
                Some(Value::Array(named)) => named
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            };
            tok.chat_template_file = tok.chat_template.as_ref().map(|_| config_path.clone());
        }
        // transformers 5 saves the template in its own file, and prefers it.
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            tok.chat_template =
                Some(std::fs::read_to_string(&jinja).map_err(ModelError::io(&jinja))?);
            tok.chat_template_file = Some(jinja);
        }
        let generation = dir.join("generation_config.json");
        if generation.is_file() {
            let json = read_json(&generation)?;
            let ids: Option<Vec<u32>> = match json.get("eos_token_id") {
                Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]),
                Some(Value::Array(a)) => a.iter().map(|v| v.as_u64().map(|n| n as u32)).collect(),
                _ => None,
            };
            if let Some(ids) = ids {
                tok.eos_token_ids = ids;
            }
        }
        Ok(tok)
    }

    /// Reads a `tokenizer.json` alone (no special-token metadata).
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                reason: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "tokenizer file not found",
                ),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Json {
            path: path.to_path_buf(),
            message: format!("not a tokenizer.json: {e}"),
        })?;
        Ok(Self::from_tokenizers(inner, path))
    }

    /// Wraps an HF `tokenizers::Tokenizer` (for example one built from GGUF metadata); `path`
    /// names its origin in errors.
    pub fn from_tokenizers(inner: tokenizers::Tokenizer, path: &Path) -> Self {
        Self {
            inner,
            path: path.to_path_buf(),
            eos_token_ids: vec![],
            eos_token: None,
            bos_token_id: None,
            pad_token_id: None,
            chat_template: None,
            chat_template_file: None,
        }
    }

    /// Writes the HF files of this tokenizer into `dir`: `tokenizer.json`, `tokenizer_config.json`
    /// (BOS / EOS / PAD tokens, chat template) and `generation_config.json` (EOS ids), so a
    /// tokenizer that came from GGUF metadata can travel with an exported model.
    pub fn save_hf(&self, dir: &Path) -> Result<(), ModelError> {
        let json = dir.join("tokenizer.json");
        self.inner
            .save(&json, false)
            .map_err(|e| ModelError::Json {
                path: json.clone(),
                message: format!("cannot write the tokenizer: {e}"),
            })?;
        let text = |id: Option<u32>| id.and_then(|i| self.id_to_token(i));
        let mut config = serde_json::Map::new();
        config.insert("bos_token".into(), text(self.bos_token_id).into());
        config.insert(
            "eos_token".into(),
            self.eos_token
                .clone()
                .or_else(|| text(self.eos_token_ids.first().copied()))
                .into(),
        );
        config.insert("pad_token".into(), text(self.pad_token_id).into());
        if let Some(t) = &self.chat_template {
            config.insert("chat_template".into(), t.clone().into());
        }
        let files = [
            ("tokenizer_config.json", Value::Object(config)),
            (
                "generation_config.json",
                serde_json::json!({ "eos_token_id": self.eos_token_ids }),
            ),
        ];
        for (name, value) in files {
            let path = dir.join(name);
            let text = serde_json::to_string_pretty(&value).expect("JSON serializes");
            std::fs::write(&path, text).map_err(ModelError::io(&path))?;
        }
        Ok(())
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (BOS /
    /// EOS templates).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ModelError> {
        let encoding =
            self.inner
                .encode(text, add_special_tokens)
                .map_err(|e| ModelError::Json {
                    path: self.path.clone(),
                    message: format!("cannot encode {text:?}: {e}"),
                })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, ModelError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| ModelError::Json {
                path: self.path.clone(),
                message: format!("cannot decode {ids:?}: {e}"),
            })
    }

    /// Number of ids the tokenizer can produce (vocabulary plus added tokens).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The text of one token id, if it exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Fails if the tokenizer can produce ids the model has no embedding for.
    pub fn check_vocab(&self, model_vocab: usize) -> Result<(), ModelError> {
        let max_id = self.inner.get_vocab(true).into_values().max().unwrap_or(0) as usize;
        if max_id >= model_vocab {
            return Err(ModelError::VocabMismatch {
                path: self.path.clone(),
                max_id,
                model_vocab,
            });
        }
        Ok(())
    }
}
