//! GGUF: dequantization against llama.cpp's `gguf` package, a llama model against transformers'
//! own GGUF loader, and clear errors (tools/fixtures/gguf_fixtures.py).

mod common;

use std::path::{Path, PathBuf};

use ganpo_models::gguf::{GgufFile, load_gguf, read_tensor, unpermute_rows};
use ganpo_models::load_model;
use safetensors::SafeTensors;

use common::{B, expected, floats};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

#[test]
fn every_supported_type_dequantizes_like_gguf_py() {
    let file = GgufFile::open(&dir().join("quants.gguf")).unwrap();
    let bytes = std::fs::read(dir().join("quants_expected.safetensors")).unwrap();
    let expected = SafeTensors::deserialize(&bytes).unwrap();
    let names = [
        "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k",
    ];
    for name in names {
        let name = format!("t.{name}");
        let info = file
            .tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(info.shape, vec![4, 256]);
        let got = read_tensor(&file, info).unwrap();
        let want = floats(&expected, &name);
        assert_eq!(got.len(), want.len());
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max <= 1e-6 * want.iter().map(|x| x.abs()).fold(1f32, f32::max),
            "{name}: max diff {max}"
        );
        assert!(
            want.iter().any(|x| x.abs() > 0.01),
            "{name}: fixture is all zeros"
        );
    }
}

#[test]
fn llama_gguf_matches_transformers_loading_the_same_file() {
    let loaded = load_model::<B>(&dir().join("tiny_llama.gguf"), &Default::default()).unwrap();
    let e = expected(&dir().join("tiny_llama_expected.safetensors"));
    let max = e.max_diff(e.run(&loaded.model, &Default::default()).logits, &e.logits);
    assert!(max < 1e-4, "logits differ by {max}");
}

/// Llama 3.1+ in llama.cpp's layout: the rope scaling is a `rope_freqs.weight` tensor, not
/// metadata. The model must compute what transformers computes from the source checkpoint (with
/// its `llama3` rope_scaling), and export the same scaling back into config.json.
#[test]
fn llama3_rope_freqs_tensor_matches_transformers_and_exports_as_llama3_scaling() {
    let gguf = dir().join("tiny_llama3_rope.gguf");
    let loaded = load_model::<B>(&gguf, &Default::default()).unwrap();
    let source = dir().join("../llama3_rope");
    let e = expected(&source.join("expected.safetensors"));
    let max = e.max_diff(e.run(&loaded.model, &Default::default()).logits, &e.logits);
    assert!(max < 1e-4, "logits differ by {max}");
    // Without the factors (plain RoPE), the logits would be far off: the test can fail.
    let (mut config, _, _) = load_gguf::<B>(&gguf, &Default::default()).unwrap();
    let ganpo_models::ModelConfig::Llama(c) = &mut config else {
        panic!("a llama")
    };
    c.rope_scaling = ganpo_models::nn::RopeScaling::Default;
    let mut plain = config.init::<B>(&Default::default());
    plain = burn::module::Module::load_record(
        plain,
        burn::module::Module::into_record(loaded.model.clone()),
    );
    let off = e.max_diff(e.run(&plain, &Default::default()).logits, &e.logits);
    assert!(off > 1e-2, "plain RoPE differs by only {off}");

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    ganpo_models::export::export_hf(
        &loaded.model,
        &loaded.config,
        ganpo_models::export::TokenizerFiles::None,
        &out,
    )
    .unwrap();
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let exported = read(out.join("config.json"))["rope_scaling"].clone();
    let original = read(source.join("config.json"))["rope_parameters"].clone();
    for key in [
        "factor",
        "low_freq_factor",
        "high_freq_factor",
        "original_max_position_embeddings",
    ] {
        assert_eq!(
            exported[key].as_f64(),
            original[key].as_f64(),
            "{key}: {exported} vs {original}"
        );
    }
    assert_eq!(exported["rope_type"], "llama3");
}

#[test]
fn unpermute_inverts_llama_cpp_permutation() {
    // convert_hf_to_gguf.py: w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2)
    let (rows, cols, heads) = (8, 3, 2);
    let hf: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    let mut permuted = vec![0f32; hf.len()];
    let half = rows / heads / 2;
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..half {
                let src = h * rows / heads + i * half + j;
                let dst = h * rows / heads + j * 2 + i;
                permuted[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
            }
        }
    }
    assert_ne!(permuted, hf);
    assert_eq!(unpermute_rows(&permuted, rows, cols, heads), hf);
}

