//! The tokenizer embedded in GGUF metadata (`tokenizer.ggml.*`), rebuilt as an HF tokenizer.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::utils::Sequence as NormalizerSequence;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use super::{GgufFile, Value};
use crate::{ModelError, Tokenizer};

/// `token_type` of control tokens (`<|im_start|>`, ...) in llama.cpp.
const CONTROL: u64 = 3;
/// `token_type` of user-defined tokens.
const USER_DEFINED: u64 = 4;

/// Builds the tokenizer a GGUF file describes, or `None` (with a logged reason) when its kind is
/// not one ganpo rebuilds exactly: byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the
/// `gpt2` / `default` or `smollm` pre-tokenizer, and SentencePiece BPE (`"llama"`: Llama 1/2,
/// Mistral v0.1, TinyLlama ...), tokenizing as sentencepiece and llama.cpp do.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<Option<Tokenizer>, ModelError> {
    let model = file.get("tokenizer.ggml.model").and_then(Value::as_str);
    let pre = file
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let tokens = match model {
        None => return Ok(None),
        Some("gpt2" | "llama") => strings(file, "tokenizer.ggml.tokens")?,
        Some(_) => {
            tracing::warn!(checkpoint = %file.path.display(), model, pre,
                "GGUF tokenizer kind not supported; pass a tokenizer.json instead");
            return Ok(None);
        }
    };
    let mut inner = match (model, pre) {
        (Some("gpt2"), "gpt2" | "default") => byte_level(
            file,
            &tokens,
            vec![ByteLevel::new(false, true, true).into()],
        )?,
        (Some("gpt2"), "smollm") => byte_level(
            file,
            &tokens,
            vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ],
        )?,
        (Some("llama"), _) => sentencepiece(file, &tokens)?,
        (Some(model), pre) => {
            tracing::warn!(checkpoint = %file.path.display(), model, pre,
                "GGUF pre-tokenizer not supported; pass a tokenizer.json instead");
            return Ok(None);
        }
        (None, _) => unreachable!("returned above"),
    };
    let types = file
        .get("tokenizer.ggml.token_type")
        .and_then(Value::as_array)
        .unwrap_or(&[]);
    let of_type = |kind: u64, special: bool| -> Vec<AddedToken> {
        types
            .iter()
            .enumerate()
            .filter(|(_, t)| t.as_u64() == Some(kind))
            .filter_map(|(i, _)| tokens.get(i))
            .map(|t| AddedToken::from(t.clone(), special).normalized(false))
            .collect()
    };
    // Control tokens (`<|im_start|>`, `</s>`) are special; user-defined ones (`<think>`) are
    // matched whole but are not special (transformers' `add_gguf_special_tokens`).
    let added = |e: tokenizers::Error| {
        invalid(
            file,
            "tokenizer.ggml.token_type",
            &format!("cannot add special tokens: {e}"),
        )
    };
    inner
        .add_special_tokens(of_type(CONTROL, true))
        .map_err(added)?;
    inner
        .add_tokens(of_type(USER_DEFINED, false))
        .map_err(added)?;

    let id = |key: &str| file.get(key).and_then(Value::as_u64).map(|v| v as u32);
    // llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise.
    let add_bos = match file.get("tokenizer.ggml.add_bos_token") {
        Some(v) => matches!(v, Value::Bool(true)),
        None => model == Some("llama"),
    };
    let bos = id("tokenizer.ggml.bos_token_id").filter(|_| add_bos);
    if let Some(bos_text) = bos.and_then(|i| tokens.get(i as usize)) {
        // What `encode(text, add_special_tokens = true)` adds, as transformers' post-processor.
        let post = TemplateProcessing::builder()
            .try_single(format!("{bos_text} $A"))
            .and_then(|b| b.try_pair(format!("{bos_text} $A {bos_text}:1 $B:1")))
            .map_err(|e| invalid(file, "tokenizer.ggml.bos_token_id", &e))?
            .special_tokens(vec![(bos_text.clone(), bos.expect("some"))])
            .build()
            .map_err(|e| invalid(file, "tokenizer.ggml.bos_token_id", &e.to_string()))?;
        inner.with_post_processor(Some(post));
    }
    let mut tok = Tokenizer::from_tokenizers(inner, &file.path);
    tok.eos_token_ids = id("tokenizer.ggml.eos_token_id").into_iter().collect();
    tok.eos_token = tok
        .eos_token_ids
        .first()
        .and_then(|&i| tokens.get(i as usize))
        .cloned();
    tok.bos_token_id = bos;
    tok.pad_token_id = id("tokenizer.ggml.padding_token_id");
    tok.chat_template = file
        .get("tokenizer.chat_template")
        .and_then(Value::as_str)
        .map(str::to_string);
    tok.chat_template_file = tok.chat_template.as_ref().map(|_| file.path.clone());
    Ok(Some(tok))
}

/// A string array of the metadata.
fn strings(file: &GgufFile, key: &str) -> Result<Vec<String>, ModelError> {
    file.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(file, key, "missing or not an array"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| invalid(file, key, "holds a non-string"))
        })
        .collect()
}

fn invalid(file: &GgufFile, key: &str, message: &str) -> ModelError {
    ModelError::InvalidConfig {
        path: file.path.clone(),
        key: key.into(),
        message: message.into(),
    }
}

/// Byte-level BPE from `tokenizer.ggml.tokens` and `tokenizer.ggml.merges`.
fn byte_level(
    file: &GgufFile,
    tokens: &[String],
    pre_tokenizers: Vec<PreTokenizerWrapper>,
) -> Result<tokenizers::Tokenizer, ModelError> {
    let merges = merges_of(file)?;
    let bpe = build_bpe(
        file,
        BPE::builder().vocab_and_merges(vocab_of(tokens), merges),
    )?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(Sequence::new(pre_tokenizers)));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(inner)
}

