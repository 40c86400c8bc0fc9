//! A decoder as a stack of layers that can be run one at a time: what the trainer's activation
//! checkpointing recomputes layer by layer in the backward pass, and what
//! [`Decoder::hidden_at`](crate::Decoder::hidden_at) composes for an ordinary pass.

use burn::prelude::*;

use crate::nn::{AttentionMasks, KvCache, LayerCache, RotaryTables, positions};

/// What every layer of one pass reads besides the residual stream: positions, their rotary
/// tables (one per RoPE variant the layers use; none for learned positions) and the attention
/// masks of each window.
#[derive(Clone, Debug)]
pub struct LayerInputs<B: Backend> {
    /// Positions of the tokens, `[batch, new]`.
    pub positions: Tensor<B, 2, Int>,
    /// Rotary tables: the architecture's own order (Gemma: global, then local).
    pub rotary: Vec<RotaryTables<B>>,
    /// One mask per window the layers use.
    pub masks: AttentionMasks<B>,
}

/// The layer-by-layer view of a decoder (object safe, so the trainer can hold any model's as
/// `&dyn LayerStack<B>`). `final_norm(layer(L-1, ... layer(0, embed(ids))))` is the last hidden
/// state.
pub trait LayerStack<B: Backend> {
    /// The sliding windows the layers use, each once (`None`: global attention).
    fn attention_windows(&self) -> Vec<Option<usize>>;

    /// Number of decoder layers (the length of a [`crate::nn::KvCache`] for this model).
    fn num_layers(&self) -> usize;

    /// The per-pass inputs of tokens at `positions` (`[batch, new]`, below `max_position`)
    /// attending as `masks` says.
    fn layer_inputs(
        &self,
        positions: Tensor<B, 2, Int>,
        max_position: usize,
        masks: AttentionMasks<B>,
    ) -> LayerInputs<B>;

    /// The residual stream entering layer 0, `[batch, new, hidden]`.
    fn embed(&self, input_ids: Tensor<B, 2, Int>, inputs: &LayerInputs<B>) -> Tensor<B, 3>;

    /// Decoder layer `index` on the residual stream `x`; `cache` (when given) holds the layer's
    /// keys and values of earlier positions and is extended with these.
    fn layer(
        &self,
        index: usize,
        x: Tensor<B, 3>,
        inputs: &LayerInputs<B>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 3>;

    /// The final norm: the last hidden state of the residual stream after the last layer.
    fn final_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3>;

    /// The LM head on rows of last hidden states, `[rows, hidden]` to `[rows, vocab]`.
    fn head_rows(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2>;

    /// The inputs of whole sequences from position 0 with right padding (`attention_mask`:
    /// `[batch, seq]`, true = real token), as training and evaluation run them.
    fn full_inputs(&self, attention_mask: Tensor<B, 2, Bool>) -> LayerInputs<B> {
        let [b, s] = attention_mask.dims();
        let positions = positions::<B>(b, s, &attention_mask.device());
        let masks = AttentionMasks::full(attention_mask, &self.attention_windows());
        self.layer_inputs(positions, s.max(1), masks)
    }

    /// The last hidden states (after the final norm), `[batch, new, hidden]`, of `input_ids`
    /// run through every layer with `inputs`; `cache` (when given) holds each layer's keys and
    /// values of earlier positions and is extended with these.
    fn hidden_from(
        &self,
        input_ids: Tensor<B, 2, Int>,
        inputs: &LayerInputs<B>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let mut x = self.embed(input_ids, inputs);
        for i in 0..self.num_layers() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = self.layer(i, x, inputs, layer_cache);
        }
        self.final_norm(x)
    }

    /// The last hidden states of whole sequences ([`Self::full_inputs`]), `[batch, seq,
    /// hidden]`: [`CausalLm::hidden_states`](crate::CausalLm::hidden_states) of a decoder.
    fn full_hidden(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> Tensor<B, 3> {
        self.hidden_from(input_ids, &self.full_inputs(attention_mask), None)
    }
}
