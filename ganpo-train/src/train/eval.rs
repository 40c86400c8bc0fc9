//! Held-out evaluation: TRL's `DPOTrainer.evaluate()` metrics, plus GANPO's.

use burn::prelude::*;
use ganpo_core::{Ganpo, LossError, Pooling, PreferenceLoss};
use ganpo_models::CausalLm;

use super::metrics::{MetricMeans, read_metrics};
use super::objective::{Scoring, base_objective, latent_batch, model_pass, named};
use super::reference::{RefCache, RefNeeds, reference_outputs};
use crate::data::{PreferenceDataset, Truncation, collate};

/// How to batch and score a held-out set.
#[derive(Clone, Debug)]
pub struct EvalSettings {
    /// The base loss.
    pub loss: PreferenceLoss,
    /// Which latent positions the discriminators see.
    pub pooling: Pooling,
    /// Length limits.
    pub truncation: Truncation,
    /// Padding id.
    pub pad_id: u32,
    /// Pad to a multiple of this many tokens.
    pub pad_to_multiple_of: Option<usize>,
    /// Pairs per batch.
    pub batch_size: usize,
    /// Score the LM head this many rows at a time (`train.logprob_chunk_rows`); `None` = all.
    pub logprob_chunk_rows: Option<usize>,
}

/// Evaluates `policy` against `reference` on `data`, in order, without gradients; `precomputed`
/// reference outputs (one per pair) replace the reference's where they have them.
///
/// Aggregation follows transformers' `Trainer.evaluate` as TRL uses it: `loss` is the mean over
/// pairs, every other metric the mean of its per-batch values. With `ganpo`, `loss` includes
/// `adv_weight * gen_loss`, and the `gan/*` metrics are computed with the discriminators in eval
/// mode and the running means left as they are. Keys are returned without the `eval_` prefix.
pub fn evaluate<B: Backend, P: CausalLm<B>, R: CausalLm<B>>(
    policy: &P,
    reference: Option<&R>,
    ganpo: Option<&Ganpo<B>>,
    precomputed: Option<&[RefCache]>,
    data: &PreferenceDataset,
    settings: &EvalSettings,
    device: &B::Device,
) -> Result<Vec<(String, f64)>, LossError> {
    let mut means = MetricMeans::default();
    let pairs: Vec<_> = data.pairs.iter().collect();
    let size = settings.batch_size.max(1);
    let scoring = Scoring::new(&settings.loss, settings.logprob_chunk_rows);
    for (b, chunk) in pairs.chunks(size).enumerate() {
        let host = collate(
            chunk,
            &settings.truncation,
            settings.pad_id,
            settings.pad_to_multiple_of,
        );
        let indices: Vec<usize> = (b * size..b * size + chunk.len()).collect();
        let batch = host
            .with_labels(data.labels_of(&indices))
            .to_device::<B>(device)?;
        let n = batch.pairs;
        let pass = model_pass(policy, &batch, true, scoring);
        let needs = RefNeeds {
            logps: settings.loss.needs_reference(),
            hidden: ganpo.is_some(),
        };
        let refs = reference_outputs(
            reference,
            precomputed,
            &indices,
            &batch,
            needs,
            policy.hidden_size(),
            scoring,
        )?;
        let (mut loss, mut metrics) = base_objective(&settings.loss, &pass, refs.logps, &batch)?;
        let latents = refs
            .hidden
            .and_then(|r| latent_batch(pass.hidden.clone(), r, &batch, settings.pooling));
        if let (Some(g), Some(latents)) = (ganpo, latents) {
            let d = g.evaluate(&latents);
            let generator = g.generator_loss(&latents);
            loss = loss + generator.term;
            metrics.extend(named(&d.metrics));
            metrics.extend(named(&generator.metrics));
        }
        let mut values = read_metrics(vec![("loss", loss)]);
        means.add("loss", values[0].1, n as f64);
        values = read_metrics(metrics);
        means.add_all(&values);
    }
    Ok(means.means())
}
