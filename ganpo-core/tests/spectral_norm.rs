//! Spectral normalization against an independent SVD (nalgebra), and its persistent state; on the
//! backend `GANPO_TEST_BACKEND` names (tests/common).

#[macro_use]
mod common;

use burn::module::Module;
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::Tolerance;
use ganpo_core::mode::Mode;
use ganpo_core::spectral_norm::SnLinear;

fn top_singular_value<B: Backend>(w: Tensor<B, 2>) -> f64 {
    let [rows, cols] = w.dims();
    let data: Vec<f32> = w.into_data().to_vec().unwrap();
    let m = nalgebra::DMatrix::from_row_iterator(rows, cols, data.iter().map(|&x| x as f64));
    m.singular_values().max()
}

#[test]
fn normalized_weight_has_unit_spectral_norm_after_power_iteration() {
    on_test_backend!(inner, |B, device| {
        for (d_in, d_out, seed) in [(64, 32, 1), (16, 48, 2), (512, 1, 3), (33, 33, 4)] {
            B::seed(&device, seed);
            let layer = SnLinear::<B>::new(d_in, d_out, true, &device);
            let sigma_true = top_singular_value(layer.weight_orig.val());
            for _ in 0..200 {
                layer.normalized_weight(Mode::Train);
            }
            let normalized = layer.normalized_weight(Mode::Eval);
            let top = top_singular_value(normalized);
            assert!(
                (top - 1.0).abs() < 1e-3,
                "[{d_in}x{d_out}] top singular value {top}"
            );
            assert!(
                (layer.sigma() - sigma_true).abs() < 1e-3 * sigma_true,
                "sigma {} vs svd {sigma_true}",
                layer.sigma()
            );
        }
    });
}

#[test]
fn one_iteration_per_training_forward_and_none_in_eval() {
    on_test_backend!(inner, |B, device| {
        let layer = SnLinear::<B>::new(12, 10, true, &device);
        let x = Tensor::<B, 2>::ones([2, 12], &device);
        let u0: Vec<f32> = layer.weight_u.value_sync().into_data().to_vec().unwrap();
        let eval1 = layer.forward(x.clone(), Mode::Eval);
        let eval2 = layer.forward(x.clone(), Mode::Eval);
        assert_eq!(eval1.to_data(), eval2.to_data());
        assert_eq!(
            layer
                .weight_u
                .value_sync()
                .into_data()
                .to_vec::<f32>()
                .unwrap(),
            u0,
            "eval changed u"
        );

        // A training forward does exactly one step: v = normalize(W^T u), u = normalize(W v).
        let w: Vec<f32> = layer.weight_orig.val().into_data().to_vec().unwrap();
        let (rows, cols) = (10, 12);
        let norm = |v: Vec<f64>| {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<_>>()
        };
        let v = norm(
            (0..cols)
                .map(|j| {
                    (0..rows)
                        .map(|i| w[i * cols + j] as f64 * u0[i] as f64)
                        .sum()
                })
                .collect(),
        );
        let u = norm(
            (0..rows)
                .map(|i| (0..cols).map(|j| w[i * cols + j] as f64 * v[j]).sum())
                .collect(),
        );
        layer.forward(x.clone(), Mode::Train);
        let u1: Vec<f32> = layer.weight_u.value_sync().into_data().to_vec().unwrap();
        for (a, b) in u1.iter().zip(&u) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert_ne!(
            layer.forward(x, Mode::Eval).to_data(),
            eval1.to_data(),
            "eval does not use the new u"
        );
    });
}

#[test]
fn power_iteration_state_is_saved_and_loaded_with_the_module() {
    on_test_backend!(inner, |B, device| {
        let layer = SnLinear::<B>::new(20, 8, true, &device);
        for _ in 0..7 {
            layer.normalized_weight(Mode::Train);
        }
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = recorder.record(layer.clone().into_record(), ()).unwrap();
        let loaded = SnLinear::<B>::new(20, 8, true, &device)
            .load_record(recorder.load(bytes, &device).unwrap());
        for (a, b) in [
            (&layer.weight_u, &loaded.weight_u),
            (&layer.weight_v, &loaded.weight_v),
        ] {
            assert_eq!(a.value_sync().to_data(), b.value_sync().to_data());
        }
        assert_eq!(
            layer.weight_orig.val().to_data(),
            loaded.weight_orig.val().to_data(),
            "weight_orig"
        );
        let bias = |l: &SnLinear<B>| l.bias.as_ref().unwrap().val().to_data();
        assert_eq!(bias(&layer), bias(&loaded), "bias");
        // The same values, compared within 1e-5: a GPU backend's kernels need not repeat bit
        // for bit (the weights and vectors above are compared exactly).
        let x = Tensor::<B, 2>::ones([1, 20], &device);
        layer
            .forward(x.clone(), Mode::Eval)
            .to_data()
            .assert_approx_eq::<f32>(
                &loaded.forward(x, Mode::Eval).to_data(),
                Tolerance::rel_abs(1e-5, 1e-6),
            );
    });
}

#[test]
fn gradients_reach_weight_and_bias_but_not_the_vectors() {
    on_test_backend!(|A, device| {
        let layer = SnLinear::<A>::new(6, 4, true, &device);
        let y = layer
            .forward(Tensor::<A, 2>::ones([3, 6], &device), Mode::Train)
            .sum();
        let grads = burn::optim::GradientsParams::from_grads(y.backward(), &layer);
        assert!(
            grads
                .get::<A::InnerBackend, 2>(layer.weight_orig.id)
                .is_some()
        );
        assert!(
            grads
                .get::<A::InnerBackend, 1>(layer.bias.as_ref().unwrap().id)
                .is_some()
        );
        assert_eq!(grads.len(), 2);
    });
}
