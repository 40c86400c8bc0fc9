//! The GANPO latent adversarial regularizer.
//!
//! Two discriminators learn to tell the policy's last-layer hidden states from the reference
//! model's, one for chosen completions (`D_c`) and one for rejected ones (`D_r`), with the
//! relativistic-average "quad" losses of the method; the policy receives a non-saturating
//! generator term for fooling them. A training step has two phases:
//!
//! 1. [`Ganpo::discriminator_loss`] on the policy latents *detached*: backward, then an optimizer
//!    step on the [`Ganpo`] module (its discriminators; the running means are state, not
//!    parameters);
//! 2. [`Ganpo::generator_loss`] on the policy latents *tracked*: the discriminators run frozen and
//!    in eval mode, so its gradient reaches only the policy; add
//!    [`GeneratorOutput::term`] (`adv_weight * L_gen`) to any base preference loss.
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
//! use burn::prelude::*;
//! use burn::tensor::Distribution;
//! use ganpo_core::discriminator::{DiscriminatorConfig, MlpDiscriminatorConfig};
//! use ganpo_core::ganpo::{GanpoConfig, LatentBatch};
//!
//! type B = Autodiff<NdArray>;
//! let device = Default::default();
//! let config = GanpoConfig {
//!     discriminator: DiscriminatorConfig::Mlp(MlpDiscriminatorConfig { hidden: 16, ..Default::default() }),
//!     ..Default::default()
//! };
//! let mut ganpo = config.init::<B>(8, &device);
//! let mut optim = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(0.01).init();
//! let latents = |shift: f64| Tensor::<B, 3>::random([4, 5, 8], Distribution::Normal(shift, 1.0), &device);
//! let batch = LatentBatch {
//!     policy_chosen: latents(0.5).require_grad(),
//!     policy_rejected: latents(0.5).require_grad(),
//!     reference_chosen: latents(0.0),
//!     reference_rejected: latents(0.0),
//!     chosen_mask: None,
//!     rejected_mask: None,
//! };
//! // Phase 1: discriminators on detached policy latents.
//! let d = ganpo.discriminator_loss(&batch.detach_policy());
//! let grads = GradientsParams::from_grads(d.loss.backward(), &ganpo);
//! ganpo = optim.step(1e-3, ganpo, grads);
//! // Phase 2: the generator term, added to the base loss; only the policy side gets gradients.
//! let g = ganpo.generator_loss(&batch);
//! let grads = g.term.backward();
//! assert!(batch.policy_chosen.grad(&grads).is_some());
//! ```

mod config;
mod latents;
mod regularizer;
mod running_means;

pub use config::{ConfigError, GanpoConfig, MeanMode, Pooling};
pub use latents::LatentBatch;
pub use regularizer::{DiscriminatorOutput, Ganpo, GeneratorOutput, Scores, quad_losses};
pub use running_means::RunningMeans;
