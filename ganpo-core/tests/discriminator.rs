//! Discriminator architectures: masking, train/eval behaviour (on the backend
//! `GANPO_TEST_BACKEND` names, tests/common), configuration, size.

#[macro_use]
mod common;

use burn::backend::NdArray;
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::Distribution;
use ganpo_core::discriminator::{
    DiscriminatorConfig, MlpDiscriminatorConfig, TransformerDiscriminatorConfig, masked_mean,
};
use ganpo_core::mode::Mode;

type B = NdArray;

fn small_configs() -> Vec<DiscriminatorConfig> {
    vec![
        DiscriminatorConfig::Transformer(TransformerDiscriminatorConfig {
            hidden: 16,
            layers: 2,
            heads: 4,
            ff: 32,
            max_positions: 32,
            ..Default::default()
        }),
        DiscriminatorConfig::Mlp(MlpDiscriminatorConfig {
            hidden: 16,
            ..Default::default()
        }),
    ]
}

fn vec1<B: Backend>(t: Tensor<B, 1>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}: {x} vs {y}");
    }
}

#[test]
fn padding_never_changes_a_score_when_a_mask_is_used() {
    on_test_backend!(inner, |B, device| {
        let lengths = [7usize, 3, 5];
        for config in small_configs() {
            let disc = config.init::<B>(10, &device);
            let real = Tensor::<B, 3>::random([3, 7, 10], Distribution::Normal(0.0, 1.0), &device);
            let mask = |seq: usize| {
                let data: Vec<bool> = lengths
                    .iter()
                    .flat_map(|&l| (0..seq).map(move |i| i < l))
                    .collect();
                Tensor::<B, 2, Bool>::from_data(TensorData::new(data, [3, seq]), &device)
            };
            let score =
                |x: Tensor<B, 3>, seq: usize| vec1(disc.forward(x, Some(mask(seq)), Mode::Eval));
            let base = score(real.clone(), 7);
            // Replace every padding position with large garbage, and pad further to 12 positions.
            let keep = mask(7).float().unsqueeze_dim::<3>(2);
            let garbage =
                Tensor::<B, 3>::random([3, 7, 10], Distribution::Uniform(-50.0, 50.0), &device);
            let scrambled = real.clone() * keep.clone() + garbage * keep.neg().add_scalar(1.0);
            let longer = Tensor::cat(
                vec![
                    scrambled.clone(),
                    Tensor::random([3, 5, 10], Distribution::Normal(3.0, 9.0), &device),
                ],
                1,
            );
            assert_close(&score(scrambled, 7), &base, 1e-5, "garbage padding");
            assert_close(&score(longer, 12), &base, 1e-5, "extra padding");
            // Without a mask the padding does count: the test can tell the difference.
            let unmasked = vec1(disc.forward(real.clone(), None, Mode::Eval));
            assert!(
                unmasked
                    .iter()
                    .zip(&base)
                    .any(|(a, b)| (a - b).abs() > 1e-4)
            );
        }
    });
}

/// The transformer discriminator computes only the masked positions (gathered, with their own
/// learned positions); its score must be the full-sequence computation's, written out here from
/// the public parts: every position projected and encoded with masked keys, then pooled.
#[test]
fn a_completion_mask_scores_as_the_full_sequence_computation() {
    on_test_backend!(inner, |B, device| {
        let config = TransformerDiscriminatorConfig {
            hidden: 16,
            layers: 2,
            heads: 4,
            ff: 32,
            max_positions: 9,
            ..Default::default()
        };
        let disc = config.init::<B>(10, &device);
        let x = Tensor::<B, 3>::random([3, 11, 10], Distribution::Normal(0.0, 1.0), &device);
        // Completions at different offsets; the last row's runs past max_positions; one row is empty.
        let spans = [(4usize, 9usize), (2, 5), (7, 11)];
        let flags: Vec<bool> = spans
            .iter()
            .flat_map(|&(a, b)| (0..11).map(move |t| t >= a && t < b))
            .collect();
        let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(flags, [3, 11]), &device);
        let full = {
            let (x, mask) = (
                x.clone().slice(s![.., 0..9, ..]),
                mask.clone().slice(s![.., 0..9]),
            );
            let mut h = disc.project_in.forward(x, Mode::Eval) + disc.pos_embedding.val();
            for layer in &disc.layers {
                h = layer.forward(h, Some(mask.clone()), Mode::Eval);
            }
            let pooled = masked_mean(h, Some(mask));
            let hidden = burn::tensor::activation::gelu(disc.head[0].forward(pooled, Mode::Eval));
            vec1(disc.head[1].forward(hidden, Mode::Eval).reshape([3]))
        };
        assert_close(
            &vec1(disc.forward(x.clone(), Some(mask.clone()), Mode::Eval)),
            &full,
            1e-5,
            "compacted positions",
        );
        let empty =
            Tensor::<B, 2, Bool>::from_data(TensorData::new(vec![false; 33], [3, 11]), &device);
        let scores = vec1(disc.forward(x, Some(empty), Mode::Eval));
        assert!(scores.iter().all(|s| s.is_finite()) && scores[0] == scores[1]);
    });
}

