//! The Hugging Face cache as `huggingface_hub` lays it out, read without the network.
//!
//! ```text
//! $HF_HUB_CACHE/models--OWNER--NAME/
//!     refs/main                      the commit `main` pointed to when last downloaded
//!     blobs/ETAG                     file contents, named by the Hub's checksum
//!     snapshots/COMMIT/config.json   -> ../../blobs/ETAG
//! ```

use std::path::{Path, PathBuf};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::{HubError, RepoRef};

/// The cache root (`HF_HUB_CACHE`) ganpo shares with Python.
#[derive(Clone, Debug)]
pub struct HubCache {
    /// The folder holding `models--*` and `datasets--*`.
    pub root: PathBuf,
}

impl HubCache {
    /// The cache `huggingface_hub` uses in this environment: `HF_HUB_CACHE` (or its old name
    /// `HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`, where `HF_HOME` defaults to
    /// `$XDG_CACHE_HOME/huggingface` and then `~/.cache/huggingface`.
    pub fn from_env() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .unwrap_or_else(|| hf_home().join("hub"));
        Self { root }
    }

    /// The folder of `repo` in the cache.
    pub fn repo_dir(&self, repo: &RepoRef) -> PathBuf {
        self.root.join(repo.folder_name())
    }

    /// The commit `repo`'s revision resolves to in the cache (its ref file, or the revision
    /// itself when it is a commit with a snapshot); `None` when nothing of it is cached.
    pub fn commit(&self, repo: &RepoRef) -> Option<String> {
        let dir = self.repo_dir(repo);
        if repo.revision_is_commit() {
            return dir
                .join("snapshots")
                .join(&repo.revision)
                .is_dir()
                .then(|| repo.revision.clone());
        }
        let commit = std::fs::read_to_string(dir.join("refs").join(&repo.revision)).ok()?;
        let commit = commit.trim();
        (!commit.is_empty()).then(|| commit.to_string())
    }

    /// The snapshot folder of `repo`'s revision, when cached.
    pub fn snapshot(&self, repo: &RepoRef) -> Option<PathBuf> {
        let commit = self.commit(repo)?;
        let dir = self.repo_dir(repo).join("snapshots").join(commit);
        dir.is_dir().then_some(dir)
    }

    /// The cached copy of `file` at `repo`'s revision, verified against its checksum; `None`
    /// when not cached. A copy whose bytes do not match is removed and reported.
    pub fn file(&self, repo: &RepoRef, file: &str) -> Result<Option<PathBuf>, HubError> {
        let Some(snapshot) = self.snapshot(repo) else {
            return Ok(None);
        };
        let path = snapshot.join(file);
        if !path.is_file() {
            return Ok(None);
        }
        verify(repo, file, &path)?;
        Ok(Some(path))
    }

    /// Every file of `repo`'s cached snapshot (relative, `/`-separated, sorted); `None` when
    /// nothing of it is cached.
    pub fn files(&self, repo: &RepoRef) -> Option<Vec<String>> {
        let snapshot = self.snapshot(repo)?;
        let mut out = Vec::new();
        collect_files(&snapshot, &snapshot, &mut out);
        out.sort();
        Some(out)
    }

    /// Refuses a cache in which `repo`'s folder, or a link anywhere inside it, leads out of the
    /// cache: a download would write wherever it points. (`huggingface_hub` links only files,
    /// to `../../blobs/ETAG`, which stay inside.)
    pub fn check_inside(&self, repo: &RepoRef) -> Result<(), HubError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HubError::Io { path, source }
        };
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let root = self.root.canonicalize().map_err(io(&self.root))?;
        let outside = |p: &Path, real: PathBuf| HubError::Unsafe {
            repo: repo.display(),
            what: "cache entry",
            value: p.display().to_string(),
            why: format!(
                "it leads to {}, outside the cache {} (a symbolic link?)",
                real.display(),
                root.display()
            ),
        };
        let dir = self.repo_dir(repo);
        if let Ok(real) = dir.canonicalize()
            && !real.starts_with(&root)
        {
            return Err(outside(&dir, real));
        }
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                let Ok(kind) = e.file_type() else { continue };
                if kind.is_symlink() {
                    // A dangling link is harmless to read but would be written through.
                    let real = p
                        .canonicalize()
                        .unwrap_or_else(|_| std::fs::read_link(&p).unwrap_or_default());
                    let real = if real.is_relative() {
                        d.join(real)
                    } else {
                        real
                    };
                    let real = normalize(&real);
                    if !(real.starts_with(&root) || real.starts_with(&self.root)) {
                        return Err(outside(&p, real));
                    }
                } else if kind.is_dir() {
                    stack.push(p);
                }
            }
        }
        Ok(())
    }
}

/// `path` with `.` and `..` components folded (without touching the file system).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `HF_HOME` as `huggingface_hub` resolves it.
pub fn hf_home() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HOME").unwrap_or_else(|| {
        var("XDG_CACHE_HOME")
            .or_else(|| var("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"))
            .join("huggingface")
    })
}

