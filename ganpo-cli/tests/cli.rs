//! The `ganpo` binary: model commands against transformers / TRL reference values
//! (tools/fixtures/tokenizer_fixtures.py), and clear errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn llama() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ganpo-models/tests/fixtures/llama")
}

fn ganpo(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ganpo"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn logprobs_match_trl_tokenization_and_transformers() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(llama().join("logprobs_expected.json")).unwrap(),
    )
    .unwrap();
    // The same model as an HF directory and as an ONNX export (weights read from the graph).
    let onnx = llama().join("../onnx/llama/model.onnx");
    for model in [llama().display().to_string(), onnx.display().to_string()] {
        for case in expected["cases"].as_array().unwrap() {
            let completion = case["completion"].as_str().unwrap();
            // The fixture's completion already ends with EOS (TRL's add_eos); ganpo must not add another.
            let (ok, stdout, stderr) = ganpo(&[
                "logprobs",
                "--model",
                &model,
                "--prompt",
                case["prompt"].as_str().unwrap(),
                "--completion",
                completion,
            ]);
            assert!(ok, "{stderr}");
            let got: Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(got["prompt_ids"], case["prompt_ids"]);
            assert_eq!(got["completion_ids"], case["completion_ids"]);
            let (g, w) = (
                got["token_logps"].as_array().unwrap(),
                case["token_logps"].as_array().unwrap(),
            );
            assert_eq!(g.len(), w.len());
            for (g, w) in g.iter().zip(w) {
                assert!(
                    (g.as_f64().unwrap() - w.as_f64().unwrap()).abs() < 1e-4,
                    "{g} vs {w}"
                );
            }
            let sum: f64 = w.iter().map(|v| v.as_f64().unwrap()).sum();
            assert!((got["sum_logp"].as_f64().unwrap() - sum).abs() < 1e-3);
        }
        // `--no-eos` scores the text as given (transformers' log-probs of the same tokens); the
        // default scores it with the EOS appended.
        for case in expected["exact_cases"].as_array().unwrap() {
            let args = |extra: &[&'static str]| {
                let mut a = vec![
                    "logprobs".to_string(),
                    "--model".into(),
                    model.clone(),
                    "--prompt".into(),
                    case["prompt"].as_str().unwrap().into(),
                    "--completion".into(),
                    case["completion"].as_str().unwrap().into(),
                ];
                a.extend(extra.iter().map(|s| s.to_string()));
                a
            };
            let run = |a: Vec<String>| -> Value {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                let (ok, stdout, stderr) = ganpo(&a);
                assert!(ok, "{stderr}");
                serde_json::from_str(&stdout).unwrap()
            };
            let exact = run(args(&["--no-eos"]));
            assert_eq!(exact["completion_ids"], case["completion_ids"]);
            assert_eq!(exact["eos_appended"], false);
            let want: Vec<f64> = case["token_logps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let got = exact["token_logps"].as_array().unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g.as_f64().unwrap() - w).abs() < 1e-4, "{g} vs {w}");
            }
            let trl = run(args(&[]));
            assert_eq!(trl["eos_appended"], true);
            let eos = serde_json::json!("<|im_end|>");
            assert!(
                trl["completion_tokens"].as_array().unwrap().contains(&eos),
                "{trl}"
            );
            assert!(
                !exact["completion_tokens"]
                    .as_array()
                    .unwrap()
                    .contains(&eos),
                "{exact}"
            );
        }
    }
}

#[test]
fn inspect_reports_the_checkpoint() {
    let (ok, stdout, stderr) = ganpo(&["inspect", "--model", &llama().display().to_string()]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["family"], "llama");
    assert_eq!(v["architecture"]["num_key_value_heads"], 2);
    // embed 320x32 + 2 layers x (q 32x32, k 32x16, v 32x16, o 32x32, mlp 3x32x48, 2 norms x 32) + final norm 32
    assert_eq!(
        v["parameters"],
        320 * 32 + 2 * (1024 + 512 + 512 + 1024 + 3 * 32 * 48 + 64) + 32
    );
    assert_eq!(v["weight_dtypes"]["F32"], 20);
    assert_eq!(v["tokenizer"]["eos_tokens"][0], "<|im_end|>");
}

