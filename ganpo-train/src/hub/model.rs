//! `--model OWNER/NAME[@REVISION]`: a model (or PEFT adapter) repository as a local folder.

use std::path::{Path, PathBuf};

use super::{Hub, HubError, RepoKind, RepoRef};

/// The files of a model repository ganpo reads, besides the weights.
const MODEL_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "adapter_config.json",
];

/// The weights, in the order they are looked for.
const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";
const ADAPTER: &str = "adapter_model.safetensors";

/// The Hub repository `path` names ([`super::bare_id`]): a path that does not exist here and
/// reads as `OWNER/NAME[@REVISION]` (a local file or folder of that name wins, as in
/// `transformers`).
pub fn hub_id(path: &Path) -> Option<RepoRef> {
    super::bare_id(path.to_str()?, RepoKind::Model)
}

/// The local folder of the model `path` names: `path` itself when it is local (or not a Hub
/// id: loading then says what is missing), else the repository's snapshot in the Hugging Face
/// cache, downloading what it lacks (config, safetensors weights, sharded or not, tokenizer
/// files, chat template; for an adapter repository `adapter_config.json` and its weights).
/// A snapshot that already holds them is used without a network call.
///
/// ```
/// # use std::path::Path;
/// // A local path is returned as it is, without looking at the Hub.
/// let dir = ganpo_train::hub::model_dir(Path::new("."), false).unwrap();
/// assert_eq!(dir, Path::new("."));
/// ```
pub fn model_dir(path: &Path, progress: bool) -> Result<PathBuf, HubError> {
    let Some(repo) = hub_id(path) else {
        return Ok(path.to_path_buf());
    };
    let hub = Hub::from_env(progress)?;
    resolve(&hub, &repo)
}

/// The snapshot folder of the model `repo` with every file ganpo needs in it.
pub fn resolve(hub: &Hub, repo: &RepoRef) -> Result<PathBuf, HubError> {
    if let Some(cached) = hub.cache().files(repo) {
        // A snapshot of the weights alone (a model loaded without its tokenizer) is completed
        // from the Hub when it can be; offline it is used as it is.
        let tokenizer = |f: &String| f == "tokenizer.json" || f == "adapter_config.json";
        let complete = hub.is_offline() || cached.iter().any(tokenizer);
        match needed(hub, repo, &cached, true) {
            Ok(files) if complete => {
                for f in &files {
                    // Verified, and a damaged one removed and reported.
                    hub.file(repo, f)?;
                }
                if let Some(dir) = hub.cache().snapshot(repo) {
                    return Ok(dir);
                }
            }
            Ok(_) => {}
            Err(missing) if hub.is_offline() => {
                return Err(HubError::Offline {
                    repo: repo.display(),
                    file: Some(missing),
                    cache: hub.cache().root.clone(),
                });
            }
            Err(_) => {}
        }
    }
    let listing = hub.list(repo)?;
    if listing.iter().any(|f| f == INDEX) && !listing.iter().any(|f| f == SINGLE) {
        hub.file(repo, INDEX)?;
    }
    let files = needed(hub, repo, &listing, false).map_err(|message| HubError::Missing {
        repo: repo.display(),
        message,
    })?;
    let mut dir = None;
    for f in &files {
        let path = hub.file(repo, f)?;
        if f == "config.json" || f == "adapter_config.json" {
            dir = path.parent().map(Path::to_path_buf);
        }
    }
    dir.ok_or_else(|| HubError::Missing {
        repo: repo.display(),
        message: "no config.json".into(),
    })
}

/// The files of `available` ganpo needs from `repo`, shards of a sharded checkpoint included;
/// what is missing when they are not all there (a file name when `cached`, a sentence for the
/// user otherwise). A sharded checkpoint's index is read from the cache.
fn needed(
    hub: &Hub,
    repo: &RepoRef,
    available: &[String],
    cached: bool,
) -> Result<Vec<String>, String> {
    let has = |f: &str| available.iter().any(|a| a == f);
    let adapter = has("adapter_config.json");
    if !has("config.json") && !adapter {
        return Err(if cached {
            "config.json".into()
        } else {
            format!(
                "no config.json or adapter_config.json: not a transformers model or PEFT \
                 adapter repository (it holds: {})",
                preview(available)
            )
        });
    }
    let mut files: Vec<String> = MODEL_FILES
        .iter()
        .filter(|f| has(f))
        .map(|f| f.to_string())
        .collect();
    if adapter {
        if !has(ADAPTER) {
            return Err(ADAPTER.into());
        }
        files.push(ADAPTER.into());
    } else if has(SINGLE) {
        files.push(SINGLE.into());
    } else if has(INDEX) {
        // Online the index was fetched before (its errors are the caller's).
        let index = hub
            .cache()
            .file(repo, INDEX)
            .ok()
            .flatten()
            .ok_or_else(|| INDEX.to_string())?;
        let shards = shards(&index)?;
        if let Some(s) = shards.iter().find(|s| !has(s)) {
            return Err(if cached {
                s.clone()
            } else {
                format!("{INDEX} names the shard {s}, which the repository does not hold")
            });
        }
        files.push(INDEX.into());
        files.extend(shards);
    } else {
        return Err(if cached {
            SINGLE.into()
        } else {
            format!(
                "no safetensors weights ({SINGLE} or {INDEX}); ganpo reads safetensors \
                 checkpoints (the repository holds: {})",
                preview(available)
            )
        });
    }
    Ok(files)
}

/// The shard files a `model.safetensors.index.json` maps tensors to, each once, sorted.
fn shards(index: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(index).map_err(|e| format!("{}: {e}", index.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index.display()))?;
    let map = json["weight_map"]
        .as_object()
        .ok_or_else(|| format!("{}: no `weight_map` object", index.display()))?;
    let mut shards: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    shards.sort();
    shards.dedup();
    if let Some(bad) = shards
        .iter()
        .find(|s| super::safe_relative_path(s).is_err())
    {
        return Err(format!(
            "{}: the shard name `{bad}` is not a file of the repository",
            index.display()
        ));
    }
    Ok(shards)
}

fn preview(files: &[String]) -> String {
    let mut s = files
        .iter()
        .take(12)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > 12 {
        s.push_str(&format!(", ... ({} files)", files.len()));
    }
    if s.is_empty() {
        s = "no files".into();
    }
    s
}
