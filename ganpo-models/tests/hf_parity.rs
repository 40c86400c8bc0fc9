//! Logits and last hidden states against HF transformers on tiny random checkpoints
//! (tools/fixtures/model_fixtures.py): Llama (tied, sharded), Llama 3 RoPE scaling, Mistral with a
//! sliding window, Qwen2 (q/k/v bias, bf16 file), Qwen3 (q/k norm, head_dim != hidden/heads,
//! f16 file), GPT-2 (Conv1D layout, learned positions, tanh GELU), Gemma 2 (soft-caps, sliding and
//! global layers, query_pre_attn_scalar) and Gemma 3 (q/k norms, local and scaled global RoPE); on the backend
//! `GANPO_TEST_BACKEND` names (`GANPO_TEST_BACKEND=wgpu cargo test -p ganpo-models --features
//! wgpu --test hf_parity`).

#[macro_use]
mod common;

use burn::prelude::*;
use common::{expected, fixture};
use ganpo_models::hf::load;

fn check<B: Backend>(name: &str, device: &B::Device) {
    let (_, model) = load::<B>(&fixture(name), device).unwrap_or_else(|e| panic!("{name}: {e}"));
    expected(&fixture(name).join("expected.safetensors")).assert_matches(&model, device, name);
}

#[test]
fn llama_tied_sharded() {
    on_test_backend!(inner, |B, device| check::<B>("llama", &device));
}

#[test]
fn llama3_rope_scaling() {
    on_test_backend!(inner, |B, device| check::<B>("llama3_rope", &device));
}

#[test]
fn mistral_sliding_window() {
    on_test_backend!(inner, |B, device| check::<B>("mistral", &device));
}

#[test]
fn qwen2_bias_bf16() {
    on_test_backend!(inner, |B, device| check::<B>("qwen2", &device));
}

#[test]
fn gpt2_conv1d_learned_positions() {
    on_test_backend!(inner, |B, device| check::<B>("gpt2", &device));
}

#[test]
fn qwen3_qk_norm_f16() {
    on_test_backend!(inner, |B, device| check::<B>("qwen3", &device));
}

#[test]
fn gemma2_softcaps_alternating_windows() {
    on_test_backend!(inner, |B, device| check::<B>("gemma2", &device));
}

#[test]
fn gemma3_qk_norm_local_rope() {
    on_test_backend!(inner, |B, device| check::<B>("gemma3", &device));
}
