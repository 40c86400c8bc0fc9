//! # ganpo-models
//!
//! Causal language models for ganpo, generic over the burn backend. The trainer and the GANPO
//! regularizer see a model only through [`CausalLm`]: token ids and an attention mask in, logits
//! and last-layer hidden states out.
//!
//! For now this crate holds the contract and [`TinyLm`], a deliberately small causal LM used by
//! `ganpo toy` and by tests; pretrained architectures and checkpoint import come next.

mod causal_lm;
mod tiny;

pub use causal_lm::{CausalLm, LmOutput};
pub use tiny::{TinyLm, TinyLmConfig};
