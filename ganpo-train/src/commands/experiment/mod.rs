//! `ganpo experiment run`: the IMDb evidence experiment end to end, resumable.
//!
//! Stages, each an ordinary ganpo command on files under `--out`, skipped when its output is
//! already there (so an interrupted run resumes where it stopped):
//! 1. `data/`: IMDb split into train side, validation and test reviews; the reward model's
//!    training and test texts; prompts (review prefixes) for pairs, validation, test, and Rotten
//!    Tomatoes (distribution shift).
//! 2. `reward-model/`: a small LM trained from random weights on the IMDb labels
//!    (`ganpo reward train`), its accuracy on held-out test reviews in `test_results.json`.
//! 3. `pairs/`: samples of the policy on the training prompts, scored by the reward model, best
//!    vs worst per prompt, once per label-noise level.
//! 4. `runs/`: the sweep (clean pairs, first seed, every beta and adversarial weight) evaluated on
//!    validation prompts; per method the best setting is then trained for every seed and noise
//!    level. `evals/` holds each policy's rewards (test and shifted prompts, every temperature)
//!    and sampled KL to the reference; the trained weights are deleted once evaluated.
//! 5. `results.json`, `results.md`, `plots/`.

mod report;
mod stages;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendJob, BackendKind, run_on};
use ganpo_train::experiment::ExperimentConfig;
use ganpo_train::io::{write_atomic, write_json};
use serde_json::{Value, json};

use report::{Results, markdown, plots, summarize};
use stages::{RunSpec, choose, data_stage, evaluated, pairs_stage, reward_stage, sweep_runs};

/// `ganpo experiment` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Run (or resume) an experiment file end to end.
    Run(Args),
}

/// Options of `ganpo experiment run`.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// The experiment file (`configs/experiments/imdb.toml`).
    pub config: PathBuf,
    /// Apply the file's `[quick]` overrides (a smaller run).
    #[arg(long)]
    pub quick: bool,
    /// Output directory; an existing one is resumed if it holds the same experiment.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compute backend: cpu, wgpu or cuda (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

/// Generated sequences per batch.
const GENERATE_ROWS: usize = 64;
/// Sequences per batch of log-prob and reward passes.
const SCORE_ROWS: usize = 32;

/// Wall time of each stage, appended to `stages.json` as stages finish.
struct Clock {
    path: PathBuf,
    stages: Vec<(String, f64)>,
    last: Instant,
}

impl Clock {
    fn new(out: &Path) -> Self {
        let path = out.join("stages.json");
        let stages = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Self {
            path,
            stages,
            last: Instant::now(),
        }
    }

    fn done(&mut self, stage: &str) -> Result<()> {
        let s = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        tracing::info!("experiment stage `{stage}` done in {s:.0} s");
        self.stages.push((stage.to_string(), s));
        write_json(&self.path, &self.stages)?;
        Ok(())
    }
}

/// Writes the resolved configuration, or checks that an existing output directory holds the
/// same one (naming the keys that differ).
fn prepare(out: &Path, config: &ExperimentConfig, quick: bool) -> Result<()> {
    let resolved = json!({"quick": quick, "config": config});
    let path = out.join("experiment.json");
    if path.is_file() {
        let old: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut differ = Vec::new();
        diff_keys("", &old, &resolved, &mut differ);
        if !differ.is_empty() {
            bail!(
                "{} holds another experiment (differing: {}); choose another --out",
                out.display(),
                differ.join(", ")
            );
        }
        tracing::info!("resuming the experiment in {}", out.display());
        return Ok(());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_json(&path, &resolved)?;
    Ok(())
}

/// Dotted keys whose values differ between `a` and `b`.
fn diff_keys(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                diff_keys(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// The whole experiment; returns `results.json`'s content.
fn experiment<B: AutodiffBackend>(args: &Args, device: B::Device) -> Result<Value> {
    let c = ExperimentConfig::load(&args.config, args.quick)?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(if args.quick {
            "runs/imdb-quick"
        } else {
            "runs/imdb"
        })
    });
    prepare(&out, &c, args.quick)?;
    let mut clock = Clock::new(&out);
    data_stage(&out, &c)?;
    clock.done("data")?;
    let reward_model = reward_stage::<B>(&out, &c, &device)?;
    clock.done("reward model")?;
    pairs_stage::<B::InnerBackend>(&out, &c, &device)?;
    clock.done("pairs")?;
    // Validation prompts serve only to choose among several settings of a method.
    let candidates = sweep_runs(&c);
    let choosing = |method: &str| candidates.iter().filter(|r| r.method == method).count() > 1;
    let with_validation = ["validation", "test", "shift"];
    let held_out = ["test", "shift"];
    let sets_for = |method: &str| -> &[&str] {
        if choosing(method) {
            &with_validation
        } else {
            &held_out
        }
    };
    let reference_sets = if c.train.methods.iter().any(|m| choosing(m)) {
        &with_validation[..]
    } else {
        &held_out[..]
    };
    let reference = evaluated::<B>(&out, &c, None, reference_sets, &device)?;
    clock.done("reference")?;
    let mut sweep = Vec::new();
    for run in candidates.iter().cloned() {
        let e = evaluated::<B>(&out, &c, Some(&run), sets_for(&run.method), &device)?;
        sweep.push((run, e));
    }
    clock.done("sweep")?;
    let chosen = choose(&c, &sweep);
    let mut runs = Vec::new();
    for best in &chosen {
        for &label_noise in &c.pairs.label_noise {
            for &seed in &c.train.seeds {
                let run = RunSpec {
                    label_noise,
                    seed,
                    ..best.clone()
                };
                let e = match sweep.iter().find(|(r, _)| *r == run) {
                    Some((_, e)) => e.clone(),
                    None => evaluated::<B>(&out, &c, Some(&run), &held_out, &device)?,
                };
                runs.push((run, e));
            }
        }
    }
    clock.done("runs")?;
    let (summary, comparisons) = summarize(&c, &runs, &reference);
    let results = Results {
        reward_model,
        reference,
        sweep,
        chosen,
        runs,
        summary,
        comparisons,
        // Summed over stages, so a resumed run counts the time of every session.
        total_seconds: clock.stages.iter().map(|(_, s)| s).sum::<f64>(),
        stage_seconds: clock.stages.clone(),
    };
    write_json(&out.join("results.json"), &results)?;
    write_atomic(&out.join("results.md"), markdown(&c, &results).as_bytes())?;
    plots(&out, &c, &results)?;
    Ok(serde_json::to_value(&results)?)
}

struct Job(Args);

impl BackendJob for Job {
    type Output = Result<Value>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        experiment::<B>(&self.0, device)
    }
}

/// Runs a `ganpo experiment` subcommand.
pub fn run(command: Command) -> Result<()> {
    let Command::Run(args) = command;
    let kind: BackendKind = args.backend.parse()?;
    let results = run_on(kind, Job(args))??;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "reward_model": results["reward_model"],
            "summary": results["summary"],
            "total_seconds": results["total_seconds"],
        }))?
    );
    Ok(())
}
