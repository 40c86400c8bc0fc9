//! The phases of one optimizer step, in the order [`Trainer::step`] calls them:
//! 1. [`micro_batches`](Trainer::micro_batches): the step's pairs, collated and on the device;
//! 2. [`reference_phase`](Trainer::reference_phase): the reference's log-probs and latents;
//! 3. [`discriminator_phase`](Trainer::discriminator_phase): the discriminators' AdamW steps on
//!    detached policy latents (this updates GANPO's running means);
//! 4. [`policy_phase`](Trainer::policy_phase): base loss + generator term through the updated,
//!    frozen discriminators, gradients summed over micro-batches and clipped;
//! 5. [`optimizer_step`](Trainer::optimizer_step): the policy's AdamW step, or a counted skip
//!    when anything in the step was non-finite;
//! 6. [`step_metrics`](Trainer::step_metrics): the step's means, added to the logging window.

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::ganpo::LatentBatch;
use ganpo_core::{Ganpo, Pooling};
use ganpo_models::CausalLm;

use super::checkpointing::backward_through_layers;
use super::chunked_logps::backward_through_head;
use super::clip::clip_grad_norm;
use super::collective::ShareWeights;
use super::metrics::{MetricMeans, read_metrics};
use super::objective::{ModelPass, base_objective, latent_batch, model_pass, named, policy_pass};
use super::precision::{compute_copy, grads_like, to_float};
use super::reference::{RefNeeds, RefOutputs, reference_outputs};
use super::trainer::{TrainError, Trainer};
use crate::data::PairBatch;

/// One micro-batch of a step: which training pairs, and their tensors.
pub(super) struct MicroBatch<B: Backend> {
    /// Indices into the training set, in batch order.
    pub indices: Vec<usize>,
    /// The collated pairs (chosen rows first).
    pub batch: PairBatch<B>,
    /// What this micro-batch's losses and metrics count for: all 1 on one device; a
    /// data-parallel replica's share ([`Trainer::share_of`]).
    pub weights: ShareWeights,
}

/// What the policy phase returns: the clipped gradients, their norm before clipping, and
/// whether any loss, metric or the norm was non-finite.
pub(super) struct PolicyGrads {
    pub grads: GradientsParams,
    pub norm: f64,
    pub nonfinite: bool,
}

