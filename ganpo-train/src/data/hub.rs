//! Datasets from the Hugging Face Hub: `hf://datasets/OWNER/NAME[@REVISION][/PATH]`.
//!
//! `PATH` selects files of the dataset repository: a file (`data/train.jsonl`), a folder
//! (`data`), or a split name (`train` selects `train-00000-of-00001.parquet`, `data/train.jsonl`,
//! ...); without it every `.jsonl` / `.parquet` file is used. The file list comes from the Hub's
//! API (`/api/datasets/OWNER/NAME/revision/REVISION`), the files from
//! `/datasets/OWNER/NAME/resolve/REVISION/FILE`, cached under `$GANPO_CACHE/datasets` (default
//! `~/.cache/ganpo/datasets`) and written atomically. `HF_ENDPOINT` replaces
//! `https://huggingface.co`, `HF_TOKEN` is sent as a bearer token, and with `HF_HUB_OFFLINE=1`
//! only the cache is used.
//!
//! Every path that comes from the URI or the network (owner, name, revision, the listing's file
//! names) is checked before anything is created: relative, without `.` / `..` components, and a
//! download's folder must resolve inside the cache (no symlink leads out of it).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::DataError;

/// The URI prefix of Hub datasets.
pub const PREFIX: &str = "hf://datasets/";

/// A parsed `hf://datasets/...` reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubDataset {
    /// `OWNER/NAME`.
    pub repo: String,
    /// Branch, tag or commit (`main` by default).
    pub revision: String,
    /// File, folder or split selector; empty = every data file.
    pub selector: String,
}

impl HubDataset {
    /// Parses `hf://datasets/OWNER/NAME[@REVISION][/PATH]`; `None` when `uri` is not a Hub
    /// reference.
    pub fn parse(uri: &str) -> Option<Result<Self, DataError>> {
        let rest = uri.strip_prefix(PREFIX)?;
        let mut parts = rest.splitn(3, '/');
        let (owner, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let selector = parts.next().unwrap_or("").trim_matches('/').to_string();
        let (name, revision) = name.split_once('@').unwrap_or((name, "main"));
        if owner.is_empty() || name.is_empty() || revision.is_empty() {
            return Some(Err(DataError::Hub {
                url: uri.to_string(),
                message: "expected hf://datasets/OWNER/NAME[@REVISION][/PATH]".into(),
            }));
        }
        for (what, value) in [("OWNER", owner), ("NAME", name), ("REVISION", revision)] {
            if let Err(why) = safe_relative_path(value) {
                return Some(Err(DataError::Hub {
                    url: uri.to_string(),
                    message: format!("{what} `{value}` is not a repository {what}: {why}"),
                }));
            }
        }
        Some(Ok(Self {
            repo: format!("{owner}/{name}"),
            revision: revision.to_string(),
            selector,
        }))
    }

    /// Whether the repository file `file` is selected.
    pub fn selects(&self, file: &str) -> bool {
        let data = file.ends_with(".jsonl") || file.ends_with(".parquet");
        let s = self.selector.as_str();
        let base = file.rsplit('/').next().unwrap_or(file);
        file == s
            || data
                && (s.is_empty()
                    || file.starts_with(&format!("{s}/"))
                    || base.starts_with(&format!("{s}-"))
                    || base.starts_with(&format!("{s}.")))
    }

    /// Downloads (or finds in the cache) the selected files and returns their local paths, in
    /// repository order.
    pub fn fetch(&self) -> Result<Vec<PathBuf>, DataError> {
        let cache = cache_dir().join(&self.repo).join(&self.revision);
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v == "true");
        let files = if offline {
            let mut found = Vec::new();
            collect_files(&cache, &cache, &mut found);
            found.sort();
            found.into_iter().filter(|f| self.selects(f)).collect()
        } else {
            self.list()?
        };
        if files.is_empty() {
            return Err(DataError::Hub {
                url: self.uri(),
                message: format!(
                    "no .jsonl or .parquet file matches `{}`{}",
                    self.selector,
                    if offline {
                        " in the cache (HF_HUB_OFFLINE is set)"
                    } else {
                        ""
                    }
                ),
            });
        }
        // Names from the listing are checked before any file is written.
        if let Some((f, why)) = files
            .iter()
            .find_map(|f| safe_relative_path(f).err().map(|why| (f, why)))
        {
            return Err(DataError::Hub {
                url: self.uri(),
                message: format!(
                    "the Hub listed the file `{f}`, which is not a path inside the repository \
                     ({why}): nothing was downloaded"
                ),
            });
        }
        files
            .iter()
            .map(|f| {
                let local = cache.join(f);
                if !local.is_file() {
                    self.download(f, &local, &cache)?;
                }
                Ok(local)
            })
            .collect()
    }

    fn uri(&self) -> String {
        format!("{PREFIX}{}@{}/{}", self.repo, self.revision, self.selector)
    }

