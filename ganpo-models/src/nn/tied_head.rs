//! The LM head of models whose output matrix is the input embedding matrix, or a separate one.

use burn::nn::{Embedding, Linear};
use burn::prelude::*;
use ganpo_core::affine::linear;

/// The logits of `hidden` through `lm_head` when the model has a separate one, else through the
/// tied embeddings ([`tied_head`]): the head of every Llama-family and Gemma model.
pub fn lm_head<B: Backend, const D: usize>(
    lm_head: Option<&Linear<B>>,
    embed_tokens: &Embedding<B>,
    hidden: Tensor<B, D>,
) -> Tensor<B, D> {
    match lm_head {
        Some(head) => linear(head, hidden),
        None => tied_head(hidden, embed_tokens.weight.val()),
    }
}

/// `hidden @ embedding^T`: logits `[.., vocab]` from hidden states `[.., d]` (`[batch, seq, d]`,
/// or the `[rows, d]` a loss scores) and the embedding matrix `[vocab, d]` (one parameter, two
/// uses).
///
/// The embedding matrix is read through its transposed view (the CPU backend's matmul reads
/// strided operands without copying them, `vendor/README.md`), and the logits come out in
/// row-major order, so nothing of the size of `[rows, vocab]` is copied.
pub fn tied_head<B: Backend, const D: usize>(
    hidden: Tensor<B, D>,
    embedding: Tensor<B, 2>,
) -> Tensor<B, D> {
    let mut dims = hidden.dims();
    let d = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    dims[D - 1] = embedding.dims()[0];
    hidden
        .reshape([rows, d])
        .matmul(embedding.transpose())
        .reshape(dims)
}
