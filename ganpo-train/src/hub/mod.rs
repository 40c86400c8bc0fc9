//! Models and datasets from the Hugging Face Hub, in the Hugging Face cache.
//!
//! A repository is named as on the Hub, `OWNER/NAME[@REVISION]` ([`RepoRef`]). Files live in
//! the cache layout of Python's `huggingface_hub` ([`cache`]: `blobs/ETAG`,
//! `snapshots/COMMIT/FILE` links, `refs/REVISION`), under `HF_HUB_CACHE` (default
//! `$HF_HOME/hub`, `~/.cache/huggingface/hub`), so what `transformers` or `datasets` downloaded is
//! used here, and what ganpo downloads is used there. The environment means what it means in
//! Python: `HF_HUB_OFFLINE=1` uses the cache only, `HF_ENDPOINT` replaces
//! `https://huggingface.co`, `HF_TOKEN` (or the `huggingface-cli login` token file) is sent to the
//! Hub.
//!
//! What is already cached is used without a network call, after its checksum is verified against
//! the blob's name (the Hub's SHA-256 for LFS files, the git blob SHA-1 otherwise). Downloads go
//! through Hugging Face's `hf-hub` client ([`client`], the `hub` feature): an interrupted one
//! leaves `blobs/ETAG.part`, which the next run resumes, and nothing is taken for a whole file
//! until its checksum matches. Every name that comes from the user or the network is checked
//! before anything is written ([`safe_relative_path`]).

pub mod cache;
pub mod client;
pub mod model;
pub mod repo;

use std::path::PathBuf;

pub use cache::HubCache;
pub use client::Hub;
pub use model::model_dir;
pub use repo::{RepoKind, RepoRef, bare_id, safe_relative_path};

/// Errors of Hub access; each names the repository, and the file when there is one.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The id is not `OWNER/NAME[@REVISION]`.
    #[error("`{id}` is not a Hub repository id: {why} (expected OWNER/NAME[@REVISION])")]
    BadId {
        /// What was given.
        id: String,
        /// What is wrong with it.
        why: String,
    },
    /// The repository, revision or file does not exist (HTTP 404).
    #[error(
        "{repo}{}: not found on the Hub ({url}: HTTP 404): check the id, the revision and the \
         file name",
        file_suffix(file)
    )]
    NotFound {
        /// The repository.
        repo: String,
        /// The file, when one was asked for.
        file: Option<String>,
        /// The URL asked.
        url: String,
    },
    /// The Hub refused access (HTTP 401 / 403): private or gated.
    #[error(
        "{repo}{}: access denied ({url}: HTTP {status}): the repository is private or gated; set \
         HF_TOKEN (or run `huggingface-cli login`) with a token that may read it, and for a gated \
         model accept its terms on its Hub page first",
        file_suffix(file)
    )]
    Denied {
        /// The repository.
        repo: String,
        /// The file, when one was asked for.
        file: Option<String>,
        /// The URL asked.
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// `HF_HUB_OFFLINE` is set and what is needed is not cached.
    #[error(
        "{repo}{}: not in the Hugging Face cache {}, and HF_HUB_OFFLINE is set: download it \
         once with the network on (any ganpo command that uses it, or `huggingface-cli download \
         {repo}`), or unset HF_HUB_OFFLINE",
        file_suffix(file),
        cache.display()
    )]
    Offline {
        /// The repository.
        repo: String,
        /// The missing file, when one is known.
        file: Option<String>,
        /// The cache searched.
        cache: PathBuf,
    },
    /// A transfer failed part way or the Hub could not be reached.
    #[error(
        "{repo}{}: {message} ({url}){}",
        file_suffix(file),
        partial.as_ref().map(|p| format!("; the part received is kept in {} and the next run \
             resumes it", p.display())).unwrap_or_else(|| "; run again, or set HF_HUB_OFFLINE=1 \
             to use what is cached".into())
    )]
    Transfer {
        /// The repository.
        repo: String,
        /// The file, when one was being downloaded.
        file: Option<String>,
        /// The URL.
        url: String,
        /// What failed.
        message: String,
        /// The partial download the next run resumes, when one is kept.
        partial: Option<PathBuf>,
    },
    /// A file's content does not match the checksum its blob name records.
    #[error(
        "{repo}: {file}: checksum mismatch ({} is {actual}, the Hub's {} is {expected}): the \
         damaged copy was removed from the cache; run again to download it again",
        path.display(),
        if expected.len() == 64 { "SHA-256" } else { "git SHA-1" }
    )]
    Checksum {
        /// The repository.
        repo: String,
        /// The file in the repository.
        file: String,
        /// The local file that failed.
        path: PathBuf,
        /// The checksum the Hub gave (the blob's name): a SHA-256 (64 digits) or a git blob
        /// SHA-1 (40).
        expected: String,
        /// The checksum of the bytes on disk.
        actual: String,
    },
    /// A name from the user or the network is not a path inside the repository or the cache.
    #[error("{repo}: {what} `{value}` would leave the cache ({why}): nothing was written")]
    Unsafe {
        /// The repository.
        repo: String,
        /// What the name is (`file name in the Hub's listing`, `cache folder`, ...).
        what: &'static str,
        /// The name.
        value: String,
        /// Why it is refused.
        why: String,
    },
    /// The repository lacks a file ganpo needs.
    #[error("{repo}: {message}")]
    Missing {
        /// The repository.
        repo: String,
        /// What is missing and what to do.
        message: String,
    },
    /// A cache file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A download needs the `hub` feature, which this build lacks.
    #[error(
        "{repo}: not in the Hugging Face cache, and downloading needs ganpo-train's `hub` \
         feature, which this build was compiled without (the `ganpo` binary has it; in \
         Cargo.toml: ganpo-train = {{ features = [\"hub\"] }})"
    )]
    FeatureDisabled {
        /// The repository.
        repo: String,
    },
}

fn file_suffix(file: &Option<String>) -> String {
    file.as_ref().map(|f| format!(": {f}")).unwrap_or_default()
}

/// Whether `HF_HUB_OFFLINE` asks for the cache only (`1`, `true`, `yes`, `on`, any case, as
/// `huggingface_hub` reads it).
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}
