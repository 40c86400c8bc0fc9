//! The `ganpo` subcommands, one file each.

pub mod bench;
pub mod cluster;
pub mod data;
pub mod eval;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod kl;
pub mod logprobs;
pub mod pairs;
pub mod plot;
pub mod quickstart;
pub mod reward;
pub mod sample;
pub mod score;
pub mod sft;
pub mod task;
pub mod toy;
pub mod train;
pub mod trl;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use burn::prelude::Backend;
use ganpo_models::lora::{self, LoraConfig, peft};
use ganpo_models::{Lm, LoadedModel, Tokenizer, load_model};
use ganpo_train::config::RunConfig;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// The local folder (or file) of the model `path` names: `path` itself, or for a Hub id
/// (`OWNER/NAME[@REVISION]`) its snapshot in the Hugging Face cache, downloaded when missing
/// (with progress bars on a terminal).
pub fn model_path(path: &Path) -> Result<PathBuf> {
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    Ok(ganpo_train::hub::model_dir(path, progress)?)
}

/// Loads the model at `path` (a folder, a file or a Hub id) for inference, with the tokenizer
/// the command needs; the error says which file is missing.
pub fn load_with_tokenizer<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(LoadedModel<B>, Tokenizer)> {
    let path = &model_path(path)?;
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
    let path = &model_path(path)?;
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

/// The adapter at `dir` on `model` (loaded from `base`): refused when its
/// `base_model_name_or_path` names another model (compared by last path component).
pub fn load_adapter<B: Backend>(
    model: Lm<B>,
    base: &Path,
    dir: &Path,
) -> Result<(Lm<B>, LoraConfig)> {
    let dir = &model_path(dir)?;
    let context = || format!("loading the adapter {}", dir.display());
    if let Some(recorded) = peft::adapter_base(dir).with_context(context)? {
        let last = |s: &str| {
            let s = s.trim_end_matches('/');
            let s = s.rsplit('/').next().unwrap_or(s);
            s.split('@').next().unwrap_or(s).to_ascii_lowercase()
        };
        let here = base.to_string_lossy();
        if last(&recorded) != last(&here) {
            return Err(anyhow!(
                "{}: base_model_name_or_path is {recorded:?}, but the base given is {}: an \
                 adapter only fits the model it was trained on (if {} is that model in another \
                 form, set base_model_name_or_path to its name)",
                dir.join("adapter_config.json").display(),
                base.display(),
                base.display()
            ));
        }
    }
    peft::load_adapter(model, dir).with_context(context)
}

/// The policy a run trains: `model` with the adapters `[lora]` attaches (drawn from
/// `train.seed`) or `model.adapter` loads, and the LoRA settings in effect; `model` unchanged
/// for full fine-tuning.
pub fn with_adapters<B: Backend>(
    model: Lm<B>,
    config: &RunConfig,
) -> Result<(Lm<B>, Option<LoraConfig>)> {
    if let Some(dir) = &config.model.adapter {
        let (model, lora) = load_adapter(model, &config.model.path, dir)?;
        return Ok((model, Some(lora)));
    }
    let Some(lora) = &config.lora else {
        return Ok((model, None));
    };
    let (model, names) = lora::attach(model, lora, config.train.seed)?;
    tracing::info!("LoRA r = {} on {} projections", lora.r, names.len());
    Ok((model, Some(lora.clone())))
}

/// A progress bar of `len` steps labelled `prefix`, with ETA, on a terminal only (`None`
/// otherwise: log lines then report progress). Bars of concurrent runs (`ganpo experiment run
/// --jobs`) stack instead of overwriting each other.
pub fn progress_bar(len: u64, prefix: &str) -> Option<ProgressBar> {
    static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = BARS
            .get_or_init(MultiProgress::new)
            .add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} {bar:30} {pos}/{len}  {elapsed_precise} (ETA {eta_precise})  {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(prefix.to_string());
        bar
    })
}

/// Shows step `step` of `total` with `msg`: on `bar` when there is one (a terminal), else as a
/// log line every 50 steps and at the last, prefixed with `what`.
pub fn report_step(bar: &Option<ProgressBar>, what: &str, step: usize, total: usize, msg: &str) {
    match bar {
        Some(bar) => {
            bar.set_position(step as u64);
            bar.set_message(msg.to_string());
        }
        None if step.is_multiple_of(50) || step == total => {
            tracing::info!("{what} step {step}/{total} {msg}")
        }
        None => {}
    }
}
