//! Reward-model training (TRL's `RewardTrainer`): a [`SequenceClassifier`] fitted to labelled
//! texts (cross-entropy; the reward is then the log-odds of the last label) or to preference pairs
//! (Bradley-Terry on a scalar score), either whole or head-only on a frozen backbone.

use burn::module::AutodiffModule;
use burn::nn::Linear;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::reward_loss::{bradley_terry, cross_entropy};
use ganpo_models::classifier::{SequenceClassifier, reward_of};

use super::checkpoint::{self as reward_checkpoint, RewardCheckpoints, RewardState};
use super::config::{RewardConfig, RewardEval, RewardStep, Trainable};
use super::data::{RewardData, collate};
use crate::config::Scheduler;
use crate::data::{epoch_order, longest_first};
use crate::train::checkpoint::{CheckpointError, fingerprint as fingerprint_of};
use crate::train::clip_grad_norm;
use crate::train::schedule::{lr_multiplier, warmup_steps};

/// The loss of `scores` (`[sequences, labels]`, in [`RewardData::sequences`] order) on examples
/// `idx`, with how many of them came out right.
fn loss_of<B: Backend>(
    data: &RewardData,
    idx: &[usize],
    scores: Tensor<B, 2>,
    center: Option<f64>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let device = scores.device();
    match data {
        RewardData::Labelled(v) => {
            let labels: Vec<i64> = idx.iter().map(|&i| v[i].1 as i64).collect();
            let labels =
                Tensor::<B, 1, Int>::from_data(TensorData::from(labels.as_slice()), &device);
            let correct = scores
                .clone()
                .argmax(1)
                .squeeze_dim::<1>(1)
                .equal(labels.clone())
                .float()
                .sum();
            (cross_entropy(scores, labels), correct)
        }
        RewardData::Pairs(v) => {
            let n = idx.len();
            let r = reward_of(scores);
            let (c, rj) = (r.clone().slice(0..n), r.slice(n..2 * n));
            let margin = v[idx[0]].margin.is_some().then(|| {
                let m: Vec<f32> = idx.iter().map(|&i| v[i].margin.unwrap_or(0.0)).collect();
                Tensor::<B, 1>::from_data(TensorData::from(m.as_slice()), &device)
            });
            let correct = c.clone().greater(rj.clone()).float().sum();
            (bradley_terry(c, rj, margin, center), correct)
        }
    }
}

/// Fits `model` to `data` as `config` says, calling `on_step` after each step; returns the
/// fitted model. `pad` fills short rows (never read: the head reads the last real token). With
/// `checkpoints`, the state is saved every `every` steps and a training that finds a checkpoint
/// there resumes from it (replaying its step reports to `on_step` first), ending with the model
/// an uninterrupted training gives.
pub fn train_reward_model<B: AutodiffBackend>(
    model: SequenceClassifier<B>,
    data: &RewardData,
    config: &RewardConfig,
    pad: u32,
    device: &B::Device,
    checkpoints: Option<&RewardCheckpoints>,
    on_step: impl FnMut(&RewardStep),
) -> Result<SequenceClassifier<B>, CheckpointError> {
    if data.is_empty() || config.epochs == 0 {
        return Ok(model);
    }
    let run = Fit {
        data,
        config,
        checkpoints,
        device,
    };
    Ok(match config.trainable {
        Trainable::All => run.fit(model, on_step, |m, idx| {
            let (ids, mask) = collate(&data.sequences(idx), pad, device);
            m.forward(ids, mask)
        })?,
        Trainable::Head => {
            let pooled = pooled_states(&model.valid(), data, pad, config.batch_size, device);
            let pooled = Tensor::<B, 2>::from_inner(pooled);
            let n = data.len() as i64;
            let head = run.fit(model.score.clone(), on_step, |head, idx| {
                let rows: Vec<i64> = match data {
                    RewardData::Labelled(_) => idx.iter().map(|&i| i as i64).collect(),
                    // Pooled states hold every chosen text, then every rejected one.
                    RewardData::Pairs(_) => idx
                        .iter()
                        .map(|&i| i as i64)
                        .chain(idx.iter().map(|&i| i as i64 + n))
                        .collect(),
                };
                let rows = Tensor::from_data(TensorData::from(rows.as_slice()), device);
                head_scores(head, pooled.clone().select(0, rows))
            })?;
            let mut model = model;
            model.score = head;
            model
        }
    })
}

/// The head on pooled states (`[rows, hidden]`).
fn head_scores<B: Backend>(head: &Linear<B>, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
    ganpo_core::affine::linear(head, pooled.unsqueeze_dim::<3>(1)).squeeze_dim(1)
}

