//! Activation checkpointing (`train.gradient_checkpointing`): the same losses, gradient norms
//! and weights as the run without it (f32 CPU), for full fine-tuning and LoRA, with one and with
//! several micro-batches; refused for a model that cannot recompute its layers.

use std::path::Path;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::prelude::*;
use ganpo_models::lora::{self, LoraConfig, TargetModules};
use ganpo_models::{CausalLm, Lm, load_model};
use ganpo_train::config::RunConfig;
use ganpo_train::data::{PairTokenizer, PreferenceDataset, load_records};
use ganpo_train::toy::TinyLmConfig;
use ganpo_train::train::{LogEntry, TrainError, Trainer};

type B = Autodiff<NdArray>;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn config(out: &Path, checkpointing: bool, grad_accum: usize, lora: bool) -> RunConfig {
    let mut c = RunConfig::default();
    c.model.path = fixtures().join("policy");
    c.data.train = vec![fixtures().join("data/standard.jsonl")];
    c.loss.beta = 0.5;
    c.ganpo = Some(
        toml::from_str(
            "adv_weight = 1.0\n\
             discriminator = { kind = \"transformer\", hidden = 16, layers = 1, heads = 2, ff = 32, dropout = 0.0 }",
        )
        .unwrap(),
    );
    c.lora = lora.then(|| LoraConfig {
        r: 4,
        alpha: 8.0,
        target_modules: Some(TargetModules::Pattern("all-linear".into())),
        ..Default::default()
    });
    c.train.output_dir = out.to_path_buf();
    c.train.lr = 1e-2;
    c.train.batch_size = 2;
    c.train.grad_accum = grad_accum;
    c.train.max_steps = Some(3);
    c.train.logging_steps = 1;
    c.train.gradient_checkpointing = checkpointing;
    c
}

fn trainer(config: RunConfig) -> Result<Trainer<B, Lm<B>>, TrainError> {
    let device = Default::default();
    let mut policy = load_model::<B>(&config.model.path, &device).unwrap().model;
    if let Some(l) = &config.lora {
        policy = lora::attach(policy, l, config.train.seed).unwrap().0;
    }
    let tok = ganpo_models::Tokenizer::from_dir(&config.model.path).unwrap();
    let records = load_records(&config.data.train, false).unwrap();
    let data = PreferenceDataset::build(
        &records.records,
        &PairTokenizer::new(&tok).unwrap(),
        &config.data.truncation(),
        false,
        &mut Vec::new(),
    )
    .unwrap();
    let pad = tok.pad_token_id.unwrap();
    Trainer::new(
        config,
        policy,
        None,
        data,
        PreferenceDataset::default(),
        pad,
        device,
    )
}

fn logits(t: &Trainer<B, Lm<B>>) -> Vec<f32> {
    let device = Default::default();
    let ids = Tensor::<NdArray, 2, Int>::from_data([[5, 17, 42, 99, 3, 250]], &device);
    let mask = Tensor::<NdArray, 2, Bool>::from_data([[true; 6]], &device);
    let out = t.policy().valid().forward(ids, mask).logits;
    out.into_data().to_vec().unwrap()
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn checkpointed_runs_equal_plain_runs() {
    let _turn = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    for (grad_accum, lora) in [(1, false), (2, false), (1, true)] {
        let run = |checkpointing: bool| {
            let out = dir
                .path()
                .join(format!("{grad_accum}-{lora}-{checkpointing}"));
            let mut t = trainer(config(&out, checkpointing, grad_accum, lora)).unwrap();
            let mut logs: Vec<LogEntry> = Vec::new();
            t.fit(|e| logs.push(e.clone())).unwrap();
            (logs, logits(&t))
        };
        let (plain, plain_logits) = run(false);
        let (ckpt, ckpt_logits) = run(true);
        let case = format!("grad_accum {grad_accum}, lora {lora}");
        assert_eq!(plain.len(), ckpt.len(), "{case}");
        for (a, b) in plain.iter().zip(&ckpt) {
            // Step 1 from the same weights: the same losses and gradient norm (1e-6 relative);
            // later steps start from weights that differ by the order gradients were summed in.
            let tolerance = if a.step == 1 { 1e-6 } else { 1e-5 };
            for ((name, x), (other, y)) in a.metrics.iter().zip(&b.metrics) {
                assert_eq!(name, other);
                assert!(
                    relative(*x, *y) < tolerance || (x - y).abs() < 1e-7,
                    "{case}, step {}: {name} {x} vs {y}",
                    a.step
                );
            }
            let norm = |l: &LogEntry| l.metrics.iter().find(|(n, _)| n == "grad_norm").unwrap().1;
            assert!(norm(a) > 1e-3, "{case}: gradients reach the policy");
        }
        let d = plain_logits
            .iter()
            .zip(&ckpt_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            d < 1e-4,
            "{case}: weights after 3 steps differ (logits by {d})"
        );
    }
}

#[test]
fn a_model_that_cannot_recompute_is_refused() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), true, 1, false);
    c.ganpo = None;
    let tiny = TinyLmConfig::default().init::<B>(&device);
    let mut data = PreferenceDataset::default();
    data.pairs.push(ganpo_train::data::TokenizedPair {
        prompt: vec![1, 2],
        chosen: vec![3],
        rejected: vec![4],
    });
    data.sources.push(("x".into(), 1));
    let e = Trainer::new(c, tiny, None, data, PreferenceDataset::default(), 0, device)
        .err()
        .unwrap();
    assert!(matches!(e, TrainError::CannotCheckpoint), "{e}");
    assert!(e.to_string().contains("train.gradient_checkpointing"));
}
