//! ONNX exports of tiny transformers models (tools/fixtures/onnx_fixtures.py) loaded as weights
//! of ganpo's built-in architectures: logits and last hidden states against what transformers
//! (PyTorch) computes, and wrong files refused with the file or tensor named. The other ONNX
//! path, burn-onnx code generation for an architecture ganpo does not implement, is tested in
//! examples/onnx-import.

mod common;

use std::path::Path;

use common::{B, expected, fixture};
use ganpo_models::{ModelError, load_model};

fn check(name: &str) {
    let dir = fixture(&format!("onnx/{name}"));
    let loaded = load_model::<B>(&dir.join("model.onnx"), &Default::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    expected(&dir.join("expected.safetensors")).assert_matches(
        &loaded.model,
        &Default::default(),
        name,
    );
}

#[test]
fn llama_torchscript_export_with_folded_transposes() {
    check("llama");
    // The tokenizer next to the file comes along.
    let loaded = load_model::<B>(&fixture("onnx/llama/model.onnx"), &Default::default()).unwrap();
    assert!(loaded.tokenizer.is_some());
}

#[test]
fn llama_dynamo_export_with_external_data() {
    check("llama_dynamo");
}

#[test]
fn gpt2_export() {
    check("gpt2");
}

/// A temporary directory holding copies of `files` from the fixture `onnx/NAME`.
fn copy(name: &str, files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(fixture(&format!("onnx/{name}")).join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn load_err(path: &Path) -> String {
    load_model::<B>(path, &Default::default())
        .expect_err("the load must fail")
        .to_string()
}

#[test]
fn without_config_json_the_error_names_it() {
    let dir = copy("llama", &["model.onnx"]);
    let err = load_err(&dir.path().join("model.onnx"));
    assert!(err.contains("config.json"), "{err}");
    assert!(err.contains("burn-onnx code generation"), "{err}");
}

#[test]
fn a_graph_of_another_architecture_names_the_missing_tensors() {
    // GPT-NeoX weights under a Llama config: nothing may stay randomly initialized.
    let dir = copy("gpt_neox", &["model.onnx"]);
    std::fs::copy(
        fixture("onnx/llama/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = load_model::<B>(&dir.path().join("model.onnx"), &Default::default()).unwrap_err();
    match err {
        ModelError::MissingTensors { names, .. } => {
            assert!(names.iter().any(|n| n == "model.norm.weight"), "{names:?}")
        }
        other => panic!("expected missing tensors, got {other}"),
    }
}

#[test]
fn missing_external_data_and_garbage_are_named() {
    let dir = copy("llama_dynamo", &["model.onnx", "config.json"]);
    let err = load_err(&dir.path().join("model.onnx"));
    assert!(err.contains("model.onnx.data"), "{err}");

    let dir = copy("llama", &["config.json"]);
    std::fs::write(dir.path().join("model.onnx"), b"\xff\xff not protobuf").unwrap();
    let err = load_err(&dir.path().join("model.onnx"));
    assert!(err.contains("not an ONNX model"), "{err}");
    assert!(err.contains("model.onnx"), "{err}");
}
