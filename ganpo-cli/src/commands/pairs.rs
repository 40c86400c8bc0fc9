//! `ganpo pairs`: preference pairs (best vs worst completion per prompt) from scored samples.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ganpo_train::data::read_rows;
use ganpo_train::io::write_jsonl;
use ganpo_train::rollout::{PairSettings, Sample, best_worst_pairs};

/// Options of `ganpo pairs`.
#[derive(clap::Args)]
pub struct Args {
    /// Scored samples (`ganpo sample`, then `ganpo score --out`).
    #[arg(long)]
    pub samples: PathBuf,
    /// Where to write the pairs (JSONL in TRL's standard format, plus their rewards).
    #[arg(long)]
    pub out: PathBuf,
    /// Probability of swapping chosen and rejected (simulated label noise).
    #[arg(long, default_value_t = 0.0)]
    pub label_noise: f64,
    /// Seed of the label noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Pairs the samples, writes them and prints the counts.
pub fn run(args: Args) -> Result<()> {
    if !(0.0..=1.0).contains(&args.label_noise) {
        bail!("--label-noise must lie in [0, 1]");
    }
    let samples = read_rows::<Sample>(&args.samples)?;
    let settings = PairSettings {
        label_noise: args.label_noise,
        seed: args.seed,
    };
    let (pairs, stats) = best_worst_pairs(&samples, &settings)
        .with_context(|| format!("pairing {}", args.samples.display()))?;
    write_jsonl(&args.out, &pairs).with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}