#[test]
fn bad_paths_and_backends_fail_with_a_clear_message() {
    let (ok, _, stderr) = ganpo(&[
        "logprobs",
        "--model",
        "/nonexistent",
        "--prompt",
        "a",
        "--completion",
        "b",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot read /nonexistent: expected an HF model directory (config.json + model.safetensors), a .gguf file or an .onnx file"),
        "{stderr}"
    );
    let (ok, _, stderr) = ganpo(&["toy", "--backend", "tpu"]);
    assert!(!ok);
    assert!(
        stderr.contains("unknown backend `tpu`: expected one of cpu, wgpu, cuda"),
        "{stderr}"
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(llama().join("config.json"), tmp.path().join("config.json")).unwrap();
    let (ok, _, stderr) = ganpo(&["inspect", "--model", &tmp.path().display().to_string()]);
    assert!(!ok);
    assert!(stderr.contains("model.safetensors"), "{stderr}");
}

#[test]
fn export_turns_a_gguf_into_an_hf_directory() {
    let gguf = llama().join("../gguf/tiny_llama.gguf");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    let (ok, _, stderr) = ganpo(&[
        "export",
        "--model",
        &gguf.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = ganpo(&["inspect", "--model", &out.display().to_string()]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["weight_dtypes"]["F32"], 20);
    assert_eq!(v["architecture"]["vocab_size"], 320);
    // Exporting again onto the same path is refused, and the first export is intact.
    let (ok, _, stderr) = ganpo(&[
        "export",
        "--model",
        &gguf.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    assert!(!ok && stderr.contains("refusing to overwrite"), "{stderr}");
    assert!(out.join("model.safetensors").is_file());
}

#[test]
fn bench_reports_the_step_and_its_phases() {
    for (mode, with_discriminators, pooling) in
        [("dpo", false, "sequence"), ("ganpo", true, "completion")]
    {
        let (ok, stdout, stderr) = ganpo(&[
            "bench",
            "--pooling",
            pooling,
            "--model-config",
            "tiny",
            "--seq",
            "16",
            "--pairs",
            "2",
            "--mode",
            mode,
            "--steps",
            "2",
            "--warmup",
            "1",
        ]);
        assert!(ok, "{stderr}");
        let r: Value = serde_json::from_str(&stdout).unwrap();
        // tiny: 1024 x 128 embeddings (tied) + 2 layers of 147,712 + the final norm.
        assert_eq!(r["parameters"], 426_624);
        assert!(r["ms_per_step"]["median"].as_f64().unwrap() > 0.0);
        assert_eq!(r["hf_config"]["model_type"], "llama");
        assert_eq!(r["config"]["pooling"], pooling);
        let phases: Vec<(String, f64)> = r["breakdown_ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_f64().unwrap()))
            .collect();
        let names: Vec<&str> = phases.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "reference_forward",
                "policy_forward",
                "discriminator_step",
                "policy_backward",
                "optimizer"
            ]
        );
        assert_eq!(phases[2].1 > 0.0, with_discriminators, "{mode}: {phases:?}");
        assert!(
            phases
                .iter()
                .filter(|(n, _)| n != "discriminator_step")
                .all(|(_, t)| *t > 0.0)
        );
    }
    let (ok, _, stderr) = ganpo(&["bench", "--dtype", "bf16", "--backend", "cpu"]);
    assert!(
        !ok && stderr.contains("--dtype bf16 is not supported on the cpu backend"),
        "{stderr}"
    );
    let (ok, _, stderr) = ganpo(&["bench", "--pooling", "tokens"]);
    assert!(
        !ok && stderr.contains("unknown --pooling `tokens`"),
        "{stderr}"
    );
    let (ok, _, stderr) = ganpo(&["bench", "--model-config", "gpt5"]);
    assert!(
        !ok && stderr.contains("unknown --model-config `gpt5`"),
        "{stderr}"
    );
}
