//! `ganpo score`: rewards of generations (`prompt` + `completion` rows), added as a `reward` field.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ganpo_train::data::read_rows;
use ganpo_train::io::write_jsonl;
use ganpo_train::rollout::{MeanEstimate, Reward};
use serde_json::{Map, Value};

/// Options of `ganpo score`.
#[derive(clap::Args)]
pub struct Args {
    /// The reward function: `oracle:sentiment` (the quickstart task's exact sentiment).
    #[arg(long)]
    pub reward: String,
    /// Generations: JSONL or Parquet rows with `prompt` and `completion` text (as `ganpo sample`
    /// writes them).
    #[arg(long)]
    pub samples: PathBuf,
    /// Write the rows with their `reward` here (JSONL); other fields are kept.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct Row {
    prompt: String,
    completion: String,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// Scores every row of `path` with `reward`: the rows (a `reward` field set) and the rewards.
pub fn score_file(path: &Path, reward: Reward) -> Result<(Vec<Value>, Vec<f64>)> {
    let rows = read_rows::<Row>(path)?;
    let mut out = Vec::with_capacity(rows.len());
    let mut rewards = Vec::with_capacity(rows.len());
    for row in rows {
        let r = reward.score(&row.prompt, &row.completion);
        let mut obj = row.rest;
        obj.insert("prompt".into(), row.prompt.into());
        obj.insert("completion".into(), row.completion.into());
        obj.insert("reward".into(), r.into());
        out.push(Value::Object(obj));
        rewards.push(r);
    }
    Ok((out, rewards))
}

/// Scores, optionally writes, and prints the mean reward with its standard error.
pub fn run(args: Args) -> Result<()> {
    let reward: Reward = args.reward.parse()?;
    let (rows, rewards) = score_file(&args.samples, reward)?;
    if let Some(out) = &args.out {
        write_jsonl(out, &rows).with_context(|| format!("writing {}", out.display()))?;
    }
    let m = MeanEstimate::of(&rewards);
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "reward": reward.name(),
            "mean": m.mean,
            "std_error": m.std_error,
            "n": m.n,
        }))?
    );
    Ok(())
}
