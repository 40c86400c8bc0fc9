//! Scaled dot-product attention, written once for every model and discriminator in ganpo: the
//! Llama family, GPT-2 and Gemma (ganpo-models) and the transformer discriminator's encoder.
//!
//! `softmax(mask(softcap(q k^T / sqrt(scale_dim)))) v` with grouped-query attention (key / value
//! heads repeated as transformers' `repeat_kv`), an optional tanh soft-cap of the scores (Gemma
//! 2) and a boolean mask. Causal, padding and sliding-window masks are built by the caller
//! (`ganpo_models::nn::attention_mask`), so one function serves full, windowed and cached
//! attention alike.
//!
//! Models call [`attention`], which picks the path: passes without autodiff (the reference,
//! evaluation, generation, the untracked layers of a checkpointed pass) run burn's fused
//! attention ([`fused_attention`]: a flash-attention kernel on the cubecl backends) where the
//! backend has one; tracked passes, whose backward pass burn-autodiff would decompose anyway,
//! and the CPU backend run [`scaled_dot_product_attention`]. On the CPU burn's attention is its
//! decomposed fallback (measured no faster: 8 x 9 heads x 512 x 512 scores, 1.465 s against 1.467 s), and the
//! explicit path keeps the untracked passes (the reference) computing exactly what the tracked
//! ones do, bit for bit, where ganpo's TRL parity is checked.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::prelude::*;
//! use ganpo_core::attention::{Scores, scaled_dot_product_attention};
//!
//! let device = Default::default();
//! // One query, two keys of width 4; the second key is masked.
//! let q = Tensor::<NdArray, 4>::ones([1, 1, 1, 4], &device);
//! let k = Tensor::<NdArray, 4>::ones([1, 1, 2, 4], &device);
//! let v = Tensor::<NdArray, 4>::from_data([[[[1.0, 2.0, 3.0, 4.0], [9.0, 9.0, 9.0, 9.0]]]], &device);
//! let masked = Tensor::<NdArray, 4, Bool>::from_data([[[[false, true]]]], &device);
//! let out = scaled_dot_product_attention(q, k, v, Some(masked), Scores::new(4));
//! out.into_data().assert_eq(&TensorData::from([[[[1.0f32, 2.0, 3.0, 4.0]]]]), false);
//! ```

use burn::prelude::*;
use burn::tensor::activation::{softmax, tanh};
use burn::tensor::ops::AttentionModuleOptions;

/// Fill value of masked attention scores: `exp` of it (minus any real score) underflows to
/// exactly 0 in f32 and bf16, so a masked key gets no weight; a finite value, unlike `-inf`,
/// keeps a fully masked row (which the masks never make) from turning into NaN.
pub const MASKED_SCORE: f64 = -1.0e9;

/// How raw scores `q . k` become logits: divided by `sqrt(scale_dim)`, then optionally
/// soft-capped to `cap * tanh(score / cap)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// The scores are divided by `sqrt(scale_dim)`: the head width for the usual attention,
    /// `query_pre_attn_scalar` for Gemma.
    pub scale_dim: f64,
    /// Gemma 2's `attn_logit_softcapping`.
    pub softcap: Option<f64>,
}

impl Scores {
    /// The usual scaling by `1 / sqrt(scale_dim)`, no soft-cap.
    pub fn new(scale_dim: usize) -> Self {
        Self {
            scale_dim: scale_dim as f64,
            softcap: None,
        }
    }

    /// These scores soft-capped at `cap` (none when `None`).
    pub fn with_softcap(self, softcap: Option<f64>) -> Self {
        Self { softcap, ..self }
    }
}

/// `x` (`[batch, kv_heads, len, d]`) with each key / value head repeated for the `heads / kv_heads`
/// query heads that share it (query head `i` uses head `i / (heads / kv_heads)`), as transformers'
/// `repeat_kv`; `x` itself when there are as many heads.
pub fn repeat_kv<B: Backend>(x: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    let [b, kv, t, d] = x.dims();
    if kv == heads {
        return x;
    }
    assert!(
        heads.is_multiple_of(kv),
        "{kv} key/value heads do not divide {heads} query heads"
    );
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, heads / kv, t, d])
        .reshape([b, heads, t, d])
}

/// The attention weights `softmax(mask(softcap(q k^T / sqrt(scale_dim))))`, `[batch, heads,
/// queries, keys]`. `q`: `[batch, heads, queries, d]`; `k`: `[batch, kv_heads, keys, d]`;
/// `masked` (true = the query may not see the key) broadcasts to the scores' shape as burn's
/// `mask_fill` allows (`[batch, 1, queries, keys]` or the full shape).
pub fn attention_weights<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    masked: Option<Tensor<B, 4, Bool>>,
    scores: Scores,
) -> Tensor<B, 4> {
    let heads = q.dims()[1];
    let k = repeat_kv(k, heads);
    // The scale on q ([.., s, d]) rather than on the scores ([.., s, t]): one pass over s x d
    // elements instead of s x t, forward and backward (exact for power-of-two head widths).
    let mut logits = (q / scores.scale_dim.sqrt()).matmul(k.swap_dims(2, 3));
    if let Some(cap) = scores.softcap {
        logits = tanh(logits / cap) * cap;
    }
    if let Some(masked) = masked {
        logits = logits.mask_fill(masked, MASKED_SCORE);
    }
    softmax(logits, 3)
}

