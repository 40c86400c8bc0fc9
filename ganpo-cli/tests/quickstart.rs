//! A shortened `ganpo quickstart`: DPO must raise the oracle reward well above the SFT model's,
//! every output must be written, and the recipe's commands must reproduce the quickstart's
//! numbers.
//!
//! The margin comes from measurements (docs/quickstart.md): with these settings the SFT model's
//! mean reward over seeds 0-5 lies within ±0.05 of 0 (standard error of one estimate: 0.03), and
//! DPO's gain over it ranged from 0.20 to 0.92 (0.78 for seed 0, the one tested). A gain above MARGIN is more than ten
//! standard errors of "no effect", and below the smallest gain measured.

mod common;

use common::ganpo;
use serde_json::Value;

const MARGIN: f64 = 0.25;

fn row<'a>(results: &'a Value, model: &str) -> &'a Value {
    results["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == model)
        .unwrap_or_else(|| panic!("no row for {model}"))
}

#[test]
fn shortened_quickstart_improves_the_oracle_reward_and_writes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qs");
    let out_s = out.to_str().unwrap();
    let o = ganpo(&[
        "quickstart",
        "--out",
        out_s,
        "--seed",
        "0",
        "--methods",
        "dpo,dpo+ganpo",
        "--steps",
        "64",
        "--train-prompts",
        "384",
        "--eval-prompts",
        "64",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let sft = row(&results, "sft");
    let dpo = row(&results, "dpo");
    let gain =
        dpo["reward_t1"]["mean"].as_f64().unwrap() - sft["reward_t1"]["mean"].as_f64().unwrap();
    assert!(gain > MARGIN, "DPO's gain over SFT: {gain}");
    // The SFT model against itself: exactly zero divergence; DPO moved.
    assert_eq!(sft["kl"]["mean"].as_f64(), Some(0.0));
    assert!(dpo["kl"]["mean"].as_f64().unwrap() > 0.1);
    for model in ["dpo", "dpo+ganpo"] {
        let acc = row(&results, model)["eval_accuracy"].as_f64().unwrap();
        assert!(acc > 0.6, "{model} held-out accuracy {acc}");
    }
    for file in [
        "results.md",
        "recipe.sh",
        "plots/reward_vs_kl.png",
        "plots/loss.png",
        "plots/accuracy.png",
        "task/model/tokenizer.json",
        "sft/model.safetensors",
        "pairs/train.jsonl",
        "pairs/eval.jsonl",
        "runs/dpo.toml",
        "runs/dpo-ganpo.toml",
        "runs/dpo/final/model.safetensors",
        "runs/dpo-ganpo/final/model.safetensors",
        "runs/dpo-ganpo/metrics.jsonl",
        "eval/dpo-t1.jsonl",
        "eval/sft-t1.5.jsonl",
    ] {
        let p = out.join(file);
        assert!(
            p.is_file() && std::fs::metadata(&p).unwrap().len() > 0,
            "missing {file}"
        );
    }
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| dpo+ganpo |"), "{md}");

    // The recipe is the quickstart: its `ganpo kl` line for DPO gives the same estimate.
    let recipe = std::fs::read_to_string(out.join("recipe.sh")).unwrap();
    let line = recipe
        .lines()
        .find(|l| l.starts_with("ganpo kl ") && l.contains("runs/dpo/final"))
        .expect("a kl line for dpo");
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let o = ganpo(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kl: Value = serde_json::from_slice(&o.stdout).unwrap();
    let want = dpo["kl"]["mean"].as_f64().unwrap();
    assert!((kl["kl"].as_f64().unwrap() - want).abs() < 1e-9 * want.abs().max(1.0));

    // Running it again replaces the earlier output; a directory that is not a quickstart's is
    // refused untouched.
    assert!(out.join(".ganpo-quickstart").is_file());
    let o = ganpo(&[
        "quickstart",
        "--out",
        out_s,
        "--methods",
        "dpo",
        "--steps",
        "1",
        "--sft-steps",
        "50",
        "--sft-examples",
        "400",
        "--train-prompts",
        "32",
        "--eval-prompts",
        "4",
        "--eval-samples",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(again["steps"], 1);
    assert!(
        !out.join("runs/dpo-ganpo").exists(),
        "the earlier run is gone"
    );
    // A directory without the marker is refused untouched, even one that looks like an output.
    let other = dir.path().join("mine");
    std::fs::create_dir_all(other.join("task")).unwrap();
    std::fs::write(other.join("notes.txt"), "keep").unwrap();
    std::fs::write(other.join("results.json"), "{}").unwrap();
    let o = ganpo(&[
        "quickstart",
        "--out",
        other.to_str().unwrap(),
        "--steps",
        "1",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a quickstart output"));
    assert_eq!(
        std::fs::read_to_string(other.join("notes.txt")).unwrap(),
        "keep"
    );
    assert!(other.join("task").is_dir() && other.join("results.json").is_file());
}

#[test]
fn score_and_pairs_report_bad_rows_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.jsonl");
    std::fs::write(
        &samples,
        "{\"prompt\": \"the plot was\", \"completion\": \" good\"}\n{\"prompt\": \"the plot was\"}\n",
    )
    .unwrap();
    let o = ganpo(&[
        "score",
        "--reward",
        "oracle:sentiment",
        "--samples",
        samples.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("samples.jsonl:2") && e.contains("completion"),
        "{e}"
    );
    let o = ganpo(&[
        "score",
        "--reward",
        "oracle:nope",
        "--samples",
        samples.to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("unknown reward `oracle:nope`") && e.contains("oracle:sentiment"),
        "{e}"
    );
    // Unscored samples cannot be paired.
    std::fs::write(
        &samples,
        r#"{"prompt_index": 0, "sample": 0, "prompt": "the plot was", "completion": " good", "completion_ids": [1], "finished": true, "temperature": 1.0}
"#,
    )
    .unwrap();
    let out = dir.path().join("pairs.jsonl");
    let o = ganpo(&[
        "pairs",
        "--samples",
        samples.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no reward"));
    assert!(!out.exists());
}
