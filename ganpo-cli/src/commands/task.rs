//! `ganpo task`: write a built-in task's files (untrained model, SFT text, prompts).

use std::path::PathBuf;

use anyhow::{Context, Result};
use ganpo_train::task::{TaskSpec, write_task};

/// Options of `ganpo task`.
#[derive(clap::Args)]
pub struct Args {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the drawn reviews and prompts.
    #[arg(long, default_value_t = TaskSpec::default().seed)]
    pub seed: u64,
    /// Reviews for supervised fine-tuning.
    #[arg(long, default_value_t = TaskSpec::default().sft_examples)]
    pub sft_examples: usize,
    /// Training prompts.
    #[arg(long, default_value_t = TaskSpec::default().train_prompts)]
    pub train_prompts: usize,
    /// Held-out prompts.
    #[arg(long, default_value_t = TaskSpec::default().eval_prompts)]
    pub eval_prompts: usize,
    /// Width of the model.
    #[arg(long, default_value_t = TaskSpec::default().hidden_size)]
    pub hidden_size: usize,
    /// Decoder layers of the model.
    #[arg(long, default_value_t = TaskSpec::default().layers)]
    pub layers: usize,
}

impl Args {
    /// The task instance these options describe.
    pub fn spec(&self) -> TaskSpec {
        TaskSpec {
            seed: self.seed,
            sft_examples: self.sft_examples,
            train_prompts: self.train_prompts,
            eval_prompts: self.eval_prompts,
            hidden_size: self.hidden_size,
            layers: self.layers,
        }
    }
}

/// Writes the task and lists its files.
pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(
        args.hidden_size >= 8 && args.hidden_size.is_multiple_of(4) && args.layers >= 1,
        "--hidden-size must be a multiple of 4 (at least 8) and --layers at least 1"
    );
    let files = write_task(&args.out, &args.spec())
        .with_context(|| format!("writing the task under {}", args.out.display()))?;
    println!(
        "model (untrained): {}\nSFT text: {}\nprompts: {}, {}\nreward: oracle:sentiment",
        files.model.display(),
        files.sft.display(),
        files.train_prompts.display(),
        files.eval_prompts.display()
    );
    Ok(())
}
