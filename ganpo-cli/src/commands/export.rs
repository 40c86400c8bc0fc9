//! `ganpo export`: write a model as an HF directory (for example a GGUF converted for
//! transformers), or a base model with a LoRA adapter as a PEFT adapter directory or, merged, as
//! one HF directory.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::backend::NdArray;
use ganpo_models::export::{TokenizerFiles, export_hf};
use ganpo_models::load_model;
use ganpo_models::lora::{self, peft};

/// Options of `ganpo export`.
#[derive(clap::Args)]
pub struct Args {
    /// Model: an HF directory, a .gguf file or an .onnx export (config.json beside it); with
    /// --adapter, the adapter's base.
    #[arg(long)]
    pub model: PathBuf,
    /// A PEFT adapter directory (a LoRA run's `final/`) on --model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// With --adapter: fold the adapter into the weights and write one HF directory (without
    /// it, the adapter is written as a PEFT adapter directory).
    #[arg(long, requires = "adapter")]
    pub merge: bool,
    /// Directory to create (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

/// Loads the model (and adapter) and writes it with its tokenizer: the files of an HF directory,
/// or the tokenizer built from GGUF metadata.
pub fn run(args: Args) -> Result<()> {
    let path = super::model_path(&args.model)?;
    let loaded = load_model::<NdArray>(&path, &Default::default())
        .with_context(|| format!("loading {}", path.display()))?;
    let tokenizer = match &loaded.tokenizer {
        _ if path.is_dir() && path.join("tokenizer.json").is_file() => TokenizerFiles::Dir(&path),
        Some(t) => TokenizerFiles::Tokenizer(t),
        None => TokenizerFiles::None,
    };
    let context = || format!("exporting to {}", args.out.display());
    match &args.adapter {
        Some(dir) => {
            if !peft::is_adapter_dir(dir) {
                bail!(
                    "{}: no adapter_config.json: not a PEFT adapter directory",
                    dir.display()
                );
            }
            let (mut model, config) = super::load_adapter(loaded.model, &args.model, dir)?;
            if args.merge {
                lora::merge(&mut model);
                export_hf(&model, &loaded.config, tokenizer, &args.out).with_context(context)?;
            } else {
                let base = args.model.to_string_lossy();
                peft::save_adapter(&model, &config, &base, tokenizer, &args.out)
                    .with_context(context)?;
            }
        }
        None => {
            export_hf(&loaded.model, &loaded.config, tokenizer, &args.out).with_context(context)?;
        }
    }
    println!(
        "exported {} to {}",
        args.model.display(),
        args.out.display()
    );
    Ok(())
}
