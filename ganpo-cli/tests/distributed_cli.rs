//! `ganpo train` on several devices and several processes (docs/distributed.md): the same run as
//! on one device, nodes that disagree or cannot meet are refused, a lost node stops the others.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{ganpo_train, lines, standard, train_losses, write_config};

/// Settings under which a data-parallel run computes what one device does: Adam's epsilon above
/// rounding noise (see ganpo-train/tests/data_parallel.rs) and no dropout (its draws differ
/// between a batch and its shares).
const EXACT: [&str; 8] = [
    "--set",
    "train.epochs=2",
    "--set",
    "train.logging_steps=1",
    "--set",
    "train.adam_epsilon=1e-4",
    "--set",
    "ganpo.discriminator.dropout=0.0",
];

/// `--set train.output_dir=DIR`.
fn output_dir(dir: &Path) -> [String; 2] {
    [
        "--set".into(),
        format!("train.output_dir={:?}", dir.display().to_string()),
    ]
}

/// Asserts that two runs logged the same training losses, step by step, within 1e-5.
fn assert_same_losses(one: &Path, other: &Path) {
    let (a, b) = (
        train_losses(&one.join("metrics.jsonl")),
        train_losses(&other.join("metrics.jsonl")),
    );
    assert_eq!(a.len(), b.len());
    assert!(a.len() >= 4, "{a:?}");
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
            "step {step}: {x} vs {y}"
        );
    }
}

