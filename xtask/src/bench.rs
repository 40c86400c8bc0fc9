//! `cargo xtask bench`: `ganpo bench` and `bench/torch_reference.py` on the same shapes, with the
//! ratio table.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Options, as `--key value` pairs, with their defaults (`--set` repeats; see [`sets`]).
const OPTIONS: [(&str, &str); 10] = [
    ("model-config", "tiny"),
    ("seq", "128"),
    ("pairs", "8"),
    ("modes", "dpo,ganpo"),
    ("steps", "5"),
    ("backend", "cpu"),
    ("dtype", "f32"),
    ("rounds", "1"),
    ("set", "(none)"),
    ("load", "0"),
];

/// `--load N`: N threads of busy work in this process, competing with both frameworks for the
/// cores while they run (a second job, a browser, a shared CI runner), stopped on drop.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(n: usize) -> Load {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..100_000u64 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6364136223846793005).wrapping_add(i),
                            );
                        }
                    }
                })
            })
            .collect();
        Load { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Every `--set KEY=VALUE` (run-configuration overrides for `ganpo bench`).
fn sets(args: &[String]) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == "--set")
        .map(|w| w[1].clone())
        .collect()
}

/// `bench/torch_reference.py`'s flags for the same overrides (PEFT for `lora.*`, transformers'
/// gradient checkpointing); an override without an equivalent there is an error.
fn torch_flags(sets: &[String]) -> Result<Vec<String>> {
    let mut flags = Vec::new();
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .with_context(|| format!("--set {set}: expected KEY=VALUE"))?;
        let value = value.trim_matches('"');
        match key {
            "lora.r" => flags.extend(["--lora-r".into(), value.into()]),
            "lora.alpha" | "lora.lora_alpha" => flags.extend(["--lora-alpha".into(), value.into()]),
            "lora.target_modules" => {
                let names = value.trim_matches(['[', ']']).replace(['"', ' '], "");
                flags.extend(["--lora-targets".into(), names]);
            }
            "train.gradient_checkpointing" if value == "true" => {
                flags.push("--gradient-checkpointing".into())
            }
            "train.gradient_checkpointing" => {}
            other => bail!(
                "--set {other}: bench/torch_reference.py has no equivalent (supported: lora.r, \
                 lora.alpha, lora.target_modules, train.gradient_checkpointing)"
            ),
        }
    }
    Ok(flags)
}

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

/// The median of `f` over the rounds' reports (NaN without reports).
fn median_of(reports: &[Value], f: impl Fn(&Value) -> f64) -> f64 {
    let mut v: Vec<f64> = reports.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
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
    let sets = sets(args);
    let torch_extra = torch_flags(&sets)?;
    super::run(
        Command::new("cargo")
            .args(["build", "--release", "-p", "ganpo-cli"])
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
    let rounds: usize = option(args, "rounds")
        .parse()
        .ok()
        .filter(|&r| r >= 1)
        .context("--rounds must be a positive integer")?;
    let load: usize = option(args, "load")
        .parse()
        .context("--load must be a number of busy threads")?;
    let _load = Load::start(load);
    for mode in option(args, "modes").split(',') {
        // Rounds alternate the two frameworks, so that a slow spell of a shared machine falls
        // on both; the table reports the median over rounds.
        let (mut gs, mut ts) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let mut cmd = Command::new(&ganpo);
            cmd.args([
                "bench",
                "--model-config",
                option(args, "model-config"),
                "--mode",
                mode,
            ]);
            cmd.args(["--backend", option(args, "backend")]);
            for set in &sets {
                cmd.args(["--set", set]);
            }
            for k in common {
                cmd.arg(format!("--{k}")).arg(option(args, k));
            }
            let g = json_of(&mut cmd)?;
            let shape = out_dir.join(format!("{}.json", option(args, "model-config")));
            std::fs::write(&shape, g["hf_config"].to_string())?;
            std::fs::write(
                out_dir.join(format!("ganpo-{mode}-{round}.json")),
                g.to_string(),
            )?;
            if has_torch {
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
                    .args(&torch_extra)
                    .env("HF_HUB_OFFLINE", "1");
                for k in common {
                    cmd.arg(format!("--{k}")).arg(option(args, k));
                }
                let t = json_of(&mut cmd)?;
                std::fs::write(
                    out_dir.join(format!("torch-{mode}-{round}.json")),
                    t.to_string(),
                )?;
                ts.push(t);
            }
            gs.push(g);
        }
        rows.push((mode.to_string(), gs, ts));
    }
    println!(
        "\n{} seq {} pairs {} {} on {} {}(reports in {})\n",
        option(args, "model-config"),
        option(args, "seq"),
        option(args, "pairs"),
        option(args, "dtype"),
        option(args, "backend"),
        sets.iter()
            .map(|s| format!("--set {s} "))
            .collect::<String>(),
        out_dir.display()
    );
    if load > 0 {
        println!("Under load: {load} busy thread(s) in another process ran throughout.\n");
    }
    if rounds > 1 {
        println!("Medians over {rounds} rounds (ganpo and PyTorch alternated).\n");
    }
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
                (median_of(g, ms), median_of(t, ms))
            } else {
                (median_of(g, |r| phase(r, p)), median_of(t, |r| phase(r, p)))
            };
            // A phase this mode does not have (DPO's discriminator step: 0 in ganpo's report,
            // the few microseconds between two clock reads in PyTorch's) is no row.
            if a > 0.0 {
                println!("| {mode} | {p} | {a:.1} | {b:.1} | {:.2} |", a / b);
            }
        }
    }
    println!(
        "\n| mode | peak memory ganpo GB | torch GB | ganpo / torch | ganpo bytes / parameter | \
         trainable ganpo / torch |\n|---|---|---|---|---|---|"
    );
    for (mode, g, t) in &rows {
        let gb = |r: &Value| r["peak_memory_bytes"].as_f64().unwrap_or(f64::NAN) / 1e9;
        let (a, b) = (median_of(g, gb), median_of(t, gb));
        let per = median_of(g, |r| {
            r["bytes_per_parameter"]["total"]
                .as_f64()
                .unwrap_or(f64::NAN)
        });
        let trainable = |r: &[Value]| {
            r.first().map_or(f64::NAN, |r| {
                r["trainable_parameters"].as_f64().unwrap_or(f64::NAN)
            })
        };
        println!(
            "| {mode} | {a:.2} | {b:.2} | {:.2} | {per:.2} | {:.0} / {:.0} |",
            a / b,
            trainable(g),
            trainable(t)
        );
    }
    for (mode, g, t) in rows.iter().filter(|_| rounds > 1 && has_torch) {
        let ratios: Vec<String> = g
            .iter()
            .zip(t)
            .map(|(g, t)| format!("{:.2}", ms(g) / ms(t)))
            .collect();
        println!("\n{mode}: ganpo / torch per round: {}", ratios.join(", "));
    }
    if let [(_, dpo, _), (_, gan, _), ..] = rows.as_slice() {
        println!(
            "\nGANPO overhead in ganpo (second mode over first): {:.2}x",
            median_of(gan, ms) / median_of(dpo, ms)
        );
    }
    Ok(())
}
