//! Errors of model construction and checkpoint loading.

use std::path::PathBuf;

/// Why a model could not be built or loaded. Every variant names the file, key or tensor.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (part of the message, not a chained source, so it is printed once).
        reason: std::io::Error,
    },
    /// A JSON file does not parse or lacks a required key.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint's architecture is not one ganpo implements.
    #[error("{path}: model_type `{model_type}` is not supported (supported: {supported})")]
    UnsupportedArchitecture {
        /// The config file.
        path: PathBuf,
        /// The `model_type` found.
        model_type: String,
        /// The supported ones, comma-separated.
        supported: String,
    },
    /// A config value is missing or out of range.
    #[error("{path}: `{key}`: {message}")]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A weights file is malformed.
    #[error("{path}: {message}")]
    BadWeights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor has a data type ganpo cannot convert.
    #[error("{path}: tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// The model needs tensors the checkpoint does not have (nothing is initialized at random).
    #[error("{path}: missing tensor(s) {}", names.join(", "))]
    MissingTensors {
        /// The checkpoint.
        path: PathBuf,
        /// The missing tensor names.
        names: Vec<String>,
    },
    /// Tensors that could not be put into the model: a shape differs from what the config
    /// implies, or the data could not be read.
    #[error("{path}: {message}")]
    BadTensors {
        /// The checkpoint.
        path: PathBuf,
        /// Which tensors and why.
        message: String,
    },
    /// The tokenizer produces ids the model has no embedding for.
    #[error(
        "{path}: the tokenizer produces ids up to {max_id} but the model's vocabulary has {model_vocab} entries"
    )]
    VocabMismatch {
        /// The tokenizer file.
        path: PathBuf,
        /// Largest id the tokenizer produces.
        max_id: usize,
        /// The model's vocabulary size.
        model_vocab: usize,
    },
    /// Token embeddings handed to a model do not have its `[vocab, hidden]` shape.
    /// A LoRA setting that cannot be applied to this model.
    #[error("{key}: {message}")]
    Lora {
        /// The `[lora]` key (`lora.target_modules`).
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
    #[error("token embeddings of shape {got:?} do not fit a model whose embeddings are {want:?}")]
    EmbeddingShape {
        /// The model's shape.
        want: [usize; 2],
        /// The shape handed in.
        got: [usize; 2],
    },
}

impl ModelError {
    /// Wraps an I/O error on `path`: `std::fs::read(p).map_err(ModelError::io(p))`.
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ModelError + use<> {
        let path = path.to_path_buf();
        move |reason| ModelError::Io { path, reason }
    }
}
