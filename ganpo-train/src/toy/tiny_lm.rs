//! A tiny causal LM for `ganpo toy` and tests: not a transformer, so it implements
//! [`CausalLm`] directly (as any model from outside ganpo-models would) rather than through
//! ganpo-models' `Decoder`.

use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::tanh;
use ganpo_core::ScoredRows;
use ganpo_core::affine::linear;
use serde::{Deserialize, Serialize};

use ganpo_models::nn::tied_head;
use ganpo_models::{CausalLm, LmOutput, RowsOutput};

/// Size of a [`TinyLm`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TinyLmConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Width of the embeddings and hidden states.
    pub hidden: usize,
}

impl Default for TinyLmConfig {
    fn default() -> Self {
        Self {
            vocab: 16,
            hidden: 16,
        }
    }
}

impl TinyLmConfig {
    /// A randomly initialized model (embeddings N(0, 1) / sqrt(hidden)).
    pub fn init<B: Backend>(&self, device: &B::Device) -> TinyLm<B> {
        let embed = EmbeddingConfig::new(self.vocab, self.hidden)
            .with_initializer(burn::nn::Initializer::Normal {
                mean: 0.0,
                std: 1.0 / (self.hidden as f64).sqrt(),
            })
            .init(device);
        TinyLm {
            embed_tokens: embed,
            mix: LinearConfig::new(self.hidden, self.hidden).init(device),
        }
    }
}

/// `h_t = mean of the embeddings of tokens 0..=t` (attended ones only),
/// `hidden_t = h_t + tanh(W h_t + b)`, `logits_t = hidden_t E^T` with the embedding matrix `E`
/// tied as the LM head. Small enough to train in seconds, and a real causal LM: position `t`
/// sees only tokens up to `t`.
#[derive(Module, Debug)]
pub struct TinyLm<B: Backend> {
    /// Token embeddings, `[vocab, hidden]`, also the LM head.
    pub embed_tokens: Embedding<B>,
    /// The mixing layer.
    pub mix: Linear<B>,
}

impl<B: Backend> CausalLm<B> for TinyLm<B> {
    fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> LmOutput<B> {
        let hidden = self.hidden_states(input_ids, attention_mask);
        let logits = tied_head(hidden.clone(), self.embed_tokens.weight.val());
        LmOutput { logits, hidden }
    }

    fn hidden_states(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> Tensor<B, 3> {
        let [batch, seq] = input_ids.dims();
        let device = input_ids.device();
        let emb = self.embed_tokens.forward(input_ids);
        // causal[b, t, j] = 1 if j <= t and j is a real token; rows normalized to a mean.
        let tril = Tensor::<B, 2, Bool>::tril_mask([seq, seq], 0, &device)
            .bool_not()
            .float();
        let causal = tril.unsqueeze::<3>() * attention_mask.float().reshape([batch, 1, seq]);
        let causal = causal.clone() / causal.sum_dim(2).clamp_min(1.0);
        let h = causal.matmul(emb);
        h.clone() + tanh(linear(&self.mix, h))
    }

    fn forward_rows(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
        rows: &ScoredRows<B>,
    ) -> RowsOutput<B> {
        let hidden = self.hidden_states(input_ids, attention_mask);
        RowsOutput {
            logits: tied_head(rows.gather(hidden.clone()), self.embed_tokens.weight.val()),
            hidden,
        }
    }

    fn hidden_size(&self) -> usize {
        self.embed_tokens.weight.dims()[1]
    }

    fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn positions_see_only_the_past() {
        let device = Default::default();
        let model = TinyLmConfig::default().init::<NdArray>(&device);
        let mask = Tensor::<NdArray, 2, Bool>::from_data([[true, true, true, true]], &device);
        let a = model
            .forward(Tensor::from_data([[1, 2, 3, 4]], &device), mask.clone())
            .logits;
        let b = model
            .forward(Tensor::from_data([[1, 2, 9, 9]], &device), mask)
            .logits;
        let first_two = |t: Tensor<NdArray, 3>| t.slice(s![.., 0..2, ..]).into_data();
        assert_eq!(first_two(a.clone()), first_two(b.clone()));
        assert_ne!(
            a.slice(s![.., 2..3, ..]).into_data(),
            b.slice(s![.., 2..3, ..]).into_data()
        );
    }
}
