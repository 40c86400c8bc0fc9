//! TR-DPO's synced reference (`train.sync_ref_model`, TRL's `SyncRefModelCallback`): every
//! `ref_model_sync_steps` optimizer steps each reference parameter becomes
//! `alpha * policy + (1 - alpha) * reference`, parameter by parameter in the models' order.
//!
//! The reference is then state: checkpoints hold it and resuming restores it. GANPO's reference
//! latents come from the same synced reference as the base loss's log-probs, so the
//! discriminators compare the policy with the anchor the loss pulls it towards.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

/// Collects a module's float parameters in visiting order, flattened.
struct Collect<B: Backend>(Vec<Tensor<B, 1>>);

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.0.push(t.reshape([n]));
    }
}

/// Mixes each parameter with the next collected one.
struct Mix<B: Backend> {
    sources: std::vec::IntoIter<Tensor<B, 1>>,
    alpha: f64,
}

impl<B: Backend> ModuleMapper<B> for Mix<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, target, mapper) = param.consume();
        let source = self
            .sources
            .next()
            .expect("shapes are checked by same_shapes before mixing");
        let source = source.reshape(target.shape()).cast(target.dtype());
        let mixed = target * (1.0 - self.alpha) + source * self.alpha;
        Param::from_mapped_value(id, mixed, mapper)
    }
}

/// The float parameters' shapes of `module`, in visiting order.
fn shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.val().dims().to_vec());
        }
    }
    let mut s = Shapes(Vec::new());
    module.visit(&mut s);
    s.0
}

/// Where the reference's parameters do not match the policy's one for one (the first
/// difference, in words), or `None` when they do and the two can be mixed.
pub fn shape_mismatch<B: Backend, M: Module<B>>(reference: &M, policy: &M) -> Option<String> {
    let (r, p) = (shapes(reference), shapes(policy));
    if r.len() != p.len() {
        return Some(format!(
            "the reference has {} parameter tensors, the policy {}",
            r.len(),
            p.len()
        ));
    }
    r.iter().zip(&p).position(|(a, b)| a != b).map(|i| {
        format!(
            "parameter {i} is {:?} in the reference, {:?} in the policy",
            r[i], p[i]
        )
    })
}

/// `reference` with every float parameter replaced by `alpha * policy + (1 - alpha) * reference`
/// (in the reference's dtype). The two must have the same parameters ([`shape_mismatch`]).
///
/// # Example
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::LinearConfig;
/// use ganpo_train::train::ref_sync::mix;
///
/// let device = Default::default();
/// let reference = LinearConfig::new(2, 2).init::<NdArray>(&device);
/// let policy = LinearConfig::new(2, 2).init::<NdArray>(&device);
/// let (r, p) = (reference.weight.val(), policy.weight.val());
/// let mixed = mix(reference, &policy, 0.25);
/// let expected = r * 0.75 + p * 0.25;
/// mixed.weight.val().into_data().assert_approx_eq::<f32>(&expected.into_data(), Default::default());
/// ```
pub fn mix<B: Backend, M: Module<B>>(reference: M, policy: &M, alpha: f64) -> M {
    let mut collect = Collect(Vec::new());
    policy.visit(&mut collect);
    reference.map(&mut Mix {
        sources: collect.0.into_iter(),
        alpha,
    })
}
