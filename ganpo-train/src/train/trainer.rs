//! The GANPO trainer: a run's state, its data order, the loop (`fit`: steps, logging,
//! evaluation, checkpoints), evaluation and resume. The step itself is in [`super::step`].

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, Optimizer};
use burn::prelude::*;
use burn::record::{BinFileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::{Ganpo, LossError};
use ganpo_models::CausalLm;

use super::checkpoint::{self, CheckpointError, CheckpointMeta, ConfigChange};
#[cfg(feature = "collective")]
use super::collective::Replica;
use super::eval::{EvalSettings, evaluate};
use super::metrics::MetricMeans;
use super::objective::Scoring;
use super::precision::{cast_frozen, cast_module};
use super::profile::PhaseTimes;
use super::ref_sync;
use super::reference::{RefCache, precompute};
use super::state::TrainState;
use crate::config::RunConfig;
use crate::data::{PreferenceDataset, epoch_order};

/// Errors that stop a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A batch could not form valid loss inputs.
    #[error(transparent)]
    Loss(#[from] LossError),
    /// Too many consecutive non-finite steps.
    #[error(
        "stopping at step {step}: {count} consecutive steps had a non-finite loss or gradient \
         ({total} in all); lower train.lr, check the data, or raise train.max_nonfinite_steps\
         {}", resume_hint(last_finite.as_deref())
    )]
    NonFinite {
        /// The last step.
        step: usize,
        /// Consecutive non-finite steps.
        count: usize,
        /// All non-finite steps.
        total: usize,
        /// The last checkpoint written before the streak, if there is one: where to resume.
        last_finite: Option<PathBuf>,
    },
    /// Checkpoint trouble.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The metrics log could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A dataset of one kind (pairs, unpaired examples) for a loss that reads the other.
    #[error(
        "loss `{loss}` reads {expected}, but the {split} set holds {found} \
         (PreferenceDataset::build_unpaired builds unpaired data; Records::as_unpaired splits \
         pairs into desirable and undesirable examples, as TRL's KTOTrainer does)"
    )]
    DataKind {
        /// The loss.
        loss: &'static str,
        /// `train` or `eval`.
        split: &'static str,
        /// What the loss reads.
        expected: &'static str,
        /// What the dataset holds.
        found: &'static str,
    },
    /// No training pairs.
    #[error("the training set is empty (after dropping pairs whose prompt fills data.max_length)")]
    NoData,
    /// A LoRA policy given a separate reference model.
    #[error(
        "the policy carries LoRA adapters, so its reference is itself with the adapters off: \
         do not give a separate reference model (model.reference)"
    )]
    LoraWithReference,
    /// `[lora]` configured but the policy has no adapters.
    #[error(
        "the run configures LoRA ([lora] or model.adapter) but the policy carries no adapters: \
         attach them first (ganpo_models::lora::attach)"
    )]
    LoraNotAttached,
    /// Gradient checkpointing or chunked log-probs asked of a model that cannot be run layer by
    /// layer (`key` names the setting).
    #[error(
        "{key}: this model cannot recompute its layers or its LM head apart (it is not a \
         decoder ganpo can run layer by layer; CausalLm::layer_stack returns None): {fix}"
    )]
    NotALayerStack {
        /// The setting that needs it.
        key: &'static str,
        /// How to run without it.
        fix: &'static str,
    },
    /// TR-DPO asked for with a reference whose parameters do not match the policy's.
    #[error(
        "train.sync_ref_model mixes the policy into the reference parameter by parameter, but \
         {0}: give a reference of the policy's architecture and size (or none)"
    )]
    SyncShapes(String),
    /// Adapter weights could not be saved or loaded.
    #[error(transparent)]
    Model(#[from] ganpo_models::ModelError),
    /// A data-parallel replica could not finish a collective operation (another replica died,
    /// hung past `train.sync_timeout_s`, or was stopped).
    #[error("replica {rank}: the all-reduce of {what} failed ({cause})")]
    Collective {
        /// The replica that saw the failure.
        rank: usize,
        /// What was being averaged.
        what: String,
        /// burn-collective's error.
        cause: String,
    },
    /// A data-parallel run that cannot start or that lost a replica; the message names which.
    #[error("{0}")]
    DataParallel(String),
    /// `--allow-change` names no setting of the checkpoint's or the current configuration.
    #[error(
        "--allow-change {key}: no such setting in the checkpoint's or the current configuration \
         (name a dotted key such as train.lr, or a table such as loss)"
    )]
    UnknownAllowedChange {
        /// The key given.
        key: String,
    },
}

