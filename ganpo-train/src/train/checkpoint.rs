//! Checkpoints: written whole or not at all, kept up to a limit, checked before resuming.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::TrainState;
use crate::config::RunConfig;

/// `trainer_state.json` of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Format version of the checkpoint layout.
    pub format: u32,
    /// Progress counters.
    pub state: TrainState,
    /// The resolved run configuration.
    pub config: RunConfig,
    /// Fingerprint of the tokenized training pairs.
    pub data_fingerprint: String,
    /// Number of training pairs.
    pub train_pairs: usize,
    /// Fingerprint of the models the run started from ([`model_fingerprint`] of the start policy,
    /// and of the reference when it is a model of its own); absent in checkpoints written
    /// before it was recorded.
    #[serde(default)]
    pub model_fingerprint: Option<String>,
}

/// The current layout version.
pub const FORMAT: u32 = 1;
/// File names inside a checkpoint directory (module and optimizer records without extension).
pub const POLICY: &str = "policy";
/// A LoRA run's adapters (the frozen base is not saved).
pub const ADAPTERS: &str = "adapters.safetensors";
/// Policy optimizer state.
pub const POLICY_OPTIM: &str = "policy_optimizer";
/// Discriminators, spectral-norm vectors and running means.
pub const GANPO: &str = "ganpo";
/// Discriminator optimizer state.
pub const GANPO_OPTIM: &str = "ganpo_optimizer";
/// The metadata file.
pub const META: &str = "trainer_state.json";

/// Errors of writing or reading checkpoints; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file could not be written or read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The checkpoint is incomplete or unreadable.
    #[error("{}: not a usable checkpoint: {message}", path.display())]
    Corrupt {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint belongs to a different run.
    #[error("{}: cannot resume: {message}", path.display())]
    Mismatch {
        /// The checkpoint directory.
        path: PathBuf,
        /// What differs.
        message: String,
    },
}

/// `OUTPUT/checkpoint-STEP`.
pub fn checkpoint_dir(output_dir: &Path, step: usize) -> PathBuf {
    output_dir.join(format!("checkpoint-{step}"))
}

