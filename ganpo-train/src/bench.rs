//! `ganpo bench`: the training step of a randomly initialized model of a named shape on random
//! tokens, timed per step and per phase — the ruler the performance work is measured with, and
//! what `bench/torch_reference.py` mirrors in PyTorch.

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use ganpo_core::{GanpoConfig, LossKind, Pooling, PreferenceLoss};
use ganpo_models::{Lm, ModelConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::{ComputeDtype, RunConfig, Scheduler, apply_set};
use crate::data::{PreferenceDataset, TokenizedPair};
use crate::train::{TrainError, Trainer};

/// Named model shapes (HF `config.json` values of the public checkpoints).
pub const SHAPES: [&str; 8] = [
    "tiny",
    "smollm2-135m",
    "gpt2-124m",
    "qwen2.5-0.5b",
    "llama-1b",
    "qwen2.5-1.5b",
    "qwen2.5-3b",
    "gemma-2-2b",
];

/// The HF `config.json` of a named shape; `None` for an unknown name.
pub fn shape_json(name: &str) -> Option<Value> {
    let llama = |hidden: usize,
                 inter: usize,
                 layers: usize,
                 heads: usize,
                 kv: usize,
                 vocab: usize,
                 theta: f64| {
        json!({"model_type": "llama", "hidden_size": hidden, "intermediate_size": inter,
               "num_hidden_layers": layers, "num_attention_heads": heads,
               "num_key_value_heads": kv, "vocab_size": vocab, "rope_theta": theta,
               "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
               "max_position_embeddings": 8192})
    };
    Some(match name {
        "tiny" => llama(128, 256, 2, 4, 2, 1024, 10_000.0),
        "smollm2-135m" => llama(576, 1536, 30, 9, 3, 49_152, 100_000.0),
        "gpt2-124m" => json!({"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12,
                              "vocab_size": 50_257, "n_positions": 1024,
                              "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}),
        "qwen2.5-0.5b" => {
            let mut v = llama(896, 4864, 24, 14, 2, 151_936, 1_000_000.0);
            v["model_type"] = json!("qwen2");
            v["rms_norm_eps"] = json!(1e-6);
            v
        }
        "qwen2.5-1.5b" | "qwen2.5-3b" => {
            let mut v = match name {
                "qwen2.5-1.5b" => llama(1536, 8960, 28, 12, 2, 151_936, 1_000_000.0),
                _ => llama(2048, 11_008, 36, 16, 2, 151_936, 1_000_000.0),
            };
            v["model_type"] = json!("qwen2");
            v["rms_norm_eps"] = json!(1e-6);
            v
        }
        "llama-1b" => {
            let mut v = llama(2048, 8192, 16, 32, 8, 128_256, 500_000.0);
            v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 32.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192});
            v
        }
        "gemma-2-2b" => json!({"model_type": "gemma2", "hidden_size": 2304,
            "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8,
            "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 256_000,
            "rope_theta": 10_000.0, "rms_norm_eps": 1e-6, "query_pre_attn_scalar": 256,
            "sliding_window": 4096, "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0, "hidden_activation": "gelu_pytorch_tanh",
            "tie_word_embeddings": true, "max_position_embeddings": 8192}),
        _ => return None,
    })
}

/// What is benchmarked.
#[derive(Clone, Debug, Serialize)]
pub struct BenchConfig {
    /// One of [`SHAPES`].
    pub shape: String,
    /// Tokens per sequence (prompt half, completion half).
    pub seq: usize,
    /// Preference pairs per step (`2 * pairs` sequences).
    pub pairs: usize,
    /// `dpo`, `ganpo` (DPO + GANPO), `simpo` or `simpo-ganpo`.
    pub mode: String,
    /// Compute dtype of the policy (f32 master weights either way).
    pub dtype: ComputeDtype,
    /// Positions the discriminators attend to and pool over (GANPO modes).
    pub pooling: Pooling,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
    /// Seed of the weights and tokens.
    pub seed: u64,
    /// Run-configuration overrides (`lora.r=16`, `train.grad_accum=2`), as `ganpo train --set`.
    pub sets: Vec<String>,
}

/// Errors of a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An unknown shape or mode.
    #[error("{0}")]
    Invalid(String),
    /// The model shape could not be built.
    #[error(transparent)]
    Model(#[from] ganpo_models::ModelError),
    /// The step failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// An override does not apply.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// The run configuration of a benchmark: the trainer's defaults (AdamW, clipping at 1.0, the
/// reference's discriminators), a constant tiny learning rate, no logging, evaluation or
/// checkpoints.
pub fn run_config(c: &BenchConfig) -> Result<RunConfig, BenchError> {
    let mut r = RunConfig::default();
    r.model.path = format!("random:{}", c.shape).into();
    r.data.max_length = 0;
    let (base, ganpo) = match c.mode.as_str() {
        "dpo" => (LossKind::Sigmoid, false),
        "ganpo" => (LossKind::Sigmoid, true),
        "simpo" => (LossKind::Simpo, false),
        "simpo-ganpo" => (LossKind::Simpo, true),
        other => {
            return Err(BenchError::Invalid(format!(
                "unknown mode `{other}`: expected dpo, ganpo, simpo or simpo-ganpo"
            )));
        }
    };
    r.loss = PreferenceLoss::single(base);
    r.ganpo = ganpo.then(|| GanpoConfig {
        pooling: c.pooling,
        ..GanpoConfig::default()
    });
    let t = &mut r.train;
    t.seed = c.seed;
    t.batch_size = c.pairs;
    t.lr = 1e-6;
    t.scheduler = Scheduler::Constant;
    t.warmup_ratio = 0.0;
    t.compute_dtype = c.dtype;
    if !c.sets.is_empty() {
        let mut table = toml::Table::try_from(&r).expect("a run configuration serializes");
        for set in &c.sets {
            apply_set(&mut table, set)?;
        }
        r = RunConfig::parse_table(table, "--set")?;
        r.validate_lora()?;
    }
    // The benchmark's own step counts; nothing is logged, evaluated or saved.
    let t = &mut r.train;
    t.max_steps = Some(c.warmup + c.steps);
    t.logging_steps = usize::MAX;
    t.eval_steps = None;
    t.save_steps = None;
    Ok(r)
}

/// `count` pairs of random tokens: `seq / 2` prompt tokens, `seq - seq / 2` per completion.
pub fn random_pairs(vocab: usize, seq: usize, count: usize, seed: u64) -> PreferenceDataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tokens =
        |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(0..vocab as u32)).collect() };
    let mut data = PreferenceDataset::default();
    for i in 0..count {
        data.pairs.push(TokenizedPair {
            prompt: tokens(seq / 2),
            chosen: tokens(seq - seq / 2),
            rejected: tokens(seq - seq / 2),
        });
        data.sources.push(("random".into(), i + 1));
    }
    data
}

