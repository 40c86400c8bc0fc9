//! A synthetic review language whose sentiment an oracle computes exactly: the quickstart's task.
//!
//! A review is clauses `the NOUN was [very|really] [not] ADJ` joined by `and` or `but`. Each
//! clause *means* +1, -1 or 0: the adjective's polarity (positive, negative, neutral), flipped by
//! `not`. Reviews are drawn with an overall sentiment that most clauses follow, so a model trained
//! on them continues a prompt in the prompt's mood; preference optimization must teach it to turn
//! positive whatever the prompt — the controlled-sentiment task of the DPO paper, in miniature,
//! with a reward that needs no model.
//!
//! ```
//! use ganpo_train::task::sentiment::oracle_reward;
//!
//! // The clauses the completion finishes: "very good" (+1) and "not dull" (+1).
//! assert_eq!(oracle_reward("the plot was", " very good and the cast was not dull"), 1.0);
//! // A positive and a negative clause.
//! assert_eq!(oracle_reward("the plot was", " good but the music was bad"), 0.0);
//! // Not a review of this language: the lowest reward.
//! assert_eq!(oracle_reward("the plot was", " good good good"), -1.0);
//! ```

use rand::Rng;
use serde_json::{Value, json};

/// What a review talks about.
pub const NOUNS: [&str; 8] = [
    "film", "plot", "cast", "acting", "story", "music", "ending", "script",
];
/// Adjectives meaning +1.
pub const POSITIVE: [&str; 6] = ["good", "great", "superb", "lovely", "brilliant", "fun"];
/// Adjectives meaning -1.
pub const NEGATIVE: [&str; 6] = ["bad", "awful", "dull", "boring", "weak", "poor"];
/// Adjectives meaning 0.
pub const NEUTRAL: [&str; 4] = ["long", "short", "loud", "quiet"];
/// Optional intensifiers (no effect on meaning).
pub const INTENSIFIERS: [&str; 2] = ["very", "really"];
/// The remaining words: article, verb, negation, conjunctions.
pub const FUNCTION_WORDS: [&str; 5] = ["the", "was", "not", "and", "but"];

/// The end-of-sequence token of the task's tokenizer.
pub const EOS: &str = "<eos>";
/// The padding token.
pub const PAD: &str = "<pad>";
/// The unknown-word token.
pub const UNK: &str = "<unk>";

/// Every word of the language, in vocabulary order.
pub fn words() -> Vec<&'static str> {
    [
        &FUNCTION_WORDS[..],
        &NOUNS,
        &INTENSIFIERS,
        &POSITIVE,
        &NEGATIVE,
        &NEUTRAL,
    ]
    .concat()
}

fn polarity(adjective: &str) -> Option<f64> {
    if POSITIVE.contains(&adjective) {
        Some(1.0)
    } else if NEGATIVE.contains(&adjective) {
        Some(-1.0)
    } else if NEUTRAL.contains(&adjective) {
        Some(0.0)
    } else {
        None
    }
}

/// The clause meanings of a review, each with the index of its adjective; `None` when `words` is
/// not a complete review of the language.
pub fn parse(words: &[&str]) -> Option<Vec<(usize, f64)>> {
    let mut clauses = Vec::new();
    let mut i = 0;
    loop {
        let at = |k: usize| words.get(k).copied();
        if at(i) != Some("the") || !at(i + 1).is_some_and(|w| NOUNS.contains(&w)) {
            return None;
        }
        if at(i + 2) != Some("was") {
            return None;
        }
        i += 3;
        if at(i).is_some_and(|w| INTENSIFIERS.contains(&w)) {
            i += 1;
        }
        let negated = at(i) == Some("not");
        if negated {
            i += 1;
        }
        let p = polarity(at(i)?)?;
        clauses.push((i, if negated { -p } else { p }));
        i += 1;
        match at(i) {
            None => return Some(clauses),
            Some("and" | "but") => i += 1,
            Some(_) => return None,
        }
    }
}

