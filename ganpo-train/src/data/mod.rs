//! Preference data: files to checked records, records to token ids, ids to padded batches.
//!
//! - [`record`]: one example, standard / conversational / implicit-prompt format, checked field by
//!   field;
//! - [`source`]: reading JSONL and Parquet files, every malformed row reported by file, line and field;
//! - [`hub`]: Hub datasets (`hf://datasets/...`, `OWNER/NAME`), in the Hugging Face cache;
//! - [`chat`]: chat templates rendered as transformers renders them;
//! - [`tokenize`]: TRL 1.x's tokenization of prompt and completions;
//! - [`dataset`]: tokenized pairs with their sources;
//! - [`batch`]: truncation, padding, seeded ordering, train / eval split.

pub mod batch;
pub mod chat;
pub mod dataset;
pub mod hub;
pub mod record;
pub mod source;
pub mod template_guard;
pub mod tokenize;

use std::path::PathBuf;

pub use batch::{
    HostBatch, PairBatch, Truncation, TruncationMode, collate, epoch_order, longest_first, pad_id,
    split_indices,
};
pub use chat::ChatTemplate;
pub use dataset::{PreferenceDataset, Unpaired};
pub use record::{
    Message, PreferenceRecord, Record, Turns, UnpairedRecord, extract_prompt, parse_record,
    parse_row, parse_unpaired,
};
pub use source::{RecordError, Records, SourcedRecord, SourcedUnpaired, load_records, read_rows};
pub use template_guard::TemplateGuard;
pub use tokenize::{PairTokenizer, TokenizeError, TokenizedPair, tokenize_prompt_completion};

/// Errors of the data pipeline; each names the file (and line) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file's extension is not a supported dataset format.
    #[error(
        "{}: unsupported dataset format: expected a .jsonl file (one JSON object per line; \
         .jsonl.gz when gzip-compressed) or a .parquet file",
        path.display()
    )]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
    },
    /// A Hub dataset could not be listed or downloaded.
    #[error("{url}: {message}")]
    Hub {
        /// The URL or `hf://` reference.
        url: String,
        /// What failed.
        message: String,
    },
    /// A Hub file could not be found, downloaded or verified.
    #[error(transparent)]
    HubFile(Box<crate::hub::HubError>),
    /// A Parquet file could not be read.
    #[error("{}: not a readable Parquet file: {message}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The reader's message.
        message: String,
    },
    /// The input needs a cargo feature this build of ganpo-train was compiled without.
    #[error(
        "{what}: needs ganpo-train's `{feature}` feature, which this build was compiled without \
         (the `ganpo` binary has it; in Cargo.toml: ganpo-train = {{ features = [\"{feature}\"] }})"
    )]
    FeatureDisabled {
        /// The file or URL.
        what: String,
        /// The cargo feature.
        feature: &'static str,
    },
    /// The file holds no valid record.
    #[error("{}: no valid record", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Pairs and unpaired examples in the same dataset.
    #[error(
        "the dataset mixes pairs ({}:{}: prompt, chosen, rejected) and unpaired examples ({}:{}: \
         prompt, completion, label); give one kind",
        paired.0.display(), paired.1, unpaired.0.display(), unpaired.1
    )]
    MixedRows {
        /// The first pair's file and line.
        paired: (PathBuf, usize),
        /// The first unpaired example's file and line.
        unpaired: (PathBuf, usize),
    },
    /// Unpaired examples for a loss that reads pairs.
    #[error(
        "{}:{}: an unpaired example (prompt, completion, label), but loss `{loss}` reads pairs \
         (prompt, chosen, rejected); unpaired data trains with loss `kto`",
        at.0.display(), at.1
    )]
    UnpairedForPairedLoss {
        /// The first unpaired example's file and line.
        at: (PathBuf, usize),
        /// The loss.
        loss: &'static str,
    },
    /// Malformed records, all listed.
    #[error("{}", invalid_summary(errors, *total))]
    Invalid {
        /// Every malformed row.
        errors: Vec<RecordError>,
        /// Rows read in all.
        total: usize,
    },
}

fn invalid_summary(errors: &[RecordError], total: usize) -> String {
    const SHOWN: usize = 20;
    let mut s = format!(
        "{} of {total} records are malformed; nothing was written. Fix them (or, for preference \
         data, pass --skip-invalid to drop and count them):",
        errors.len()
    );
    for e in errors.iter().take(SHOWN) {
        s.push_str(&format!("\n  {e}"));
    }
    if errors.len() > SHOWN {
        s.push_str(&format!("\n  ... and {} more", errors.len() - SHOWN));
    }
    s
}

impl From<crate::hub::HubError> for DataError {
    fn from(e: crate::hub::HubError) -> Self {
        DataError::HubFile(Box::new(e))
    }
}
