//! `ganpo eval`: DPO / GANPO evaluation metrics of a model on a dataset, as TRL reports them.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendJob, BackendKind, run_on_device};
use ganpo_core::loss::WeightedLoss;
use ganpo_core::{LossKind, PreferenceLoss};
use ganpo_train::data::{Truncation, TruncationMode};
use ganpo_train::train::{EvalSettings, evaluate};

/// Options of `ganpo eval`.
#[derive(clap::Args)]
pub struct Args {
    /// The model to evaluate: an HF directory, a .gguf file or an .onnx export (config.json beside it) (with a tokenizer).
    #[arg(long)]
    pub model: PathBuf,
    /// The reference model; default: the model itself (rewards are then 0).
    #[arg(long)]
    pub ref_model: Option<PathBuf>,
    /// A PEFT adapter directory on --model (a LoRA run's `final/`): the policy is --model with
    /// it, the reference (without --ref-model) --model without it.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Dataset files (.jsonl), standard, conversational or implicit-prompt format.
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Loss types (TRL's `loss_type`): sigmoid, robust, hinge, ipo, sigmoid_norm, simpo, sft,
    /// exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop,
    /// orpo.
    #[arg(long = "loss-type", default_value = "sigmoid", value_delimiter = ',')]
    pub loss_type: Vec<String>,
    /// Weights of the loss types (TRL's `loss_weights`); default 1 each.
    #[arg(long, value_delimiter = ',')]
    pub loss_weights: Vec<f64>,
    /// Temperature beta.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// Label smoothing.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// SimPO's gamma.
    #[arg(long, default_value_t = 0.5)]
    pub simpo_gamma: f64,
    /// DiscoPOP's temperature (TRL's `discopop_tau`).
    #[arg(long, default_value_t = 0.05)]
    pub discopop_tau: f64,
    /// TRL's `f_divergence_type`: reverse_kl, forward_kl, js_divergence or alpha_divergence.
    #[arg(long, default_value = "reverse_kl")]
    pub f_divergence_type: String,
    /// The alpha of alpha_divergence (TRL's `f_alpha_divergence_coef`).
    #[arg(long, default_value_t = 0.5)]
    pub f_alpha_divergence_coef: f64,
    /// WPO weighting (TRL's `use_weighting`).
    #[arg(long)]
    pub use_weighting: bool,
    /// LD-DPO's weight of the tokens past the shorter completion (TRL's `ld_alpha`, in [0, 1]).
    #[arg(long)]
    pub ld_alpha: Option<f64>,
    /// KTO: the weight of the desirable examples' losses (TRL's `desirable_weight`).
    #[arg(long)]
    pub desirable_weight: Option<f64>,
    /// KTO: the weight of the undesirable examples' losses (TRL's `undesirable_weight`).
    #[arg(long)]
    pub undesirable_weight: Option<f64>,
    /// Longest prompt + completion in tokens; 0 = no limit.
    #[arg(long, default_value_t = 1024)]
    pub max_length: usize,
    /// `keep_start` or `keep_end`.
    #[arg(long, default_value = "keep_start")]
    pub truncation_mode: String,
    /// Pairs per batch (metrics other than the loss are means of batch means, as in TRL).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Run the LM head and log-softmax on this many scored rows at a time (as
    /// `train.logprob_chunk_rows`), so no `[rows, vocab]` logits exist for all rows at once.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub logprob_chunk_rows: Option<u64>,
    /// Drop and count malformed records instead of failing.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Compute backend: cpu, wgpu or cuda (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Device index on that backend (CUDA ordinal, wgpu discrete GPU).
    #[arg(long)]
    pub device: Option<usize>,
}

fn loss(args: &Args) -> Result<PreferenceLoss> {
    if !args.loss_weights.is_empty() && args.loss_weights.len() != args.loss_type.len() {
        bail!(
            "--loss-weights has {} values for {} loss types",
            args.loss_weights.len(),
            args.loss_type.len()
        );
    }
    let losses = args
        .loss_type
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let kind: LossKind = serde_json::from_value(serde_json::Value::String(name.clone()))
                .map_err(|_| {
                    let names: Vec<&str> = LossKind::ALL.iter().map(|k| k.name()).collect();
                    anyhow::anyhow!("--loss-type {name:?}: expected one of {}", names.join(", "))
                })?;
            Ok(WeightedLoss {
                kind,
                weight: args.loss_weights.get(i).copied().unwrap_or(1.0),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let loss = PreferenceLoss {
        losses,
        beta: args.beta,
        label_smoothing: args.label_smoothing,
        simpo_gamma: args.simpo_gamma,
        discopop_tau: args.discopop_tau,
        f_divergence_type: serde_json::from_value(serde_json::Value::String(
            args.f_divergence_type.clone(),
        ))
        .map_err(|_| {
            anyhow::anyhow!(
                "--f-divergence-type {:?}: expected reverse_kl, forward_kl, js_divergence or \
                 alpha_divergence",
                args.f_divergence_type
            )
        })?,
        f_alpha_divergence_coef: args.f_alpha_divergence_coef,
        use_weighting: args.use_weighting,
        ld_alpha: args.ld_alpha,
        desirable_weight: args.desirable_weight,
        undesirable_weight: args.undesirable_weight,
    };
    loss.validate()?;
    Ok(loss)
}

struct Job(Args, PreferenceLoss, Truncation);

impl BackendJob for Job {
    type Output = Result<serde_json::Value>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<serde_json::Value> {
        let Job(args, loss, truncation) = self;
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let (mut loaded, tokenizer) = super::load_with_tokenizer::<I<B>>(&args.model, &device)?;
        let base = match &args.adapter {
            Some(dir) => {
                let plain = loaded.model.clone();
                loaded.model = super::load_adapter(loaded.model, &args.model, dir)?.0;
                Some(plain)
            }
            None => None,
        };
        let reference = args
            .ref_model
            .as_deref()
            .map(|p| {
                super::load_reference::<I<B>>(p, loaded.config.vocab_size(), "--ref-model", &device)
            })
            .transpose()?;
        // KTO's KL completions are cycled within blocks of the batch size (TRL cycles them in
        // blocks of per_device_train_batch_size).
        let data = super::data::load_dataset(
            &args.data,
            &tokenizer,
            &truncation,
            args.skip_invalid,
            &loss,
            args.batch_size,
        )?;
        let settings = EvalSettings {
            loss,
            pooling: Default::default(),
            truncation,
            pad_id: super::data::pad_id(&tokenizer),
            pad_to_multiple_of: None,
            batch_size: args.batch_size,
            logprob_chunk_rows: args.logprob_chunk_rows.map(|n| n as usize),
        };
        let reference = reference
            .as_ref()
            .or(base.as_ref())
            .unwrap_or(&loaded.model);
        let metrics = evaluate::<I<B>, _, _>(
            &loaded.model,
            Some(reference),
            None,
            None,
            &data,
            &settings,
            &device,
        )?;
        let mut out = serde_json::Map::new();
        for (k, v) in metrics {
            out.insert(format!("eval_{k}"), serde_json::json!(v));
        }
        out.insert("eval_pairs".into(), serde_json::json!(data.len()));
        Ok(serde_json::Value::Object(out))
    }
}

/// Prints the metrics as one JSON object.
pub fn run(args: Args) -> Result<()> {
    let kind: BackendKind = args.backend.parse()?;
    let loss = loss(&args)?;
    let mode = match args.truncation_mode.as_str() {
        "keep_start" => TruncationMode::KeepStart,
        "keep_end" => TruncationMode::KeepEnd,
        other => bail!("--truncation-mode {other:?}: expected keep_start or keep_end"),
    };
    let truncation = Truncation {
        max_length: (args.max_length > 0).then_some(args.max_length),
        max_prompt_length: None,
        mode,
    };
    if args.batch_size == 0 {
        bail!("--batch-size must be positive");
    }
    let device = args.device;
    let value = run_on_device(kind, device, Job(args, loss, truncation))??;
    println!("{}", serde_json::to_string(&value)?);
    Ok(())
}