/// Scaled dot-product attention: [`attention_weights`] applied to `v` (`[batch, kv_heads,
/// keys, d]`), `[batch, heads, queries, d]`.
pub fn scaled_dot_product_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    masked: Option<Tensor<B, 4, Bool>>,
    scores: Scores,
) -> Tensor<B, 4> {
    let heads = q.dims()[1];
    attention_weights(q, k, masked, scores).matmul(repeat_kv(v, heads))
}

/// Scaled dot-product attention as every model runs it: [`fused_attention`] in a pass without
/// autodiff on a backend with a fused kernel (the cubecl backends: CUDA, wgpu), else
/// [`scaled_dot_product_attention`]. The two agree to float rounding wherever a query sees at
/// least one key (ganpo's masks always let a query see itself).
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    masked: Option<Tensor<B, 4, Bool>>,
    scores: Scores,
) -> Tensor<B, 4> {
    let device = q.device();
    if B::ad_enabled(&device) || B::name(&device).contains("ndarray") {
        scaled_dot_product_attention(q, k, v, masked, scores)
    } else {
        fused_attention(q, k, v, masked, scores)
    }
}

/// [`scaled_dot_product_attention`] through burn's `attention` module op (a flash-attention
/// kernel on the cubecl backends, which takes neither a scale of its own nor a soft-cap: the
/// scale is folded into `q` so the kernel's default `1 / sqrt(d)` gives `1 / sqrt(scale_dim)`,
/// and a soft-capped model gets burn's decomposed fallback). Key / value heads are repeated for
/// grouped-query attention and the mask expanded to `[batch, heads, queries, keys]`. A fully
/// masked query row gets zeros here, where the explicit path averages the values.
pub fn fused_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    masked: Option<Tensor<B, 4, Bool>>,
    scores: Scores,
) -> Tensor<B, 4> {
    let [b, heads, queries, d] = q.dims();
    let keys = k.dims()[2];
    let q = match scores.scale_dim == d as f64 {
        true => q,
        false => q * (d as f64 / scores.scale_dim).sqrt(),
    };
    let masked = masked.map(|m| m.expand([b, heads, queries, keys]));
    let options = AttentionModuleOptions {
        scale: None,
        softcap: scores.softcap,
        is_causal: false,
    };
    burn::tensor::module::attention(
        q,
        repeat_kv(k, heads),
        repeat_kv(v, heads),
        masked,
        None,
        options,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    // The device's default float dtype is process-wide: unit tests running beside others stay
    // in f32 and compare with f64 references at f32 precision.
    type B = NdArray;

    /// The scores of one query against keys, by hand in f64.
    fn reference(q: &[f64], keys: &[[f64; 2]], scale_dim: f64, cap: Option<f64>) -> Vec<f64> {
        let logits: Vec<f64> = keys
            .iter()
            .map(|k| {
                let s = (q[0] * k[0] + q[1] * k[1]) / scale_dim.sqrt();
                cap.map_or(s, |c| c * (s / c).tanh())
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|x| x / z).collect()
    }

    #[test]
    fn weights_match_a_hand_softmax_with_softcap_and_gqa() {
        let device = Default::default();
        let keys = [[3.0, -1.0], [0.5, 2.0], [-4.0, 1.0]];
        let queries = [[2.0, 1.0], [-1.0, 3.0]];
        // Two query heads share one key head.
        let q = Tensor::<B, 4>::from_data([[[queries[0]], [queries[1]]]], &device);
        let k = Tensor::<B, 4>::from_data([[keys]], &device);
        for cap in [None, Some(1.5)] {
            let w = attention_weights(q.clone(), k.clone(), None, Scores::new(3).with_softcap(cap));
            assert_eq!(w.dims(), [1, 2, 1, 3]);
            let got: Vec<f32> = w.into_data().to_vec().unwrap();
            for (h, query) in queries.iter().enumerate() {
                let want = reference(query, &keys, 3.0, cap);
                for j in 0..3 {
                    let diff = (got[h * 3 + j] as f64 - want[j]).abs();
                    assert!(diff < 1e-6, "{cap:?} {h} {j}: {diff}");
                }
            }
        }
    }

    #[test]
    fn masked_keys_get_exactly_zero_weight() {
        let device = Default::default();
        let q = Tensor::<B, 4>::from_data([[[[1.0, 1.0]]]], &device);
        let k = Tensor::<B, 4>::from_data([[[[50.0, 50.0], [0.0, 1.0]]]], &device);
        let masked = Tensor::<B, 4, Bool>::from_data([[[[true, false]]]], &device);
        let w: Vec<f32> = attention_weights(q, k, Some(masked), Scores::new(2))
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(w, [0.0, 1.0]);
    }

    #[test]
    fn repeat_kv_maps_query_heads_to_their_group() {
        let device = Default::default();
        let x = Tensor::<B, 4>::from_data([[[[1.0]], [[2.0]]]], &device); // 2 kv heads
        let r: Vec<f32> = repeat_kv(x, 6).into_data().to_vec().unwrap();
        assert_eq!(r, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    }
}
