//! The run configuration: one TOML file (`ganpo train --config run.toml`), overridable key by key
//! (`--set train.lr=5e-7`). Every option is documented in `docs/configuration.md`.

mod compute_dtype;
mod overrides;

use std::path::{Path, PathBuf};

use ganpo_core::PreferenceLoss;
use ganpo_core::ganpo::GanpoConfig;
use ganpo_models::lora::LoraConfig;
use serde::{Deserialize, Serialize};

use crate::data::{Truncation, TruncationMode};
pub use compute_dtype::ComputeDtype;
pub use overrides::{ConfigError, apply_set};

/// Everything a training run needs; sections mirror the TOML tables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// `[model]`: policy and reference checkpoints.
    pub model: ModelSection,
    /// `[data]`: dataset files and tokenization limits.
    pub data: DataSection,
    /// `[loss]`: the base preference loss (TRL's `loss_type`, `beta`, ...).
    pub loss: PreferenceLoss,
    /// `[ganpo]`: the latent adversarial regularizer; absent = the base loss alone.
    pub ganpo: Option<GanpoConfig>,
    /// `[lora]`: train LoRA adapters on the frozen policy (whose adapters-off self is then the
    /// reference); absent = full fine-tuning.
    pub lora: Option<LoraConfig>,
    /// `[train]`: optimization, schedule, logging, checkpoints.
    pub train: TrainSection,
}

/// `[model]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// The starting policy: an HF directory or a `.gguf` file.
    pub path: PathBuf,
    /// The frozen reference; `None` = a frozen copy of the starting policy (with LoRA: the
    /// policy with its adapters off, no copy).
    pub reference: Option<PathBuf>,
    /// A PEFT adapter directory (`adapter_config.json`, `adapter_model.safetensors`) to start
    /// from: its adapters are trained on, with its rank, alpha and target modules.
    pub adapter: Option<PathBuf>,
}

/// `[data]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// Training files (`.jsonl`).
    pub train: Vec<PathBuf>,
    /// Held-out files; when empty and `eval_fraction > 0`, that fraction of `train` is held out.
    pub eval: Vec<PathBuf>,
    /// Fraction of the training records held out for evaluation (when `eval` is empty).
    pub eval_fraction: f64,
    /// Drop and count malformed records instead of stopping before training.
    pub skip_invalid: bool,
    /// Longest prompt + completion sequence in tokens (TRL's default 1024); 0 = no limit.
    pub max_length: usize,
    /// Longest prompt, cut first (TRL 0.x's option); 0 = no limit.
    pub max_prompt_length: usize,
    /// Which end of a too-long sequence survives: `keep_start` (TRL's default) or `keep_end`.
    pub truncation_mode: TruncationMode,
    /// Pad batches to a multiple of this many tokens.
    pub pad_to_multiple_of: Option<usize>,
    /// Shuffle the training pairs each epoch (seeded by `train.seed`).
    pub shuffle: bool,
    /// Batch pairs of similar length together.
    pub group_by_length: bool,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            train: Vec::new(),
            eval: Vec::new(),
            eval_fraction: 0.0,
            skip_invalid: false,
            max_length: 1024,
            max_prompt_length: 0,
            truncation_mode: TruncationMode::KeepStart,
            pad_to_multiple_of: None,
            shuffle: true,
            group_by_length: false,
        }
    }
}

impl DataSection {
    /// The length limits as the collator uses them.
    pub fn truncation(&self) -> Truncation {
        Truncation {
            max_length: (self.max_length > 0).then_some(self.max_length),
            max_prompt_length: (self.max_prompt_length > 0).then_some(self.max_prompt_length),
            mode: self.truncation_mode,
        }
    }
}

/// Learning-rate schedule after warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    /// Linear decay to 0 (transformers' default).
    #[default]
    Linear,
    /// Half-cosine decay to 0.
    Cosine,
    /// Constant.
    Constant,
}

