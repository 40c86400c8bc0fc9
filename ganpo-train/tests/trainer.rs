//! The trainer as a library: GANPO with adv_weight 0 is plain DPO, SimPO + GANPO runs, an
//! interrupted and resumed run equals an uninterrupted one, mismatched checkpoints are refused.

mod common;

use std::path::Path;

use burn::prelude::*;
use ganpo_core::ganpo::GanpoConfig;
use ganpo_core::{LossKind, PreferenceLoss};
use ganpo_models::{CausalLm, LayerStack, Lm, load_model};
use ganpo_train::config::ComputeDtype;
use ganpo_train::config::RunConfig;
use ganpo_train::data::{PairTokenizer, PreferenceDataset, load_records};
use ganpo_train::train::{LogEntry, Trainer};

use common::{B, fingerprint, fixtures, run, serial};

fn config(out: &Path, ganpo: Option<GanpoConfig>) -> RunConfig {
    let mut c = RunConfig::default();
    c.model.path = fixtures().join("policy");
    c.data.train = vec![fixtures().join("data/standard.jsonl")];
    c.loss.beta = 0.5;
    c.ganpo = ganpo;
    c.train.output_dir = out.to_path_buf();
    c.train.lr = 3e-3;
    c.train.batch_size = 3;
    c.train.max_steps = Some(6);
    c.train.logging_steps = 1;
    c
}

fn ganpo_config() -> GanpoConfig {
    toml::from_str(
        "adv_weight = 1.0\n\
         discriminator = { kind = \"transformer\", hidden = 16, layers = 1, heads = 2, ff = 32, dropout = 0.1 }",
    )
    .unwrap()
}

fn data(config: &RunConfig) -> (PreferenceDataset, u32) {
    let tok = ganpo_models::Tokenizer::from_dir(&config.model.path).unwrap();
    let records = load_records(&config.data.train, false).unwrap();
    let pt = PairTokenizer::new(&tok).unwrap();
    let mut skipped = Vec::new();
    let d = PreferenceDataset::build(
        &records.records,
        &pt,
        &config.data.truncation(),
        false,
        &mut skipped,
    )
    .unwrap();
    (d, tok.pad_token_id.unwrap())
}

fn trainer(config: RunConfig) -> Trainer<B, Lm<B>> {
    let device = Default::default();
    let policy = load_model::<B>(&config.model.path, &device).unwrap().model;
    let (train, pad) = data(&config);
    let eval = train.subset(&[0, 1, 2]);
    Trainer::new(config, policy, None, train, eval, pad, device).unwrap()
}

/// Runs `t` as `ganpo train` would until its log line of step `killed_at`, where the process
/// dies (a panic here): what it left is its checkpoints.
fn killed_at(mut t: Trainer<B, Lm<B>>, killed_at: usize) {
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        t.fit(|e| assert!(e.step < killed_at, "killed"))
    }));
    assert!(died.is_err(), "the run ended before step {killed_at}");
}

#[test]
fn adv_weight_zero_is_plain_dpo() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut dpo = trainer(config(&dir.path().join("dpo"), None));
    let mut zero = ganpo_config();
    zero.adv_weight = 0.0;
    let mut ganpo = trainer(config(&dir.path().join("ganpo"), Some(zero)));
    let before = fingerprint(&dpo);
    let (a, b) = (run(&mut dpo), run(&mut ganpo));
    assert_ne!(fingerprint(&dpo), before, "training changed nothing");
    assert_eq!(fingerprint(&dpo), fingerprint(&ganpo));
    let get = |l: &LogEntry, k: &str| l.metrics.iter().find(|(n, _)| n == k).unwrap().1;
    for (x, y) in a.iter().zip(&b).filter(|(x, _)| x.split == "train") {
        assert_eq!(get(x, "loss"), get(y, "loss"));
        assert!(y.metrics.iter().any(|(n, _)| n == "gan/d_chosen_loss"));
    }
}

#[test]
fn simpo_with_ganpo_trains_without_reference_logps() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), Some(ganpo_config()));
    c.loss = PreferenceLoss {
        beta: 2.0,
        simpo_gamma: 0.5,
        ..PreferenceLoss::single(LossKind::Simpo)
    };
    c.train.precompute_ref_logps = true;
    let mut t = trainer(c);
    assert!(t.holds_reference(), "GANPO needs the reference latents");
    let logs = run(&mut t);
    let last = logs.iter().rfind(|l| l.split == "train").unwrap();
    for name in [
        "loss",
        "gan/gen_loss",
        "gan/d_chosen_loss",
        "rewards/margins",
    ] {
        let v = last.metrics.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(v.is_finite(), "{name} = {v}");
    }
}