#[test]
fn eval_is_deterministic_and_train_applies_dropout() {
    on_test_backend!(inner, |B, device| {
        for config in small_configs() {
            let disc = config.init::<B>(10, &device);
            let x = Tensor::<B, 3>::random([4, 6, 10], Distribution::Normal(0.0, 1.0), &device);
            let e1 = vec1(disc.forward(x.clone(), None, Mode::Eval));
            let e2 = vec1(disc.forward(x.clone(), None, Mode::Eval));
            assert_eq!(e1, e2);
            let t1 = vec1(disc.forward(x.clone(), None, Mode::Train));
            let t2 = vec1(disc.forward(x, None, Mode::Train));
            assert_ne!(t1, t2, "dropout 0.1 should make train-mode scores differ");
        }
    });
}

#[test]
fn inputs_longer_than_the_learned_positions_are_cut() {
    on_test_backend!(inner, |B, device| {
        let config = TransformerDiscriminatorConfig {
            hidden: 8,
            heads: 2,
            ff: 16,
            max_positions: 5,
            ..Default::default()
        };
        let disc = config.init::<B>(4, &device);
        let x = Tensor::<B, 3>::random([2, 9, 4], Distribution::Normal(0.0, 1.0), &device);
        let cut = vec1(disc.forward(x.clone().slice(s![.., 0..5, ..]), None, Mode::Eval));
        assert_close(
            &vec1(disc.forward(x, None, Mode::Eval)),
            &cut,
            1e-6,
            "cut to max_positions",
        );
    });
}

#[test]
fn reference_architecture_has_the_reference_parameter_count() {
    let device = Default::default();
    let disc = DiscriminatorConfig::default().init::<B>(4096, &device);
    let (d, h, ff, layers) = (4096, 512, 2048, 2);
    let linear = |i: usize, o: usize| i * o + o;
    let per_layer = (3 * h * h + 3 * h) + linear(h, h) + linear(h, ff) + linear(ff, h) + 4 * h;
    // Trainable parameters, as PyTorch counts them (spectral-norm u, v are buffers): 9,714,177.
    let trainable = linear(d, h) + 2048 * h + layers * per_layer + linear(h, h) + linear(h, 1);
    assert_eq!(trainable, 9_714_177);
    // burn's count also includes the power-iteration vectors u and v of the three SN layers.
    let sn_vectors = (h + d) + (h + h) + (1 + h);
    assert_eq!(disc.num_params(), trainable + sn_vectors);
}

#[test]
fn config_reads_from_json_with_defaults_and_rejects_unknown_keys() {
    let c: DiscriminatorConfig = serde_json::from_str(r#"{"kind": "mlp", "hidden": 64}"#).unwrap();
    assert_eq!(
        c,
        DiscriminatorConfig::Mlp(MlpDiscriminatorConfig {
            hidden: 64,
            layers: 2,
            dropout: 0.1
        })
    );
    let t: DiscriminatorConfig = serde_json::from_str(r#"{"kind": "transformer"}"#).unwrap();
    assert_eq!(t, DiscriminatorConfig::default());
    let err = serde_json::from_str::<DiscriminatorConfig>(
        r#"{"kind": "transformer", "heads": 8, "hedden": 3}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("hedden"), "{err}");
}