/// Whether prompt + completion is a complete review of the language (else the oracle gives -1
/// whatever the completion says).
pub fn is_review(prompt: &str, completion: &str) -> bool {
    let text = format!("{prompt}{completion}");
    parse(&text.split_whitespace().collect::<Vec<_>>()).is_some()
}

/// The oracle reward of `completion` continuing `prompt`: the mean meaning (+1, 0, -1) of the
/// clauses whose adjective the completion wrote, 0 when it wrote none, and -1 when prompt +
/// completion is not a complete review (unknown words, broken grammar, cut off mid-clause).
pub fn oracle_reward(prompt: &str, completion: &str) -> f64 {
    let prompt_words = prompt.split_whitespace().count();
    let text = format!("{prompt}{completion}");
    let all: Vec<&str> = text.split_whitespace().collect();
    let Some(clauses) = parse(&all) else {
        return -1.0;
    };
    let written: Vec<f64> = clauses
        .iter()
        .filter(|(at, _)| *at >= prompt_words)
        .map(|&(_, m)| m)
        .collect();
    if written.is_empty() {
        0.0
    } else {
        written.iter().sum::<f64>() / written.len() as f64
    }
}

/// How reviews are drawn.
#[derive(Clone, Debug)]
pub struct ReviewStyle {
    /// Most clauses per review (at least one).
    pub max_clauses: usize,
    /// Probability that a clause uses a neutral adjective.
    pub neutral: f64,
    /// Probability that a non-neutral clause agrees with the review's overall sentiment.
    pub agree: f64,
    /// Probability that a clause is negated (its adjective then has the opposite polarity).
    pub negate: f64,
    /// Probability of an intensifier.
    pub intensify: f64,
}

impl Default for ReviewStyle {
    fn default() -> Self {
        Self {
            max_clauses: 3,
            neutral: 0.15,
            agree: 0.8,
            negate: 0.2,
            intensify: 0.3,
        }
    }
}

fn pick<R: Rng>(rng: &mut R, words: &[&'static str]) -> &'static str {
    words[rng.random_range(0..words.len())]
}

impl ReviewStyle {
    /// One review as words: an overall sentiment is drawn, then each clause's meaning follows it
    /// with probability `agree`; `but` joins clauses of opposite meanings, `and` the others.
    pub fn review<R: Rng>(&self, rng: &mut R) -> Vec<&'static str> {
        let sentiment = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let clauses = rng.random_range(1..=self.max_clauses.max(1));
        let mut words = Vec::new();
        let mut previous: Option<f64> = None;
        for _ in 0..clauses {
            let meaning = if rng.random_bool(self.neutral) {
                0.0
            } else if rng.random_bool(self.agree) {
                sentiment
            } else {
                -sentiment
            };
            if let Some(p) = previous {
                words.push(if p * meaning < 0.0 { "but" } else { "and" });
            }
            words.extend(["the", pick(rng, &NOUNS), "was"]);
            if rng.random_bool(self.intensify) {
                words.push(pick(rng, &INTENSIFIERS));
            }
            let negated = meaning != 0.0 && rng.random_bool(self.negate);
            if negated {
                words.push("not");
            }
            let shown = if negated { -meaning } else { meaning };
            words.push(match shown {
                m if m > 0.0 => pick(rng, &POSITIVE),
                m if m < 0.0 => pick(rng, &NEGATIVE),
                _ => pick(rng, &NEUTRAL),
            });
            previous = Some(meaning);
        }
        words
    }

    /// A prompt: the first 2 to 7 words of a fresh review (never the whole review).
    pub fn prompt<R: Rng>(&self, rng: &mut R) -> String {
        let review = self.review(rng);
        let longest = 7.min(review.len() - 1).max(2);
        review[..rng.random_range(2..=longest)].join(" ")
    }
}

/// The vocabulary: `<pad>`, `<eos>`, `<unk>`, then every word twice, as it appears at the start of
/// a text (`the`) and after a space (`Ġthe`, GPT-2's byte-level convention).
pub fn vocabulary() -> Vec<String> {
    let mut vocab: Vec<String> = [PAD, EOS, UNK].map(String::from).to_vec();
    for w in words() {
        vocab.push(w.to_string());
        vocab.push(format!("Ġ{w}"));
    }
    vocab
}

/// The task's `tokenizer.json` (HF `tokenizers`): a word-level model behind GPT-2's byte-level
/// pre-tokenizer and decoder, so completions decode with their leading space and prompt +
/// completion tokenize as the two parts do — what TRL's tokenization relies on.
pub fn tokenizer_json() -> Value {
    let vocab = vocabulary();
    let added: Vec<Value> = vocab[..3]
        .iter()
        .enumerate()
        .map(|(id, content)| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let ids: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(id, w)| (w.clone(), json!(id)))
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                            "use_regex": true});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "WordLevel", "vocab": ids, "unk_token": UNK},
    })
}

