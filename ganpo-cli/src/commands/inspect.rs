//! `ganpo inspect`: what a checkpoint holds.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::backend::NdArray;
use burn::module::Module;
use ganpo_models::load_model;

/// Options of `ganpo inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// Model: an HF directory, a .gguf file or an .onnx export (config.json beside it).
    #[arg(long)]
    pub model: PathBuf,
}

/// Prints architecture, sizes, parameter count, weight dtypes and tokenizer details.
pub fn run(args: Args) -> Result<()> {
    let path = super::model_path(&args.model)?;
    let loaded = load_model::<NdArray>(&path, &Default::default())
        .with_context(|| format!("loading {}", path.display()))?;
    let dtypes = ganpo_models::weight_dtypes(&path)?;
    let mut out = serde_json::Map::new();
    out.insert("model".into(), args.model.display().to_string().into());
    out.insert("architecture".into(), serde_json::to_value(&loaded.config)?);
    out.insert("family".into(), loaded.config.model_type().into());
    out.insert("parameters".into(), loaded.model.num_params().into());
    out.insert("weight_dtypes".into(), serde_json::to_value(dtypes)?);
    match &loaded.tokenizer {
        Some(t) => {
            let name = |id: Option<u32>| id.and_then(|i| t.id_to_token(i));
            out.insert(
                "tokenizer".into(),
                serde_json::json!({
                    "vocab_size": t.vocab_size(),
                    "eos_tokens": t.eos_token_ids.iter().map(|&i| t.id_to_token(i)).collect::<Vec<_>>(),
                    "bos_token": name(t.bos_token_id),
                    "pad_token": name(t.pad_token_id),
                    "chat_template": t.chat_template.is_some(),
                }),
            );
        }
        None => {
            out.insert("tokenizer".into(), serde_json::Value::Null);
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
