//! Burn's fused attention (what passes without autodiff run on the cubecl backends) against
//! ganpo's explicit path, on the backend `GANPO_TEST_BACKEND` names: grouped-query heads, a
//! scale other than the head width (Gemma's `query_pre_attn_scalar`), a soft-cap, and causal,
//! padding and sliding-window masks in which every query sees itself, as ganpo builds them.

#[macro_use]
mod common;

use burn::prelude::*;
use ganpo_core::attention::{Scores, attention, fused_attention, scaled_dot_product_attention};

/// `[batch, 1, seq, seq]`, true = hidden: future keys, keys `window` or more back, padding keys
/// (each row's last `pad[b]` positions), except the query's own key.
fn mask<B: Backend>(
    batch: usize,
    seq: usize,
    pad: &[usize],
    window: Option<usize>,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let mut masked = Vec::new();
    for &p in pad.iter().take(batch) {
        for t in 0..seq {
            for j in 0..seq {
                let seen = j <= t && window.is_none_or(|w| t - j < w) && (j < seq - p || j == t);
                masked.push(!seen);
            }
        }
    }
    Tensor::from_data(TensorData::new(masked, [batch, 1, seq, seq]), device)
}

#[test]
fn fused_attention_equals_the_explicit_path() {
    on_test_backend!(inner, |B, device| {
        let (batch, heads, kv_heads, seq, d) = (2, 4, 2, 7, 8);
        let value = |i: usize, salt: usize| (((i + salt) * 7919 % 101) as f32 - 50.0) / 23.0;
        let tensor = |h: usize, salt: usize| {
            let data: Vec<f32> = (0..batch * h * seq * d).map(|i| value(i, salt)).collect();
            Tensor::<B, 4>::from_data(TensorData::new(data, [batch, h, seq, d]), &device)
        };
        let (q, k, v) = (tensor(heads, 0), tensor(kv_heads, 31), tensor(kv_heads, 77));
        let cases = [
            ("causal", Scores::new(d), None),
            ("window 3", Scores::new(d), Some(3)),
            (
                "scale 32, soft-cap 2",
                Scores {
                    scale_dim: 32.0,
                    softcap: Some(2.0),
                },
                None,
            ),
        ];
        for (name, scores, window) in cases {
            let masked = mask::<B>(batch, seq, &[0, 3], window, &device);
            let explicit = scaled_dot_product_attention(
                q.clone(),
                k.clone(),
                v.clone(),
                Some(masked.clone()),
                scores,
            );
            let fused = fused_attention(
                q.clone(),
                k.clone(),
                v.clone(),
                Some(masked.clone()),
                scores,
            );
            let chosen = attention(q.clone(), k.clone(), v.clone(), Some(masked), scores);
            let want: Vec<f32> = explicit.into_data().to_vec().unwrap();
            for (path, got) in [("fused", fused), ("attention", chosen)] {
                let got: Vec<f32> = got.into_data().to_vec().unwrap();
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
                    .fold(0f32, f32::max);
                assert!(worst < 1e-5, "{name}, {path}: off by {worst}");
            }
        }
    });
}
