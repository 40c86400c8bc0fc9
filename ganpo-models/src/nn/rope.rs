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

    /// `cos` and `sin` of every position's angles, `[seq, 2, half]` in row-major order, the
    /// first half of `sin` negated ([`RotaryTables`]).
    fn angles(&self, seq: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(seq * 2 * half);
        let mut sin = Vec::with_capacity(seq * 2 * half);
        for pos in 0..seq {
            for first in [true, false] {
                for f in &self.inv_freq {
                    let angle = pos as f64 * self.position_scale * f;
                    cos.push(angle.cos() as f32);
                    let s = angle.sin() as f32;
                    sin.push(if first { -s } else { s });
                }
            }
        }
        (cos, sin)
    }

    /// The tables of `positions` (`[batch, seq]`, all below `max_position`), shaped for
    /// [`RotaryTables::apply`].
    pub fn tables_at<B: Backend>(
        &self,
        positions: Tensor<B, 2, Int>,
        max_position: usize,
    ) -> RotaryTables<B> {
        let [b, s] = positions.dims();
        let device = positions.device();
        let half = self.inv_freq.len();
        let (cos, sin) = self.angles(max_position);
        let table = |v: Vec<f32>| {
            Tensor::<B, 2>::from_data(TensorData::new(v, [max_position, 2 * half]), &device)
        };
        let flat = positions.reshape([b * s]);
        let pick = |t: Tensor<B, 2>| t.select(0, flat.clone()).reshape([b, s, 1, 2, half]);
        RotaryTables {
            cos: pick(table(cos)),
            signed_sin: pick(table(sin)),
        }
    }
}

/// The rotary tables of a batch's positions, `[batch, seq, 1, 2, head_dim / 2]`: `cos`, and
/// `sin` with its first half negated.
///
/// HF's rotate-half, `x * cos + cat(-x2, x1) * sin` (`x1`, `x2` the halves of `x`), is here
/// `x * cos + flip(x) * signed_sin` on `x` viewed as `[.., 2, half]`: the same products
/// (`-x2 * sin == x2 * -sin` exactly), so the same bits, without the two slices, the negation
/// and the concatenation, or their gradients' zero-filled slice assignments.
#[derive(Clone, Debug)]
pub struct RotaryTables<B: Backend> {
    cos: Tensor<B, 5>,
    signed_sin: Tensor<B, 5>,
}

impl<B: Backend> RotaryTables<B> {
    /// Rotates `x` (`[batch, seq, heads, head_dim]`, the projections' own layout, before the
    /// heads are moved forward) by its positions' angles.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, s, h, d] = x.dims();
        let pairs = x.reshape([b, s, h, 2, d / 2]);
        // The tables are built in f32; a model running in another dtype (mixed precision) uses
        // them in its own.
        let (cos, sin) = if self.cos.dtype() == pairs.dtype() {
            (self.cos.clone(), self.signed_sin.clone())
        } else {
            let dtype = pairs.dtype();
            (
                self.cos.clone().cast(dtype),
                self.signed_sin.clone().cast(dtype),
            )
        };
        let rotated = pairs.clone().flip([3]) * sin;
        (pairs * cos + rotated).reshape([b, s, h, d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    /// HF's `apply_rotary_pos_emb` on `[batch, heads, seq, head_dim]`, written as transformers
    /// writes it: `x * cos + rotate_half(x) * sin`.
    fn rotate_half_reference<B: Backend>(
        x: Tensor<B, 4>,
        rotary: &Rotary,
        positions: &[i64],
    ) -> Tensor<B, 4> {
        let [_, _, s, d] = x.dims();
        let device = x.device();
        let (cos, sin): (Vec<f32>, Vec<f32>) = positions
            .iter()
            .flat_map(|&p| {
                (0..d).map(move |j| {
                    let angle = p as f64 * rotary.position_scale * rotary.inv_freq[j % (d / 2)];
                    (angle.cos() as f32, angle.sin() as f32)
                })
            })
            .unzip();
        let table = |v: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(v, [s, d]), &device);
        let (cos, sin) = (table(cos).unsqueeze::<4>(), table(sin).unsqueeze::<4>());
        let x1 = x.clone().slice(s![.., .., .., 0..d / 2]);
        let x2 = x.clone().slice(s![.., .., .., d / 2..d]);
        x * cos + Tensor::cat(vec![x2.neg(), x1], 3) * sin
    }

    /// The flipped, signed-sin form gives rotate-half's values and gradients bit for bit.
    #[test]
    fn rotation_equals_rotate_half_bit_for_bit() {
        type B = Autodiff<NdArray>;
        let device = Default::default();
        let rotary = Rotary::new(16, 10000.0, &RopeScaling::Linear { factor: 2.0 });
        let positions = [0i64, 3, 7, 11, 250];
        let (b, s, h, d) = (1, positions.len(), 3, 16);
        let values: Vec<f32> = (0..b * s * h * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let x = || {
            Tensor::<B, 4>::from_data(TensorData::new(values.clone(), [b, s, h, d]), &device)
                .require_grad()
        };
        let upstream: Vec<f32> = (0..b * h * s * d).map(|i| (i % 13) as f32 - 6.0).collect();
        let upstream = Tensor::<B, 4>::from_data(TensorData::new(upstream, [b, h, s, d]), &device);
        let ids =
            Tensor::<B, 2, Int>::from_data(TensorData::new(positions.to_vec(), [b, s]), &device);

        let (x_ours, x_theirs) = (x(), x());
        let ours = rotary
            .tables_at(ids, 256)
            .apply(x_ours.clone())
            .swap_dims(1, 2);
        let theirs = rotate_half_reference(x_theirs.clone().swap_dims(1, 2), &rotary, &positions);
        ours.to_data().assert_eq(&theirs.to_data(), true);

        let g_ours = (ours * upstream.clone()).sum().backward();
        let g_theirs = (theirs * upstream).sum().backward();
        x_ours
            .grad(&g_ours)
            .unwrap()
            .to_data()
            .assert_eq(&x_theirs.grad(&g_theirs).unwrap().to_data(), true);
    }

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