#[test]
fn precomputed_reference_logps_match_and_free_the_reference() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut live = trainer(config(&dir.path().join("a"), None));
    let mut c = config(&dir.path().join("b"), None);
    c.train.precompute_ref_logps = true;
    let mut pre = trainer(c);
    assert!(!pre.holds_reference());
    let (a, b) = (run(&mut live), run(&mut pre));
    let get = |l: &LogEntry, k: &str| l.metrics.iter().find(|(n, _)| n == k).unwrap().1;
    for (x, y) in a.iter().zip(&b) {
        let key = if x.split == "train" {
            "rewards/margins"
        } else {
            "eval_rewards/margins"
        };
        assert!(
            (get(x, key) - get(y, key)).abs() < 1e-4,
            "{key}: {} vs {}",
            get(x, key),
            get(y, key)
        );
    }
}

/// Runs `make`'s configuration (checkpoints every 3 steps) whole, and again killed at step 4
/// and resumed from its checkpoint-3: the resumed run must log the same metrics from step 4 on
/// and end at the same weights. Returns the split run's output folder and that checkpoint.
fn assert_resumes_exactly(
    dir: &Path,
    make: impl Fn(&Path) -> RunConfig,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut full = trainer(make(&dir.join("full")));
    let full_logs = run(&mut full);

    let out = dir.join("split");
    killed_at(trainer(make(&out)), 4);
    let ckpt = out.join("checkpoint-3");
    let mut resumed = trainer(make(&out));
    resumed.resume(&ckpt).unwrap();
    assert_eq!(resumed.state().step, 3);
    let logs = run(&mut resumed);
    let tail: Vec<_> = full_logs.iter().filter(|l| l.step > 3).collect();
    assert_eq!(tail.len(), logs.len());
    assert_eq!((logs[0].step, logs[0].split), (4, "train"));
    for (x, y) in tail.iter().zip(&logs) {
        assert_eq!((x.step, x.split), (y.step, y.split));
        let diff: Vec<_> = x
            .metrics
            .iter()
            .zip(&y.metrics)
            .filter(|(a, b)| a != b)
            .collect();
        assert!(diff.is_empty(), "step {}: {diff:?}", x.step);
    }
    assert!(
        fingerprint(&resumed) == fingerprint(&full),
        "weights differ"
    );
    (out, ckpt)
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let make = |out: &Path| {
        let mut c = config(out, Some(ganpo_config()));
        c.train.grad_accum = 2;
        c.train.warmup_steps = Some(2);
        // A checkpoint between two log lines: the resumed run's first line must still average
        // steps 1 to 4, from the metrics the checkpoint carries.
        c.train.save_steps = Some(3);
        c.train.logging_steps = 4;
        c
    };
    let (out, ckpt) = assert_resumes_exactly(dir.path(), make);

    // A checkpoint of another configuration or missing a file is refused, saying why.
    let mut other = make(&out);
    other.loss.beta = 0.25;
    let e = trainer(other).resume(&ckpt).unwrap_err().to_string();
    assert!(
        e.contains("loss.beta") && e.contains("cannot resume"),
        "{e}"
    );
    std::fs::remove_file(ckpt.join("ganpo.mpk")).unwrap();
    let e = trainer(make(&out)).resume(&ckpt).unwrap_err().to_string();
    assert!(
        e.contains("not a usable checkpoint") && e.contains("ganpo"),
        "{e}"
    );
}

/// The metric `name` of the last evaluation in `logs`.
fn last_eval(logs: &[LogEntry], name: &str) -> f64 {
    let eval = logs
        .iter()
        .rev()
        .find(|l| l.split == "eval")
        .expect("an evaluation");
    eval.metrics
        .iter()
        .find(|(n, _)| n == name)
        .expect("the metric")
        .1
}

#[test]
fn tr_dpo_moves_the_reference_to_the_policy() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let make = |out: &Path, sync: bool| {
        let mut c = config(out, None);
        c.train.max_steps = Some(3);
        if sync {
            // alpha 1 every step: after each step the reference is the policy.
            c.train.sync_ref_model = true;
            c.train.ref_model_mixup_alpha = Some(1.0);
            c.train.ref_model_sync_steps = Some(1);
        }
        c
    };
    let synced = run(&mut trainer(make(&dir.path().join("synced"), true)));
    let frozen = run(&mut trainer(make(&dir.path().join("frozen"), false)));
    // The final evaluation compares the policy with itself: no reward, DPO's loss at ln 2.
    let margin = last_eval(&synced, "eval_rewards/margins");
    let loss = last_eval(&synced, "eval_loss");
    assert!(margin.abs() < 1e-6, "{margin}");
    assert!((loss - std::f64::consts::LN_2).abs() < 1e-6, "{loss}");
    // With a frozen reference the policy has moved away from it.
    let margin = last_eval(&frozen, "eval_rewards/margins");
    assert!(margin.abs() > 1e-3, "{margin}");
    // The first step is the same either way (the reference is synced after it).
    assert_eq!(synced[0].metrics, frozen[0].metrics);
}

