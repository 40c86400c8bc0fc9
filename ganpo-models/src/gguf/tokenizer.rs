//! The tokenizer embedded in GGUF metadata (`tokenizer.ggml.*`), rebuilt as an HF tokenizer.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use super::{GgufFile, Value};
use crate::{ModelError, Tokenizer};

/// `token_type` of control tokens (`<|im_start|>`, ...) in llama.cpp.
const CONTROL: u64 = 3;
/// `token_type` of user-defined tokens.
const USER_DEFINED: u64 = 4;

/// Builds the tokenizer a GGUF file describes, or `None` (with a logged reason) when its kind is
/// not one ganpo rebuilds exactly: byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the
/// `gpt2` / `default` or `smollm` pre-tokenizer.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<Option<Tokenizer>, ModelError> {
    let bad = |key: &str, message: &str| ModelError::InvalidConfig {
        path: file.path.clone(),
        key: key.into(),
        message: message.into(),
    };
    let model = file.get("tokenizer.ggml.model").and_then(Value::as_str);
    let pre = file
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let pre_tokenizers: Vec<PreTokenizerWrapper> = match (model, pre) {
        (Some("gpt2"), "gpt2" | "default") => vec![ByteLevel::new(false, true, true).into()],
        (Some("gpt2"), "smollm") => vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ],
        (None, _) => return Ok(None),
        (Some(model), pre) => {
            tracing::warn!(
                checkpoint = %file.path.display(),
                model, pre, "GGUF tokenizer kind not supported; pass a tokenizer.json instead"
            );
            return Ok(None);
        }
    };
    let strings = |key: &str| -> Result<Vec<String>, ModelError> {
        file.get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| bad(key, "missing or not an array"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(key, "holds a non-string"))
            })
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    bad(
                        "tokenizer.ggml.merges",
                        &format!("merge {m:?} has no space"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| {
            bad(
                "tokenizer.ggml.tokens",
                &format!("cannot build a BPE model: {e}"),
            )
        })?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(Sequence::new(pre_tokenizers)));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    let types = file
        .get("tokenizer.ggml.token_type")
        .and_then(Value::as_array)
        .unwrap_or(&[]);
    let special: Vec<AddedToken> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t.as_u64(), Some(CONTROL | USER_DEFINED)))
        .filter_map(|(i, _)| tokens.get(i))
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    inner.add_special_tokens(special).map_err(|e| {
        bad(
            "tokenizer.ggml.token_type",
            &format!("cannot add special tokens: {e}"),
        )
    })?;

    let id = |key: &str| file.get(key).and_then(Value::as_u64).map(|v| v as u32);
    let mut tok = Tokenizer::from_tokenizers(inner, &file.path);
    tok.eos_token_ids = id("tokenizer.ggml.eos_token_id").into_iter().collect();
    tok.eos_token = tok
        .eos_token_ids
        .first()
        .and_then(|&i| tokens.get(i as usize))
        .cloned();
    let add_bos = file
        .get("tokenizer.ggml.add_bos_token")
        .is_some_and(|v| matches!(v, Value::Bool(true)));
    tok.bos_token_id = if add_bos {
        id("tokenizer.ggml.bos_token_id")
    } else {
        None
    };
    tok.pad_token_id = id("tokenizer.ggml.padding_token_id");
    tok.chat_template = file
        .get("tokenizer.chat_template")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Some(tok))
}
