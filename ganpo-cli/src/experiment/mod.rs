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
//!
//! The experiment file ([`config`]: [`ExperimentConfig`] and its `--quick` overrides), the
//! IMDb / Rotten Tomatoes reviews and the prompts made from them ([`reviews`]), and means with
//! 95% confidence intervals over seeds ([`stats`]) live here too: the experiment is one module.

pub mod config;
mod report;
pub mod reviews;
mod stages;
pub mod stats;

pub use config::{ExperimentConfig, expand_assets};
pub use reviews::read_reviews;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendJob, BackendKind, run_on};
use ganpo_train::io::{write_atomic, write_json};
use serde_json::{Value, json};

use report::{Results, markdown, plots, summarize};
use stages::{
    RunSpec, choose, data_stage, eval_path, evaluated, pairs_stage, reward_stage, seeded_runs,
    sweep_runs,
};

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
    /// Runs trained and evaluated at once, each by its own `ganpo` process (results equal
    /// `--jobs 1`'s). Each job holds a policy, its reference and their optimizer state in memory,
    /// and gets `cores / jobs` CPU threads unless `MATMUL_NUM_THREADS` says otherwise.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
    /// One job of `--jobs`: train and evaluate this run (JSON) on `--sets`, then exit.
    #[arg(long, hide = true, requires = "sets")]
    pub run: Option<String>,
    /// The prompt sets the `--run` job evaluates on.
    #[arg(long, hide = true, value_delimiter = ',')]
    pub sets: Vec<String>,
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
    let resolved = without_quick_table(json!({"quick": quick, "config": config}));
    let path = out.join("experiment.json");
    if path.is_file() {
        let old: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("reading {}", path.display()))?;
        let old = without_quick_table(old);
        let mut differ = Vec::new();
        diff_keys("", &old, &resolved, &mut differ);
        if !differ.is_empty() && extends(&old, &resolved, &differ) {
            // Every cached run keeps its meaning (runs are named by method and seed, the sweep
            // uses the first seed): train what is new and report over all of it.
            tracing::info!(
                "extending the experiment in {} ({})",
                out.display(),
                differ.join(", ")
            );
            write_json(&path, &resolved)?;
            return Ok(());
        }
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

/// What an experiment's results depend on: its resolved settings without the `[quick]` table,
/// which `--quick` has already applied and a full run ignores (so editing the quick overrides
/// leaves a full run resumable). Also strips the table from `experiment.json` files that hold it.
fn without_quick_table(mut resolved: Value) -> Value {
    if let Some(config) = resolved.get_mut("config").and_then(Value::as_object_mut) {
        config.remove("quick");
    }
    resolved
}

/// Trains and evaluates `run` on `sets` in a child `ganpo experiment run --run ...` process
/// (nothing to do when its evaluation is cached); its log lines go to this process's stderr.
fn in_child(args: &Args, out: &Path, run: &RunSpec, sets: &[&str]) -> Result<()> {
    if eval_path(out, Some(run), sets).is_file() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating the ganpo binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["experiment", "run"]).arg(&args.config);
    if args.quick {
        cmd.arg("--quick");
    }
    cmd.arg("--out").arg(out);
    cmd.args(["--backend", &args.backend, "--sets", &sets.join(",")]);
    cmd.arg("--run").arg(serde_json::to_string(run)?);
    // The CPU backend's worker threads spin between operations: the jobs share the cores
    // rather than each taking all of them (an explicit MATMUL_NUM_THREADS is passed on as is).
    if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = (cores / usize::from(args.jobs)).max(1);
        cmd.env("MATMUL_NUM_THREADS", threads.to_string());
    }
    let status = cmd
        .status()
        .with_context(|| format!("starting the job for {}", run.name()))?;
    if !status.success() {
        bail!("the job for {} failed ({status})", run.name());
    }
    Ok(())
}

/// `f` of every item, in order, computed by up to `jobs` threads that take the next item as they
/// finish one. After an error no new item is started; the first failing item's error (in item
/// order) is returned once the running ones end.
fn in_parallel<T: Sync, R: Send>(
    jobs: usize,
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<R>>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                while !failed.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    failed.fetch_or(r.is_err(), Ordering::SeqCst);
                    results.lock().expect("no job panicked holding the lock")[i] = Some(r);
                }
            });
        }
    });
    let results = results
        .into_inner()
        .expect("no job panicked holding the lock");
    let mut out = Vec::with_capacity(items.len());
    for r in results {
        match r {
            Some(r) => out.push(r?),
            None => unreachable!("every item runs unless an earlier one failed"),
        }
    }
    Ok(out)
}

