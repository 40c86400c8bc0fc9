//! `ganpo train` with KTO end to end: unpaired files train and write TRL's KTO metrics and the
//! discriminators in the official layout; a dataset mixing pairs and unpaired rows is refused.

use std::path::Path;

mod common;
use common::{fixtures, ganpo, lines};

fn ganpo_train(config: &Path) -> std::process::Output {
    ganpo(&["train", "--config", config.to_str().unwrap()])
}

#[test]
fn kto_trains_on_unpaired_files_and_a_mixed_dataset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = |names: &[&str]| -> String {
        let files: Vec<String> = names
            .iter()
            .map(|n| {
                format!(
                    "{:?}",
                    fixtures().join("data").join(n).display().to_string()
                )
            })
            .collect();
        files.join(", ")
    };
    let write = |name: &str, files: &str| {
        let text = format!(
            "[model]\npath = {:?}\n\n[data]\ntrain = [{files}]\neval_fraction = 0.25\n\n\
             [loss]\nbeta = 0.3\nlosses = [{{ kind = \"kto\" }}]\nundesirable_weight = 1.4\n\n\
             [ganpo]\ndiscriminator = {{ kind = \"transformer\", hidden = 16, layers = 1, \
             heads = 2, ff = 64 }}\n\n\
             [train]\noutput_dir = \"out-{name}\"\nlr = 3e-3\nbatch_size = 4\nmax_steps = 4\n\
             logging_steps = 1\neval_steps = 2\n",
            fixtures().join("policy").display().to_string(),
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let config = write(
        "kto",
        &data(&["unpaired.jsonl", "unpaired_conversational.jsonl"]),
    );
    let out = ganpo_train(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = lines(&dir.path().join("out-kto/metrics.jsonl"));
    let has = |key: &str| metrics.iter().any(|m| m[key].as_f64().is_some());
    for key in [
        "kl",
        "rewards/chosen",
        "logps/rejected",
        "eval_kl",
        "eval_loss",
    ] {
        assert!(has(key), "no {key} in {metrics:?}");
    }
    // The discriminators also in the official trainer's layout.
    let ckpts = dir.path().join("out-kto/final/disc_ckpts");
    for name in ["disc_chosen", "disc_rejected"] {
        assert!(
            ckpts.join(format!("{name}.safetensors")).is_file(),
            "{name}"
        );
    }
    // Pairs and unpaired examples in one dataset: refused by file and line, nothing written.
    let mixed = write("mixed", &data(&["standard.jsonl", "unpaired.jsonl"]));
    let out = ganpo_train(&mixed);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mixes pairs")
            && err.contains("standard.jsonl:1")
            && err.contains("unpaired.jsonl:1"),
        "{err}"
    );
    assert!(!dir.path().join("out-mixed").exists());
}
