//! LoRA runs of the trainer: only the adapters move, the reference is the start model exactly
//! (no copy), optimizer state exists for the adapters alone, checkpoints hold the adapters and
//! resume exactly, and misuse is refused.

use std::path::Path;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::prelude::*;
use ganpo_models::lora::{self, LoraConfig, TargetModules};
use ganpo_models::{CausalLm, Decoder, Lm, load_model};
use ganpo_train::config::RunConfig;
use ganpo_train::data::{PairTokenizer, PreferenceDataset, load_records};
use ganpo_train::train::{LogEntry, TrainError, Trainer, trainable_params};

type B = Autodiff<NdArray>;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn config(out: &Path) -> RunConfig {
    let mut c = RunConfig::default();
    c.model.path = fixtures().join("policy");
    c.data.train = vec![fixtures().join("data/standard.jsonl")];
    c.loss.beta = 0.5;
    c.ganpo = Some(
        toml::from_str(
            "adv_weight = 1.0\n\
             discriminator = { kind = \"transformer\", hidden = 16, layers = 1, heads = 2, ff = 32, dropout = 0.1 }",
        )
        .unwrap(),
    );
    c.lora = Some(LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.1,
        target_modules: Some(TargetModules::Pattern("all-linear".into())),
        rslora: false,
    });
    c.train.output_dir = out.to_path_buf();
    c.train.lr = 1e-2;
    c.train.batch_size = 3;
    c.train.grad_accum = 2;
    c.train.max_steps = Some(5);
    c.train.logging_steps = 1;
    c
}

fn data(config: &RunConfig) -> (PreferenceDataset, u32) {
    let tok = ganpo_models::Tokenizer::from_dir(&config.model.path).unwrap();
    let records = load_records(&config.data.train, false).unwrap();
    let pt = PairTokenizer::new(&tok).unwrap();
    let d = PreferenceDataset::build(
        &records.records,
        &pt,
        &config.data.truncation(),
        false,
        &mut Vec::new(),
    )
    .unwrap();
    (d, tok.pad_token_id.unwrap())
}

static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn base() -> Lm<B> {
    load_model::<B>(&fixtures().join("policy"), &Default::default())
        .unwrap()
        .model
}

fn trainer(config: RunConfig) -> Result<Trainer<B, Lm<B>>, TrainError> {
    let policy = match &config.lora {
        Some(l) => lora::attach(base(), l, config.train.seed).unwrap().0,
        None => base(),
    };
    let (train, pad) = data(&config);
    let eval = train.subset(&[0, 1, 2]);
    Trainer::new(config, policy, None, train, eval, pad, Default::default())
}

fn logits<M: CausalLm<NdArray>>(model: &M) -> Vec<f32> {
    let device = Default::default();
    let ids = Tensor::<NdArray, 2, Int>::from_data([[5, 17, 42, 99, 3, 250]], &device);
    let mask = Tensor::<NdArray, 2, Bool>::from_data([[true; 6]], &device);
    let out = model.forward(ids, mask);
    let mut v: Vec<f32> = out.logits.into_data().to_vec().unwrap();
    v.extend(out.hidden.into_data().to_vec::<f32>().unwrap());
    v
}

fn run(t: &mut Trainer<B, Lm<B>>) -> Vec<LogEntry> {
    let mut logs = Vec::new();
    t.fit(|e| logs.push(e.clone())).unwrap();
    logs
}

