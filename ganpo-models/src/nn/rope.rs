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
    /// Per-frequency divisors of the base frequencies, as llama.cpp stores Llama 3.1+ scaling in
    /// a GGUF (`rope_freqs.weight`, one value per frequency, no scaling metadata).
    Factors {
        /// `factors[i]` divides the `i`-th base frequency.
        factors: Vec<f64>,
    },
}

impl RopeScaling {
    /// The Llama 3 parameters that produce `factors` (a GGUF's `rope_freqs.weight`) for this
    /// `theta` and `head_dim`, so the model can be described in an HF `config.json`.
    ///
    /// llama.cpp's converter computes the factors from `factor`, `low_freq_factor`,
    /// `high_freq_factor` and the original context length, but the factors alone do not
    /// determine all four: this assumes Meta's `low_freq_factor = 1`, `high_freq_factor = 4`
    /// (every Llama 3.x release), recovers the rest, and returns `None` unless the recovered
    /// scaling reproduces every factor (relative error 1e-5).
    pub fn llama3_from_factors(factors: &[f64], theta: f64, head_dim: usize) -> Option<Self> {
        let (low, high) = (1.0, 4.0);
        let factor = factors.iter().cloned().fold(f64::NAN, f64::max);
        if factor.is_nan() || factor < 1.0 || factors.len() != head_dim / 2 {
            return None;
        }
        let wavelen =
            |i: usize| 2.0 * std::f64::consts::PI * theta.powf((2 * i) as f64 / head_dim as f64);
        // In the blended band, 1/d = (1 - s)/factor + s with s = (old/wavelen - low)/(high - low).
        let blended: Vec<f64> = factors
            .iter()
            .enumerate()
            .filter(|(_, d)| **d > 1.0 + 1e-6 && **d < factor - 1e-6)
            .map(|(i, d)| {
                let s = (1.0 / d - 1.0 / factor) / (1.0 - 1.0 / factor);
                wavelen(i) * (low + s * (high - low))
            })
            .collect();
        let old = if blended.is_empty() {
            // Only the band edges constrain it: the longest wavelength left unscaled sets a lower
            // bound (old > high * wavelen), the shortest scaled one an upper bound.
            let scaled_min = (0..factors.len())
                .filter(|&i| factors[i] >= factor - 1e-6)
                .map(wavelen)
                .fold(f64::INFINITY, f64::min);
            (scaled_min * low).floor()
        } else {
            (blended.iter().sum::<f64>() / blended.len() as f64).round()
        };
        let candidate = Self::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: old,
        };
        let exact = Rotary::new(
            head_dim,
            theta,
            &Self::Factors {
                factors: factors.to_vec(),
            },
        );
        let fitted = Rotary::new(head_dim, theta, &candidate);
        let agrees = exact
            .inv_freq
            .iter()
            .zip(&fitted.inv_freq)
            .all(|(a, b)| ((a - b) / a).abs() < 1e-5);
        agrees.then_some(candidate)
    }
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
            RopeScaling::Factors { factors } => Self {
                inv_freq: base.iter().zip(factors).map(|(f, d)| f / d).collect(),
                position_scale: 1.0,
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Llama 3.1 8B's scaling: the per-frequency divisors it implies (what llama.cpp stores as
    /// `rope_freqs.weight`) give the parameters back.
    #[test]
    fn llama3_parameters_are_recovered_from_their_factors() {
        let (theta, head_dim) = (500000.0, 128);
        let llama31 = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let base = Rotary::new(head_dim, theta, &RopeScaling::Default);
        let scaled = Rotary::new(head_dim, theta, &llama31);
        let factors: Vec<f64> = base
            .inv_freq
            .iter()
            .zip(&scaled.inv_freq)
            .map(|(b, s)| ((b / s) as f32) as f64) // stored as f32 in the GGUF
            .collect();
        assert!(
            factors.iter().any(|&d| d > 1.01 && d < 7.99),
            "a blended band"
        );
        assert_eq!(
            RopeScaling::llama3_from_factors(&factors, theta, head_dim),
            Some(llama31)
        );
        // Factors no Llama 3 scaling produces are kept as they are.
        let mut odd = factors.clone();
        odd[3] = 1.5;
        assert_eq!(
            RopeScaling::llama3_from_factors(&odd, theta, head_dim),
            None
        );
        let exact = Rotary::new(head_dim, theta, &RopeScaling::Factors { factors: odd });
        assert!((exact.inv_freq[3] - base.inv_freq[3] / 1.5).abs() < 1e-15);
    }
}
