//! `ganpo reward train` / `ganpo reward eval`: reward models (sequence classifiers) trained on
//! labelled texts or preference pairs, and their held-out accuracy.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::prelude::{Backend, Tensor};
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendJob, BackendKind, run_on};
use ganpo_models::classifier::{
    SequenceClassifier, export_classifier, is_classifier_config, load_classifier,
};
use ganpo_models::export::TokenizerFiles;
use ganpo_models::hf::read_json;
use ganpo_models::nn::principal_embeddings;
use ganpo_models::{ModelConfig, Tokenizer};
use ganpo_train::data::split_indices;
use ganpo_train::io::write_jsonl;
use ganpo_train::reward::RewardCheckpoints;
use ganpo_train::reward::{LabelNames, load_reward_data};
use ganpo_train::reward::{
    RewardConfig, RewardData, RewardEval, Trainable, evaluate_reward_model, train_reward_model,
};
use serde_json::json;

/// `ganpo reward` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Train a reward model: a classification head (and optionally the whole backbone) on
    /// labelled texts (`text`, `label`: cross-entropy) or preference pairs (`chosen`, `rejected`:
    /// Bradley-Terry); writes an HF `*ForSequenceClassification` directory.
    Train(TrainArgs),
    /// Held-out loss and accuracy of a reward model on labelled texts or pairs (JSON).
    Eval(EvalArgs),
}

