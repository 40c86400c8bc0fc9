//! `cargo xtask gpu-check`: everything that needs a GPU, in one run, against the CPU backend.
//!
//! Build here, run there. `--build-only` builds the `gpu` profile (release, stripped, features
//! `cuda` and `wgpu`, in `target/gpu/` so the CPU release build stays) and packs all a GPU machine
//! needs into `target/gpu-check/bundle.tar.xz`, under [`BUNDLE_LIMIT`]: the `ganpo` binary,
//! the backend-generic tests (one binary, ganpo-train's `backends`) and this program. There,
//! with no Rust toolchain: `tar -xJf target/gpu-check/bundle.tar.xz -C target/gpu-check && target/gpu-check/bin/xtask
//! gpu-check --no-build` (or `cargo xtask gpu-check --no-build`, which unpacks the bundle itself).
//! Without either flag it builds, packs and runs.
//!
//! For each backend asked for (`--backends cuda,wgpu`, default both), the checks asked for
//! (`--checks tests,parity,quickstart,bench`, default all):
//! 1. `tests`: the backend-generic tests (TRL's loss and log-prob fixtures, the GANPO
//!    regularizer, discriminators, spectral norm, affine maps, attention, HF parity of Llama,
//!    Mistral, Qwen2/3, GPT-2 and Gemma 2/3, parity with the official GANPO code, five trainer
//!    steps against the CPU) with `GANPO_TEST_BACKEND` set to the backend;
//! 2. `parity`: log-prob parity with the CPU backend on the tiny Llama fixture (max abs
//!    difference < 1e-4),
//! 3. `quickstart`: a shortened quickstart (SFT, pairs, DPO and DPO + GANPO training, evaluation)
//!    that must finish and raise the oracle reward above the SFT model's,
//! 4. `bench`: `ganpo bench` rows (`--bench-model gpt2-124m`, `--bench-seq 512`, 8 pairs; dpo and
//!    ganpo; f32 and bf16; and ganpo in bf16 with LoRA r 16, checkpointing and chunked log-probs),
//!    with `bench/torch_reference.py` on CUDA beside them when a Python with torch is there.
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

/// The test binary (crate, name) that holds every backend-generic test of the workspace
/// (`ganpo-train/tests/backends.rs`): one binary links the GPU backends once, not once per file.
const BACKEND_TESTS: (&str, &str) = ("ganpo-train", "backends");

/// The most the bundle may weigh: what the GPU machines of this project take along (64 MiB).
pub const BUNDLE_LIMIT: u64 = 64 << 20;

/// The cargo profile of the GPU build (the workspace's Cargo.toml: release, stripped).
const PROFILE: &str = "gpu";

/// The features of the GPU build, for `krate`.
fn gpu_features(krate: &str) -> String {
    format!("{krate}/cuda,{krate}/wgpu")
}

/// Builds `ganpo`, this program and [`BACKEND_TESTS`] in the `gpu` profile and copies them to
/// `bin/`.
fn build(root: &Path, bin: &Path) -> Result<()> {
    if bin.exists() {
        std::fs::remove_dir_all(bin).with_context(|| format!("clearing {}", bin.display()))?;
    }
    super::run(
        Command::new("cargo")
            .args([
                "build",
                "--profile",
                PROFILE,
                "-p",
                "ganpo-cli",
                "-p",
                "xtask",
            ])
            .args(["--features", &gpu_features("ganpo-cli")])
            .current_dir(root),
    )?;
    std::fs::create_dir_all(bin)?;
    for exe in ["ganpo", "xtask"] {
        let from = root.join("target").join(PROFILE).join(exe);
        std::fs::copy(&from, bin.join(exe))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    let (krate, name) = BACKEND_TESTS;
    let mut cmd = Command::new("cargo");
    cmd.args([
        "test",
        "--profile",
        PROFILE,
        "--no-run",
        "--message-format=json",
    ])
    .args([
        "-p",
        krate,
        "--features",
        &gpu_features(krate),
        "--test",
        name,
    ])
    .current_dir(root);
    let o = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !o.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let exe = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|msg| msg["target"]["name"] == name && msg["executable"].is_string())
        .and_then(|msg| msg["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo built no test binary `{name}` of {krate}"))?;
    std::fs::copy(&exe, bin.join(name)).with_context(|| format!("copying {}", exe.display()))?;
    Ok(())
}

