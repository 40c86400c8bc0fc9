//! What the trainer's integration tests share: the fixtures, turns on the backend's random
//! generator, a run to its end, and the policy's logits as a fingerprint.
#![allow(dead_code)] // each test binary uses its own part of this module

#[path = "../../../ganpo-core/tests/common/backend.rs"]
#[macro_use]
pub mod backend;

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use ganpo_models::{CausalLm, Lm};
use ganpo_train::config::RunConfig;
use ganpo_train::data::{DataError, PairTokenizer, PreferenceDataset, load_records};
use ganpo_train::train::{LogEntry, Trainer};

/// The backend of the trainer tests (the backend-generic ones run on `backend::test_backend()`).
pub type B = Autodiff<NdArray>;

/// `ganpo-train/tests/fixtures` (tools/fixtures/train_fixtures.py).
pub fn fixtures() -> std::path::PathBuf {
    backend::crate_dir("ganpo-train").join("tests/fixtures")
}

/// The NdArray backend's random generator (dropout, initialization) is process-wide: tests that
/// train take turns so that each run's draws are its own.
static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this test's turn on the backend's random generator.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Trains `t` to its end and returns every log line.
pub fn run(t: &mut Trainer<B, Lm<B>>) -> Vec<LogEntry> {
    let mut logs = Vec::new();
    t.fit(|e| logs.push(e.clone())).unwrap();
    logs
}

/// The policy's logits on a fixed input, bit for bit.
pub fn fingerprint(t: &Trainer<B, Lm<B>>) -> Vec<f32> {
    let device = Default::default();
    let ids = Tensor::<B, 2, Int>::from_data([[5, 17, 42, 99, 3, 250]], &device);
    let mask = Tensor::<B, 2, Bool>::from_data([[true; 6]], &device);
    let logits = t.policy().forward(ids, mask).logits;
    logits.into_data().to_vec().unwrap()
}

/// `config`'s training files tokenized for its loss (pairs, or unpaired examples with KL
/// completions cycled in blocks of `train.batch_size`), and the padding id.
pub fn dataset(config: &RunConfig) -> Result<(PreferenceDataset, u32), DataError> {
    let tok = ganpo_models::Tokenizer::from_dir(&config.model.path).unwrap();
    let mut records = load_records(&config.data.train, false)?;
    let pt = PairTokenizer::new(&tok).unwrap();
    let d = PreferenceDataset::from_records(
        &mut records,
        &pt,
        &config.data.truncation(),
        &config.loss,
        config.train.batch_size,
        false,
    )?;
    Ok((d, tok.pad_token_id.unwrap()))
}
