//! `cargo xtask gpu-check`: everything that needs a GPU, in one run, against the CPU backend.
//!
//! Build here (`cargo xtask gpu-check --build-only`, features `cuda` and `wgpu`), run there
//! (`cargo xtask gpu-check --no-build`, or the binary the build left in `target/release`).
//! For each backend asked for (`--backends cuda,wgpu`, default both), the checks asked for
//! (`--checks tests,parity,quickstart,bench`, default all):
//! 1. `tests`: the backend-generic test binaries of ganpo-core and ganpo-models (TRL's loss and
//!    log-prob fixtures, the GANPO regularizer, discriminators, spectral norm, HF parity of six
//!    architectures) with `GANPO_TEST_BACKEND` set to the backend. `--build-only` builds them
//!    (release, both GPU features) and copies them to `target/gpu-check/tests/CRATE/`, the
//!    folder to carry to the GPU machine beside `target/release/ganpo`;
//! 2. `parity`: log-prob parity with the CPU backend on the tiny Llama fixture (max abs
//!    difference < 1e-4),
//! 3. `quickstart`: a shortened quickstart (SFT, pairs, DPO and DPO + GANPO training, evaluation)
//!    that must finish and raise the oracle reward above the SFT model's,
//! 4. `bench`: `ganpo bench` rows (`--bench-model gpt2-124m`, `--bench-seq 512`, 8 pairs; dpo and
//!    ganpo; f32 and bf16; and ganpo in bf16 with LoRA r 16, checkpointing and chunked log-probs), with `bench/torch_reference.py` on CUDA beside them when a Python
//!    with torch is there.
//!
//! Everything lands in `target/gpu-check/` (JSON reports and `report.md`); the exit status says
//! whether every check passed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

fn flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

fn value<'a>(args: &'a [String], name: &str, default: &'a str) -> &'a str {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, String::as_str)
}

