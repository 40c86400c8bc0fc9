//! What the workspace's patched burn crates change (vendor/README.md), each checked so that it
//! fails without the patch and against an independent computation of the same values:
//!
//! - the CPU backend's reshape and matmul do not copy their operands, and matmul on transposed,
//!   sliced and broadcast operands still equals the plain triple loop; concatenation copies
//!   each input once, into a standard-layout output;
//! - softmax and log-softmax are one fused pass on the CPU backend and one node under autodiff,
//!   with the values and gradients of burn's default decomposition into elementary ops, and the
//!   scored log-probabilities (`ScoredRows`) take that fused log-softmax in place of the logits;
//! - sigmoid is one in-place pass with the logistic function's values, and its autodiff node
//!   keeps the output instead of recomputing it.
//!
//! Copies are counted with an allocator that tallies the bytes each thread allocates, so the
//! tests are exact and independent of timing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::activation::{log_softmax, sigmoid, softmax};
use burn::tensor::{Distribution, Tensor, s};

/// Counts the bytes allocated by the current thread on top of the system allocator.
struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + layout.size()));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + new_size));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes the current thread allocates while running `f`, and its result.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (ALLOCATED.with(Cell::get) - before, out)
}

type B = NdArray<f32>;

const MIB: usize = 1 << 20;

#[test]
fn reshaping_a_contiguous_tensor_allocates_no_copy() {
    let device = Default::default();
    // 4 MiB of f32.
    let x = Tensor::<B, 2>::random([1024, 1024], Distribution::Default, &device);
    let (bytes, y) = allocated_by(|| x.clone().reshape([256, 4, 1024]).unsqueeze_dim::<4>(0));
    assert!(bytes < MIB / 16, "reshape allocated {bytes} bytes");
    assert_eq!(y.dims(), [1, 256, 4, 1024]);
    assert_eq!(
        y.reshape([1024, 1024]).into_data().to_vec::<f32>().unwrap(),
        x.into_data().to_vec::<f32>().unwrap()
    );
}