/// The task's `tokenizer_config.json`: its special tokens.
pub fn tokenizer_config_json() -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 64,
    })
}

/// The task's `generation_config.json`: generation stops at `<eos>`.
pub fn generation_config_json() -> Value {
    json!({"eos_token_id": 1, "pad_token_id": 0})
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn drawn_reviews_parse_and_mean_what_was_drawn() {
        let style = ReviewStyle::default();
        let mut rng = StdRng::seed_from_u64(0);
        let (mut total, mut n) = (0.0, 0);
        for _ in 0..2000 {
            let review = style.review(&mut rng);
            let clauses = parse(&review).expect("a drawn review parses");
            assert!((1..=style.max_clauses).contains(&clauses.len()));
            for &(_, m) in &clauses {
                total += m;
                n += 1;
            }
            // `but` exactly where consecutive meanings have opposite signs.
            for (k, pair) in clauses.windows(2).enumerate() {
                let conj = review[pair[0].0 + 1];
                assert_eq!(
                    conj == "but",
                    pair[0].1 * pair[1].1 < 0.0,
                    "clause {k}: {review:?}"
                );
            }
        }
        // The two sentiments are equally likely: the mean meaning is near 0.
        assert!((total / n as f64).abs() < 0.05, "{}", total / n as f64);
    }

    #[test]
    fn the_oracle_counts_only_what_the_completion_wrote() {
        assert_eq!(
            oracle_reward("the plot was bad and the", " cast was great"),
            1.0
        );
        assert_eq!(oracle_reward("the plot was bad", ""), 0.0);
        assert_eq!(
            oracle_reward("the plot was bad", " and the cast was loud"),
            0.0
        );
        // `not good` means -1, and the completion wrote its adjective.
        assert_eq!(oracle_reward("the plot", " was really not good"), -1.0);
        assert_eq!(oracle_reward("the plot was", " very"), -1.0);
        assert_eq!(oracle_reward("the plot was", " good and"), -1.0);
        assert_eq!(oracle_reward("the plot was", " gud"), -1.0);
        assert_eq!(
            oracle_reward(
                "the plot was",
                " good and the cast was bad and the end was good"
            ),
            -1.0,
            "`end` is not a noun of the language"
        );
        assert!(
            (oracle_reward(
                "the plot was",
                " good and the cast was bad and the music was fun"
            ) - 1.0 / 3.0)
                .abs()
                < 1e-12
        );
    }

    #[test]
    fn prompts_are_proper_prefixes() {
        let style = ReviewStyle::default();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..500 {
            let p = style.prompt(&mut rng);
            let n = p.split_whitespace().count();
            assert!((2..=7).contains(&n), "{p}");
            assert!(p.starts_with("the "), "{p}");
            assert!(p.split_whitespace().all(|w| words().contains(&w)), "{p}");
        }
    }
}