/// Runs `ganpo train --config CONFIG` with [`EXACT`], the output directory `out` and `extra`;
/// asserts that it succeeded, returns its stderr.
fn train_exactly(config: &Path, out: &Path, extra: &[&str]) -> String {
    let out = output_dir(out);
    let mut args: Vec<&str> = EXACT.to_vec();
    args.extend(out.iter().map(String::as_str));
    args.extend_from_slice(extra);
    let o = ganpo_train(config, &args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    err
}

#[test]
fn devices_train_data_parallel_as_one_device_and_bad_lists_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &standard(), "");
    let (one_dir, two_dir) = (dir.path().join("one"), dir.path().join("two"));
    train_exactly(&config, &one_dir, &[]);
    let err = train_exactly(&config, &two_dir, &["--devices", "0,1"]);
    assert!(err.contains("data-parallel on 2 devices"), "{err}");
    assert_same_losses(&one_dir, &two_dir);
    assert!(two_dir.join("final").join("model.safetensors").is_file());
    let cases: [(&[&str], &str); 3] = [
        (
            &["--devices", "0,1,0"],
            "invalid setting `train.devices` = [0, 1, 0]: expected each device once (device 0 is listed twice)",
        ),
        (
            &["--devices", "0,1", "--set", "train.device=0"],
            "expected either train.device (one device) or train.devices, not both",
        ),
        (&["--device", "1"], "backend `cpu` has no device 1"),
    ];
    for (extra, message) in cases {
        let bad = dir.path().join("bad");
        let mut args = vec![
            "--set".to_string(),
            format!("train.output_dir={:?}", bad.display().to_string()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ganpo_train(&config, &args);
        assert!(!out.status.success(), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{extra:?}: {err}");
        assert!(!bad.exists(), "{extra:?} wrote {}", bad.display());
    }
}

/// `N` TCP ports of 127.0.0.1 that were free a moment ago (chosen by the system).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// Starts node `rank` of a two-node `ganpo train` on 127.0.0.1: the coordinator on
/// `ports[0]`, node R serving on `ports[1 + R]`; node 1 is told where the coordinator is by
/// torchrun's variables instead of flags.
fn spawn_node(config: &Path, out: &Path, rank: usize, ports: [u16; 3], extra: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ganpo"));
    cmd.args(["train", "--config", config.to_str().unwrap()])
        .args(EXACT)
        .args(output_dir(out))
        .args(["--node-address", &format!("127.0.0.1:{}", ports[1 + rank])])
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match rank {
        0 => cmd.args([
            "--nodes",
            "2",
            "--node-rank",
            "0",
            "--coordinator",
            &format!("127.0.0.1:{}", ports[0]),
        ]),
        _ => cmd
            .env("WORLD_SIZE", "2")
            .env("RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", ports[0].to_string()),
    };
    cmd.spawn().unwrap()
}

/// Waits for `child` (at most `limit`): whether it succeeded, and its stderr.
fn finish(mut child: Child, limit: Duration) -> (bool, String) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two `ganpo train` processes on 127.0.0.1 (one through flags, one through WORLD_SIZE, RANK,
/// MASTER_ADDR, MASTER_PORT) train as one process on one device does; only node 0 writes. Nodes
/// with different settings are refused before the first step, naming the setting.
#[test]
fn two_processes_train_as_one_device_and_refuse_different_settings() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &standard(), "");
    let one_dir = dir.path().join("one");
    train_exactly(&config, &one_dir, &[]);
    let (node0, node1) = (dir.path().join("node0"), dir.path().join("node1"));
    let ports = free_ports();
    let a = spawn_node(&config, &node0, 0, ports, &[]);
    let b = spawn_node(&config, &node1, 1, ports, &[]);
    let limit = Duration::from_secs(300);
    let ((ok0, err0), (ok1, err1)) = (finish(a, limit), finish(b, limit));
    assert!(ok0 && ok1, "node 0: {err0}\nnode 1: {err1}");
    assert!(
        err0.contains("data-parallel on 2 nodes x 1 devices"),
        "{err0}"
    );
    assert_same_losses(&one_dir, &node0);
    assert!(node0.join("final").join("model.safetensors").is_file());
    assert!(!node1.exists(), "node 1 wrote {}", node1.display());

    let ports = free_ports();
    let a = spawn_node(&config, &node0.with_extension("b"), 0, ports, &[]);
    let b = spawn_node(&config, &node1, 1, ports, &["--set", "train.lr=1e-3"]);
    let ((ok0, err0), (ok1, err1)) = (finish(a, limit), finish(b, limit));
    assert!(!ok0 && !ok1, "node 0: {err0}\nnode 1: {err1}");
    for err in [&err0, &err1] {
        assert!(
            err.contains("node 1 differs from node 0: train.lr: 0.003 on node 0, 0.001 on node 1"),
            "{err}"
        );
    }
    let metrics = node0.with_extension("b").join("metrics.jsonl");
    assert!(
        lines(&metrics).is_empty(),
        "a step was taken: {}",
        metrics.display()
    );
}

/// Killing node 1 mid-run makes node 0 exit with status 1 within the all-reduce timeout, naming
/// node 1; node 0's checkpoints are all complete, none half-written.
#[test]
fn a_lost_node_stops_the_other_naming_it_and_leaves_whole_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &standard(), "");
    let (node0, node1) = (dir.path().join("node0"), dir.path().join("node1"));
    let ports = free_ports();
    let long = [
        "--set",
        "train.epochs=200",
        "--set",
        "train.save_steps=2",
        "--set",
        "train.sync_timeout_s=10",
    ];
    let a = spawn_node(&config, &node0, 0, ports, &long);
    let mut b = spawn_node(&config, &node1, 1, ports, &long);
    let metrics = node0.join("metrics.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 3 {
        assert!(start.elapsed().as_secs() < 300, "node 0 took no steps");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.kill().unwrap();
    b.wait().unwrap();
    let killed = Instant::now();
    let (ok, err) = finish(a, Duration::from_secs(120));
    assert!(!ok, "{err}");
    assert!(
        err.contains("node 0: lost node 1 (127.0.0.1:"),
        "the error does not name node 1: {err}"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "{:?}",
        killed.elapsed()
    );
    let entries: Vec<_> = std::fs::read_dir(&node0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        entries.iter().any(|n| n.starts_with("checkpoint-")),
        "{entries:?}"
    );
    for name in &entries {
        assert!(!name.contains("partial"), "half-written: {name}");
        if name.starts_with("checkpoint-") {
            assert!(
                node0.join(name).join("trainer_state.json").is_file(),
                "{name} is incomplete"
            );
        }
    }
}

