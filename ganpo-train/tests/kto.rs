//! KTO in the trainer: unpaired examples with their KL rows, TRL's metrics, GANPO on desirable
//! against undesirable latents, a precomputed reference, data of the wrong kind refused.

mod common;

use std::path::Path;

use burn::prelude::*;
use ganpo_core::ganpo::GanpoConfig;
use ganpo_core::{LossKind, PreferenceLoss};
use ganpo_models::{Lm, load_model};
use ganpo_train::config::RunConfig;
use ganpo_train::data::PreferenceDataset;
use ganpo_train::train::{LogEntry, TrainError, Trainer};

use common::{B, dataset, fingerprint, fixtures, run, serial};

/// KTO on `data` (a fixture file), 4 examples a batch in file order, 3 steps.
fn config(out: &Path, data: &str, ganpo: Option<GanpoConfig>) -> RunConfig {
    let mut c = RunConfig::default();
    c.model.path = fixtures().join("policy");
    c.data.train = vec![fixtures().join("data").join(data)];
    c.data.shuffle = false;
    c.loss = PreferenceLoss {
        beta: 0.5,
        desirable_weight: Some(1.2),
        ..PreferenceLoss::single(LossKind::Kto)
    };
    c.ganpo = ganpo;
    c.train.output_dir = out.to_path_buf();
    c.train.lr = 3e-3;
    c.train.batch_size = 4;
    c.train.max_steps = Some(3);
    c.train.logging_steps = 1;
    c
}

fn ganpo(adv_weight: f64) -> GanpoConfig {
    let mut g: GanpoConfig = toml::from_str(
        "discriminator = { kind = \"transformer\", hidden = 16, layers = 1, heads = 2, ff = 32, dropout = 0.0 }",
    )
    .unwrap();
    g.adv_weight = adv_weight;
    g
}

fn trainer(config: RunConfig) -> Trainer<B, Lm<B>> {
    let device = Default::default();
    let policy = load_model::<B>(&config.model.path, &device).unwrap().model;
    let (train, pad) = dataset(&config).unwrap();
    let eval = train.subset(&[0, 1, 2, 3]);
    Trainer::new(config, policy, None, train, eval, pad, device).unwrap()
}

fn metric(log: &LogEntry, name: &str) -> Option<f64> {
    log.metrics.iter().find(|(n, _)| n == name).map(|m| m.1)
}

#[test]
fn kto_trains_with_trls_metrics_and_the_regulariser_reaches_the_policy() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = "unpaired.jsonl";
    let mut plain = trainer(config(&dir.path().join("kto"), data, None));
    let mut zero = trainer(config(&dir.path().join("zero"), data, Some(ganpo(0.0))));
    let mut full = trainer(config(&dir.path().join("ganpo"), data, Some(ganpo(1.0))));
    let before = fingerprint(&plain);
    let (a, b, c) = (run(&mut plain), run(&mut zero), run(&mut full));
    assert_ne!(fingerprint(&plain), before, "training changed nothing");
    // adv_weight 0 is plain KTO, bit for bit; with adv_weight 1 the generator term moves the
    // policy elsewhere: its gradient reaches the policy.
    assert_eq!(fingerprint(&plain), fingerprint(&zero));
    assert_ne!(fingerprint(&plain), fingerprint(&full));
    let trained = |logs: &[LogEntry]| -> Vec<LogEntry> {
        logs.iter()
            .filter(|l| l.split == "train")
            .cloned()
            .collect()
    };
    for (x, y) in trained(&a).iter().zip(&trained(&b)) {
        assert_eq!(metric(x, "loss"), metric(y, "loss"));
    }
    // The fixture's first batch holds both labels: every metric of TRL's KTOTrainer is there.
    let first = &trained(&c)[0];
    for name in [
        "loss",
        "kl",
        "entropy",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "logits/chosen",
        "logits/rejected",
        "gan/gen_loss",
        "gan/d_chosen_loss",
        "gan/d_rejected_loss",
    ] {
        let v = metric(first, name).unwrap_or_else(|| panic!("no {name} in {first:?}"));
        assert!(v.is_finite(), "{name} = {v}");
    }
    assert!(metric(first, "kl").unwrap() >= 0.0, "TRL clamps kl at 0");
    let eval = c.iter().find(|l| l.split == "eval").expect("an evaluation");
    assert!(metric(eval, "eval_kl").is_some(), "{eval:?}");
}

