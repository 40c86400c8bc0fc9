//! Helpers shared by the `ganpo` binary's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `ganpo-train/tests/fixtures` (tools/fixtures/train_fixtures.py): the library's fixtures, which
/// the binary's tests read too.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ganpo-train/tests/fixtures")
}

/// Copies the fixture model directory `name` (`policy`, `reference`) to `to`, to alter it there.
pub fn copy_fixture(name: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(fixtures().join(name)).unwrap().flatten() {
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
}

/// Runs the `ganpo` binary with `args` and extra environment variables, without backtraces.
pub fn ganpo_with_env(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ganpo"))
        .args(args)
        .envs(envs.iter().copied())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

/// Starts the `ganpo` binary with `args` in the background and waits until it holds the run
/// directory lock at `lock` (its PID is written there), up to two minutes.
pub fn spawn_holding(args: &[&str], lock: &Path) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_ganpo"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::fs::read_to_string(lock).map_or(true, |t| t.trim().is_empty()) {
        assert!(
            started.elapsed().as_secs() < 120,
            "{args:?} never took the lock {}",
            lock.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

/// Runs the `ganpo` binary with `args`.
pub fn ganpo(args: &[&str]) -> Output {
    ganpo_with_env(args, &[])
}

/// Runs the `ganpo` binary with `args`: whether it succeeded, its stdout and its stderr.
pub fn ganpo_text(args: &[&str]) -> (bool, String, String) {
    let out = ganpo(args);
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Writes `rows` as JSONL.
pub fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// `ganpo task` under `dir/task` with `examples` SFT reviews and a 32-wide model of `layers`
/// layers; returns the task directory.
pub fn tiny_task(dir: &Path, examples: usize, layers: usize) -> PathBuf {
    let t = dir.join("task");
    let (ok, _, err) = ganpo_text(&[
        "task",
        "--out",
        t.to_str().unwrap(),
        "--sft-examples",
        &examples.to_string(),
        "--hidden-size",
        "32",
        "--layers",
        &layers.to_string(),
    ]);
    assert!(ok, "{err}");
    t
}

/// `ganpo sft --init` of the task's model on its reviews for `steps` steps into `out`.
pub fn tiny_sft(task: &Path, steps: usize, out: &Path) {
    let (ok, _, err) = ganpo_text(&[
        "sft",
        "--model",
        task.join("model").to_str().unwrap(),
        "--init",
        "--data",
        task.join("sft.jsonl").to_str().unwrap(),
        "--steps",
        &steps.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
}

/// The JSON lines of `path` (a run's metrics.jsonl).
pub fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A run config in `dir` (GANPO with a small MLP discriminator) plus `extra` TOML lines in `[train]`.
pub fn write_config(dir: &Path, data: &[PathBuf], extra: &str) -> PathBuf {
    let files: Vec<String> = data
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    let text = format!(
        "[model]\npath = {:?}\n\n[data]\ntrain = [{}]\neval_fraction = 0.2\n\n[loss]\nbeta = 0.5\n\n\
         [ganpo]\ndiscriminator = {{ kind = \"mlp\", hidden = 32 }}\n\n\
         [train]\noutput_dir = \"out\"\nlr = 3e-3\nbatch_size = 4\nepochs = 8\nlogging_steps = 4\n\
         {extra}\n",
        fixtures().join("policy").display().to_string(),
        files.join(", ")
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `ganpo train --config CONFIG` plus `extra` arguments.
pub fn ganpo_train(config: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    ganpo(&args)
}

pub fn standard() -> Vec<PathBuf> {
    vec![
        fixtures().join("data/standard.jsonl"),
        fixtures().join("data/implicit.jsonl"),
    ]
}

/// `metrics.jsonl` as (step, loss) pairs, train lines only.
pub fn train_losses(path: &Path) -> Vec<(u64, Option<f64>)> {
    lines(path)
        .iter()
        .filter(|l| l["split"] == "train")
        .map(|l| (l["step"].as_u64().unwrap(), l["loss"].as_f64()))
        .collect()
}