#[test]
fn bad_gguf_files_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("x.gguf");
    std::fs::write(&path, b"GGML0000").unwrap();
    let err = load_gguf::<B>(&path, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x.gguf") && err.contains("not a GGUF file"),
        "{err}"
    );

    let full = std::fs::read(dir().join("tiny_llama.gguf")).unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let err = load_gguf::<B>(&path, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("runs past the end of the file"), "{err}");

    std::fs::write(&path, &full[..100]).unwrap();
    let err = load_gguf::<B>(&path, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("file ends early"), "{err}");

    // quants.gguf has no model metadata: the missing key is named.
    let err = load_gguf::<B>(&dir().join("quants.gguf"), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("llama.embedding_length") || err.contains("token_embd.weight"),
        "{err}"
    );
}

/// A SentencePiece vocabulary stored the way llama.cpp stores Llama 2-style models
/// (`tokenizer.ggml.model = "llama"`: pieces, scores, token types, no merges) tokenizes and decodes
/// as the sentencepiece library that trained it: byte fallback, the dummy `▁` prefix, leading and
/// repeated spaces, newlines, text outside the vocabulary. (The real Llama 2 vocabulary against
/// llama.cpp's own test vectors is in real_model.rs.)
#[test]
fn sentencepiece_vocabulary_matches_the_sentencepiece_library() {
    let file = GgufFile::open(&dir().join("spm_vocab.gguf")).unwrap();
    let tok = ganpo_models::gguf::tokenizer_from_gguf(&file)
        .unwrap()
        .expect("a SentencePiece tokenizer");
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join("spm_vocab_expected.json")).unwrap(),
    )
    .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect()
    };
    let mut byte_fallbacks = 0;
    for case in expected["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text, false).unwrap();
        assert_eq!(got, ids(&case["ids"]), "{text:?}");
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&case["with_bos"]),
            "{text:?} with BOS"
        );
        assert_eq!(
            tok.decode(&got, false).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{text:?} decoded"
        );
        byte_fallbacks += got
            .iter()
            .filter(|&&i| tok.id_to_token(i).is_some_and(|t| t.starts_with("<0x")))
            .count();
    }
    assert!(byte_fallbacks > 0, "the texts exercise byte fallback");
}

/// Gemma 2 as llama.cpp stores it (tools/fixtures/gguf_fixtures.py: llama.cpp's names, norms as
/// 1 + w, soft-caps and window in the metadata) loads into the same weights and configuration as
/// the HF checkpoint it was written from. Only the score scale differs: GGUF has no
/// `query_pre_attn_scalar`, and llama.cpp (so ganpo) scales by the head width.
#[test]
fn gemma2_gguf_equals_its_hf_checkpoint() {
    use burn_store::ModuleSnapshot;
    use ganpo_models::ModelConfig;
    let device = Default::default();
    let gguf = load_model::<B>(&dir().join("tiny_gemma2.gguf"), &device).unwrap();
    let hf = ganpo_models::hf::load::<B>(&dir().join("../gemma2"), &device).unwrap();
    let (ModelConfig::Gemma(g), (ModelConfig::Gemma(mut h), hf_model)) = (gguf.config, hf) else {
        panic!("both are Gemma");
    };
    assert_eq!(
        (g.query_pre_attn_scalar, h.query_pre_attn_scalar),
        (16.0, 24.0)
    );
    h.query_pre_attn_scalar = g.query_pre_attn_scalar;
    // GGUF stores the epsilon as an f32.
    assert_eq!(g.rms_norm_eps as f32, h.rms_norm_eps as f32);
    h.rms_norm_eps = g.rms_norm_eps;
    assert_eq!(g, h);
    let tensors = |m: &ganpo_models::Lm<B>| {
        m.collect(None, None, false)
            .into_iter()
            .map(|t| (t.full_path(), t.to_data().unwrap().to_vec::<f32>().unwrap()))
            .collect::<Vec<_>>()
    };
    let (a, b) = (tensors(&gguf.model), tensors(&hf_model));
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter()
            .any(|(n, _)| n.ends_with("post_feedforward_layernorm.weight"))
    );
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let diff = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        // Norm weights went through 1 + w and back in f32.
        assert!(diff <= 1e-6, "{na}: {diff}");
    }
}
