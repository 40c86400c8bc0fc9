//! Tokenization against HF `tokenizers` (tools/fixtures/tokenizer_fixtures.py).

use std::path::{Path, PathBuf};

use ganpo_models::Tokenizer;
use serde::Deserialize;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

#[derive(Deserialize)]
struct Expected {
    vocab_size: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_with_special: Vec<u32>,
    decoded: String,
    decoded_skip_special: String,
}

#[test]
fn encodes_and_decodes_like_hf_tokenizers() {
    let tok = Tokenizer::from_dir(&dir()).unwrap();
    let expected: Expected =
        serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap())
            .unwrap();
    assert_eq!(tok.vocab_size(), expected.vocab_size);
    assert!(expected.cases.len() >= 8);
    for case in &expected.cases {
        assert_eq!(
            tok.encode(&case.text, false).unwrap(),
            case.ids,
            "{:?}",
            case.text
        );
        assert_eq!(
            tok.encode(&case.text, true).unwrap(),
            case.ids_with_special,
            "{:?}",
            case.text
        );
        assert_eq!(tok.decode(&case.ids, false).unwrap(), case.decoded);
        assert_eq!(
            tok.decode(&case.ids_with_special, true).unwrap(),
            case.decoded_skip_special
        );
    }
}

#[test]
fn reads_special_tokens_and_the_chat_template() {
    let tok = Tokenizer::from_dir(&dir()).unwrap();
    let id = |t: &str| tok.encode(t, false).unwrap()[0];
    assert_eq!(
        tok.eos_token_ids,
        vec![id("<|im_end|>"), id("<|endoftext|>")]
    );
    assert_eq!(tok.pad_token_id, Some(id("<|endoftext|>")));
    assert_eq!(tok.bos_token_id, None);
    assert!(
        tok.chat_template
            .as_deref()
            .unwrap()
            .contains("<|im_start|>")
    );
}

#[test]
fn vocabulary_mismatch_and_bad_files_are_named() {
    let tok = Tokenizer::from_dir(&dir()).unwrap();
    tok.check_vocab(320).unwrap();
    let err = tok.check_vocab(96).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer.json")
            && err.contains("ids up to 319")
            && err.contains("96 entries"),
        "{err}"
    );

    let tmp = tempfile::tempdir().unwrap();
    assert!(
        Tokenizer::from_dir(tmp.path())
            .unwrap_err()
            .to_string()
            .contains("tokenizer.json")
    );
    std::fs::write(tmp.path().join("tokenizer.json"), "{").unwrap();
    assert!(
        Tokenizer::from_dir(tmp.path())
            .unwrap_err()
            .to_string()
            .contains("not a tokenizer.json")
    );
    std::fs::copy(
        dir().join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"eos_token": "<|nope|>"}"#,
    )
    .unwrap();
    let err = Tokenizer::from_dir(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer_config.json") && err.contains("<|nope|>"),
        "{err}"
    );
}

#[test]
fn chat_template_comes_from_the_jinja_file_or_named_templates() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir().join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"eos_token": "<|im_end|>", "chat_template": [
            {"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "DEFAULT"}]}"#,
    )
    .unwrap();
    let tok = Tokenizer::from_dir(tmp.path()).unwrap();
    assert_eq!(tok.chat_template.as_deref(), Some("DEFAULT"));
    // transformers 5 writes chat_template.jinja and prefers it over tokenizer_config.json.
    std::fs::write(tmp.path().join("chat_template.jinja"), "{{ messages }}").unwrap();
    let tok = Tokenizer::from_dir(tmp.path()).unwrap();
    assert_eq!(tok.chat_template.as_deref(), Some("{{ messages }}"));
}