#[test]
fn matmul_reads_transposed_operands_in_place() {
    let device = Default::default();
    let a = Tensor::<B, 2>::random([1024, 1024], Distribution::Default, &device);
    let b = Tensor::<B, 2>::random([1024, 1024], Distribution::Default, &device);
    let (bytes, _) = allocated_by(|| a.clone().matmul(b.clone().transpose()));
    // The 4 MiB output and the GEMM's packing buffers; copying both operands and the output
    // (as burn-ndarray 0.21.0 does) adds 12 MiB.
    assert!(bytes < 8 * MIB, "matmul allocated {bytes} bytes");
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn concatenation_copies_each_input_once_in_standard_layout() {
    let device = Default::default();
    // A transposed (strided) input beside a standard one: the 4 MiB output is the only buffer.
    let a = Tensor::<B, 2>::random([1024, 512], Distribution::Default, &device);
    let b = Tensor::<B, 2>::random([512, 1024], Distribution::Default, &device);
    let (bytes, c) = allocated_by(|| Tensor::cat(vec![a.clone().transpose(), b.clone()], 1));
    assert!(bytes < 4 * MIB + MIB / 16, "cat allocated {bytes} bytes");
    assert_eq!(c.dims(), [512, 2048]);
    let (a, b, c) = (values(a), values(b), values(c));
    for i in 0..512 {
        for j in 0..2048 {
            let want = if j < 1024 {
                a[j * 512 + i]
            } else {
                b[i * 1024 + j - 1024]
            };
            assert_eq!(c[i * 2048 + j].to_bits(), want.to_bits(), "({i}, {j})");
        }
    }
    // Three inputs along a middle axis, one of them a slice: the values in order.
    let x = Tensor::<B, 3>::random([4, 6, 5], Distribution::Default, &device);
    let parts = vec![
        x.clone().slice(s![.., 0..2, ..]),
        x.clone().slice(s![.., 2..3, ..]),
        x.clone().slice(s![.., 3..6, ..]),
    ];
    assert_eq!(values(Tensor::cat(parts, 1)), values(x.clone()));
    // The result's layout is standard: reshaping it copies nothing.
    let y = Tensor::cat(vec![x.clone(), x.clone()], 2);
    let (bytes, _) = allocated_by(|| y.clone().reshape([4 * 6 * 10]));
    assert!(bytes < 1024, "reshape of a cat allocated {bytes} bytes");
}

/// `a [.., m, k] x b [.., k, n]` as the triple loop over row-major host data, batch dims
/// broadcast from 1.
fn reference(a: &[f32], a_dims: [usize; 4], b: &[f32], b_dims: [usize; 4]) -> Vec<f32> {
    let [m, k, n] = [a_dims[2], a_dims[3], b_dims[3]];
    let batch = [a_dims[0].max(b_dims[0]), a_dims[1].max(b_dims[1])];
    let mut out = Vec::new();
    for i in 0..batch[0] {
        for j in 0..batch[1] {
            let at =
                |dims: [usize; 4]| ((i % dims[0]) * dims[1] + (j % dims[1])) * dims[2] * dims[3];
            let (ao, bo) = (at(a_dims), at(b_dims));
            for r in 0..m {
                for c in 0..n {
                    out.push((0..k).map(|t| a[ao + r * k + t] * b[bo + t * n + c]).sum());
                }
            }
        }
    }
    out
}

#[test]
fn matmul_on_strided_and_broadcast_operands_matches_the_triple_loop() {
    let device = Default::default();
    let host = |t: Tensor<B, 4>| t.into_data().to_vec::<f32>().unwrap();
    // a: [2, 1, 3, 5] built as a transpose of [2, 1, 5, 3]; b: [1, 4, 5, 6], every other
    // column of a wider tensor, rows reversed; the batch dims broadcast to [2, 4].
    let a_t = Tensor::<B, 4>::random([2, 1, 5, 3], Distribution::Default, &device);
    let a = a_t.swap_dims(2, 3);
    let wide = Tensor::<B, 4>::random([1, 4, 5, 12], Distribution::Default, &device);
    let b = wide.slice(s![.., .., ..;-1, 0..12;2]);
    let out = a.clone().matmul(b.clone());
    assert_eq!(out.dims(), [2, 4, 3, 6]);
    let expected = reference(&host(a.clone()), [2, 1, 3, 5], &host(b), [1, 4, 5, 6]);
    for (got, want) in host(out).iter().zip(&expected) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
    // The same product with a 2-D right operand broadcast over every batch.
    let w_t = Tensor::<B, 2>::random([7, 5], Distribution::Default, &device);
    let w = w_t.transpose();
    let out = a.clone().matmul(w.clone().unsqueeze::<4>());
    let expected = reference(&host(a), [2, 1, 3, 5], &host(w.unsqueeze()), [1, 1, 5, 7]);
    for (got, want) in host(out).iter().zip(&expected) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

type Ad = Autodiff<B>;

/// Softmax (or log-softmax) along `dim` written out as burn's default implementation composes
/// it from elementary ops, each differentiated by burn's autodiff on its own.
fn decomposed(x: Tensor<Ad, 3>, dim: usize, log: bool) -> Tensor<Ad, 3> {
    let shifted = x.clone() - x.detach().max_dim(dim);
    let sum = shifted.clone().exp().sum_dim(dim);
    if log {
        shifted - sum.log()
    } else {
        shifted.exp() / sum
    }
}

fn host(t: Tensor<Ad, 3>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn fused_softmax_has_the_decompositions_values_and_gradients() {
    let device = Default::default();
    for log in [false, true] {
        for dim in 0..3 {
            // A transposed input (strided lanes), with a few very negative entries as in
            // masked attention, and a random upstream gradient.
            let base = Tensor::<Ad, 3>::random([4, 6, 5], Distribution::Normal(0.0, 3.0), &device);
            let masked = base.clone().lower_equal_elem(-4.0);
            let x = base.mask_fill(masked, -1e9).swap_dims(0, 2).require_grad();
            let w = Tensor::<Ad, 3>::random(x.dims(), Distribution::Default, &device);
            let fused = if log {
                log_softmax(x.clone(), dim)
            } else {
                softmax(x.clone(), dim)
            };
            let reference = decomposed(x.clone(), dim, log);
            let what = format!(
                "{} along {dim}",
                if log { "log_softmax" } else { "softmax" }
            );
            assert_close(&host(fused.clone()), &host(reference.clone()), &what);
            let grad = |y: Tensor<Ad, 3>| {
                let grads = (y * w.clone()).sum().backward();
                x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap()
            };
            assert_close(&grad(fused), &grad(reference), &format!("d {what}"));
        }
    }
}

#[test]
fn softmax_writes_its_output_in_place_of_an_unshared_input() {
    let device = Default::default();
    // 4 MiB of f32; the default decomposition allocates its max, the shifted input, its
    // exponentials, their sums and the output: more than 12 MiB.
    let x = Tensor::<B, 2>::random([1024, 1024], Distribution::Default, &device);
    let (bytes, y) = allocated_by(|| softmax(x, 1));
    assert!(bytes < MIB / 16, "softmax allocated {bytes} bytes");
    let row_sums = y.sum_dim(1).into_data().to_vec::<f32>().unwrap();
    assert!(row_sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
}

#[test]
fn autodiff_softmax_allocates_less_than_half_the_decomposition() {
    let device = Default::default();
    let x = Tensor::<Ad, 2>::random([512, 1024], Distribution::Default, &device).require_grad();
    let w = Tensor::<Ad, 2>::random([512, 1024], Distribution::Default, &device);
    // Forward and backward of `sum(f(x) * w)`; the decomposition's nodes each keep a full-size
    // tensor, and the memory-bound ones recompute their forward in the backward pass.
    let run = |f: &dyn Fn(Tensor<Ad, 2>) -> Tensor<Ad, 2>| {
        allocated_by(|| {
            let grads = (f(x.clone()) * w.clone()).sum().backward();
            x.grad(&grads).unwrap()
        })
    };
    let (fused, grad) = run(&|x| softmax(x, 1));
    let (decomposed, _) = run(&|x| {
        let shifted = x.clone() - x.detach().max_dim(1);
        let exp = shifted.exp();
        exp.clone() / exp.sum_dim(1)
    });
    assert!(
        2 * fused < decomposed,
        "fused softmax allocated {fused} bytes, the decomposition {decomposed}"
    );
    // Each row of a softmax gradient sums to zero.
    let row_sums = grad.sum_dim(1).into_data().to_vec::<f32>().unwrap();
    assert!(row_sums.iter().all(|s| s.abs() < 1e-4), "{row_sums:?}");
}

#[test]
fn sigmoid_is_one_pass_in_place_with_the_exact_logistic_values() {
    let device = Default::default();
    // 4 MiB of f32; burn's default, exp(-log(1 + exp(-x))), allocates five such tensors.
    let x = Tensor::<B, 2>::random([1024, 1024], Distribution::Normal(0.0, 4.0), &device);
    let hx = x.clone().into_data().to_vec::<f32>().unwrap();
    let (bytes, y) = allocated_by(move || sigmoid(x));
    assert!(bytes < MIB / 16, "sigmoid allocated {bytes} bytes");
    let y = y.into_data().to_vec::<f32>().unwrap();
    for (i, (&x, &y)) in hx.iter().zip(&y).enumerate() {
        let exact = 1.0 / (1.0 + (-(x as f64)).exp());
        assert!(
            (y as f64 - exact).abs() <= 2.0 * f32::EPSILON as f64 * exact,
            "sigmoid({x}) = {y} at {i}"
        );
    }
}

#[test]
fn autodiff_sigmoid_keeps_its_output_instead_of_recomputing_it() {
    let device = Default::default();
    // 2 MiB of f32 each.
    let x = Tensor::<Ad, 2>::random([512, 1024], Distribution::Normal(0.0, 2.0), &device)
        .require_grad();
    let w = Tensor::<Ad, 2>::random([512, 1024], Distribution::Default, &device);
    let (bytes, grad) = allocated_by(|| {
        let grads = (sigmoid(x.clone()) * w.clone()).sum().backward();
        x.grad(&grads).unwrap()
    });
    // Three 2 MiB tensors: the sigmoid's output, the product with `w` and the gradient of the
    // sum times `w`, into which the sigmoid's gradient is written. A node that keeps the input
    // (0.21.0) computes the sigmoid again in the backward pass: at least a fourth.
    assert!(
        bytes < 7 * MIB,
        "forward and backward allocated {bytes} bytes"
    );
    let (hx, hw) = (
        x.into_data().to_vec::<f32>().unwrap(),
        w.into_data().to_vec::<f32>().unwrap(),
    );
    let grad = grad.into_data().to_vec::<f32>().unwrap();
    for i in 0..grad.len() {
        let s = 1.0 / (1.0 + (-hx[i]).exp());
        assert_eq!(
            grad[i].to_bits(),
            (s * (1.0 - s) * hw[i]).to_bits(),
            "d sigmoid at {i}"
        );
    }
}

#[test]
fn scored_logps_write_the_log_softmax_in_place_of_the_logits() {
    use burn::tensor::{Bool, Int};
    let device = Default::default();
    // 1024 scored rows of a 1024-token vocabulary: 4 MiB of logits, owned by the call.
    let (batch, seq) = (8, 128);
    let labels =
        Tensor::<B, 2, Int>::random([batch, seq], Distribution::Uniform(0.0, 1024.0), &device);
    let mask = Tensor::<B, 2, Bool>::from_data(
        burn::tensor::TensorData::new(vec![true; batch * seq], [batch, seq]),
        &device,
    );
    let rows = ganpo_core::ScoredRows::new(labels, mask);
    let logits = || Tensor::<B, 2>::random([batch * seq, 1024], Distribution::Default, &device);
    // Composing `x - max - log(sum(exp(x - max)))` allocates the shifted logits and their
    // exponentials (8 MiB), and the statistics composed apart as many again and more.
    let (x, scored) = (logits(), rows.clone());
    let (bytes, out) = allocated_by(move || scored.logps(x));
    assert!(bytes < MIB / 2, "scoring allocated {bytes} bytes");
    let logps = out.logps.into_data().to_vec::<f32>().unwrap();
    assert!(logps.iter().all(|l| l.is_finite() && *l < 0.0), "{logps:?}");
    // The statistics take one more [rows, vocab] tensor, the probabilities.
    let x = logits();
    let (bytes, _) = allocated_by(move || rows.logps_and_statistics(x, true));
    assert!(
        bytes < 4 * MIB + MIB / 2,
        "scoring with statistics allocated {bytes} bytes"
    );
}

#[test]
fn log_softmax_over_a_vocabulary_wide_lane_is_accurate_to_a_few_ulps() {
    let device = Default::default();
    // One row as wide as SmolLM2's vocabulary; an f32 running sum of its exponentials drifts by
    // about 1e-4 relative, which every log-probability inherits.
    let x = Tensor::<B, 2>::random([1, 49_152], Distribution::Normal(0.0, 3.0), &device);
    let hx = x.clone().into_data().to_vec::<f32>().unwrap();
    let got = log_softmax(x, 1).into_data().to_vec::<f32>().unwrap();
    let max = hx.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let log_sum = hx.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    for (i, (&v, &g)) in hx.iter().zip(&got).enumerate() {
        let want = v as f64 - max - log_sum;
        let tol = 4.0 * f32::EPSILON as f64 * want.abs().max(1.0);
        assert!(
            (g as f64 - want).abs() <= tol,
            "log_softmax[{i}] = {g}, exactly {want}"
        );
    }
}
