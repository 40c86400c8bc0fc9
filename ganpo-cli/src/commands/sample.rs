//! `ganpo sample`: completions of a prompt file, several per prompt, to JSONL.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendJob, BackendKind, run_on};
use ganpo_models::Tokenizer;
use ganpo_models::generate::GenerationConfig;
use ganpo_train::data::read_rows;
use ganpo_train::io::write_jsonl;
use ganpo_train::rollout::{Sample, sample_completions};

/// Decoding options shared by `generate` and `sample` (each adds its own temperature default).
#[derive(clap::Args, Clone, Debug)]
pub struct Decoding {
    /// Most new tokens per completion.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sample among the k most likely tokens only (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample among the most likely tokens holding this much probability (1 = all).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Decoding {
    /// The generation settings at `temperature` for `tokenizer`'s stop and padding tokens.
    pub fn generation(&self, temperature: f64, tokenizer: &Tokenizer) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            eos_token_ids: tokenizer.eos_token_ids.clone(),
            pad_token_id: super::data::pad_id(tokenizer),
        }
    }

    /// Rejects a temperature or top-p that defines no distribution.
    pub fn check(&self, temperature: f64) -> Result<()> {
        if !(temperature >= 0.0 && self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--temperature must be >= 0 and --top-p in (0, 1]");
        }
        Ok(())
    }
}

/// How completions are drawn (shared by `sample`, `kl` and the quickstart).
#[derive(clap::Args, Clone, Debug)]
pub struct Sampling {
    /// Completions per prompt.
    #[arg(long, default_value_t = 1)]
    pub num_samples: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[command(flatten)]
    pub decoding: Decoding,
    /// Sequences generated together.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
}

impl Sampling {
    /// Plain sampling (no top-k / top-p) at `temperature`.
    pub fn plain(
        num_samples: usize,
        temperature: f64,
        max_new_tokens: usize,
        seed: u64,
        batch_size: usize,
    ) -> Self {
        Self {
            num_samples,
            temperature,
            decoding: Decoding {
                max_new_tokens,
                top_k: 0,
                top_p: 1.0,
                seed,
            },
            batch_size,
        }
    }

    /// The generation settings for `tokenizer`'s stop and padding tokens.
    pub fn generation(&self, tokenizer: &Tokenizer) -> GenerationConfig {
        self.decoding.generation(self.temperature, tokenizer)
    }

    /// Rejects settings that sample nothing or from no distribution.
    pub fn check(&self) -> Result<()> {
        self.decoding.check(self.temperature)?;
        if self.num_samples == 0 || self.batch_size == 0 {
            bail!("--num-samples and --batch-size must be at least 1");
        }
        Ok(())
    }
}

/// Options of `ganpo sample`.
#[derive(clap::Args)]
pub struct Args {
    /// Model: an HF directory, a .gguf file or an .onnx export (config.json beside it), with its tokenizer.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompts: a .jsonl or .parquet file with a `prompt` text field.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Where to write the samples (JSONL).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub sampling: Sampling,
    /// Compute backend: cpu, wgpu or cuda (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

#[derive(serde::Deserialize)]
struct PromptRow {
    prompt: String,
}

/// The `prompt` field of every row of `path`.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    Ok(read_rows::<PromptRow>(path)?
        .into_iter()
        .map(|r| r.prompt)
        .collect())
}

/// Loads `model` and samples completions of `prompts` with `sampling`.
pub fn sample_model<B: Backend>(
    model: &Path,
    prompts: &[String],
    sampling: &Sampling,
    device: &B::Device,
) -> Result<Vec<Sample>> {
    let (loaded, tokenizer) = super::load_with_tokenizer::<B>(model, device)?;
    Ok(sample_completions(
        &loaded.model,
        &tokenizer,
        prompts,
        sampling.num_samples,
        &sampling.generation(&tokenizer),
        sampling.batch_size,
        device,
    )?)
}

struct Job(Args, Vec<String>);

impl BackendJob for Job {
    type Output = Result<Vec<Sample>>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        sample_model::<B::InnerBackend>(&self.0.model, &self.1, &self.0.sampling, &device)
    }
}

/// Samples, writes the JSONL and prints a summary.
pub fn run(args: Args) -> Result<()> {
    args.sampling.check()?;
    let kind: BackendKind = args.backend.parse()?;
    let prompts = read_prompts(&args.prompts)?;
    let out = args.out.clone();
    let start = Instant::now();
    let samples = run_on(kind, Job(args, prompts))??;
    let seconds = start.elapsed().as_secs_f64();
    write_jsonl(&out, &samples).with_context(|| format!("writing {}", out.display()))?;
    let tokens: usize = samples.iter().map(|s| s.completion_ids.len()).sum();
    let finished = samples.iter().filter(|s| s.finished).count();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "samples": samples.len(),
            "finished": finished,
            "mean_tokens": tokens as f64 / samples.len().max(1) as f64,
            "seconds": seconds,
            "tokens_per_second": tokens as f64 / seconds.max(1e-9),
            "out": out.display().to_string(),
        }))?
    );
    Ok(())
}
