//! HF export: what is written reloads to the same logits, and a failed export leaves nothing.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::prelude::*;
use ganpo_models::export::{TokenizerFiles, export_hf};
use ganpo_models::{CausalLm, hf, load_model};

type B = NdArray;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn logits(m: &ganpo_models::Lm<B>) -> Vec<f32> {
    let device = Default::default();
    let ids = Tensor::<B, 2, Int>::from_data([[3i64, 14, 15, 92, 65, 35, 89]], &device);
    let mask =
        Tensor::<B, 2, Bool>::from_data([[true, true, true, true, true, true, true]], &device);
    m.forward(ids, mask).logits.into_data().to_vec().unwrap()
}

#[test]
fn exported_directories_reload_to_identical_logits() {
    for name in [
        "llama",
        "llama3_rope",
        "mistral",
        "qwen2",
        "qwen3",
        "gpt2",
        "gemma2",
        "gemma3",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("exported");
        let loaded = load_model::<B>(&fixture(name), &Default::default()).unwrap();
        let dir = fixture(name);
        let tokenizer = if name == "llama" {
            TokenizerFiles::Dir(&dir)
        } else {
            TokenizerFiles::None
        };
        export_hf(&loaded.model, &loaded.config, tokenizer, &out).unwrap();
        let (config, reloaded) = hf::load::<B>(&out, &Default::default()).unwrap();
        assert_eq!(config, loaded.config, "{name}: config changed");
        assert_eq!(
            logits(&reloaded),
            logits(&loaded.model),
            "{name}: logits changed"
        );
        // Tied models do not store an lm_head, as transformers writes them.
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let names = safetensors::SafeTensors::deserialize(&bytes)
            .unwrap()
            .names()
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        assert_eq!(
            names.iter().any(|n| n == "lm_head.weight"),
            !config.tied_embeddings(),
            "{name}"
        );
        assert_eq!(out.join("tokenizer.json").is_file(), name == "llama");
    }
}

/// The tensors of the safetensors files `files`, as f32 values by name (with shapes).
fn tensors(files: &[PathBuf]) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut out = std::collections::BTreeMap::new();
    for file in files {
        let bytes = std::fs::read(file).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => burn::tensor::DType::F32,
                safetensors::Dtype::F16 => burn::tensor::DType::F16,
                safetensors::Dtype::BF16 => burn::tensor::DType::BF16,
                other => panic!("{name}: {other:?}"),
            };
            let data =
                TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype)
                    .convert_dtype(burn::tensor::DType::F32);
            out.insert(name, (view.shape().to_vec(), data.to_vec::<f32>().unwrap()));
        }
    }
    out
}

/// The transformers half of the round trip, without PyTorch at test time: every fixture
/// directory was written by transformers' `save_pretrained`, and its `expected.safetensors` holds
/// what transformers computes from it. An export that holds the same tensors (names, shapes,
/// values) and a config.json that agrees with the original on every key both files state is one
/// transformers builds the same model from, so the same logits. (`tools/fixtures/check_export.py`
/// also loads the exports in transformers itself, where PyTorch is installed:
/// `cargo xtask check-export`.)
#[test]
fn exports_hold_what_transformers_wrote() {
    for name in [
        "llama",
        "llama3_rope",
        "mistral",
        "qwen2",
        "qwen3",
        "gpt2",
        "gemma2",
        "gemma3",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("exported");
        let loaded = load_model::<B>(&fixture(name), &Default::default()).unwrap();
        export_hf(&loaded.model, &loaded.config, TokenizerFiles::None, &out).unwrap();

        let original = tensors(&hf::weight_files(&fixture(name)).unwrap());
        let exported = tensors(&[out.join("model.safetensors")]);
        let parameters: Vec<&String> = original
            .keys()
            .filter(|n| !n.ends_with(".attn.bias") && !n.ends_with(".attn.masked_bias"))
            .collect();
        assert_eq!(
            parameters,
            exported.keys().collect::<Vec<_>>(),
            "{name}: tensor names"
        );
        for n in parameters {
            assert_eq!(original[n], exported[n], "{name}: {n}");
        }

        let read = |p: PathBuf| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let (want, got) = (
            read(fixture(name).join("config.json")),
            read(out.join("config.json")),
        );
        let mut compared = 0;
        for (key, value) in got.as_object().unwrap() {
            if matches!(key.as_str(), "torch_dtype" | "rope_theta" | "rope_scaling") {
                continue;
            }
            // GPT-2's `n_inner: null` means 4 * n_embd.
            let default_inner = serde_json::json!(4 * want["n_embd"].as_u64().unwrap_or(0));
            let w = match want.get(key) {
                Some(serde_json::Value::Null) if key == "n_inner" => Some(&default_inner),
                w => w,
            };
            if let Some(w) = w {
                match (w.as_f64(), value.as_f64()) {
                    (Some(a), Some(b)) => assert_eq!(a, b, "{name}: {key}"),
                    _ => assert_eq!(w, value, "{name}: {key}"),
                }
                compared += 1;
            }
        }
        assert!(compared >= 8, "{name}: only {compared} keys in common");
        // RoPE: transformers 5 writes `rope_parameters`; ganpo writes the transformers 4 keys for
        // the Llama family (transformers 5 still reads them) and `rope_parameters` for Gemma
        // (compared with the other keys above).
        if let Some(rope) = want
            .get("rope_parameters")
            .filter(|_| got.get("rope_parameters").is_none())
        {
            assert_eq!(
                rope["rope_theta"].as_f64(),
                got["rope_theta"].as_f64(),
                "{name}"
            );
            if rope["rope_type"] != "default" {
                for (key, value) in got["rope_scaling"].as_object().unwrap() {
                    match value.as_f64() {
                        Some(v) => assert_eq!(rope[key].as_f64(), Some(v), "{name}: {key}"),
                        None => assert_eq!(&rope[key], value, "{name}: {key}"),
                    }
                }
            }
        }
    }
}

