//! `cargo xtask boundaries`: the crate boundaries docs/architecture.md states, checked on the
//! dependency graph cargo resolves (`cargo tree`), so that a dependency creeping into the wrong
//! crate fails CI instead of being noticed by an embedder.
//!
//! Each library is resolved on its own with its default features (what an embedder who adds it
//! to Cargo.toml gets), and none of the crates its rule forbids may appear anywhere in its
//! normal (non-dev, non-build) dependency tree.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// What only the application (`ganpo-cli`) may pull in: argument parsing, log formatting,
/// progress bars, plotting, HTTP, Parquet / Arrow.
const APPLICATION_ONLY: &[&str] = &[
    "clap",
    "tracing-subscriber",
    "indicatif",
    "plotters",
    "ureq",
    "hf-hub",
    "parquet",
    "arrow",
    "csv",
];

/// A library crate and the crates it must never depend on.
struct Rule {
    krate: &'static str,
    forbidden: Vec<&'static str>,
    why: &'static str,
}

fn rules() -> Vec<Rule> {
    let app = APPLICATION_ONLY.to_vec();
    let with = |extra: &[&'static str]| [app.clone(), extra.to_vec()].concat();
    vec![
        Rule {
            krate: "ganpo-core",
            // The objective does no I/O: no checkpoint formats, no tokenizers, no other ganpo
            // crate (serde_json is allowed: burn itself depends on it).
            forbidden: with(&[
                "safetensors",
                "burn-store",
                "tokenizers",
                "ganpo-models",
                "ganpo-train",
                "ganpo-cli",
            ]),
            why: "the objective: losses, discriminators, GANPO; no I/O",
        },
        Rule {
            krate: "ganpo-models",
            forbidden: with(&["ganpo-train", "ganpo-cli", "minijinja"]),
            why: "models and checkpoint formats; no training, data pipeline or CLI",
        },
        Rule {
            krate: "ganpo-train",
            forbidden: with(&["ganpo-cli"]),
            why: "the trainer library an embedder takes alone; the CLI's dependencies are \
                  ganpo-cli's (Parquet and HTTP are the `parquet` and `hub` features)",
        },
    ]
}

/// The package names in `krate`'s normal dependency tree, default features, as `cargo tree`
/// resolves it for that package alone.
fn dependency_names(root: &Path, krate: &str) -> Result<Vec<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            krate,
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}"])
        .current_dir(root)
        .output()
        .with_context(|| format!("running cargo tree -p {krate}"))?;
    if !out.status.success() {
        bail!(
            "cargo tree -p {krate} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(package_names(&String::from_utf8_lossy(&out.stdout)))
}

/// The package names of `cargo tree --prefix none --format {p}` lines (`name vX.Y.Z (path)`).
fn package_names(tree: &str) -> Vec<String> {
    let mut names: Vec<String> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The forbidden crates found among `names` (an `arrow` rule also catches `arrow-*`).
fn violations(names: &[String], forbidden: &[&str]) -> Vec<String> {
    names
        .iter()
        .filter(|n| {
            forbidden
                .iter()
                .any(|f| n.as_str() == *f || n.starts_with(&format!("{f}-")) && *f == "arrow")
        })
        .cloned()
        .collect()
}

/// Checks every rule; the error lists each crate that broke one and what it pulled in.
pub fn boundaries(root: &Path) -> Result<()> {
    let mut broken = Vec::new();
    for rule in rules() {
        let names = dependency_names(root, rule.krate)?;
        let found = violations(&names, &rule.forbidden);
        if found.is_empty() {
            println!(
                "{}: {} crates, none forbidden ({})",
                rule.krate,
                names.len(),
                rule.why
            );
        } else {
            broken.push(format!(
                "{} depends on {} ({}); `cargo tree -p {} -i CRATE` shows the path",
                rule.krate,
                found.join(", "),
                rule.why,
                rule.krate
            ));
        }
    }
    if !broken.is_empty() {
        bail!("crate boundaries broken:\n  {}", broken.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tree_lines_and_flags_forbidden_crates() {
        let tree = "ganpo-train v0.1.0 (/w/ganpo-train)\nburn v0.21.0\nclap v4.5.1\n\
                    arrow-array v57.0.0\nclap v4.5.1\ntracing v0.1.41\n";
        let names = package_names(tree);
        assert_eq!(
            names,
            ["arrow-array", "burn", "clap", "ganpo-train", "tracing"]
        );
        assert_eq!(
            violations(&names, APPLICATION_ONLY),
            ["arrow-array", "clap"]
        );
        // `tracing` is allowed although `tracing-subscriber` is not.
        assert!(violations(&names, &["tracing-subscriber"]).is_empty());
    }
}
