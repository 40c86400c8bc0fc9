//! `affine` (every linear layer) on the backend `GANPO_TEST_BACKEND` names, against the host
//! computation: inputs that are themselves results of element-wise ops (which a fusing GPU
//! backend folds into the matmul's reads), transposed weights, a bias (folded into its writes),
//! one row (a decoding step, a batch of one pair) and several.

#[macro_use]
mod common;

use burn::prelude::*;
use ganpo_core::affine::affine;

#[test]
fn affine_of_computed_inputs_equals_the_host_computation() {
    on_test_backend!(inner, |B, device| {
        let (d_in, d_out) = (20, 8);
        let value = |i: usize| ((i * 7919 % 97) as f32 - 48.0) / 31.0;
        let w: Vec<f32> = (0..d_out * d_in).map(value).collect();
        let b: Vec<f32> = (0..d_out).map(|i| value(i + 500)).collect();
        for rows in [1, 3] {
            let x: Vec<f32> = (0..rows * d_in).map(|i| value(i + 1000)).collect();
            // y = (2x) (w / 4)^T + b, with w stored [d_out, d_in] as spectral norm stores it.
            let want: Vec<f64> = (0..rows * d_out)
                .map(|k| {
                    let (r, o) = (k / d_out, k % d_out);
                    let dot: f64 = (0..d_in)
                        .map(|i| 2.0 * x[r * d_in + i] as f64 * (w[o * d_in + i] as f64 / 4.0))
                        .sum();
                    dot + b[o] as f64
                })
                .collect();
            let tensor = |v: &[f32], shape: [usize; 2]| {
                Tensor::<B, 2>::from_data(TensorData::new(v.to_vec(), shape), &device)
            };
            let xt = tensor(&x, [rows, d_in]) * 2.0;
            let wt = (tensor(&w, [d_out, d_in]) / 4.0).transpose();
            let bias = Tensor::<B, 1>::from_data(TensorData::new(b.clone(), [d_out]), &device);
            let got: Vec<f32> = affine(xt, wt, Some(bias)).into_data().to_vec().unwrap();
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() < 1e-5 * (1.0 + w.abs()),
                    "{rows} row(s), element {k}: {g} vs {w}"
                );
            }
        }
    });
}
