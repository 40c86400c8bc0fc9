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
    let e = expected(&fixture(name).join("expected.safetensors"));
    let out = e.run(&model);
    let dl = e.max_diff(out.logits, &e.logits);
    let dh = e.max_diff(out.hidden, e.hidden.as_ref().unwrap());
    assert!(dl < 1e-4, "{name}: logits differ by {dl}");
    assert!(dh < 1e-4, "{name}: hidden states differ by {dh}");
    // The comparison is not vacuous: logits are far from zero.
    assert!(e.logits.iter().map(|x| x.abs()).fold(0.0, f32::max) > 0.5);
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
