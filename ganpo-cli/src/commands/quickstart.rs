//! `ganpo quickstart`: the whole job on a task with an exact reward, in a few minutes on a CPU.
//!
//! Every stage is an ordinary command on ordinary files, and the quickstart writes them down in
//! `recipe.sh`: `ganpo task` (synthetic review language, untrained model), `ganpo sft`, `ganpo
//! sample` + `ganpo score` + `ganpo pairs` (pairs from the SFT model's samples, labelled by the
//! oracle with label noise), `ganpo train` once per method from the same SFT start and seed, then
//! `ganpo sample` + `ganpo score` (oracle reward at two temperatures) and `ganpo kl` (sampled KL
//! to the SFT model) per model; the held-out preference accuracy is the trainer's final eval.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendJob, BackendKind, run_on};
use ganpo_core::discriminator::{DiscriminatorConfig, MlpDiscriminatorConfig};
use ganpo_core::{GanpoConfig, LossKind, Pooling, PreferenceLoss};
use ganpo_models::Init;
use ganpo_train::config::{RunConfig, Scheduler};
use ganpo_train::io::{write_atomic, write_json, write_jsonl};
use ganpo_train::reward::Reward;
use ganpo_train::rollout::{
    MeanEstimate, PairSettings, PairStats, Sample, best_worst_pairs, sampled_kl,
};
use ganpo_train::task::{TaskFiles, TaskSpec, sentiment, write_task};
use serde::Serialize;

use super::kl::{sample_logps, unbiased};
use super::plot::{Point, draw, draw_points, read_series, register_font};
use super::sample::{Sampling, read_prompts, sample_model};

/// Options of `ganpo quickstart`.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Output directory (replaced if it holds an earlier quickstart; refused if it holds
    /// anything else).
    #[arg(long, default_value = "quickstart")]
    pub out: PathBuf,
    /// Seed of the task, the SFT and every training run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Probability that a training pair's labels are swapped.
    #[arg(long, default_value_t = 0.1)]
    pub label_noise: f64,
    /// Methods to train, from: dpo, dpo+ganpo, simpo, simpo+ganpo.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "dpo,dpo+ganpo,simpo,simpo+ganpo"
    )]
    pub methods: Vec<String>,
    /// SFT steps (32 reviews each).
    #[arg(long, default_value_t = 400)]
    pub sft_steps: usize,
    /// Preference-training steps per method (16 pairs each).
    #[arg(long, default_value_t = 96)]
    pub steps: usize,
    /// Peak learning rate of the preference training (warm-up 10%, cosine decay).
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// Reviews for SFT.
    #[arg(long, default_value_t = 4000)]
    pub sft_examples: usize,
    /// Prompts the training pairs are sampled from (4 samples each: best vs worst).
    #[arg(long, default_value_t = 512)]
    pub train_prompts: usize,
    /// Held-out prompts (evaluation pairs, rewards and KL).
    #[arg(long, default_value_t = 128)]
    pub eval_prompts: usize,
    /// Samples per held-out prompt and temperature for the reward and KL estimates.
    #[arg(long, default_value_t = 8)]
    pub eval_samples: usize,
    /// The higher sampling temperature at which rewards are also measured.
    #[arg(long, default_value_t = 1.5)]
    pub high_temperature: f64,
    /// Compute backend: cpu, wgpu or cuda (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

const MAX_NEW_TOKENS: usize = 32;
const PAIR_SAMPLES: usize = 4;
const BATCH_ROWS: usize = 256;

