//! Train / eval mode for modules whose forward pass differs between the two.
//!
//! Burn's own `Dropout` drops whenever the backend tracks gradients, so it cannot give the
//! deterministic eval-mode pass that GANPO's generator term needs (discriminators frozen and in
//! eval mode). Discriminators here take the mode explicitly, and [`dropout`] honours it.

use burn::prelude::*;
use burn::tensor::Distribution;

/// Whether a forward pass trains the module (dropout on, spectral-norm power iteration on) or
/// only evaluates it (deterministic, state untouched).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Dropout active, spectral-norm power iteration advances its state.
    Train,
    /// No dropout, no state change.
    Eval,
}

impl Mode {
    /// True in [`Mode::Train`].
    pub fn is_train(self) -> bool {
        self == Mode::Train
    }
}

/// Inverted dropout with drop probability `prob` in [`Mode::Train`]; the identity in
/// [`Mode::Eval`] or when `prob` is 0.
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, prob: f64, mode: Mode) -> Tensor<B, D> {
    if !mode.is_train() || prob <= 0.0 {
        return x;
    }
    let keep = x.random_like(Distribution::Bernoulli(1.0 - prob));
    x * keep.div_scalar(1.0 - prob)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn dropout_is_identity_in_eval_and_unbiased_in_train() {
        let device = Default::default();
        let x = Tensor::<NdArray, 2>::ones([200, 200], &device);
        let eval = dropout(x.clone(), 0.25, Mode::Eval);
        assert_eq!(eval.into_data(), x.clone().into_data());
        let train: Vec<f32> = dropout(x, 0.25, Mode::Train).into_data().to_vec().unwrap();
        let zeros = train.iter().filter(|v| **v == 0.0).count() as f64 / train.len() as f64;
        assert!((zeros - 0.25).abs() < 0.01, "dropped fraction {zeros}");
        let kept = train.iter().find(|v| **v != 0.0).unwrap();
        assert!((kept - 1.0 / 0.75).abs() < 1e-6);
        let mean = train.iter().map(|v| *v as f64).sum::<f64>() / train.len() as f64;
        assert!((mean - 1.0).abs() < 0.02, "mean {mean}");
    }
}
