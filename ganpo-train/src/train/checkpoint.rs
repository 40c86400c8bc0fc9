//! Checkpoints: written whole or not at all, kept up to a limit, checked before resuming.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::metrics::MetricMeans;
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
    /// SHA-256 of every other file of the checkpoint, by file name, verified before resuming
    /// (absent in checkpoints written before they were recorded).
    #[serde(default)]
    pub checksums: BTreeMap<String, String>,
    /// The training metrics gathered since the last log line, so that the first line after a
    /// resume averages the same steps as the uninterrupted run's.
    #[serde(default)]
    pub metrics_window: MetricMeans,
    /// Settings changed on purpose at a resume (`--allow-change`), oldest first.
    #[serde(default)]
    pub config_changes: Vec<ConfigChange>,
}

/// A setting changed when a run was resumed (`ganpo train --resume DIR --allow-change KEY`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// The step the run resumed at.
    pub step: usize,
    /// The dotted key.
    pub key: String,
    /// Its value in the checkpoint (TOML), absent if it was not set.
    pub was: Option<String>,
    /// Its value from then on, absent if it is no longer set.
    pub now: Option<String>,
}

impl std::fmt::Display for ConfigChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        write!(
            f,
            "{} (checkpoint: {}, now: {})",
            self.key,
            show(&self.was),
            show(&self.now)
        )
    }
}

/// The current layout version.
pub const FORMAT: u32 = 1;
/// File names inside a checkpoint directory (module and optimizer records without extension).
pub const POLICY: &str = "policy";
/// A LoRA run's adapters (the frozen base is not saved).
pub const ADAPTERS: &str = "adapters.safetensors";
/// Policy optimizer state.
pub const POLICY_OPTIM: &str = "policy_optimizer";
/// The synced reference of a TR-DPO run (`train.sync_ref_model`).
pub const REFERENCE: &str = "reference";
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
            message: io_message(&e),
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
    let (doomed, kept) = all.split_at(all.len().saturating_sub(keep));
    // The newest checkpoint written outside a non-finite streak survives while every kept one
    // was written inside it (their weights are the ones the streak left: useless to resume).
    let spared = if kept.iter().any(|(_, d)| written_outside_a_streak(d)) {
        None
    } else {
        doomed
            .iter()
            .rev()
            .find(|(_, d)| written_outside_a_streak(d))
            .map(|(s, _)| *s)
    };
    for (step, old) in doomed {
        if Some(*step) != spared {
            retire(old).map_err(io(old))?;
        }
    }
    Ok(dir)
}

/// Deletes the checkpoints in `output_dir` newer than `step` and returns them: a run resumed
/// from an older checkpoint abandons what followed it (its metrics are cut at `step` too), and a
/// later `--resume` of the directory must not pick them up.
pub fn remove_checkpoints_after(
    output_dir: &Path,
    step: usize,
) -> Result<Vec<PathBuf>, CheckpointError> {
    let newer: Vec<PathBuf> = list_checkpoints(output_dir)
        .into_iter()
        .filter(|(s, _)| *s > step)
        .map(|(_, d)| d)
        .collect();
    for dir in &newer {
        retire(dir).map_err(|e| CheckpointError::Io {
            path: dir.clone(),
            message: io_message(&e),
        })?;
    }
    Ok(newer)
}

/// The newest checkpoint in `output_dir` written outside a non-finite streak: where to resume a
/// run that diverged.
pub fn last_finite_checkpoint(output_dir: &Path) -> Option<PathBuf> {
    list_checkpoints(output_dir)
        .into_iter()
        .rev()
        .map(|(_, d)| d)
        .find(|d| written_outside_a_streak(d))
}

/// Whether the checkpoint at `dir` was written after a finite step (its `trainer_state.json`
/// counts no consecutive non-finite steps); unreadable ones are not.
fn written_outside_a_streak(dir: &Path) -> bool {
    read_meta(dir).is_ok_and(|m| m.state.nonfinite_consecutive == 0)
}

/// SHA-256 of the file at `path`, in hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    crate::io::file_digest::<sha2::Sha256>(path, b"")
}

/// SHA-256 of every file in the checkpoint directory `dir` but `trainer_state.json`.
pub fn checksums(dir: &Path) -> Result<BTreeMap<String, String>, CheckpointError> {
    let io = |path: &Path, e: std::io::Error| CheckpointError::Io {
        path: path.to_path_buf(),
        message: io_message(&e),
    };
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name != META && path.is_file() {
            out.insert(name, sha256_file(&path).map_err(|e| io(&path, e))?);
        }
    }
    Ok(out)
}

