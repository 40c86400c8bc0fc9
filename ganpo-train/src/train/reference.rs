//! The frozen reference's outputs on a batch: from a live forward pass, or from a cache filled
//! once before training (`train.precompute_ref_logps`, `train.cache_ref_latents`).

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::LossError;
use ganpo_models::CausalLm;

use super::objective::{Scoring, halves, model_pass};
use crate::data::{PairBatch, PreferenceDataset, Truncation, collate};

/// The reference's outputs for one pair, computed before training.
#[derive(Clone, Debug, PartialEq)]
pub struct RefCache {
    /// Summed completion log-probs `(chosen, rejected)`.
    pub logps: (f64, f64),
    /// Last-layer hidden states of the (truncated) chosen and rejected sequences, row-major
    /// `[length, d_model]`, when latents are cached.
    pub latents: Option<(Vec<f32>, Vec<f32>)>,
}

/// What the step and the evaluation need from the reference for one batch.
#[derive(Clone, Debug)]
pub struct RefOutputs<B: Backend> {
    /// `(chosen, rejected)` log-probs, `[n]` each.
    pub logps: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    /// Hidden states `[2n, seq, d]`, zero at padding positions when they come from the cache.
    pub hidden: Option<Tensor<B, 3>>,
}

impl<B: Backend> RefOutputs<B> {
    /// The same outputs on an autodiff backend over `B`, untracked (constants of the step's
    /// graph).
    pub fn lift<A: AutodiffBackend<InnerBackend = B>>(self) -> RefOutputs<A> {
        RefOutputs {
            logps: self
                .logps
                .map(|(c, r)| (Tensor::from_inner(c), Tensor::from_inner(r))),
            hidden: self.hidden.map(Tensor::from_inner),
        }
    }
}

/// Which of the reference's outputs a step or an evaluation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefNeeds {
    /// Summed completion log-probs (the base loss compares against the reference).
    pub logps: bool,
    /// Last-layer hidden states (GANPO's reference latents).
    pub hidden: bool,
}

/// The reference's outputs on `batch` (the pairs `indices` of its dataset), as the training step
/// and the evaluation both resolve them: what `needs` asks for, from `cache` where it has it, else
/// from a live pass of `model`. An output that is needed but neither cached nor computable (no
/// model) is an error naming what needed it. A live pass scores as `scoring` says (LD-DPO's
/// weights, the LM head's chunks); cached log-probs were scored so when they were computed.
pub fn reference_outputs<B: Backend, R: CausalLm<B>>(
    model: Option<&R>,
    cache: Option<&[RefCache]>,
    indices: &[usize],
    batch: &PairBatch<B>,
    needs: RefNeeds,
    d_model: usize,
    scoring: Scoring,
) -> Result<RefOutputs<B>, LossError> {
    let device = batch.ids.device();
    let cached = cache.map(|c| from_cache(c, indices, batch, d_model, &device));
    let (mut logps, mut hidden) = cached.map_or((None, None), |c| (c.logps, c.hidden));
    let missing = (needs.logps && logps.is_none()) || (needs.hidden && hidden.is_none());
    if let Some(model) = model.filter(|_| missing) {
        let out = live(model, batch, scoring);
        logps = logps.or(out.logps);
        hidden = hidden.or(out.hidden);
    }
    if needs.logps && logps.is_none() {
        return Err(LossError::MissingReference("the base loss"));
    }
    if needs.hidden && hidden.is_none() {
        return Err(LossError::MissingReference("GANPO's reference latents"));
    }
    Ok(RefOutputs {
        logps: logps.filter(|_| needs.logps),
        hidden: hidden.filter(|_| needs.hidden),
    })
}

/// Runs `reference` over `data` (in order, `batch_size` pairs at a time) and keeps each pair's
/// log-probs, and its latents when `with_latents`, scored as `scoring` says.
#[allow(clippy::too_many_arguments)]
pub fn precompute<B: Backend, R: CausalLm<B>>(
    reference: &R,
    data: &PreferenceDataset,
    truncation: &Truncation,
    pad_id: u32,
    batch_size: usize,
    with_latents: bool,
    scoring: Scoring,
    device: &B::Device,
) -> Result<Vec<RefCache>, ganpo_core::LossError> {
    let mut out = Vec::with_capacity(data.len());
    let pairs: Vec<_> = data.pairs.iter().collect();
    for chunk in pairs.chunks(batch_size.max(1)) {
        let host = collate(chunk, truncation, pad_id, None);
        let batch: PairBatch<B> = host.to_device(device)?;
        let pass = model_pass(reference, &batch, false, scoring.for_reference());
        let n = chunk.len();
        let logps = pass
            .logps
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .expect("f64");
        let hidden = with_latents.then(|| {
            let [_, seq, d] = pass.hidden.dims();
            let h = pass
                .hidden
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32");
            (h, seq, d)
        });
        for i in 0..n {
            let latents = hidden.as_ref().map(|(h, seq, d)| {
                let row = |r: usize| {
                    let len = host.attention[r * seq..(r + 1) * seq]
                        .iter()
                        .filter(|&&a| a)
                        .count();
                    h[r * seq * d..(r * seq + len) * d].to_vec()
                };
                (row(i), row(n + i))
            });
            out.push(RefCache {
                logps: (logps[i], logps[n + i]),
                latents,
            });
        }
    }
    Ok(out)
}

/// The cached outputs of the pairs `indices` (in batch order) laid out like `batch`.
fn from_cache<B: Backend>(
    cache: &[RefCache],
    indices: &[usize],
    batch: &PairBatch<B>,
    d_model: usize,
    device: &B::Device,
) -> RefOutputs<B> {
    let n = indices.len();
    let (c, r): (Vec<f64>, Vec<f64>) = indices.iter().map(|&j| cache[j].logps).unzip();
    let logps = Some((
        Tensor::from_data(TensorData::new(c, [n]), device),
        Tensor::from_data(TensorData::new(r, [n]), device),
    ));
    let hidden = indices
        .iter()
        .all(|&j| cache[j].latents.is_some())
        .then(|| {
            let seq = batch.ids.dims()[1];
            let mut h = vec![0f32; 2 * n * seq * d_model];
            for (i, &j) in indices.iter().enumerate() {
                let (chosen, rejected) = cache[j].latents.as_ref().expect("checked above");
                for (row, v) in [(i, chosen), (n + i, rejected)] {
                    let start = row * seq * d_model;
                    h[start..start + v.len()].copy_from_slice(v);
                }
            }
            Tensor::from_data(TensorData::new(h, [2 * n, seq, d_model]), device)
        });
    RefOutputs { logps, hidden }
}

/// The outputs of a live reference pass (on the same backend as `batch`).
fn live<B: Backend, R: CausalLm<B>>(
    reference: &R,
    batch: &PairBatch<B>,
    scoring: Scoring,
) -> RefOutputs<B> {
    let pass = model_pass(reference, batch, false, scoring.for_reference());
    RefOutputs {
        logps: Some(halves(pass.logps, batch.pairs)),
        hidden: Some(pass.hidden),
    }
}
