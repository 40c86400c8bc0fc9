//! `ganpo train`: preference-train a model with the base loss and, when configured, GANPO.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendKind, MultiDeviceJob, run_on_devices};
use ganpo_models::export::{TokenizerFiles, export_hf};
use ganpo_models::lora::peft;
use ganpo_train::config::RunConfig;
use ganpo_train::data::split_indices;
use ganpo_train::train::checkpoint::{self, list_checkpoints, read_meta};
use ganpo_train::train::{Cluster, LogEntry, Trainer};

/// Options of `ganpo train`.
#[derive(clap::Args)]
pub struct Args {
    /// The run configuration (TOML); every key is documented in docs/configuration.md.
    #[arg(
        long,
        required_unless_present = "trl_config",
        conflicts_with = "trl_config"
    )]
    pub config: Option<PathBuf>,
    /// A TRL recipe instead: the YAML (or JSON) config `trl dpo --config` takes, with TRL's
    /// defaults for what it leaves out; the run.toml it maps to is printed first. Every TRL key
    /// ganpo does not implement is refused by name (`ganpo trl dpo` takes TRL's flags too).
    #[arg(long, value_name = "FILE")]
    pub trl_config: Option<PathBuf>,
    /// Print the resolved run configuration (run.toml) and stop before loading anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Override one key, for example `--set train.lr=5e-7` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from a checkpoint directory, or from the newest checkpoint of a run directory.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// With --resume: accept a changed setting (a dotted key such as `train.lr`, or a table such
    /// as `loss`; repeatable or comma-separated), recorded in the checkpoints' trainer_state.json
    /// and in the log. Every other change is still refused.
    #[arg(
        long = "allow-change",
        value_name = "KEY",
        value_delimiter = ',',
        requires = "resume"
    )]
    pub allow_change: Vec<String>,
    /// Drop and count malformed records instead of stopping (same as `data.skip_invalid`).
    #[arg(long)]
    pub skip_invalid: bool,
    /// Compute backend, overriding `train.backend`.
    #[arg(long)]
    pub backend: Option<String>,
    /// Device index on that backend (CUDA ordinal, wgpu discrete GPU), overriding `train.device`.
    #[arg(long, conflicts_with = "devices")]
    pub device: Option<usize>,
    /// Data-parallel training on these devices of the backend, e.g. `--devices 0,1,2,3`: one
    /// replica each, every batch split between them, gradients averaged before each step
    /// (overrides `train.devices`; docs/distributed.md). On the cpu backend the indices count
    /// replicas sharing the CPU.
    #[arg(long, value_delimiter = ',', value_name = "INDICES")]
    pub devices: Vec<usize>,
    #[command(flatten)]
    pub cluster: super::cluster::ClusterArgs,
}

const METRICS: &str = "metrics.jsonl";

/// The checkpoint `--resume PATH` names.
fn resume_dir(path: &Path) -> Result<PathBuf> {
    let complete = |dir: &Path| dir.join(checkpoint::META).is_file();
    if complete(path) {
        return Ok(path.to_path_buf());
    }
    let is_checkpoint = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("checkpoint-"));
    let (dir, named) = match is_checkpoint {
        true => (
            path.parent().unwrap_or(Path::new(".")),
            Some(path.to_path_buf()),
        ),
        false => match list_checkpoints(path).pop() {
            Some((_, latest)) if complete(&latest) => return Ok(latest),
            latest => (path, latest.map(|(_, p)| p)),
        },
    };
    let others: Vec<String> = list_checkpoints(dir)
        .into_iter()
        .filter(|(_, p)| complete(p))
        .map(|(_, p)| p.display().to_string())
        .collect();
    let choices = match others.is_empty() {
        true => "there is no complete checkpoint to resume from".to_string(),
        false => format!("complete ones: {}", others.join(", ")),
    };
    match named {
        Some(c) => bail!(
            "{}: an incomplete checkpoint (no {}: its writing or deletion was interrupted); {choices}",
            c.display(),
            checkpoint::META
        ),
        None => bail!(
            "{}: no checkpoint-STEP directory to resume from",
            path.display()
        ),
    }
}