/// A sample's median and spread.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    fn of(xs: &[f64]) -> Self {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Self {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// What `ganpo bench` prints (the same keys as `bench/torch_reference.py`).
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// `ganpo`.
    pub framework: &'static str,
    /// The backend and device.
    pub backend: String,
    /// Devices the step ran on (data-parallel when more than one).
    pub devices: usize,
    /// What was run.
    pub config: BenchConfig,
    /// The shape as an HF `config.json` (what `bench/torch_reference.py --hf-config` reads).
    pub hf_config: Value,
    /// Parameters of the policy.
    pub parameters: usize,
    /// Parameters the optimizer updates (all of them, or a LoRA run's adapters).
    pub trainable_parameters: usize,
    /// Milliseconds per step (unprofiled steps).
    pub ms_per_step: Spread,
    /// Tokens (`2 * pairs * seq`) per second at the median step time.
    pub tokens_per_second: f64,
    /// Milliseconds per step spent in each phase (median over separately profiled steps, each
    /// phase boundary waiting for the device).
    pub breakdown_ms: Vec<(&'static str, f64)>,
    /// Peak resident memory of the whole process (Linux `VmHWM`), building the model included,
    /// where known.
    pub peak_rss_bytes: Option<u64>,
    /// Peak memory of the steps: the peak resident memory on the CPU backend from the first
    /// step on (the peak is reset after the model is built; the weights, reference and
    /// optimizer are resident throughout). What the GPU backends hold on the device is not
    /// reported by burn 0.21.
    pub peak_memory_bytes: Option<u64>,
    /// Bytes per policy parameter at the peak, and what they are: weights (the policy's and the
    /// reference's tensors in their dtypes, shared where LoRA shares them), gradients and AdamW's two moments
    /// of the trainable parameters, and the rest (activations, workspace, the process itself
    /// before the model was built), derived as the peak minus the others.
    pub bytes_per_parameter: Option<MemoryBreakdown>,
}

