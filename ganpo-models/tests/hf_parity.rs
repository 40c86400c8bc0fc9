//! Logits and last hidden states against HF transformers on tiny random checkpoints
//! (tools/fixtures/model_fixtures.py): Llama (tied, sharded), Llama 3 RoPE scaling, Mistral with a
//! sliding window, Qwen2 (q/k/v bias, bf16 file), Qwen3 (q/k norm, head_dim != hidden/heads,
//! f16 file), GPT-2 (Conv1D layout, learned positions, tanh GELU).

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::prelude::*;
use ganpo_models::CausalLm;
use ganpo_models::hf::load;
use safetensors::SafeTensors;

type B = NdArray;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Expected {
    ids: Vec<i64>,
    mask: Vec<i64>,
    logits: Vec<f32>,
    hidden: Vec<f32>,
    batch: usize,
    seq: usize,
}

fn expected(dir: &Path) -> Expected {
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ints = |n: &str| -> Vec<i64> {
        st.tensor(n)
            .unwrap()
            .data()
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let floats = |n: &str| -> Vec<f32> {
        st.tensor(n)
            .unwrap()
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let shape = st.tensor("input_ids").unwrap().shape().to_vec();
    Expected {
        ids: ints("input_ids"),
        mask: ints("attention_mask"),
        logits: floats("logits"),
        hidden: floats("hidden"),
        batch: shape[0],
        seq: shape[1],
    }
}

/// Max abs difference over the positions that are real tokens.
fn max_diff(got: &[f32], want: &[f32], mask: &[i64], width: usize) -> f32 {
    let mut max = 0f32;
    for (pos, m) in mask.iter().enumerate() {
        if *m == 1 {
            for i in pos * width..(pos + 1) * width {
                max = max.max((got[i] - want[i]).abs());
            }
        }
    }
    max
}

fn check(name: &str) {
    let dir = fixture(name);
    let device = Default::default();
    let (config, model) = load::<B>(&dir, &device).unwrap_or_else(|e| panic!("{name}: {e}"));
    let e = expected(&dir);
    let ids =
        Tensor::<B, 2, Int>::from_data(TensorData::new(e.ids.clone(), [e.batch, e.seq]), &device);
    let mask: Vec<bool> = e.mask.iter().map(|&m| m == 1).collect();
    let mask_t = Tensor::<B, 2, Bool>::from_data(TensorData::new(mask, [e.batch, e.seq]), &device);
    let out = model.forward(ids, mask_t);
    let logits: Vec<f32> = out.logits.into_data().to_vec().unwrap();
    let hidden: Vec<f32> = out.hidden.into_data().to_vec().unwrap();
    let dl = max_diff(&logits, &e.logits, &e.mask, config.vocab_size());
    let dh = max_diff(&hidden, &e.hidden, &e.mask, config.hidden_size());
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
