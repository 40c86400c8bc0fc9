//! Every backend-generic test of the workspace in one binary, for the GPU backends: ganpo-core's
//! (TRL's losses and log-probs, the GANPO regularizer, discriminators, spectral norm, affine maps,
//! attention), ganpo-models' parity with HF transformers, and ganpo-train's parity with the
//! official GANPO code and five trainer steps against the CPU; each on the backend
//! `GANPO_TEST_BACKEND` names. One binary links burn's GPU backends once rather than once per
//! test file, which is what makes CI's wgpu run (`.ci/run`, on Mesa's lavapipe) and
//! `cargo xtask gpu-check`'s bundle small and quick to build:
//!
//! `GANPO_TEST_BACKEND=wgpu cargo test -p ganpo-train --features wgpu --test backends`
//!
//! The files are the crates' own test files, included by path (each keeps its own `common`) as
//! modules named after their crate and file (`core_losses`, `models_hf_parity`, ...), which
//! `--skip` can name; `cargo test` without the feature runs them in their crates instead.

#[path = "../../ganpo-core/tests/affine.rs"]
mod core_affine;
#[path = "../../ganpo-core/tests/attention.rs"]
mod core_attention;
#[path = "../../ganpo-core/tests/discriminator.rs"]
mod core_discriminator;
#[path = "../../ganpo-core/tests/ganpo.rs"]
mod core_ganpo;
#[path = "../../ganpo-core/tests/logprobs.rs"]
mod core_logprobs;
#[path = "../../ganpo-core/tests/losses.rs"]
mod core_losses;
#[path = "../../ganpo-core/tests/spectral_norm.rs"]
mod core_spectral_norm;
#[path = "../../ganpo-models/tests/hf_parity.rs"]
mod models_hf_parity;
#[path = "official_ganpo.rs"]
mod train_official_ganpo;
