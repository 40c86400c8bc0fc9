//! `ganpo export`: write a model as an HF directory (for example a GGUF converted for transformers).

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::backend::NdArray;
use ganpo_models::export::export_hf;
use ganpo_models::load_model;

/// Options of `ganpo export`.
#[derive(clap::Args)]
pub struct Args {
    /// Model: an HF directory or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// Directory to create (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

/// Loads the model and writes it, with its tokenizer files when the source is an HF directory.
pub fn run(args: Args) -> Result<()> {
    let loaded = load_model::<NdArray>(&args.model, &Default::default())
        .with_context(|| format!("loading {}", args.model.display()))?;
    let tokenizer_dir = (args.model.is_dir() && args.model.join("tokenizer.json").is_file())
        .then_some(args.model.as_path());
    export_hf(&loaded.model, &loaded.config, tokenizer_dir, &args.out)
        .with_context(|| format!("exporting to {}", args.out.display()))?;
    println!(
        "exported {} to {}",
        args.model.display(),
        args.out.display()
    );
    Ok(())
}
