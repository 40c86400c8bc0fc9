//! Counting a module's parameters by whether they train.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

/// Counts the scalars of the float parameters that require a gradient.
struct Counter {
    trainable: usize,
}

impl<B: Backend> ModuleVisitor<B> for Counter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if param.is_require_grad() {
            self.trainable += param.shape().num_elements();
        }
    }
}

/// The number of parameters of `module` that an optimizer updates (on an autodiff backend, those
/// that require a gradient: a LoRA run's adapters, not its frozen base).
pub fn trainable_params<B: Backend, M: Module<B>>(module: &M) -> usize {
    let mut c = Counter { trainable: 0 };
    module.visit(&mut c);
    c.trainable
}
