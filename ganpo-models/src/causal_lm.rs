//! The contract between a language model and the preference trainer.

use burn::prelude::*;
use ganpo_core::ScoredRows;

/// What one forward pass of a causal LM returns.
#[derive(Clone, Debug)]
pub struct LmOutput<B: Backend> {
    /// Next-token logits, `[batch, seq, vocab]`: position `t` predicts token `t + 1`.
    pub logits: Tensor<B, 3>,
    /// Last-layer hidden states after the final norm (what feeds the LM head),
    /// `[batch, seq, hidden]`: the latents GANPO compares.
    pub hidden: Tensor<B, 3>,
}

/// What [`CausalLm::forward_rows`] returns: logits only where a loss needs them.
#[derive(Clone, Debug)]
pub struct RowsOutput<B: Backend> {
    /// Next-token logits of the selected rows, `[rows, vocab]`.
    pub logits: Tensor<B, 2>,
    /// Last-layer hidden states of every position, `[batch, seq, hidden]`.
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
    /// [`Self::forward`], with logits for the `rows` a loss scores only ([`ScoredRows`]: the
    /// completion tokens of a preference batch), `[rows, vocab]`. Models with a separable LM head
    /// run it on those rows alone, skipping the prompt and padding positions' `vocab`-wide
    /// logits, their log-softmax and its gradient; the default computes every position's logits
    /// and gathers.
    fn forward_rows(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
        rows: &ScoredRows<B>,
    ) -> RowsOutput<B> {
        let out = self.forward(input_ids, attention_mask);
        RowsOutput {
            logits: rows.gather(out.logits),
            hidden: out.hidden,
        }
    }
    /// Switches the model's LoRA adapters ([`crate::lora`]) on or off and returns how many it
    /// carries; a model without adapters returns 0 and is unchanged. The trainer's reference for
    /// a LoRA run is the policy with its adapters off.
    fn set_adapters_enabled(&mut self, enabled: bool) -> usize {
        let _ = enabled;
        0
    }

    /// The model as a stack of layers that can be run one at a time, for activation
    /// checkpointing; `None` (the default) for a model that cannot be split so.
    fn layer_stack(&self) -> Option<&dyn crate::LayerStack<B>> {
        None
    }

    /// Width of [`LmOutput::hidden`].
    fn hidden_size(&self) -> usize;
    /// Width of [`LmOutput::logits`].
    fn vocab_size(&self) -> usize;
}
