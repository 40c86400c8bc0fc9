//! Checkpoints of reward-model training: the trained module, its optimizer state and the steps
//! reported so far, written atomically every few steps, so that an interrupted training resumes
//! where it stopped and ends with the model an uninterrupted one gives.

use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{BinFileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::config::{RewardConfig, RewardStep};
use crate::train::checkpoint::{self, CheckpointError};

/// Where reward-model training saves its state, and how often.
#[derive(Clone, Debug)]
pub struct RewardCheckpoints {
    /// Directory of `checkpoint-STEP` subdirectories; the latest one is kept.
    pub dir: PathBuf,
    /// Steps between checkpoints.
    pub every: usize,
}

/// `reward_state.json`: progress, and what it was made with (resuming anything else is refused).
#[derive(Serialize, Deserialize)]
pub(crate) struct RewardState {
    /// Steps done.
    pub(crate) step: usize,
    /// The training settings.
    pub(crate) config: RewardConfig,
    /// Fingerprint of the training examples.
    pub(crate) data: String,
    /// The reports of the steps done, replayed on resuming so the log is whole.
    pub(crate) steps: Vec<RewardStep>,
}

const MODULE: &str = "model";
const OPTIM: &str = "optimizer";
const STATE: &str = "reward_state.json";

type Recs = NamedMpkFileRecorder<FullPrecisionSettings>;
type OptimRecs = BinFileRecorder<FullPrecisionSettings>;

/// Writes `dir/checkpoint-STEP` atomically (keeping only the latest).
pub(crate) fn save<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
    c: &RewardCheckpoints,
    module: &M,
    optim: &O,
    state: &RewardState,
) -> Result<PathBuf, CheckpointError> {
    checkpoint::save_atomically(&c.dir, state.step, 1, |tmp| {
        let fail = |what: &str, message: String| CheckpointError::Io {
            path: tmp.join(what),
            message,
        };
        module
            .clone()
            .save_file(tmp.join(MODULE), &Recs::new())
            .map_err(|e| fail(MODULE, checkpoint::recorder_message(&e)))?;
        OptimRecs::new()
            .record(optim.to_record(), tmp.join(OPTIM))
            .map_err(|e| fail(OPTIM, checkpoint::recorder_message(&e)))?;
        let json = serde_json::to_string(state).expect("the state serializes");
        std::fs::write(tmp.join(STATE), json).map_err(|e| fail(STATE, checkpoint::io_message(&e)))
    })
}

/// The latest checkpoint in `c.dir`, if any: the module and optimizer loaded into `module` and
/// `optim`, and its state. Refuses one made with other settings or data, naming which.
pub(crate) fn load<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
    c: &RewardCheckpoints,
    module: M,
    optim: O,
    config: &RewardConfig,
    data: &str,
    device: &B::Device,
) -> Result<(M, O, Option<RewardState>), CheckpointError> {
    checkpoint::remove_partial(&c.dir);
    let Some((_, dir)) = checkpoint::list_checkpoints(&c.dir).pop() else {
        return Ok((module, optim, None));
    };
    let corrupt = |what: &str, e: &dyn std::fmt::Display| CheckpointError::Corrupt {
        path: dir.clone(),
        message: format!("{what}: {e}"),
    };
    let text = std::fs::read_to_string(dir.join(STATE)).map_err(|e| corrupt(STATE, &e))?;
    let state: RewardState = serde_json::from_str(&text).map_err(|e| corrupt(STATE, &e))?;
    let differing = differing_settings(&state.config, config);
    if !differing.is_empty() || state.data != data {
        let what = if differing.is_empty() {
            "the training data differs".to_string()
        } else {
            format!("the settings differ in: {}", differing.join(", "))
        };
        return Err(CheckpointError::Mismatch {
            path: dir,
            message: format!("{what}; delete {} to start over", c.dir.display()),
        });
    }
    let module = module
        .load_file(dir.join(MODULE), &Recs::new(), device)
        .map_err(|e| corrupt(MODULE, &checkpoint::recorder_message(&e)))?;
    let record = OptimRecs::new()
        .load(dir.join(OPTIM), device)
        .map_err(|e| corrupt(OPTIM, &checkpoint::recorder_message(&e)))?;
    tracing::info!("resuming reward-model training from {}", dir.display());
    Ok((module, optim.load_record(record), Some(state)))
}

/// Names of the settings that differ between `a` and `b`.
fn differing_settings(a: &RewardConfig, b: &RewardConfig) -> Vec<String> {
    let (a, b) = (
        serde_json::to_value(a).expect("settings serialize"),
        serde_json::to_value(b).expect("settings serialize"),
    );
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}
