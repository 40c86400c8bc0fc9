//! `ganpo eval` against TRL 1.16's `DPOTrainer.evaluate()` (and `KTOTrainer.evaluate()` for KTO)
//! on the same tiny models and data (fixtures: tools/fixtures/train_fixtures.py), with the
//! log-probs scored whole and in chunks of 3 rows (`--logprob-chunk-rows`).

mod common;
use common::{fixtures, ganpo};

use serde_json::Value;

#[test]
fn eval_metrics_match_trl_evaluate() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("eval_expected.json")).unwrap(),
    )
    .unwrap();
    for case in expected["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let s = &case["settings"];
        let mut args: Vec<String> = vec![
            "eval".into(),
            "--model".into(),
            fixtures().join("policy").display().to_string(),
            "--ref-model".into(),
            fixtures().join("reference").display().to_string(),
            "--data".into(),
            fixtures()
                .join(case["data"].as_str().unwrap())
                .display()
                .to_string(),
            "--batch-size".into(),
            case["eval_batch_size"].to_string(),
            "--beta".into(),
            s["beta"].to_string(),
        ];
        if let Some(types) = s["loss_type"].as_array() {
            let t: Vec<&str> = types.iter().map(|t| t.as_str().unwrap()).collect();
            args.extend(["--loss-type".into(), t.join(",")]);
        }
        // KTOConfig's loss_type is one name, and it has side weights.
        if let Some(t) = s["loss_type"].as_str() {
            args.extend(["--loss-type".into(), t.into()]);
        }
        for key in ["desirable_weight", "undesirable_weight"] {
            if let Some(w) = s[key].as_f64() {
                args.extend([format!("--{}", key.replace('_', "-")), w.to_string()]);
            }
        }
        if let Some(w) = s["loss_weights"].as_array() {
            let w: Vec<String> = w.iter().map(|w| w.to_string()).collect();
            args.extend(["--loss-weights".into(), w.join(",")]);
        }
        if let Some(m) = s["max_length"].as_u64() {
            args.extend(["--max-length".into(), m.to_string()]);
        }
        if let Some(m) = s["truncation_mode"].as_str() {
            args.extend(["--truncation-mode".into(), m.into()]);
        }
        if let Some(f) = s["f_divergence_type"].as_str() {
            args.extend(["--f-divergence-type".into(), f.into()]);
        }
        if let Some(t) = s["discopop_tau"].as_f64() {
            args.extend(["--discopop-tau".into(), t.to_string()]);
        }
        if s["use_weighting"].as_bool() == Some(true) {
            args.push("--use-weighting".into());
        }
        if let Some(a) = s["ld_alpha"].as_f64() {
            args.extend(["--ld-alpha".into(), a.to_string()]);
        }
        for chunk in [None, Some("3")] {
            let mut args = args.clone();
            if let Some(c) = chunk {
                args.extend(["--logprob-chunk-rows".into(), c.into()]);
            }
            let name = format!("{name} (chunk rows {chunk:?})");
            compare(&name, &args, case);
        }
    }
}

/// Runs `ganpo` with `args` and compares its metrics with the TRL `case`'s.
fn compare(name: &str, args: &[String], case: &Value) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ganpo(&args);
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut compared = 0;
    for (key, want) in case["metrics"].as_object().unwrap() {
        if [
            "eval_runtime",
            "eval_samples_per_second",
            "eval_steps_per_second",
            "epoch",
            "eval_num_tokens",
        ]
        .contains(&key.as_str())
        {
            continue;
        }
        let g = got[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: missing {key} in {got}"));
        let w = want.as_f64().unwrap();
        assert!((g - w).abs() <= 1e-4, "{name}: {key} = {g}, TRL {w}");
        compared += 1;
    }
    assert!(compared >= 10, "{name}: only {compared} metrics compared");
}