/// How to resume a diverged run from `last_finite`, for [`TrainError::NonFinite`].
fn resume_hint(last_finite: Option<&Path>) -> String {
    last_finite
        .map(|d| {
            format!(
                "; the last checkpoint written before the streak is {0}: resume from it with a \
                 lower rate (--resume {0} --allow-change train.lr --set train.lr=...)",
                d.display()
            )
        })
        .unwrap_or_default()
}

type Recs = NamedMpkFileRecorder<FullPrecisionSettings>;
type OptimRecs = BinFileRecorder<FullPrecisionSettings>;

/// One logged line: the step, the split, and the metrics.
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// Optimizer step.
    pub step: usize,
    /// Fractional epoch.
    pub epoch: f64,
    /// `train` or `eval`.
    pub split: &'static str,
    /// TRL- and GANPO-named metrics (eval keys carry TRL's `eval_` prefix).
    pub metrics: Vec<(String, f64)>,
}

/// A preference-optimization run over a policy of type `M`.
pub struct Trainer<B: AutodiffBackend, M: AutodiffModule<B> + CausalLm<B>>
where
    M::InnerModule: CausalLm<B::InnerBackend>,
{
    pub(super) config: RunConfig,
    pub(super) device: B::Device,
    pub(super) policy: M,
    pub(super) reference: Option<M::InnerModule>,
    /// Whether the policy trains LoRA adapters on a frozen base (then the reference is the
    /// policy with its adapters off, and checkpoints hold the adapters only).
    pub(super) lora: bool,
    pub(super) ganpo: Option<Ganpo<B>>,
    pub(super) policy_optim: OptimizerAdaptor<AdamW, M, B>,
    pub(super) ganpo_optim: OptimizerAdaptor<AdamW, Ganpo<B>, B>,
    pub(super) train: PreferenceDataset,
    pub(super) eval: PreferenceDataset,
    pub(super) pad_id: u32,
    pub(super) ref_cache: Option<Vec<RefCache>>,
    pub(super) eval_ref_cache: Option<Vec<RefCache>>,
    pub(super) state: TrainState,
    pub(super) window: MetricMeans,
    /// Settings changed on purpose at resumes (`--allow-change`), saved in checkpoints.
    pub(super) config_changes: Vec<ConfigChange>,
    /// The visiting order of the current epoch, `(epoch, order)`, computed once per epoch.
    pub(super) order: Option<(usize, Vec<usize>)>,
    /// Fingerprint of the training pairs, saved in checkpoints.
    pub(super) data_fingerprint: String,
    /// [`checkpoint::model_fingerprint`] of the start policy (and of a reference of its own).
    pub(super) model_fingerprint: String,
    /// Per-phase timing, when enabled ([`Trainer::profile_phases`]).
    pub(super) profile: Option<PhaseTimes>,
    /// This trainer's place in a data-parallel run (`Trainer::fit_data_parallel`); `None` on
    /// one device.
    #[cfg(feature = "collective")]
    pub(super) replica: Option<Replica>,
    /// The nodes of a run across several processes ([`Trainer::set_cluster`]).
    #[cfg(feature = "collective")]
    pub(super) cluster: Option<super::cluster::Cluster>,
}

pub(super) fn adamw(config: &RunConfig) -> AdamWConfig {
    let t = &config.train;
    AdamWConfig::new()
        .with_beta_1(t.adam_beta1 as f32)
        .with_beta_2(t.adam_beta2 as f32)
        .with_epsilon(t.adam_epsilon as f32)
        .with_weight_decay(t.weight_decay as f32)
}