#[test]
fn lora_trains_the_adapters_only_against_the_exact_start_model() {
    let _turn = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(config(dir.path())).unwrap();
    assert!(t.uses_lora() && t.holds_reference());
    let start = logits(&base().valid());
    let total = burn::module::Module::num_params(t.policy());
    let trained = trainable_params(t.policy());
    // Every projection (all-linear), r x (in + out) each.
    let mut model = t.policy().valid();
    let expected: usize = model
        .projections()
        .into_iter()
        .map(|(_, p)| {
            let [d_in, d_out] = p.parts().weight.val().dims();
            4 * (d_in + d_out)
        })
        .sum();
    assert_eq!(trained, expected, "of {total}");
    let logs = run(&mut t);
    assert_ne!(
        logits(&t.policy().valid()),
        start,
        "the adapters did not move"
    );
    // With the adapters off, the trained policy is the start model bit for bit: the base never
    // moved, and that is the reference.
    let mut off = t.policy().valid();
    assert!(off.set_adapters_enabled(false) > 0);
    assert_eq!(logits(&off), start);
    let get = |l: &LogEntry, k: &str| l.metrics.iter().find(|(n, _)| n == k).map(|m| m.1);
    let first = logs.iter().find(|l| l.split == "train").unwrap();
    // Step 1 starts from B = 0: policy = reference, so DPO's margin is exactly 0.
    assert_eq!(get(first, "rewards/margins"), Some(0.0));
    assert!(get(first, "gan/d_chosen_loss").is_some());
    // The checkpoint holds the adapters, not the base.
    let ckpt = dir.path().join("checkpoint-5");
    assert!(ckpt.join("adapters.safetensors").is_file());
    assert!(!ckpt.join("policy.mpk").exists());
    let size = std::fs::metadata(ckpt.join("adapters.safetensors"))
        .unwrap()
        .len();
    assert!(size < 4 * trained as u64 + 16_384, "{size} bytes");
    // The optimizer holds state for the adapters alone: first and second moments of each.
    let optim = std::fs::metadata(ckpt.join("policy_optimizer.bin"))
        .unwrap()
        .len();
    assert!(
        optim < 2 * 4 * trained as u64 + 65_536,
        "{optim} bytes of optimizer state"
    );
}

#[test]
fn resumed_lora_run_equals_uninterrupted_run() {
    let _turn = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut full = trainer(config(&dir.path().join("full"))).unwrap();
    let full_logs = run(&mut full);
    let out = dir.path().join("split");
    let mut c = config(&out);
    c.train.save_steps = Some(2);
    let mut first = trainer(c).unwrap();
    // The process dies at its log line of step 3, after checkpoint-2.
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        first.fit(|e| assert!(e.step < 3, "killed"))
    }));
    assert!(died.is_err());
    drop(first);
    let ckpt = out.join("checkpoint-2");
    // A new process would draw new adapters: a different seed shows they are replaced.
    let mut c = config(&out);
    let other = lora::attach(base(), c.lora.as_ref().unwrap(), 99)
        .unwrap()
        .0;
    let (train, pad) = data(&c);
    let eval = train.subset(&[0, 1, 2]);
    c.train.seed = 42;
    let mut resumed =
        Trainer::<B, Lm<B>>::new(c, other, None, train, eval, pad, Default::default()).unwrap();
    resumed.resume(&ckpt).unwrap();
    let logs = run(&mut resumed);
    let tail: Vec<_> = full_logs.iter().filter(|l| l.step > 2).collect();
    assert_eq!(tail.len(), logs.len());
    for (x, y) in tail.iter().zip(&logs) {
        assert_eq!(x.metrics, y.metrics, "step {}", x.step);
    }
    assert_eq!(
        logits(&resumed.policy().valid()),
        logits(&full.policy().valid())
    );
    // Adapters of another rank do not fit.
    let mut c = config(&out);
    c.lora.as_mut().unwrap().r = 2;
    let e = trainer(c).unwrap().resume(&ckpt).unwrap_err().to_string();
    assert!(e.contains("lora.r"), "{e}");
}

#[test]
fn lora_misuse_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let (train, pad) = data(&c);
    // [lora] configured, adapters never attached.
    let e = Trainer::<B, Lm<B>>::new(
        c.clone(),
        base(),
        None,
        train.clone(),
        train.clone(),
        pad,
        Default::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(e, TrainError::LoraNotAttached), "{e}");
    // A separate reference beside adapters.
    let policy = lora::attach(base(), c.lora.as_ref().unwrap(), 0).unwrap().0;
    let e = Trainer::<B, Lm<B>>::new(
        c.clone(),
        policy,
        Some(base().valid()),
        train.clone(),
        train,
        pad,
        Default::default(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("model.reference"), "{e}");
    // In the configuration, by key.
    let mut bad = c.clone();
    bad.model.reference = Some(fixtures().join("policy"));
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("model.reference")
    );
    let mut bad = c.clone();
    bad.lora.as_mut().unwrap().r = 0;
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("lora.r") && e.contains("at least 1"), "{e}");
    let mut bad = c;
    bad.model.adapter = Some(dir.path().to_path_buf());
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("model.adapter")
    );
}
