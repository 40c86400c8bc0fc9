//! Sequence log-probs against TRL's `selective_log_softmax` in float64, computed in f32 here; the
//! float64 comparison and the gradient check are in `float64.rs`.

#[macro_use]
mod common;

use burn::backend::NdArray;
use burn::prelude::*;
use common::logprobs::check;
use ganpo_core::next_token_targets;

#[test]
fn matches_float64_reference_in_f32_even_for_huge_logits() {
    on_test_backend!(inner, |B, device| check::<B>(2e-6));
}

#[test]
fn next_token_targets_shift_ids_and_mask_left() {
    type B = NdArray;
    let device = Default::default();
    let ids = Tensor::<B, 2, Int>::from_data([[5, 6, 7, 8], [1, 2, 3, 0]], &device);
    let completion = Tensor::<B, 2, Bool>::from_data(
        [[false, false, true, true], [false, true, true, false]],
        &device,
    );
    let (labels, mask) = next_token_targets(ids, completion);
    assert_eq!(
        labels.into_data().to_vec::<i64>().unwrap(),
        vec![6, 7, 8, 0, 2, 3, 0, 0]
    );
    assert_eq!(
        mask.into_data().to_vec::<bool>().unwrap(),
        vec![false, true, true, false, true, true, false, false]
    );
}