/// Total size of the files under `dir`.
fn size_of(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            size_of(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Packs `out/bin` into `bundle` with xz: one solid stream whose window spans whole binaries
/// (up to 192 MiB), so the test binaries' shared code (burn, cubecl, the drivers' bindings) is
/// stored about once. Refuses a bundle over `limit`, naming the sizes.
fn pack(out: &Path, bundle: &Path, limit: u64) -> Result<u64> {
    let raw = size_of(&out.join("bin"))?;
    let dict_mib = raw.div_ceil(1 << 20).clamp(1, 192);
    let partial = bundle.with_extension("xz.partial");
    super::run(
        Command::new("tar")
            .env("XZ_OPT", format!("--lzma2=preset=9,dict={dict_mib}MiB"))
            .arg("-cJf")
            .arg(&partial)
            .arg("-C")
            .arg(out)
            .arg("bin"),
    )?;
    let packed = std::fs::metadata(&partial)?.len();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    if packed > limit {
        std::fs::remove_file(&partial)?;
        bail!(
            "the bundle of {} would be {:.1} MiB ({:.1} MiB unpacked), over the {:.0} MiB a GPU \
             machine takes: include fewer tests (ganpo-train/tests/backends.rs)",
            out.join("bin").display(),
            mib(packed),
            mib(raw),
            mib(limit)
        );
    }
    std::fs::rename(&partial, bundle)?;
    println!(
        "{}: {:.1} MiB ({:.1} MiB unpacked)",
        bundle.display(),
        mib(packed),
        mib(raw)
    );
    Ok(packed)
}

/// Unpacks `bundle` into `out/bin` unless that is already there and newer.
fn unpack(out: &Path, bundle: &Path) -> Result<()> {
    let bin = out.join("bin");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(bundle), modified(&bin.join("ganpo"))) {
        (None, None) => bail!(
            "neither {} nor {}: run `cargo xtask gpu-check --build-only` where the workspace \
             builds and carry the bundle here",
            bundle.display(),
            bin.display()
        ),
        (Some(packed), Some(unpacked)) if unpacked >= packed => Ok(()),
        (Some(_), _) => super::run(
            Command::new("tar")
                .arg("-xJf")
                .arg(bundle)
                .arg("-C")
                .arg(out),
        ),
        (None, Some(_)) => Ok(()),
    }
}

/// Runs the backend-generic tests (`bin/backends`) on `backend`, with the fixtures of the
/// checkout at `root`; a failure names the failing tests and what they said.
fn run_backend_tests(root: &Path, bin: &Path, backend: &str) -> Result<String> {
    let exe = bin.join(BACKEND_TESTS.1);
    if !exe.exists() {
        bail!("no {}: the bundle lacks it", exe.display());
    }
    let (ok, stdout, stderr) = output(
        Command::new(&exe)
            .env("GANPO_TEST_BACKEND", backend)
            .env("GANPO_CHECKOUT", root),
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
            .take(12)
            .collect();
        bail!("{summary}; {}", failures.join("; "));
    }
    Ok(summary)
}

/// Runs the checks; `args` are the options after `gpu-check`.
pub fn gpu_check(root: &Path, args: &[String]) -> Result<()> {
    let out = root.join("target/gpu-check");
    let (bin, bundle) = (out.join("bin"), out.join("bundle.tar.xz"));
    std::fs::create_dir_all(&out)?;
    if flag(args, "--no-build") {
        unpack(&out, &bundle)?;
    } else {
        build(root, &bin)?;
        pack(&out, &bundle, BUNDLE_LIMIT)?;
        if flag(args, "--build-only") {
            println!(
                "carry target/gpu-check/bundle.tar.xz to the GPU machine and run there, in the \
                 repository:\n  tar -xJf target/gpu-check/bundle.tar.xz -C target/gpu-check && \
                 target/gpu-check/bin/xtask gpu-check --no-build"
            );
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
    let ganpo = bin.join("ganpo");
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
            let result = run_backend_tests(root, &bin, backend);
            row(backend, "backend-generic tests", result);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What `--build-only` packs, `--no-build` unpacks byte for byte; a bundle over the limit is
    /// refused and not left behind.
    #[test]
    fn bundles_unpack_as_packed_and_keep_to_the_limit() {
        let dir = std::env::temp_dir().join(format!("ganpo-gpu-check-{}", std::process::id()));
        let (here, there) = (dir.join("here"), dir.join("there"));
        std::fs::create_dir_all(here.join("bin")).unwrap();
        let ganpo: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(here.join("bin/ganpo"), &ganpo).unwrap();
        std::fs::write(here.join("bin/backends"), b"a test binary").unwrap();
        let bundle = here.join("bundle.tar.xz");
        let packed = pack(&here, &bundle, BUNDLE_LIMIT).unwrap();
        assert!(packed < 100_000, "{packed} bytes");

        std::fs::create_dir_all(&there).unwrap();
        let carried = there.join("bundle.tar.xz");
        std::fs::copy(&bundle, &carried).unwrap();
        unpack(&there, &carried).unwrap();
        assert_eq!(std::fs::read(there.join("bin/ganpo")).unwrap(), ganpo);
        let tests = there.join("bin/backends");
        assert_eq!(std::fs::read(&tests).unwrap(), b"a test binary");

        std::fs::remove_file(&bundle).unwrap();
        let err = pack(&here, &bundle, 100).unwrap_err().to_string();
        assert!(
            err.contains("over the") && err.contains("fewer tests"),
            "{err}"
        );
        assert!(!bundle.exists() && !bundle.with_extension("xz.partial").exists());
        let err = unpack(&dir.join("nowhere"), &dir.join("nowhere/bundle.tar.xz")).unwrap_err();
        assert!(err.to_string().contains("--build-only"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
