//! The contract between a language model and the preference trainer.

use burn::prelude::*;

/// What one forward pass of a causal LM returns.
#[derive(Clone, Debug)]
pub struct LmOutput<B: Backend> {
    /// Next-token logits, `[batch, seq, vocab]`: position `t` predicts token `t + 1`.
    pub logits: Tensor<B, 3>,
    /// Last-layer hidden states after the final norm (what feeds the LM head),
    /// `[batch, seq, hidden]`: the latents GANPO compares.
    pub hidden: Tensor<B, 3>,
}

/// A causal language model the trainer can preference-optimize.
pub trait CausalLm<B: Backend> {
    /// Runs the model on `input_ids` (`[batch, seq]`); `attention_mask` (`[batch, seq]`, true =
    /// real token) keeps padding from being attended to.
    fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> LmOutput<B>;
    /// Only the last-layer hidden states, `[batch, seq, hidden]`, skipping the LM head where the
    /// model can: what a reward head or a discriminator needs, without the `[batch, seq, vocab]`
    /// logits.
    fn hidden_states(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> Tensor<B, 3> {
        self.forward(input_ids, attention_mask).hidden
    }
    /// Width of [`LmOutput::hidden`].
    fn hidden_size(&self) -> usize;
    /// Width of [`LmOutput::logits`].
    fn vocab_size(&self) -> usize;
}
