//! The smallest end-to-end GANPO run: DPO vs DPO + GANPO on a tiny causal LM.
//!
//! Task: prompts are random tokens; the chosen completion uses only even tokens, the rejected one
//! only odd tokens. A [`TinyLm`] is trained twice from the same initialization, with plain DPO and
//! with DPO + the GANPO generator term (the discriminators train in both runs, so the GANPO
//! diagnostics are measured the same way). Each step follows the method's order: policy forward,
//! reference forward without autodiff, discriminator step on detached latents, policy step on
//! `L_DPO + adv_weight * L_gen`.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::Ganpo;
use ganpo_core::discriminator::{DiscriminatorConfig, TransformerDiscriminatorConfig};
use ganpo_core::ganpo::{GanpoConfig, LatentBatch};
use ganpo_core::loss::{PairLengths, PreferenceInputs, PreferenceLoss};
use ganpo_core::{next_token_targets, sequence_logps};
use ganpo_models::{CausalLm, TinyLm, TinyLmConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

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

/// A batch of pairs: ids `[2n, seq]` (chosen rows first), completion mask, lengths.
struct PairBatch<B: Backend> {
    ids: Tensor<B, 2, Int>,
    /// All true: the toy has no padding.
    attention: Tensor<B, 2, Bool>,
    completion: Tensor<B, 2, Bool>,
    lengths: PairLengths,
    n: usize,
}

fn sample_batch<B: Backend>(c: &ToyConfig, rng: &mut StdRng, device: &B::Device) -> PairBatch<B> {
    let (n, p, l, v) = (
        c.pairs,
        c.prompt_len,
        c.completion_len,
        c.model.vocab as i64,
    );
    let seq = p + l;
    let mut ids = vec![0i64; 2 * n * seq];
    for i in 0..n {
        for t in 0..p {
            let tok = rng.random_range(0..v);
            ids[i * seq + t] = tok;
            ids[(n + i) * seq + t] = tok;
        }
        for t in p..seq {
            ids[i * seq + t] = 2 * rng.random_range(0..v / 2);
            ids[(n + i) * seq + t] = 2 * rng.random_range(0..v / 2) + 1;
        }
    }
    let completion: Vec<bool> = (0..2 * n)
        .flat_map(|_| (0..seq).map(move |t| t >= p))
        .collect();
    PairBatch {
        ids: Tensor::from_data(TensorData::new(ids, [2 * n, seq]), device),
        attention: Tensor::from_data(
            TensorData::new(vec![true; 2 * n * seq], [2 * n, seq]),
            device,
        ),
        completion: Tensor::from_data(TensorData::new(completion, [2 * n, seq]), device),
        lengths: PairLengths::new(vec![l; n], vec![l; n]).expect("completion_len > 0"),
        n,
    }
}

/// What the trainer needs from one model on a batch of pairs.
struct ModelPass<B: Backend> {
    /// Summed completion log-probs of the chosen and rejected completions, `[n]` each.
    logps: (Tensor<B, 1>, Tensor<B, 1>),
    /// Last-layer hidden states of the chosen and rejected sequences, `[n, seq, d]` each.
    latents: (Tensor<B, 3>, Tensor<B, 3>),
}

fn forward<B: Backend, M: CausalLm<B>>(model: &M, batch: &PairBatch<B>) -> ModelPass<B> {
    let n = batch.n;
    let out = model.forward(batch.ids.clone(), batch.attention.clone());
    let (labels, mask) = next_token_targets(batch.ids.clone(), batch.completion.clone());
    let logps = sequence_logps(out.logits, labels, mask).logps;
    let hidden = out.hidden;
    ModelPass {
        logps: (logps.clone().slice(s![0..n]), logps.slice(s![n..2 * n])),
        latents: (
            hidden.clone().slice(s![0..n, .., ..]),
            hidden.slice(s![n..2 * n, .., ..]),
        ),
    }
}

/// One training run: the policy, its frozen reference, the GANPO module and the optimizers.
struct Run<'a, B: AutodiffBackend> {
    name: &'static str,
    adv: bool,
    config: &'a ToyConfig,
    policy: TinyLm<B>,
    reference: TinyLm<B::InnerBackend>,
    ganpo: Ganpo<B>,
    p_optim: OptimizerAdaptor<AdamW, TinyLm<B>, B>,
    d_optim: OptimizerAdaptor<AdamW, Ganpo<B>, B>,
}

