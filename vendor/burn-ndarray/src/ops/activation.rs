use crate::{
    NdArray, NdArrayTensor, SharedArray,
    element::{FloatNdArrayElement, IntNdArrayElement, QuantElement},
    execute_with_float_dtype, execute_with_numeric_dtype,
    ops::{NdArrayMathOps, elementwise},
};
use burn_backend::{ElementConversion, TensorMetadata, ops::ActivationOps, tensor::FloatTensor};
use ndarray::Axis;
use num_traits::Float;

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> ActivationOps<Self>
    for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    fn relu(tensor: FloatTensor<Self>) -> FloatTensor<Self> {
        execute_with_numeric_dtype!(tensor, |array| NdArrayMathOps::clamp_min(array, 0.elem()))
    }

    // ganpo patch (vendor/README.md): one pass per lane instead of five full-size tensors.
    fn softmax(tensor: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        execute_with_float_dtype!(tensor, |array| softmax_lanes(array, dim, false))
    }

    fn log_softmax(tensor: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        execute_with_float_dtype!(tensor, |array| softmax_lanes(array, dim, true))
    }

    // ganpo patch (vendor/README.md): `1 / (1 + exp(-x))` in one pass instead of the default's
    // `exp(-log(1 + exp(-x)))`, six full-size tensors and three transcendental calls per element.
    fn sigmoid(tensor: FloatTensor<Self>) -> FloatTensor<Self> {
        execute_with_float_dtype!(tensor, |array| sigmoid_elements(array))
    }

    // ganpo patch: the default's `s * (1 - s) * grad` in one pass (the same products in the same
    // order), written into the gradient's buffer when it is not shared.
    fn sigmoid_backward(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        execute_with_float_dtype!((output, grad), |output, grad| sigmoid_backward_elements(
            output, grad
        ))
    }
}

/// The logistic function of every element, in place when the buffer is not shared.
fn sigmoid_elements<E: Float + Send + Sync>(array: SharedArray<E>) -> SharedArray<E> {
    elementwise::map(array, |x| E::one() / (E::one() + (-x).exp()))
}

/// `s * (1 - s) * g` for the sigmoid's output `s` and the incoming gradient `g` (same shape).
fn sigmoid_backward_elements<E: Float + Send + Sync>(
    output: SharedArray<E>,
    grad: SharedArray<E>,
) -> SharedArray<E> {
    elementwise::zip(output, grad, |s, g| s * (E::one() - s) * g)
}

/// Softmax (or, with `log`, log-softmax) of every lane along `dim`, in place when the buffer is
/// not shared: the lane's max, then its exponentials `exp(x - max)` (written in place for softmax)
/// and their sum, then one division (or, for log-softmax, the subtraction of the sum's log) per
/// element. The arithmetic is the default decomposition's, without its intermediate tensors.
fn softmax_lanes<E: Float>(array: SharedArray<E>, dim: usize, log: bool) -> SharedArray<E> {
    // Below the log of the smallest subnormal, minus one, `exp` rounds to exactly 0. Returning 0
    // there skips libm's slow underflow path, which the masked scores of causal attention (about
    // half of each score matrix) would otherwise all take.
    let underflow = (E::min_positive_value() * E::epsilon()).ln() - E::one();
    let exp = |d: E| if d < underflow { E::zero() } else { d.exp() };
    let mut out = array.into_owned();
    // The sum of a lane's exponentials is accumulated in f64: a vocabulary-wide lane (49,152
    // entries for SmolLM2) summed one f32 at a time loses about 1e-4 of the sum, which moved a
    // sequence's log-probability by 2e-3 against transformers'.
    let wide = |e: E| e.to_f64().unwrap_or(f64::NAN);
    let narrow = |s: f64| E::from(s).unwrap_or_else(E::nan);
    for mut lane in out.lanes_mut(Axis(dim)) {
        let max = lane.iter().fold(E::neg_infinity(), |m, &x| m.max(x));
        if log {
            let sum = lane.iter().fold(0.0, |s, &x| s + wide(exp(x - max)));
            let log_sum = narrow(sum.ln());
            lane.mapv_inplace(|x| (x - max) - log_sum);
        } else {
            let mut sum = 0.0;
            lane.mapv_inplace(|x| {
                let e = exp(x - max);
                sum += wide(e);
                e
            });
            let sum = narrow(sum);
            lane.mapv_inplace(|e| e / sum);
        }
    }
    out.into_shared()
}