/// The `tokenizer.ggml.merges` pairs (`"a b"`); a merge without a space is an error naming it.
fn merges_of(file: &GgufFile) -> Result<Vec<(String, String)>, ModelError> {
    strings(file, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    invalid(
                        file,
                        "tokenizer.ggml.merges",
                        &format!("merge {m:?} has no space"),
                    )
                })
        })
        .collect()
}

/// The BPE model `builder` describes, or an error naming the GGUF's vocabulary.
fn build_bpe(
    file: &GgufFile,
    builder: tokenizers::models::bpe::BpeBuilder,
) -> Result<BPE, ModelError> {
    builder.build().map_err(|e| {
        invalid(
            file,
            "tokenizer.ggml.tokens",
            &format!("cannot build a BPE model: {e}"),
        )
    })
}

/// Token -> id (a repeated token keeps its last id, as a Python dict built in order does).
fn vocab_of(tokens: &[String]) -> tokenizers::models::bpe::Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

/// SentencePiece BPE (`tokenizer.ggml.model = "llama"`) as the sentencepiece library and llama.cpp
/// tokenize it: BPE with byte fallback over the file's pieces, merges from
/// `tokenizer.ggml.merges` or else recovered from `tokenizer.ggml.scores` (as transformers
/// recovers them), a `▁` prepended to the text (unless `tokenizer.ggml.add_space_prefix` is
/// false) and every space spelled `▁`, and the decoder that undoes it.
fn sentencepiece(file: &GgufFile, tokens: &[String]) -> Result<tokenizers::Tokenizer, ModelError> {
    let vocab = vocab_of(tokens);
    let merges = if file.get("tokenizer.ggml.merges").is_some() {
        merges_of(file)?
    } else {
        let scores: Vec<f64> = file
            .get("tokenizer.ggml.scores")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(file, "tokenizer.ggml.scores", "missing or not an array"))?
            .iter()
            .map(|v| v.as_f64().unwrap_or(0.0))
            .collect();
        if scores.len() != tokens.len() {
            return Err(invalid(
                file,
                "tokenizer.ggml.scores",
                &format!("{} scores for {} tokens", scores.len(), tokens.len()),
            ));
        }
        merges_from_scores(tokens, &scores, &vocab)
    };
    let unk = file
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(Value::as_u64)
        .and_then(|i| tokens.get(i as usize))
        .cloned()
        .unwrap_or_else(|| "<unk>".into());
    let bpe = build_bpe(
        file,
        BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(unk)
            .fuse_unk(true)
            .byte_fallback(true),
    )?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    // SentencePiece's `add_dummy_prefix` and space escaping, as the original Llama 2
    // tokenizer.json spells them: " Hello" is "▁▁Hello", the same as llama.cpp and the
    // sentencepiece library (transformers' own GGUF conversion uses a Metaspace pre-tokenizer
    // instead, which drops that second "▁" on text starting with a space). Vocabularies whose
    // `tokenizer.ggml.add_space_prefix` is false (Gemma) only escape spaces.
    let dummy_prefix = file
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let spaces = Replace::new(" ", "▁").expect("a literal pattern compiles");
    let normalizer = if dummy_prefix {
        let prefix = tokenizers::normalizers::Prepend::new("▁".into());
        NormalizerSequence::new(vec![prefix.into(), spaces.into()])
    } else {
        NormalizerSequence::new(vec![spaces.into()])
    };
    inner
        .with_normalizer(Some(normalizer))
        .map_err(|e| invalid(file, "tokenizer.ggml.model", &e.to_string()))?;
    let replace = Replace::new("▁", " ").expect("a literal pattern compiles");
    let mut decoders = vec![
        replace.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if dummy_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}

/// The merges a SentencePiece vocabulary implies (transformers' `generate_merges` with scores):
/// every split of a piece into two pieces of the vocabulary, ranked by the merged piece's score,
/// then by the lengths of the halves (longest first), ties in vocabulary order.
fn merges_from_scores(
    tokens: &[String],
    scores: &[f64],
    vocab: &tokenizers::models::bpe::Vocab,
) -> Vec<(String, String)> {
    // Score of each distinct piece, in order of first appearance (a dict built from zip()).
    let mut seen = std::collections::HashMap::new();
    let mut pieces: Vec<(&str, f64)> = Vec::new();
    for (t, &score) in tokens.iter().zip(scores) {
        match seen.get(t.as_str()) {
            Some(&i) => pieces[i] = (t.as_str(), score),
            None => {
                seen.insert(t.as_str(), pieces.len());
                pieces.push((t.as_str(), score));
            }
        }
    }
    let mut merges: Vec<(String, String, f64)> = Vec::new();
    for (piece, score) in pieces {
        let mut local = Vec::new();
        for (at, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(at);
            if let (Some(&a), Some(&b)) = (vocab.get(l), vocab.get(r)) {
                local.push((a, b, l, r));
            }
        }
        local.sort_by_key(|&(a, b, _, _)| (a, b));
        merges.extend(
            local
                .into_iter()
                .map(|(_, _, l, r)| (l.to_string(), r.to_string(), score)),
        );
    }
    // Python's sorted(..., reverse=True) is stable: equal keys keep their order.
    merges.sort_by(|x, y| {
        let key = |m: &(String, String, f64)| (m.2, m.0.chars().count(), m.1.chars().count());
        let (kx, ky) = (key(x), key(y));
        ky.0.total_cmp(&kx.0)
            .then(ky.1.cmp(&kx.1))
            .then(ky.2.cmp(&kx.2))
    });
    merges.into_iter().map(|(l, r, _)| (l, r)).collect()
}
