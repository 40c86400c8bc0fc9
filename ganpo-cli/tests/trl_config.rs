//! TRL recipes as they are (`ganpo train --trl-config dpo.yaml`, `ganpo trl dpo --flags`): the
//! same recipe written as TRL's YAML, as TRL's flags and as a run.toml is the same run, TRL's
//! defaults fill what it leaves out, and what ganpo lacks is refused by name.

mod common;
use common::{fixtures, ganpo_text};

use std::path::Path;

use serde_json::Value;

/// A small DPO + SFT recipe in TRL's keys (YAML reads `5e-6` as text, as PyYAML does for TRL).
fn recipe(out: &Path) -> String {
    format!(
        "model_name_or_path: {policy}
dataset_name: {data}
learning_rate: 5e-6
beta: 0.2
loss_type: [sigmoid, sft]
loss_weights: [1.0, 0.5]
max_length: 64
per_device_train_batch_size: 2
gradient_accumulation_steps: 2
max_steps: 3
lr_scheduler_type: cosine
warmup_steps: 1
max_grad_norm: 0.5
seed: 7
logging_steps: 1
save_steps: 2
gradient_checkpointing: false
report_to: none
dataloader_num_workers: 2
output_dir: {out}
",
        policy = fixtures().join("policy").display(),
        data = fixtures().join("data/standard.jsonl").display(),
        out = out.display(),
    )
}

/// The same run as a run.toml, with TRL's defaults written out where they differ from ganpo's
/// (weight decay 0, 3 epochs, no held-out split).
fn run_toml(out: &Path) -> String {
    format!(
        "[model]
path = {policy:?}
[data]
train = [{data:?}]
max_length = 64
[loss]
beta = 0.2
losses = [{{ kind = \"sigmoid\", weight = 1.0 }}, {{ kind = \"sft\", weight = 0.5 }}]
[train]
output_dir = {out:?}
lr = 5e-6
batch_size = 2
grad_accum = 2
epochs = 3
max_steps = 3
scheduler = \"cosine\"
warmup_steps = 1
max_grad_norm = 0.5
seed = 7
logging_steps = 1
save_steps = 2
weight_decay = 0.0
tensorboard = false
",
        policy = fixtures().join("policy").display().to_string(),
        data = fixtures().join("data/standard.jsonl").display().to_string(),
        out = out.display().to_string(),
    )
}

/// `metrics.jsonl` without its timings.
fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if let Value::Object(m) = &mut v {
                m.retain(|k, _| !(k.contains("time") || k.contains("per_second")));
            }
            v
        })
        .collect()
}

#[test]
fn a_trl_recipe_is_the_same_run_as_its_run_toml() {
    let dir = tempfile::tempdir().unwrap();
    let (trl_out, toml_out) = (dir.path().join("trl"), dir.path().join("toml"));
    let yaml = dir.path().join("dpo.yaml");
    std::fs::write(&yaml, recipe(&trl_out)).unwrap();
    let toml = dir.path().join("run.toml");
    std::fs::write(&toml, run_toml(&toml_out)).unwrap();

    let (ok, printed, stderr) = ganpo_text(&["train", "--trl-config", yaml.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        printed.contains("weight_decay = 0.0") && printed.contains("epochs = 3"),
        "TRL's defaults, printed as run.toml: {printed}"
    );
    assert!(
        printed.contains("# note: dataloader_num_workers: no effect"),
        "{printed}"
    );
    let (ok, _, stderr) = ganpo_text(&["train", "--config", toml.to_str().unwrap()]);
    assert!(ok, "{stderr}");

    let (a, b) = (metrics(&trl_out), metrics(&toml_out));
    assert_eq!(a.len(), 3, "{a:?}");
    assert_eq!(a, b);
    let weights = |d: &Path| std::fs::read(d.join("final/model.safetensors")).unwrap();
    assert!(
        weights(&trl_out) == weights(&toml_out),
        "final weights differ"
    );

    // TRL's flags give the same run.toml as its YAML; flags override the file.
    let yaml_printed = |extra: &[&str]| {
        let mut args = vec![
            "trl",
            "dpo",
            "--config",
            yaml.to_str().unwrap(),
            "--dry-run",
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = ganpo_text(&args);
        assert!(ok, "{err}");
        out
    };
    let policy = fixtures().join("policy").display().to_string();
    let data = fixtures().join("data/standard.jsonl").display().to_string();
    let out = trl_out.display().to_string();
    let flags = [
        "trl",
        "dpo",
        "--model_name_or_path",
        &policy,
        "--dataset_name",
        &data,
        "--learning_rate",
        "5e-6",
        "--beta",
        "0.2",
        "--loss_type",
        "sigmoid",
        "sft",
        "--loss_weights",
        "1.0",
        "0.5",
        "--max_length",
        "64",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps=2",
        "--max_steps",
        "3",
        "--lr_scheduler_type",
        "cosine",
        "--warmup_steps",
        "1",
        "--max_grad_norm",
        "0.5",
        "--seed",
        "7",
        "--logging_steps",
        "1",
        "--save_steps",
        "2",
        "--no_gradient_checkpointing",
        "--report_to",
        "none",
        "--dataloader_num_workers",
        "2",
        "--output_dir",
        &out,
        "--dry-run",
    ];
    let (ok, from_flags, stderr) = ganpo_text(&flags);
    assert!(ok, "{stderr}");
    let body = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&from_flags), body(&yaml_printed(&[])));
    assert!(yaml_printed(&["--beta", "0.3"]).contains("beta = 0.3"));
}

#[test]
fn what_ganpo_lacks_or_trl_does_not_have_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let yaml = dir.path().join("dpo.yaml");
    let text = recipe(&out).replace("beta: 0.2\n", "")
        + "padding_free: true\nlerning_rate: 1e-6\nloss_type: [kto, bogus]\n\
           loss_weights: [1.0, 1.0]\nreport_to: [wandb]\neval_strategy: epoch\n\
           label_names: [x]\nbeta: 0.2\n";
    std::fs::write(&yaml, text).unwrap();
    let (ok, _, stderr) = ganpo_text(&["train", "--trl-config", yaml.to_str().unwrap()]);
    assert!(!ok);
    let file = yaml.display().to_string();
    for expected in [
        format!("{file}: `padding_free` = true: padding-free batches are not implemented"),
        format!("{file}: `lerning_rate` = "),
        "not a key of `trl dpo` (TRL 1.16.0".to_string(),
        format!("{file}: `loss_type` = \"kto\": KTO is KTOTrainer's loss, not a DPOConfig"),
        format!("{file}: `loss_type` = \"bogus\": ganpo implements sigmoid"),
        format!("{file}: `report_to` = \"wandb\""),
        format!("{file}: `eval_strategy` = \"epoch\""),
        format!("{file}: `label_names` = [\"x\"]: ganpo does not implement this DPOConfig key"),
    ] {
        assert!(stderr.contains(&expected), "{expected}\n---\n{stderr}");
    }
    assert!(
        !out.exists(),
        "nothing is written when the recipe is refused"
    );

    // On the command line the origin is the command line.
    let (ok, _, stderr) = ganpo_text(&[
        "trl",
        "dpo",
        "--config",
        yaml.to_str().unwrap(),
        "--padding_free",
        "--dry-run",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("command line: `padding_free` = true: padding-free batches"),
        "{stderr}"
    );
}
