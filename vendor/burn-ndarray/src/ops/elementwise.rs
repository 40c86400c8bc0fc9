//! ganpo patch (vendor/README.md): element-wise maps split over the CPU's cores.
//!
//! 0.21.0 runs every element-wise operation on the calling thread, so during the element-wise
//! half of a training step every other core idles. Here a large enough output is cut into one
//! block per thread along an outer axis; the calling thread computes the first block while the
//! workers of [`pool`] compute the others. Each element is still computed by the same
//! expression from the same inputs, so results do not depend on the thread count or the split.
//! Reductions are not routed here: splitting them would change their summation order.

use core::mem::MaybeUninit;

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Axis, Dimension, IxDyn, Zip};

use super::pool::{self, threads};
use crate::SharedArray;

/// Outputs smaller than this (in elements) are computed on the calling thread: handing a block
/// to another thread costs a few microseconds, about what 32K elements take.
pub(crate) const MIN_PARALLEL: usize = 1 << 15;

/// The axis to cut an output of `shape` along and the block length, or `None` when the output
/// is too small to be worth splitting: the outermost axis long enough for several blocks per
/// thread (whole rows stay together), else the longest axis.
fn blocks(shape: &[usize]) -> Option<(Axis, usize)> {
    let threads = threads();
    if threads < 2 || shape.iter().product::<usize>() < MIN_PARALLEL {
        return None;
    }
    let axis = shape
        .iter()
        .position(|&n| n >= 4 * threads)
        .or_else(|| (0..shape.len()).max_by_key(|&i| shape[i]))?;
    let parts = threads.min(shape[axis]);
    (parts > 1).then(|| (Axis(axis), shape[axis].div_ceil(parts)))
}

/// The broadcast shape of `a` and `b` (NumPy rules), or a panic naming both, as ndarray's
/// arithmetic operators do.
fn broadcast_shape(a: &[usize], b: &[usize]) -> IxDyn {
    let n = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(n).map_or(1, |j| s[j]);
    let shape: Vec<usize> = (0..n)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y || y == 1 => x,
            (1, y) => y,
            _ => panic!("could not broadcast shapes {a:?} and {b:?}"),
        })
        .collect();
    IxDyn(&shape)
}

/// `f` of every element, in place when the buffer is not shared.
pub(crate) fn map<E, F>(array: SharedArray<E>, f: F) -> SharedArray<E>
where
    E: Copy + Send + Sync,
    F: Fn(E) -> E + Sync,
{
    let split = blocks(array.shape());
    if split.is_none() {
        return if array.is_unique() {
            array.mapv_into(f)
        } else {
            array.mapv(f).into_shared()
        };
    }
    if array.is_unique() {
        let mut array = array;
        pool::run(cut_mut(array.view_mut(), split), |mut out| out.mapv_inplace(&f));
        array
    } else {
        let mut out = ArrayD::<E>::uninit(array.raw_dim());
        let parts: Vec<_> = cut_mut(out.view_mut(), split)
            .into_iter()
            .zip(cut(array.view(), split))
            .collect();
        pool::run(parts, |(out, x)| {
            Zip::from(out).and(x).for_each(|o, &x| {
                o.write(f(x));
            })
        });
        // SAFETY: the blocks cover the output and every element of each was written.
        unsafe { out.assume_init() }.into_shared()
    }
}

/// `f(l, r)` of every pair of elements of `lhs` and `rhs` broadcast together, written into the
/// buffer of an operand that has the output's shape and is not shared, or else into a new one.
pub(crate) fn zip<E, F>(lhs: SharedArray<E>, rhs: SharedArray<E>, f: F) -> SharedArray<E>
where
    E: Copy + Send + Sync,
    F: Fn(E, E) -> E + Sync,
{
    let shape = broadcast_shape(lhs.shape(), rhs.shape());
    let split = blocks(shape.slice());
    // Runs `kernel` on matching blocks of `out` and `input` (whole views when not split).
    fn run<E: Copy + Send + Sync>(
        out: ArrayViewMutD<'_, E>,
        input: ArrayViewD<'_, E>,
        split: Option<(Axis, usize)>,
        kernel: impl Fn(ArrayViewMutD<'_, E>, ArrayViewD<'_, E>) + Sync,
    ) {
        let parts: Vec<_> = cut_mut(out, split)
            .into_iter()
            .zip(cut(input, split))
            .collect();
        pool::run(parts, |(o, i)| kernel(o, i));
    }
    if lhs.is_unique() && lhs.shape() == shape.slice() {
        let mut out = lhs;
        run(out.view_mut(), broadcast(&rhs, &shape), split, |o, r| {
            Zip::from(o).and(r).for_each(|o, &r| *o = f(*o, r))
        });
        out
    } else if rhs.is_unique() && rhs.shape() == shape.slice() {
        let mut out = rhs;
        run(out.view_mut(), broadcast(&lhs, &shape), split, |o, l| {
            Zip::from(o).and(l).for_each(|o, &l| *o = f(l, *o))
        });
        out
    } else {
        let mut out = ArrayD::<E>::uninit(shape.clone());
        let parts: Vec<_> = cut_mut(out.view_mut(), split)
            .into_iter()
            .zip(cut(broadcast(&lhs, &shape), split))
            .zip(cut(broadcast(&rhs, &shape), split))
            .collect();
        pool::run(parts, |((o, l), r)| {
            Zip::from(o).and(l).and(r).for_each(|o, &l, &r| {
                o.write(f(l, r));
            })
        });
        // SAFETY: the blocks cover the output and every element of each was written.
        unsafe { out.assume_init() }.into_shared()
    }
}

/// Copies `src` into `out` (same shape), the blocks of a large one on the worker threads.
pub(crate) fn write_into<E: Copy + Send + Sync>(
    out: ArrayViewMutD<'_, MaybeUninit<E>>,
    src: ArrayViewD<'_, E>,
) {
    let split = blocks(src.shape());
    let parts: Vec<_> = cut_mut(out, split)
        .into_iter()
        .zip(cut(src, split))
        .collect();
    pool::run(parts, |(o, s)| {
        Zip::from(o).and(s).for_each(|o, &s| {
            o.write(s);
        })
    });
}

/// `view` cut into blocks of `block` along `axis` (the whole view when `split` is `None`).
fn cut<E>(view: ArrayViewD<'_, E>, split: Option<(Axis, usize)>) -> Vec<ArrayViewD<'_, E>> {
    let mut blocks = Vec::new();
    let mut rest = view;
    if let Some((axis, block)) = split {
        while rest.len_of(axis) > block {
            let (head, tail) = rest.split_at(axis, block);
            blocks.push(head);
            rest = tail;
        }
    }
    blocks.push(rest);
    blocks
}

/// [`cut`] for a mutable view.
fn cut_mut<E>(
    view: ArrayViewMutD<'_, E>,
    split: Option<(Axis, usize)>,
) -> Vec<ArrayViewMutD<'_, E>> {
    let mut blocks = Vec::new();
    let mut rest = view;
    if let Some((axis, block)) = split {
        while rest.len_of(axis) > block {
            let (head, tail) = rest.split_at(axis, block);
            blocks.push(head);
            rest = tail;
        }
    }
    blocks.push(rest);
    blocks
}

/// `array` as a view of the broadcast `shape`.
fn broadcast<'a, E>(array: &'a SharedArray<E>, shape: &IxDyn) -> ArrayViewD<'a, E> {
    array
        .broadcast(shape.clone())
        .expect("the broadcast shape of both operands")
}
