//! Global-norm gradient clipping (burn's own clipping is per tensor).

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    acc: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(p.id) {
            let s = g.square().sum();
            self.acc = Some(match self.acc.take() {
                Some(a) => a + s,
                None => s,
            });
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    coef: Tensor<B::InnerBackend, 1>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(p.id) {
            let coef = self.coef.clone().reshape([1; D]);
            self.grads.register::<B::InnerBackend, D>(p.id, g * coef);
        }
    }
}

/// The global L2 norm of `module`'s gradients in `grads` (one device synchronization); when
/// `max_norm` is given and the norm exceeds it, scales every gradient by
/// `max_norm / (norm + 1e-6)` as PyTorch's `clip_grad_norm_` does. Returns the norm before
/// clipping (non-finite if any gradient is).
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: Option<f64>,
) -> f64 {
    let mut v = SquaredNorm::<B> { grads, acc: None };
    module.visit(&mut v);
    let Some(sq) = v.acc else { return 0.0 };
    let norm = sq.sqrt();
    let value = norm.clone().into_scalar().elem::<f64>();
    if let Some(max) = max_norm
        && value.is_finite()
        && value > max
    {
        let coef = norm.add_scalar(1e-6).recip() * max;
        module.visit(&mut Scale::<B> { grads, coef });
    }
    value
}