/// Keeps the lines of `metrics.jsonl` up to `step` (a resumed run rewrites what follows).
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    ganpo_train::io::write_atomic(path, kept.as_bytes())?;
    Ok(())
}

struct Job {
    config: RunConfig,
    resume: Option<PathBuf>,
    allow_change: Vec<String>,
    cluster: Option<Cluster>,
}

impl MultiDeviceJob for Job {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<()> {
        train_run::<B>(
            self.config,
            self.resume.as_deref(),
            &self.allow_change,
            &devices,
            self.cluster.as_ref(),
        )
        .map(|_| ())
    }
}

/// What `ganpo train` does once the configuration is loaded: checks, trains (resuming from
/// `resume`, accepting changes of the settings `allow_change` names), logs metrics and
/// checkpoints, and exports the final policy (an HF directory, or a PEFT adapter directory for a
/// LoRA run), whose directory it returns. With several `devices` the run is data-parallel
/// (`Trainer::fit_data_parallel`); the models are loaded on the first. As one node of a
/// `cluster` other than node 0 it trains with the others and writes nothing.
pub fn train_run<B: AutodiffBackend>(
    config: RunConfig,
    resume: Option<&Path>,
    allow_change: &[String],
    devices: &[B::Device],
    cluster: Option<&Cluster>,
) -> Result<PathBuf> {
    let device = devices.first().context("no device to train on")?.clone();
    let out = config.train.output_dir.clone();
    let writer = cluster.is_none_or(Cluster::writes);
    // One writer per run directory: refused now if another process holds it, and held from the
    // first file written to the end.
    if writer {
        ganpo_train::io::RunLock::check_free(&out)?;
    }
    let resume = resume.map(resume_dir).transpose()?;
    if writer && resume.is_none() && !list_checkpoints(&out).is_empty() {
        bail!(
            "{} already holds checkpoints: pass --resume {} to continue that run, or choose \
             another train.output_dir",
            out.display(),
            out.display()
        );
    }
    if let Some(dir) = &resume {
        read_meta(dir)?;
    }
    let (mut policy, tokenizer) = super::load_with_tokenizer::<B>(&config.model.path, &device)?;
    let (model, lora) = super::with_adapters(policy.model, &config)?;
    policy.model = model;
    let reference = config
        .model
        .reference
        .as_deref()
        .map(|p| {
            super::load_reference::<B::InnerBackend>(
                p,
                policy.config.vocab_size(),
                "model.reference",
                &device,
            )
        })
        .transpose()?;
    let d = &config.data;
    let truncation = d.truncation();
    let (loss, kl_block) = (&config.loss, config.train.batch_size);
    let load = |files| {
        super::data::load_dataset(
            files,
            &tokenizer,
            &truncation,
            d.skip_invalid,
            loss,
            kl_block,
        )
    };
    let all = load(&d.train)?;
    let (train, eval) = if !d.eval.is_empty() {
        let eval = load(&d.eval)?;
        (all, eval)
    } else {
        let (t, e) = split_indices(all.len(), d.eval_fraction, config.train.seed);
        (all.subset(&t), all.subset(&e))
    };
    tracing::info!(
        "{} training pairs, {} held-out pairs; model {} ({} parameters, {} trained)",
        train.len(),
        eval.len(),
        config.model.path.display(),
        burn::module::Module::num_params(&policy.model),
        ganpo_train::train::trainable_params(&policy.model)
    );
    let model_config = policy.config.clone();
    let mut trainer = Trainer::new(
        config.clone(),
        policy.model,
        reference,
        train,
        eval,
        super::data::pad_id(&tokenizer),
        device,
    )?;
    // Nothing is written before the data, the models and the checkpoint to resume are checked.
    if let Some(dir) = &resume {
        trainer.resume_allowing(dir, allow_change)?;
    }
    if let Some(c) = cluster {
        trainer.set_cluster(c.clone());
        tracing::info!(
            "node {} of {}: data-parallel on {} nodes x {} devices {devices:?}, coordinator {}",
            c.node_rank,
            c.nodes,
            c.nodes,
            devices.len(),
            c.coordinator
        );
        if !writer {
            trainer.fit_data_parallel(devices, |_| {})?;
            tracing::info!("node {}: done; node 0 writes the run", c.node_rank);
            return Ok(out.join("final"));
        }
    }
    let _lock = ganpo_train::io::RunLock::acquire(&out)?;
    let resolved = out.join("config.resolved.toml");
    std::fs::write(&resolved, toml::to_string_pretty(&config)?)
        .with_context(|| format!("writing {}", resolved.display()))?;
    let metrics_path = out.join(METRICS);
    if let Some(dir) = &resume {
        truncate_metrics(&metrics_path, trainer.state().step)?;
        for newer in checkpoint::remove_checkpoints_after(&out, trainer.state().step)? {
            tracing::warn!(
                "removed {}: it followed the checkpoint this run resumes from",
                newer.display()
            );
        }
        tracing::info!(
            "resumed from {} at step {}",
            dir.display(),
            trainer.state().step
        );
    } else {
        std::fs::write(&metrics_path, "")
            .with_context(|| format!("writing {}", metrics_path.display()))?;
    }
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("opening {}", metrics_path.display()))?;
    let mut events = if config.train.tensorboard {
        let dir = out.join("tensorboard");
        let mut w = crate::tensorboard::EventWriter::create(&dir)
            .with_context(|| format!("creating an event file in {}", dir.display()))?;
        if resume.is_some() {
            // The first step this process logs: TensorBoard drops the earlier files' events
            // from there on (what the interrupted process logged after the checkpoint).
            w.start_at(trainer.state().step + 1)
                .with_context(|| format!("writing {}", w.path().display()))?;
        }
        Some(w)
    } else {
        None
    };
    let total = trainer.total_steps() as u64;
    let label = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "train".into());
    let bar = super::progress_bar(total, &label);
    if let Some(bar) = &bar {
        bar.set_position(trainer.state().step as u64);
    }
    let mut write_error = None;
    if devices.len() > 1 && cluster.is_none() {
        tracing::info!("data-parallel on {} devices: {devices:?}", devices.len());
    }
    trainer.fit_data_parallel(devices, |entry: &LogEntry| {
        let mut line = serde_json::Map::new();
        line.insert("step".into(), entry.step.into());
        line.insert("epoch".into(), serde_json::json!(entry.epoch));
        line.insert("split".into(), entry.split.into());
        for (k, v) in &entry.metrics {
            line.insert(k.clone(), serde_json::json!(v));
        }
        if let Err(e) = writeln!(log, "{}", serde_json::Value::Object(line)) {
            write_error.get_or_insert((metrics_path.clone(), e));
        }
        if let Some(w) = &mut events {
            let mut scalars = entry.metrics.clone();
            if entry.split == "train" {
                scalars.push(("epoch".into(), entry.epoch));
            }
            if let Err(e) = w.scalars(entry.step, &scalars) {
                write_error.get_or_insert((w.path().to_path_buf(), e));
            }
        }
        let get = |k: &str| {
            let find = |k: &str| entry.metrics.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
            find(k).or_else(|| find(&format!("eval_{k}")))
        };
        let shown = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        // KTO has no pairwise accuracy; its KL estimate says more.
        let second = match get("kl") {
            Some(kl) => format!("kl {kl:.4}"),
            None => format!("acc {}", shown(get("rewards/accuracies"))),
        };
        let summary = format!(
            "loss {}  {second}  margin {}",
            shown(get("loss")),
            shown(get("rewards/margins")),
        );
        match &bar {
            Some(bar) => {
                bar.set_position(entry.step as u64);
                bar.set_message(summary);
            }
            None => tracing::info!("step {}/{total} [{}] {summary}", entry.step, entry.split),
        }
    })?;
    if let Some(bar) = bar {
        bar.finish();
    }
    if let Some((path, e)) = write_error {
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    let final_dir = out.join("final");
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)
            .with_context(|| format!("replacing {}", final_dir.display()))?;
    }
    let policy = burn::module::AutodiffModule::valid(trainer.policy());
    // A Hub id is its cached snapshot (already complete: the model was loaded from it).
    let source = super::model_path(&config.model.path)?;
    let files = if source.is_dir() {
        TokenizerFiles::Dir(&source)
    } else {
        TokenizerFiles::Tokenizer(&tokenizer)
    };
    match &lora {
        Some(lora) => {
            let base = config.model.path.to_string_lossy();
            peft::save_adapter(&policy, lora, &base, files, &final_dir)?
        }
        None => export_hf(&policy, &model_config, files, &final_dir)?,
    }
    // Transformer discriminators also as the official GANPO trainer lays them out.
    if let Some(g) = trainer.ganpo()
        && matches!(g.chosen, ganpo_core::Discriminator::Transformer(_))
    {
        let dir = final_dir.join("disc_ckpts");
        let discriminators = burn::module::AutodiffModule::valid(g);
        ganpo_train::official::save_official_checkpoints(&discriminators, &dir)
            .with_context(|| format!("writing {}", dir.display()))?;
    }
    tracing::info!(
        "wrote {} (metrics: {})",
        final_dir.display(),
        metrics_path.display()
    );
    Ok(final_dir)
}