#[test]
fn a_tr_dpo_run_with_bco_pair_resumes_exactly_with_its_synced_reference() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let make = |out: &Path| {
        let mut c = config(out, Some(ganpo_config()));
        c.loss = PreferenceLoss {
            beta: 0.5,
            ..PreferenceLoss::single(LossKind::BcoPair)
        };
        c.train.sync_ref_model = true;
        c.train.ref_model_mixup_alpha = Some(0.5);
        c.train.ref_model_sync_steps = Some(2);
        // Synced at step 2, saved at 3: the resumed run needs the synced reference.
        c.train.save_steps = Some(3);
        c
    };
    let (out, ckpt) = assert_resumes_exactly(dir.path(), make);
    assert!(ckpt.join("reference.mpk").is_file());

    // Without its reference the checkpoint is refused, naming the file.
    std::fs::remove_file(ckpt.join("reference.mpk")).unwrap();
    let e = trainer(make(&out)).resume(&ckpt).unwrap_err().to_string();
    assert!(e.contains("reference"), "{e}");
}

#[test]
fn tr_dpo_settings_are_checked_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), None);
    c.train.ref_model_mixup_alpha = Some(0.6);
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("train.ref_model_mixup_alpha") && e.contains("sync_ref_model"),
        "{e}"
    );
    c.train.sync_ref_model = true;
    c.validate().unwrap();
    c.train.ref_model_mixup_alpha = Some(1.5);
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("train.ref_model_mixup_alpha") && e.contains("[0, 1]"),
        "{e}"
    );
    c.train.ref_model_mixup_alpha = None;
    c.train.precompute_ref_logps = true;
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("train.sync_ref_model") && e.contains("precompute_ref_logps"),
        "{e}"
    );
    c.train.precompute_ref_logps = false;
    c.lora = Some(Default::default());
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("train.sync_ref_model") && e.contains("LoRA"),
        "{e}"
    );
}

#[test]
fn cached_reference_latents_match_live_ones_and_free_the_reference() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let make = |out: &Path, cache: bool| {
        let mut c = config(out, Some(ganpo_config()));
        c.train.cache_ref_latents = cache;
        c.train.batch_size = 4;
        c
    };
    let mut live = trainer(make(&dir.path().join("live"), false));
    let mut cached = trainer(make(&dir.path().join("cached"), true));
    assert!(live.holds_reference());
    assert!(
        !cached.holds_reference(),
        "every reference output is cached"
    );
    let (a, b) = (run(&mut live), run(&mut cached));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        for ((name, u), (_, v)) in x.metrics.iter().zip(&y.metrics) {
            assert!(
                (u - v).abs() <= 1e-4 * (1.0 + u.abs()),
                "step {} {name}: {u} vs {v}",
                x.step
            );
        }
    }
    let mut bad = make(&dir.path().join("bad"), true);
    bad.ganpo = None;
    let e = bad.validate().unwrap_err().to_string();
    assert!(
        e.contains("train.cache_ref_latents") && e.contains("[ganpo]"),
        "{e}"
    );
}

#[test]
fn mixed_precision_keeps_f32_masters_and_tracks_f32_training() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let make = |out: &Path, dtype: ComputeDtype| {
        let mut c = config(out, Some(ganpo_config()));
        c.train.compute_dtype = dtype;
        c
    };
    let mut full = trainer(make(&dir.path().join("f32"), ComputeDtype::F32));
    let mut mixed = trainer(make(&dir.path().join("f64"), ComputeDtype::F64));
    let (a, b) = (run(&mut full), run(&mut mixed));
    let get = |l: &LogEntry, k: &str| l.metrics.iter().find(|(n, _)| n == k).unwrap().1;
    let mut differs = false;
    for (x, y) in a.iter().zip(&b).filter(|(x, _)| x.split == "train") {
        for key in ["loss", "rewards/margins", "gan/gen_loss", "grad_norm"] {
            let (u, v) = (get(x, key), get(y, key));
            assert!(
                (u - v).abs() <= 1e-3 * (1.0 + u.abs()),
                "step {} {key}: {u} vs {v}",
                x.step
            );
            differs |= u != v;
        }
    }
    assert!(differs, "the f64 compute path ran in f32");
    // The master weights stay f32 (the optimizer never sees the compute copy).
    let device = Default::default();
    let ids = Tensor::<B, 2, Int>::from_data([[5, 17, 42]], &device);
    let mask = Tensor::<B, 2, Bool>::from_data([[true; 3]], &device);
    let logits = mixed.policy().forward(ids, mask).logits;
    assert_eq!(logits.dtype(), burn::tensor::DType::F32);

    let mut bad = make(&dir.path().join("bad"), ComputeDtype::Bf16);
    bad.train.backend = "cpu".into();
    let e = bad.validate().unwrap_err().to_string();
    assert!(
        e.contains("train.compute_dtype") && e.contains("wgpu or cuda"),
        "{e}"
    );
}

