//! `ganpo generate`: continue prompts with a model (KV-cached, batched).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendJob, BackendKind, run_on};
use ganpo_models::generate::generate;

/// Options of `ganpo generate`.
#[derive(clap::Args)]
pub struct Args {
    /// Model: an HF directory with a tokenizer.json, a .gguf file with an embedded tokenizer, or an .onnx export with config.json and tokenizer.json beside it.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt text; repeat the flag to generate for several prompts in one batch.
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[command(flatten)]
    pub decoding: super::sample::Decoding,
    /// Compute backend: cpu, wgpu or cuda (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

struct Job(Args);

impl BackendJob for Job {
    type Output = Result<serde_json::Value>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<serde_json::Value> {
        let a = self.0;
        let (loaded, tok) = super::load_with_tokenizer::<B::InnerBackend>(&a.model, &device)?;
        let tok = &tok;
        let prompts = a
            .prompt
            .iter()
            .map(|p| tok.encode(p, true))
            .collect::<Result<Vec<_>, _>>()?;
        let config = a.decoding.generation(a.temperature, tok);
        let start = Instant::now();
        let outputs = generate(&loaded.model, &prompts, &config, &device);
        let seconds = start.elapsed().as_secs_f64();
        let tokens: usize = outputs.iter().map(Vec::len).sum();
        let results = a
            .prompt
            .iter()
            .zip(&outputs)
            .map(|(p, ids)| Ok(serde_json::json!({"prompt": p, "completion": tok.decode(ids, true)?, "completion_ids": ids})))
            .collect::<Result<Vec<_>>>()?;
        Ok(serde_json::json!({
            "model": a.model.display().to_string(),
            "backend": B::name(&device),
            "results": results,
            "new_tokens": tokens,
            "seconds": seconds,
            "tokens_per_second": tokens as f64 / seconds.max(1e-9),
        }))
    }
}

/// Prints the generations and the decoding speed as JSON.
pub fn run(args: Args) -> Result<()> {
    let kind: BackendKind = args.backend.parse()?;
    args.decoding.check(args.temperature)?;
    let value = run_on(kind, Job(args))??;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
