//! Wrong or mismatched checkpoints are refused with the file and tensor named; nothing is
//! silently left at its random initialization.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use ganpo_models::ModelError;
use ganpo_models::hf::load;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

type B = NdArray;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A copy of the `qwen3` fixture whose weights and config `edit` may change.
fn edited(
    edit_weights: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>),
    edit_config: impl FnOnce(&mut serde_json::Value),
) -> tempfile::TempDir {
    let src = fixture("qwen3");
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit_weights(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    match load::<B>(dir, &Default::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// A copy of the `gemma3` fixture with its config edited.
fn edited_gemma(edit_config: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let src = fixture("gemma3");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn bad_gemma_configs_are_named() {
    load::<B>(edited_gemma(|_| {}).path(), &Default::default()).unwrap();
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: [(Edit, &str); 5] = [
        (
            Box::new(|c| c["hidden_activation"] = "gelu".into()),
            "`hidden_activation`: `gelu` is not supported (gelu_pytorch_tanh)",
        ),
        (
            Box::new(|c| c["layer_types"] = serde_json::json!(["full_attention"])),
            "`layer_types`: 1 entries for 3 layers",
        ),
        (
            Box::new(|c| c["layer_types"][1] = "chunked_attention".into()),
            "`layer_types`: unknown layer type \"chunked_attention\"",
        ),
        (
            Box::new(|c| c["use_bidirectional_attention"] = true.into()),
            "`use_bidirectional_attention`: bidirectional Gemma (an embedding model) is not a causal LM",
        ),
        (
            Box::new(|c| c["final_logit_softcapping"] = (-1.0).into()),
            "`final_logit_softcapping`: expected a positive number, found -1.0",
        ),
    ];
    for (edit, want) in cases {
        let dir = edited_gemma(edit);
        let err = load_err(dir.path());
        assert!(err.contains(want), "{err}");
    }
}

/// Keys a Gemma config.json leaves out take transformers' defaults (Gemma2Config /
/// Gemma3TextConfig), not ganpo's own.
#[test]
fn gemma_config_defaults_are_transformers() {
    use ganpo_models::{Architecture, gemma::GemmaConfig};
    let mut json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("gemma2").join("config.json")).unwrap(),
    )
    .unwrap();
    for key in [
        "query_pre_attn_scalar",
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "sliding_window",
    ] {
        json.as_object_mut().unwrap().remove(key);
    }
    let c = GemmaConfig::from_hf(&json, Path::new("config.json")).unwrap();
    assert_eq!(c.query_pre_attn_scalar, 256.0);
    assert_eq!(c.attn_logit_softcapping, Some(50.0));
    assert_eq!(c.final_logit_softcapping, Some(30.0));
    assert_eq!(c.sliding_window, Some(4096));
    json["model_type"] = "gemma3_text".into();
    json["final_logit_softcapping"] = serde_json::Value::Null;
    let c = GemmaConfig::from_hf(&json, Path::new("config.json")).unwrap();
    assert_eq!(
        (c.attn_logit_softcapping, c.final_logit_softcapping),
        (None, None)
    );
}

#[test]
fn unchanged_copy_loads() {
    let dir = edited(|_| {}, |_| {});
    load::<B>(dir.path(), &Default::default()).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let dir = edited(
        |t| drop(t.remove("model.layers.1.mlp.up_proj.weight")),
        |_| {},
    );
    let err = load_err(dir.path());
    assert!(
        err.contains("missing tensor(s) model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );
}

#[test]
fn shape_mismatch_is_named() {
    let dir = edited(|_| {}, |c| c["intermediate_size"] = 40.into());
    let err = load_err(dir.path());
    assert!(err.contains("gate_proj"), "{err}");
    assert!(err.contains("40") && err.contains("48"), "{err}");
}

#[test]
fn unsupported_dtype_is_named() {
    let dir = edited(
        |t| {
            let w = t.get_mut("model.norm.weight").unwrap();
            w.0 = Dtype::I32;
            w.2 = w.2.iter().chain(w.2.iter()).copied().collect();
        },
        |_| {},
    );
    let err = load_err(dir.path());
    assert!(
        err.contains("model.norm.weight") && err.contains("unsupported dtype I32"),
        "{err}"
    );
}

#[test]
fn unknown_architecture_and_bad_keys_are_named() {
    let dir = edited(|_| {}, |c| c["model_type"] = "mamba".into());
    let err = load_err(dir.path());
    assert!(
        err.contains(
            "model_type `mamba` is not supported (supported: llama, mistral, qwen2, qwen3, gpt2, \
             gemma2, gemma3_text)"
        ),
        "{err}"
    );

    let dir = edited(|_| {}, |c| c["num_key_value_heads"] = 3.into());
    assert!(
        load_err(dir.path())
            .contains("`num_key_value_heads`: 3 does not divide num_attention_heads = 4")
    );

    let dir = edited(
        |_| {},
        |c| drop(c.as_object_mut().unwrap().remove("hidden_size")),
    );
    assert!(load_err(dir.path()).contains("`hidden_size`: missing"));

    let dir = edited(
        |_| {},
        |c| c["rope_parameters"]["rope_type"] = "yarn".into(),
    );
    let err = load_err(dir.path());
    assert!(err.contains("rope_type `yarn` is not supported"), "{err}");
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("config.json"), "{err}");
    std::fs::copy(fixture("qwen3/config.json"), dir.path().join("config.json")).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("not a safetensors file"), "{err}");
    assert!(matches!(
        load::<B>(dir.path(), &Default::default()),
        Err(ModelError::BadWeights { .. })
    ));
}