/// One method's training configuration: the same data, start, seed, steps and learning rate for
/// all; only the loss and the regularizer differ.
fn method_config(method: &str, args: &Args, root: &Path) -> Result<RunConfig> {
    let mut c = RunConfig::default();
    c.model.path = root.join("sft");
    c.data.train = vec![root.join("pairs/train.jsonl")];
    c.data.eval = vec![root.join("pairs/eval.jsonl")];
    c.data.max_length = 64;
    let t = &mut c.train;
    t.output_dir = root.join("runs").join(method.replace('+', "-"));
    t.seed = args.seed;
    t.max_steps = Some(args.steps);
    t.batch_size = 16;
    t.eval_batch_size = 64;
    t.lr = args.lr;
    t.scheduler = Scheduler::Cosine;
    t.warmup_ratio = 0.1;
    t.logging_steps = 4;
    t.eval_steps = Some((args.steps / 4).max(1));
    t.disc_lr_ratio = 5.0;
    let (base, ganpo) = match method.split_once('+') {
        Some((base, "ganpo")) => (base, true),
        None => (method, false),
        _ => bail!("unknown method `{method}`: expected dpo, dpo+ganpo, simpo or simpo+ganpo"),
    };
    c.loss = match base {
        "dpo" => PreferenceLoss {
            beta: 0.1,
            ..PreferenceLoss::default()
        },
        "simpo" => PreferenceLoss {
            beta: 2.0,
            simpo_gamma: 1.0,
            ..PreferenceLoss::single(LossKind::Simpo)
        },
        _ => bail!("unknown method `{method}`: expected dpo, dpo+ganpo, simpo or simpo+ganpo"),
    };
    // The cheaper `mlp` discriminator on the completion tokens, learning 5x faster than the
    // reference's 0.5: with the reference's transformer discriminator DPO + GANPO collapses on
    // some seeds at this scale (docs/quickstart.md has the comparison over six seeds).
    c.ganpo = ganpo.then(|| GanpoConfig {
        discriminator: DiscriminatorConfig::Mlp(MlpDiscriminatorConfig {
            hidden: 32,
            ..Default::default()
        }),
        pooling: Pooling::Completion,
        ..GanpoConfig::default()
    });
    // Without GANPO the reference is needed only for its log-probs: compute them once.
    c.train.precompute_ref_logps = !ganpo;
    Ok(c)
}

/// A model's evaluation.
#[derive(Clone, Debug, Serialize)]
struct Row {
    model: String,
    reward_t1: MeanEstimate,
    reward_high: MeanEstimate,
    kl: MeanEstimate,
    /// Fraction of the T=1 samples that are not reviews of the language (reward -1 whatever they
    /// say): how much fluency a method gave up.
    invalid_t1: f64,
    eval_accuracy: Option<f64>,
    eval_margin: Option<f64>,
    train_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    seed: u64,
    label_noise: f64,
    high_temperature: f64,
    task: TaskSpec,
    sft_steps: usize,
    steps: usize,
    train_pairs: PairStats,
    eval_pairs: PairStats,
    rows: Vec<Row>,
    stage_seconds: Vec<(String, f64)>,
    total_seconds: f64,
}

/// The eval block the trainer logged last: `(eval_rewards/accuracies, eval_rewards/margins)`.
fn final_eval(metrics: &Path) -> Result<(Option<f64>, Option<f64>)> {
    let acc = read_series(metrics, "rewards/accuracies")?
        .1
        .last()
        .map(|p| p.1);
    let margin = read_series(metrics, "rewards/margins")?
        .1
        .last()
        .map(|p| p.1);
    Ok((acc, margin))
}

fn score(samples: &mut [Sample]) -> Vec<f64> {
    samples
        .iter_mut()
        .map(|s| {
            let r = Reward::Sentiment.score(&s.prompt, &s.completion);
            s.reward = Some(r);
            r
        })
        .collect()
}

fn write_rows<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    write_jsonl(path, rows).with_context(|| format!("writing {}", path.display()))
}

/// The file that marks a directory as a quickstart's output, written before anything else.
const MARKER: &str = ".ganpo-quickstart";

/// Clears `out` when it is empty or an earlier (possibly interrupted) quickstart's, which
/// [`MARKER`] identifies; any other directory is refused untouched.
fn prepare(out: &Path) -> Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_none();
        if !empty && !out.join(MARKER).is_file() {
            bail!(
                "{} exists and is not a quickstart output; choose another --out",
                out.display()
            );
        }
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(
        out.join(MARKER),
        "written by `ganpo quickstart`; safe to replace\n",
    )
    .with_context(|| format!("writing {}", out.join(MARKER).display()))
}

struct Stages {
    start: Instant,
    last: Instant,
    seconds: Vec<(String, f64)>,
}

impl Stages {
    fn done(&mut self, name: &str) {
        let now = Instant::now();
        let s = (now - self.last).as_secs_f64();
        tracing::info!("{name}: {s:.1} s");
        self.seconds.push((name.to_string(), s));
        self.last = now;
    }
}

struct Job(Args);

impl BackendJob for Job {
    type Output = Result<Report>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        quickstart::<B>(&self.0, device)
    }
}