/// Loads the configuration and runs the training on the chosen backend.
pub fn run(args: Args) -> Result<()> {
    // The flags are overrides like --set, applied before the configuration is checked.
    let mut sets = args.set.clone();
    if args.skip_invalid {
        sets.push("data.skip_invalid=true".into());
    }
    if let Some(b) = &args.backend {
        sets.push(format!("train.backend={b:?}"));
    }
    if let Some(d) = args.device {
        sets.push(format!("train.device={d}"));
    }
    if !args.devices.is_empty() {
        sets.push(format!("train.devices={:?}", args.devices));
    }
    let config = match (&args.config, &args.trl_config) {
        (Some(path), _) => RunConfig::load(path, &sets)?,
        (None, Some(path)) => {
            let recipe = crate::trl::Recipe::from_file(path)?;
            trl_run_config(&recipe, &sets, &path.display().to_string())?
        }
        (None, None) => bail!("give --config RUN.toml or --trl-config TRL.yaml"),
    };
    if args.dry_run {
        if args.trl_config.is_none() {
            println!("{}", toml::to_string(&config)?);
        }
        return Ok(());
    }
    let cluster = args.cluster.resolve()?;
    if let Some(c) = cluster.as_ref().filter(|c| c.writes()) {
        super::cluster::start_coordinator(c.coordinator_port())?;
    }
    run_config(config, args.resume, args.allow_change, cluster)
}