fn output(cmd: &mut Command) -> Result<(bool, String, String)> {
    let o = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    Ok((
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}

fn logps(ganpo: &Path, model: &Path, backend: &str) -> Result<Vec<f64>> {
    let (ok, out, err) = output(
        Command::new(ganpo)
            .args(["logprobs", "--model"])
            .arg(model)
            .args([
                "--prompt",
                "The movie was",
                "--completion",
                " wonderful<|im_end|>",
                "--backend",
                backend,
            ]),
    )?;
    if !ok {
        bail!("logprobs on {backend}: {err}");
    }
    let v: Value = serde_json::from_str(&out)?;
    Ok(v["token_logps"]
        .as_array()
        .context("token_logps")?
        .iter()
        .filter_map(Value::as_f64)
        .collect())
}

/// The test binaries that run on any backend (`tests/common/backend.rs`), per crate.
const GENERIC_TESTS: [(&str, &[&str]); 2] = [
    (
        "ganpo-core",
        &[
            "losses",
            "logprobs",
            "ganpo",
            "discriminator",
            "spectral_norm",
            "affine",
            "attention",
        ],
    ),
    ("ganpo-models", &["hf_parity"]),
];

/// Builds [`GENERIC_TESTS`] with both GPU features and copies each binary to
/// `out/tests/CRATE/NAME`.
fn build_generic_tests(root: &Path, out: &Path) -> Result<()> {
    for (krate, tests) in GENERIC_TESTS {
        let mut cmd = Command::new("cargo");
        cmd.args([
            "test",
            "--release",
            "--no-run",
            "--message-format=json",
            "-p",
            krate,
        ])
        .arg("--features")
        .arg(format!("{krate}/cuda,{krate}/wgpu"))
        .current_dir(root);
        for t in tests {
            cmd.args(["--test", t]);
        }
        let o = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
        if !o.status.success() {
            bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let dir = out.join("tests").join(krate);
        std::fs::create_dir_all(&dir)?;
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let (Some(name), Some(exe)) =
                (msg["target"]["name"].as_str(), msg["executable"].as_str())
            else {
                continue;
            };
            if tests.contains(&name) {
                std::fs::copy(exe, dir.join(name)).with_context(|| format!("copying {exe}"))?;
            }
        }
        for t in tests {
            if !dir.join(t).exists() {
                bail!("cargo built no test binary `{t}` of {krate}");
            }
        }
    }
    Ok(())
}

/// Runs the backend-generic test binary `out/tests/CRATE/NAME` on `backend`.
fn run_generic_test(
    root: &Path,
    out: &Path,
    krate: &str,
    name: &str,
    backend: &str,
) -> Result<String> {
    let exe = out.join("tests").join(krate).join(name);
    if !exe.exists() {
        bail!(
            "no {}: run `cargo xtask gpu-check --build-only` where the workspace builds and bring \
             target/gpu-check/tests along",
            exe.display()
        );
    }
    let (ok, stdout, stderr) = output(
        Command::new(&exe)
            .env("GANPO_TEST_BACKEND", backend)
            .env("CARGO_MANIFEST_DIR", root.join(krate)),
    )?;
    let summary = stdout
        .lines()
        .rfind(|l| l.starts_with("test result:"))
        .unwrap_or("no test summary")
        .to_string();
    if !ok {
        let failures: Vec<&str> = stdout
            .lines()
            .chain(stderr.lines())
            .filter(|l| l.contains("panicked") || l.ends_with("FAILED"))
            .take(6)
            .collect();
        bail!("{summary}; {}", failures.join("; "));
    }
    Ok(summary)
}

/// Runs the checks; `args` are the options after `gpu-check`.
pub fn gpu_check(root: &Path, args: &[String]) -> Result<()> {
    let out = root.join("target/gpu-check");
    std::fs::create_dir_all(&out)?;
    if !flag(args, "--no-build") {
        super::run(
            Command::new("cargo")
                .args(["build", "--release", "-p", "ganpo-cli", "--features"])
                .arg("ganpo-cli/cuda,ganpo-cli/wgpu")
                .current_dir(root),
        )?;
        build_generic_tests(root, &out)?;
        if flag(args, "--build-only") {
            return Ok(());
        }
    }
    let checks: Vec<&str> = value(args, "--checks", "tests,parity,quickstart,bench")
        .split(',')
        .collect();
    if let Some(bad) = checks
        .iter()
        .find(|c| !["tests", "parity", "quickstart", "bench"].contains(c))
    {
        bail!("unknown check `{bad}`: expected tests, parity, quickstart or bench");
    }
    let ganpo = root.join("target/release/ganpo");
    let python = std::env::var("GANPO_PYTHON").unwrap_or_else(|_| "python3".into());
    let fixture = root.join("ganpo-models/tests/fixtures/llama");
    let bench_model = value(args, "--bench-model", "gpt2-124m");
    let bench_seq = value(args, "--bench-seq", "512");
    let cpu = if checks.contains(&"parity") {
        logps(&ganpo, &fixture, "cpu")?
    } else {
        Vec::new()
    };
    let mut report = String::from("# gpu-check\n\n| backend | check | result |\n|---|---|---|\n");
    let mut failed = 0;
    let mut row = |backend: &str, check: &str, result: Result<String>| {
        let text = match result {
            Ok(s) => s,
            Err(e) => {
                failed += 1;
                format!("FAILED: {}", e.to_string().replace('\n', " "))
            }
        };
        println!("{backend:<5} {check:<28} {text}");
        report.push_str(&format!("| {backend} | {check} | {text} |\n"));
    };
    for backend in value(args, "--backends", "cuda,wgpu").split(',') {
        if checks.contains(&"tests") {
            for (krate, tests) in GENERIC_TESTS {
                for name in tests {
                    let result = run_generic_test(root, &out, krate, name, backend);
                    row(backend, &format!("tests {krate}/{name}"), result);
                }
            }
        }
        if checks.contains(&"parity") {
            let parity = logps(&ganpo, &fixture, backend).and_then(|g| {
                let worst = g
                    .iter()
                    .zip(&cpu)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                if g.len() != cpu.len() || worst >= 1e-4 {
                    bail!("max |diff| {worst:e} over {} tokens", g.len());
                }
                Ok(format!("max |diff| {worst:.2e} against cpu"))
            });
            row(backend, "log-prob parity", parity);
        }

        if checks.contains(&"quickstart") {
            let qs = out.join(format!("quickstart-{backend}"));
            let quick = output(
                Command::new(&ganpo)
                    .args(["quickstart", "--out"])
                    .arg(&qs)
                    .args([
                        "--methods",
                        "dpo,dpo+ganpo",
                        "--steps",
                        "48",
                        "--backend",
                        backend,
                    ]),
            )
            .and_then(|(ok, _, err)| {
                if !ok {
                    bail!("{err}");
                }
                let r: Value =
                    serde_json::from_str(&std::fs::read_to_string(qs.join("results.json"))?)?;
                let reward = |m: &str| -> f64 {
                    r["rows"]
                        .as_array()
                        .and_then(|rows| rows.iter().find(|x| x["model"] == m))
                        .and_then(|x| x["reward_t1"]["mean"].as_f64())
                        .unwrap_or(f64::NAN)
                };
                let gain = reward("dpo") - reward("sft");
                if gain.is_nan() || gain <= 0.25 {
                    bail!("DPO's oracle-reward gain over SFT is {gain:.3}");
                }
                Ok(format!(
                    "DPO gain {gain:.3}, {:.0} s",
                    r["total_seconds"].as_f64().unwrap_or(f64::NAN)
                ))
            });
            row(backend, "shortened quickstart", quick);
        }
        if !checks.contains(&"bench") {
            continue;
        }

        // The issue-21 memory settings on the device: LoRA r 16 on every projection (its frozen
        // base in bf16), activation checkpointing and chunked log-probs, beside PEFT + TRL's
        // gradient checkpointing.
        let lora: &[&str] = &[
            "lora.r=16",
            "lora.target_modules=all-linear",
            "train.gradient_checkpointing=true",
            "train.logprob_chunk_rows=1024",
        ];
        let lora_torch: &[&str] = &[
            "--lora-r",
            "16",
            "--lora-targets",
            "all-linear",
            "--gradient-checkpointing",
        ];
        for (mode, dtype, variant, sets, torch_args) in [
            ("dpo", "f32", "", &[][..], &[][..]),
            ("ganpo", "f32", "", &[], &[]),
            ("dpo", "bf16", "", &[], &[]),
            ("ganpo", "bf16", "", &[], &[]),
            ("ganpo", "bf16", "-lora", lora, lora_torch),
        ] {
            let name = format!("bench {mode} {dtype}{variant}");
            let file: PathBuf = out.join(format!("ganpo-{backend}-{mode}-{dtype}{variant}.json"));
            let mut command = Command::new(&ganpo);
            command.args([
                "bench",
                "--model-config",
                bench_model,
                "--seq",
                bench_seq,
                "--pairs",
                "8",
                "--mode",
                mode,
                "--dtype",
                dtype,
                "--backend",
                backend,
            ]);
            for set in sets {
                command.args(["--set", set]);
            }
            let bench = output(&mut command).and_then(|(ok, stdout, err)| {
                if !ok {
                    bail!("{err}");
                }
                std::fs::write(&file, &stdout)?;
                let v: Value = serde_json::from_str(&stdout)?;
                Ok(format!(
                    "{:.1} ms/step ({})",
                    v["ms_per_step"]["median"].as_f64().unwrap_or(f64::NAN),
                    file.display()
                ))
            });
            row(backend, &name, bench);
            if backend == "cuda" {
                let shape = out.join(format!("{bench_model}.json"));
                let torch = std::fs::read_to_string(&file)
                    .map_err(anyhow::Error::from)
                    .and_then(|t| {
                        let v: Value = serde_json::from_str(&t)?;
                        std::fs::write(&shape, v["hf_config"].to_string())?;
                        let (ok, stdout, err) = output(
                            Command::new(&python)
                                .arg(root.join("bench/torch_reference.py"))
                                .arg("--hf-config")
                                .arg(&shape)
                                .args(["--seq", bench_seq, "--pairs", "8", "--mode", mode])
                                .args(["--dtype", dtype, "--device", "cuda"])
                                .args(torch_args),
                        )?;
                        if !ok {
                            bail!("{err}");
                        }
                        let torch_file =
                            out.join(format!("torch-cuda-{mode}-{dtype}{variant}.json"));
                        std::fs::write(&torch_file, &stdout)?;
                        let t: Value = serde_json::from_str(&stdout)?;
                        let (g, p) = (
                            v["ms_per_step"]["median"].as_f64().unwrap_or(f64::NAN),
                            t["ms_per_step"]["median"].as_f64().unwrap_or(f64::NAN),
                        );
                        Ok(format!("torch {p:.1} ms/step; ganpo / torch {:.2}", g / p))
                    });
                row(backend, &format!("torch {mode} {dtype}{variant}"), torch);
            }
        }
    }
    std::fs::write(out.join("report.md"), &report)?;
    println!("\nreport: {}", out.join("report.md").display());
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}
