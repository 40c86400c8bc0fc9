//! Loading and tokenizing dataset files for the `train` and `eval` commands.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ganpo_core::PreferenceLoss;
use ganpo_models::Tokenizer;
pub use ganpo_train::data::pad_id;
use ganpo_train::data::{PairTokenizer, PreferenceDataset, Truncation, load_records};

/// Reads, checks and tokenizes `files` for `loss` (pairs, or unpaired examples for KTO with KL
/// completions cycled in blocks of `kl_block`); malformed rows stop the load (listing all of
/// them) unless `skip_invalid`, in which case they are counted and reported on stderr.
pub fn load_dataset(
    files: &[PathBuf],
    tokenizer: &Tokenizer,
    truncation: &Truncation,
    skip_invalid: bool,
    loss: &PreferenceLoss,
    kl_block: usize,
) -> Result<PreferenceDataset> {
    let mut records = load_records(files, skip_invalid)?;
    let pair_tokenizer =
        PairTokenizer::new(tokenizer).context("compiling the tokenizer's chat template")?;
    let data = PreferenceDataset::from_records(
        &mut records,
        &pair_tokenizer,
        truncation,
        loss,
        kl_block,
        skip_invalid,
    )?;
    if !records.skipped.is_empty() {
        tracing::warn!(
            "skipped {} malformed record(s) (--skip-invalid):",
            records.skipped.len()
        );
        for e in records.skipped.iter().take(20) {
            tracing::warn!("  {e}");
        }
    }
    if data.dropped_too_long > 0 {
        tracing::warn!(
            "dropped {} pair(s) whose prompt alone fills max_length",
            data.dropped_too_long
        );
    }
    Ok(data)
}