/// The checkpoints in `output_dir`, oldest first.
pub fn list_checkpoints(output_dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(output_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// An FNV-1a hash of `values` (each as 8 little-endian bytes), in hex: the fingerprint of the
/// training data a checkpoint records, so that resuming on other data is refused.
pub fn fingerprint(values: impl IntoIterator<Item = u64>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in values {
        for b in x.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// A fingerprint of a module's weights (with `frozen_only`, of those that take no gradient: a
/// LoRA policy's base, not the adapters a checkpoint restores): every float parameter's shape and
/// 256 of its values, evenly spaced (a few hundred small reads, whatever the model's size),
/// FNV-1a hashed. Weights replaced at the same path change it; the same weights in another
/// process do not.
pub fn model_fingerprint<B: burn::prelude::Backend, M: burn::module::Module<B>>(
    module: &M,
    frozen_only: bool,
) -> String {
    struct Sampler(Vec<u64>, bool);
    impl<B: burn::prelude::Backend> burn::module::ModuleVisitor<B> for Sampler {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::prelude::Tensor<B, D>>,
        ) {
            if self.1 && param.is_require_grad() {
                return;
            }
            let tensor = param.val();
            let dims = tensor.dims();
            self.0.extend(dims.iter().map(|&d| d as u64));
            let n: usize = dims.iter().product();
            let k = n.min(256);
            if k == 0 {
                return;
            }
            let index: Vec<i64> = (0..k).map(|i| (i * n / k) as i64).collect();
            let device = tensor.device();
            let index = burn::prelude::Tensor::<B, 1, burn::prelude::Int>::from_data(
                burn::prelude::TensorData::new(index, [k]),
                &device,
            );
            let values = tensor.reshape([n]).select(0, index).into_data();
            let values: Vec<f32> = values.convert::<f32>().into_vec().unwrap_or_default();
            self.0.extend(values.iter().map(|v| v.to_bits() as u64));
        }
    }
    let mut sampler = Sampler(Vec::new(), frozen_only);
    module.visit(&mut sampler);
    fingerprint(sampler.0)
}

/// Writes a checkpoint with `write` into a temporary sibling directory, then renames it to
/// `checkpoint-STEP`, so a checkpoint directory is either complete or absent; then deletes the
/// oldest checkpoints beyond `keep`.
pub fn save_atomically(
    output_dir: &Path,
    step: usize,
    keep: usize,
    write: impl FnOnce(&Path) -> Result<(), CheckpointError>,
) -> Result<PathBuf, CheckpointError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| CheckpointError::Io {
            path,
            message: e.to_string(),
        }
    };
    let dir = checkpoint_dir(output_dir, step);
    let tmp = output_dir.join(format!(".checkpoint-{step}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        retire(&dir).map_err(io(&dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
    let all = list_checkpoints(output_dir);
    for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
        retire(old).map_err(io(old))?;
    }
    Ok(dir)
}

/// Deletes the checkpoint `dir` without ever leaving a half-deleted `checkpoint-STEP`: it is
/// renamed to a hidden `.checkpoint-STEP.deleting-PID` first (which [`remove_partial`] clears if
/// the deletion is interrupted).
fn retire(dir: &Path) -> std::io::Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let doomed = dir.with_file_name(format!(".{name}.deleting-{}", std::process::id()));
    std::fs::rename(dir, &doomed)?;
    std::fs::remove_dir_all(&doomed)
}

/// Removes what interrupted writes and deletions left in a run directory: partial checkpoints
/// (`.checkpoint-STEP.partial-PID`), checkpoints being deleted (`.checkpoint-STEP.deleting-PID`)
/// and partial exports (`.final.partial-PID`). Only one process writes a run directory at a time
/// (`io::RunLock`), so none of these belongs to a live writer.
pub fn remove_partial(output_dir: &Path) {
    for e in std::fs::read_dir(output_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let leftover = (name.starts_with(".checkpoint-")
            && (name.contains(".partial-") || name.contains(".deleting-")))
            || name.starts_with(".final.partial-");
        if leftover {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Reads `trainer_state.json` of the checkpoint at `dir`.
pub fn read_meta(dir: &Path) -> Result<CheckpointMeta, CheckpointError> {
    let path = dir.join(META);
    let corrupt = |message: String| CheckpointError::Corrupt {
        path: dir.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| corrupt(format!("{META}: {e}")))?;
    let meta: CheckpointMeta =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("{META}: {e}")))?;
    if meta.format != FORMAT {
        return Err(corrupt(format!(
            "layout version {} (this ganpo reads version {FORMAT})",
            meta.format
        )));
    }
    Ok(meta)
}

/// Dotted keys whose values differ between two configurations, ignoring the keys that may change
/// on resume (`train.max_steps`, `train.epochs`, logging, evaluation and checkpoint cadence,
/// the output directory, backend and device).
pub fn config_differences(saved: &RunConfig, current: &RunConfig) -> Vec<String> {
    fn normalize(c: &RunConfig) -> toml::Value {
        let mut c = c.clone();
        c.train.max_steps = None;
        c.train.epochs = 0;
        c.train.logging_steps = 1;
        c.train.eval_steps = None;
        c.train.save_steps = None;
        c.train.save_total_limit = 1;
        c.train.output_dir = PathBuf::new();
        c.train.backend = String::new();
        c.train.device = None;
        toml::Value::try_from(c).expect("configs serialize")
    }
    fn walk(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
        match (a, b) {
            (toml::Value::Table(x), toml::Value::Table(y)) => {
                let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    match (x.get(k), y.get(k)) {
                        (Some(va), Some(vb)) => walk(&key, va, vb, out),
                        _ => out.push(key),
                    }
                }
            }
            _ if a != b => out.push(format!("{prefix} (checkpoint: {a}, now: {b})")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", &normalize(saved), &normalize(current), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_never_leaves_a_half_deleted_checkpoint_and_leftovers_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let write = |tmp: &Path| {
            std::fs::write(tmp.join(META), "{}").map_err(|e| CheckpointError::Io {
                path: tmp.to_path_buf(),
                message: e.to_string(),
            })
        };
        for step in [2, 4, 6] {
            save_atomically(out, step, 2, write).unwrap();
        }
        let names = || {
            let mut n: Vec<String> = std::fs::read_dir(out)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(), ["checkpoint-4", "checkpoint-6"]);
        // What interrupted writes, deletions and exports leave behind is cleared.
        for left in [
            ".checkpoint-8.partial-1",
            ".checkpoint-2.deleting-1",
            ".final.partial-1",
        ] {
            std::fs::create_dir_all(out.join(left).join("x")).unwrap();
        }
        remove_partial(out);
        assert_eq!(names(), ["checkpoint-4", "checkpoint-6"]);
    }
}