fn quickstart<B: AutodiffBackend>(args: &Args, device: B::Device) -> Result<Report> {
    let root = &args.out;
    prepare(root)?;
    let now = Instant::now();
    let mut stages = Stages {
        start: now,
        last: now,
        seconds: vec![],
    };
    let spec = TaskSpec {
        seed: args.seed,
        sft_examples: args.sft_examples,
        train_prompts: args.train_prompts,
        eval_prompts: args.eval_prompts,
        ..TaskSpec::default()
    };
    let task = write_task(&root.join("task"), &spec)
        .with_context(|| format!("writing {}", root.join("task").display()))?;
    let TaskFiles {
        model: init_model,
        sft: sft_data,
        train_prompts,
        eval_prompts,
    } = task;
    stages.done("task");

    let sft_dir = root.join("sft");
    let sft_args = super::sft::Args {
        model: init_model,
        init: true,
        // The task's settings (SFT steps, learning rates) were tuned with burn's defaults.
        init_scheme: Init::Burn,
        data: sft_data,
        out: sft_dir.clone(),
        steps: args.sft_steps,
        batch_size: 32,
        lr: 3e-3,
        max_length: 64,
        seed: args.seed,
        backend: args.backend.clone(),
    };
    super::sft::fine_tune::<B>(&sft_args, &device)?;
    stages.done("sft");

    // Pairs: 4 samples per prompt from the SFT model, best vs worst by the oracle.
    let mut pair_stats = Vec::new();
    for (split, prompts, noise, seed) in [
        ("train", &train_prompts, args.label_noise, args.seed),
        ("eval", &eval_prompts, 0.0, args.seed.wrapping_add(1)),
    ] {
        let sampling = Sampling::plain(PAIR_SAMPLES, 1.0, MAX_NEW_TOKENS, seed, BATCH_ROWS);
        let mut samples =
            sample_model::<B::InnerBackend>(&sft_dir, &read_prompts(prompts)?, &sampling, &device)?;
        score(&mut samples);
        write_rows(&root.join(format!("samples/sft-{split}.jsonl")), &samples)?;
        let (pairs, stats) = best_worst_pairs(
            &samples,
            &PairSettings {
                label_noise: noise,
                seed,
            },
        )?;
        write_rows(&root.join(format!("pairs/{split}.jsonl")), &pairs)?;
        pair_stats.push(stats);
    }
    stages.done("pairs");

    let mut trained = Vec::new();
    for method in &args.methods {
        let config = method_config(method, args, Path::new(".."))?;
        let path = root
            .join("runs")
            .join(format!("{}.toml", method.replace('+', "-")));
        write_atomic(&path, toml::to_string_pretty(&config)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        let config = RunConfig::load(&path, &[])?;
        let t = Instant::now();
        let dir = config.train.output_dir.clone();
        super::train::train_run::<B>(config, None, &[], std::slice::from_ref(&device), None)?;
        trained.push((method.clone(), dir, t.elapsed().as_secs_f64()));
        stages.done(&format!("train {method}"));
    }

    // Evaluation: the same held-out prompts and sampler seeds for every model.
    let prompts = read_prompts(&eval_prompts)?;
    let (sft, tokenizer) = super::load_with_tokenizer::<B::InnerBackend>(&sft_dir, &device)?;
    let mut rows = Vec::new();
    let models = std::iter::once(("sft".to_string(), sft_dir.clone(), None)).chain(
        trained
            .iter()
            .map(|(m, d, s)| (m.clone(), d.join("final"), Some(*s))),
    );
    for (name, dir, seconds) in models {
        let file = name.replace('+', "-");
        let kl_sampling = unbiased(
            args.eval_samples,
            MAX_NEW_TOKENS,
            args.seed.wrapping_add(2),
            BATCH_ROWS,
        );
        let (policy, _) = super::load_with_tokenizer::<B::InnerBackend>(&dir, &device)?;
        let draw = |s: &Sampling| {
            ganpo_train::rollout::sample_completions(
                &policy.model,
                &tokenizer,
                &prompts,
                s.num_samples,
                &s.generation(&tokenizer),
                BATCH_ROWS,
                &device,
            )
        };
        let mut at_t1 = draw(&kl_sampling)?;
        let reward_t1 = MeanEstimate::of(&score(&mut at_t1));
        let invalid_t1 = at_t1
            .iter()
            .filter(|s| !sentiment::is_review(&s.prompt, &s.completion))
            .count() as f64
            / at_t1.len().max(1) as f64;
        let p = sample_logps(&policy.model, &tokenizer, &at_t1, BATCH_ROWS, &device)?;
        let q = sample_logps(&sft.model, &tokenizer, &at_t1, BATCH_ROWS, &device)?;
        let kl = sampled_kl(&p, &q);
        write_rows(&root.join(format!("eval/{file}-t1.jsonl")), &at_t1)?;
        let mut at_high = draw(&Sampling {
            temperature: args.high_temperature,
            ..kl_sampling
        })?;
        let reward_high = MeanEstimate::of(&score(&mut at_high));
        write_rows(
            &root.join(format!("eval/{file}-t{}.jsonl", args.high_temperature)),
            &at_high,
        )?;
        let (eval_accuracy, eval_margin) = match seconds {
            Some(_) => final_eval(&dir.with_file_name("metrics.jsonl"))?,
            None => (None, None),
        };
        rows.push(Row {
            model: name,
            reward_t1,
            reward_high,
            kl,
            invalid_t1,
            eval_accuracy,
            eval_margin,
            train_seconds: seconds,
        });
    }
    stages.done("evaluate");
    let total_seconds = stages.start.elapsed().as_secs_f64();
    Ok(Report {
        seed: args.seed,
        label_noise: args.label_noise,
        high_temperature: args.high_temperature,
        task: spec,
        sft_steps: args.sft_steps,
        steps: args.steps,
        train_pairs: pair_stats[0],
        eval_pairs: pair_stats[1],
        rows,
        stage_seconds: stages.seconds,
        total_seconds,
    })
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.3}"))
}

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# ganpo quickstart\n\nSynthetic review language (`oracle:sentiment` reward in [-1, 1]); \
         SFT {} steps; {} training pairs ({} flipped, label noise {}), {} held-out pairs; {} \
         preference steps per method; seed {}; {:.0} s in all.\n\n\
         | model | reward T=1 | reward T={} | KL to SFT | not a review (T=1) | held-out acc | held-out margin |\n\
         |---|---|---|---|---|---|---|\n",
        r.sft_steps,
        r.train_pairs.pairs,
        r.train_pairs.flipped,
        r.label_noise,
        r.eval_pairs.pairs,
        r.steps,
        r.seed,
        r.total_seconds,
        r.high_temperature,
    );
    let pm = |m: &MeanEstimate| format!("{:.3} ± {:.3}", m.mean, m.std_error);
    for row in &r.rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.1}% | {} | {} |\n",
            row.model,
            pm(&row.reward_t1),
            pm(&row.reward_high),
            pm(&row.kl),
            100.0 * row.invalid_t1,
            fmt_opt(row.eval_accuracy),
            fmt_opt(row.eval_margin),
        ));
    }
    s.push_str(
        "\n± is one standard error over the held-out samples. The KL is the sampled estimate of \
         KL(model || SFT) per completion, in nats.\n",
    );
    s
}