/// An FNV-1a fingerprint of the tokenized pairs, to refuse resuming on other data.
/// Refuses pairs for an unpaired loss (KTO) and unpaired examples for a paired one.
fn check_data_kind(
    config: &RunConfig,
    data: &PreferenceDataset,
    split: &'static str,
) -> Result<(), TrainError> {
    let kinds = |unpaired: bool| match unpaired {
        true => "unpaired examples (prompt, completion, label)",
        false => "pairs (prompt, chosen, rejected)",
    };
    let wants = config.loss.is_unpaired();
    let has = data.unpaired.is_some();
    if wants == has {
        return Ok(());
    }
    Err(TrainError::DataKind {
        loss: config.loss.losses[0].kind.name(),
        split,
        expected: kinds(wants),
        found: kinds(has),
    })
}

fn fingerprint(data: &PreferenceDataset) -> String {
    checkpoint::fingerprint(
        data.pairs
            .iter()
            .flat_map(|p| [&p.prompt, &p.chosen, &p.rejected])
            .flat_map(|side| {
                std::iter::once(side.len() as u64).chain(side.iter().map(|&t| t as u64))
            })
            .chain(
                data.unpaired
                    .iter()
                    .flat_map(|u| u.labels.iter().map(|&l| 2 + l as u64)),
            ),
    )
}

