//! Both ONNX paths against transformers (tools/fixtures/onnx_fixtures.py wrote the expected
//! outputs with PyTorch): burn-onnx's generated code for GPT-NeoX, an architecture ganpo has no
//! loader for; and, on one tiny Llama, the generated code and ganpo's own loader reading the
//! same file as weights, which must also agree with each other.

#[path = "../../../ganpo-models/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{B, expected};
use ganpo_models::{CausalLm, load_model};
use onnx_import::{GptNeoX, LlamaGraph};

/// A file under ganpo-models' test fixtures (where the ONNX exports live).
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../ganpo-models/tests/fixtures")
        .join(name)
}

fn expected_of(name: &str) -> common::Expected {
    expected(&fixture(&format!("onnx/{name}/expected.safetensors")))
}

#[test]
fn gpt_neox_generated_code_matches_transformers() {
    let model = GptNeoX::<B>::pretrained(&Default::default());
    assert_eq!((model.hidden_size(), model.vocab_size()), (32, 320));
    expected_of("gpt_neox").assert_matches(&model, &Default::default(), "gpt_neox");
}

#[test]
fn llama_by_both_onnx_paths_matches_transformers_and_itself() {
    let e = expected_of("llama");
    let generated = e.assert_matches(
        &LlamaGraph::<B>::pretrained(&Default::default()),
        &Default::default(),
        "llama",
    );
    let loaded = load_model::<B>(&fixture("onnx/llama/model.onnx"), &Default::default()).unwrap();
    let built_in = e.assert_matches(&loaded.model, &Default::default(), "llama");
    // Compared where the token is real (padded positions are defined by neither path).
    let built_in: Vec<f32> = built_in.logits.into_data().to_vec().unwrap();
    let worst = e.max_diff(generated.logits, &built_in);
    assert!(worst < 1e-5, "the two ONNX paths differ by {worst}");
}
