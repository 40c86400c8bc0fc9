//! Prompt / completion tokenization as TRL 1.x's `DPOTrainer` does it.
//!
//! For plain-text examples TRL (1.16) appends the EOS token's text to each completion unless it
//! already ends with it, tokenizes the prompt and prompt + completion as whole strings (with the
//! tokenizer's special tokens), and takes as prompt the longest common prefix of the two token
//! sequences: a token that merges across the prompt / completion boundary belongs to the
//! completion, and the prompt loses its end.

use ganpo_models::{ModelError, Tokenizer};

/// Token ids of a prompt and of its completion, split the way TRL splits them.
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

/// Tokenizes one prompt / completion pair as TRL does (see the module docs).
pub fn tokenize_prompt_completion(
    tokenizer: &Tokenizer,
    prompt: &str,
    completion: &str,
) -> Result<PromptCompletion, ModelError> {
    let mut completion = completion.to_string();
    if let Some(eos) = &tokenizer.eos_token
        && !completion.ends_with(eos.as_str())
    {
        completion.push_str(eos);
    }
    let prompt_ids = tokenizer.encode(prompt, true)?;
    let full = tokenizer.encode(&format!("{prompt}{completion}"), true)?;
    let split = common_prefix_length(&prompt_ids, &full);
    Ok(PromptCompletion {
        prompt: full[..split].to_vec(),
        completion: full[split..].to_vec(),
    })
}