/// Bytes per policy parameter, by what holds them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MemoryBreakdown {
    /// The whole peak.
    pub total: f64,
    /// Policy weights in their dtypes (a LoRA policy's frozen base in the compute dtype), plus
    /// the reference's where it is a copy.
    pub weights: f64,
    /// Gradients of the trainable parameters (f32).
    pub gradients: f64,
    /// AdamW's first and second moments of the trainable parameters (f32).
    pub optimizer_state: f64,
    /// The remainder: activations, workspace, discriminators, the process baseline.
    pub activations_and_other: f64,
}

/// Resets the process's peak resident set size to the current one (Linux: `5` written to
/// `/proc/self/clear_refs`), so that a later [`peak_rss_bytes`] sees what followed; `false` where
/// that is not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak resident set size, from `/proc/self/status` (Linux only).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string(Path::new("/proc/self/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs the benchmark: `warmup` untimed steps, `steps` timed steps, then `steps` more with the
/// per-phase clock on (kept apart so the device waits do not slow the headline figure).
pub fn run<B: AutodiffBackend>(
    c: &BenchConfig,
    device: &B::Device,
) -> Result<BenchReport, BenchError> {
    run_on_devices::<B>(c, std::slice::from_ref(device))
}

/// [`run`] data-parallel on `devices` (`Trainer::fit_data_parallel`, feature `collective`): `pairs` is the global
/// batch, split between the devices, and the times are the first device's (each step ends when
/// every replica has finished it, at the last all-reduce). The phase breakdown is the first
/// device's too.
pub fn run_on_devices<B: AutodiffBackend>(
    c: &BenchConfig,
    devices: &[B::Device],
) -> Result<BenchReport, BenchError> {
    let device = devices
        .first()
        .ok_or_else(|| BenchError::Invalid("no device".into()))?;
    let json = shape_json(&c.shape).ok_or_else(|| {
        BenchError::Invalid(format!(
            "unknown model shape `{}`: expected one of {}",
            c.shape,
            SHAPES.join(", ")
        ))
    })?;
    let model_config = ModelConfig::from_hf(&json, Path::new(&c.shape))?;
    let json = ganpo_models::export::hf_config(&model_config)?;
    let mut config = run_config(c)?;
    config.train.max_steps = Some(c.warmup + 2 * c.steps);
    B::seed(device, c.seed);
    let mut policy: Lm<B> = model_config.init(device);
    if let Some(lora) = &config.lora {
        policy = ganpo_models::lora::attach(policy, lora, c.seed)?.0;
    }
    let parameters = burn::module::Module::num_params(&policy);
    let trainable_parameters = crate::train::trainable_params(&policy);
    let data = random_pairs(
        model_config.vocab_size(),
        c.seq,
        c.pairs * (c.warmup + 2 * c.steps),
        c.seed,
    );
    let mut trainer = Trainer::new(
        config,
        policy,
        None,
        data,
        PreferenceDataset::default(),
        0,
        device.clone(),
    )?;
    let cpu = B::name(device).contains("ndarray") || B::name(device).contains("cpu");
    let setup_peak = peak_rss_bytes();
    let reset = cpu && reset_peak_rss();
    let measure = |trainer: &mut Trainer<B, Lm<B>>| -> Result<_, TrainError> {
        for _ in 0..c.warmup {
            trainer.step()?;
        }
        let mut times = Vec::with_capacity(c.steps);
        for _ in 0..c.steps {
            let start = Instant::now();
            trainer.step()?;
            let _ = B::sync(device);
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        trainer.profile_phases(true);
        let mut per_step: Vec<Vec<f64>> = Vec::new();
        for _ in 0..c.steps {
            let before: Vec<f64> = phase_seconds(trainer);
            trainer.step()?;
            let after = phase_seconds(trainer);
            per_step.push(
                after
                    .iter()
                    .zip(&before)
                    .map(|(a, b)| (a - b) * 1e3)
                    .collect(),
            );
        }
        Ok((times, per_step))
    };
    #[cfg(feature = "collective")]
    let (times, per_step) = trainer.data_parallel(devices, measure)?;
    #[cfg(not(feature = "collective"))]
    let (times, per_step) = match devices.len() {
        1 => measure(&mut trainer)?,
        _ => {
            return Err(BenchError::Invalid(
                "several devices need ganpo-train's `collective` feature".into(),
            ));
        }
    };
    let breakdown_ms = crate::train::profile::PHASES
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let column: Vec<f64> = per_step.iter().map(|s| s[i]).collect();
            (*p, Spread::of(&column).median)
        })
        .collect();
    let ms_per_step = Spread::of(&times);
    let peak = reset.then(peak_rss_bytes).flatten();
    let weight_bytes = trainer.weight_bytes() as f64;
    let bytes_per_parameter = peak.map(|peak| {
        let per = |bytes: f64| bytes / parameters as f64;
        let trainable = trainable_parameters as f64 * 4.0;
        let (weights, gradients, optimizer_state) =
            (per(weight_bytes), per(trainable), per(2.0 * trainable));
        let total = per(peak as f64);
        MemoryBreakdown {
            total,
            weights,
            gradients,
            optimizer_state,
            activations_and_other: total - weights - gradients - optimizer_state,
        }
    });
    Ok(BenchReport {
        framework: "ganpo",
        backend: B::name(device).to_string(),
        devices: devices.len(),
        config: c.clone(),
        hf_config: json,
        parameters,
        trainable_parameters,
        tokens_per_second: (2 * c.pairs * c.seq) as f64 / (ms_per_step.median / 1e3),
        ms_per_step,
        breakdown_ms,
        peak_rss_bytes: peak_rss_bytes().max(setup_peak),
        peak_memory_bytes: peak,
        bytes_per_parameter,
    })
}

