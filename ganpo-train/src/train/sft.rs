//! Supervised fine-tuning: next-token cross-entropy on text, the step before preference training.

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::{next_token_targets, token_logps};
use ganpo_models::CausalLm;
use serde::{Deserialize, Serialize};

use super::clip_grad_norm;
use super::schedule::{lr_multiplier, warmup_steps};
use crate::config::Scheduler;
use crate::data::epoch_order;

/// One training sequence: token ids, the loss on those from `prompt_len` on (TRL's
/// completion-only loss; 0 scores the whole text, whose first token has no context).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftExample {
    /// Token ids, EOS included.
    pub ids: Vec<u32>,
    /// Leading tokens not scored.
    pub prompt_len: usize,
}

/// Settings of a fine-tuning run (AdamW with PyTorch's defaults, warm-up then cosine decay).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Fraction of the steps spent warming up.
    pub warmup_ratio: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clipping.
    pub max_grad_norm: Option<f64>,
    /// Seed of the data order.
    pub seed: u64,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            steps: 500,
            batch_size: 32,
            lr: 3e-3,
            warmup_ratio: 0.05,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
            seed: 0,
        }
    }
}

/// What one step reports.
#[derive(Clone, Copy, Debug)]
pub struct SftStep {
    /// 1-based step.
    pub step: usize,
    /// Mean cross-entropy per scored token.
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// Right-padded ids, attention and loss masks of `batch`.
fn collate<B: Backend>(
    batch: &[&SftExample],
    pad: u32,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Bool>, Tensor<B, 2, Bool>) {
    let b = batch.len();
    let len = batch.iter().map(|e| e.ids.len()).max().unwrap_or(1).max(1);
    let (mut ids, mut attention, mut scored) = (vec![], vec![], vec![]);
    for e in batch {
        for j in 0..len {
            ids.push(e.ids.get(j).copied().unwrap_or(pad) as i64);
            attention.push(j < e.ids.len());
            scored.push(j < e.ids.len() && j >= e.prompt_len);
        }
    }
    (
        Tensor::from_data(TensorData::new(ids, [b, len]), device),
        Tensor::from_data(TensorData::new(attention, [b, len]), device),
        Tensor::from_data(TensorData::new(scored, [b, len]), device),
    )
}

/// Fine-tunes `model` on `data` for `config.steps` steps (epochs reshuffled with
/// `config.seed`), calling `on_step` after each; returns the trained model.
pub fn sft<B: AutodiffBackend, M: AutodiffModule<B> + CausalLm<B>>(
    mut model: M,
    data: &[SftExample],
    config: &SftConfig,
    pad: u32,
    device: &B::Device,
    mut on_step: impl FnMut(&SftStep),
) -> M {
    if data.is_empty() {
        return model;
    }
    let mut optim = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(config.weight_decay as f32)
        .init::<B, M>();
    let warmup = warmup_steps(None, config.warmup_ratio, config.steps);
    let lengths: Vec<usize> = data.iter().map(|e| e.ids.len()).collect();
    let per_epoch = data.len().div_ceil(config.batch_size.max(1));
    let mut order = Vec::new();
    for step in 0..config.steps {
        let (epoch, k) = (step / per_epoch, step % per_epoch);
        if k == 0 {
            order = epoch_order(
                &lengths,
                config.batch_size,
                config.seed,
                epoch as u64,
                true,
                false,
            );
        }
        let batch: Vec<&SftExample> = order
            [k * config.batch_size..((k + 1) * config.batch_size).min(data.len())]
            .iter()
            .map(|&i| &data[i])
            .collect();
        let (ids, attention, scored) = collate::<B>(&batch, pad, device);
        let logits = model.forward(ids.clone(), attention).logits;
        let (labels, mask) = next_token_targets(ids, scored);
        let count = mask.clone().float().sum().clamp_min(1.0);
        let loss = -token_logps(logits, labels, mask).sum() / count;
        let loss_value = loss.clone().into_scalar().elem::<f64>();
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let grad_norm = clip_grad_norm(&model, &mut grads, config.max_grad_norm);
        let lr = config.lr * lr_multiplier(Scheduler::Cosine, step, config.steps, warmup);
        if loss_value.is_finite() && grad_norm.is_finite() {
            model = optim.step(lr, model, grads);
        }
        on_step(&SftStep {
            step: step + 1,
            loss: loss_value,
            grad_norm,
            lr,
        });
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toy::TinyLmConfig;
    use burn::backend::{Autodiff, NdArray};

    type B = Autodiff<NdArray>;

    #[test]
    fn only_completion_tokens_of_real_positions_are_scored() {
        let device = Default::default();
        let a = SftExample {
            ids: vec![3, 4, 5],
            prompt_len: 2,
        };
        let b = SftExample {
            ids: vec![6, 7, 8, 9, 1],
            prompt_len: 0,
        };
        let (ids, attention, scored) = collate::<NdArray>(&[&a, &b], 0, &device);
        assert_eq!(
            ids.into_data().to_vec::<i64>().unwrap(),
            vec![3, 4, 5, 0, 0, 6, 7, 8, 9, 1]
        );
        assert_eq!(
            attention.into_data().to_vec::<bool>().unwrap(),
            [[true; 3].as_slice(), &[false; 2], &[true; 5]].concat()
        );
        assert_eq!(
            scored.into_data().to_vec::<bool>().unwrap(),
            vec![
                false, false, true, false, false, true, true, true, true, true
            ]
        );
    }

    #[test]
    fn fine_tuning_learns_the_sequences() {
        let device = Default::default();
        B::seed(&device, 0);
        let model = TinyLmConfig {
            vocab: 12,
            hidden: 24,
        }
        .init::<B>(&device);
        // Each sequence's second token determines the rest.
        let data: Vec<SftExample> = (0..4u32)
            .map(|k| SftExample {
                ids: vec![0, 2 + k, 6 + k, 10],
                prompt_len: 0,
            })
            .collect();
        let config = SftConfig {
            steps: 150,
            batch_size: 4,
            lr: 3e-2,
            ..SftConfig::default()
        };
        let mut losses = Vec::new();
        sft(model, &data, &config, 0, &device, |s| losses.push(s.loss));
        assert_eq!(losses.len(), 150);
        let first = losses[0];
        let last = losses[140..].iter().sum::<f64>() / 10.0;
        // Token 1 of each sequence is a uniform choice among 4 (ln 4 / 3 per scored token is the
        // floor); the others are determined.
        assert!(first > 1.5, "{first}");
        assert!(last < 0.6, "{first} -> {last}");
    }
}
