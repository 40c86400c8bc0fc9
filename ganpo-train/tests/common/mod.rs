//! Helpers shared by the ganpo-train integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `ganpo-train/tests/fixtures` (tools/fixtures/train_fixtures.py).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
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

/// Runs the `ganpo` binary with `args`.
pub fn ganpo(args: &[&str]) -> Output {
    ganpo_with_env(args, &[])
}