/// `[train]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    /// Where checkpoints, `metrics.jsonl` and the final model go.
    pub output_dir: PathBuf,
    /// Seed of initialization, shuffling, dropout.
    pub seed: u64,
    /// Passes over the training data (ignored when `max_steps` is set).
    pub epochs: usize,
    /// Stop after this many optimizer steps.
    pub max_steps: Option<usize>,
    /// Pairs per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Pairs per evaluation batch.
    pub eval_batch_size: usize,
    /// Peak policy learning rate (TRL's DPO default, 1e-6).
    pub lr: f64,
    /// Decay after warm-up.
    pub scheduler: Scheduler,
    /// Warm-up steps (linear from 0); takes precedence over `warmup_ratio`.
    pub warmup_steps: Option<usize>,
    /// Warm-up as a fraction of all steps.
    pub warmup_ratio: f64,
    /// AdamW decoupled weight decay (PyTorch's default 0.01).
    pub weight_decay: f64,
    /// AdamW beta1.
    pub adam_beta1: f64,
    /// AdamW beta2.
    pub adam_beta2: f64,
    /// AdamW epsilon (PyTorch's 1e-8).
    pub adam_epsilon: f64,
    /// Global-norm clipping of the policy gradient; `None` = off.
    pub max_grad_norm: Option<f64>,
    /// Discriminator learning rate over the policy's (same schedule).
    pub disc_lr_ratio: f64,
    /// Discriminator updates per optimizer step.
    pub disc_steps: usize,
    /// Global-norm clipping of the discriminators' gradient; `None` = off.
    pub disc_max_grad_norm: Option<f64>,
    /// Compute the reference log-probs once before training (GANPO still runs the reference
    /// forward for its latents).
    pub precompute_ref_logps: bool,
    /// With GANPO: also keep the reference's last-layer hidden states of every pair from that
    /// pass (host memory: pairs x 2 x length x hidden_size floats), so the reference model is freed
    /// and never runs again. Needs `ganpo.pooling` = `sequence` or `completion`.
    pub cache_ref_latents: bool,
    /// TR-DPO (TRL's `sync_ref_model`): every `ref_model_sync_steps` optimizer steps the
    /// reference becomes `ref_model_mixup_alpha * policy + (1 - alpha) * reference`. Needs a
    /// reference of its own (no LoRA) computed live (no precomputed log-probs or cached latents).
    pub sync_ref_model: bool,
    /// TR-DPO's alpha, in `[0, 1]`; `None` = TRL's 0.6. Only with `sync_ref_model`.
    pub ref_model_mixup_alpha: Option<f64>,
    /// TR-DPO's tau, the optimizer steps between syncs; `None` = TRL's 512. Only with
    /// `sync_ref_model`.
    pub ref_model_sync_steps: Option<usize>,
    /// Log training metrics every this many optimizer steps.
    pub logging_steps: usize,
    /// Also write the logged metrics as TensorBoard events (`OUTPUT/tensorboard/`, with
    /// transformers' tags), so TensorBoard shows ganpo runs beside TRL runs.
    pub tensorboard: bool,
    /// Evaluate on the held-out split every this many steps (and at the end); `None` = only at
    /// the end.
    pub eval_steps: Option<usize>,
    /// Write a checkpoint every this many steps (and at the end); `None` = only at the end.
    pub save_steps: Option<usize>,
    /// Keep this many most recent checkpoints.
    pub save_total_limit: usize,
    /// Stop after this many consecutive steps with a non-finite loss or gradient.
    pub max_nonfinite_steps: usize,
    /// Dtype of the forward and backward passes (`f32`, `bf16`, `f16`; `f64` on the CPU); the
    /// optimizer keeps f32 master weights.
    pub compute_dtype: ComputeDtype,
    /// Activation checkpointing: the policy's tracked pass keeps only each decoder layer's
    /// input, and the backward pass recomputes one layer at a time (about one more forward pass
    /// of time for a fraction of the activation memory).
    pub gradient_checkpointing: bool,
    /// Chunked log-probs: the LM head, log-softmax and their gradient run on this many scored
    /// rows at a time (forward and backward, policy and reference), so no `[rows, vocab]`
    /// tensor exists for all rows at once; `None` = all rows in one go.
    pub logprob_chunk_rows: Option<usize>,
    /// Compute backend: `cpu`, `wgpu` or `cuda`.
    pub backend: String,
    /// Device index on the backend; `None` = its default device.
    pub device: Option<usize>,
    /// Data parallelism: train one replica per device of these indices on the backend, each on
    /// its share of every batch, their gradients averaged before each step
    /// (`Trainer::fit_data_parallel`; docs/distributed.md). On the cpu backend the indices
    /// count replicas sharing the CPU. Excludes `device`.
    pub devices: Option<Vec<usize>>,
    /// How long a data-parallel replica waits in an all-reduce for the others before the run
    /// stops, naming the replicas that did not arrive (seconds; it must cover evaluation and
    /// checkpoint writing, which only the first replica does).
    pub sync_timeout_s: u64,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            output_dir: PathBuf::from("runs/ganpo"),
            seed: 42,
            epochs: 1,
            max_steps: None,
            batch_size: 8,
            grad_accum: 1,
            eval_batch_size: 8,
            lr: 1e-6,
            scheduler: Scheduler::Linear,
            warmup_steps: None,
            warmup_ratio: 0.0,
            weight_decay: 0.01,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: Some(1.0),
            disc_lr_ratio: 0.5,
            disc_steps: 1,
            disc_max_grad_norm: None,
            precompute_ref_logps: false,
            cache_ref_latents: false,
            sync_ref_model: false,
            ref_model_mixup_alpha: None,
            ref_model_sync_steps: None,
            logging_steps: 10,
            tensorboard: true,
            eval_steps: None,
            save_steps: None,
            save_total_limit: 2,
            max_nonfinite_steps: 5,
            compute_dtype: ComputeDtype::F32,
            gradient_checkpointing: false,
            logprob_chunk_rows: None,
            backend: "cpu".into(),
            device: None,
            devices: None,
            sync_timeout_s: 600,
        }
    }
}

