//! `ganpo kl`: the sampled sequence-level KL divergence of a model from a reference.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendJob, BackendKind, run_on};
use ganpo_models::{Lm, Tokenizer};
use ganpo_train::io::write_jsonl;
use ganpo_train::rollout::{MeanEstimate, Sample, completion_logps, sampled_kl};

use super::sample::{Sampling, read_prompts};

/// Options of `ganpo kl`.
#[derive(clap::Args)]
pub struct Args {
    /// The model whose divergence is measured (it draws the samples).
    #[arg(long)]
    pub model: PathBuf,
    /// The reference model (same tokenizer).
    #[arg(long)]
    pub ref_model: PathBuf,
    /// Prompts: a .jsonl or .parquet file with a `prompt` text field.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Completions drawn per prompt.
    #[arg(long, default_value_t = 4)]
    pub num_samples: usize,
    /// Most new tokens per completion (the KL is that of completions cut at this length).
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sequences per batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Also write the samples with both log-probs (JSONL).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compute backend: cpu, wgpu or cuda (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

/// `log p(y|x)` of each sample under `model`.
pub fn sample_logps<B: Backend>(
    model: &Lm<B>,
    tokenizer: &Tokenizer,
    samples: &[Sample],
    batch_size: usize,
    device: &B::Device,
) -> Result<Vec<f64>> {
    let rows = samples
        .iter()
        .map(|s| Ok((tokenizer.encode(&s.prompt, true)?, s.completion_ids.clone())))
        .collect::<Result<Vec<_>>>()?;
    Ok(completion_logps(
        model,
        &rows,
        batch_size,
        super::data::pad_id(tokenizer),
        device,
    ))
}

/// The settings that make the samples draws from the model itself: temperature 1, no top-k or
/// top-p.
pub fn unbiased(
    num_samples: usize,
    max_new_tokens: usize,
    seed: u64,
    batch_size: usize,
) -> Sampling {
    Sampling::plain(num_samples, 1.0, max_new_tokens, seed, batch_size)
}

struct Job(Args, Vec<String>);

type Output = (MeanEstimate, Vec<Sample>, Vec<f64>, Vec<f64>);

impl BackendJob for Job {
    type Output = Result<Output>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        let (policy, tokenizer) = super::load_with_tokenizer::<B::InnerBackend>(&a.model, &device)?;
        let reference = super::load_reference::<B::InnerBackend>(
            &a.ref_model,
            policy.config.vocab_size(),
            "--ref-model",
            &device,
        )?;
        let sampling = unbiased(a.num_samples, a.max_new_tokens, a.seed, a.batch_size);
        let samples = ganpo_train::rollout::sample_completions(
            &policy.model,
            &tokenizer,
            &self.1,
            sampling.num_samples,
            &sampling.generation(&tokenizer),
            sampling.batch_size,
            &device,
        )?;
        let p = sample_logps(&policy.model, &tokenizer, &samples, a.batch_size, &device)?;
        let q = sample_logps(&reference, &tokenizer, &samples, a.batch_size, &device)?;
        Ok((sampled_kl(&p, &q), samples, p, q))
    }
}

/// Samples from the model, scores under both, prints the estimate as JSON.
pub fn run(args: Args) -> Result<()> {
    if args.num_samples == 0 || args.batch_size == 0 {
        bail!("--num-samples and --batch-size must be at least 1");
    }
    let kind: BackendKind = args.backend.parse()?;
    let prompts = read_prompts(&args.prompts)?;
    let out = args.out.clone();
    let (kl, samples, p, q) = run_on(kind, Job(args, prompts))??;
    if let Some(out) = &out {
        let rows: Vec<_> = samples
            .iter()
            .zip(p.iter().zip(&q))
            .map(|(s, (p, q))| {
                let mut v = serde_json::to_value(s).expect("samples serialize");
                v["logp"] = (*p).into();
                v["ref_logp"] = (*q).into();
                v
            })
            .collect();
        write_jsonl(out, &rows).with_context(|| format!("writing {}", out.display()))?;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "kl": kl.mean,
            "std_error": kl.std_error,
            "n": kl.n,
        }))?
    );
    Ok(())
}
