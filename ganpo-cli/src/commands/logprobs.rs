//! `ganpo logprobs`: the log-probability of a completion given a prompt.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendJob, BackendKind, run_on};
use ganpo_core::{next_token_targets, token_logps};
use ganpo_models::CausalLm;
use ganpo_train::data::tokenize::{split_prompt_completion, tokenize_prompt_completion};

/// Options of `ganpo logprobs`.
#[derive(clap::Args)]
pub struct Args {
    /// Model: an HF directory with a tokenizer.json, a .gguf file with an embedded tokenizer, or an .onnx export with config.json and tokenizer.json beside it.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Completion text. By default the tokenizer's EOS is appended (unless the text ends with
    /// it), as TRL's preference training does, so the figure is the log-probability DPO and
    /// GANPO optimize; see --no-eos.
    #[arg(long)]
    pub completion: String,
    /// Score the completion exactly as given, without the EOS: what lm-eval-harness or a
    /// transformers user computes for the same text.
    #[arg(long)]
    pub no_eos: bool,
    /// Compute backend: cpu, wgpu or cuda (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

struct Job(Args);

impl BackendJob for Job {
    type Output = Result<serde_json::Value>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<serde_json::Value> {
        let args = self.0;
        let (loaded, tok) = super::load_with_tokenizer::<B::InnerBackend>(&args.model, &device)?;
        let tokenizer = &tok;
        let split = if args.no_eos {
            split_prompt_completion(tokenizer, &args.prompt, &args.completion)?
        } else {
            tokenize_prompt_completion(tokenizer, &args.prompt, &args.completion)?
        };
        let ids: Vec<i64> = split
            .prompt
            .iter()
            .chain(&split.completion)
            .map(|&i| i as i64)
            .collect();
        let n = ids.len();
        let completion: Vec<bool> = (0..n).map(|i| i >= split.prompt.len()).collect();
        let ids_t =
            Tensor::<B::InnerBackend, 2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
        let mask_t = Tensor::<B::InnerBackend, 2, Bool>::from_data(
            TensorData::new(completion, [1, n]),
            &device,
        );
        let attention = Tensor::<B::InnerBackend, 2, Bool>::from_data(
            TensorData::new(vec![true; n], [1, n]),
            &device,
        );
        let out = loaded.model.forward(ids_t.clone(), attention);
        let (labels, mask) = next_token_targets(ids_t, mask_t);
        let per_token: Vec<f64> = token_logps(out.logits, labels, mask)
            .into_data()
            .convert::<f64>()
            .to_vec()
            .unwrap_or_default();
        // Position t scores token t + 1: the completion's scores sit one position earlier.
        let start = split.prompt.len().saturating_sub(1);
        let logps: Vec<f64> = per_token[start..start + split.completion.len()].to_vec();
        Ok(serde_json::json!({
            "model": args.model.display().to_string(),
            "backend": B::name(&device),
            "prompt_ids": split.prompt,
            "completion_ids": split.completion,
            "eos_appended": !args.no_eos,
            "completion_tokens": split.completion.iter().map(|&i| tokenizer.id_to_token(i)).collect::<Vec<_>>(),
            "token_logps": logps,
            "sum_logp": logps.iter().sum::<f64>(),
        }))
    }
}

/// Prints the JSON result on stdout.
pub fn run(args: Args) -> Result<()> {
    let kind: BackendKind = args.backend.parse()?;
    if args.prompt.is_empty() {
        return Err(anyhow!(
            "--prompt is empty: the first completion token needs a context to be scored"
        ));
    }
    let value = run_on(kind, Job(args))??;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