/// `value` with `{assets}` replaced by the asset cache `cargo xtask assets` fills:
/// `$GANPO_ASSETS`, by default `~/.cache/ganpo/assets`.
pub fn expand_assets(value: &str) -> PathBuf {
    let assets = std::env::var_os("GANPO_ASSETS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ganpo/assets")))
        .unwrap_or_else(|| PathBuf::from("assets"));
    PathBuf::from(value.replace("{assets}", &assets.to_string_lossy()))
}

impl RunConfig {
    /// Reads `path` and applies `--set key=value` overrides, then checks every value.
    pub fn load(path: &Path, sets: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let value: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Toml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let file = path.display().to_string();
        Self::from_table_with_sets(value, sets, &file, path.parent().unwrap_or(Path::new(".")))
    }

    /// A config from `table` (named `origin` in errors) with `--set` overrides applied, its
    /// values checked and its relative paths taken from `base`: what [`Self::load`] does after
    /// reading the file, for tables made otherwise (a TRL recipe).
    pub fn from_table_with_sets(
        mut value: toml::Table,
        sets: &[String],
        origin: &str,
        base: &Path,
    ) -> Result<Self, ConfigError> {
        if !sets.is_empty() {
            // A key the file alone gets right and the overrides get wrong is the overrides'.
            Self::parse_table(value.clone(), origin)?;
            for s in sets {
                apply_set(&mut value, s)?;
            }
            Self::parse_table(value.clone(), &format!("--set ({})", sets.join(" ")))?;
        }
        let config = Self::from_table(value, origin)?;
        config.resolve_paths(base)
    }

    /// Builds a config from a parsed TOML table; `origin` names it in errors.
    pub fn from_table(table: toml::Table, origin: &str) -> Result<Self, ConfigError> {
        let config = Self::parse_table(table, origin)?;
        config.validate()?;
        Ok(config)
    }