    fn list(&self) -> Result<Vec<String>, DataError> {
        let url = format!(
            "{}/api/datasets/{}/revision/{}",
            endpoint(),
            self.repo,
            self.revision
        );
        let mut text = String::new();
        get(&url)?
            .read_to_string(&mut text)
            .map_err(|e| DataError::Hub {
                url: url.clone(),
                message: format!("reading the reply: {e}"),
            })?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| DataError::Hub {
            url: url.clone(),
            message: format!("unexpected reply: {e}"),
        })?;
        let siblings = json["siblings"].as_array().ok_or_else(|| DataError::Hub {
            url: url.clone(),
            message: "unexpected reply: no `siblings` list".into(),
        })?;
        Ok(siblings
            .iter()
            .filter_map(|s| s["rfilename"].as_str())
            .filter(|f| self.selects(f))
            .map(str::to_string)
            .collect())
    }

    /// Downloads `file` to `local` (inside `cache`), atomically.
    fn download(&self, file: &str, local: &Path, cache: &Path) -> Result<(), DataError> {
        let url = format!(
            "{}/datasets/{}/resolve/{}/{file}",
            endpoint(),
            self.repo,
            self.revision
        );
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DataError::Io { path, source }
        };
        let dir = local.parent().expect("cache files have a parent");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // A symlink inside the cache must not lead the download out of it.
        let root = cache.canonicalize().map_err(io(cache))?;
        if !dir.canonicalize().map_err(io(dir))?.starts_with(&root) {
            return Err(DataError::Hub {
                url,
                message: format!(
                    "{} resolves outside the cache {} (a symbolic link?): refusing to write there",
                    dir.display(),
                    root.display()
                ),
            });
        }
        let tmp = local.with_extension(format!("partial-{}", std::process::id()));
        let mut body = get(&url)?;
        let mut out = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let copied = std::io::copy(&mut body, &mut out);
        if let Err(e) = copied.and_then(|_| out.sync_all()) {
            let _ = std::fs::remove_file(&tmp);
            return Err(DataError::Hub {
                url,
                message: format!("download interrupted: {e}"),
            });
        }
        std::fs::rename(&tmp, local).map_err(io(local))?;
        tracing::info!(%url, path = %local.display(), "downloaded");
        Ok(())
    }
}

/// Whether `path` (from a URI or the network) is a relative path of plain components: not empty,
/// not absolute, no `.` or `..` component, no empty component, no backslash, colon or control
/// character (a Windows drive or separator); the reason when not.
fn safe_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("it is empty".into());
    }
    if path.starts_with('/') {
        return Err("it is absolute".into());
    }
    if let Some(c) = path
        .chars()
        .find(|c| matches!(c, '\\' | ':') || c.is_control())
    {
        return Err(format!("it holds {c:?}"));
    }
    match path
        .split('/')
        .find(|part| matches!(*part, "" | "." | ".."))
    {
        Some(part) => Err(format!("it has a `{part}` component")),
        None => Ok(()),
    }
}

fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .unwrap_or_else(|_| "https://huggingface.co".into())
        .trim_end_matches('/')
        .to_string()
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("GANPO_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ganpo")))
        .unwrap_or_else(|| PathBuf::from(".ganpo-cache"));
    base.join("datasets")
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root)
            && !rel.to_string_lossy().contains(".partial-")
        {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[cfg(feature = "hub")]
fn hub_error(url: &str, e: ureq::Error) -> DataError {
    let message = match e {
        ureq::Error::StatusCode(401 | 403) => {
            "access denied (HTTP 401/403): set HF_TOKEN for gated or private datasets".to_string()
        }
        ureq::Error::StatusCode(404) => {
            "not found (HTTP 404): check the dataset id, revision and path".to_string()
        }
        ureq::Error::StatusCode(code) => format!("HTTP {code}"),
        other => format!("{other} (offline? set HF_HUB_OFFLINE=1 to use the cache)"),
    };
    DataError::Hub {
        url: url.to_string(),
        message,
    }
}

/// The body of a GET of `url` (with `HF_TOKEN` as a bearer token when set).
#[cfg(feature = "hub")]
fn get(url: &str) -> Result<Box<dyn Read>, DataError> {
    let mut request = ureq::get(url);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    request
        .call()
        .map(|r| Box::new(r.into_body().into_reader()) as Box<dyn Read>)
        .map_err(|e| hub_error(url, e))
}

/// Without the `hub` feature nothing is downloaded: the cache (`HF_HUB_OFFLINE=1`) still works.
#[cfg(not(feature = "hub"))]
fn get(url: &str) -> Result<Box<dyn Read>, DataError> {
    Err(DataError::FeatureDisabled {
        what: url.to_string(),
        feature: "hub",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_repository_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "C:/x",
            "a\\b",
            "a\nb",
        ] {
            assert!(safe_relative_path(bad).is_err(), "{bad:?}");
        }
        for good in [
            "data/train.jsonl",
            "a.b/c-d_e.parquet",
            "..data/x",
            "refs/pr/1",
        ] {
            assert_eq!(safe_relative_path(good), Ok(()), "{good:?}");
        }
        for uri in [
            "hf://datasets/../pairs",
            "hf://datasets/ganpo/..",
            "hf://datasets/ganpo/pairs@../../x",
            "hf://datasets/ganpo/pairs@..",
            "hf://datasets/./pairs/train",
        ] {
            let e = HubDataset::parse(uri).unwrap().unwrap_err().to_string();
            assert!(e.contains("is not a repository"), "{uri}: {e}");
        }
    }

    #[test]
    fn parses_and_selects() {
        let d = HubDataset::parse("hf://datasets/trl-lib/ultrafeedback@v1/train")
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.repo.as_str(), d.revision.as_str(), d.selector.as_str()),
            ("trl-lib/ultrafeedback", "v1", "train")
        );
        assert!(d.selects("data/train-00000-of-00001.parquet"));
        assert!(d.selects("train.jsonl"));
        assert!(!d.selects("data/test-00000-of-00001.parquet"));
        assert!(!d.selects("README.md"));
        let all = HubDataset::parse("hf://datasets/a/b").unwrap().unwrap();
        assert_eq!(all.revision, "main");
        assert!(all.selects("x/y.jsonl"));
        let dir = HubDataset::parse("hf://datasets/a/b/data/")
            .unwrap()
            .unwrap();
        assert!(dir.selects("data/z.parquet") && !dir.selects("other/z.parquet"));
        assert!(HubDataset::parse("data/x.jsonl").is_none());
        assert!(
            HubDataset::parse("hf://datasets/onlyowner")
                .unwrap()
                .is_err()
        );
    }
}