/// The pooled last-token hidden states of every sequence of `data` (for pairs: all chosen texts,
/// then all rejected ones), computed without gradients in batches of `batch` sequences.
fn pooled_states<B: Backend>(
    model: &SequenceClassifier<B>,
    data: &RewardData,
    pad: u32,
    batch: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let all: Vec<usize> = (0..data.len()).collect();
    let sequences = data.sequences(&all);
    let parts: Vec<Tensor<B, 2>> = sequences
        .chunks(batch.max(1))
        .map(|rows| {
            let (ids, mask) = collate(rows, pad, device);
            model.pool(ids, mask)
        })
        .collect();
    Tensor::cat(parts, 0)
}

/// What the training loop works on.
struct Fit<'a, B: Backend> {
    data: &'a RewardData,
    config: &'a RewardConfig,
    checkpoints: Option<&'a RewardCheckpoints>,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> Fit<'_, B> {
    /// The training loop over any trainable module `M` (the whole classifier, or its head on
    /// cached states): `scores(m, idx)` gives the scores of examples `idx` in
    /// [`RewardData::sequences`] order.
    fn fit<M: AutodiffModule<B>>(
        &self,
        module: M,
        mut on_step: impl FnMut(&RewardStep),
        scores: impl Fn(&M, &[usize]) -> Tensor<B, 2>,
    ) -> Result<M, CheckpointError> {
        let (data, config) = (self.data, self.config);
        let optim = AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(config.weight_decay as f32)
            .init::<B, M>();
        let fingerprint = fingerprint(data);
        let (mut module, mut optim, mut done) = match self.checkpoints {
            Some(c) => {
                let (m, o, state) =
                    reward_checkpoint::load(c, module, optim, config, &fingerprint, self.device)?;
                (m, o, state.map(|s| s.steps).unwrap_or_default())
            }
            None => (module, optim, Vec::new()),
        };
        done.iter().for_each(&mut on_step);
        let batch = config.batch_size.max(1);
        let per_epoch = data.len().div_ceil(batch);
        let total = per_epoch * config.epochs;
        let warmup = warmup_steps(None, config.warmup_ratio, total);
        let lengths = data.lengths();
        let start = done.len();
        for epoch in 0..config.epochs {
            let order = epoch_order(&lengths, batch, config.seed, epoch as u64, true, true);
            for (k, idx) in order.chunks(batch).enumerate() {
                let step = epoch * per_epoch + k;
                if step < start {
                    continue;
                }
                let (loss, correct) = loss_of(
                    data,
                    idx,
                    scores(&module, idx),
                    config.center_rewards_coefficient,
                );
                let loss_value = loss.clone().into_scalar().elem::<f64>();
                let accuracy = correct.into_scalar().elem::<f64>() / idx.len() as f64;
                let mut grads = GradientsParams::from_grads(loss.backward(), &module);
                let grad_norm = clip_grad_norm(&module, &mut grads, config.max_grad_norm);
                let lr = config.lr * lr_multiplier(Scheduler::Cosine, step, total, warmup);
                if loss_value.is_finite() && grad_norm.is_finite() {
                    module = optim.step(lr, module, grads);
                }
                let report = RewardStep {
                    step: step + 1,
                    total,
                    loss: loss_value,
                    accuracy,
                    grad_norm,
                    learning_rate: lr,
                };
                on_step(&report);
                let Some(c) = self.checkpoints else { continue };
                done.push(report);
                if (step + 1) % c.every.max(1) == 0 && step + 1 < total {
                    let state = RewardState {
                        step: step + 1,
                        config: config.clone(),
                        data: fingerprint.clone(),
                        steps: done.clone(),
                    };
                    reward_checkpoint::save(c, &module, &optim, &state)?;
                }
            }
        }
        Ok(module)
    }
}

/// An FNV-1a fingerprint of the training examples, to refuse resuming on other data.
fn fingerprint(data: &RewardData) -> String {
    let all: Vec<usize> = (0..data.len()).collect();
    let tokens = data
        .sequences(&all)
        .into_iter()
        .flat_map(|ids| std::iter::once(ids.len() as u64).chain(ids.iter().map(|&t| t as u64)));
    let targets: Vec<u64> = match data {
        RewardData::Labelled(v) => v.iter().map(|(_, label)| *label as u64).collect(),
        RewardData::Pairs(v) => v
            .iter()
            .map(|p| p.margin.map_or(u64::MAX, |m| m.to_bits() as u64))
            .collect(),
    };
    fingerprint_of(tokens.chain(targets))
}

