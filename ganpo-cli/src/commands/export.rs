//! `ganpo export`: write a model as an HF directory (for example a GGUF converted for transformers).

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::backend::NdArray;
use ganpo_models::export::{TokenizerFiles, export_hf};
use ganpo_models::load_model;

/// Options of `ganpo export`.
#[derive(clap::Args)]
pub struct Args {
    /// Model: an HF directory, a .gguf file or an .onnx export (config.json beside it).
    #[arg(long)]
    pub model: PathBuf,
    /// Directory to create (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

/// Loads the model and writes it with its tokenizer: the files of an HF directory, or the
/// tokenizer built from GGUF metadata.
pub fn run(args: Args) -> Result<()> {
    let loaded = load_model::<NdArray>(&args.model, &Default::default())
        .with_context(|| format!("loading {}", args.model.display()))?;
    let tokenizer = match &loaded.tokenizer {
        _ if args.model.is_dir() && args.model.join("tokenizer.json").is_file() => {
            TokenizerFiles::Dir(&args.model)
        }
        Some(t) => TokenizerFiles::Tokenizer(t),
        None => TokenizerFiles::None,
    };
    export_hf(&loaded.model, &loaded.config, tokenizer, &args.out)
        .with_context(|| format!("exporting to {}", args.out.display()))?;
    println!(
        "exported {} to {}",
        args.model.display(),
        args.out.display()
    );
    Ok(())
}
