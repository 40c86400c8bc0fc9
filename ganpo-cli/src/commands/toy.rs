//! `ganpo toy`: DPO vs DPO + GANPO on a tiny causal LM.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::backend::{BackendJob, BackendKind, run_on};
use ganpo_train::toy::{self, StepLog, ToyConfig, ToyReport};

/// Options of `ganpo toy`.
#[derive(clap::Args)]
pub struct Args {
    /// Compute backend: cpu, wgpu or cuda (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Optimizer steps per run.
    #[arg(long, default_value_t = ToyConfig::default().steps)]
    pub steps: usize,
    /// Preference pairs per step.
    #[arg(long, default_value_t = ToyConfig::default().pairs)]
    pub pairs: usize,
    /// Weight of the GANPO generator term.
    #[arg(long, default_value_t = 1.0)]
    pub adv_weight: f64,
    /// Seed for initialization and data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the full report (config, logged steps, results) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

struct Job(ToyConfig);

impl BackendJob for Job {
    type Output = Result<ToyReport, ganpo_train::train::TrainError>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        toy::run::<B>(&self.0, &device, print_step)
    }
}

fn print_step(entry: &StepLog) {
    let get = |k: &str| entry.get(k).unwrap_or(f64::NAN);
    println!(
        "{:<10} step {:>4}  loss {:>7.4}  rewards/margins {:>7.4}  rewards/accuracies {:>5.3}  gan/gen_loss {:>6.4}  gan/latent_drift {:>6.4}",
        entry.run,
        entry.step,
        get("loss"),
        get("rewards/margins"),
        get("rewards/accuracies"),
        get("gan/gen_loss"),
        get("gan/latent_drift"),
    );
}

fn print_summary(report: &ToyReport) {
    println!("\nheld-out pairs after {} steps:", report.config.steps);
    println!("{:<28} {:>12} {:>12}", "metric", "dpo", "dpo+ganpo");
    for key in [
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "gan/gen_loss",
        "gan/d_chosen_ref_vs_policy",
        "gan/latent_drift",
        "gan/latent_drift_rel",
    ] {
        let get = |s: &StepLog| s.get(key).unwrap_or(f64::NAN);
        println!(
            "{key:<28} {:>12.4} {:>12.4}",
            get(&report.dpo),
            get(&report.ganpo)
        );
    }
}

/// Runs both trainings, prints the log and the comparison, optionally writes the JSON report.
pub fn run(args: Args) -> Result<()> {
    let kind: BackendKind = args.backend.parse()?;
    let mut config = ToyConfig {
        steps: args.steps,
        pairs: args.pairs,
        seed: args.seed,
        ..ToyConfig::default()
    };
    config.ganpo.adv_weight = args.adv_weight;
    let report = run_on(kind, Job(config))??;
    print_summary(&report);
    if let Some(path) = args.json {
        ganpo_train::io::write_json(&path, &report)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
