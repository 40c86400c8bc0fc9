//! # Bringing an architecture ganpo does not implement: ONNX → burn code → [`CausalLm`]
//!
//! ganpo's loaders know the Llama family and GPT-2 (and read their ONNX exports as weights:
//! `ganpo_models::onnx`). Any other causal LM can still be preference-optimized: export it to
//! ONNX with the logits *and* the last hidden state as outputs, let burn-onnx generate a burn
//! module from the graph at build time (`build.rs`), and implement [`CausalLm`] for it in a few
//! lines. The trainer, the losses and the GANPO discriminators only ever see that trait.
//!
//! This crate does it for a GPT-NeoX (partial rotary embeddings, parallel attention and MLP), an
//! architecture ganpo has no loader for, exported by `tools/fixtures/onnx_fixtures.py`; and, for
//! comparing the two ONNX paths on one model, for the tiny Llama that `ganpo_models::onnx` also
//! reads. Its tests check both against transformers' own outputs and train the GPT-NeoX with DPO +
//! GANPO through ganpo's `Trainer`.
//!
//! The export must take `input_ids` and `attention_mask` (`[batch, seq]`, int64, dynamic axes)
//! and return `(logits, hidden_states)`; the fixture script's `Exportable` wrapper shows how
//! (it also builds the causal mask from plain ops, which keeps the graph simple to translate).
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::prelude::*;
//! use ganpo_models::CausalLm;
//! use onnx_import::GptNeoX;
//!
//! let device = Default::default();
//! let model = GptNeoX::<NdArray>::pretrained(&device);
//! let ids = Tensor::<NdArray, 2, Int>::from_ints([[5, 17, 42]], &device);
//! let mask = Tensor::<NdArray, 2, Bool>::from_bool(TensorData::from([[true, true, true]]), &device);
//! let out = model.forward(ids, mask);
//! assert_eq!(out.logits.dims(), [1, 3, model.vocab_size()]);
//! assert_eq!(out.hidden.dims(), [1, 3, model.hidden_size()]);
//! ```

extern crate alloc;

use burn::prelude::*;
use ganpo_models::{CausalLm, LmOutput};

/// Code burn-onnx generated from `gpt_neox/model.onnx`, and the sizes of its `config.json`.
#[allow(clippy::all, unused, missing_docs)]
pub mod gpt_neox_graph {
    include!(concat!(env!("OUT_DIR"), "/gpt_neox/model.rs"));
    include!(concat!(env!("OUT_DIR"), "/gpt_neox/sizes.rs"));
}

/// Code burn-onnx generated from `llama/model.onnx`, and the sizes of its `config.json`.
#[allow(clippy::all, unused, missing_docs)]
pub mod llama_graph {
    include!(concat!(env!("OUT_DIR"), "/llama/model.rs"));
    include!(concat!(env!("OUT_DIR"), "/llama/sizes.rs"));
}

/// Implements [`CausalLm`] for a wrapper around a generated graph whose forward takes
/// `(input_ids, attention_mask as int)` and returns `(logits, hidden_states)`.
macro_rules! onnx_causal_lm {
    ($(#[$doc:meta])* $name:ident, $graph:path, hidden: $hidden:expr, vocab: $vocab:expr) => {
        $(#[$doc])*
        #[derive(Module, Debug)]
        pub struct $name<B: Backend> {
            /// The generated module (weights embedded in the binary).
            pub graph: $graph,
        }

        impl<B: Backend> $name<B> {
            /// The exported weights.
            pub fn pretrained(device: &B::Device) -> Self {
                Self { graph: <$graph>::from_embedded(device) }
            }
        }

        impl<B: Backend> CausalLm<B> for $name<B> {
            fn forward(
                &self,
                input_ids: Tensor<B, 2, Int>,
                attention_mask: Tensor<B, 2, Bool>,
            ) -> LmOutput<B> {
                let (logits, hidden) = self.graph.forward(input_ids, attention_mask.int());
                LmOutput { logits, hidden }
            }

            fn hidden_size(&self) -> usize {
                $hidden
            }

            fn vocab_size(&self) -> usize {
                $vocab
            }
        }
    };
}

onnx_causal_lm!(
    /// The tiny GPT-NeoX of the fixtures, as generated burn code.
    GptNeoX,
    gpt_neox_graph::Model<B>,
    hidden: gpt_neox_graph::HIDDEN_SIZE,
    vocab: gpt_neox_graph::VOCAB_SIZE
);

onnx_causal_lm!(
    /// The tiny Llama of the fixtures, as generated burn code.
    LlamaGraph,
    llama_graph::Model<B>,
    hidden: llama_graph::HIDDEN_SIZE,
    vocab: llama_graph::VOCAB_SIZE
);