/// Gemma 2 and Gemma 3 (the tiny transformers checkpoints of ganpo-models' fixtures) train with
/// DPO + GANPO like any other architecture: the held-in preference margin grows from 0, and the
/// discriminators see the (soft-capped, sliding-window) model's latents.
#[test]
fn gemma_trains_with_dpo_and_ganpo() {
    let _guard = serial();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ganpo-models/tests/fixtures");
    for name in ["gemma2", "gemma3"] {
        let device = Default::default();
        let policy = load_model::<B>(&models.join(name), &device).unwrap().model;
        assert_eq!(policy.num_layers(), 3);
        let pairs = ganpo_train::bench::random_pairs(policy.vocab_size(), 12, 4, 7);
        let tmp = tempfile::tempdir().unwrap();
        let mut c = config(tmp.path(), Some(ganpo_config()));
        c.train.lr = 2e-3;
        c.train.batch_size = 4;
        c.train.warmup_ratio = 0.0;
        c.train.max_steps = Some(8);
        let mut t = Trainer::new(c, policy, None, pairs.clone(), pairs, 0, device).unwrap();
        let margin = |m: &[(String, f64)]| {
            m.iter()
                .find(|(k, _)| k == "eval_rewards/margins")
                .unwrap()
                .1
        };
        assert_eq!(margin(&t.evaluate().unwrap()), 0.0, "{name}");
        let mut last = Vec::new();
        for _ in 0..8 {
            last = t.step().unwrap();
        }
        assert!(
            last.iter()
                .any(|(k, v)| k == "gan/gen_loss" && v.is_finite())
        );
        let after = margin(&t.evaluate().unwrap());
        assert!(after > 0.5, "{name}: margin after 8 steps {after}");
    }
}

#[test]
fn a_resume_whose_start_model_changed_is_refused() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut c = config(&out, None);
    c.train.max_steps = Some(2);
    c.train.save_steps = Some(2);
    run(&mut trainer(c.clone()));
    let ckpt = out.join("checkpoint-2");
    // The same configuration and data, other weights at model.path (the reference fixture's).
    let device = Default::default();
    let replaced = load_model::<B>(&fixtures().join("reference"), &device)
        .unwrap()
        .model;
    let (train, pad) = data(&c);
    let eval = train.subset(&[0, 1, 2]);
    let e = Trainer::new(c.clone(), replaced, None, train, eval, pad, device)
        .unwrap()
        .resume(&ckpt)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("start model differs") && e.contains("model.path") && e.contains("policy"),
        "{e}"
    );
    // The unchanged start model resumes.
    trainer(c).resume(&ckpt).unwrap();
}

/// Checkpoint files carry SHA-256s in `trainer_state.json`: a flipped byte in `policy.mpk` (which
/// would load silently: it is still a valid record) is refused, naming the file.
#[test]
fn a_checkpoint_file_with_a_flipped_byte_is_refused() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut c = config(&out, None);
    c.train.max_steps = Some(1);
    let mut t = trainer(c.clone());
    t.step().unwrap();
    let ckpt = t.save_checkpoint().unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("trainer_state.json")).unwrap())
            .unwrap();
    let sums = meta["checksums"].as_object().unwrap();
    assert!(
        sums.contains_key("policy.mpk") && sums.contains_key("policy_optimizer.bin"),
        "{sums:?}"
    );
    let path = ckpt.join("policy.mpk");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 100; // inside the last tensor's values
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let e = trainer(c.clone()).resume(&ckpt).unwrap_err().to_string();
    assert!(
        e.contains("policy.mpk is damaged") && e.contains("SHA-256"),
        "{e}"
    );
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    trainer(c).resume(&ckpt).unwrap();
}
