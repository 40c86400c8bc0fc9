//! The `ganpo` command-line tool.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::{Parser, Subcommand};
use ganpo_core::backend::{BackendJob, BackendKind, run_on};
use ganpo_train::toy::{self, StepLog, ToyConfig, ToyReport};

/// Preference optimization of causal language models with GANPO.
#[derive(Parser)]
#[command(name = "ganpo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a tiny causal LM with DPO and with DPO + GANPO from the same start on a synthetic
    /// task, then compare them on held-out pairs (about a minute on 2 CPU cores).
    Toy {
        /// Compute backend: cpu, wgpu or cuda (among those compiled in).
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Optimizer steps per run.
        #[arg(long, default_value_t = ToyConfig::default().steps)]
        steps: usize,
        /// Preference pairs per step.
        #[arg(long, default_value_t = ToyConfig::default().pairs)]
        pairs: usize,
        /// Weight of the GANPO generator term.
        #[arg(long, default_value_t = 1.0)]
        adv_weight: f64,
        /// Seed for initialization and data.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write the full report (config, logged steps, results) as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// List the compute backends compiled into this binary.
    Backends,
}

struct ToyJob(ToyConfig);

impl BackendJob for ToyJob {
    type Output = ToyReport;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> ToyReport {
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

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    match Cli::parse().command {
        Command::Toy {
            backend,
            steps,
            pairs,
            adv_weight,
            seed,
            json,
        } => {
            let kind: BackendKind = backend.parse()?;
            let mut config = ToyConfig {
                steps,
                pairs,
                seed,
                ..ToyConfig::default()
            };
            config.ganpo.adv_weight = adv_weight;
            let report = run_on(kind, ToyJob(config))?;
            print_summary(&report);
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report)?;
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, &path)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("report written to {}", path.display());
            }
        }
        Command::Backends => {
            for kind in BackendKind::ALL {
                let state = if kind.is_compiled() {
                    "compiled in"
                } else {
                    "not compiled in"
                };
                println!(
                    "{:<5} {state} (cargo feature `{}`)",
                    kind.name(),
                    kind.feature()
                );
            }
        }
    }
    Ok(())
}