impl<'a, B: AutodiffBackend> Run<'a, B> {
    fn new(name: &'static str, adv: bool, config: &'a ToyConfig, device: &B::Device) -> Self {
        B::seed(device, config.seed);
        let policy: TinyLm<B> = config.model.init(device);
        let adamw = AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(0.01);
        Self {
            name,
            adv,
            config,
            reference: policy.valid(),
            ganpo: config.ganpo.init(config.model.hidden, device),
            policy,
            p_optim: adamw.init(),
            d_optim: adamw.init(),
        }
    }

    /// Forward passes, the discriminator step (when `train`), and the policy loss.
    fn losses(
        &mut self,
        step: usize,
        batch: &PairBatch<B>,
        train: bool,
    ) -> (StepLog, Tensor<B, 1>) {
        let ModelPass {
            logps: (pc, pr),
            latents: (hc, hr),
        } = forward(&self.policy, batch);
        let inner = PairBatch {
            ids: batch.ids.clone().inner(),
            attention: batch.attention.clone().inner(),
            completion: batch.completion.clone().inner(),
            lengths: batch.lengths.clone(),
            n: batch.n,
        };
        let ModelPass {
            logps: (rc, rr),
            latents: (rhc, rhr),
        } = forward(&self.reference, &inner);
        let latents = LatentBatch {
            policy_chosen: hc,
            policy_rejected: hr,
            reference_chosen: Tensor::from_inner(rhc),
            reference_rejected: Tensor::from_inner(rhr),
            chosen_mask: None,
            rejected_mask: None,
        };
        let inputs = PreferenceInputs {
            policy_chosen: pc,
            policy_rejected: pr,
            reference: Some((Tensor::from_inner(rc), Tensor::from_inner(rr))),
            lengths: batch.lengths.clone(),
            logit_sums: None,
        };
        let base = self
            .config
            .loss
            .compute(&inputs)
            .expect("toy inputs are valid");
        let d = self.ganpo.discriminator_loss(&latents.detach_policy());
        if train {
            let grads = GradientsParams::from_grads(d.loss.backward(), &self.ganpo);
            let lr = self.config.lr * 0.5;
            self.ganpo = self.d_optim.step(lr, self.ganpo.clone(), grads);
        }
        let g = self.ganpo.generator_loss(&latents);
        let total = if self.adv {
            base.loss + g.term
        } else {
            base.loss
        };
        let mut metrics = vec![(
            "loss".to_string(),
            total.clone().into_scalar().elem::<f64>(),
        )];
        for m in [&base.metrics, &d.metrics, &g.metrics] {
            metrics.extend(m.to_vec().into_iter().map(|(k, v)| (k.to_string(), v)));
        }
        (
            StepLog {
                run: self.name,
                step,
                metrics,
            },
            total,
        )
    }

    fn train_step(&mut self, step: usize, batch: &PairBatch<B>) -> StepLog {
        let (entry, total) = self.losses(step, batch, true);
        let grads = GradientsParams::from_grads(total.backward(), &self.policy);
        self.policy = self
            .p_optim
            .step(self.config.lr, self.policy.clone(), grads);
        entry
    }
}

/// Runs DPO and DPO + GANPO from the same start and evaluates both on the same held-out pairs;
/// `on_log` sees each logged step as it happens.
pub fn run<B: AutodiffBackend>(
    config: &ToyConfig,
    device: &B::Device,
    mut on_log: impl FnMut(&StepLog),
) -> ToyReport {
    let mut log = Vec::new();
    let mut results = Vec::new();
    for (name, adv) in [("dpo", false), ("dpo+ganpo", true)] {
        let mut run = Run::<B>::new(name, adv, config, device);
        let mut rng = StdRng::seed_from_u64(config.seed);
        for step in 1..=config.steps {
            let batch = sample_batch::<B>(config, &mut rng, device);
            let entry = run.train_step(step, &batch);
            if step % config.log_every == 0 || step == 1 {
                on_log(&entry);
                log.push(entry);
            }
        }
        let mut held_out = StdRng::seed_from_u64(config.seed.wrapping_add(1_000_003));
        let batch = sample_batch::<B>(config, &mut held_out, device);
        let (eval, _) = run.losses(config.steps + 1, &batch, false);
        on_log(&eval);
        results.push(eval);
    }
    let ganpo = results.pop().expect("two runs");
    let dpo = results.pop().expect("two runs");
    ToyReport {
        config: config.clone(),
        log,
        dpo,
        ganpo,
    }
}
