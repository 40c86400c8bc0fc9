//! Held-out evaluation: TRL's `DPOTrainer.evaluate()` metrics, plus GANPO's.

use burn::prelude::*;
use ganpo_core::{Ganpo, LossError, Pooling, PreferenceLoss};
use ganpo_models::CausalLm;

use super::metrics::{MetricMeans, read_metrics};
use super::objective::{base_objective, halves, latent_batch, model_pass};
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
}

/// Evaluates `policy` against `reference` on `data`, in order, without gradients; `precomputed`
/// reference log-probs (one `(chosen, rejected)` per pair) replace the reference's when given.
///
/// Aggregation follows transformers' `Trainer.evaluate` as TRL uses it: `loss` is the mean over
/// pairs, every other metric the mean of its per-batch values. With `ganpo`, `loss` includes
/// `adv_weight * gen_loss`, and the `gan/*` metrics are computed with the discriminators in eval
/// mode and the running means left as they are. Keys are returned without the `eval_` prefix.
pub fn evaluate<B: Backend, P: CausalLm<B>, R: CausalLm<B>>(
    policy: &P,
    reference: Option<&R>,
    ganpo: Option<&Ganpo<B>>,
    precomputed: Option<&[(f64, f64)]>,
    data: &PreferenceDataset,
    settings: &EvalSettings,
    device: &B::Device,
) -> Result<Vec<(String, f64)>, LossError> {
    let mut means = MetricMeans::default();
    let needs_ref_logps = settings.loss.needs_reference();
    let pairs: Vec<_> = data.pairs.iter().collect();
    let size = settings.batch_size.max(1);
    for (b, chunk) in pairs.chunks(size).enumerate() {
        let host = collate(
            chunk,
            &settings.truncation,
            settings.pad_id,
            settings.pad_to_multiple_of,
        );
        let batch = host.to_device::<B>(device)?;
        let n = batch.pairs;
        let pass = model_pass(policy, &batch, true);
        let ref_pass = reference.map(|r| model_pass(r, &batch, false));
        let ref_logps = match (precomputed, &ref_pass, needs_ref_logps) {
            (_, _, false) => None,
            (Some(all), _, true) => {
                let (c, r): (Vec<f64>, Vec<f64>) =
                    all[b * size..b * size + n].iter().copied().unzip();
                Some((
                    Tensor::from_data(TensorData::new(c, [n]), device),
                    Tensor::from_data(TensorData::new(r, [n]), device),
                ))
            }
            (None, Some(r), true) => Some(halves(r.logps.clone(), n)),
            (None, None, true) => return Err(LossError::MissingReference("the base loss")),
        };
        let (mut loss, mut metrics) = base_objective(&settings.loss, &pass, ref_logps, &batch)?;
        if let (Some(g), Some(r)) = (ganpo, &ref_pass) {
            let latents = latent_batch(
                pass.hidden.clone(),
                r.hidden.clone(),
                &batch,
                settings.pooling,
            );
            let d = g.evaluate(&latents);
            let generator = g.generator_loss(&latents);
            loss = loss + generator.term;
            for m in [&d.metrics, &generator.metrics] {
                let values = m.values();
                for (i, &name) in m.names().iter().enumerate() {
                    metrics.push((name, values.clone().slice(s![i..i + 1])));
                }
            }
        }
        let mut values = read_metrics(vec![("loss", loss)]);
        means.add("loss", values[0].1, n as f64);
        values = read_metrics(metrics);
        means.add_all(&values);
    }
    Ok(means.means())
}
