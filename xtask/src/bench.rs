//! `cargo xtask bench`: `ganpo bench` and `bench/torch_reference.py` on the same shapes, with the
//! ratio table.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Options, as `--key value` pairs, with their defaults.
const OPTIONS: [(&str, &str); 7] = [
    ("model-config", "tiny"),
    ("seq", "128"),
    ("pairs", "8"),
    ("modes", "dpo,ganpo"),
    ("steps", "5"),
    ("backend", "cpu"),
    ("dtype", "f32"),
];

fn option<'a>(args: &'a [String], key: &str) -> &'a str {
    args.iter()
        .position(|a| a.strip_prefix("--") == Some(key))
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or_else(|| OPTIONS.iter().find(|(k, _)| *k == key).expect("known").1)
}

fn json_of(cmd: &mut Command) -> Result<Value> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{cmd:?} printed no JSON report"))
}

fn ms(report: &Value) -> f64 {
    report["ms_per_step"]["median"].as_f64().unwrap_or(f64::NAN)
}

fn phase(report: &Value, name: &str) -> f64 {
    report["breakdown_ms"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p[0] == name))
        .and_then(|p| p[1].as_f64())
        .unwrap_or(f64::NAN)
}

/// Builds the release binary, runs both benchmarks per mode and prints the ratio table.
pub fn bench(root: &Path, args: &[String]) -> Result<()> {
    for a in args.iter().filter_map(|a| a.strip_prefix("--")) {
        if !OPTIONS.iter().any(|(k, _)| *k == a) {
            bail!(
                "unknown option --{a}; options: {}",
                OPTIONS
                    .map(|(k, d)| format!("--{k} (default {d})"))
                    .join(", ")
            );
        }
    }
    super::run(
        Command::new("cargo")
            .args(["build", "--release", "-p", "ganpo-train"])
            .current_dir(root),
    )?;
    let ganpo = root.join("target/release/ganpo");
    let python = std::env::var("GANPO_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_torch = Command::new(&python)
        .args(["-c", "import torch, transformers"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        eprintln!(
            "`{python}` cannot import torch and transformers: PyTorch rows skipped (set GANPO_PYTHON)"
        );
    }
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let common = ["seq", "pairs", "steps", "dtype"];
    let mut rows = Vec::new();
    for mode in option(args, "modes").split(',') {
        let mut cmd = Command::new(&ganpo);
        cmd.args([
            "bench",
            "--model-config",
            option(args, "model-config"),
            "--mode",
            mode,
        ]);
        cmd.args(["--backend", option(args, "backend")]);
        for k in common {
            cmd.arg(format!("--{k}")).arg(option(args, k));
        }
        let g = json_of(&mut cmd)?;
        let shape = out_dir.join(format!("{}.json", option(args, "model-config")));
        std::fs::write(&shape, g["hf_config"].to_string())?;
        std::fs::write(out_dir.join(format!("ganpo-{mode}.json")), g.to_string())?;
        let t = if has_torch {
            let device = if option(args, "backend") == "cpu" {
                "cpu"
            } else {
                "cuda"
            };
            let mut cmd = Command::new(&python);
            cmd.arg(root.join("bench/torch_reference.py"))
                .arg("--hf-config")
                .arg(&shape)
                .args(["--mode", mode, "--device", device])
                .env("HF_HUB_OFFLINE", "1");
            for k in common {
                cmd.arg(format!("--{k}")).arg(option(args, k));
            }
            let t = json_of(&mut cmd)?;
            std::fs::write(out_dir.join(format!("torch-{mode}.json")), t.to_string())?;
            Some(t)
        } else {
            None
        };
        rows.push((mode.to_string(), g, t));
    }
    println!(
        "\n{} seq {} pairs {} {} on {} (reports in {})\n",
        option(args, "model-config"),
        option(args, "seq"),
        option(args, "pairs"),
        option(args, "dtype"),
        option(args, "backend"),
        out_dir.display()
    );
    println!("| mode | phase | ganpo ms | torch ms | ganpo / torch |\n|---|---|---|---|---|");
    for (mode, g, t) in &rows {
        let phases = [
            "step",
            "reference_forward",
            "policy_forward",
            "discriminator_step",
            "policy_backward",
            "optimizer",
        ];
        for p in phases {
            let (a, b) = if p == "step" {
                (ms(g), t.as_ref().map_or(f64::NAN, ms))
            } else {
                (phase(g, p), t.as_ref().map_or(f64::NAN, |t| phase(t, p)))
            };
            println!("| {mode} | {p} | {a:.1} | {b:.1} | {:.2} |", a / b);
        }
    }
    if let [(_, dpo, _), (_, gan, _), ..] = rows.as_slice() {
        println!(
            "\nGANPO overhead in ganpo (second mode over first): {:.2}x",
            ms(gan) / ms(dpo)
        );
    }
    Ok(())
}
