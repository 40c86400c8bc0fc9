//! Datasets from the Hugging Face Hub: `hf://datasets/OWNER/NAME[@REVISION][/PATH]`, or
//! `OWNER/NAME[@REVISION]` where no local file has that name.
//!
//! `PATH` selects data files (`.jsonl`, `.jsonl.gz`, `.parquet`) of the repository as `datasets`
//! names them: a file (`data/train.jsonl`), a folder (`data`), a split (`train` selects
//! `data/train-00000-of-00001.parquet`, `train.jsonl`, `train/0000.parquet`, ...) or a config
//! and a split (`CONFIG/SPLIT`: `CONFIG/train-*.parquet`, `CONFIG/train/*.parquet`; the config
//! `default` of a repository without such folders is the repository itself). Without `PATH`
//! every data file is used.
//!
//! The files live in the Hugging Face cache ([`crate::hub`]): a cached selection whose shards
//! are all there is used without a network call; otherwise the Hub lists the repository and
//! the missing files are downloaded.

use std::path::PathBuf;

use super::DataError;
use crate::hub::{Hub, RepoKind, RepoRef};

/// The URI prefix of Hub datasets.
pub const PREFIX: &str = "hf://datasets/";

/// A dataset repository and which of its files to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubDataset {
    /// The repository at its revision.
    pub repo: RepoRef,
    /// File, folder, split or `CONFIG/SPLIT` selector; empty = every data file.
    pub selector: String,
}

