//! `ganpo trl dpo ...`: a `trl dpo` command line, as it is, run by ganpo.

use anyhow::{Result, bail};

use crate::trl::Recipe;

/// Options of `ganpo trl`: TRL's trainer name and its flags, read as `trl` reads them.
#[derive(clap::Args)]
#[command(
    after_help = "Example: ganpo trl dpo --config dpo.yaml --learning_rate 5e-7 \
                  --dataset_name trl-lib/ultrafeedback_binarized\n\n\
                  Besides TRL's flags: --config FILE (TRL's YAML), --set KEY=VALUE (a ganpo \
                  run-config key), --dry-run (print the run.toml and stop)."
)]
pub struct Args {
    /// The TRL trainer: `dpo`.
    pub trainer: String,
    /// `trl dpo`'s flags (`--model_name_or_path M --learning_rate 5e-7 --use_peft ...`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "TRL FLAGS"
    )]
    pub flags: Vec<String>,
}

/// Reads the recipe (file, then flags), prints its run.toml and trains it.
pub fn run(args: Args) -> Result<()> {
    if args.trainer != "dpo" {
        bail!(
            "ganpo trl {}: ganpo runs TRL's `dpo` recipes (its losses are DPOConfig's)",
            args.trainer
        );
    }
    let (mut file, mut sets, mut dry_run, mut flags) = (None, Vec::new(), false, Vec::new());
    let mut it = args.flags.into_iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--config" => {
                file = Some(
                    it.next()
                        .ok_or_else(|| anyhow::anyhow!("--config needs a file"))?,
                )
            }
            "--set" => sets.push(
                it.next()
                    .ok_or_else(|| anyhow::anyhow!("--set needs KEY=VALUE"))?,
            ),
            "--dry-run" => dry_run = true,
            _ => match flag.strip_prefix("--config=") {
                Some(f) => file = Some(f.to_string()),
                None => flags.push(flag),
            },
        }
    }
    let mut recipe = match &file {
        Some(f) => Recipe::from_file(std::path::Path::new(f))?,
        None => Recipe::default(),
    };
    recipe.apply_flags(&flags)?;
    let origin = match &file {
        Some(f) => format!("{f} and the command line"),
        None => "the command line".into(),
    };
    let config = super::train::trl_run_config(&recipe, &sets, &origin)?;
    if dry_run {
        return Ok(());
    }
    super::train::run_config(config, None, vec![], None)
}