/// The Hub token: `HF_TOKEN` (or the older `HUGGING_FACE_HUB_TOKEN`), else the file
/// `huggingface-cli login` writes (`HF_TOKEN_PATH`, default `$HF_HOME/token`).
pub fn token() -> Option<String> {
    let nonempty = |s: String| {
        let s = s.trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    for k in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"] {
        if let Some(t) = std::env::var(k).ok().and_then(nonempty) {
            return Some(t);
        }
    }
    let path = std::env::var_os("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| hf_home().join("token"));
    std::fs::read_to_string(path).ok().and_then(nonempty)
}

/// Checks the bytes of the cached `path` against the checksum its blob is named by: a 64-digit
/// name is the SHA-256 of an LFS file, a 40-digit one the git blob SHA-1 of a small file. A
/// mismatching blob and its link are removed, so the next run downloads the file again. Files
/// that are not links to a checksum-named blob (a cache written without symbolic links) are
/// taken as they are.
pub fn verify(repo: &RepoRef, file: &str, path: &Path) -> Result<(), HubError> {
    let Ok(blob) = path.canonicalize() else {
        return Ok(());
    };
    let Some(expected) = blob.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    // Each blob is read once per process: a command that resolves a model twice (to load it,
    // then to copy its tokenizer files) does not hash its weights twice.
    let stamp = std::fs::metadata(&blob)
        .ok()
        .map(|m| (blob.clone(), m.len(), m.modified().ok()));
    static VERIFIED: std::sync::Mutex<Vec<(PathBuf, u64, Option<std::time::SystemTime>)>> =
        std::sync::Mutex::new(Vec::new());
    let seen = |s: &_| VERIFIED.lock().is_ok_and(|v| v.contains(s));
    if stamp.as_ref().is_some_and(seen) {
        return Ok(());
    }
    let hex = |n: usize| expected.len() == n && expected.bytes().all(|b| b.is_ascii_hexdigit());
    let actual = if hex(64) {
        hash_file::<Sha256>(&blob, None)?
    } else if hex(40) {
        let len = std::fs::metadata(&blob)
            .map_err(|source| HubError::Io {
                path: blob.clone(),
                source,
            })?
            .len();
        hash_file::<Sha1>(&blob, Some(len))?
    } else {
        return Ok(());
    };
    if actual.eq_ignore_ascii_case(expected) {
        if let (Some(stamp), Ok(mut v)) = (stamp, VERIFIED.lock()) {
            v.push(stamp);
        }
        return Ok(());
    }
    let _ = std::fs::remove_file(&blob);
    let _ = std::fs::remove_file(path);
    Err(HubError::Checksum {
        repo: repo.display(),
        file: file.to_string(),
        path: path.to_path_buf(),
        expected: expected.to_string(),
        actual,
    })
}

/// The hex digest of `path`; with `git_len` the git blob header (`blob LEN\0`) comes first.
fn hash_file<D: Digest + std::io::Write>(
    path: &Path,
    git_len: Option<u64>,
) -> Result<String, HubError> {
    let header = git_len
        .map(|len| format!("blob {len}\0"))
        .unwrap_or_default();
    crate::io::file_digest::<D>(path, header.as_bytes()).map_err(|source| HubError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::RepoKind;

    #[test]
    fn git_blob_sha1_and_sha256_are_the_hubs() {
        // `printf 'hello\n' | git hash-object --stdin` and `sha256sum`.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"hello\n").unwrap();
        assert_eq!(
            hash_file::<Sha1>(&f, Some(6)).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(
            hash_file::<Sha256>(&f, None).unwrap(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
    }

    #[test]
    fn a_damaged_blob_is_named_and_removed() {
        let cache = tempfile::tempdir().unwrap();
        let repo = RepoRef::parse("o/n", RepoKind::Model).unwrap();
        let c = HubCache {
            root: cache.path().to_path_buf(),
        };
        let dir = c.repo_dir(&repo);
        let sha = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        let commit = "0".repeat(40);
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        std::fs::create_dir_all(dir.join("refs")).unwrap();
        std::fs::create_dir_all(dir.join("snapshots").join(&commit)).unwrap();
        std::fs::write(dir.join("refs/main"), &commit).unwrap();
        std::fs::write(dir.join("blobs").join(sha), b"hello\n").unwrap();
        let link = dir.join("snapshots").join(&commit).join("w.bin");
        std::os::unix::fs::symlink(format!("../../blobs/{sha}"), &link).unwrap();
        assert_eq!(c.file(&repo, "w.bin").unwrap(), Some(link.clone()));
        assert_eq!(c.files(&repo).unwrap(), vec!["w.bin".to_string()]);
        // (Another length: within one process a blob is verified once per size and mtime.)
        std::fs::write(dir.join("blobs").join(sha), b"hello!\n").unwrap();
        let e = c.file(&repo, "w.bin").unwrap_err().to_string();
        assert!(
            e.contains("o/n: w.bin: checksum mismatch") && e.contains(sha),
            "{e}"
        );
        assert!(!dir.join("blobs").join(sha).exists() && !link.exists());
        assert_eq!(c.file(&repo, "w.bin").unwrap(), None);
    }
}
