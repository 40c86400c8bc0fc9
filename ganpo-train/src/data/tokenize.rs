//! Prompt / completion tokenization as TRL 1.x's `DPOTrainer` does it.
//!
//! TRL (1.16) first appends the EOS token's text to plain-text completions that do not already end
//! with it (conversational completions get their end-of-turn tokens from the chat template). It
//! then tokenizes three whole strings: the prompt, prompt + chosen and prompt + rejected (plain
//! text with the tokenizer's special tokens; conversations rendered by the chat template, the
//! prompt alone with the generation prompt, and tokenized without adding special tokens). The
//! prompt is the longest common prefix of the prompt's ids with *both* full sequences; the rest of
//! each full sequence is its completion. So a token that merges across the prompt / completion
//! boundary belongs to the completion, and the prompt loses its end.

use ganpo_models::{ModelError, Tokenizer};

use super::chat::ChatTemplate;
use super::record::{PreferenceRecord, Turns, UnpairedRecord};

/// Token ids of one preference pair, split the way TRL splits them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizedPair {
    /// Prompt ids (the common prefix).
    pub prompt: Vec<u32>,
    /// Chosen completion ids (EOS included for plain text).
    pub chosen: Vec<u32>,
    /// Rejected completion ids.
    pub rejected: Vec<u32>,
}

/// Token ids of a prompt and of one completion, split the way TRL splits them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptCompletion {
    /// Prompt ids (the common prefix).
    pub prompt: Vec<u32>,
    /// Completion ids (the rest of prompt + completion), EOS included.
    pub completion: Vec<u32>,
}

/// Length of the longest common prefix of two id sequences.
pub fn common_prefix_length(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn with_eos(tokenizer: &Tokenizer, completion: &str) -> String {
    match &tokenizer.eos_token {
        Some(eos) if !completion.ends_with(eos.as_str()) => format!("{completion}{eos}"),
        _ => completion.to_string(),
    }
}

/// Tokenizes one plain-text prompt / completion pair as TRL does (see the module docs): the
/// tokenizer's EOS is appended to the completion unless it ends with it.
pub fn tokenize_prompt_completion(
    tokenizer: &Tokenizer,
    prompt: &str,
    completion: &str,
) -> Result<PromptCompletion, ModelError> {
    split_prompt_completion(tokenizer, prompt, &with_eos(tokenizer, completion))
}

/// Tokenizes `prompt + completion` as one string and splits it where the prompt's own tokens
/// stop matching (TRL's split), with the completion exactly as given: no EOS is added.
pub fn split_prompt_completion(
    tokenizer: &Tokenizer,
    prompt: &str,
    completion: &str,
) -> Result<PromptCompletion, ModelError> {
    let prompt_ids = tokenizer.encode(prompt, true)?;
    let full = tokenizer.encode(&format!("{prompt}{completion}"), true)?;
    let split = common_prefix_length(&prompt_ids, &full);
    Ok(PromptCompletion {
        prompt: full[..split].to_vec(),
        completion: full[split..].to_vec(),
    })
}

/// Why a record could not be tokenized.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] ModelError),
    /// The chat template failed to render.
    #[error("chat template: {0:#}")]
    Template(#[from] minijinja::Error),
    /// A conversational record, and the model has no chat template.
    #[error(
        "a conversational record needs a chat template, and the tokenizer has none \
         (set `chat_template` in tokenizer_config.json or give records as plain text)"
    )]
    NoTemplate,
}

/// Tokenizes preference records with one tokenizer and its chat template.
#[derive(Debug)]
pub struct PairTokenizer<'a> {
    tokenizer: &'a Tokenizer,
    template: Option<ChatTemplate>,
    bos: Option<String>,
}

impl<'a> PairTokenizer<'a> {
    /// Compiles the tokenizer's chat template, if it has one.
    pub fn new(tokenizer: &'a Tokenizer) -> Result<Self, minijinja::Error> {
        let name = match &tokenizer.chat_template_file {
            Some(file) => file.display().to_string(),
            None => "chat_template".to_string(),
        };
        let template = tokenizer
            .chat_template
            .as_deref()
            .map(|t| ChatTemplate::named(t, &name))
            .transpose()?;
        let bos = tokenizer
            .bos_token_id
            .and_then(|id| tokenizer.id_to_token(id));
        Ok(Self {
            tokenizer,
            template,
            bos,
        })
    }

    /// Tokenizes one record (see the module docs).
    pub fn tokenize(&self, record: &PreferenceRecord) -> Result<TokenizedPair, TokenizeError> {
        let tok = self.tokenizer;
        let (prompt, chosen, rejected) = match (&record.prompt, &record.chosen, &record.rejected) {
            (Turns::Text(p), Turns::Text(c), Turns::Text(r)) => (
                tok.encode(p, true)?,
                tok.encode(&format!("{p}{}", with_eos(tok, c)), true)?,
                tok.encode(&format!("{p}{}", with_eos(tok, r)), true)?,
            ),
            (Turns::Messages(p), Turns::Messages(c), Turns::Messages(r)) => {
                let t = self.template.as_ref().ok_or(TokenizeError::NoTemplate)?;
                let (bos, eos) = (self.bos.as_deref(), tok.eos_token.as_deref());
                let full = |c: &[_]| -> Result<Vec<u32>, TokenizeError> {
                    let msgs: Vec<_> = p.iter().chain(c).cloned().collect();
                    Ok(tok.encode(&t.render(&msgs, false, bos, eos)?, false)?)
                };
                (
                    tok.encode(&t.render(p, true, bos, eos)?, false)?,
                    full(c)?,
                    full(r)?,
                )
            }
            _ => unreachable!("parse_record checks that the three fields have one format"),
        };
        let split =
            common_prefix_length(&prompt, &chosen).min(common_prefix_length(&prompt, &rejected));
        Ok(TokenizedPair {
            prompt: prompt[..split].to_vec(),
            chosen: chosen[split..].to_vec(),
            rejected: rejected[split..].to_vec(),
        })
    }

    /// Tokenizes one unpaired example as TRL's `KTOTrainer` does: the prompt, and prompt +
    /// completion as one sequence (EOS text appended to a plain-text completion; conversations
    /// through the chat template), split where the prompt's ids stop matching.
    pub fn tokenize_unpaired(
        &self,
        record: &UnpairedRecord,
    ) -> Result<PromptCompletion, TokenizeError> {
        let tok = self.tokenizer;
        let (prompt, full) = match (&record.prompt, &record.completion) {
            (Turns::Text(p), Turns::Text(c)) => (
                tok.encode(p, true)?,
                tok.encode(&format!("{p}{}", with_eos(tok, c)), true)?,
            ),
            (Turns::Messages(p), Turns::Messages(c)) => {
                let t = self.template.as_ref().ok_or(TokenizeError::NoTemplate)?;
                let (bos, eos) = (self.bos.as_deref(), tok.eos_token.as_deref());
                let msgs: Vec<_> = p.iter().chain(c).cloned().collect();
                (
                    tok.encode(&t.render(p, true, bos, eos)?, false)?,
                    tok.encode(&t.render(&msgs, false, bos, eos)?, false)?,
                )
            }
            _ => unreachable!("parse_unpaired checks that both fields have one format"),
        };
        let split = common_prefix_length(&prompt, &full);
        Ok(PromptCompletion {
            prompt: full[..split].to_vec(),
            completion: full[split..].to_vec(),
        })
    }
}