/// Held-out metrics of `model` on `data`, in batches of `batch` examples, without gradients.
pub fn evaluate_reward_model<B: Backend>(
    model: &SequenceClassifier<B>,
    data: &RewardData,
    pad: u32,
    batch: usize,
    device: &B::Device,
) -> RewardEval {
    let n = data.len();
    if n == 0 {
        return RewardEval::default();
    }
    let (mut loss, mut correct, mut reward_sum, mut margin_sum, mut texts) =
        (0.0, 0.0, 0.0, 0.0, 0usize);
    // Longest first: batches of similar lengths pad little (the metrics are sums over examples).
    for idx in longest_first(&data.lengths()).chunks(batch.max(1)) {
        let (ids, mask) = collate(&data.sequences(idx), pad, device);
        let scores = model.forward(ids, mask);
        let rewards: Vec<f32> = reward_of(scores.clone()).into_data().iter().collect();
        let (l, c) = loss_of(data, idx, scores, None);
        loss += l.into_scalar().elem::<f64>() * idx.len() as f64;
        correct += c.into_scalar().elem::<f64>();
        reward_sum += rewards.iter().map(|&r| r as f64).sum::<f64>();
        texts += rewards.len();
        if let RewardData::Pairs(_) = data {
            let (c, r) = rewards.split_at(idx.len());
            margin_sum += c.iter().zip(r).map(|(a, b)| (a - b) as f64).sum::<f64>();
        }
    }
    RewardEval {
        loss: loss / n as f64,
        accuracy: correct / n as f64,
        mean_reward: reward_sum / texts.max(1) as f64,
        margin: margin_sum / n as f64,
        n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::RewardPair;
    use burn::backend::{Autodiff, NdArray};
    use ganpo_models::ModelConfig;
    use serde_json::json;

    type B = Autodiff<NdArray>;

    fn classifier(labels: &[&str], seed: u64) -> SequenceClassifier<B> {
        let json = json!({"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                          "num_hidden_layers": 1, "num_attention_heads": 4,
                          "num_key_value_heads": 4, "vocab_size": 16, "rms_norm_eps": 1e-5,
                          "tie_word_embeddings": true, "max_position_embeddings": 64});
        let config = ModelConfig::from_hf(&json, std::path::Path::new("test")).unwrap();
        let device = Default::default();
        B::seed(&device, seed);
        let labels = labels.iter().map(|s| s.to_string()).collect();
        SequenceClassifier::new(config.init(&device), labels, &device)
    }

    /// Texts of tokens 2..10; positive when token 7 occurs (anywhere).
    fn texts(n: usize, seed: u64) -> Vec<(Vec<u32>, usize)> {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let len = rng.random_range(3..9);
                let mut ids: Vec<u32> = (0..len).map(|_| rng.random_range(2..7)).collect();
                if i % 2 == 0 {
                    let at = rng.random_range(0..len);
                    ids[at] = 7;
                }
                let label = usize::from(ids.contains(&7));
                (ids, label)
            })
            .collect()
    }

    fn pairs(n: usize, seed: u64) -> Vec<RewardPair> {
        let t = texts(2 * n, seed);
        t.chunks(2)
            .map(|c| RewardPair {
                chosen: c[0].0.clone(),
                rejected: c[1].0.clone(),
                margin: None,
            })
            .collect()
    }

    fn run(data: &RewardData, labels: &[&str], trainable: Trainable) -> (f64, RewardEval) {
        let config = RewardConfig {
            epochs: 30,
            batch_size: 16,
            lr: 1e-2,
            trainable,
            ..RewardConfig::default()
        };
        let device = Default::default();
        let model = classifier(labels, 0);
        let before = evaluate_reward_model(&model.valid(), data, 0, 32, &device);
        let mut steps = 0;
        let model = train_reward_model(model, data, &config, 0, &device, None, |s| {
            steps = s.step;
            assert_eq!(s.total, 30 * data.len().div_ceil(16));
        })
        .unwrap();
        assert_eq!(steps, 30 * data.len().div_ceil(16));
        (
            before.accuracy,
            evaluate_reward_model(&model.valid(), data, 0, 32, &device),
        )
    }

    #[test]
    fn full_training_learns_labels_and_preferences() {
        let labelled = RewardData::Labelled(texts(64, 1));
        let (before, after) = run(&labelled, &["neg", "pos"], Trainable::All);
        assert!(
            after.accuracy > 0.95 && after.loss < 0.15,
            "{before} -> {after:?}"
        );
        let prefs = RewardData::Pairs(pairs(48, 2));
        let (before, after) = run(&prefs, &["reward"], Trainable::All);
        assert!(
            after.accuracy > 0.95 && after.margin > 1.0,
            "{before} -> {after:?}"
        );
    }

    #[test]
    fn head_training_leaves_the_backbone_and_fits_the_head() {
        let data = RewardData::Labelled(texts(64, 3));
        let device = Default::default();
        let model = classifier(&["neg", "pos"], 0);
        let emb = |m: &ganpo_models::Lm<B>| match m {
            ganpo_models::Lm::Llama(l) => l.model.embed_tokens.weight.val().into_data(),
            _ => unreachable!(),
        };
        let emb_before = emb(&model.backbone);
        let before = evaluate_reward_model(&model.valid(), &data, 0, 32, &device);
        let config = RewardConfig {
            epochs: 40,
            lr: 5e-2,
            trainable: Trainable::Head,
            ..RewardConfig::default()
        };
        let model = train_reward_model(model, &data, &config, 0, &device, None, |_| {}).unwrap();
        let after = evaluate_reward_model(&model.valid(), &data, 0, 32, &device);
        assert!(after.loss < before.loss - 0.1, "{before:?} -> {after:?}");
        assert!(after.accuracy > 0.8, "{before:?} -> {after:?}");
        emb_before.assert_eq(&emb(&model.backbone), true);
    }

    #[test]
    fn an_interrupted_training_resumes_to_the_uninterrupted_model() {
        let data = RewardData::Labelled(texts(40, 6));
        let config = RewardConfig {
            epochs: 3,
            batch_size: 8,
            lr: 1e-2,
            ..RewardConfig::default()
        };
        let device = Default::default();
        let tmp = tempfile::tempdir().unwrap();
        let checkpoints = RewardCheckpoints {
            dir: tmp.path().join("ckpt"),
            every: 4,
        };
        // One starting model for every run, its weights drawn now: clones of a module whose
        // parameters are still lazy would each draw their own (tests running beside this one
        // share the backend's generator).
        let init = classifier(&["neg", "pos"], 0);
        let init = init.clone().load_record(init.into_record());
        let train = |stop_at: Option<usize>, log: &mut Vec<(usize, f64)>| {
            train_reward_model(
                init.clone(),
                &data,
                &config,
                0,
                &device,
                Some(&checkpoints),
                |s| {
                    log.push((s.step, s.loss));
                    // An interruption: the process dies after step `stop_at` (its checkpoint at
                    // step 8 survives; steps 9 and 10 are lost).
                    assert!(Some(s.step) != stop_at, "interrupted");
                },
            )
        };
        let mut uninterrupted = Vec::new();
        let want = train_reward_model(init.clone(), &data, &config, 0, &device, None, |s| {
            uninterrupted.push((s.step, s.loss))
        })
        .unwrap();
        let mut first = Vec::new();
        let died =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train(Some(10), &mut first)));
        assert!(died.is_err());
        assert_eq!(first.len(), 10);
        let mut resumed = Vec::new();
        let got = train(None, &mut resumed).unwrap();
        // The log is whole and equal, the weights identical.
        assert_eq!(resumed, uninterrupted);
        let weights = |m: &SequenceClassifier<B>| m.score.weight.val().into_data();
        weights(&got).assert_eq(&weights(&want), true);
        let probe = collate::<B>(&data.sequences(&[0, 1, 2]), 0, &device);
        got.forward(probe.0.clone(), probe.1.clone())
            .into_data()
            .assert_eq(&want.forward(probe.0, probe.1).into_data(), true);

        // Other settings are refused, naming the setting.
        let other = RewardConfig {
            lr: 2e-2,
            ..config.clone()
        };
        let err = train_reward_model(init, &data, &other, 0, &device, Some(&checkpoints), |_| {})
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("settings differ in: lr"), "{err}");
    }

    #[test]
    fn evaluation_counts_and_margins_are_exact() {
        // A classifier is what its scores say: check accuracy and margin against the scores
        // computed one text at a time.
        let device = Default::default();
        let model = classifier(&["reward"], 5).valid();
        let data = RewardData::Pairs(pairs(10, 4));
        let e = evaluate_reward_model(&model, &data, 0, 3, &device);
        let RewardData::Pairs(p) = &data else {
            unreachable!()
        };
        let one = |ids: &[u32]| -> f64 {
            let (i, m) = collate::<NdArray>(&[ids], 0, &device);
            model.reward(i, m).into_scalar().into()
        };
        let margins: Vec<f64> = p
            .iter()
            .map(|p| one(&p.chosen) - one(&p.rejected))
            .collect();
        let acc = margins.iter().filter(|m| **m > 0.0).count() as f64 / 10.0;
        let mean = margins.iter().sum::<f64>() / 10.0;
        assert_eq!(e.n, 10);
        assert!((e.accuracy - acc).abs() < 1e-12, "{} vs {acc}", e.accuracy);
        assert!((e.margin - mean).abs() < 1e-5, "{} vs {mean}", e.margin);
    }
}
