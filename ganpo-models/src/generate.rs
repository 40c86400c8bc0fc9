//! Text generation with a key / value cache: greedy or sampled, batched, stopping at EOS.

use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::LayerStack;
use crate::nn::{AttentionMasks, KvCache};
use crate::{Decoder, Lm};

/// How to pick tokens and when to stop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationConfig {
    /// Most new tokens per prompt.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = all).
    pub top_p: f64,
    /// Seed of the sampler.
    pub seed: u64,
    /// Tokens that end a sequence (kept in the output).
    pub eos_token_ids: Vec<u32>,
    /// Token used to pad prompts on the left (never attended to).
    pub pad_token_id: u32,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            eos_token_ids: vec![],
            pad_token_id: 0,
        }
    }
}

/// Picks the next token from one row of logits.
fn pick(logits: &[f32], c: &GenerationConfig, rng: &mut StdRng) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if c.temperature <= 0.0 {
        return argmax();
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if c.top_k > 0 {
        order.truncate(c.top_k);
    }
    let max = logits[order[0]] as f64;
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / c.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut keep = weights.len();
    if c.top_p < 1.0 {
        let mut cumulative = 0.0;
        for (n, w) in weights.iter().enumerate() {
            cumulative += w / total;
            if cumulative >= c.top_p {
                keep = n + 1;
                break;
            }
        }
    }
    let kept: f64 = weights[..keep].iter().sum();
    let mut u = rng.random::<f64>() * kept;
    for (n, w) in weights[..keep].iter().enumerate() {
        u -= w;
        if u <= 0.0 {
            return order[n] as u32;
        }
    }
    order[keep - 1] as u32
}

/// Generates a continuation of each prompt (token ids), all in one left-padded batch with a key /
/// value cache. Each output holds the new tokens only, its EOS included when one was produced.
///
/// Positions count from each prompt's first real token, as transformers' `generate` does for
/// left-padded batches, so a prompt gets the same tokens alone or in a batch.
pub fn generate<B: Backend>(
    model: &Lm<B>,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    device: &B::Device,
) -> Vec<Vec<u32>> {
    let b = prompts.len();
    if b == 0 || config.max_new_tokens == 0 {
        return vec![vec![]; b];
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let max_position = longest + config.max_new_tokens;
    let mut valid: Vec<Vec<bool>> = prompts
        .iter()
        .map(|p| (0..longest).map(|j| j >= longest - p.len()).collect())
        .collect();
    let mut next_pos: Vec<i64> = prompts.iter().map(|p| p.len() as i64).collect();
    let ids: Vec<i64> = prompts
        .iter()
        .flat_map(|p| {
            std::iter::repeat_n(config.pad_token_id as i64, longest - p.len())
                .chain(p.iter().map(|&t| t as i64))
        })
        .collect();
    let positions: Vec<i64> = prompts
        .iter()
        .flat_map(|p| (0..longest).map(move |j| (j as i64 - (longest - p.len()) as i64).max(0)))
        .collect();
    let mut cache = KvCache::new(model.num_layers());
    let windows = model.attention_windows();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut outputs = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let mut step_ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, longest]), device);
    let mut step_pos =
        Tensor::<B, 2, Int>::from_data(TensorData::new(positions, [b, longest]), device);
    for _ in 0..config.max_new_tokens {
        let new = step_ids.dims()[1];
        let masks = AttentionMasks::step(&valid, new, &windows, device);
        let hidden = model.hidden_at(step_ids, step_pos, max_position, &masks, Some(&mut cache));
        let logits = model.head(hidden);
        let vocab = logits.dims()[2];
        let last: Vec<f32> = logits
            .slice(s![.., new - 1..new, ..])
            .reshape([b, vocab])
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap_or_default();
        let mut chosen = Vec::with_capacity(b);
        for (row, out) in outputs.iter_mut().enumerate() {
            let token = if done[row] {
                config.pad_token_id
            } else {
                pick(&last[row * vocab..(row + 1) * vocab], config, &mut rng)
            };
            if !done[row] {
                out.push(token);
                done[row] = config.eos_token_ids.contains(&token);
            }
            chosen.push(token as i64);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        for row in valid.iter_mut() {
            row.push(true);
        }
        step_ids = Tensor::from_data(TensorData::new(chosen, [b, 1]), device);
        step_pos = Tensor::from_data(TensorData::new(next_pos.clone(), [b, 1]), device);
        for p in next_pos.iter_mut() {
            *p += 1;
        }
    }
    outputs
}