/// Whether `new` only extends `old`, the keys `differ` being all that differs: seeds, methods
/// or noisy methods appended to the lists, and settings `old` does not hold at all (keys added to
/// the experiment file since it was written, such as `train.official_ganpo`, whose defaults
/// change no earlier run).
fn extends(old: &Value, new: &Value, differ: &[String]) -> bool {
    let at = |v: &'_ Value, key: &str| key.split('.').fold(v, |v, k| &v[k]).clone();
    differ.iter().all(|key| {
        let (a, b) = (at(old, key), at(new, key));
        match key.as_str() {
            "config.train.seeds" | "config.train.methods" | "config.train.noisy_methods" => {
                match (a.as_array(), b.as_array()) {
                    (Some(a), Some(b)) => b.len() > a.len() && b.starts_with(a),
                    _ => false,
                }
            }
            _ => a.is_null(),
        }
    })
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
    if let Some(run) = &args.run {
        let run: RunSpec = serde_json::from_str(run).context("--run: a run as JSON")?;
        let sets: Vec<&str> = args.sets.iter().map(String::as_str).collect();
        evaluated::<B>(&out, &c, Some(&run), &sets, &device)?;
        return Ok(Value::Null);
    }
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
    let jobs = usize::from(args.jobs);
    // With several jobs, each run is trained and evaluated by a child process (the backends'
    // random number generators are per process), then its cached evaluation is read here.
    let run_eval = |run: &RunSpec, sets: &[&str]| {
        if jobs > 1 {
            in_child(args, &out, run, sets)?;
        }
        evaluated::<B>(&out, &c, Some(run), sets, &device)
    };
    let evals = in_parallel(jobs, &candidates, |run| {
        run_eval(run, sets_for(&run.method))
    })?;
    let sweep: Vec<_> = candidates.iter().cloned().zip(evals).collect();
    clock.done("sweep")?;
    let chosen = choose(&c, &sweep);
    let specs = seeded_runs(&c, &chosen);
    let evals = in_parallel(jobs, &specs, |run| {
        match sweep.iter().find(|(r, _)| r == run) {
            Some((_, e)) => Ok(e.clone()),
            None => run_eval(run, &held_out),
        }
    })?;
    let runs: Vec<_> = specs.into_iter().zip(evals).collect();
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
    let job = args.run.is_some();
    let results = run_on(kind, Job(args))??;
    if job {
        return Ok(());
    }
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

#[cfg(test)]
mod tests {
    use super::in_parallel;
    use anyhow::bail;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn in_parallel_keeps_item_order_and_runs_each_item_once() {
        let items: Vec<u64> = (0..20).collect();
        let calls = AtomicUsize::new(0);
        let out = in_parallel(3, &items, |&i| {
            calls.fetch_add(1, Ordering::SeqCst);
            // Later items finish first.
            std::thread::sleep(std::time::Duration::from_millis(20 - i));
            Ok(i * i)
        })
        .unwrap();
        assert_eq!(out, items.iter().map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(calls.load(Ordering::SeqCst), 20);
        assert!(in_parallel(4, &[] as &[u8], |_| Ok(())).unwrap().is_empty());
    }

    #[test]
    fn in_parallel_stops_at_an_error_and_reports_the_first() {
        let items: Vec<usize> = (0..10).collect();
        let calls = AtomicUsize::new(0);
        let err = in_parallel(1, &items, |&i| {
            calls.fetch_add(1, Ordering::SeqCst);
            if i >= 3 {
                bail!("item {i} failed");
            }
            Ok(i)
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "item 3 failed");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "nothing starts after a failure"
        );
        // With several jobs, the error of the first failing item in order wins.
        let err = in_parallel(4, &items, |&i| {
            if i == 2 || i == 3 {
                std::thread::sleep(std::time::Duration::from_millis(10 * (4 - i as u64)));
                bail!("item {i} failed");
            }
            Ok(i)
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "item 2 failed");
    }

    #[test]
    fn appended_seeds_methods_and_new_settings_extend_an_experiment() {
        use super::{diff_keys, extends};
        use serde_json::json;
        let old = json!({"config": {"train": {
            "seeds": [0, 1], "methods": ["dpo", "dpo+ganpo"], "noisy_methods": ["dpo"], "lr": 1e-4
        }}});
        let check = |new: serde_json::Value| {
            let mut differ = Vec::new();
            diff_keys("", &old, &new, &mut differ);
            (extends(&old, &new, &differ), differ)
        };
        let (ok, differ) = check(json!({"config": {"train": {
            "seeds": [0, 1, 2], "methods": ["dpo", "dpo+ganpo", "dpo+ganpo-official"],
            "noisy_methods": ["dpo", "dpo+ganpo-official"], "lr": 1e-4,
            "official_ganpo": {"pooling": "none"}, "official_disc_lr_ratio": 0.5
        }}}));
        assert!(ok, "{differ:?}");
        assert_eq!(differ.len(), 5);
        // Reordered or removed entries, a changed setting, a setting removed: another experiment.
        for other in [
            json!({"config": {"train": {
                "seeds": [1, 0], "methods": ["dpo", "dpo+ganpo"], "noisy_methods": ["dpo"], "lr": 1e-4
            }}}),
            json!({"config": {"train": {
                "seeds": [0, 1], "methods": ["dpo"], "noisy_methods": ["dpo"], "lr": 1e-4
            }}}),
            json!({"config": {"train": {
                "seeds": [0, 1, 2], "methods": ["dpo", "dpo+ganpo"], "noisy_methods": ["dpo"], "lr": 2e-4
            }}}),
            json!({"config": {"train": {
                "seeds": [0, 1], "methods": ["dpo", "dpo+ganpo"], "noisy_methods": null, "lr": 1e-4
            }}}),
        ] {
            let (ok, differ) = check(other);
            assert!(!ok, "{differ:?}");
        }
    }
}
