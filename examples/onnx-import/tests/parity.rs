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

fn check<M: CausalLm<B>>(name: &str, model: &M) -> (Vec<f32>, Vec<f32>) {
    let e = expected(&fixture(&format!("onnx/{name}/expected.safetensors")));
    let out = e.run(model);
    let logits = out.logits.clone().into_data().to_vec::<f32>().unwrap();
    let hidden = out.hidden.clone().into_data().to_vec::<f32>().unwrap();
    let dl = e.max_diff(out.logits, &e.logits);
    let dh = e.max_diff(out.hidden, e.hidden.as_ref().unwrap());
    assert!(dl < 1e-4, "{name}: logits differ by {dl}");
    assert!(dh < 1e-4, "{name}: hidden states differ by {dh}");
    assert!(e.logits.iter().map(|x| x.abs()).fold(0.0, f32::max) > 0.5);
    (logits, hidden)
}

#[test]
fn gpt_neox_generated_code_matches_transformers() {
    let model = GptNeoX::<B>::pretrained(&Default::default());
    assert_eq!((model.hidden_size(), model.vocab_size()), (32, 320));
    check("gpt_neox", &model);
}

#[test]
fn llama_by_both_onnx_paths_matches_transformers_and_itself() {
    let generated = check("llama", &LlamaGraph::<B>::pretrained(&Default::default()));
    let loaded = load_model::<B>(&fixture("onnx/llama/model.onnx"), &Default::default()).unwrap();
    let built_in = check("llama", &loaded.model);
    let e = expected(&fixture("onnx/llama/expected.safetensors"));
    // Compare only where the token is real (padded positions are not defined by either path).
    let vocab = 320;
    let mut worst = 0f32;
    for (pos, &m) in e.mask.iter().enumerate() {
        if m == 1 {
            for v in 0..vocab {
                let i = pos * vocab + v;
                worst = worst.max((generated.0[i] - built_in.0[i]).abs());
            }
        }
    }
    assert!(worst < 1e-5, "the two ONNX paths differ by {worst}");
}
