//! The smallest end-to-end GANPO run: DPO vs DPO + GANPO on a tiny causal LM.
//!
//! Task: prompts are random tokens; the chosen completion uses only even tokens, the rejected one
//! only odd tokens. A [`TinyLm`] is trained twice from the same initialization by the
//! [`Trainer`], with plain DPO and with DPO + the GANPO generator term: the DPO run is GANPO with
//! `adv_weight = 0`, which trains and reports the discriminators but leaves the policy's updates
//! exactly DPO's, so the GANPO diagnostics are measured the same way in both runs. Each run sees
//! fresh pairs every step (one pass over `steps x pairs` generated pairs) and is evaluated on the
//! same held-out pairs.

use burn::tensor::backend::AutodiffBackend;
use ganpo_core::discriminator::{DiscriminatorConfig, TransformerDiscriminatorConfig};
use ganpo_core::ganpo::GanpoConfig;
use ganpo_core::loss::PreferenceLoss;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::config::{RunConfig, Scheduler};
use crate::data::{PreferenceDataset, TokenizedPair};
use crate::train::{TrainError, Trainer};

mod tiny_lm;

pub use tiny_lm::{TinyLm, TinyLmConfig};

/// Settings of a toy run.
#[derive(Clone, Debug, Serialize)]
pub struct ToyConfig {
    /// Optimizer steps per run.
    pub steps: usize,
    /// Preference pairs per step.
    pub pairs: usize,
    /// Prompt length in tokens.
    pub prompt_len: usize,
    /// Completion length in tokens.
    pub completion_len: usize,
    /// Policy learning rate (discriminators: half of it, the reference `disc_lr_ratio`).
    pub lr: f64,
    /// The base loss (DPO by default).
    pub loss: PreferenceLoss,
    /// The GANPO regularizer of the second run.
    pub ganpo: GanpoConfig,
    /// The model.
    pub model: TinyLmConfig,
    /// Seed for the model initialization and the data.
    pub seed: u64,
    /// Log every this many steps.
    pub log_every: usize,
}

impl Default for ToyConfig {
    fn default() -> Self {
        Self {
            steps: 150,
            pairs: 16,
            prompt_len: 3,
            completion_len: 4,
            lr: 5e-3,
            loss: PreferenceLoss {
                beta: 0.5,
                ..PreferenceLoss::default()
            },
            ganpo: GanpoConfig {
                discriminator: DiscriminatorConfig::Transformer(TransformerDiscriminatorConfig {
                    hidden: 32,
                    layers: 1,
                    heads: 4,
                    ff: 64,
                    max_positions: 64,
                    ..Default::default()
                }),
                ..Default::default()
            },
            model: TinyLmConfig {
                vocab: 16,
                hidden: 16,
            },
            seed: 0,
            log_every: 25,
        }
    }
}

/// Metrics of one logged step (or of the final held-out evaluation).
#[derive(Clone, Debug, Serialize)]
pub struct StepLog {
    /// `dpo` or `dpo+ganpo`.
    pub run: &'static str,
    /// Step number (1-based); `steps + 1` for the held-out evaluation.
    pub step: usize,
    /// TRL- and GANPO-named metrics.
    pub metrics: Vec<(String, f64)>,
}

impl StepLog {
    /// One metric by name.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// The outcome of both runs.
#[derive(Clone, Debug, Serialize)]
pub struct ToyReport {
    /// The settings.
    pub config: ToyConfig,
    /// Logged steps of both runs.
    pub log: Vec<StepLog>,
    /// Held-out evaluation of the DPO run.
    pub dpo: StepLog,
    /// Held-out evaluation of the DPO + GANPO run.
    pub ganpo: StepLog,
}

/// `count` pairs: random prompts, even-token chosen and odd-token rejected completions.
fn sample_pairs(c: &ToyConfig, count: usize, rng: &mut StdRng) -> PreferenceDataset {
    let v = c.model.vocab as u32;
    let mut data = PreferenceDataset::default();
    for i in 0..count {
        let prompt = (0..c.prompt_len).map(|_| rng.random_range(0..v)).collect();
        let (mut chosen, mut rejected) = (Vec::new(), Vec::new());
        for _ in 0..c.completion_len {
            chosen.push(2 * rng.random_range(0..v / 2));
            rejected.push(2 * rng.random_range(0..v / 2) + 1);
        }
        data.pairs.push(TokenizedPair {
            prompt,
            chosen,
            rejected,
        });
        data.sources.push(("toy".into(), i + 1));
    }
    data
}

/// The trainer settings of one run: constant learning rate, no clipping, no truncation.
fn run_config(c: &ToyConfig, adv_weight: f64) -> RunConfig {
    let mut config = RunConfig::default();
    config.model.path = "toy".into();
    config.loss = c.loss.clone();
    config.ganpo = Some(GanpoConfig {
        adv_weight,
        ..c.ganpo.clone()
    });
    config.data.max_length = 0;
    config.data.shuffle = false;
    let t = &mut config.train;
    t.seed = c.seed;
    t.lr = c.lr;
    t.scheduler = Scheduler::Constant;
    t.max_grad_norm = None;
    t.batch_size = c.pairs;
    t.eval_batch_size = c.pairs;
    t.max_steps = Some(c.steps);
    config
}

/// Metrics without TRL's `eval_` prefix.
fn unprefixed(metrics: Vec<(String, f64)>) -> Vec<(String, f64)> {
    metrics
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("eval_").unwrap_or(&k).to_string(), v))
        .collect()
}

/// Runs DPO and DPO + GANPO from the same start and evaluates both on the same held-out pairs;
/// `on_log` sees each logged step as it happens.
pub fn run<B: AutodiffBackend>(
    config: &ToyConfig,
    device: &B::Device,
    mut on_log: impl FnMut(&StepLog),
) -> Result<ToyReport, TrainError> {
    let train = sample_pairs(
        config,
        config.steps * config.pairs,
        &mut StdRng::seed_from_u64(config.seed),
    );
    let held_out = sample_pairs(
        config,
        config.pairs,
        &mut StdRng::seed_from_u64(config.seed.wrapping_add(1_000_003)),
    );
    let mut log = Vec::new();
    let mut results = Vec::new();
    for (name, adv) in [("dpo", 0.0), ("dpo+ganpo", config.ganpo.adv_weight)] {
        B::seed(device, config.seed);
        let policy: TinyLm<B> = config.model.init(device);
        let mut trainer = Trainer::new(
            run_config(config, adv),
            policy,
            None,
            train.clone(),
            held_out.clone(),
            0,
            device.clone(),
        )?;
        for step in 1..=config.steps {
            let metrics = trainer.step()?;
            if step % config.log_every == 0 || step == 1 {
                let entry = StepLog {
                    run: name,
                    step,
                    metrics,
                };
                on_log(&entry);
                log.push(entry);
            }
        }
        let eval = StepLog {
            run: name,
            step: config.steps + 1,
            metrics: unprefixed(trainer.evaluate()?),
        };
        on_log(&eval);
        results.push(eval);
    }
    let ganpo = results.pop().expect("two runs");
    let dpo = results.pop().expect("two runs");
    Ok(ToyReport {
        config: config.clone(),
        log,
        dpo,
        ganpo,
    })
}