impl HubDataset {
    /// Parses `hf://datasets/OWNER/NAME[@REVISION][/PATH]`, or a bare `OWNER/NAME[@REVISION]`
    /// that is not a local path; `None` when `spec` is neither.
    ///
    /// ```
    /// use ganpo_train::data::hub::HubDataset;
    /// let d = HubDataset::parse("hf://datasets/trl-lib/ultrafeedback_binarized@v1/train")
    ///     .unwrap()
    ///     .unwrap();
    /// assert_eq!((d.repo.revision.as_str(), d.selector.as_str()), ("v1", "train"));
    /// ```
    pub fn parse(spec: &str) -> Option<Result<Self, DataError>> {
        let Some(rest) = spec.strip_prefix(PREFIX) else {
            let repo = crate::hub::bare_id(spec, RepoKind::Dataset)?;
            return Some(Ok(Self {
                repo,
                selector: String::new(),
            }));
        };
        let mut parts = rest.splitn(3, '/');
        let (owner, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let selector = parts.next().unwrap_or("").trim_matches('/').to_string();
        Some(
            RepoRef::parse(&format!("{owner}/{name}"), RepoKind::Dataset)
                .map(|repo| Self { repo, selector })
                .map_err(|e| DataError::Hub {
                    url: spec.to_string(),
                    message: e.to_string(),
                }),
        )
    }

    /// The files of `files` this selector picks, in repository order.
    pub fn select(&self, files: &[String]) -> Vec<String> {
        let s = self.selector.as_str();
        let data = |f: &str| {
            [".jsonl", ".jsonl.gz", ".parquet"]
                .iter()
                .any(|e| f.ends_with(e))
        };
        if files.iter().any(|f| f == s) {
            return vec![s.to_string()];
        }
        let picked = |f: &String| {
            if !data(f) {
                return false;
            }
            if s.is_empty() || f.starts_with(&format!("{s}/")) {
                return true;
            }
            let (config, split) = match s.rsplit_once('/') {
                Some((c, sp)) => (Some(c), sp),
                None => (None, s),
            };
            let (dir, base) = f.rsplit_once('/').unwrap_or(("", f));
            let in_config = match config {
                None => true,
                Some(c) => {
                    f.starts_with(&format!("{c}/"))
                        || c == "default" && !files.iter().any(|g| g.starts_with("default/"))
                }
            };
            let split_name = base.starts_with(&format!("{split}-"))
                || base.starts_with(&format!("{split}."))
                || dir.rsplit('/').next() == Some(split);
            in_config && split_name
        };
        files.iter().filter(|f| picked(f)).cloned().collect()
    }

    /// The local paths of the selected files: from the cache when all of them are there
    /// (checksums verified), else listed and downloaded.
    pub fn fetch(&self, hub: &Hub) -> Result<Vec<PathBuf>, DataError> {
        if let Some(cached) = hub.cache().files(&self.repo) {
            let picked = self.select(&cached);
            if !picked.is_empty() && (hub.is_offline() || shards_complete(&picked)) {
                return Ok(picked
                    .iter()
                    .map(|f| hub.file(&self.repo, f))
                    .collect::<Result<_, _>>()?);
            }
        }
        let listing = hub.list(&self.repo)?;
        let picked = self.select(&listing);
        if picked.is_empty() {
            let data: Vec<&String> = listing
                .iter()
                .filter(|f| !f.starts_with('.') && *f != "README.md")
                .take(12)
                .collect();
            return Err(DataError::Hub {
                url: self.uri(),
                message: format!(
                    "no .jsonl, .jsonl.gz or .parquet file matches `{}`{} (the repository \
                     holds: {})",
                    self.selector,
                    if hub.is_offline() {
                        " in the cache (HF_HUB_OFFLINE is set)"
                    } else {
                        ""
                    },
                    data.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(picked
            .iter()
            .map(|f| hub.file(&self.repo, f))
            .collect::<Result<_, _>>()?)
    }

    /// The `hf://` form of this reference, for messages.
    pub fn uri(&self) -> String {
        let mut s = format!("{PREFIX}{}", self.repo.display());
        if !self.selector.is_empty() {
            s.push('/');
            s.push_str(&self.selector);
        }
        s
    }
}

/// Whether every `-0000K-of-0000N` shard of each sharded name in `files` is there (a cache
/// filled by a run that stopped half way is completed from the Hub).
fn shards_complete(files: &[String]) -> bool {
    files.iter().all(|f| {
        let Some((stem, rest)) = f.rsplit_once("-of-") else {
            return true;
        };
        let total: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(n) = total.parse::<usize>() else {
            return true;
        };
        let Some((prefix, _)) = stem.rsplit_once('-') else {
            return true;
        };
        let suffix = &rest[total.len()..];
        (0..n).all(|k| {
            let name = format!("{prefix}-{k:0w$}-of-{total}{suffix}", w = total.len());
            files.contains(&name)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_and_selects_as_datasets_names_splits_and_configs() {
        let d = HubDataset::parse("hf://datasets/trl-lib/ultrafeedback@v1/train")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                d.repo.id.as_str(),
                d.repo.revision.as_str(),
                d.selector.as_str()
            ),
            ("trl-lib/ultrafeedback", "v1", "train")
        );
        let files = strings(&[
            "README.md",
            "data/train-00000-of-00001.parquet",
            "data/test-00000-of-00001.parquet",
            "train.jsonl",
        ]);
        assert_eq!(
            d.select(&files),
            strings(&["data/train-00000-of-00001.parquet", "train.jsonl"])
        );
        let with = |sel: &str| HubDataset {
            selector: sel.into(),
            ..d.clone()
        };
        assert_eq!(
            with("data/test-00000-of-00001.parquet")
                .select(&files)
                .len(),
            1
        );
        assert_eq!(with("").select(&files).len(), 3);
        assert_eq!(
            with("default/test").select(&files),
            strings(&["data/test-00000-of-00001.parquet"])
        );
        let configs = strings(&[
            "en/train-00000-of-00002.parquet",
            "en/train-00001-of-00002.parquet",
            "fr/train/0000.parquet",
            "fr/test/0000.parquet",
        ]);
        assert_eq!(with("en/train").select(&configs).len(), 2);
        assert_eq!(
            with("fr/train").select(&configs),
            strings(&["fr/train/0000.parquet"])
        );
        assert_eq!(with("fr").select(&configs).len(), 2);
        assert!(with("de/train").select(&configs).is_empty());
        assert!(HubDataset::parse("data/x.jsonl").is_none());
        assert!(
            HubDataset::parse("hf://datasets/onlyowner")
                .unwrap()
                .is_err()
        );
        let bare = HubDataset::parse("ganpo/pairs@v2").unwrap().unwrap();
        assert_eq!(
            (bare.repo.revision.as_str(), bare.uri().as_str()),
            ("v2", "hf://datasets/ganpo/pairs@v2")
        );
        for uri in [
            "hf://datasets/../pairs",
            "hf://datasets/ganpo/..",
            "hf://datasets/ganpo/pairs@../../x",
            "hf://datasets/ganpo/pairs@..",
            "hf://datasets/./pairs/train",
        ] {
            let e = HubDataset::parse(uri).unwrap().unwrap_err().to_string();
            assert!(e.contains("is not a Hub repository id"), "{uri}: {e}");
        }
    }

    #[test]
    fn a_cache_missing_a_shard_is_incomplete() {
        let two = strings(&[
            "d/train-00000-of-00002.parquet",
            "d/train-00001-of-00002.parquet",
        ]);
        assert!(shards_complete(&two));
        assert!(!shards_complete(&two[..1]));
        assert!(shards_complete(&strings(&[
            "train.jsonl",
            "x-of-y.parquet"
        ])));
    }
}
