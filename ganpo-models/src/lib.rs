//! # ganpo-models
//!
//! Causal language models for ganpo, generic over the burn backend. The trainer and the GANPO
//! regularizer see a model only through [`CausalLm`]: token ids and an attention mask in, logits
//! and last-layer hidden states out.
//!
//! - [`llama`]: the Llama family (Llama 2/3.x, SmolLM2, Mistral, Qwen2/2.5, Qwen3);
//! - [`gpt2`]: GPT-2, with its `Conv1D` weight layout;
//! - [`gemma`]: Gemma 2 and Gemma 3 (text): (1 + w) norms, GeGLU, soft-caps, sliding windows;
//! - [`architecture`]: what each of those files implements ([`Architecture`], [`Decoder`]), and
//!   the registry that makes [`ModelConfig`] / [`Lm`] of them;
//! - [`hf::load`]: any of them from an HF directory, as an [`Lm`]; [`gguf::load_gguf`]: the
//!   Llama family from a GGUF file (quantized weights dequantized to f32);
//! - [`onnx::load_onnx`]: any of them from an ONNX export (`model.onnx` next to `config.json`);
//! - [`load_model`]: any of these, with its [`Tokenizer`] (from `tokenizer.json` or GGUF
//!   metadata);
//! - [`generate::generate`]: KV-cached batched generation; [`export::export_hf`]: back to an HF
//!   directory;
//! - [`lora`]: LoRA adapters as PEFT makes them (attach, switch off for the reference, merge,
//!   PEFT adapter directories in and out);
//! - [`classifier`]: sequence classifiers and reward models (a backbone and a `score` head), HF's
//!   `*ForSequenceClassification`;
//!
//! Models from elsewhere (an ONNX graph, a hand-written module) join by implementing
//! [`CausalLm`] themselves (`ganpo_train::toy::TinyLm`, `examples/onnx-import`).

pub mod architecture;
mod auto;
mod causal_lm;
pub mod classifier;
mod config_reader;
mod error;
pub mod export;
pub mod gemma;
pub mod generate;
pub mod gguf;
pub mod gpt2;
pub mod hf;
mod layer_stack;
pub mod llama;
mod load;
pub mod lora;
pub mod nn;
pub mod onnx;
mod tokenizer;
pub mod weights;

pub use architecture::{Architecture, Decoder};
pub use auto::{Lm, ModelConfig, supported_model_types};
pub use causal_lm::{CausalLm, LmOutput, RowsOutput};
pub use error::ModelError;
pub use layer_stack::{LayerInputs, LayerStack};
pub use load::{LoadedModel, load_model, weight_dtypes};
pub use nn::init::Init;
pub use tokenizer::Tokenizer;
