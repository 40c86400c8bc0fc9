//! Hub repository ids (`OWNER/NAME[@REVISION]`) and the check every path from outside passes.

use super::HubError;

/// What kind of repository an id names; the Hub and its cache keep them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoKind {
    /// A model (`models--OWNER--NAME` in the cache).
    Model,
    /// A dataset (`datasets--OWNER--NAME`).
    Dataset,
}

impl RepoKind {
    /// The plural the Hub's URLs and cache folders use.
    pub fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }
}

/// A repository at a revision: `OWNER/NAME` and a branch, tag or commit (`main` by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoRef {
    /// Model or dataset.
    pub kind: RepoKind,
    /// `OWNER/NAME`.
    pub id: String,
    /// Branch, tag or commit.
    pub revision: String,
}

impl RepoRef {
    /// Parses `OWNER/NAME[@REVISION]` with the Hub's rules for names (letters, digits, `-`, `_`,
    /// `.`; no `--` or `..`; at most 96 characters) and a revision that is a relative path of
    /// plain components (`v1.0`, `refs/pr/3`, a commit hash).
    ///
    /// ```
    /// use ganpo_train::hub::{RepoKind, RepoRef};
    /// let r = RepoRef::parse("Qwen/Qwen2.5-0.5B-Instruct@refs/pr/1", RepoKind::Model).unwrap();
    /// assert_eq!((r.id.as_str(), r.revision.as_str()), ("Qwen/Qwen2.5-0.5B-Instruct", "refs/pr/1"));
    /// assert!(RepoRef::parse("../etc", RepoKind::Model).is_err());
    /// ```
    pub fn parse(spec: &str, kind: RepoKind) -> Result<Self, HubError> {
        let bad = |why: String| HubError::BadId {
            id: spec.to_string(),
            why,
        };
        let (id, revision) = spec.split_once('@').unwrap_or((spec, "main"));
        let (owner, name) = id
            .split_once('/')
            .ok_or_else(|| bad("no `/` between owner and name".into()))?;
        for (what, part) in [("owner", owner), ("name", name)] {
            repo_name(part).map_err(|why| bad(format!("the {what} `{part}` {why}")))?;
        }
        safe_relative_path(revision)
            .map_err(|why| bad(format!("the revision `{revision}`: {why}")))?;
        Ok(Self {
            kind,
            id: id.to_string(),
            revision: revision.to_string(),
        })
    }

    /// `OWNER/NAME@REVISION` for messages (`OWNER/NAME` on `main`).
    pub fn display(&self) -> String {
        if self.revision == "main" {
            self.id.clone()
        } else {
            format!("{}@{}", self.id, self.revision)
        }
    }

    /// The cache folder's name: `models--OWNER--NAME` / `datasets--OWNER--NAME`.
    pub fn folder_name(&self) -> String {
        format!("{}--{}", self.kind.plural(), self.id.replace('/', "--"))
    }

    /// Whether the revision is a full commit hash (cached as `snapshots/HASH`, without a ref).
    pub fn revision_is_commit(&self) -> bool {
        self.revision.len() == 40 && self.revision.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

/// The repository a bare `OWNER/NAME[@REVISION]` names, as `transformers` and `datasets` read
/// one: only when no local file or folder has that name, and (so that a mistyped file name is
/// reported as a missing file) when its name has no file extension ganpo reads.
pub fn bare_id(spec: &str, kind: RepoKind) -> Option<RepoRef> {
    const FILES: &[&str] = &[
        ".jsonl",
        ".gz",
        ".parquet",
        ".json",
        ".csv",
        ".gguf",
        ".onnx",
        ".safetensors",
        ".bin",
        ".toml",
        ".yaml",
        ".yml",
        ".mpk",
    ];
    let name = spec.split('@').next().unwrap_or(spec);
    if std::path::Path::new(spec).exists() || FILES.iter().any(|e| name.ends_with(e)) {
        return None;
    }
    RepoRef::parse(spec, kind).ok()
}

/// The Hub's rule for an owner or repository name; the reason when it is broken.
fn repo_name(part: &str) -> Result<(), String> {
    if part.is_empty() || part.len() > 96 {
        return Err("must be 1 to 96 characters".into());
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("holds {c:?}"));
    }
    if part.contains("--") || part.contains("..") {
        return Err("holds `--` or `..`".into());
    }
    if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        return Err("starts or ends with `-` or `.`".into());
    }
    Ok(())
}

/// Whether `path` (from a URI, a config or the network) is a relative path of plain components:
/// not empty, not absolute, no `.` or `..` component, no empty component, no backslash, colon or
/// control character (a Windows drive or separator); the reason when not.
pub fn safe_relative_path(path: &str) -> Result<(), String> {
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
    }

    #[test]
    fn ids_follow_the_hubs_rules() {
        let r = RepoRef::parse("trl-lib/ultrafeedback_binarized", RepoKind::Dataset).unwrap();
        assert_eq!(r.revision, "main");
        assert_eq!(
            r.folder_name(),
            "datasets--trl-lib--ultrafeedback_binarized"
        );
        let c = RepoRef::parse(
            "a/b@0123456789abcdef0123456789abcdef01234567",
            RepoKind::Model,
        )
        .unwrap();
        assert!(c.revision_is_commit() && !r.revision_is_commit());
        assert!(bare_id("data/train.jsonl", RepoKind::Dataset).is_none());
        assert!(bare_id("models/tiny.gguf", RepoKind::Model).is_none());
        assert!(bare_id(".", RepoKind::Model).is_none());
        assert_eq!(
            bare_id("Qwen/Qwen2.5-0.5B@v1", RepoKind::Model)
                .unwrap()
                .revision,
            "v1"
        );
        for bad in [
            "gpt2",
            "../pairs",
            "ganpo/..",
            "a/b/c",
            "a/b@../../x",
            "a/b@",
            "a--b/c",
            "a/-b",
            "/abs/path",
            "a/b c",
        ] {
            let e = RepoRef::parse(bad, RepoKind::Model).unwrap_err();
            assert!(
                e.to_string().contains("is not a Hub repository id"),
                "{bad}: {e}"
            );
        }
    }
}
