//! `ganpo sft`: supervised fine-tuning on text, or on prompt/completion pairs (loss on the
//! completion), before preference training.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendJob, BackendKind, run_on};
use ganpo_models::export::{TokenizerFiles, export_hf};
use ganpo_models::{Init, ModelConfig, Tokenizer};
use ganpo_train::data::{read_rows, tokenize_prompt_completion};
use ganpo_train::train::{SftConfig, SftExample, SftStep, sft};

/// Options of `ganpo sft`.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Starting model: an HF directory, a .gguf file or an .onnx export (config.json beside it), with its tokenizer.
    #[arg(long)]
    pub model: PathBuf,
    /// Start from random weights: `--model` is then a directory with `config.json` and the
    /// tokenizer files only (as `ganpo task` writes it).
    #[arg(long)]
    pub init: bool,
    /// How `--init` draws the weights: `transformers` (N(0, 0.02), as PyTorch would start the
    /// same model) or `burn` (burn's module defaults; the quickstart's task was tuned with them).
    #[arg(long, default_value_t = Init::Transformers)]
    pub init_scheme: Init,
    /// Training data: .jsonl or .parquet rows with `text`, or with `prompt` and `completion`.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the fine-tuned model (HF directory; must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = SftConfig::default().steps)]
    pub steps: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = SftConfig::default().batch_size)]
    pub batch_size: usize,
    /// Peak learning rate (linear warm-up over 5% of the steps, then cosine decay).
    #[arg(long, default_value_t = SftConfig::default().lr)]
    pub lr: f64,
    /// Longest sequence in tokens; longer ones are cut at the end.
    #[arg(long, default_value_t = 1024)]
    pub max_length: usize,
    /// Seed of the data order (and of the random weights with --init).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Compute backend: cpu, wgpu or cuda (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

#[derive(serde::Deserialize)]
struct Row {
    text: Option<String>,
    prompt: Option<String>,
    completion: Option<String>,
}

/// Tokenizes the rows of `path`: `text` rows whole (EOS appended), `prompt` / `completion` rows
/// as TRL does, with the loss on the completion only.
pub fn load_examples(
    path: &Path,
    tokenizer: &Tokenizer,
    max_length: usize,
) -> Result<Vec<SftExample>> {
    let rows = read_rows::<Row>(path)?;
    let eos = tokenizer.eos_token_ids.first().copied();
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let mut example = match (row.text, row.prompt, row.completion) {
            (Some(text), None, None) => {
                let mut ids = tokenizer.encode(&text, true)?;
                if let Some(e) = eos.filter(|e| ids.last() != Some(e)) {
                    ids.push(e);
                }
                SftExample { ids, prompt_len: 0 }
            }
            (None, Some(prompt), Some(completion)) => {
                let split = tokenize_prompt_completion(tokenizer, &prompt, &completion)?;
                SftExample {
                    prompt_len: split.prompt.len(),
                    ids: [split.prompt, split.completion].concat(),
                }
            }
            _ => bail!(
                "{}: row {}: expected either a `text` field or `prompt` and `completion` fields",
                path.display(),
                i + 1
            ),
        };
        example.ids.truncate(max_length);
        out.push(example);
    }
    Ok(out)
}

/// Fine-tunes as `args` says and writes the model to `args.out`, with a progress bar on a
/// terminal; returns the last step's report.
pub fn fine_tune<B: AutodiffBackend>(args: &Args, device: &B::Device) -> Result<Option<SftStep>> {
    if args.out.exists() {
        bail!(
            "{} already exists; choose another --out",
            args.out.display()
        );
    }
    let (config, model, tokenizer) = if args.init {
        let path = args.model.join("config.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (--init needs a model config)", path.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let config = ModelConfig::from_hf(&json, &path)?;
        let tokenizer = Tokenizer::from_dir(&args.model)?;
        tokenizer.check_vocab(config.vocab_size())?;
        B::seed(device, args.seed);
        (
            config.clone(),
            config.init_with::<B>(args.init_scheme, device),
            tokenizer,
        )
    } else {
        let (loaded, tokenizer) = super::load_with_tokenizer::<B>(&args.model, device)?;
        (loaded.config, loaded.model, tokenizer)
    };
    let data = load_examples(&args.data, &tokenizer, args.max_length)?;
    tracing::info!(
        "fine-tuning {} ({} parameters) on {} sequences from {}",
        args.model.display(),
        burn::module::Module::num_params(&model),
        data.len(),
        args.data.display()
    );
    let sft_config = SftConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        ..SftConfig::default()
    };
    let bar = super::progress_bar(args.steps as u64, "sft");
    let mut last = None;
    let model = sft(
        model,
        &data,
        &sft_config,
        super::data::pad_id(&tokenizer),
        device,
        |s| {
            last = Some(*s);
            let msg = format!("loss {:.4}", s.loss);
            super::report_step(&bar, "sft", s.step, args.steps, &msg);
        },
    );
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // A Hub id is its cached snapshot (already complete: the model was loaded from it).
    let source = super::model_path(&args.model)?;
    let files = if source.is_dir() {
        TokenizerFiles::Dir(&source)
    } else {
        TokenizerFiles::Tokenizer(&tokenizer)
    };
    export_hf(&model.valid(), &config, files, &args.out)?;
    Ok(last)
}

struct Job(Args);

impl BackendJob for Job {
    type Output = Result<Option<SftStep>>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        fine_tune::<B>(&self.0, &device)
    }
}

/// Fine-tunes and reports the final loss.
pub fn run(args: Args) -> Result<()> {
    if args.steps == 0 || args.batch_size == 0 || args.max_length < 2 {
        bail!("--steps and --batch-size must be at least 1, --max-length at least 2");
    }
    let kind: BackendKind = args.backend.parse()?;
    let out = args.out.clone();
    if let Some(last) = run_on(kind, Job(args))?? {
        println!(
            "final loss {:.4} (step {}); wrote {}",
            last.loss,
            last.step,
            out.display()
        );
    }
    Ok(())
}
