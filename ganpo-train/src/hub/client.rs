//! Files of Hub repositories: from the cache when there, else downloaded by `hf-hub`.

use std::path::PathBuf;

use super::{HubCache, HubError, RepoRef, safe_relative_path};

/// The Hub as this environment configures it (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`,
/// the cache folders), over the cache it shares with Python.
pub struct Hub {
    cache: HubCache,
    offline: bool,
    endpoint: String,
    #[cfg(feature = "hub")]
    api: hf_hub::api::sync::Api,
}

impl Hub {
    /// The Hub of this environment; `progress` draws hf-hub's download bars (on a terminal).
    pub fn from_env(progress: bool) -> Result<Self, HubError> {
        let cache = HubCache::from_env();
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "https://huggingface.co".into())
            .trim_end_matches('/')
            .to_string();
        #[cfg(feature = "hub")]
        let api = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(cache.root.clone()))
            .with_endpoint(endpoint.clone())
            .with_token(super::cache::token())
            .with_progress(progress)
            .with_user_agent("ganpo", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| HubError::Transfer {
                repo: String::new(),
                file: None,
                url: endpoint.clone(),
                message: format!("cannot start the Hub client: {e}"),
                partial: None,
            })?;
        #[cfg(not(feature = "hub"))]
        let _ = progress;
        Ok(Self {
            cache,
            offline: super::offline(),
            endpoint,
            #[cfg(feature = "hub")]
            api,
        })
    }

    /// The cache this Hub reads and fills.
    pub fn cache(&self) -> &HubCache {
        &self.cache
    }

    /// Whether only the cache may be used (`HF_HUB_OFFLINE`).
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// The local path of `file` in `repo`: the cached copy (its checksum verified), else a
    /// download into the cache (verified the same way before it is returned).
    pub fn file(&self, repo: &RepoRef, file: &str) -> Result<PathBuf, HubError> {
        safe_relative_path(file).map_err(|why| HubError::Unsafe {
            repo: repo.display(),
            what: "file name",
            value: file.to_string(),
            why,
        })?;
        if let Some(path) = self.cache.file(repo, file)? {
            return Ok(path);
        }
        if self.offline {
            return Err(HubError::Offline {
                repo: repo.display(),
                file: Some(file.to_string()),
                cache: self.cache.root.clone(),
            });
        }
        self.download(repo, file)
    }

    /// The files of `repo` at its revision: the Hub's listing, or with `HF_HUB_OFFLINE` the
    /// cached snapshot's. Every name is checked to be a path inside the repository before it
    /// is returned.
    pub fn list(&self, repo: &RepoRef) -> Result<Vec<String>, HubError> {
        let files = if self.offline {
            self.cache.files(repo).ok_or_else(|| HubError::Offline {
                repo: repo.display(),
                file: None,
                cache: self.cache.root.clone(),
            })?
        } else {
            self.listing(repo)?
        };
        if let Some((f, why)) = files
            .iter()
            .find_map(|f| safe_relative_path(f).err().map(|why| (f, why)))
        {
            return Err(HubError::Unsafe {
                repo: repo.display(),
                what: "file name in the Hub's listing",
                value: f.clone(),
                why,
            });
        }
        Ok(files)
    }

    /// The URL a request for `file` (or for the listing) goes to, for messages.
    #[cfg_attr(not(feature = "hub"), allow(dead_code))]
    fn url(&self, repo: &RepoRef, file: Option<&str>) -> String {
        let prefix = match repo.kind {
            super::RepoKind::Model => String::new(),
            super::RepoKind::Dataset => "datasets/".into(),
        };
        match file {
            Some(f) => format!(
                "{}/{prefix}{}/resolve/{}/{f}",
                self.endpoint,
                repo.id,
                repo.revision.replace('/', "%2F")
            ),
            None => format!(
                "{}/api/{}/{}/revision/{}",
                self.endpoint,
                repo.kind.plural(),
                repo.id,
                repo.revision.replace('/', "%2F")
            ),
        }
    }

    #[cfg(feature = "hub")]
    fn hf_repo(&self, repo: &RepoRef) -> hf_hub::api::sync::ApiRepo {
        let kind = match repo.kind {
            super::RepoKind::Model => hf_hub::RepoType::Model,
            super::RepoKind::Dataset => hf_hub::RepoType::Dataset,
        };
        self.api.repo(hf_hub::Repo::with_revision(
            repo.id.clone(),
            kind,
            repo.revision.clone(),
        ))
    }

    #[cfg(feature = "hub")]
    fn listing(&self, repo: &RepoRef) -> Result<Vec<String>, HubError> {
        let info = self
            .hf_repo(repo)
            .info()
            .map_err(|e| self.error(repo, None, e))?;
        Ok(info.siblings.into_iter().map(|s| s.rfilename).collect())
    }

    #[cfg(feature = "hub")]
    fn download(&self, repo: &RepoRef, file: &str) -> Result<PathBuf, HubError> {
        self.cache.check_inside(repo)?;
        let path = self
            .hf_repo(repo)
            .download(file)
            .map_err(|e| self.error(repo, Some(file), e))?;
        super::cache::verify(repo, file, &path)?;
        tracing::info!(repo = %repo.display(), file, path = %path.display(), "downloaded");
        Ok(path)
    }

    /// hf-hub's error in words that name the repository and file and say what to do.
    #[cfg(feature = "hub")]
    fn error(
        &self,
        repo: &RepoRef,
        file: Option<&str>,
        e: hf_hub::api::sync::ApiError,
    ) -> HubError {
        use hf_hub::api::sync::ApiError;
        let url = self.url(repo, file);
        let (r, f) = (repo.display(), file.map(str::to_string));
        let transfer = |message: String, partial: Option<PathBuf>| HubError::Transfer {
            repo: r.clone(),
            file: f.clone(),
            url: url.clone(),
            message,
            partial,
        };
        match e {
            ApiError::RequestError(e) => match *e {
                ureq::Error::Status(404, _) => HubError::NotFound {
                    repo: r,
                    file: f,
                    url,
                },
                ureq::Error::Status(status @ (401 | 403), _) => HubError::Denied {
                    repo: r,
                    file: f,
                    url,
                    status,
                },
                ureq::Error::Status(status, _) => transfer(format!("HTTP {status}"), None),
                ureq::Error::Transport(t) => transfer(format!("cannot reach the Hub: {t}"), None),
            },
            ApiError::IoError(e) => {
                transfer(format!("download interrupted: {e}"), self.partial(repo))
            }
            ApiError::InvalidResume => {
                // The kept part is longer than the file: it cannot be resumed, so it goes.
                if let Some(p) = self.partial(repo) {
                    let _ = std::fs::remove_file(p);
                }
                transfer(
                    "the partial download in the cache was longer than the file; it was removed"
                        .into(),
                    None,
                )
            }
            ApiError::MissingHeader(h) | ApiError::InvalidHeader(h) => transfer(
                format!(
                    "the reply's `{h}` header is missing or malformed (is HF_ENDPOINT a Hugging \
                     Face Hub?)"
                ),
                None,
            ),
            ApiError::LockAcquisition(p) => transfer(
                format!(
                    "another process holds {} (downloading the same file?)",
                    p.display()
                ),
                None,
            ),
            other => transfer(other.to_string(), None),
        }
    }

    /// The newest `blobs/*.part` of `repo`: what an interrupted download left to resume.
    #[cfg(feature = "hub")]
    fn partial(&self, repo: &RepoRef) -> Option<PathBuf> {
        std::fs::read_dir(self.cache.repo_dir(repo).join("blobs"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "part"))
            .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    }

    #[cfg(not(feature = "hub"))]
    fn listing(&self, repo: &RepoRef) -> Result<Vec<String>, HubError> {
        Err(HubError::FeatureDisabled {
            repo: repo.display(),
        })
    }

    #[cfg(not(feature = "hub"))]
    fn download(&self, repo: &RepoRef, _file: &str) -> Result<PathBuf, HubError> {
        Err(HubError::FeatureDisabled {
            repo: repo.display(),
        })
    }
}
