//! The `ganpo` subcommands, one file each.

pub mod data;
pub mod eval;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod logprobs;
pub mod plot;
pub mod toy;
pub mod train;

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use burn::prelude::Backend;
use ganpo_models::{Lm, LoadedModel, Tokenizer, load_model};

/// Loads the model at `path` for inference, with the tokenizer the command needs; the error says
/// which file is missing.
pub fn load_with_tokenizer<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(LoadedModel<B>, Tokenizer)> {
    let mut loaded =
        load_model::<B>(path, device).with_context(|| format!("loading {}", path.display()))?;
    let tokenizer = loaded.tokenizer.take().ok_or_else(|| {
        anyhow!(
            "{} has no tokenizer (tokenizer.json, or GGUF tokenizer metadata)",
            path.display()
        )
    })?;
    Ok((loaded, tokenizer))
}

/// Loads a reference model for a policy with `vocab` tokens; `what` names it in errors
/// (`--ref-model`, `model.reference`).
pub fn load_reference<B: Backend>(
    path: &Path,
    vocab: usize,
    what: &str,
    device: &B::Device,
) -> Result<Lm<B>> {
    let r = load_model::<B>(path, device)
        .with_context(|| format!("loading the reference {}", path.display()))?;
    if r.config.vocab_size() != vocab {
        return Err(anyhow!(
            "{what} {}: vocabulary of {} tokens, but the policy has {vocab}",
            path.display(),
            r.config.vocab_size(),
        ));
    }
    Ok(r.model)
}
