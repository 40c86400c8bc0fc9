//! Models and datasets by Hub id, in the Hugging Face cache: downloaded from a local server that
//! speaks the Hub's URL layout (HF_ENDPOINT), into the layout `huggingface_hub` writes (checked
//! against a cache it wrote, tests/fixtures/hf-cache from tools/fixtures/hf_cache_fixtures.py),
//! used again without a network call, and every failure named.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

mod common;
use common::{fixtures, ganpo_with_env};

use serde_json::Value;

/// The cache `huggingface_hub` wrote (its `hub/` folder is an `HF_HUB_CACHE`).
fn hf_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-cache/hub")
}

/// One served file: its bytes and the Hub's checksum (the blob's name in the fixture cache).
#[derive(Clone)]
struct Served {
    body: Vec<u8>,
    etag: String,
}

/// A repository: commit and files by name.
#[derive(Clone)]
struct Repo {
    commit: String,
    files: BTreeMap<String, Served>,
}

/// The repositories of the fixture cache, keyed by (`models`/`datasets`, `OWNER/NAME`).
fn fixture_repos() -> HashMap<(String, String), Repo> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(hf_fixture()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some((kind, id)) = name.split_once("--") else {
            continue;
        };
        let id = id.replacen("--", "/", 1);
        let snapshots = e.path().join("snapshots");
        let snapshot = std::fs::read_dir(&snapshots)
            .unwrap()
            .flatten()
            .next()
            .unwrap();
        let commit = snapshot.file_name().to_string_lossy().to_string();
        let mut files = BTreeMap::new();
        let mut stack = vec![snapshot.path()];
        while let Some(d) = stack.pop() {
            for f in std::fs::read_dir(&d).unwrap().flatten() {
                let p = f.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p
                    .strip_prefix(snapshot.path())
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                let blob = p.canonicalize().unwrap();
                files.insert(
                    rel,
                    Served {
                        body: std::fs::read(&blob).unwrap(),
                        etag: blob.file_name().unwrap().to_string_lossy().to_string(),
                    },
                );
            }
        }
        out.insert((kind.to_string(), id), Repo { commit, files });
    }
    out
}

/// What the server does besides serving: repositories that need a token, files whose first
/// download is cut half way.
#[derive(Clone, Default)]
struct Faults {
    gated: Option<(String, String)>,
    cut_once: Vec<String>,
}

/// A request: path and `Range` header.
type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Serves `repos` on 127.0.0.1 as the Hub does (`/api/KIND/ID/revision/REV`,
/// `[/datasets]/ID/resolve/REV/FILE` with `X-Repo-Commit`, `ETag` / `X-Linked-Etag` and
/// ranges); 404 for anything else.
fn serve(repos: HashMap<(String, String), Repo>, faults: Faults) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let cut = Arc::new(Mutex::new(faults.cut_once.clone()));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let (mut range, mut auth) = (None, None);
            let mut header = String::new();
            while reader.read_line(&mut header).unwrap_or(0) > 2 {
                if let Some((k, v)) = header.trim_end().split_once(": ") {
                    match k.to_ascii_lowercase().as_str() {
                        "range" => range = Some(v.to_string()),
                        "authorization" => auth = Some(v.to_string()),
                        _ => {}
                    }
                }
                header.clear();
            }
            seen.lock().unwrap().push((path.clone(), range.clone()));
            let mut stream = stream;
            let mut reply = |status: &str, headers: Vec<String>, body: &[u8], send: usize| {
                let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
                for h in headers {
                    head.push_str(&h);
                    head.push_str("\r\n");
                }
                head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body[..send]);
            };
            let found = repos.iter().find_map(|((kind, id), repo)| {
                let resolve = match kind.as_str() {
                    "models" => format!("/{id}/resolve/main/"),
                    _ => format!("/{kind}/{id}/resolve/main/"),
                };
                if path == format!("/api/{kind}/{id}/revision/main") {
                    let siblings: Vec<Value> = repo
                        .files
                        .keys()
                        .map(|f| serde_json::json!({ "rfilename": f }))
                        .collect();
                    let body = serde_json::json!({"sha": repo.commit, "siblings": siblings});
                    return Some((kind, id, None, body.to_string().into_bytes(), repo));
                }
                let file = path.strip_prefix(&resolve)?;
                let served = repo.files.get(file)?;
                Some((kind, id, Some(file.to_string()), served.body.clone(), repo))
            });
            let Some((kind, id, file, body, repo)) = found else {
                reply("404 Not Found", vec![], b"", 0);
                continue;
            };
            if let Some((gated, token)) = &faults.gated
                && gated == id
                && auth.as_deref() != Some(&format!("Bearer {token}"))
            {
                let _ = kind;
                reply("401 Unauthorized", vec![], b"", 0);
                continue;
            }
            let Some(file) = file else {
                reply("200 OK", vec![], &body, body.len());
                continue;
            };
            let etag = &repo.files[&file].etag;
            let mut headers = vec![format!("X-Repo-Commit: {}", repo.commit)];
            headers.push(format!("ETag: \"{etag}\""));
            if etag.len() == 64 {
                headers.push(format!("X-Linked-Etag: \"{etag}\""));
            }
            let start: usize = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let end = match range.as_deref().and_then(|r| r.split('-').nth(1)) {
                Some(e) if !e.is_empty() => e.parse::<usize>().unwrap() + 1,
                _ => body.len(),
            };
            let part = &body[start.min(body.len())..end.min(body.len())];
            headers.push(format!(
                "Content-Range: bytes {start}-{}/{}",
                end.saturating_sub(1),
                body.len()
            ));
            let whole_download = range.as_deref() != Some("bytes=0-0");
            let mut cut = cut.lock().unwrap();
            let send = match cut.iter().position(|c| *c == file) {
                Some(i) if whole_download => {
                    cut.remove(i);
                    part.len() / 2
                }
                _ => part.len(),
            };
            reply("206 Partial Content", headers, part, send);
        }
    });
    (addr, log)
}

