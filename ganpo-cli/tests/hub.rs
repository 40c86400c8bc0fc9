//! Hub datasets (`hf://datasets/...`) downloaded from a local HTTP server standing in for the Hub
//! (HF_ENDPOINT), cached, and used offline; failures name the URL.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

mod common;
use common::{fixtures, ganpo_with_env};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Serves `routes` (path -> body) on 127.0.0.1; counts requests per path; 404 otherwise.
fn serve(routes: HashMap<String, Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut header = String::new();
            while reader.read_line(&mut header).unwrap() > 2 {
                header.clear();
            }
            seen.lock().unwrap().push(path.clone());
            let mut stream = stream;
            match routes.get(&path) {
                Some(body) => {
                    write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .unwrap();
                    stream.write_all(body).unwrap();
                }
                None => {
                    write!(
                        stream,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .unwrap();
                }
            }
        }
    });
    (addr, log)
}

fn eval(data: &str, envs: &[(&str, &str)]) -> (bool, String, String) {
    let (policy, reference) = (fixtures().join("policy"), fixtures().join("reference"));
    let out = ganpo_with_env(
        &[
            "eval",
            "--model",
            policy.to_str().unwrap(),
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

#[test]
fn hub_datasets_download_cache_and_work_offline() {
    let standard = std::fs::read(fixtures().join("data/standard.parquet")).unwrap();
    let conversational = std::fs::read(fixtures().join("data/conversational.jsonl")).unwrap();
    let listing = serde_json::json!({"siblings": [
        {"rfilename": ".gitattributes"}, {"rfilename": "README.md"},
        {"rfilename": "data/train-00000-of-00001.parquet"},
        {"rfilename": "data/test.jsonl"},
    ]});
    let routes = HashMap::from([
        (
            "/api/datasets/ganpo/pairs/revision/main".to_string(),
            listing.to_string().into_bytes(),
        ),
        (
            "/datasets/ganpo/pairs/resolve/main/data/train-00000-of-00001.parquet".to_string(),
            standard,
        ),
        (
            "/datasets/ganpo/pairs/resolve/main/data/test.jsonl".to_string(),
            conversational,
        ),
    ]);
    let (endpoint, log) = serve(routes);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("GANPO_CACHE", cache_dir),
    ];

    let (ok, stdout, stderr) = eval("hf://datasets/ganpo/pairs/train", &env);
    assert!(ok, "{stderr}");
    let hub: Value = serde_json::from_str(&stdout).unwrap();
    let (ok, stdout, _) = eval(
        fixtures().join("data/standard.jsonl").to_str().unwrap(),
        &[],
    );
    assert!(ok);
    let local: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(hub, local, "the Hub copy must evaluate like the local file");
    let cached = cache
        .path()
        .join("datasets/ganpo/pairs/main/data/train-00000-of-00001.parquet");
    assert!(cached.is_file());
    assert!(
        !log.lock().unwrap().iter().any(|p| p.contains("test.jsonl")),
        "only the selected split is fetched"
    );

    // The second time the file comes from the cache; offline, nothing is requested at all.
    let downloads = |log: &Arc<Mutex<Vec<String>>>| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains("/resolve/"))
            .count()
    };
    assert_eq!(downloads(&log), 1);
    assert!(eval("hf://datasets/ganpo/pairs/train", &env).0);
    assert_eq!(downloads(&log), 1);
    let requests = log.lock().unwrap().len();
    let offline = [
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ("GANPO_CACHE", cache_dir),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let (ok, _, stderr) = eval("hf://datasets/ganpo/pairs/train", &offline);
    assert!(ok, "{stderr}");
    assert_eq!(log.lock().unwrap().len(), requests);

    // Conversational JSONL from another split.
    let (ok, stdout, stderr) = eval("hf://datasets/ganpo/pairs/data/test.jsonl", &env);
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["eval_pairs"],
        8
    );

    // Failures name what was asked for.
    let (ok, _, stderr) = eval("hf://datasets/ganpo/missing/train", &env);
    assert!(!ok);
    assert!(
        stderr.contains("/api/datasets/ganpo/missing/revision/main: not found (HTTP 404)"),
        "{stderr}"
    );
    let (ok, _, stderr) = eval("hf://datasets/ganpo/pairs/validation", &env);
    assert!(!ok);
    assert!(
        stderr.contains("no .jsonl or .parquet file matches `validation`"),
        "{stderr}"
    );
    let (ok, _, stderr) = eval(
        "hf://datasets/ganpo/pairs/train",
        &[
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
            (
                "GANPO_CACHE",
                tempfile::tempdir().unwrap().path().to_str().unwrap(),
            ),
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("http://127.0.0.1:9/api/datasets/ganpo/pairs/revision/main"),
        "{stderr}"
    );
}

#[test]
fn a_listing_or_a_link_that_leaves_the_cache_writes_nothing() {
    let body = std::fs::read(fixtures().join("data/standard.jsonl")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let absolute = outside.path().join("absolute.jsonl");
    // `../../../../` from `$GANPO_CACHE/datasets/ganpo/evil/main` is `$GANPO_CACHE` itself.
    for name in [
        "../../../../escape.jsonl".to_string(),
        absolute.display().to_string(),
        "data/../../../../../escape.jsonl".to_string(),
    ] {
        let listing = serde_json::json!({"siblings": [{"rfilename": name}]});
        let routes = HashMap::from([
            (
                "/api/datasets/ganpo/evil/revision/main".to_string(),
                listing.to_string().into_bytes(),
            ),
            (
                format!("/datasets/ganpo/evil/resolve/main/{name}"),
                body.clone(),
            ),
        ]);
        let (endpoint, _) = serve(routes);
        let env = [
            ("HF_ENDPOINT", endpoint.as_str()),
            ("GANPO_CACHE", cache.path().to_str().unwrap()),
        ];
        let (ok, _, stderr) = eval("hf://datasets/ganpo/evil", &env);
        assert!(!ok, "{name}");
        assert!(
            stderr.contains("not a path inside the repository") && stderr.contains(&name),
            "{name}: {stderr}"
        );
        assert!(!cache.path().join("escape.jsonl").exists(), "{name}");
        assert!(!absolute.exists(), "{name}");
    }

    // A symbolic link in the cache that points out of it is not followed.
    let listing = serde_json::json!({"siblings": [{"rfilename": "data/train.jsonl"}]});
    let routes = HashMap::from([
        (
            "/api/datasets/ganpo/linked/revision/main".to_string(),
            listing.to_string().into_bytes(),
        ),
        (
            "/datasets/ganpo/linked/resolve/main/data/train.jsonl".to_string(),
            body,
        ),
    ]);
    let (endpoint, _) = serve(routes);
    let repo = cache.path().join("datasets/ganpo/linked/main");
    std::fs::create_dir_all(&repo).unwrap();
    std::os::unix::fs::symlink(outside.path(), repo.join("data")).unwrap();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("GANPO_CACHE", cache.path().to_str().unwrap()),
    ];
    let (ok, _, stderr) = eval("hf://datasets/ganpo/linked", &env);
    assert!(!ok);
    assert!(stderr.contains("outside the cache"), "{stderr}");
    assert!(!outside.path().join("train.jsonl").exists());

    // OWNER / NAME / REVISION are checked before any request.
    for uri in ["hf://datasets/../evil", "hf://datasets/ganpo/evil@.."] {
        let (ok, _, stderr) = eval(uri, &[("HF_ENDPOINT", "http://127.0.0.1:9")]);
        assert!(
            !ok && stderr.contains("is not a repository"),
            "{uri}: {stderr}"
        );
    }
}
