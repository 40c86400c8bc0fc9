//! The CPU backend's reshape and matmul do not copy their operands (vendor/README.md: the
//! workspace patches burn-ndarray 0.21.0 for this), and matmul on transposed, sliced and
//! broadcast operands still equals the plain triple loop.
//!
//! Copies are counted with an allocator that tallies the bytes each thread allocates, so the
//! test is exact and independent of timing.

#![cfg(feature = "ndarray")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use burn::backend::NdArray;
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