/// `ganpo eval` of `model` on `data` (the fixture reference as reference model).
fn eval(model: &str, data: &str, envs: &[(&str, &str)]) -> (bool, String, String) {
    let reference = fixtures().join("reference");
    let out = ganpo_with_env(
        &[
            "eval",
            "--model",
            model,
            "--ref-model",
            reference.to_str().unwrap(),
            "--batch-size",
            "4",
            "--data",
            data,
        ],
        envs,
    );
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The evaluation of the fixture files the Hub repositories were made from.
fn local_eval(data: &str) -> Value {
    let policy = fixtures().join("policy");
    let (ok, stdout, stderr) = eval(
        policy.to_str().unwrap(),
        fixtures().join(data).to_str().unwrap(),
        &[],
    );
    assert!(ok, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// Every entry under `root` (files with their bytes' length and content hash, links with their
/// target), leaving out what only huggingface_hub keeps (`trees/`, `CACHEDIR.TAG`, locks).
fn layout(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            let name = e.file_name().to_string_lossy().to_string();
            if name == "CACHEDIR.TAG"
                || name == ".locks"
                || name == "trees"
                || name.ends_with(".lock")
            {
                continue;
            }
            let kind = e.file_type().unwrap();
            if kind.is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else if kind.is_dir() {
                stack.push(p);
            } else {
                // FNV-1a of the bytes: equal files, equal strings.
                let bytes = std::fs::read(&p).unwrap();
                let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
                    (h ^ b as u64).wrapping_mul(0x100000001b3)
                });
                out.insert(rel, format!("{} bytes, fnv {hash:016x}", bytes.len()));
            }
        }
    }
    out
}

const MODEL: &str = "ganpo/tiny-policy";
const TRAIN: &str = "hf://datasets/ganpo/pairs/train";

#[test]
fn hub_ids_download_into_the_hugging_face_cache_and_are_used_again_without_the_network() {
    let (endpoint, log) = serve(fixture_repos(), Faults::default());
    let home = tempfile::tempdir().unwrap();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HOME", home.path().to_str().unwrap()),
    ];
    // The sharded Hub copy of the fixture policy evaluates as the local one.
    let (ok, stdout, stderr) = eval(MODEL, TRAIN, &env);
    assert!(ok, "{stderr}");
    let hub: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(hub, local_eval("data/standard.parquet"));
    assert!(
        !log.lock()
            .unwrap()
            .iter()
            .any(|(p, _)| p.contains("test-0000")),
        "only the selected split is fetched"
    );
    // What ganpo wrote is what huggingface_hub writes for the same repositories (ganpo fetches
    // only the files it reads: no .gitattributes, no README, one split).
    let (ours, theirs) = (layout(&home.path().join("hub")), layout(&hf_fixture()));
    for (entry, what) in &ours {
        assert_eq!(theirs.get(entry), Some(what), "{entry}");
    }
    let links = ours.values().filter(|v| v.starts_with("->")).count();
    assert_eq!(links, 9, "8 model files and the train split: {ours:#?}");

    // Used again: not one request, with or without HF_HUB_OFFLINE.
    let requests = log.lock().unwrap().len();
    assert!(eval(MODEL, TRAIN, &env).0);
    let unreachable = [
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ("HF_HOME", home.path().to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let (ok, stdout, stderr) = eval(MODEL, TRAIN, &unreachable);
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), hub);
    assert_eq!(log.lock().unwrap().len(), requests, "the cache was enough");

    // A snapshot without its tokenizer (a model loaded alone in Python) is completed online.
    let snapshot = std::fs::read_dir(home.path().join("hub/models--ganpo--tiny-policy/snapshots"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let tokenizer_requests = || {
        log.lock()
            .unwrap()
            .iter()
            .filter(|(p, r)| p.ends_with("/resolve/main/tokenizer.json") && r.is_some())
            .count()
    };
    let before = tokenizer_requests();
    std::fs::remove_file(snapshot.join("tokenizer.json")).unwrap();
    let (ok, _, stderr) = eval(MODEL, TRAIN, &env);
    assert!(ok, "{stderr}");
    assert!(snapshot.join("tokenizer.json").is_file());
    assert!(tokenizer_requests() > before, "fetched again");

    // A config and split as `datasets` names them (`default` is the repository itself).
    let (ok, stdout, stderr) = eval(MODEL, "hf://datasets/ganpo/pairs/default/test", &env);
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        local_eval("data/conversational.parquet")
    );
}