impl<B: AutodiffBackend, M: AutodiffModule<B> + CausalLm<B>> Trainer<B, M>
where
    M::InnerModule: CausalLm<B::InnerBackend>,
{
    /// Sets up a run: the frozen reference (`reference`, or a copy of the policy; for a policy
    /// with LoRA adapters, the policy with them off, sharing its frozen weights), the GANPO
    /// discriminators (seeded with `train.seed`), both optimizers, and, with
    /// `train.precompute_ref_logps` / `train.cache_ref_latents`, the reference's log-probs (and
    /// latents) of both splits, after which a reference that nothing else needs is dropped.
    pub fn new(
        config: RunConfig,
        policy: M,
        reference: Option<M::InnerModule>,
        train: PreferenceDataset,
        eval: PreferenceDataset,
        pad_id: u32,
        device: B::Device,
    ) -> Result<Self, TrainError> {
        if train.is_empty() {
            return Err(TrainError::NoData);
        }
        check_data_kind(&config, &train, "train")?;
        if !eval.is_empty() {
            check_data_kind(&config, &eval, "eval")?;
        }
        B::seed(&device, config.train.seed);
        // What a checkpoint does not restore, before anything casts or trains it: the start
        // policy (the reference's copy) or, with LoRA, its frozen base; and a reference of its own.
        let frozen_only = config.uses_lora();
        let model_fingerprint = match &reference {
            Some(r) => format!(
                "{}-{}",
                checkpoint::model_fingerprint(&policy, frozen_only),
                checkpoint::model_fingerprint(r, false)
            ),
            None => checkpoint::model_fingerprint(&policy, frozen_only),
        };
        let compute = config.train.compute_dtype.cast_to();
        // A LoRA policy's frozen base is held in the compute dtype: no f32 master, no per-step
        // copy (a model without adapters has nothing frozen, and is unchanged).
        let policy = match compute {
            Some(dtype) if config.uses_lora() => cast_frozen(policy, dtype),
            _ => policy,
        };
        // Untracked, and with any adapters off: the start model, sharing the policy's tensors.
        let mut start = policy.valid();
        let lora = start.set_adapters_enabled(false) > 0;
        if config.uses_lora() && !lora {
            return Err(TrainError::LoraNotAttached);
        }
        let stacked = start.layer_stack().is_some() && policy.layer_stack().is_some();
        if config.train.gradient_checkpointing && !stacked {
            return Err(TrainError::NotALayerStack {
                key: "train.gradient_checkpointing",
                fix: "set it to false",
            });
        }
        if config.train.logprob_chunk_rows.is_some() && !stacked {
            return Err(TrainError::NotALayerStack {
                key: "train.logprob_chunk_rows",
                fix: "leave it out",
            });
        }
        let reference = match reference {
            Some(_) if lora => return Err(TrainError::LoraWithReference),
            Some(r) => r,
            None => start,
        };
        let reference = match compute {
            Some(dtype) => cast_module(reference, dtype),
            None => reference,
        };
        if config.train.sync_ref_model
            && let Some(why) = ref_sync::shape_mismatch(&reference, &policy.valid())
        {
            return Err(TrainError::SyncShapes(why));
        }
        let ganpo = config
            .ganpo
            .as_ref()
            .map(|g| {
                let ganpo = g.init::<B>(policy.hidden_size(), &device);
                match &g.init_from {
                    Some(dir) => crate::official::load_official_checkpoints(ganpo, dir),
                    None => Ok(ganpo),
                }
            })
            .transpose()?;
        let data_fingerprint = fingerprint(&train);
        let mut trainer = Self {
            policy_optim: adamw(&config).init(),
            ganpo_optim: adamw(&config).init(),
            config,
            device,
            policy,
            reference: Some(reference),
            lora,
            ganpo,
            train,
            eval,
            pad_id,
            ref_cache: None,
            eval_ref_cache: None,
            state: TrainState::default(),
            window: MetricMeans::default(),
            config_changes: Vec::new(),
            order: None,
            data_fingerprint,
            model_fingerprint,
            profile: None,
            #[cfg(feature = "collective")]
            replica: None,
            #[cfg(feature = "collective")]
            cluster: None,
        };
        let t = &trainer.config.train;
        let cache_latents = t.cache_ref_latents && trainer.ganpo.is_some();
        if t.precompute_ref_logps || cache_latents {
            let reference = trainer.reference.as_ref().expect("reference present");
            let truncation = trainer.config.data.truncation();
            let run = |data: &PreferenceDataset| {
                precompute(
                    reference,
                    data,
                    &truncation,
                    pad_id,
                    t.eval_batch_size,
                    cache_latents,
                    trainer.scoring(),
                    &trainer.device,
                )
            };
            let (train_cache, eval_cache) = (run(&trainer.train)?, run(&trainer.eval)?);
            trainer.ref_cache = Some(train_cache);
            trainer.eval_ref_cache = Some(eval_cache);
            if trainer.ganpo.is_none() || cache_latents {
                trainer.reference = None;
            }
        }
        Ok(trainer)
    }

    /// The run's configuration.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The current policy.
    pub fn policy(&self) -> &M {
        &self.policy
    }

    /// The GANPO module, when the run has one.
    pub fn ganpo(&self) -> Option<&Ganpo<B>> {
        self.ganpo.as_ref()
    }

    /// Progress counters.
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// Whether the policy trains LoRA adapters (its reference: itself with them off).
    pub fn uses_lora(&self) -> bool {
        self.lora
    }

    /// The bytes the model weights hold: the policy's (f32 masters; a LoRA policy's frozen base in
    /// the compute dtype) and the reference's when it is a copy (not a LoRA policy's base).
    pub fn weight_bytes(&self) -> usize {
        let reference = match (&self.reference, self.lora) {
            (Some(r), false) => super::param_bytes(r),
            _ => 0,
        };
        super::param_bytes(&self.policy) + reference
    }

    /// Whether the frozen reference model is held in memory.
    pub fn holds_reference(&self) -> bool {
        self.reference.is_some()
    }

    fn micro_batches_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.config.train.batch_size)
    }

    fn steps_per_epoch(&self) -> usize {
        self.micro_batches_per_epoch()
            .div_ceil(self.config.train.grad_accum)
    }

    /// How the policy's and the reference's passes score completions: LD-DPO's weights and
    /// WPO's terms (`loss`), the LM head's chunks (`train.logprob_chunk_rows`).
    pub(super) fn scoring(&self) -> Scoring {
        Scoring::new(&self.config.loss, self.config.train.logprob_chunk_rows)
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self) -> usize {
        let t = &self.config.train;
        t.max_steps
            .unwrap_or_else(|| t.epochs * self.steps_per_epoch())
    }

    /// The micro-batches (pair indices) of the next optimizer step, advancing the data position.
    pub(super) fn next_micro_batches(&mut self) -> Vec<Vec<usize>> {
        let t = &self.config.train;
        let d = &self.config.data;
        let per_epoch = self.micro_batches_per_epoch();
        let epoch = self.state.epoch;
        if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let order = epoch_order(
                &self.train.lengths(),
                t.batch_size,
                t.seed,
                epoch as u64,
                d.shuffle,
                d.group_by_length,
            );
            self.order = Some((epoch, order));
        }
        let order = &self.order.as_ref().expect("set above").1;
        let start = self.state.batch_in_epoch;
        let end = (start + t.grad_accum).min(per_epoch);
        let batches = (start..end)
            .map(|b| {
                let lo = b * t.batch_size;
                order[lo..(lo + t.batch_size).min(order.len())].to_vec()
            })
            .collect();
        self.state.batch_in_epoch = end;
        if end == per_epoch {
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
        }
        batches
    }

    /// Starts (or stops) accumulating per-phase wall time of the following steps; each phase
    /// boundary then waits for the device.
    pub fn profile_phases(&mut self, on: bool) {
        self.profile = on.then(PhaseTimes::default);
    }

    /// The accumulated per-phase times, when profiling.
    pub fn phase_times(&self) -> Option<&PhaseTimes> {
        self.profile.as_ref()
    }

    pub(super) fn lap(&mut self, phase: &str) {
        if let Some(p) = &mut self.profile {
            p.lap::<B>(phase, &self.device);
        }
    }

    /// TRL's evaluation metrics (with the `eval_` prefix) on the held-out split; empty without one.
    pub fn evaluate(&self) -> Result<Vec<(String, f64)>, TrainError> {
        if self.eval.is_empty() {
            return Ok(Vec::new());
        }
        let c = &self.config;
        let settings = EvalSettings {
            loss: c.loss.clone(),
            pooling: c.ganpo.as_ref().map(|g| g.pooling).unwrap_or_default(),
            truncation: c.data.truncation(),
            pad_id: self.pad_id,
            pad_to_multiple_of: c.data.pad_to_multiple_of,
            batch_size: c.train.eval_batch_size,
            logprob_chunk_rows: c.train.logprob_chunk_rows,
        };
        let policy = match c.train.compute_dtype.cast_to() {
            Some(dtype) => cast_module(self.policy.valid(), dtype),
            None => self.policy.valid(),
        };
        let ganpo = self.ganpo.as_ref().map(|g| g.valid());
        let metrics = evaluate(
            &policy,
            self.reference.as_ref(),
            ganpo.as_ref(),
            self.eval_ref_cache.as_deref(),
            &self.eval,
            &settings,
            &self.device,
        )?;
        Ok(metrics
            .into_iter()
            .map(|(k, v)| (format!("eval_{k}"), v))
            .collect())
    }

    /// Trains until `total_steps()`, logging every `logging_steps`, evaluating every
    /// `eval_steps` and at the end, checkpointing every `save_steps` and at the end;
    /// `on_log` sees every log entry (the caller writes `metrics.jsonl` or a progress bar).
    pub fn fit(&mut self, mut on_log: impl FnMut(&LogEntry)) -> Result<(), TrainError> {
        let total = self.total_steps();
        let out = self.config.train.output_dir.clone();
        std::fs::create_dir_all(&out).map_err(|source| TrainError::Io {
            path: out.clone(),
            source,
        })?;
        checkpoint::remove_partial(&out);
        let epoch_len = self.steps_per_epoch().max(1) as f64;
        while self.state.step < total {
            self.step()?;
            let step = self.state.step;
            let t = &self.config.train;
            let epoch = step as f64 / epoch_len;
            if step.is_multiple_of(t.logging_steps) || step == total {
                on_log(&LogEntry {
                    step,
                    epoch,
                    split: "train",
                    metrics: self.window.means(),
                });
                self.window.clear();
            }
            if t.eval_steps.is_some_and(|e| step.is_multiple_of(e)) || step == total {
                let metrics = self.evaluate()?;
                if !metrics.is_empty() {
                    on_log(&LogEntry {
                        step,
                        epoch,
                        split: "eval",
                        metrics,
                    });
                }
            }
            let t = &self.config.train;
            if t.save_steps.is_some_and(|s| step.is_multiple_of(s)) || step == total {
                self.save_checkpoint()?;
            }
        }
        Ok(())
    }

    /// Writes `OUTPUT/checkpoint-STEP` atomically (see [`checkpoint::save_atomically`]).
    pub fn save_checkpoint(&self) -> Result<PathBuf, TrainError> {
        let mut meta = CheckpointMeta {
            format: checkpoint::FORMAT,
            state: self.state.clone(),
            config: self.config.clone(),
            data_fingerprint: self.data_fingerprint.clone(),
            train_pairs: self.train.len(),
            model_fingerprint: Some(self.model_fingerprint.clone()),
            checksums: Default::default(),
            metrics_window: self.window.clone(),
            config_changes: self.config_changes.clone(),
        };
        let t = &self.config.train;
        Ok(checkpoint::save_atomically(
            &t.output_dir,
            self.state.step,
            t.save_total_limit,
            |dir| {
                let fail = |what: &str, message: String| CheckpointError::Io {
                    path: dir.join(what),
                    message,
                };
                let rec = checkpoint::recorder_message;
                if self.lora {
                    let path = dir.join(checkpoint::ADAPTERS);
                    ganpo_models::lora::save_weights(&self.policy, &path)
                        .map_err(|e| fail(checkpoint::ADAPTERS, e.to_string()))?;
                } else {
                    self.policy
                        .clone()
                        .save_file(dir.join(checkpoint::POLICY), &Recs::new())
                        .map_err(|e| fail(checkpoint::POLICY, rec(&e)))?;
                }
                OptimRecs::new()
                    .record(
                        self.policy_optim.to_record(),
                        dir.join(checkpoint::POLICY_OPTIM),
                    )
                    .map_err(|e| fail(checkpoint::POLICY_OPTIM, rec(&e)))?;
                if let Some(r) = self.reference.as_ref().filter(|_| t.sync_ref_model) {
                    r.clone()
                        .save_file(dir.join(checkpoint::REFERENCE), &Recs::new())
                        .map_err(|e| fail(checkpoint::REFERENCE, rec(&e)))?;
                }
                if let Some(g) = &self.ganpo {
                    g.clone()
                        .save_file(dir.join(checkpoint::GANPO), &Recs::new())
                        .map_err(|e| fail(checkpoint::GANPO, rec(&e)))?;
                    OptimRecs::new()
                        .record(
                            self.ganpo_optim.to_record(),
                            dir.join(checkpoint::GANPO_OPTIM),
                        )
                        .map_err(|e| fail(checkpoint::GANPO_OPTIM, rec(&e)))?;
                }
                meta.checksums = checkpoint::checksums(dir)?;
                let json = serde_json::to_string_pretty(&meta).expect("meta serializes");
                let path = dir.join(checkpoint::META);
                let io = |e: std::io::Error| fail(checkpoint::META, checkpoint::io_message(&e));
                let mut f = std::fs::File::create(&path).map_err(io)?;
                f.write_all(json.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io)?;
                Ok(())
            },
        )?)
    }

    /// Loads the checkpoint at `dir` into this run: weights, discriminators, optimizer states,
    /// progress and the metrics gathered since the last log line. Refuses a checkpoint of
    /// another configuration (naming the keys that differ), other training data or start model,
    /// and an incomplete or damaged one (naming the file).
    pub fn resume(&mut self, dir: &Path) -> Result<(), TrainError> {
        self.resume_allowing(dir, &[])
    }

    /// [`Trainer::resume`], accepting changes of the settings `allowed` names (dotted keys such as
    /// `train.lr`, or tables such as `loss`): to go on from a checkpoint with a lower learning
    /// rate after a divergence, say. Each change is logged and recorded in the checkpoints
    /// written from then on (`config_changes` in `trainer_state.json`); every other change is
    /// still refused.
    pub fn resume_allowing(&mut self, dir: &Path, allowed: &[String]) -> Result<(), TrainError> {
        let meta = checkpoint::read_meta(dir)?;
        let mismatch = |message: String| CheckpointError::Mismatch {
            path: dir.to_path_buf(),
            message,
        };
        if let Some(key) = allowed.iter().find(|k| {
            !checkpoint::has_setting(&meta.config, k) && !checkpoint::has_setting(&self.config, k)
        }) {
            return Err(TrainError::UnknownAllowedChange { key: key.clone() });
        }
        let (accepted, refused): (Vec<ConfigChange>, Vec<ConfigChange>) =
            checkpoint::config_differences(&meta.config, &self.config, meta.state.step)
                .into_iter()
                .partition(|c| allowed.iter().any(|a| checkpoint::allows(a, &c.key)));
        if !refused.is_empty() {
            let keys: Vec<String> = refused.iter().map(|c| c.to_string()).collect();
            return Err(mismatch(format!(
                "the configuration differs in: {} (to change a setting on purpose, resume with \
                 --allow-change KEY)",
                keys.join(", ")
            ))
            .into());
        }
        if meta.data_fingerprint != self.data_fingerprint || meta.train_pairs != self.train.len() {
            return Err(mismatch(format!(
                "the training data differs ({} pairs, fingerprint {} in the checkpoint; {} pairs, \
                 fingerprint {} now)",
                meta.train_pairs,
                meta.data_fingerprint,
                self.train.len(),
                self.data_fingerprint
            ))
            .into());
        }
        if let Some(recorded) = meta
            .model_fingerprint
            .as_ref()
            .filter(|f| **f != self.model_fingerprint)
        {
            let c = &self.config.model;
            let reference = c
                .reference
                .as_ref()
                .map(|r| format!(" or model.reference ({})", r.display()))
                .unwrap_or_default();
            return Err(mismatch(format!(
                "the start model differs from the one this run started from (fingerprint {} in \
                 the checkpoint, {} now): the weights at model.path ({}){reference} were \
                 replaced",
                recorded,
                self.model_fingerprint,
                c.path.display(),
            ))
            .into());
        }
        checkpoint::verify_checksums(dir, &meta)?;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| CheckpointError::Corrupt {
            path: dir.to_path_buf(),
            message: format!("{what}: {e}"),
        };
        let rec = |e: &burn::record::RecorderError| checkpoint::recorder_message(e);
        if self.lora {
            let path = dir.join(checkpoint::ADAPTERS);
            if !path.is_file() {
                return Err(corrupt(checkpoint::ADAPTERS, &"missing").into());
            }
            ganpo_models::lora::load_weights(&mut self.policy, &path)
                .map_err(|e| corrupt(checkpoint::ADAPTERS, &e))?;
        } else {
            self.policy = self
                .policy
                .clone()
                .load_file(dir.join(checkpoint::POLICY), &Recs::new(), &self.device)
                .map_err(|e| corrupt(checkpoint::POLICY, &rec(&e)))?;
        }
        let record = OptimRecs::new()
            .load(dir.join(checkpoint::POLICY_OPTIM), &self.device)
            .map_err(|e| corrupt(checkpoint::POLICY_OPTIM, &rec(&e)))?;
        self.policy_optim = adamw(&self.config).init().load_record(record);
        if let Some(r) = self.reference.take() {
            self.reference = Some(match self.config.train.sync_ref_model {
                true => r
                    .load_file(dir.join(checkpoint::REFERENCE), &Recs::new(), &self.device)
                    .map_err(|e| corrupt(checkpoint::REFERENCE, &rec(&e)))?,
                false => r,
            });
        }
        if let Some(g) = self.ganpo.take() {
            self.ganpo = Some(
                g.load_file(dir.join(checkpoint::GANPO), &Recs::new(), &self.device)
                    .map_err(|e| corrupt(checkpoint::GANPO, &rec(&e)))?,
            );
            let record = OptimRecs::new()
                .load(dir.join(checkpoint::GANPO_OPTIM), &self.device)
                .map_err(|e| corrupt(checkpoint::GANPO_OPTIM, &rec(&e)))?;
            self.ganpo_optim = adamw(&self.config).init().load_record(record);
        }
        for change in &accepted {
            tracing::warn!(
                "resuming {} at step {} with a setting changed on purpose (--allow-change): {change}",
                dir.display(),
                meta.state.step
            );
        }
        self.config_changes = meta.config_changes;
        self.config_changes.extend(accepted);
        self.window = meta.metrics_window;
        self.state = meta.state;
        Ok(())
    }

    /// Settings changed on purpose at resumes of this run, oldest first.
    pub fn config_changes(&self) -> &[ConfigChange] {
        &self.config_changes
    }
}
