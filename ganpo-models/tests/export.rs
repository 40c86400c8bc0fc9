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
    for name in ["llama", "llama3_rope", "mistral", "qwen2", "qwen3", "gpt2"] {
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