/// Options of `ganpo reward train`.
#[derive(clap::Args, Clone)]
pub struct TrainArgs {
    /// Starting point: a causal LM (HF directory, .gguf, .onnx) that gets a new head, or a
    /// classifier directory to train further.
    #[arg(long)]
    pub model: PathBuf,
    /// Start the backbone from random weights: `--model` is then a directory with `config.json`
    /// and tokenizer files only.
    #[arg(long)]
    pub init: bool,
    /// With `--init`: start the token embeddings from this LM's (same tokenizer), projected on
    /// their `hidden_size` principal components. A small model trained from scratch then knows
    /// which words mean alike and generalizes further (docs/reward-models.md).
    #[arg(long, requires = "init")]
    pub init_embeddings: Option<PathBuf>,
    /// Training data: .jsonl or .parquet rows, all `text` + `label` or all `chosen` + `rejected`
    /// (optional `prompt`, conversational or implicit-prompt format, optional `margin`).
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out data in the same format; without it `--eval-fraction` of `--data` is held out.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Share of `--data` held out for evaluation when `--eval-data` is not given.
    #[arg(long, default_value_t = 0.1)]
    pub eval_fraction: f64,
    /// Label names in class order, comma-separated (`negative,positive`); needed when labels
    /// are written as names. The reward is the log-odds of the last label against the first.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Where to write the reward model (HF directory; must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// What is trained: the head alone on a frozen backbone (fast), or all parameters.
    #[arg(long, default_value = "all")]
    pub trainable: Trainable,
    /// Keep only the first N decoder layers of the backbone (a smaller, faster reward model).
    #[arg(long)]
    pub num_layers: Option<usize>,
    /// Passes over the training data.
    #[arg(long, default_value_t = RewardConfig::default().epochs)]
    pub epochs: usize,
    /// Examples (texts or pairs) per step.
    #[arg(long, default_value_t = RewardConfig::default().batch_size)]
    pub batch_size: usize,
    /// Peak learning rate (warm-up over 5% of the steps, then cosine decay).
    #[arg(long, default_value_t = RewardConfig::default().lr)]
    pub lr: f64,
    /// AdamW's decoupled weight decay (TRL's `weight_decay`); more of it holds back a small
    /// model that memorizes its training texts.
    #[arg(long, default_value_t = RewardConfig::default().weight_decay)]
    pub weight_decay: f64,
    /// TRL's `center_rewards_coefficient` (pairs).
    #[arg(long)]
    pub center_rewards_coefficient: Option<f64>,
    /// Longest text in tokens; longer ones keep their start.
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
    /// Seed of the split, the data order and new weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save the training state every N steps in `OUT.checkpoints/` (as TRL's `save_steps`); a
    /// run that finds a checkpoint there resumes from it. Deleted when training ends.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub save_steps: u64,
    /// Compute backend: cpu, wgpu or cuda (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

impl TrainArgs {
    /// Where the training state is saved while training (`OUT.checkpoints`).
    pub fn checkpoint_dir(&self) -> PathBuf {
        let mut name = self.out.file_name().unwrap_or_default().to_os_string();
        name.push(".checkpoints");
        self.out.with_file_name(name)
    }
}

/// Options of `ganpo reward eval`.
#[derive(clap::Args, Clone)]
pub struct EvalArgs {
    /// The reward model (classifier directory with its tokenizer).
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled texts or pairs (.jsonl or .parquet).
    #[arg(long)]
    pub data: PathBuf,
    /// Longest text in tokens; longer ones keep their start.
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Compute backend: cpu, wgpu or cuda (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

/// The JSON object both commands print and `eval_results.json` holds (TRL's `eval_` names).
fn eval_json(e: &RewardEval) -> serde_json::Value {
    json!({
        "eval_loss": e.loss,
        "eval_accuracy": e.accuracy,
        "eval_mean_reward": e.mean_reward,
        "eval_margin": e.margin,
        "eval_samples": e.n,
    })
}

/// Where training starts: a classifier to train further, or a backbone that gets a new head.
// Built once per run; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Start<B: Backend> {
    Classifier(SequenceClassifier<B>),
    Backbone(ganpo_models::Lm<B>),
}

/// Loads the starting point of `args` with its configuration and tokenizer.
fn load_start<B: Backend>(
    args: &TrainArgs,
    device: &B::Device,
) -> Result<(ModelConfig, Start<B>, Tokenizer)> {
    let config_path = args.model.join("config.json");
    B::seed(device, args.seed);
    if args.init {
        let json = read_json(&config_path)
            .context("--init needs a model directory with config.json and tokenizer files")?;
        let config = ModelConfig::from_hf(&json, &config_path)?;
        let tokenizer = Tokenizer::from_dir(&args.model)?;
        tokenizer.check_vocab(config.vocab_size())?;
        let mut backbone = config.init::<B>(device);
        if let Some(from) = &args.init_embeddings {
            let embeddings = principal_embeddings_of::<B>(from, &tokenizer, &config, device)?;
            backbone.set_input_embeddings(embeddings)?;
        }
        return Ok((config, Start::Backbone(backbone), tokenizer));
    }
    if args.model.is_dir() && is_classifier_config(&read_json(&config_path)?) {
        let loaded = load_classifier::<B>(&args.model, device)
            .with_context(|| format!("loading {}", args.model.display()))?;
        let tokenizer = loaded
            .tokenizer
            .with_context(|| format!("{} has no tokenizer.json", args.model.display()))?;
        return Ok((loaded.config, Start::Classifier(loaded.model), tokenizer));
    }
    let (loaded, tokenizer) = super::load_with_tokenizer::<B>(&args.model, device)?;
    Ok((loaded.config, Start::Backbone(loaded.model), tokenizer))
}

/// The token embeddings of the LM at `from`, projected on the principal components that fit
/// `config`; `from` must share `tokenizer`.
fn principal_embeddings_of<B: Backend>(
    from: &Path,
    tokenizer: &Tokenizer,
    config: &ModelConfig,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    let (source, source_tokenizer) = super::load_with_tokenizer::<B>(from, device)
        .with_context(|| format!("--init-embeddings {}", from.display()))?;
    let same = source_tokenizer.vocab_size() == tokenizer.vocab_size()
        && (0..tokenizer.vocab_size() as u32)
            .all(|id| source_tokenizer.id_to_token(id) == tokenizer.id_to_token(id));
    if !same {
        bail!(
            "--init-embeddings {}: its tokenizer differs from the new model's ({} vs {} tokens, or \
             the same ids name other tokens)",
            from.display(),
            source_tokenizer.vocab_size(),
            tokenizer.vocab_size()
        );
    }
    let weight = source.model.input_embeddings();
    let [vocab, d] = weight.dims();
    if vocab != config.vocab_size() {
        bail!(
            "--init-embeddings {}: {vocab} token embeddings, the new model has vocab_size {}",
            from.display(),
            config.vocab_size()
        );
    }
    let k = config.hidden_size();
    principal_embeddings(weight, k).with_context(|| {
        format!(
            "--init-embeddings {}: its embeddings are {d} wide, fewer than the new model's \
             hidden_size {k}",
            from.display()
        )
    })
}

/// Reads the training and held-out data.
fn datasets(
    args: &TrainArgs,
    tokenizer: &Tokenizer,
) -> Result<(RewardData, RewardData, Vec<String>)> {
    let names = if args.labels.is_empty() {
        LabelNames::FromData
    } else {
        LabelNames::Given(args.labels.clone())
    };
    let (data, labels) = load_reward_data(&args.data, tokenizer, &names, args.max_length)?;
    if let Some(path) = &args.eval_data {
        let (eval, eval_labels) = load_reward_data(
            path,
            tokenizer,
            &LabelNames::Given(labels.clone()),
            args.max_length,
        )?;
        if std::mem::discriminant(&eval) != std::mem::discriminant(&data) {
            bail!(
                "{}: labelled texts and pairs do not mix with {}",
                path.display(),
                args.data.display()
            );
        }
        return Ok((data, eval, eval_labels));
    }
    let (train, eval) = split_indices(data.len(), args.eval_fraction, args.seed);
    let pick = |idx: &[usize]| match &data {
        RewardData::Labelled(v) => {
            RewardData::Labelled(idx.iter().map(|&i| v[i].clone()).collect())
        }
        RewardData::Pairs(v) => RewardData::Pairs(idx.iter().map(|&i| v[i].clone()).collect()),
    };
    Ok((pick(&train), pick(&eval), labels))
}

/// Trains as `args` says, writes the model and its metrics, returns the held-out metrics.
pub fn train<B: AutodiffBackend>(args: &TrainArgs, device: &B::Device) -> Result<RewardEval> {
    if args.out.exists() {
        bail!(
            "{} already exists; choose another --out",
            args.out.display()
        );
    }
    if !(args.weight_decay.is_finite() && args.weight_decay >= 0.0) {
        bail!(
            "--weight-decay {}: expected a number >= 0",
            args.weight_decay
        );
    }
    let (mut config, start, tokenizer) = load_start::<B>(args, device)?;
    let (data, eval, labels) = datasets(args, &tokenizer)?;
    let mut model = match start {
        Start::Classifier(m) if m.labels() != labels => bail!(
            "{} has labels [{}], the data [{}]",
            args.model.display(),
            m.labels().join(", "),
            labels.join(", ")
        ),
        Start::Classifier(m) => m,
        Start::Backbone(lm) => SequenceClassifier::new(lm, labels.clone(), device),
    };
    if let Some(n) = args.num_layers {
        config = model.backbone.truncate_layers(&config, n)?;
    }
    let pad = super::data::pad_id(&tokenizer);
    tracing::info!(
        "training a reward model ({} labels, {} parameters, {:?}) on {} {} from {}; {} held out",
        labels.len(),
        burn::module::Module::num_params(&model),
        args.trainable,
        data.len(),
        if matches!(data, RewardData::Pairs(_)) {
            "pairs"
        } else {
            "texts"
        },
        args.data.display(),
        eval.len()
    );
    let reward_config = RewardConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        center_rewards_coefficient: args.center_rewards_coefficient,
        trainable: args.trainable,
        seed: args.seed,
        ..RewardConfig::default()
    };
    let total = data.len().div_ceil(args.batch_size.max(1)) * args.epochs;
    let bar = super::progress_bar(total as u64, "reward");
    let mut log = Vec::new();
    // One writer per checkpoint directory, from its first checkpoint to the end.
    let _lock = ganpo_train::io::RunLock::acquire(&args.checkpoint_dir())?;
    let checkpoints = RewardCheckpoints {
        dir: args.checkpoint_dir(),
        every: args.save_steps as usize,
    };
    let model = train_reward_model(
        model,
        &data,
        &reward_config,
        pad,
        device,
        Some(&checkpoints),
        |s| {
            log.push(serde_json::to_value(s).expect("a step serializes"));
            let msg = format!("loss {:.4} acc {:.3}", s.loss, s.accuracy);
            super::report_step(&bar, "reward", s.step, s.total, &msg);
        },
    )?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let model = model.valid();
    let result = evaluate_reward_model(&model, &eval, pad, args.batch_size.max(8), device);
    // A Hub id is its cached snapshot (already complete: the model was loaded from it).
    let source = super::model_path(&args.model)?;
    let files = if source.is_dir() {
        TokenizerFiles::Dir(&source)
    } else {
        TokenizerFiles::Tokenizer(&tokenizer)
    };
    export_classifier(&model, &config, pad, files, &args.out)?;
    write_jsonl(&args.out.join("metrics.jsonl"), &log)?;
    write_json(&args.out.join("eval_results.json"), &eval_json(&result))?;
    // The model is written: the training state is not needed any more.
    let _ = std::fs::remove_dir_all(&checkpoints.dir);
    Ok(result)
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Evaluates the reward model of `args`.
pub fn eval<B: Backend>(args: &EvalArgs, device: &B::Device) -> Result<RewardEval> {
    let loaded = load_classifier::<B>(&args.model, device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let tokenizer = loaded
        .tokenizer
        .with_context(|| format!("{} has no tokenizer.json", args.model.display()))?;
    let labels = LabelNames::Given(loaded.model.labels().to_vec());
    let (data, _) = load_reward_data(&args.data, &tokenizer, &labels, args.max_length)?;
    let pad = super::data::pad_id(&tokenizer);
    Ok(evaluate_reward_model(
        &loaded.model,
        &data,
        pad,
        args.batch_size,
        device,
    ))
}

enum Job {
    Train(TrainArgs),
    Eval(EvalArgs),
}

impl BackendJob for Job {
    type Output = Result<RewardEval>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        match self {
            Job::Train(a) => train::<B>(&a, &device),
            Job::Eval(a) => eval::<B::InnerBackend>(&a, &device),
        }
    }
}

/// Runs a `ganpo reward` subcommand and prints its held-out metrics as JSON.
pub fn run(command: Command) -> Result<()> {
    let (backend, job, out) = match command {
        Command::Train(a) => {
            if a.epochs == 0 || a.batch_size == 0 || a.max_length == 0 {
                bail!("--epochs, --batch-size and --max-length must be at least 1");
            }
            (a.backend.clone(), Job::Train(a.clone()), Some(a.out))
        }
        Command::Eval(a) => (a.backend.clone(), Job::Eval(a), None),
    };
    let kind: BackendKind = backend.parse()?;
    let result = run_on(kind, job)??;
    let mut report = eval_json(&result);
    if let Some(out) = out {
        report["model"] = json!(out.display().to_string());
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
