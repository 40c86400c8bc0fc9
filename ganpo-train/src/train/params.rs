//! Counting a module's parameters by whether they train, and the bytes they hold.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

/// Counts the scalars of the float parameters that require a gradient, and the bytes of all of
/// them in their dtypes.
struct Counter {
    trainable: usize,
    bytes: usize,
}

impl<B: Backend> ModuleVisitor<B> for Counter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let n = param.shape().num_elements();
        if param.is_require_grad() {
            self.trainable += n;
        }
        self.bytes += n * param.val().dtype().size();
    }
}

/// The number of parameters of `module` that an optimizer updates (on an autodiff backend, those
/// that require a gradient: a LoRA run's adapters, not its frozen base).
pub fn trainable_params<B: Backend, M: Module<B>>(module: &M) -> usize {
    count(module).trainable
}

/// The bytes the float parameters of `module` hold, each in its own dtype (a LoRA policy in
/// bf16: its frozen base at 2 bytes a parameter, its adapters at 4).
pub fn param_bytes<B: Backend, M: Module<B>>(module: &M) -> usize {
    count(module).bytes
}

fn count<B: Backend, M: Module<B>>(module: &M) -> Counter {
    let mut c = Counter {
        trainable: 0,
        bytes: 0,
    };
    module.visit(&mut c);
    c
}
