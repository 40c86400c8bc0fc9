//! Rotary position embeddings in the rotate-half layout of HF Llama / Qwen / Mistral.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// How the rotary frequencies are adjusted for long contexts (`rope_scaling` /
/// `rope_parameters` in HF configs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Positions divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.x: low frequencies divided by `factor`, a smooth blend in between.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Context length of pre-training.
        original_max_position_embeddings: f64,
    },
}

/// Inverse frequencies of a rotary embedding, computed once per model in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Rotary {
    inv_freq: Vec<f64>,
    position_scale: f64,
}

impl Rotary {
    /// Frequencies `theta^(-2i/head_dim)` for `i < head_dim / 2`, adjusted by `scaling`.
    pub fn new(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Self {
        let base: Vec<f64> = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64))
            .collect();
        match scaling {
            RopeScaling::Default => Self {
                inv_freq: base,
                position_scale: 1.0,
            },
            RopeScaling::Linear { factor } => Self {
                inv_freq: base,
                position_scale: 1.0 / factor,
            },
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = *original_max_position_embeddings;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                let inv_freq = base
                    .into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect();
                Self {
                    inv_freq,
                    position_scale: 1.0,
                }
            }
        }
    }

    /// `(cos, sin)` tables `[seq, head_dim]` for positions `0..seq` (each half repeated, as
    /// rotate-half expects).
    pub fn tables<B: Backend>(
        &self,
        seq: usize,
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(seq * 2 * half);
        let mut sin = Vec::with_capacity(seq * 2 * half);
        for pos in 0..seq {
            for _ in 0..2 {
                for f in &self.inv_freq {
                    let angle = pos as f64 * self.position_scale * f;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let make = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [seq, 2 * half]), device);
        (make(cos), make(sin))
    }

    /// `(cos, sin)` tables `[batch, 1, seq, head_dim]` for the given positions (`[batch, seq]`,
    /// all below `max_position`).
    pub fn tables_at<B: Backend>(
        &self,
        positions: Tensor<B, 2, Int>,
        max_position: usize,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, s] = positions.dims();
        let device = positions.device();
        let (cos, sin) = self.tables::<B>(max_position, &device);
        let d = cos.dims()[1];
        let flat = positions.reshape([b * s]);
        let pick = |t: Tensor<B, 2>| t.select(0, flat.clone()).reshape([b, 1, s, d]);
        (pick(cos), pick(sin))
    }

    /// Rotates `x` (`[batch, heads, seq, head_dim]`) by its positions' tables
    /// (`[batch or 1, 1, seq, head_dim]`).
    pub fn apply<B: Backend>(
        x: Tensor<B, 4>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let d = x.dims()[3];
        let half = d / 2;
        let x1 = x.clone().slice(s![.., .., .., 0..half]);
        let x2 = x.clone().slice(s![.., .., .., half..d]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        // The tables are built in f32; a model running in another dtype (mixed precision) uses
        // them in its own.
        let (cos, sin) = if cos.dtype() == x.dtype() {
            (cos.clone(), sin.clone())
        } else {
            (cos.clone().cast(x.dtype()), sin.clone().cast(x.dtype()))
        };
        x * cos + rotated * sin
    }
}