fn phase_seconds<B: AutodiffBackend>(trainer: &Trainer<B, Lm<B>>) -> Vec<f64> {
    trainer
        .phase_times()
        .map(|p| p.seconds().into_iter().map(|(_, s)| s).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_builds_a_config_with_its_published_sizes() {
        let sizes = [
            ("tiny", 128, 1024),
            ("smollm2-135m", 576, 49_152),
            ("gpt2-124m", 768, 50_257),
            ("qwen2.5-0.5b", 896, 151_936),
            ("llama-1b", 2048, 128_256),
            ("qwen2.5-1.5b", 1536, 151_936),
            ("qwen2.5-3b", 2048, 151_936),
        ];
        for (name, hidden, vocab) in sizes {
            let c = ModelConfig::from_hf(&shape_json(name).unwrap(), Path::new(name)).unwrap();
            assert_eq!((c.hidden_size(), c.vocab_size()), (hidden, vocab), "{name}");
        }
        assert!(shape_json("gpt5").is_none());
    }

    fn tiny(sets: &[&str]) -> BenchConfig {
        BenchConfig {
            shape: "tiny".into(),
            seq: 16,
            pairs: 1,
            mode: "ganpo".into(),
            dtype: ComputeDtype::F32,
            pooling: Pooling::Sequence,
            steps: 1,
            warmup: 0,
            seed: 0,
            sets: sets.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn overrides_reach_the_run_and_are_checked_by_key() {
        let r = run_config(&tiny(&["lora.r=16", "lora.target_modules=all-linear"])).unwrap();
        assert_eq!(r.lora.as_ref().map(|l| l.r), Some(16));
        assert_eq!(
            r.train.max_steps,
            Some(1),
            "the benchmark's step count wins"
        );
        let e = run_config(&tiny(&["lora.rank=4"])).unwrap_err().to_string();
        assert!(e.contains("lora.rank"), "{e}");
        let e = run_config(&tiny(&["lora.r=0"])).unwrap_err().to_string();
        assert!(e.contains("lora.r") && e.contains("at least 1"), "{e}");
    }

    #[test]
    fn a_lora_bench_trains_the_adapters_only() {
        type B = burn::backend::Autodiff<burn::backend::NdArray>;
        let device = Default::default();
        let full = run::<B>(&tiny(&[]), &device).unwrap();
        assert_eq!(full.trainable_parameters, full.parameters);
        let lora = run::<B>(&tiny(&["lora.r=2"]), &device).unwrap();
        // q_proj and v_proj of 2 layers: r x (128 + 128) and r x (128 + 64) each.
        assert_eq!(lora.trainable_parameters, 2 * 2 * (256 + 192));
        assert_eq!(lora.parameters, full.parameters + lora.trainable_parameters);
    }

    #[test]
    fn spread_is_median_min_max() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
    }
}