#[test]
fn batches_of_one_label_take_no_ganpo_term() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    // Pairs split as TRL splits them: 12 desirable rows, then 12 undesirable ones, so in file
    // order the first three batches of 4 are all desirable.
    let mut t = trainer(config(dir.path(), "standard.jsonl", Some(ganpo(1.0))));
    let before = t.ganpo().unwrap().clone();
    let logs = run(&mut t);
    for log in logs.iter().filter(|l| l.split == "train") {
        assert!(metric(log, "rewards/chosen").unwrap().is_finite());
        assert_eq!(metric(log, "rewards/rejected"), None, "{log:?}");
        assert_eq!(metric(log, "gan/gen_loss"), None, "{log:?}");
        assert_eq!(metric(log, "gan/d_chosen_loss"), None, "{log:?}");
    }
    // No discriminator step was taken: they are as initialized.
    let weights = |g: &ganpo_core::Ganpo<B>| -> Vec<f32> {
        let w = g.chosen.clone().into_record();
        let bytes = burn::record::Recorder::<B>::record(
            &burn::record::BinBytesRecorder::<burn::record::FullPrecisionSettings>::default(),
            w,
            (),
        )
        .unwrap();
        bytes.iter().map(|&b| b as f32).collect()
    };
    assert_eq!(weights(&before), weights(t.ganpo().unwrap()));
}

#[test]
fn a_precomputed_reference_gives_the_live_references_metrics() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut live = trainer(config(&dir.path().join("a"), "unpaired.jsonl", None));
    let mut c = config(&dir.path().join("b"), "unpaired.jsonl", None);
    c.train.precompute_ref_logps = true;
    let mut pre = trainer(c);
    assert!(!pre.holds_reference());
    let (a, b) = (run(&mut live), run(&mut pre));
    let mut compared = 0;
    for (x, y) in a.iter().zip(&b) {
        for (name, v) in &x.metrics {
            if name.contains("kl") || name.contains("rewards") || name.contains("loss") {
                let w = metric(y, name).unwrap();
                assert!((v - w).abs() < 1e-4, "{name}: {v} vs {w}");
                compared += 1;
            }
        }
    }
    assert!(compared > 15, "{compared}");
}

#[test]
fn data_of_the_other_kind_is_refused() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    // Unpaired examples for a paired loss: named by file and line when the data is built.
    let mut c = config(dir.path(), "unpaired.jsonl", None);
    c.loss = PreferenceLoss::default();
    let err = dataset(&c).unwrap_err().to_string();
    assert!(
        err.contains("unpaired.jsonl:1") && err.contains("loss `sigmoid` reads pairs"),
        "{err}"
    );
    // A library user's paired dataset given to KTO.
    let paired = config(dir.path(), "standard.jsonl", None);
    let (pairs, pad) = {
        let mut dpo = paired.clone();
        dpo.loss = PreferenceLoss::default();
        dataset(&dpo).unwrap()
    };
    let policy = load_model::<B>(&paired.model.path, &device).unwrap().model;
    let eval = PreferenceDataset::default();
    let err = Trainer::<B, Lm<B>>::new(paired, policy, None, pairs, eval, pad, device)
        .err()
        .expect("refused");
    assert!(
        matches!(err, TrainError::DataKind { split: "train", .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("loss `kto` reads unpaired examples"),
        "{err}"
    );
    // One example a batch has no other completion to form its KL row with.
    let mut single = config(dir.path(), "unpaired.jsonl", None);
    single.train.batch_size = 1;
    let err = single.validate().unwrap_err().to_string();
    assert!(err.contains("train.batch_size"), "{err}");
}
