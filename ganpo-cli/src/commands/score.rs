//! `ganpo score`: rewards of generations (`prompt` + `completion` rows), added as a `reward` field.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendJob, BackendKind, run_on};
use ganpo_train::data::read_rows;
use ganpo_train::io::write_jsonl;
use ganpo_train::reward::{Reward, RewardModel};
use ganpo_train::rollout::MeanEstimate;
use serde_json::{Map, Value};

/// Options of `ganpo score`.
#[derive(clap::Args)]
pub struct Args {
    /// The reward function: `oracle:sentiment` (the quickstart task's exact sentiment), or
    /// `model:DIR`, a reward model (`ganpo reward train`, or a transformers
    /// `*ForSequenceClassification` directory with its tokenizer) scoring prompt + completion.
    #[arg(long)]
    pub reward: String,
    /// Generations: JSONL or Parquet rows with `prompt` and `completion` text (as `ganpo sample`
    /// writes them).
    #[arg(long)]
    pub samples: PathBuf,
    /// Write the rows with their `reward` here (JSONL); other fields are kept.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Texts per forward pass of a reward model.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Longest text a reward model reads, in tokens; longer ones keep their start.
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
    /// Compute backend of a reward model: cpu, wgpu or cuda (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

/// How rows are scored.
pub enum Scorer {
    /// A built-in reward function.
    Oracle(Reward),
    /// A reward model directory, with the batch size, length limit and backend to run it.
    Model {
        /// The classifier directory.
        dir: PathBuf,
        /// Texts per forward pass.
        batch_size: usize,
        /// Longest text in tokens.
        max_length: usize,
        /// Where it runs.
        backend: BackendKind,
    },
}

impl Scorer {
    /// The scorer `args` names.
    pub fn of(args: &Args) -> Result<Self> {
        Ok(match args.reward.strip_prefix("model:") {
            Some(dir) => Self::Model {
                dir: dir.into(),
                batch_size: args.batch_size.max(1),
                max_length: args.max_length.max(1),
                backend: args.backend.parse()?,
            },
            None => Self::Oracle(args.reward.parse()?),
        })
    }

    /// The reward of each `(prompt, completion)`.
    pub fn score(&self, rows: &[(String, String)]) -> Result<Vec<f64>> {
        match self {
            Self::Oracle(r) => Ok(rows.iter().map(|(p, c)| r.score(p, c)).collect()),
            Self::Model {
                dir,
                batch_size,
                max_length,
                backend,
            } => {
                let texts = rows.iter().map(|(p, c)| format!("{p}{c}")).collect();
                let job = ModelJob {
                    dir: dir.clone(),
                    texts,
                    batch_size: *batch_size,
                    max_length: *max_length,
                };
                run_on(*backend, job)?
            }
        }
    }

    /// The name printed with the mean.
    pub fn name(&self) -> String {
        match self {
            Self::Oracle(r) => r.name().to_string(),
            Self::Model { dir, .. } => format!("model:{}", dir.display()),
        }
    }
}

struct ModelJob {
    dir: PathBuf,
    texts: Vec<String>,
    batch_size: usize,
    max_length: usize,
}

impl BackendJob for ModelJob {
    type Output = Result<Vec<f64>>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let rm = RewardModel::<B::InnerBackend>::load(&self.dir, self.max_length, &device)
            .with_context(|| format!("loading the reward model {}", self.dir.display()))?;
        Ok(rm.score(&self.texts, self.batch_size, &device)?)
    }
}

#[derive(serde::Deserialize)]
struct Row {
    prompt: String,
    completion: String,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// Scores every row of `path` with `scorer`: the rows (a `reward` field set) and the rewards.
pub fn score_file(path: &Path, scorer: &Scorer) -> Result<(Vec<Value>, Vec<f64>)> {
    let rows = read_rows::<Row>(path)?;
    let texts: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.prompt.clone(), r.completion.clone()))
        .collect();
    let rewards = scorer.score(&texts)?;
    let out = rows
        .into_iter()
        .zip(&rewards)
        .map(|(row, &r)| {
            let mut obj = row.rest;
            obj.insert("prompt".into(), row.prompt.into());
            obj.insert("completion".into(), row.completion.into());
            obj.insert("reward".into(), r.into());
            Value::Object(obj)
        })
        .collect();
    Ok((out, rewards))
}

/// Scores, optionally writes, and prints the mean reward with its standard error.
pub fn run(args: Args) -> Result<()> {
    let scorer = Scorer::of(&args)?;
    let (rows, rewards) = score_file(&args.samples, &scorer)?;
    if let Some(out) = &args.out {
        write_jsonl(out, &rows).with_context(|| format!("writing {}", out.display()))?;
    }
    let m = MeanEstimate::of(&rewards);
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "reward": scorer.name(),
            "mean": m.mean,
            "std_error": m.std_error,
            "n": m.n,
        }))?
    );
    Ok(())
}