fn recipe(args: &Args) -> String {
    let r = args.out.display();
    let mut s = format!(
        "#!/usr/bin/env bash\n# What `ganpo quickstart` did, as ordinary commands.\nset -euo pipefail\n\
         ganpo task --out {r}/task --seed {seed} --sft-examples {se} --train-prompts {tp} --eval-prompts {ep}\n\
         ganpo sft --model {r}/task/model --init --init-scheme burn --data {r}/task/sft.jsonl --out {r}/sft --steps {ss} --batch-size 32 --lr 3e-3 --max-length 64 --seed {seed}\n",
        seed = args.seed,
        se = args.sft_examples,
        tp = args.train_prompts,
        ep = args.eval_prompts,
        ss = args.sft_steps,
    );
    for (split, noise, seed) in [
        ("train", args.label_noise, args.seed),
        ("eval", 0.0, args.seed.wrapping_add(1)),
    ] {
        s.push_str(&format!(
            "ganpo sample --model {r}/sft --prompts {r}/task/prompts-{split}.jsonl --out {r}/samples/sft-{split}.raw.jsonl --num-samples {PAIR_SAMPLES} --max-new-tokens {MAX_NEW_TOKENS} --seed {seed} --batch-size {BATCH_ROWS}\n\
             ganpo score --reward oracle:sentiment --samples {r}/samples/sft-{split}.raw.jsonl --out {r}/samples/sft-{split}.jsonl\n\
             ganpo pairs --samples {r}/samples/sft-{split}.jsonl --out {r}/pairs/{split}.jsonl --label-noise {noise} --seed {seed}\n"
        ));
    }
    let eval_seed = args.seed.wrapping_add(2);
    let mut models = vec![("sft".to_string(), format!("{r}/sft"))];
    for m in &args.methods {
        let f = m.replace('+', "-");
        s.push_str(&format!("ganpo train --config {r}/runs/{f}.toml\n"));
        models.push((f.clone(), format!("{r}/runs/{f}/final")));
    }
    for (name, dir) in models {
        for t in [1.0, args.high_temperature] {
            s.push_str(&format!(
                "ganpo sample --model {dir} --prompts {r}/task/prompts-eval.jsonl --out {r}/eval/{name}-t{t}.raw.jsonl --num-samples {n} --max-new-tokens {MAX_NEW_TOKENS} --temperature {t} --seed {eval_seed} --batch-size {BATCH_ROWS}\n\
                 ganpo score --reward oracle:sentiment --samples {r}/eval/{name}-t{t}.raw.jsonl\n",
                n = args.eval_samples,
            ));
        }
        s.push_str(&format!(
            "ganpo kl --model {dir} --ref-model {r}/sft --prompts {r}/task/prompts-eval.jsonl --num-samples {n} --max-new-tokens {MAX_NEW_TOKENS} --seed {eval_seed} --batch-size {BATCH_ROWS}\n",
            n = args.eval_samples,
        ));
    }
    s
}

