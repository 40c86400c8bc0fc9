//! `ganpo train` end to end: a tiny model learns, the run directory is complete, interrupted runs
//! leave only whole checkpoints and resume, bad input stops the run before anything is written.

use std::process::Command;

mod common;
use common::{
    copy_fixture, fixtures, ganpo, ganpo_train, lines, spawn_holding, standard, train_losses,
    write_config,
};

use serde_json::Value;

/// The records of a TFRecord file, each checked against its masked CRC-32C.
fn tfrecords(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let masked = |b: &[u8]| crc32c::crc32c(b).rotate_right(15).wrapping_add(0xa282_ead8);
    let u32_at = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().unwrap());
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(u32_at(&bytes[8..]), masked(&bytes[..8]), "length CRC");
        let data = &bytes[12..12 + len];
        assert_eq!(u32_at(&bytes[12 + len..]), masked(data), "data CRC");
        out.push(data.to_vec());
        bytes = &bytes[16 + len..];
    }
    out
}

#[test]
fn train_learns_and_writes_a_complete_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &standard(), "eval_steps = 8\nsave_steps = 8");
    let out = ganpo_train(&config, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = dir.path().join("out");
    let metrics = lines(&run.join("metrics.jsonl"));
    let train: Vec<&Value> = metrics.iter().filter(|m| m["split"] == "train").collect();
    let eval: Vec<&Value> = metrics.iter().filter(|m| m["split"] == "eval").collect();
    // 16 training pairs in batches of 4 for 8 epochs: 32 steps.
    assert_eq!(train.len(), 8);
    assert_eq!(eval.len(), 4);
    let (first, last) = (train[0], train[train.len() - 1]);
    let f = |v: &Value, k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {v}"))
    };
    assert!(
        f(last, "loss") < 0.8 * f(first, "loss"),
        "loss {} -> {}",
        f(first, "loss"),
        f(last, "loss")
    );
    assert!(f(last, "rewards/accuracies") > f(first, "rewards/accuracies"));
    for key in [
        "grad_norm",
        "learning_rate",
        "gan/d_chosen_loss",
        "gan/gen_loss",
        "gan/latent_drift",
        "entropy",
    ] {
        assert!(f(last, key).is_finite(), "{key}");
    }
    assert!(f(eval[3], "eval_rewards/accuracies") >= 0.5);
    // The same lines as TensorBoard events (their encoding is checked byte for byte against the
    // tensorboard package in src/tensorboard.rs): whole records, one per line after the
    // file-version event, with transformers' tags.
    let events: Vec<Vec<u8>> = std::fs::read_dir(run.join("tensorboard"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tfevents"))
        .flat_map(|e| tfrecords(&std::fs::read(e.path()).unwrap()))
        .collect();
    assert_eq!(events.len(), 1 + metrics.len());
    let has = |e: &[u8], tag: &str| e.windows(tag.len()).any(|w| w == tag.as_bytes());
    assert!(has(&events[0], "brain.Event:2"));
    assert_eq!(events.iter().filter(|e| has(e, "train/loss")).count(), 8);
    assert_eq!(events.iter().filter(|e| has(e, "eval/loss")).count(), 4);
    assert!(events.iter().all(|e| !has(e, "train/eval_")));
    // save_total_limit = 2 keeps the last two.
    assert!(!run.join("checkpoint-16").exists());
    for step in [24, 32] {
        let ckpt = run.join(format!("checkpoint-{step}"));
        for file in [
            "policy.mpk",
            "policy_optimizer.bin",
            "ganpo.mpk",
            "ganpo_optimizer.bin",
            "trainer_state.json",
        ] {
            assert!(ckpt.join(file).is_file(), "{}/{file}", ckpt.display());
        }
        let meta: Value = serde_json::from_str(
            &std::fs::read_to_string(ckpt.join("trainer_state.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(meta["state"]["step"], step);
    }
    let resolved = std::fs::read_to_string(run.join("config.resolved.toml")).unwrap();
    ganpo_train::config::RunConfig::from_table(toml::from_str(&resolved).unwrap(), "resolved")
        .unwrap();
    // The final policy is an HF directory that loads and differs from the start.
    let device = Default::default();
    let trained =
        ganpo_models::load_model::<burn::backend::NdArray>(&run.join("final"), &device).unwrap();
    assert!(trained.tokenizer.is_some());
    let before = ganpo(&[
        "eval",
        "--model",
        fixtures().join("policy").to_str().unwrap(),
        "--data",
        fixtures().join("data/standard.jsonl").to_str().unwrap(),
    ]);
    let after = ganpo(&[
        "eval",
        "--model",
        run.join("final").to_str().unwrap(),
        "--ref-model",
        fixtures().join("policy").to_str().unwrap(),
        "--data",
        fixtures().join("data/standard.jsonl").to_str().unwrap(),
    ]);
    let (b, a): (Value, Value) = (
        serde_json::from_slice(&before.stdout).unwrap(),
        serde_json::from_slice(&after.stdout).unwrap(),
    );
    assert!(
        a["eval_rewards/margins"].as_f64().unwrap()
            > b["eval_rewards/margins"].as_f64().unwrap() + 1.0,
        "{a}"
    );

    // Plots of the run: valid PNGs of the expected size, one per metric group.
    let plot = ganpo(&["plot", run.to_str().unwrap()]);
    assert!(
        plot.status.success(),
        "{}",
        String::from_utf8_lossy(&plot.stderr)
    );
    for name in [
        "losses",
        "rewards",
        "accuracies",
        "discriminators",
        "latent_drift",
    ] {
        let png = std::fs::read(run.join(format!("plots/{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        let dim = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().unwrap());
        assert_eq!((dim(16), dim(20)), (900, 540), "{name}");
        assert!(png.len() > 20_000, "{name} looks empty");
    }
    let nothing = ganpo(&["plot", dir.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("no metrics.jsonl"));

    // A second run into the same directory is refused instead of clobbering it.
    let again = ganpo_train(&config, &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds checkpoints"));
}

#[test]
fn a_killed_run_leaves_whole_checkpoints_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &standard(),
        "max_steps = 400\nsave_steps = 1\nsave_total_limit = 3",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_ganpo"))
        .args(["train", "--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run = dir.path().join("out");
    let start = std::time::Instant::now();
    while ganpo_train::train::checkpoint::list_checkpoints(&run).len() < 2
        && start.elapsed().as_secs() < 60
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(137));
    child.kill().unwrap();
    child.wait().unwrap();
    let found = ganpo_train::train::checkpoint::list_checkpoints(&run);
    assert!(!found.is_empty() && found.len() <= 3, "{found:?}");
    for (step, ckpt) in &found {
        let meta = ganpo_train::train::checkpoint::read_meta(ckpt).unwrap();
        assert_eq!(meta.state.step, *step);
        for file in [
            "policy.mpk",
            "policy_optimizer.bin",
            "ganpo.mpk",
            "ganpo_optimizer.bin",
        ] {
            assert!(ckpt.join(file).is_file(), "{}/{file}", ckpt.display());
        }
    }
    let last = found.last().unwrap().0;
    // Resuming with another configuration is refused, and the run directory is left as it was.
    let before = (
        std::fs::read(run.join("config.resolved.toml")).unwrap(),
        std::fs::read(run.join("metrics.jsonl")).unwrap(),
    );
    let refused = ganpo_train(
        &config,
        &["--resume", run.to_str().unwrap(), "--set", "loss.beta=0.3"],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("cannot resume: the configuration differs in: loss.beta"),
        "{err}"
    );
    let after = (
        std::fs::read(run.join("config.resolved.toml")).unwrap(),
        std::fs::read(run.join("metrics.jsonl")).unwrap(),
    );
    assert!(
        before == after,
        "a refused resume changed the run directory"
    );
    let out = ganpo_train(
        &config,
        &[
            "--resume",
            run.to_str().unwrap(),
            "--set",
            "train.max_steps=420",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<u64> = lines(&run.join("metrics.jsonl"))
        .iter()
        .filter(|m| m["split"] == "train")
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert_eq!(*steps.last().unwrap(), 420);
    assert!(last < 420);
    assert!(
        std::fs::read_dir(&run)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().contains(".partial-"))
    );
}

#[test]
fn malformed_records_stop_the_run_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\": \"Hi\", \"chosen\": \" yes\", \"rejected\": \" no\"}\n\
         {\"prompt\": \"Hi\", \"chosen\": \" yes\"\n\
         \n\
         {\"prompt\": \"Hi\", \"chosen\": \"\", \"rejected\": \" no\"}\n\
         {\"prompt\": \"Hi\", \"chosen\": [1], \"rejected\": \" no\"}\n\
         {\"prompt\": \"Hi\", \"chosen\": \" ok\", \"rejected\": \" no\"}\n",
    )
    .unwrap();
    let config = write_config(dir.path(), std::slice::from_ref(&bad), "");
    let out = ganpo_train(&config, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let name = bad.display().to_string();
    assert!(err.contains("3 of 5 records are malformed"), "{err}");
    assert!(err.contains(&format!("{name}:2: bad JSON")), "{err}");
    assert!(
        err.contains(&format!("{name}:4: field `chosen`: empty string")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{name}:5: field `chosen[0]`: expected a message object"
        )),
        "{err}"
    );
    assert!(err.contains("--skip-invalid"), "{err}");
    assert!(
        !dir.path().join("out").exists(),
        "the run directory was created"
    );

    let out = ganpo_train(
        &config,
        &[
            "--skip-invalid",
            "--set",
            "train.max_steps=2",
            "--set",
            "data.eval_fraction=0",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped 3 malformed record(s)"));
}

#[test]
fn bad_configuration_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &standard(), "");
    let cases: [(&[&str], &str); 5] = [
        (
            &["--set", "train.lrr=1e-3"],
            "key `train.lrr`: unknown field `lrr`, expected one of",
        ),
        (
            &["--set", "train.lr=-1"],
            "invalid setting `train.lr` = -1: expected a finite number > 0",
        ),
        (
            &["--set", "train.scheduler=\"step\""],
            "key `train.scheduler`: unknown variant `step`, expected one of `linear`, `cosine`, `constant`",
        ),
        (
            &["--set", "ganpo.momentum=1.5"],
            "invalid setting `ganpo.momentum` = 1.5: expected a value in [0, 1)",
        ),
        (&["--set", "oops"], "--set \"oops\": expected key=value"),
    ];
    for (extra, message) in cases {
        let out = ganpo_train(&config, extra);
        assert!(!out.status.success(), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{extra:?}: {err}");
        assert!(!dir.path().join("out").exists());
    }
}

#[test]
fn non_finite_steps_are_skipped_then_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &standard(),
        "max_nonfinite_steps = 2\nmax_grad_norm = 1e300",
    );
    let out = ganpo_train(
        &config,
        &["--set", "train.lr=1e30", "--set", "train.weight_decay=0"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("consecutive steps had a non-finite loss or gradient"),
        "{err}"
    );
}

#[test]
fn a_reference_that_does_not_fit_the_policy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A reference checkpoint whose config promises another vocabulary than its weights hold.
    let reference = dir.path().join("reference");
    copy_fixture("reference", &reference);
    let config_path = reference.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("\"vocab_size\": 320", "\"vocab_size\": 400");
    std::fs::write(&config_path, text).unwrap();
    let config = write_config(dir.path(), &standard(), "");
    let out = ganpo_train(
        &config,
        &[
            "--set",
            &format!("model.reference={:?}", reference.display().to_string()),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loading the reference") && err.contains("embed_tokens"),
        "{err}"
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn lora_run_writes_a_peft_adapter_that_eval_and_export_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &standard(), "max_steps = 4\nsave_steps = 2");
    let lora = "\n[lora]\nr = 4\nlora_alpha = 16\ntarget_modules = \"all-linear\"\n";
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(lora);
    std::fs::write(&config, &text).unwrap();
    let out = ganpo_train(&config, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = dir.path().join("out");
    let adapter = run.join("final");
    for file in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
    ] {
        assert!(adapter.join(file).is_file(), "final/{file}");
    }
    assert!(!adapter.join("model.safetensors").exists());
    assert!(run.join("checkpoint-2/adapters.safetensors").is_file());
    let policy = fixtures().join("policy");
    let data = fixtures().join("data/standard.jsonl");
    let eval = |args: &[&str]| -> Value {
        let mut all = vec!["eval", "--data", data.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = ganpo(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let with_adapter = eval(&[
        "--model",
        policy.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
    ]);
    assert!(with_adapter["eval_rewards/margins"].as_f64().unwrap().abs() > 1e-3);
    // Merged into one HF directory, against the base as reference: the same evaluation.
    let merged = dir.path().join("merged");
    let out = ganpo(&[
        "export",
        "--model",
        policy.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--merge",
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folded = eval(&[
        "--model",
        merged.to_str().unwrap(),
        "--ref-model",
        policy.to_str().unwrap(),
    ]);
    for key in ["eval_loss", "eval_rewards/margins", "eval_logps/chosen"] {
        let (a, b) = (
            with_adapter[key].as_f64().unwrap(),
            folded[key].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-4 * (1.0 + a.abs()), "{key}: {a} vs {b}");
    }

    // LoRA with a separate reference is refused by key before anything is written.
    let other = tempfile::tempdir().unwrap();
    let config = write_config(other.path(), &standard(), "max_steps = 1");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replacen(
        "[data]",
        &format!("reference = {:?}\n\n[data]", policy.display().to_string()),
        1,
    );
    text.push_str(lora);
    std::fs::write(&config, text).unwrap();
    let out = ganpo_train(&config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("model.reference"),
        "{err}"
    );
    assert!(!other.path().join("out").exists());
}

#[test]
fn a_second_run_on_a_directory_in_use_is_refused_and_a_killed_run_leaves_it_free() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &standard(), "max_steps = 1000000");
    let mut first = spawn_holding(
        &["train", "--config", config.to_str().unwrap()],
        &dir.path().join("out/.ganpo.lock"),
    );
    let out = ganpo_train(&config, &["--set", "train.max_steps=2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!out.status.success());
    assert!(
        err.contains("in use by another ganpo process")
            && err.contains(&format!("PID {}", first.id())),
        "{err}"
    );
    // Killed, the first run holds nothing: a new run on the directory goes ahead.
    let out = ganpo_train(&config, &["--set", "train.max_steps=2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn resuming_from_an_incomplete_checkpoint_names_it_and_the_complete_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &standard(), "max_steps = 4\nsave_steps = 2");
    let out = ganpo_train(&config, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = dir.path().join("out");
    // A deletion interrupted before the rename-first rotation: only a weights file is left.
    std::fs::remove_file(run.join("checkpoint-4/trainer_state.json")).unwrap();
    for target in [run.clone(), run.join("checkpoint-4")] {
        let out = ganpo_train(
            &config,
            &[
                "--resume",
                target.to_str().unwrap(),
                "--set",
                "train.max_steps=6",
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("checkpoint-4: an incomplete checkpoint") && err.contains("checkpoint-2"),
            "{err}"
        );
    }
}

/// A learning rate that diverges at step 4 (warm-up to 1e12): the checkpoints written during the
/// non-finite streak do not rotate away the last finite one; the error names it; resuming from
/// it with another learning rate is refused until the change is allowed by name, then recorded.
#[test]
fn a_diverging_run_keeps_its_last_finite_checkpoint_and_resumes_with_a_changed_lr() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &standard(),
        "max_steps = 10\nsave_steps = 2\nsave_total_limit = 2\n\
         max_nonfinite_steps = 4\nmax_grad_norm = 1e300\nweight_decay = 0\n\
         warmup_steps = 1000\nscheduler = \"constant\"",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("logging_steps = 4", "logging_steps = 1"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ganpo"));
        cmd.current_dir(dir.path())
            .args(["train", "--config", config.to_str().unwrap()])
            .args(extra)
            .env("RUST_BACKTRACE", "0");
        cmd.output().unwrap()
    };
    let first = run(&["--set", "train.lr=1e12"]);
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(!first.status.success(), "{err}");
    let losses = train_losses(&out.join("metrics.jsonl"));
    let first_bad = losses.iter().find(|(_, l)| l.is_none()).unwrap().0;
    assert!((3..=6).contains(&first_bad), "{losses:?}");
    // The newest checkpoint before the streak survived the rotation that kept two newer ones.
    let last_good = 2 * ((first_bad - 1) / 2);
    let kept: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    let good = format!("checkpoint-{last_good}");
    assert!(kept.contains(&good), "{kept:?}");
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(
        err.contains(&format!("out/{good}")) && err.contains("--allow-change train.lr"),
        "{err}"
    );
    let resume = format!("out/{good}");

    // Resuming there with a learning rate of 1e-3 and `extra` arguments.
    let resume_with = |extra: &[&str]| {
        let mut args = vec!["--resume", &resume, "--set", "train.lr=1e-3"];
        args.extend_from_slice(extra);
        run(&args)
    };
    // Another learning rate alone is refused, naming the key and the way to allow it.
    let refused = resume_with(&[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("train.lr (checkpoint: 1000000000000.0, now: 0.001)")
            && err.contains("--allow-change"),
        "{err}"
    );
    // A misspelt key is no permission.
    let typo = resume_with(&["--allow-change", "train.lrr"]);
    let err = String::from_utf8_lossy(&typo.stderr);
    assert!(
        err.contains("--allow-change train.lrr: no such setting"),
        "{err}"
    );
    // Allowed by name, other changes are still refused.
    let other = resume_with(&["--set", "loss.beta=0.25", "--allow-change", "train.lr"]);
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        !other.status.success() && err.contains("loss.beta"),
        "{err}"
    );
    assert!(!err.contains("train.lr (checkpoint"), "{err}");

    let resumed = resume_with(&["--allow-change", "train.lr"]);
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{err}");
    assert!(
        err.contains("changed on purpose (--allow-change): train.lr"),
        "{err}"
    );
    let losses = train_losses(&out.join("metrics.jsonl"));
    assert_eq!(losses.len(), 10, "{losses:?}");
    assert!(
        losses.iter().all(|(_, l)| l.is_some_and(f64::is_finite)),
        "{losses:?}"
    );
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("checkpoint-10/trainer_state.json")).unwrap(),
    )
    .unwrap();
    let changes = meta["config_changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["key"], "train.lr");
    assert_eq!(changes[0]["step"], last_good);
    assert_eq!(changes[0]["was"], "1000000000000.0");
    assert_eq!(changes[0]["now"], "0.001");
    assert_eq!(meta["state"]["nonfinite_consecutive"], 0);
}

/// A disk that fills up while a checkpoint is written (a 256 KiB tmpfs in a user and mount
/// namespace of its own): the run stops with one plain sentence naming the file, and leaves no
/// checkpoint directory, whole or partial. Skipped where `unshare` cannot mount.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_loses_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &standard(), "max_steps = 2\nsave_steps = 1");
    let out = dir.path().join("small");
    std::fs::create_dir(&out).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=256k tmpfs {out} || exit 77; \
         {bin} train --config {config} --set train.output_dir='\"{out}\"'; status=$?; \
         ls -a {out}; exit $status",
        out = out.display(),
        bin = env!("CARGO_BIN_EXE_ganpo"),
        config = config.display(),
    );
    let result = Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .env("RUST_BACKTRACE", "0")
        .output();
    let Ok(result) = result else {
        eprintln!("no unshare here: nothing to check");
        return;
    };
    if result.status.code() == Some(77)
        || String::from_utf8_lossy(&result.stderr).contains("unshare:")
    {
        eprintln!("cannot mount a tmpfs here: nothing to check");
        return;
    }
    let err = String::from_utf8_lossy(&result.stderr);
    let listing = String::from_utf8_lossy(&result.stdout);
    assert!(!result.status.success(), "{err}");
    assert!(err.contains("no space left on device"), "{err}");
    assert!(!err.contains("Unknown(") && !err.contains("Io {"), "{err}");
    assert!(
        err.contains("checkpoint-1.partial-"),
        "the message names the file: {err}"
    );
    assert!(!listing.contains("checkpoint-"), "{listing}");
}

/// A chat template that doubles a string 45 times (minijinja bounds loops and output, not
/// concatenation) ends `ganpo train` with exit status 1 and a message naming the template file,
/// not with an abort, and before anything is written.
#[test]
fn a_template_that_doubles_a_string_ends_in_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_fixture("policy", &model);
    let jinja = model.join("chat_template.jinja");
    std::fs::write(
        &jinja,
        "{% set ns = namespace(s='x') %}{% for i in range(45) %}{% set ns.s = ns.s ~ ns.s %}\
         {% endfor %}{{ ns.s }}",
    )
    .unwrap();
    let data = dir.path().join("chat.jsonl");
    std::fs::write(
        &data,
        r#"{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "yes"}], "rejected": [{"role": "assistant", "content": "no"}]}"#,
    )
    .unwrap();
    let config = write_config(dir.path(), &[data], "max_steps = 1");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("{:?}", fixtures().join("policy").display().to_string()),
        &format!("{:?}", model.display().to_string()),
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ganpo"))
        .current_dir(dir.path())
        .args(["train", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&jinja.display().to_string()) && err.contains("runaway template"),
        "{err}"
    );
    assert!(!dir.path().join("out").exists());
}
