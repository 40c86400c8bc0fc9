//! Writing output files so that a reader never sees half of one, and one writer per run
//! directory ([`RunLock`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest;

/// The hex digest (`D`: SHA-256, SHA-1, ...) of `prefix` followed by the bytes of the file at
/// `path`, read in a stream: checkpoint checksums and the Hub's blob checksums.
pub fn file_digest<D: sha2::Digest + Write>(path: &Path, prefix: &[u8]) -> io::Result<String> {
    let mut hasher = D::new();
    Digest::update(&mut hasher, prefix);
    io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Writes `bytes` to a temporary sibling of `path`, then renames it into place: `path` holds
/// either its old content or all of the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// Writes `rows` as JSON Lines (one object per line), atomically.
pub fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> io::Result<()> {
    let mut text = String::new();
    for row in rows {
        text.push_str(&serde_json::to_string(row).map_err(io::Error::other)?);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Writes `value` as pretty-printed JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, format!("{text}\n").as_bytes())
}

/// An exclusive hold on a run directory, so that two processes never write one run directory
/// at once: an OS file lock on `DIR/.ganpo.lock` (which holds the holder's PID), released when
/// the `RunLock` is dropped or its process dies, so a killed run never leaves it stuck.
///
/// # Example
/// ```
/// use ganpo_train::io::RunLock;
///
/// let dir = tempfile::tempdir().unwrap();
/// let lock = RunLock::acquire(dir.path()).unwrap();
/// // A second writer (here, in the same process) is refused while the first holds it.
/// assert!(RunLock::acquire(dir.path()).is_err());
/// drop(lock);
/// assert!(RunLock::acquire(dir.path()).is_ok());
/// ```
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Why a run directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum RunLockError {
    /// Another process holds the directory.
    #[error(
        "{} is in use by another ganpo process{}: wait for it to finish, or write to another \
         directory (train.output_dir)",
        dir.display(),
        pid.map(|p| format!(" (PID {p})")).unwrap_or_default()
    )]
    Busy {
        /// The run directory.
        dir: PathBuf,
        /// The holder's PID, as it wrote it.
        pid: Option<u32>,
    },
    /// The lock file could not be created or locked.
    #[error("locking {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

impl RunLock {
    /// The lock file's name inside a run directory.
    pub const FILE: &'static str = ".ganpo.lock";

    /// Creates `dir` if needed and takes its lock, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, RunLockError> {
        let path = dir.join(Self::FILE);
        let io = |source| RunLockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        hold(&mut file, dir, &path)?;
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(io)?;
        Ok(Self { _file: file })
    }

    /// Fails as [`Self::acquire`] would when another process holds `dir`, without creating or
    /// locking anything: a check before work that should not start if the run directory is
    /// taken.
    pub fn check_free(dir: &Path) -> Result<(), RunLockError> {
        let path = dir.join(Self::FILE);
        let Ok(mut file) = OpenOptions::new().read(true).write(true).open(&path) else {
            return Ok(());
        };
        // Held only until `file` is dropped at the end of this check.
        hold(&mut file, dir, &path)
    }
}

/// Takes the lock of the run directory `dir` on its lock file (at `path`), or says who holds
/// it. A file system that cannot lock files (some network mounts) must not stop a run: it gets a
/// warning.
fn hold(file: &mut File, dir: &Path, path: &Path) -> Result<(), RunLockError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(RunLockError::Busy {
            dir: dir.to_path_buf(),
            pid: holder(file),
        }),
        Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
            tracing::warn!(
                path = %path.display(),
                "this file system cannot lock files: nothing stops a second run from writing \
                 the same directory"
            );
            Ok(())
        }
        Err(TryLockError::Error(source)) => Err(RunLockError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The PID a lock holder wrote into its lock file.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