#[test]
fn a_cache_written_by_huggingface_hub_is_used_as_it_is() {
    // HF_HUB_CACHE names the fixture cache itself; no server runs at all.
    let cache = hf_fixture();
    for offline in ["1", "0"] {
        let env = [
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
            ("HF_HUB_CACHE", cache.to_str().unwrap()),
            ("HF_HUB_OFFLINE", offline),
        ];
        let (ok, stdout, stderr) = eval(MODEL, "ganpo/pairs", &env);
        assert!(ok, "offline={offline}: {stderr}");
        let both: Value = serde_json::from_str(&stdout).unwrap();
        let pairs = |v: Value| v["eval_pairs"].as_u64().unwrap();
        assert_eq!(
            pairs(both),
            pairs(local_eval("data/standard.parquet"))
                + pairs(local_eval("data/conversational.parquet")),
            "train and test splits: {stdout}"
        );
        let (ok, stdout, stderr) = eval(MODEL, TRAIN, &env);
        assert!(ok, "{stderr}");
        assert_eq!(
            serde_json::from_str::<Value>(&stdout).unwrap(),
            local_eval("data/standard.parquet")
        );
    }
}

#[test]
fn hub_failures_name_the_repository_the_file_and_what_to_do() {
    let mut repos = fixture_repos();
    let policy = repos[&("models".to_string(), MODEL.to_string())].clone();
    repos.insert(("models".into(), "ganpo/gated".into()), policy);
    let shard = "model-00001-of-00002.safetensors";
    let faults = Faults {
        gated: Some(("ganpo/gated".into(), "hf_secret".into())),
        cut_once: vec![shard.into()],
    };
    let (endpoint, log) = serve(repos, faults);
    let home = tempfile::tempdir().unwrap();
    let h = home.path().to_str().unwrap();
    let env = [("HF_ENDPOINT", endpoint.as_str()), ("HF_HOME", h)];

    // 404.
    let (ok, _, stderr) = eval("ganpo/missing", TRAIN, &env);
    assert!(!ok);
    assert!(
        stderr.contains("ganpo/missing: not found on the Hub")
            && stderr.contains("/api/models/ganpo/missing/revision/main: HTTP 404"),
        "{stderr}"
    );
    // 401 without a token; HF_TOKEN is sent.
    let (ok, _, stderr) = eval("ganpo/gated", TRAIN, &env);
    assert!(!ok);
    assert!(
        stderr.contains("ganpo/gated: access denied") && stderr.contains("set HF_TOKEN"),
        "{stderr}"
    );

    // A download cut half way: named, nothing taken for whole, the part kept; the next run
    // resumes it where it stopped and the checksum holds.
    let (ok, _, stderr) = eval(MODEL, TRAIN, &env);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{MODEL}: {shard}: download interrupted"))
            && stderr.contains("the next run resumes it"),
        "{stderr}"
    );
    let repo_dir = home.path().join("hub/models--ganpo--tiny-policy");
    let links: Vec<String> = layout(&repo_dir).into_keys().collect();
    assert!(
        !links.iter().any(|l| l.ends_with(shard)),
        "no link to a partial file: {links:?}"
    );
    assert!(links.iter().any(|l| l.ends_with(".part")), "{links:?}");
    let (ok, _, stderr) = eval(MODEL, TRAIN, &env);
    assert!(ok, "{stderr}");
    let resumed = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.ends_with(shard))
        .filter_map(|(_, r)| r.clone())
        .filter(|r| r != "bytes=0-0")
        .collect::<Vec<_>>();
    assert!(
        resumed.len() == 2 && resumed[0] == "bytes=0-" && resumed[1] != "bytes=0-",
        "resumed from where it stopped: {resumed:?}"
    );
    let (ok, _, stderr) = eval(
        "ganpo/gated",
        TRAIN,
        &[
            ("HF_ENDPOINT", &endpoint),
            ("HF_HOME", h),
            ("HF_TOKEN", "hf_secret"),
        ],
    );
    assert!(ok, "{stderr}");

    // A damaged cached file: named, removed, downloaded again by the next run.
    let blob = std::fs::read_dir(repo_dir.join("blobs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().unwrap().len() == 64 && std::fs::metadata(p).unwrap().len() > 10_000
        })
        .unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let (ok, _, stderr) = eval(MODEL, TRAIN, &env);
    assert!(!ok);
    assert!(
        stderr.contains("checksum mismatch") && stderr.contains("run again to download it again"),
        "{stderr}"
    );
    assert!(!blob.exists());
    let (ok, _, stderr) = eval(MODEL, TRAIN, &env);
    assert!(ok, "{stderr}");

    // Offline with nothing cached.
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = eval(
        MODEL,
        TRAIN,
        &[
            ("HF_HOME", empty.path().to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{MODEL}: not in the Hugging Face cache"))
            && stderr.contains("HF_HUB_OFFLINE is set"),
        "{stderr}"
    );
    // The Hub unreachable: named, with what to do.
    let (ok, _, stderr) = eval(
        "ganpo/elsewhere",
        TRAIN,
        &[
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
            ("HF_HOME", empty.path().to_str().unwrap()),
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("ganpo/elsewhere: cannot reach the Hub")
            && stderr.contains("HF_HUB_OFFLINE=1"),
        "{stderr}"
    );
}

#[test]
fn a_listing_or_a_link_that_leaves_the_cache_writes_nothing() {
    let pairs = fixture_repos()[&("datasets".to_string(), "ganpo/pairs".to_string())].clone();
    let train = pairs.files["data/train-00000-of-00001.parquet"].clone();
    let home = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let absolute = outside.path().join("absolute.parquet");
    for name in [
        "../../../../escape.parquet".to_string(),
        absolute.display().to_string(),
        "data/../../../../../escape.parquet".to_string(),
    ] {
        let repo = Repo {
            commit: pairs.commit.clone(),
            files: BTreeMap::from([(name.clone(), train.clone())]),
        };
        let (endpoint, _) = serve(
            HashMap::from([(("datasets".into(), "ganpo/evil".into()), repo)]),
            Faults::default(),
        );
        let env = [
            ("HF_ENDPOINT", endpoint.as_str()),
            ("HF_HOME", home.path().to_str().unwrap()),
        ];
        let (ok, _, stderr) = eval(MODEL_LOCAL.as_str(), "hf://datasets/ganpo/evil", &env);
        assert!(!ok, "{name}");
        assert!(
            stderr.contains("would leave the cache") && stderr.contains(&name),
            "{name}: {stderr}"
        );
        assert!(!home.path().join("escape.parquet").exists(), "{name}");
        assert!(!absolute.exists(), "{name}");
    }

    // A link in the cache that leads out of it is not written through.
    let (endpoint, _) = serve(
        HashMap::from([(("datasets".into(), "ganpo/pairs".into()), pairs)]),
        Faults::default(),
    );
    let repo = home.path().join("hub/datasets--ganpo--pairs");
    std::fs::create_dir_all(&repo).unwrap();
    std::os::unix::fs::symlink(outside.path(), repo.join("snapshots")).unwrap();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HOME", home.path().to_str().unwrap()),
    ];
    let (ok, _, stderr) = eval(MODEL_LOCAL.as_str(), TRAIN, &env);
    assert!(!ok);
    assert!(stderr.contains("outside the cache"), "{stderr}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

    // OWNER / NAME / REVISION are checked before any request.
    for uri in ["hf://datasets/../evil", "hf://datasets/ganpo/evil@.."] {
        let (ok, _, stderr) = eval(
            MODEL_LOCAL.as_str(),
            uri,
            &[("HF_ENDPOINT", "http://127.0.0.1:9")],
        );
        assert!(
            !ok && stderr.contains("is not a Hub repository id"),
            "{uri}: {stderr}"
        );
    }
}

/// The fixture policy by path.
static MODEL_LOCAL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| fixtures().join("policy").display().to_string());