/// Checks the files of the checkpoint at `dir` against the SHA-256s `meta` records, naming the
/// first file that is missing or differs.
pub fn verify_checksums(dir: &Path, meta: &CheckpointMeta) -> Result<(), CheckpointError> {
    for (name, want) in &meta.checksums {
        let path = dir.join(name);
        let corrupt = |message: String| CheckpointError::Corrupt {
            path: dir.to_path_buf(),
            message,
        };
        let got = sha256_file(&path).map_err(|e| corrupt(format!("{name}: {}", io_message(&e))))?;
        if &got != want {
            return Err(corrupt(format!(
                "{name} is damaged or was changed after it was written: its SHA-256 is {got}, \
                 {META} records {want}"
            )));
        }
    }
    Ok(())
}

/// An I/O error as one plain sentence (`no space left on device (os error 28)`), never a debug
/// dump.
pub fn io_message(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::StorageFull => format!("no space left on device ({e})"),
        _ => e.to_string(),
    }
}

/// A burn recorder error as a plain sentence. Burn prints its errors as debug dumps
/// (`Unknown("Io { inner: Os { code: 28, kind: StorageFull, .. } }")`); this keeps the message.
pub fn recorder_message(e: &burn::record::RecorderError) -> String {
    use burn::record::RecorderError as R;
    let (what, inner) = match e {
        R::FileNotFound(s) => ("file not found", s),
        R::DeserializeError(s) => ("unreadable", s),
        R::Unknown(s) => ("", s),
    };
    let plain = if inner.contains("StorageFull") || inner.contains("No space left") {
        "no space left on device".to_string()
    } else if let Some(rest) = inner.split("message: \"").nth(1) {
        rest.split('"').next().unwrap_or(rest).to_string()
    } else {
        inner.clone()
    };
    if what.is_empty() {
        plain
    } else {
        format!("{what}: {plain}")
    }
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

/// The settings that differ between the configuration a checkpoint was written with and the
/// current one (as [`ConfigChange`]s at `step`), ignoring the keys that may change on resume
/// (`train.max_steps`, `train.epochs`, logging (cadence, TensorBoard), evaluation and checkpoint
/// cadence, the output directory, backend, device or devices and the all-reduce timeout: a
/// data-parallel run resumes on any number of devices).
pub fn config_differences(
    saved: &RunConfig,
    current: &RunConfig,
    step: usize,
) -> Vec<ConfigChange> {
    value_differences(&comparable(saved), &comparable(current), step)
}

/// The leaves (dotted keys) that differ between two configurations as TOML values, as
/// [`ConfigChange`]s at `step`.
pub(crate) fn value_differences(
    saved: &toml::Value,
    current: &toml::Value,
    step: usize,
) -> Vec<ConfigChange> {
    fn walk(
        key: &str,
        a: Option<&toml::Value>,
        b: Option<&toml::Value>,
        step: usize,
        out: &mut Vec<ConfigChange>,
    ) {
        match (a, b) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let sub = if key.is_empty() {
                        k.clone()
                    } else {
                        format!("{key}.{k}")
                    };
                    walk(&sub, x.get(k), y.get(k), step, out);
                }
            }
            _ if a != b => out.push(ConfigChange {
                step,
                key: key.to_string(),
                was: a.map(|v| v.to_string()),
                now: b.map(|v| v.to_string()),
            }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", Some(saved), Some(current), step, &mut out);
    out
}

/// A configuration as compared on resume: the keys that may change freely are blanked.
fn comparable(c: &RunConfig) -> toml::Value {
    let mut c = c.clone();
    c.train.max_steps = None;
    c.train.epochs = 0;
    c.train.logging_steps = 1;
    c.train.tensorboard = true;
    c.train.eval_steps = None;
    c.train.save_steps = None;
    c.train.save_total_limit = 1;
    c.train.output_dir = PathBuf::new();
    c.train.backend = String::new();
    c.train.device = None;
    c.train.devices = None;
    c.train.sync_timeout_s = 0;
    toml::Value::try_from(c).expect("configs serialize")
}

/// Whether `key` names a setting (`train.lr`) or a table of settings (`loss`) that is set in
/// the configuration `c` (as `--allow-change` names them).
pub fn has_setting(c: &RunConfig, key: &str) -> bool {
    let table = comparable(c);
    let mut value = &table;
    for part in key.split('.') {
        match value.get(part) {
            Some(v) => value = v,
            None => return false,
        }
    }
    true
}

/// Whether the change of `key` is covered by the `--allow-change` key `allowed` (the same key,
/// or a table above it).
pub fn allows(allowed: &str, key: &str) -> bool {
    key == allowed
        || key
            .strip_prefix(allowed)
            .is_some_and(|rest| rest.starts_with('.'))
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

    /// A checkpoint's `trainer_state.json` with `streak` consecutive non-finite steps.
    fn meta_json(step: usize, streak: usize) -> String {
        let meta = CheckpointMeta {
            format: FORMAT,
            state: TrainState {
                step,
                nonfinite_consecutive: streak,
                ..Default::default()
            },
            config: RunConfig::default(),
            data_fingerprint: String::new(),
            train_pairs: 0,
            model_fingerprint: None,
            checksums: BTreeMap::new(),
            metrics_window: MetricMeans::default(),
            config_changes: Vec::new(),
        };
        serde_json::to_string(&meta).unwrap()
    }

    #[test]
    fn rotation_spares_the_last_checkpoint_written_before_a_non_finite_streak() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        // Steps 2 to 8 were finite, 9 on were skipped: checkpoints 10 and 12 hold a streak.
        let save = |step: usize, streak: usize| {
            save_atomically(out, step, 2, |tmp: &Path| {
                std::fs::write(tmp.join(META), meta_json(step, streak)).map_err(|e| {
                    CheckpointError::Io {
                        path: tmp.to_path_buf(),
                        message: e.to_string(),
                    }
                })
            })
            .unwrap()
        };
        for (step, streak) in [(2, 0), (4, 0), (6, 0), (8, 0), (10, 2), (12, 4), (14, 6)] {
            save(step, streak);
        }
        let steps: Vec<usize> = list_checkpoints(out).iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, [8, 12, 14]);
        assert_eq!(last_finite_checkpoint(out), Some(checkpoint_dir(out, 8)));
        // A finite checkpoint among the kept ones ends the exception.
        save(16, 0);
        let steps: Vec<usize> = list_checkpoints(out).iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, [14, 16]);
    }

    #[test]
    fn checksums_name_the_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("policy.mpk"), b"weights").unwrap();
        std::fs::write(d.join("ganpo.mpk"), b"discriminators").unwrap();
        std::fs::write(d.join(META), "{}").unwrap();
        let sums = checksums(d).unwrap();
        assert_eq!(sums.len(), 2, "{sums:?}");
        // `printf weights | sha256sum`
        assert_eq!(
            sums["policy.mpk"],
            "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c"
        );
        let mut meta: CheckpointMeta = serde_json::from_str(&meta_json(1, 0)).unwrap();
        meta.checksums = sums;
        verify_checksums(d, &meta).unwrap();
        std::fs::write(d.join("policy.mpk"), b"weightz").unwrap();
        let e = verify_checksums(d, &meta).unwrap_err().to_string();
        assert!(
            e.contains("policy.mpk is damaged") && e.contains("SHA-256"),
            "{e}"
        );
        std::fs::remove_file(d.join("ganpo.mpk")).unwrap();
        std::fs::write(d.join("policy.mpk"), b"weights").unwrap();
        let e = verify_checksums(d, &meta).unwrap_err().to_string();
        assert!(e.contains("ganpo.mpk"), "{e}");
    }

    /// A full disk (`/dev/full`, whose writes fail with ENOSPC) in plain words, also inside the
    /// debug dump burn's recorders make of bincode's error (`Unknown("Io { inner: Os { .. },
    /// index: N }")`). ganpo-cli's `a_full_disk_loses_nothing_and_says_so` fills a real one.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_is_reported_in_plain_words() {
        let e = std::fs::write("/dev/full", b"x").unwrap_err();
        assert_eq!(io_message(&e), format!("no space left on device ({e})"));
        let dump = burn::record::RecorderError::Unknown(format!("Io {{ inner: {e:?}, index: 7 }}"));
        assert_eq!(recorder_message(&dump), "no space left on device");
        let other = std::fs::File::open("/nonexistent/x").unwrap_err();
        let dump =
            burn::record::RecorderError::Unknown(format!("Io {{ inner: {other:?}, index: 0 }}"));
        assert_eq!(recorder_message(&dump), "No such file or directory");
    }
}
