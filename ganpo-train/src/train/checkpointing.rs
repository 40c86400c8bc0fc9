//! Activation checkpointing: the policy's pass keeps only the input of each decoder layer, and
//! the backward pass recomputes the layers one at a time, last first.
//!
//! [`checkpointed_pass`] runs the layers without autodiff (on the inner backend), keeping each
//! layer's input, and hands the loss a fresh leaf for the last hidden state; the LM head, the
//! loss and the GANPO generator term are tracked from that leaf as usual. After `loss.backward()`,
//! [`backward_through_layers`] takes the leaf's gradient and walks back: the final norm, then each
//! layer recomputed on its saved input with autodiff and back-propagated with the gradient of its
//! output (`sum(out * grad)`), then the embedding. Only one layer's activations (its
//! `[batch, heads, seq, seq]` scores included) exist at a time. The parameter gradients are the
//! same vector-Jacobian products as one backward pass through the whole model, summed in another
//! order.

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use ganpo_models::LayerStack;

/// What a checkpointed pass keeps for the backward pass.
#[derive(Clone, Debug)]
pub struct Trunk<B: Backend> {
    /// The input of each decoder layer and the last layer's output (before the final norm),
    /// untracked.
    pub saved: Vec<Tensor<B, 3>>,
    /// The last hidden state as a tracked leaf: what the loss was computed from.
    pub leaf: Tensor<B, 3>,
    /// The token ids of the pass.
    pub ids: Tensor<B, 2, Int>,
    /// Its attention mask.
    pub attention: Tensor<B, 2, Bool>,
}

/// The last hidden state of the policy on `ids` as a tracked leaf, with what the backward pass
/// recomputes from; `stack` is the policy without autodiff (`policy.valid()`).
pub fn checkpointed_pass<B: AutodiffBackend>(
    stack: &dyn LayerStack<B::InnerBackend>,
    ids: Tensor<B, 2, Int>,
    attention: Tensor<B, 2, Bool>,
) -> Trunk<B> {
    let inputs = stack.full_inputs(attention.clone().inner());
    let mut x = stack.embed(ids.clone().inner(), &inputs);
    let mut saved = Vec::with_capacity(stack.num_layers() + 1);
    for i in 0..stack.num_layers() {
        saved.push(Tensor::from_inner(x.clone()));
        x = stack.layer(i, x, &inputs, None);
    }
    saved.push(Tensor::from_inner(x.clone()));
    let leaf = Tensor::from_inner(stack.final_norm(x)).require_grad();
    Trunk {
        saved,
        leaf,
        ids,
        attention,
    }
}

/// The parameter gradients of `policy` (whose layers `stack` is) below the leaf of `trunk`,
/// given the loss's gradient with respect to it (`leaf_grad`), by recomputing one layer at a
/// time.
pub fn backward_through_layers<B: AutodiffBackend, M: AutodiffModule<B>>(
    policy: &M,
    stack: &dyn LayerStack<B>,
    trunk: Trunk<B>,
    leaf_grad: Tensor<B::InnerBackend, 3>,
) -> GradientsParams {
    let inputs = stack.full_inputs(trunk.attention);
    let mut acc = GradientsAccumulator::<M>::new();
    // Back-propagates `grad` through `f(x)` for a fresh leaf `x`; returns `x`'s gradient.
    let mut through = |x: Tensor<B, 3>,
                       f: &dyn Fn(Tensor<B, 3>) -> Tensor<B, 3>,
                       grad: Tensor<B::InnerBackend, 3>| {
        let x = x.require_grad();
        let out = f(x.clone());
        let grads = (out * Tensor::from_inner(grad)).sum().backward();
        let dx = x.grad(&grads);
        acc.accumulate(policy, GradientsParams::from_grads(grads, policy));
        dx
    };
    let mut saved = trunk.saved;
    let last = saved.pop().expect("a pass saves the last layer's output");
    let mut grad =
        through(last, &|x| stack.final_norm(x), leaf_grad).expect("the final norm reads its input");
    for i in (0..stack.num_layers()).rev() {
        let x = saved.pop().expect("one saved input per layer");
        grad = through(x, &|x| stack.layer(i, x, &inputs, None), grad)
            .expect("a layer reads its input");
    }
    // The embedding (under LoRA frozen: its pass then yields no gradient).
    let embedded = stack.embed(trunk.ids, &inputs);
    let grads = (embedded * Tensor::from_inner(grad)).sum().backward();
    acc.accumulate(policy, GradientsParams::from_grads(grads, policy));
    acc.grads()
}
