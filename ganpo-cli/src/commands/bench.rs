//! `ganpo bench`: time the training step of a named model shape on random tokens (JSON).

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::Pooling;
use ganpo_core::backend::{BackendKind, MultiDeviceJob, run_on_devices};
use ganpo_train::bench::{self, BenchConfig, BenchReport, SHAPES};
use ganpo_train::config::ComputeDtype;

/// Options of `ganpo bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Model shape (random weights): tiny, smollm2-135m, gpt2-124m, qwen2.5-0.5b, llama-1b,
    /// qwen2.5-1.5b, qwen2.5-3b or gemma-2-2b.
    #[arg(long, default_value = "tiny")]
    pub model_config: String,
    /// Tokens per sequence (half prompt, half completion).
    #[arg(long, default_value_t = 512)]
    pub seq: usize,
    /// Preference pairs per step.
    #[arg(long, default_value_t = 8)]
    pub pairs: usize,
    /// dpo, ganpo (DPO + GANPO), simpo or simpo-ganpo.
    #[arg(long, default_value = "ganpo")]
    pub mode: String,
    /// Compute dtype of the policy: f32, bf16, f16 (GPU backends) or f64 (CPU).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Timed steps (as many again are run with the per-phase clock).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Seed of the weights and tokens.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Positions the discriminators see: sequence (every real token), completion or none.
    #[arg(long, default_value = "sequence")]
    pub pooling: String,
    /// Compute backend: cpu, wgpu or cuda (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Device index on that backend.
    #[arg(long, conflicts_with = "devices")]
    pub device: Option<usize>,
    /// Data-parallel on these devices (`--devices 0,1`): `--pairs` is the global batch, split
    /// between them; on the cpu backend the indices count replicas sharing the CPU.
    #[arg(long, value_delimiter = ',', value_name = "INDICES")]
    pub devices: Vec<usize>,
    /// Override a run-configuration key as `ganpo train --set` does, for example
    /// `--set lora.r=16 --set lora.target_modules=all-linear` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

struct Job(BenchConfig);

impl MultiDeviceJob for Job {
    type Output = Result<BenchReport>;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        Ok(bench::run_on_devices::<B>(&self.0, &devices)?)
    }
}

/// Runs the benchmark and prints its JSON report.
pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(
        SHAPES.contains(&args.model_config.as_str()),
        "unknown --model-config `{}`: expected one of {}",
        args.model_config,
        SHAPES.join(", ")
    );
    anyhow::ensure!(
        args.seq >= 2 && args.pairs >= 1 && args.steps >= 1,
        "--seq must be at least 2, --pairs and --steps at least 1"
    );
    let dtype: ComputeDtype = serde_json::from_value(serde_json::Value::String(args.dtype.clone()))
        .map_err(|_| {
            anyhow::anyhow!(
                "unknown --dtype `{}`: expected f32, bf16, f16 or f64",
                args.dtype
            )
        })?;
    let pooling: Pooling = serde_json::from_value(serde_json::Value::String(args.pooling.clone()))
        .map_err(|_| {
            anyhow::anyhow!(
                "unknown --pooling `{}`: expected sequence, completion or none",
                args.pooling
            )
        })?;
    let kind: BackendKind = args.backend.parse()?;
    anyhow::ensure!(
        dtype.supported_on(kind.name()),
        "--dtype {} is not supported on the {kind} backend (bf16 / f16 need wgpu or cuda)",
        args.dtype
    );
    let config = BenchConfig {
        shape: args.model_config,
        seq: args.seq,
        pairs: args.pairs,
        mode: args.mode,
        dtype,
        pooling,
        steps: args.steps,
        warmup: args.warmup,
        seed: args.seed,
        sets: args.set,
    };
    bench::run_config(&config)?;
    let indices = match args.device {
        Some(d) => vec![d],
        None => args.devices,
    };
    let report = run_on_devices(kind, &indices, Job(config))??;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