impl<B: AutodiffBackend, M: AutodiffModule<B> + CausalLm<B>> Trainer<B, M>
where
    M::InnerModule: CausalLm<B::InnerBackend>,
{
    /// Runs one optimizer step (the module doc lists its phases) and returns its metrics.
    pub fn step(&mut self) -> Result<Vec<(String, f64)>, TrainError> {
        let lr = self.learning_rate();
        // Dropout draws depend on the step only, so a resumed run draws the same.
        let seed = self
            .config
            .train
            .seed
            .wrapping_add(1 + self.state.step as u64);
        B::seed(&self.device, seed);
        let micro = self.micro_batches()?;
        if let Some(p) = &mut self.profile {
            p.start::<B>(&self.device);
        }
        let policy = self.compute_policy();
        let refs = self.reference_phase(&micro)?;
        self.lap("reference_forward");

        let mut metrics = MetricMeans::default();
        let (first_pass, disc_nonfinite) =
            self.discriminator_phase(&policy, &micro, &refs, lr, &mut metrics)?;
        let policy_grads = self.policy_phase(&policy, &micro, &refs, first_pass, &mut metrics)?;
        let nonfinite = disc_nonfinite || policy_grads.nonfinite;
        self.optimizer_step(policy_grads.grads, nonfinite, lr)?;
        self.sync_reference();
        let metrics = self.metrics_across_replicas(metrics)?;
        Ok(self.step_metrics(metrics, policy_grads.norm, lr))
    }

    /// The learning rate of the coming step: `train.lr` times the warm-up / decay multiplier.
    fn learning_rate(&self) -> f64 {
        let t = &self.config.train;
        let total = self.total_steps();
        let warmup = super::schedule::warmup_steps(t.warmup_steps, t.warmup_ratio, total);
        t.lr * super::schedule::lr_multiplier(t.scheduler, self.state.step, total, warmup)
    }

    /// The step's micro-batches, collated and on the device; counts their tokens.
    fn micro_batches(&mut self) -> Result<Vec<MicroBatch<B>>, TrainError> {
        let truncation = self.config.data.truncation();
        let pad_to = self.config.data.pad_to_multiple_of;
        let mut out = Vec::new();
        for indices in self.next_micro_batches() {
            let pairs: Vec<_> = indices.iter().map(|&i| &self.train.pairs[i]).collect();
            let labels = self.train.labels_of(&indices);
            // An unpaired example's KL row is scored, not trained on (TRL counts the rows alone).
            let kl_rows = labels.is_none() as usize;
            self.state.tokens += pairs
                .iter()
                .map(|p| {
                    ((1 + kl_rows) * p.prompt.len() + p.chosen.len() + kl_rows * p.rejected.len())
                        as u64
                })
                .sum::<u64>();
            let host =
                crate::data::collate(&pairs, &truncation, self.pad_id, pad_to).with_labels(labels);
            let (indices, host, weights) = self.share_of(indices, host);
            let batch = host.to_device::<B>(&self.device)?;
            out.push(MicroBatch {
                indices,
                batch,
                weights,
            });
        }
        Ok(out)
    }

    /// The policy in the compute dtype ([`compute_copy`]: its trainable parameters fresh leaves
    /// under the masters' ids, whose gradients [`grads_like`] casts back).
    fn compute_policy(&self) -> M {
        match self.config.train.compute_dtype.cast_to() {
            Some(dtype) => compute_copy(&self.policy, dtype),
            None => self.policy.clone(),
        }
    }

    /// Which latent positions the discriminators see.
    pub(super) fn pooling(&self) -> Pooling {
        self.config
            .ganpo
            .as_ref()
            .map(|g| g.pooling)
            .unwrap_or_default()
    }

    /// The reference's outputs on each micro-batch, from the cache where it has them, else from
    /// a pass on the inner backend (no autodiff bookkeeping), lifted as untracked tensors.
    fn reference_phase(&self, micro: &[MicroBatch<B>]) -> Result<Vec<RefOutputs<B>>, TrainError> {
        let needs = RefNeeds {
            logps: self.config.loss.needs_reference(),
            hidden: self.ganpo.is_some(),
        };
        let d_model = self.policy.hidden_size();
        micro
            .iter()
            .map(|m| {
                let outputs = reference_outputs(
                    self.reference.as_ref(),
                    self.ref_cache.as_deref(),
                    &m.indices,
                    &inner_batch(&m.batch),
                    needs,
                    d_model,
                    self.scoring(),
                )?;
                Ok(outputs.lift())
            })
            .collect()
    }

    /// Phase 1, with GANPO: `train.disc_steps` AdamW steps of the discriminators on detached
    /// policy latents, the loss of each accumulated over the micro-batches (each `/ k`) and
    /// clipped to `train.disc_max_grad_norm`. A non-finite loss or norm stops the phase without
    /// stepping (and is reported). With one micro-batch its tracked policy pass is returned for
    /// the policy phase to reuse; with several, the latents come from passes without autodiff.
    fn discriminator_phase(
        &mut self,
        policy: &M,
        micro: &[MicroBatch<B>],
        refs: &[RefOutputs<B>],
        lr: f64,
        metrics: &mut MetricMeans,
    ) -> Result<(Option<ModelPass<B>>, bool), TrainError> {
        let Some(mut ganpo) = self.ganpo.clone() else {
            return Ok((None, false));
        };
        let (latents, first_pass) = self.detached_latents(policy, micro, refs);
        self.lap("policy_forward");
        let t = &self.config.train;
        let k = micro.len() as f64;
        let mut nonfinite = false;
        // Unpaired micro-batches with examples of one label only have no latent sets to compare.
        let latents: Vec<(LatentBatch<B>, f64)> = latents
            .into_iter()
            .zip(micro)
            .filter_map(|(l, m)| l.map(|l| (l, m.weights.pairs)))
            .collect();
        let steps = if latents.is_empty() { 0 } else { t.disc_steps };
        let sync_error = std::cell::RefCell::new(None);
        for _ in 0..steps {
            let mut acc = GradientsAccumulator::<Ganpo<B>>::new();
            let mut d_metrics = Vec::new();
            for (l, weight) in &latents {
                let d = self.discriminator_loss_across_replicas(&ganpo, l, *weight, &sync_error);
                let grads = (d.loss / (k / weight)).backward();
                acc.accumulate(&ganpo, GradientsParams::from_grads(grads, &ganpo));
                d_metrics.push((d.metrics, *weight));
            }
            if let Some(e) = sync_error.take() {
                return Err(e);
            }
            // Read once all micro-batches are queued (one device sync).
            let values: Vec<_> = d_metrics
                .iter()
                .flat_map(|(m, w)| m.to_vec().into_iter().map(move |(n, v)| (n, v, *w)))
                .collect();
            let mut grads = self.grads_across_replicas(&ganpo, acc.grads())?;
            let norm = clip_grad_norm(&ganpo, &mut grads, t.disc_max_grad_norm);
            let stop = !norm.is_finite() || values.iter().any(|(_, v, _)| !v.is_finite());
            let stop = self.any_replica(stop)?;
            if stop {
                nonfinite = true;
                break;
            }
            ganpo = self.ganpo_optim.step(lr * t.disc_lr_ratio, ganpo, grads);
            // The metrics of the last discriminator step are the step's.
            metrics.clear();
            for (name, v, w) in values {
                metrics.add(name, v, w);
            }
            metrics.add("gan/d_grad_norm", norm, 1.0);
        }
        self.ganpo = Some(ganpo);
        self.lap("discriminator_step");
        Ok((first_pass, nonfinite))
    }

    /// The discriminators' inputs: detached policy latents against the reference's, one
    /// [`LatentBatch`] per micro-batch (none for an unpaired one without both labels), and the
    /// tracked pass when there is one micro-batch.
    fn detached_latents(
        &self,
        policy: &M,
        micro: &[MicroBatch<B>],
        refs: &[RefOutputs<B>],
    ) -> (Vec<Option<LatentBatch<B>>>, Option<ModelPass<B>>) {
        let pooling = self.pooling();
        let latents = |policy_hidden, i: usize| {
            let reference = refs[i]
                .hidden
                .clone()
                .expect("reference_phase resolves latents");
            latent_batch(policy_hidden, reference, &micro[i].batch, pooling)
        };
        if let [only] = micro {
            let pass = self.tracked_pass(policy, &only.batch);
            (vec![latents(pass.hidden.clone().detach(), 0)], Some(pass))
        } else {
            let inner = policy.valid();
            let all = (0..micro.len())
                .map(|i| {
                    let batch = inner_batch(&micro[i].batch);
                    let hidden = inner.hidden_states(batch.ids, batch.attention);
                    latents(Tensor::from_inner(to_float(hidden)), i)
                })
                .collect();
            (all, None)
        }
    }

    /// Phase 2: per micro-batch the policy's tracked pass (phase 1's, when it made one), the
    /// base loss and, with GANPO, the generator term of the discriminators just updated (frozen,
    /// eval mode); the gradients summed over micro-batches (each loss `/ k`) and clipped to
    /// `train.max_grad_norm`.
    fn policy_phase(
        &mut self,
        policy: &M,
        micro: &[MicroBatch<B>],
        refs: &[RefOutputs<B>],
        mut first_pass: Option<ModelPass<B>>,
        metrics: &mut MetricMeans,
    ) -> Result<PolicyGrads, TrainError> {
        let k = micro.len() as f64;
        let mut nonfinite = false;
        let mut acc = GradientsAccumulator::<M>::new();
        for (m, refs) in micro.iter().zip(refs) {
            let mut pass = match first_pass.take() {
                Some(pass) => pass,
                None => self.tracked_pass(policy, &m.batch),
            };
            let trunk = pass.trunk.take();
            let head = pass.head.take();
            self.lap("policy_forward");
            let (base, mut entries) =
                base_objective(&self.config.loss, &pass, refs.logps.clone(), &m.batch)?;
            // Each loss counts `weight / k` (`/ k` on one device, where the weight is 1).
            let k = k / m.weights.pairs;
            let mut loss = base.clone().detach();
            // What the (one) backward pass through the model differentiates, `/ k`.
            let mut objective = None;
            match head {
                None => objective = Some(base / k),
                Some(head) => {
                    // The base loss reaches the model only through the log-probs' leaf: its
                    // gradient there is carried through the LM head chunk by chunk.
                    let leaf_grads = (base / k).backward();
                    if let Some(g) = head.leaf.grad(&leaf_grads) {
                        let stack = policy.layer_stack().expect("checked by Trainer::new");
                        let (head_grads, surrogate) = backward_through_head(policy, stack, head, g);
                        acc.accumulate(policy, head_grads);
                        objective = Some(surrogate);
                    }
                }
            }
            let latents = self.ganpo.as_ref().and_then(|_| {
                let reference = refs
                    .hidden
                    .clone()
                    .expect("reference_phase resolves latents");
                latent_batch(pass.hidden, reference, &m.batch, self.pooling())
            });
            if let (Some(g), Some(latents)) = (&self.ganpo, latents) {
                let sync_error = std::cell::RefCell::new(None);
                let generator =
                    self.generator_loss_across_replicas(g, &latents, m.weights.pairs, &sync_error);
                if let Some(e) = sync_error.take() {
                    return Err(e);
                }
                loss = loss + generator.term.clone().detach();
                let term = generator.term / k;
                objective = Some(match objective {
                    Some(o) => o + term,
                    None => term,
                });
                entries.extend(named(&generator.metrics));
            }
            entries.insert(0, ("loss", loss));
            let values = read_metrics(entries);
            nonfinite |= values.iter().any(|(_, v)| !v.is_finite());
            for (name, v) in &values {
                metrics.add(name, *v, m.weights.of_metric(name));
            }
            let Some(objective) = objective else {
                continue;
            };
            let grads = objective.backward();
            if let Some(trunk) = trunk {
                let stack = policy.layer_stack().expect("checked by Trainer::new");
                let leaf_grad = trunk.leaf.grad(&grads);
                // No gradient reaches the leaf when nothing in the loss depends on it.
                if let Some(leaf_grad) = leaf_grad {
                    let below = backward_through_layers(policy, stack, trunk, leaf_grad);
                    acc.accumulate(policy, below);
                }
            }
            acc.accumulate(policy, GradientsParams::from_grads(grads, policy));
        }
        let grads = match self.config.train.compute_dtype.cast_to() {
            Some(_) => grads_like(&self.policy, acc.grads()),
            None => acc.grads(),
        };
        let mut grads = self.grads_across_replicas(&self.policy, grads)?;
        let norm = clip_grad_norm(&self.policy, &mut grads, self.config.train.max_grad_norm);
        nonfinite |= !norm.is_finite();
        let nonfinite = self.any_replica(nonfinite)?;
        self.lap("policy_backward");
        Ok(PolicyGrads {
            grads,
            norm,
            nonfinite,
        })
    }

    /// The policy's tracked pass on `batch`: whole, or with its layers to be recomputed in the
    /// backward pass (`train.gradient_checkpointing`), or its LM head run in chunks of rows
    /// (`train.logprob_chunk_rows`).
    fn tracked_pass(&self, policy: &M, batch: &PairBatch<B>) -> ModelPass<B> {
        let t = &self.config.train;
        if !t.gradient_checkpointing && t.logprob_chunk_rows.is_none() {
            return model_pass(policy, batch, true, self.scoring());
        }
        let inner = policy.valid();
        let stack = policy.layer_stack().expect("checked by Trainer::new");
        let inner_stack = inner.layer_stack().expect("checked by Trainer::new");
        policy_pass(
            stack,
            inner_stack,
            batch,
            true,
            t.gradient_checkpointing,
            self.scoring(),
        )
    }

    /// Counts the step, and takes the policy's AdamW step unless the step was non-finite: then
    /// the update is skipped and counted, and `train.max_nonfinite_steps` consecutive skips stop
    /// the run.
    fn optimizer_step(
        &mut self,
        grads: GradientsParams,
        nonfinite: bool,
        lr: f64,
    ) -> Result<(), TrainError> {
        self.state.step += 1;
        if !nonfinite {
            self.state.nonfinite_consecutive = 0;
            self.policy = self.policy_optim.step(lr, self.policy.clone(), grads);
            self.lap("optimizer");
            return Ok(());
        }
        let s = &mut self.state;
        s.nonfinite_consecutive += 1;
        s.nonfinite_total += 1;
        tracing::warn!(step = s.step, "non-finite loss or gradient: update skipped");
        if s.nonfinite_consecutive >= self.config.train.max_nonfinite_steps {
            return Err(TrainError::NonFinite {
                step: s.step,
                count: s.nonfinite_consecutive,
                total: s.nonfinite_total,
                last_finite: super::checkpoint::last_finite_checkpoint(
                    &self.config.train.output_dir,
                ),
            });
        }
        Ok(())
    }

    /// TR-DPO (`train.sync_ref_model`): every `ref_model_sync_steps` steps (counted as TRL's
    /// `global_step`, skipped steps included) the reference moves towards the policy.
    fn sync_reference(&mut self) {
        let t = &self.config.train;
        let every = t.ref_model_sync_steps.unwrap_or(512);
        if !t.sync_ref_model || !self.state.step.is_multiple_of(every) {
            return;
        }
        let alpha = t.ref_model_mixup_alpha.unwrap_or(0.6);
        if let Some(reference) = self.reference.take() {
            self.reference = Some(super::ref_sync::mix(reference, &self.policy.valid(), alpha));
        }
        self.lap("optimizer");
    }

    /// The step's metrics (the phases' means, then the policy's gradient norm, learning rate,
    /// tokens seen and non-finite steps so far), also added to the logging window.
    fn step_metrics(
        &mut self,
        mut metrics: MetricMeans,
        grad_norm: f64,
        lr: f64,
    ) -> Vec<(String, f64)> {
        metrics.add("grad_norm", grad_norm, 1.0);
        metrics.add("learning_rate", lr, 1.0);
        metrics.add("num_tokens", self.state.tokens as f64, 1.0);
        metrics.add("nonfinite_steps", self.state.nonfinite_total as f64, 1.0);
        let out = metrics.means();
        self.window.add_all(&out);
        out
    }
}

/// The same batch on the inner (non-autodiff) backend.
pub(super) fn inner_batch<B: AutodiffBackend>(b: &PairBatch<B>) -> PairBatch<B::InnerBackend> {
    PairBatch {
        ids: b.ids.clone().inner(),
        attention: b.attention.clone().inner(),
        completion: b.completion.clone().inner(),
        lengths: b.lengths.clone(),
        pairs: b.pairs,
        labels: b.labels.clone(),
    }
}
