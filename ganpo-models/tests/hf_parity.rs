//! Logits and last hidden states against HF transformers on tiny random checkpoints
//! (tools/fixtures/model_fixtures.py): Llama (tied, sharded), Llama 3 RoPE scaling, Mistral with a
//! sliding window, Qwen2 (q/k/v bias, bf16 file), Qwen3 (q/k norm, head_dim != hidden/heads,
//! f16 file), GPT-2 (Conv1D layout, learned positions, tanh GELU).

mod common;

use common::{B, expected, fixture};
use ganpo_models::hf::load;

fn check(name: &str) {
    let (_, model) =
        load::<B>(&fixture(name), &Default::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    expected(&fixture(name).join("expected.safetensors")).assert_matches(&model, name);
}

#[test]
fn llama_tied_sharded() {
    check("llama");
}

#[test]
fn llama3_rope_scaling() {
    check("llama3_rope");
}

#[test]
fn mistral_sliding_window() {
    check("mistral");
}

#[test]
fn qwen2_bias_bf16() {
    check("qwen2");
}

#[test]
fn gpt2_conv1d_learned_positions() {
    check("gpt2");
}

#[test]
fn qwen3_qk_norm_f16() {
    check("qwen3");
}
