//! The settings that trade memory for time or precision: activation checkpointing
//! (`train.gradient_checkpointing`), chunked log-probs (`train.logprob_chunk_rows`) and a LoRA
//! base held in the compute dtype (`train.compute_dtype`; f64 is what the CPU backend has besides
//! f32, and takes the same path as bf16 on a GPU). Each gives the same losses, gradient norms,
//! weights and evaluation metrics as the f32 run without it, for full fine-tuning (the fixture's
//! head is tied to its embeddings) and LoRA, with one and with several micro-batches, apart and
//! together; the recomputing ones are refused for a model that cannot recompute.

use std::path::Path;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::DType;
use ganpo_models::lora::{self, LoraConfig, TargetModules};
use ganpo_models::{CausalLm, Lm, load_model};
use ganpo_train::config::{ComputeDtype, RunConfig};
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
    // Evaluated at the end of every run: two of the training pairs.
    let eval = PreferenceDataset {
        pairs: data.pairs[..2].to_vec(),
        sources: vec![("eval".into(), 2)],
        ..Default::default()
    };
    Trainer::new(config, policy, None, data, eval, pad, device)
}

fn logits(t: &Trainer<B, Lm<B>>) -> Vec<f32> {
    let device = Default::default();
    let ids = Tensor::<NdArray, 2, Int>::from_data([[5, 17, 42, 99, 3, 250]], &device);
    let mask = Tensor::<NdArray, 2, Bool>::from_data([[true; 6]], &device);
    let out = t.policy().valid().forward(ids, mask).logits;
    out.into_data().convert::<f32>().to_vec().unwrap()
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs 3 steps of the configuration `base` makes with and without `variant` applied, for full
/// fine-tuning and LoRA, one and two micro-batches, and checks that they log the same metrics
/// and end at the same weights (logits within `1e-4`).
fn assert_same_runs(label: &str, base: impl Fn(&mut RunConfig), variant: impl Fn(&mut RunConfig)) {
    assert_same_runs_within(label, (1e-7, 1e-4), base, variant)
}

/// [`assert_same_runs`] with metrics equal within `absolute` where not within the relative
/// tolerance, and the final logits within `logits`.
fn assert_same_runs_within(
    label: &str,
    (absolute, logits_within): (f64, f32),
    base: impl Fn(&mut RunConfig),
    variant: impl Fn(&mut RunConfig),
) {
    let _turn = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    for (grad_accum, lora) in [(1, false), (2, false), (1, true)] {
        let run = |varied: bool| {
            let out = dir.path().join(format!("{grad_accum}-{lora}-{varied}"));
            let mut c = config(&out, false, grad_accum, lora);
            base(&mut c);
            if varied {
                variant(&mut c);
            }
            let mut t = trainer(c).unwrap();
            let mut logs: Vec<LogEntry> = Vec::new();
            t.fit(|e| logs.push(e.clone())).unwrap();
            (logs, logits(&t))
        };
        let (plain, plain_logits) = run(false);
        let (varied, varied_logits) = run(true);
        let case = format!("{label}, grad_accum {grad_accum}, lora {lora}");
        assert_eq!(plain.len(), varied.len(), "{case}");
        assert!(
            plain
                .iter()
                .any(|l| l.metrics.iter().any(|(n, _)| n == "eval_loss")),
            "{case}: the runs evaluate"
        );
        for (a, b) in plain.iter().zip(&varied) {
            // Step 1 from the same weights: the same losses and gradient norm (1e-6 relative);
            // later steps start from weights that differ by the order gradients were summed in.
            let tolerance = if a.step == 1 { 1e-6 } else { 5e-5 };
            assert_eq!(a.metrics.len(), b.metrics.len(), "{case}");
            for ((name, x), (other, y)) in a.metrics.iter().zip(&b.metrics) {
                assert_eq!(name, other);
                assert!(
                    relative(*x, *y) < tolerance || (x - y).abs() < absolute,
                    "{case}, step {}: {name} {x} vs {y}",
                    a.step
                );
            }
            if let Some((_, norm)) = a.metrics.iter().find(|(n, _)| n == "grad_norm") {
                assert!(*norm > 1e-3, "{case}: gradients reach the policy");
            }
        }
        let d = plain_logits
            .iter()
            .zip(&varied_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            d < logits_within,
            "{case}: weights after 3 steps differ (logits by {d})"
        );
    }
}

#[test]
fn checkpointed_runs_equal_plain_runs() {
    assert_same_runs(
        "checkpointing",
        |_| {},
        |c| c.train.gradient_checkpointing = true,
    );
}

#[test]
fn chunked_logprob_runs_equal_plain_runs() {
    // 3 rows a chunk: every batch has several chunks, the last one shorter.
    assert_same_runs(
        "chunked log-probs",
        |_| {},
        |c| c.train.logprob_chunk_rows = Some(3),
    );
}

#[test]
fn chunked_logprobs_with_checkpointing_equal_plain_runs() {
    assert_same_runs(
        "chunked log-probs + checkpointing",
        |_| {},
        |c| {
            c.train.logprob_chunk_rows = Some(5);
            c.train.gradient_checkpointing = true;
        },
    );
}

#[test]
fn chunked_logprobs_without_ganpo_and_with_cached_reference_equal_plain_runs() {
    // The base loss alone: all of the policy's gradient comes through the chunked head; the
    // reference's log-probs are precomputed in chunks too.
    let without_ganpo = |c: &mut RunConfig| {
        c.ganpo = None;
        c.train.precompute_ref_logps = true;
    };
    assert_same_runs("DPO", without_ganpo, |c| {
        c.train.logprob_chunk_rows = Some(4)
    });
}

#[test]
fn ld_dpo_and_wpo_runs_equal_with_chunked_logprobs_and_a_precomputed_reference() {
    // LD-DPO weighs rows in the summed log-probs, so the chunked head's backward pass must
    // spread each sequence's gradient with the same weights; the precomputed reference must be
    // weighted as the live one is.
    let ld_wpo = |c: &mut RunConfig| {
        c.loss.ld_alpha = Some(0.3);
        c.loss.use_weighting = true;
    };
    assert_same_runs("LD-DPO + WPO", ld_wpo, |c| {
        c.train.logprob_chunk_rows = Some(3);
        c.train.precompute_ref_logps = true;
    });
}

#[test]
fn orpo_runs_equal_with_chunked_logprobs_and_checkpointing() {
    // ORPO's NLL term reads the chosen prompts' rows too: a second tracked sum on the chunked
    // head's leaf, whose gradient reaches the prompt rows.
    let orpo = |c: &mut RunConfig| {
        c.loss = ganpo_core::PreferenceLoss::single(ganpo_core::LossKind::Orpo);
    };
    assert_same_runs("ORPO", orpo, |c| {
        c.train.logprob_chunk_rows = Some(3);
        c.train.gradient_checkpointing = true;
    });
}

#[test]
fn runs_in_another_compute_dtype_equal_f32_runs() {
    // f64 rounds differently from f32, and AdamW divides by the root of tiny second moments:
    // the full fine-tuning run's weights drift apart by ~1e-4 over 3 steps at lr 1e-2, and the
    // rewards (differences of log-probs) by a few 1e-6.
    assert_same_runs_within(
        "compute dtype f64",
        (1e-5, 5e-4),
        |_| {},
        |c| c.train.compute_dtype = ComputeDtype::F64,
    );
}

#[test]
fn all_memory_settings_together_equal_a_plain_f32_run() {
    // Several backward passes a micro-batch (layers, head chunks) through parameters in f64.
    assert_same_runs_within(
        "f64 + checkpointing + chunked log-probs",
        (1e-5, 5e-4),
        |_| {},
        |c| {
            c.train.compute_dtype = ComputeDtype::F64;
            c.train.gradient_checkpointing = true;
            c.train.logprob_chunk_rows = Some(3);
        },
    );
}

#[test]
fn a_lora_base_is_held_in_the_compute_dtype_and_its_adapters_in_f32() {
    let _turn = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), false, 1, true);
    c.train.compute_dtype = ComputeDtype::F64;
    let t = trainer(c.clone()).unwrap();
    let dtypes = Dtypes::of(t.policy());
    assert!(dtypes.frozen.iter().all(|d| *d == DType::F64), "{dtypes:?}");
    assert!(
        dtypes.trainable.iter().all(|d| *d == DType::F32),
        "{dtypes:?}"
    );
    assert!(!dtypes.frozen.is_empty() && !dtypes.trainable.is_empty());
    // The weights: the base at 8 bytes a parameter, the adapters at 4, and no reference copy.
    let (frozen, trainable) = (dtypes.frozen_scalars, dtypes.trainable_scalars);
    assert_eq!(t.weight_bytes(), 8 * frozen + 4 * trainable);
    c.train.compute_dtype = ComputeDtype::F32;
    assert_eq!(trainer(c).unwrap().weight_bytes(), 4 * (frozen + trainable));
}