/// The run configuration of a TRL recipe (`origin` names it), with `--set` overrides; prints
/// it as run.toml on stdout, with the mapping's notes as comments.
pub fn trl_run_config(
    recipe: &crate::trl::Recipe,
    sets: &[String],
    origin: &str,
) -> Result<RunConfig> {
    let mapped = crate::trl::map(recipe).with_context(|| format!("reading {origin}"))?;
    let config = RunConfig::from_table_with_sets(mapped.table, sets, origin, Path::new("."))?;
    let mut out = format!(
        "# run.toml from the TRL recipe {origin} (TRL {}'s defaults for keys it leaves out)\n",
        crate::trl::known().0
    );
    for note in &mapped.notes {
        out.push_str(&format!("# note: {note}\n"));
    }
    out.push_str(&toml::to_string(&config)?);
    println!("{out}");
    Ok(config)
}

/// Trains `config` on the backend it names (resuming / allowing changes as asked), as one node
/// of `cluster` when it is given.
pub fn run_config(
    config: RunConfig,
    resume: Option<PathBuf>,
    allow_change: Vec<String>,
    cluster: Option<Cluster>,
) -> Result<()> {
    let kind: BackendKind = config.train.backend.parse()?;
    let t = &config.train;
    let indices = match (&t.devices, t.device) {
        (Some(devices), _) => devices.clone(),
        (None, device) => device.into_iter().collect(),
    };
    run_on_devices(
        kind,
        &indices,
        Job {
            config,
            resume,
            allow_change,
            cluster,
        },
    )?
}