fn plots(report: &Report, args: &Args) -> Result<()> {
    let dir = args.out.join("plots");
    std::fs::create_dir_all(&dir)?;
    let text = register_font();
    let points: Vec<Point> = report
        .rows
        .iter()
        .map(|r| Point {
            label: r.model.clone(),
            x: r.kl.mean,
            y: r.reward_t1.mean,
            err: r.reward_t1.std_error,
        })
        .collect();
    draw_points(
        &dir.join("reward_vs_kl.png"),
        "Oracle reward (T = 1) vs KL to the SFT model",
        ("KL(model || SFT), nats", "mean oracle reward"),
        &points,
        text,
    )?;
    for (file, metric, title) in [
        ("loss.png", "loss", "Training loss (dots: held-out)"),
        (
            "accuracy.png",
            "rewards/accuracies",
            "Reward accuracy (dots: held-out)",
        ),
    ] {
        let mut lines = Vec::new();
        for m in &args.methods {
            let metrics = args
                .out
                .join("runs")
                .join(m.replace('+', "-"))
                .join("metrics.jsonl");
            lines.push((m.as_str(), read_series(&metrics, metric)?));
        }
        draw(&dir.join(file), title, &lines, text)?;
    }
    Ok(())
}

/// Runs the quickstart, then writes and prints the results.
pub fn run(args: Args) -> Result<()> {
    for m in &args.methods {
        method_config(m, &args, Path::new("."))?;
    }
    if !(0.0..=1.0).contains(&args.label_noise) || args.high_temperature <= 0.0 {
        bail!("--label-noise must lie in [0, 1] and --high-temperature be positive");
    }
    if args.steps == 0 || args.sft_steps == 0 || args.eval_samples < 2 {
        bail!("--steps and --sft-steps must be at least 1, --eval-samples at least 2");
    }
    let kind: BackendKind = args.backend.parse()?;
    let report = run_on(kind, Job(args.clone()))??;
    let out = &args.out;
    write_json(&out.join("results.json"), &report)
        .with_context(|| format!("writing {}", out.join("results.json").display()))?;
    let md = markdown(&report);
    write_atomic(&out.join("results.md"), md.as_bytes())?;
    write_atomic(&out.join("recipe.sh"), recipe(&args).as_bytes())?;
    plots(&report, &args).context("drawing the plots")?;
    println!("\n{md}");
    println!(
        "Results: {}/results.{{json,md}}, plots: {}/plots, the same run as commands: {}/recipe.sh",
        out.display(),
        out.display(),
        out.display()
    );
    Ok(())
}