/// The dtypes of a module's parameters, by whether they train.
#[derive(Debug, Default)]
struct Dtypes {
    frozen: Vec<DType>,
    trainable: Vec<DType>,
    frozen_scalars: usize,
    trainable_scalars: usize,
}

impl Dtypes {
    fn of<M: burn::module::Module<B>>(module: &M) -> Self {
        let mut d = Dtypes::default();
        module.visit(&mut d);
        d
    }
}

impl burn::module::ModuleVisitor<B> for Dtypes {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        let n = param.shape().num_elements();
        if param.is_require_grad() {
            self.trainable.push(param.val().dtype());
            self.trainable_scalars += n;
        } else {
            self.frozen.push(param.val().dtype());
            self.frozen_scalars += n;
        }
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
    let e = Trainer::new(
        c.clone(),
        tiny.clone(),
        None,
        data.clone(),
        PreferenceDataset::default(),
        0,
        device,
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            e,
            TrainError::NotALayerStack {
                key: "train.gradient_checkpointing",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("train.gradient_checkpointing"));
    c.train.gradient_checkpointing = false;
    c.train.logprob_chunk_rows = Some(8);
    let e = Trainer::new(c, tiny, None, data, PreferenceDataset::default(), 0, device)
        .err()
        .unwrap();
    assert!(e.to_string().contains("train.logprob_chunk_rows"), "{e}");
}