#[test]
fn export_refuses_to_overwrite_and_leaves_nothing_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let loaded = load_model::<B>(&fixture("qwen3"), &Default::default()).unwrap();
    let existing = tmp.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let err = export_hf(
        &loaded.model,
        &loaded.config,
        TokenizerFiles::None,
        &existing,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("refusing to overwrite"), "{err}");

    // A tokenizer directory without tokenizer.json fails the export after the weights are written.
    let bad_tokenizer = tmp.path().join("bad_tokenizer");
    std::fs::create_dir_all(bad_tokenizer.join("tokenizer.json")).unwrap();
    std::fs::write(bad_tokenizer.join("tokenizer_config.json"), "{}").unwrap();
    let out = tmp.path().join("out");
    let err = export_hf(
        &loaded.model,
        &loaded.config,
        TokenizerFiles::Dir(&bad_tokenizer),
        &out,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no tokenizer file to export"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!out.exists(), "partial export left at {}", out.display());
    assert_eq!(left.len(), 2, "temporary files left behind: {left:?}");
}

#[test]
fn a_loaded_tokenizer_is_written_and_reads_back_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let loaded = load_model::<B>(&fixture("llama"), &Default::default()).unwrap();
    let tok = loaded.tokenizer.as_ref().unwrap();
    let out = tmp.path().join("out");
    export_hf(
        &loaded.model,
        &loaded.config,
        TokenizerFiles::Tokenizer(tok),
        &out,
    )
    .unwrap();
    let back = ganpo_models::Tokenizer::from_dir(&out).unwrap();
    for text in [
        "Hello world",
        "Naïve café — 5 € 🙂",
        "<|im_start|>user\nHi<|im_end|>\n",
    ] {
        for special in [false, true] {
            assert_eq!(
                back.encode(text, special).unwrap(),
                tok.encode(text, special).unwrap(),
                "{text:?}"
            );
        }
    }
    assert_eq!(back.eos_token, tok.eos_token);
    assert_eq!(back.eos_token_ids, tok.eos_token_ids);
    assert_eq!(back.pad_token_id, tok.pad_token_id);
    assert_eq!(back.bos_token_id, tok.bos_token_id);
    assert_eq!(back.chat_template, tok.chat_template);
}

#[test]
fn a_tokenizer_file_linking_out_of_the_model_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let loaded = load_model::<B>(&fixture("llama"), &Default::default()).unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(
        fixture("llama").join("tokenizer.json"),
        model.join("tokenizer.json"),
    )
    .unwrap();
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, "not a template").unwrap();
    std::os::unix::fs::symlink(&secret, model.join("chat_template.jinja")).unwrap();
    let out = tmp.path().join("out");
    let err = export_hf(
        &loaded.model,
        &loaded.config,
        TokenizerFiles::Dir(&model),
        &out,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("chat_template.jinja") && err.contains("outside the model directory"),
        "{err}"
    );
    assert!(!out.exists());
    // A link that stays inside the directory is an ordinary file to copy.
    std::fs::remove_file(model.join("chat_template.jinja")).unwrap();
    std::fs::write(model.join("template.txt"), "{{ messages }}").unwrap();
    std::os::unix::fs::symlink(
        model.join("template.txt"),
        model.join("chat_template.jinja"),
    )
    .unwrap();
    export_hf(
        &loaded.model,
        &loaded.config,
        TokenizerFiles::Dir(&model),
        &out,
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("chat_template.jinja")).unwrap(),
        "{{ messages }}"
    );
}