/// Stopping node 1 (SIGSTOP: alive, its port still accepting, but silent) makes node 0's
/// watchdog end it with status 1 after `train.sync_timeout_s`, saying that every node answers
/// but one hangs; nothing half-written is left.
#[test]
fn a_hung_node_stops_the_other_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &standard(), "");
    let (node0, node1) = (dir.path().join("node0"), dir.path().join("node1"));
    let ports = free_ports();
    let long = [
        "--set",
        "train.epochs=200",
        "--set",
        "train.sync_timeout_s=5",
    ];
    let a = spawn_node(&config, &node0, 0, ports, &long);
    let mut b = spawn_node(&config, &node1, 1, ports, &long);
    let metrics = node0.join("metrics.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 3 {
        assert!(start.elapsed().as_secs() < 300, "node 0 took no steps");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = Command::new("kill")
        .args(["-STOP", &b.id().to_string()])
        .status()
        .unwrap();
    assert!(stop.success());
    let stopped = Instant::now();
    let (ok, err) = finish(a, Duration::from_secs(120));
    b.kill().unwrap();
    b.wait().unwrap();
    assert!(!ok, "{err}");
    assert!(
        err.contains("error: node 0: waited 5 s (train.sync_timeout_s) in an all-reduce with the other nodes; all of them still answer"),
        "{err}"
    );
    let waited = stopped.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(60),
        "{waited:?}"
    );
    for e in std::fs::read_dir(&node0).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.contains("partial"), "half-written: {name}");
    }
}

/// Three processes of a three-node run where two claim rank 1 and none rank 2: all three stop
/// before the first step with the same error naming both ranks.
#[test]
fn two_processes_with_the_same_rank_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &standard(), "");
    let ports = free_ports::<4>();
    let out = dir.path().join("out");
    let children: Vec<Child> = [0, 1, 1]
        .iter()
        .enumerate()
        .map(|(i, rank)| {
            Command::new(env!("CARGO_BIN_EXE_ganpo"))
                .args(["train", "--config", config.to_str().unwrap()])
                .args(output_dir(&out))
                .args(["--nodes", "3", "--node-rank", &rank.to_string()])
                .args(["--coordinator", &format!("127.0.0.1:{}", ports[0])])
                .args(["--node-address", &format!("127.0.0.1:{}", ports[1 + i])])
                .env("RUST_BACKTRACE", "0")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let (ok, err) = finish(child, Duration::from_secs(300));
        assert!(!ok, "{err}");
        assert!(
            err.contains("2 processes are node 1; no process is node 2"),
            "{err}"
        );
    }
    assert!(lines(&out.join("metrics.jsonl")).is_empty());
}

/// A coordinator that never answers and a node rank out of range are refused with errors that
/// name them, and nothing is written.
#[test]
fn an_unreachable_coordinator_and_bad_ranks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &standard(), "");
    let out = dir.path().join("out");
    let [coordinator, node, _] = free_ports();
    let coordinator = format!("127.0.0.1:{coordinator}");
    let node = format!("127.0.0.1:{node}");
    let cases: [(Vec<&str>, String); 3] = [
        (
            vec![
                "--nodes",
                "2",
                "--node-rank",
                "1",
                "--coordinator",
                &coordinator,
                "--node-address",
                &node,
                "--set",
                "train.sync_timeout_s=2",
            ],
            format!("node 1: the coordinator {coordinator} cannot be reached"),
        ),
        (
            vec![
                "--nodes",
                "2",
                "--node-rank",
                "2",
                "--coordinator",
                &coordinator,
            ],
            "--node-rank 2 is out of range: 2 nodes have ranks 0 to 1".into(),
        ),
        (
            vec!["--nodes", "2", "--node-rank", "1"],
            "a run over several nodes needs --coordinator HOST:PORT".into(),
        ),
    ];
    for (extra, message) in cases {
        let o = out.display().to_string();
        let mut args = vec!["--set".to_string(), format!("train.output_dir={o:?}")];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = ganpo_train(&config, &args);
        assert!(!result.status.success(), "{extra:?}");
        let err = String::from_utf8_lossy(&result.stderr);
        assert!(err.contains(&message), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
}