    /// [`Self::from_table`] without the checks of [`Self::validate`] (which need a model and
    /// data): every key known and of the right type.
    pub fn parse_table(table: toml::Table, origin: &str) -> Result<Self, ConfigError> {
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Key {
            origin: origin.to_string(),
            key: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }

    /// `{assets}` in a path is the asset cache ([`expand_assets`]); other relative paths in the
    /// file are relative to the file's directory.
    fn resolve_paths(mut self, base: &Path) -> Result<Self, ConfigError> {
        let fix = |p: &mut PathBuf| {
            if let Some(s) = p.to_str().filter(|s| s.contains("{assets}")) {
                *p = expand_assets(s);
            }
            // A Hub id (`hf://...`, or `OWNER/NAME` naming nothing beside the file) is kept.
            let hub = p.to_str().is_some_and(|s| {
                s.starts_with("hf://")
                    || !base.join(s).exists()
                        && crate::hub::bare_id(s, crate::hub::RepoKind::Model).is_some()
            });
            if p.is_relative() && !p.as_os_str().is_empty() && !hub {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.model.path);
        if let Some(r) = &mut self.model.reference {
            fix(r);
        }
        if let Some(a) = &mut self.model.adapter {
            fix(a);
        }
        self.data.train.iter_mut().for_each(fix);
        self.data.eval.iter_mut().for_each(fix);
        fix(&mut self.train.output_dir);
        if let Some(dir) = self.ganpo.as_mut().and_then(|g| g.init_from.as_mut()) {
            fix(dir);
        }
        Ok(self)
    }

    /// Checks ranges and combinations; the error names the key and what it accepts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: &dyn std::fmt::Display, expected: &str| {
            Err(ConfigError::Value {
                key: key.to_string(),
                value: value.to_string(),
                expected: expected.to_string(),
            })
        };
        if self.model.path.as_os_str().is_empty() {
            return bad(
                "model.path",
                &"(empty)",
                "a model: an HF directory, a .gguf file or an .onnx export",
            );
        }
        if self.data.train.is_empty() {
            return bad("data.train", &"[]", "at least one .jsonl file");
        }
        if !(0.0..1.0).contains(&self.data.eval_fraction) {
            return bad(
                "data.eval_fraction",
                &self.data.eval_fraction,
                "a fraction in [0, 1)",
            );
        }
        let t = &self.train;
        for (key, v) in [
            ("train.batch_size", t.batch_size),
            ("train.grad_accum", t.grad_accum),
            ("train.eval_batch_size", t.eval_batch_size),
            ("train.logging_steps", t.logging_steps),
            ("train.disc_steps", t.disc_steps),
            (
                "train.logprob_chunk_rows",
                t.logprob_chunk_rows.unwrap_or(1),
            ),
            ("train.save_total_limit", t.save_total_limit),
            ("train.max_nonfinite_steps", t.max_nonfinite_steps),
        ] {
            if v == 0 {
                return bad(key, &v, "a positive integer");
            }
        }
        if let Some(devices) = &t.devices {
            self.validate_devices(devices)?;
        }
        if self.loss.is_unpaired() && t.batch_size < 2 {
            return bad(
                "train.batch_size",
                &t.batch_size,
                "at least 2 with loss kto: its KL rows pair each prompt with another example's \
                 completion within a batch (with one example the KL term equals the reward; TRL \
                 refuses it too)",
            );
        }
        if t.max_steps == Some(0) {
            return bad(
                "train.max_steps",
                &0,
                "a positive integer (or leave it out to train train.epochs epochs)",
            );
        }
        if t.max_steps.is_none() && t.epochs == 0 {
            return bad(
                "train.epochs",
                &0,
                "a positive integer (or set train.max_steps)",
            );
        }
        for (key, v) in [("train.lr", t.lr), ("train.adam_epsilon", t.adam_epsilon)] {
            if !(v.is_finite() && v > 0.0) {
                return bad(key, &v, "a finite number > 0");
            }
        }
        for (key, v) in [
            ("train.adam_beta1", t.adam_beta1),
            ("train.adam_beta2", t.adam_beta2),
            ("train.warmup_ratio", t.warmup_ratio),
        ] {
            if !(0.0..1.0).contains(&v) {
                return bad(key, &v, "a value in [0, 1)");
            }
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return bad(
                "train.weight_decay",
                &t.weight_decay,
                "a finite number >= 0",
            );
        }
        if !(t.disc_lr_ratio.is_finite() && t.disc_lr_ratio >= 0.0) {
            return bad(
                "train.disc_lr_ratio",
                &t.disc_lr_ratio,
                "a finite number >= 0",
            );
        }
        for (key, v) in [
            ("train.max_grad_norm", t.max_grad_norm),
            ("train.disc_max_grad_norm", t.disc_max_grad_norm),
        ] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return bad(
                    key,
                    &v,
                    "a finite number > 0 (leave it out to disable clipping)",
                );
            }
        }
        match t.backend.parse::<ganpo_core::backend::BackendKind>() {
            Err(e) => return bad("train.backend", &t.backend, &e.to_string()),
            Ok(kind) if !t.compute_dtype.supported_on(kind.name()) => {
                return bad(
                    "train.compute_dtype",
                    &format!("{:?}", t.compute_dtype).to_lowercase(),
                    "f32 or f64 on the cpu backend (bf16 / f16 mixed precision needs \
                     --backend wgpu or cuda)",
                );
            }
            Ok(_) => {}
        }
        self.loss.validate().map_err(|e| match e {
            // The key and value the loss names, under `loss.`.
            ganpo_core::LossError::InvalidSetting {
                key,
                value,
                expected,
            } => ConfigError::Value {
                key: format!("loss.{key}"),
                value: value.to_string(),
                expected: expected.into(),
            },
            e @ ganpo_core::LossError::OptionWithLoss { option, .. } => ConfigError::Value {
                key: format!("loss.{option}"),
                value: match option {
                    "ld_alpha" => self.loss.ld_alpha.unwrap_or_default().to_string(),
                    _ => self.loss.use_weighting.to_string(),
                },
                expected: e.to_string(),
            },
            e @ ganpo_core::LossError::DivergenceWithLoss { divergence, .. } => {
                ConfigError::Value {
                    key: "loss.f_divergence_type".into(),
                    value: divergence.into(),
                    expected: e.to_string(),
                }
            }
            other => ConfigError::Value {
                key: "loss".into(),
                value: String::new(),
                expected: other.to_string(),
            },
        })?;
        if t.cache_ref_latents {
            match &self.ganpo {
                None => {
                    return bad(
                        "train.cache_ref_latents",
                        &true,
                        "a [ganpo] table: only GANPO uses the reference latents",
                    );
                }
                Some(g) if g.pooling == ganpo_core::Pooling::None => {
                    return bad(
                        "train.cache_ref_latents",
                        &true,
                        "ganpo.pooling = \"sequence\" or \"completion\" (with \"none\" the \
                         discriminators see padding positions, which a cache does not hold)",
                    );
                }
                Some(_) => {}
            }
        }
        self.validate_ref_sync()?;
        if let Some(g) = &self.ganpo {
            g.validate().map_err(|e| ConfigError::Value {
                key: format!("ganpo.{}", e.key),
                value: e.value.clone(),
                expected: e.expected.to_string(),
            })?;
        }
        self.validate_lora()
    }

    /// TR-DPO's settings and what they exclude.
    /// `train.devices`: at least one index, none twice, not beside `train.device`, and no
    /// unpaired data (KTO) across several.
    fn validate_devices(&self, devices: &[usize]) -> Result<(), ConfigError> {
        let bad = |expected: &str| {
            Err(ConfigError::Value {
                key: "train.devices".into(),
                value: format!("{devices:?}"),
                expected: expected.into(),
            })
        };
        if devices.is_empty() {
            return bad("at least one device index, e.g. [0, 1]");
        }
        if let Some(d) = devices
            .iter()
            .find(|d| devices.iter().filter(|e| e == d).count() > 1)
        {
            return bad(&format!("each device once (device {d} is listed twice)"));
        }
        if self.train.device.is_some() {
            return bad("either train.device (one device) or train.devices, not both");
        }
        if devices.len() > 1 && self.loss.is_unpaired() {
            return bad("one device with loss kto (data-parallel KTO is not supported)");
        }
        if self.train.sync_timeout_s == 0 {
            return Err(ConfigError::Value {
                key: "train.sync_timeout_s".into(),
                value: "0".into(),
                expected: "a positive number of seconds".into(),
            });
        }
        Ok(())
    }

    fn validate_ref_sync(&self) -> Result<(), ConfigError> {
        let t = &self.train;
        let bad = |key: &str, value: String, expected: &str| {
            Err(ConfigError::Value {
                key: key.into(),
                value,
                expected: expected.into(),
            })
        };
        if !t.sync_ref_model {
            if let Some(a) = t.ref_model_mixup_alpha {
                let why = "train.sync_ref_model = true beside it (without it the reference never changes)";
                return bad("train.ref_model_mixup_alpha", a.to_string(), why);
            }
            if let Some(n) = t.ref_model_sync_steps {
                let why = "train.sync_ref_model = true beside it (without it the reference never changes)";
                return bad("train.ref_model_sync_steps", n.to_string(), why);
            }
            return Ok(());
        }
        if let Some(a) = t.ref_model_mixup_alpha.filter(|a| !(0.0..=1.0).contains(a)) {
            return bad(
                "train.ref_model_mixup_alpha",
                a.to_string(),
                "a value in [0, 1]",
            );
        }
        if t.ref_model_sync_steps == Some(0) {
            return bad(
                "train.ref_model_sync_steps",
                "0".into(),
                "a positive integer",
            );
        }
        let refusals = [
            (
                self.uses_lora(),
                "no LoRA: a LoRA policy's reference is itself with the adapters off, so there is                  no reference of its own to sync (TRL refuses it too)",
            ),
            (
                t.precompute_ref_logps,
                "train.precompute_ref_logps = false: a synced reference's log-probs change",
            ),
            (
                t.cache_ref_latents,
                "train.cache_ref_latents = false: a synced reference's latents change",
            ),
        ];
        match refusals.into_iter().find(|(refused, _)| *refused) {
            Some((_, why)) => bad("train.sync_ref_model", "true".into(), why),
            None => Ok(()),
        }
    }

    /// Whether the policy trains LoRA adapters (a `[lora]` table or `model.adapter`).
    pub fn uses_lora(&self) -> bool {
        self.lora.is_some() || self.model.adapter.is_some()
    }

    /// The `[lora]` checks of [`Self::validate`] alone (which needs no model or data): values in
    /// range, and no combination LoRA does not support.
    pub fn validate_lora(&self) -> Result<(), ConfigError> {
        if let Some((key, value, expected)) = self.lora.as_ref().and_then(|l| l.invalid_setting()) {
            return Err(ConfigError::Value {
                key: key.into(),
                value,
                expected: expected.into(),
            });
        }
        if let (Some(_), Some(a)) = (&self.lora, &self.model.adapter) {
            return Err(ConfigError::Value {
                key: "model.adapter".into(),
                value: a.display().to_string(),
                expected: "no [lora] table beside it: the adapter's adapter_config.json sets \
                           its rank, alpha and target modules"
                    .into(),
            });
        }
        if let (true, Some(l)) = (self.train.gradient_checkpointing, &self.lora)
            && l.dropout > 0.0
        {
            return Err(ConfigError::Value {
                key: "lora.dropout".into(),
                value: l.dropout.to_string(),
                expected: "0 with train.gradient_checkpointing (the recomputed layers would \
                           draw other dropout masks than the forward pass)"
                    .into(),
            });
        }
        if let (true, Some(r)) = (self.uses_lora(), &self.model.reference) {
            return Err(ConfigError::Value {
                key: "model.reference".into(),
                value: r.display().to_string(),
                expected: "no separate reference with LoRA: the reference is the policy with \
                           its adapters off"
                    .into(),
            });
        }
        Ok(())
    }
}
