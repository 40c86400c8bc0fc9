//! Random initialization of models trained from scratch.
//!
//! The default, [`Init::Transformers`], is transformers' `_init_weights`: linear weights and
//! embeddings drawn from N(0, [`INIT_STD`]), biases zero, so a model trained here starts where
//! the same model in PyTorch would. burn's module defaults ([`Init::Burn`]: embeddings N(0, 1),
//! Kaiming-uniform linears and biases) differ: with N(0, 1) embeddings the residual stream of a
//! pre-norm decoder is dominated by each token's own embedding, and a classifier reading it
//! learns far more slowly (docs/experiments.md measures it).

use std::fmt;
use std::str::FromStr;

use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;

/// transformers' default `initializer_range` (Llama, Mistral, Qwen, GPT-2).
pub const INIT_STD: f64 = 0.02;

/// transformers' scheme at its default scale, as [`linear`] takes it.
pub const TRANSFORMERS: (Init, f64) = (Init::Transformers, INIT_STD);

/// How the weights of a model built from a config (not loaded) are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Init {
    /// transformers' scheme: N(0, 0.02) weights and embeddings, zero biases.
    #[default]
    Transformers,
    /// burn's module defaults (embeddings N(0, 1), Kaiming-uniform linears); the synthetic
    /// quickstart task's settings were tuned with these.
    Burn,
}

impl FromStr for Init {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "transformers" => Ok(Self::Transformers),
            "burn" => Ok(Self::Burn),
            other => Err(format!("unknown init `{other}` (transformers, burn)")),
        }
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Transformers => "transformers",
            Self::Burn => "burn",
        })
    }
}

/// A `[d_in -> d_out]` linear layer drawn by `init`; with [`Init::Transformers`], weight
/// N(0, `std`) and bias (if any) zero.
pub fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    (init, std): (Init, f64),
    device: &B::Device,
) -> Linear<B> {
    if init == Init::Burn {
        return LinearConfig::new(d_in, d_out).with_bias(bias).init(device);
    }
    let mut layer = LinearConfig::new(d_in, d_out)
        .with_bias(false)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device);
    if bias {
        layer.bias = Some(Initializer::Zeros.init([d_out], device));
    }
    layer
}

/// A `[vocab, width]` embedding table drawn by `init` (N(0, [`INIT_STD`]) for transformers').
pub fn embedding<B: Backend>(
    vocab: usize,
    width: usize,
    init: Init,
    device: &B::Device,
) -> Embedding<B> {
    let config = EmbeddingConfig::new(vocab, width);
    match init {
        Init::Burn => config.init(device),
        Init::Transformers => config
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: INIT_STD,
            })
            .init(device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    fn std_of(t: Tensor<NdArray, 2>) -> f64 {
        t.clone().powf_scalar(2.0).mean().into_scalar().sqrt() as f64
    }

    #[test]
    fn draws_have_the_scale_of_each_scheme() {
        let device = Default::default();
        let t = (Init::Transformers, INIT_STD);
        let layer = linear::<NdArray>(256, 512, true, t, &device);
        let w = std_of(layer.weight.val());
        assert!((w - INIT_STD).abs() < 0.001, "weight std {w}");
        let bias = layer.bias.expect("bias requested").val();
        assert_eq!(bias.abs().sum().into_scalar(), 0.0);
        let table = embedding::<NdArray>(1000, 64, Init::Transformers, &device);
        let e = std_of(table.weight.val());
        assert!((e - INIT_STD).abs() < 0.001, "embedding std {e}");
        assert!(linear::<NdArray>(4, 4, false, t, &device).bias.is_none());
        // burn's: N(0, 1) embeddings, Kaiming-uniform linears (std 1 / sqrt(3 fan_in)).
        let e = std_of(
            embedding::<NdArray>(1000, 64, Init::Burn, &device)
                .weight
                .val(),
        );
        assert!((e - 1.0).abs() < 0.02, "burn embedding std {e}");
        let b = (Init::Burn, INIT_STD);
        let w = std_of(linear::<NdArray>(256, 512, false, b, &device).weight.val());
        assert!(
            (w - 1.0 / (3.0f64 * 256.0).sqrt()).abs() < 0.001,
            "burn linear std {w}"
        );
        assert_eq!("burn".parse::<Init>(), Ok(Init::Burn));
        assert!(
            "xavier"
                .parse::<Init>()
                .unwrap_err()
                .contains("transformers, burn")
        );
    }
}
