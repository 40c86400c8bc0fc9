//! One preference example as it comes from a dataset file, checked field by field.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One chat message (`{"role": ..., "content": ...}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The message text.
    pub content: String,
}

/// A prompt or a completion: plain text (standard format) or messages (conversational format).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Turns {
    /// Standard format.
    Text(String),
    /// Conversational format, rendered with the model's chat template.
    Messages(Vec<Message>),
}

/// A checked preference example with an explicit prompt (implicit prompts are already
/// extracted, see [`extract_prompt`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceRecord {
    /// The shared prompt.
    pub prompt: Turns,
    /// The preferred completion.
    pub chosen: Turns,
    /// The dispreferred completion.
    pub rejected: Turns,
}

/// A checked unpaired example, TRL's `KTOTrainer` format: a prompt, one completion, and whether
/// the completion is desirable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpairedRecord {
    /// The prompt.
    pub prompt: Turns,
    /// The completion.
    pub completion: Turns,
    /// `true` = desirable (TRL's `label`).
    pub label: bool,
}

/// A checked dataset row: a preference pair, or an unpaired example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// `prompt` (or an implicit prompt), `chosen`, `rejected`.
    Paired(PreferenceRecord),
    /// `prompt`, `completion`, `label`.
    Unpaired(UnpairedRecord),
}

/// Why a record is malformed: the field (dotted, `chosen[1].content`; empty for the whole record)
/// and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The offending field.
    pub field: String,
    /// What was expected.
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        problem: problem.into(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn parse_turns(v: Option<&Value>, field: &str) -> Result<Turns, FieldError> {
    let expected = "a non-empty string or a non-empty list of {role, content} messages";
    match v {
        None | Some(Value::Null) => Err(bad(field, format!("missing: expected {expected}"))),
        Some(Value::String(s)) if s.is_empty() => Err(bad(field, "empty string")),
        Some(Value::String(s)) => Ok(Turns::Text(s.clone())),
        Some(Value::Array(items)) if items.is_empty() => Err(bad(field, "empty list")),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let at = format!("{field}[{i}]");
                let obj = m.as_object().ok_or_else(|| {
                    bad(
                        &at,
                        format!("expected a message object, got {}", type_name(m)),
                    )
                })?;
                let text = |key: &str| match obj.get(key) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(other) => Err(bad(
                        format!("{at}.{key}"),
                        format!("expected a string, got {}", type_name(other)),
                    )),
                    None => Err(bad(format!("{at}.{key}"), "missing")),
                };
                let role = text("role")?;
                if role.is_empty() {
                    return Err(bad(format!("{at}.role"), "empty string"));
                }
                Ok(Message {
                    role,
                    content: text("content")?,
                })
            })
            .collect::<Result<_, _>>()
            .map(Turns::Messages),
        Some(other) => Err(bad(
            field,
            format!("expected {expected}, got {}", type_name(other)),
        )),
    }
}

/// Checks one dataset row: an unpaired example when it has `completion` or `label`
/// ([`parse_unpaired`]), else a pair ([`parse_record`]).
pub fn parse_row(row: &Value) -> Result<Record, FieldError> {
    let unpaired = row
        .as_object()
        .is_some_and(|o| o.contains_key("completion") || o.contains_key("label"));
    match unpaired {
        true => parse_unpaired(row).map(Record::Unpaired),
        false => parse_record(row).map(Record::Paired),
    }
}

/// Checks one unpaired row (a JSON object with `prompt`, `completion` and a boolean `label`), as
/// TRL's `KTOTrainer` reads it. A row that also has `chosen` or `rejected` is refused: it would
/// be both a pair and an unpaired example.
pub fn parse_unpaired(row: &Value) -> Result<UnpairedRecord, FieldError> {
    let obj = row.as_object().ok_or_else(|| {
        bad(
            "",
            format!("expected a JSON object, got {}", type_name(row)),
        )
    })?;
    if let Some(key) = ["chosen", "rejected"]
        .into_iter()
        .find(|k| obj.contains_key(*k))
    {
        return Err(bad(
            key,
            "a row is either a pair (prompt, chosen, rejected) or an unpaired example (prompt, \
             completion, label), not both",
        ));
    }
    let prompt = parse_turns(obj.get("prompt"), "prompt")?;
    let completion = parse_turns(obj.get("completion"), "completion")?;
    if matches!(prompt, Turns::Text(_)) != matches!(completion, Turns::Text(_)) {
        return Err(bad(
            "completion",
            "must have the same format as `prompt` (both strings or both message lists)",
        ));
    }
    let label = match obj.get("label") {
        Some(Value::Bool(b)) => *b,
        None | Some(Value::Null) => {
            return Err(bad(
                "label",
                "missing: expected a boolean (true = desirable)",
            ));
        }
        Some(other) => {
            return Err(bad(
                "label",
                format!(
                    "expected a boolean (true = desirable), got {}",
                    type_name(other)
                ),
            ));
        }
    };
    Ok(UnpairedRecord {
        prompt,
        completion,
        label,
    })
}

/// Checks one dataset row (a JSON object with `chosen`, `rejected` and optionally `prompt`) and
/// returns it with an explicit prompt.
///
/// Without `prompt` the row is in the implicit-prompt format and the prompt is extracted as TRL's
/// `extract_prompt` does. The three fields must all be text or all be messages.
pub fn parse_record(row: &Value) -> Result<PreferenceRecord, FieldError> {
    let obj = row.as_object().ok_or_else(|| {
        bad(
            "",
            format!("expected a JSON object, got {}", type_name(row)),
        )
    })?;
    let chosen = parse_turns(obj.get("chosen"), "chosen")?;
    let rejected = parse_turns(obj.get("rejected"), "rejected")?;
    let is_text = |t: &Turns| matches!(t, Turns::Text(_));
    if is_text(&chosen) != is_text(&rejected) {
        return Err(bad(
            "rejected",
            "must have the same format as `chosen` (both strings or both message lists)",
        ));
    }
    match obj.get("prompt") {
        None | Some(Value::Null) => extract_prompt(chosen, rejected),
        Some(p) => {
            let prompt = parse_turns(Some(p), "prompt")?;
            if is_text(&prompt) != is_text(&chosen) {
                return Err(bad(
                    "prompt",
                    "must have the same format as `chosen` (both strings or both message lists)",
                ));
            }
            Ok(PreferenceRecord {
                prompt,
                chosen,
                rejected,
            })
        }
    }
}

/// Splits an implicit-prompt pair into prompt and completions as TRL's `extract_prompt` does:
/// the prompt is the longest common prefix (of characters, or of whole messages); a space just
/// before the point where they differ goes to the completions.
pub fn extract_prompt(chosen: Turns, rejected: Turns) -> Result<PreferenceRecord, FieldError> {
    fn split<T: PartialEq + Clone>(c: &[T], r: &[T], space: Option<&T>) -> Option<usize> {
        let n = c.len().min(r.len());
        let mut idx = (0..n).find(|&i| c[i] != r[i])?;
        if idx > 0 && space.is_some_and(|s| c[idx - 1] == *s) {
            idx -= 1;
        }
        Some(idx)
    }
    let same = || {
        bad(
            "rejected",
            "without a `prompt`, `chosen` and `rejected` must differ after a shared prefix \
             (one is a prefix of the other, or they are identical)",
        )
    };
    let no_prompt = || {
        bad(
            "prompt",
            "missing, and `chosen` and `rejected` share no prefix",
        )
    };
    match (chosen, rejected) {
        (Turns::Text(c), Turns::Text(r)) => {
            let (cc, rc): (Vec<char>, Vec<char>) = (c.chars().collect(), r.chars().collect());
            let idx = split(&cc, &rc, Some(&' ')).ok_or_else(same)?;
            if idx == 0 {
                return Err(no_prompt());
            }
            let text = |chars: &[char]| chars.iter().collect::<String>();
            Ok(PreferenceRecord {
                prompt: Turns::Text(text(&cc[..idx])),
                chosen: Turns::Text(text(&cc[idx..])),
                rejected: Turns::Text(text(&rc[idx..])),
            })
        }
        (Turns::Messages(c), Turns::Messages(r)) => {
            let idx = split(&c, &r, None).ok_or_else(same)?;
            if idx == 0 {
                return Err(no_prompt());
            }
            Ok(PreferenceRecord {
                prompt: Turns::Messages(c[..idx].to_vec()),
                chosen: Turns::Messages(c[idx..].to_vec()),
                rejected: Turns::Messages(r[idx..].to_vec()),
            })
        }
        _ => unreachable!("formats are checked to match before extraction"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn implicit_prompt_moves_the_space_to_the_completions() {
        let r = parse_record(&json!({
            "chosen": "\n\nHuman: hi\n\nAssistant: Hello there",
            "rejected": "\n\nHuman: hi\n\nAssistant: Go away"
        }))
        .unwrap();
        assert_eq!(r.prompt, Turns::Text("\n\nHuman: hi\n\nAssistant:".into()));
        assert_eq!(r.chosen, Turns::Text(" Hello there".into()));
        assert_eq!(r.rejected, Turns::Text(" Go away".into()));
    }

    #[test]
    fn implicit_conversation_splits_at_the_first_different_message() {
        let m = |role: &str, content: &str| json!({"role": role, "content": content});
        let r = parse_record(&json!({
            "chosen": [m("user", "sky?"), m("assistant", "blue")],
            "rejected": [m("user", "sky?"), m("assistant", "green")],
        }))
        .unwrap();
        assert!(matches!(&r.prompt, Turns::Messages(v) if v.len() == 1 && v[0].content == "sky?"));
        assert!(matches!(&r.chosen, Turns::Messages(v) if v[0].content == "blue"));
    }

    #[test]
    fn malformed_rows_name_the_field() {
        let cases = [
            (json!([1, 2]), "", "expected a JSON object, got a list"),
            (json!({"prompt": "p", "rejected": "r"}), "chosen", "missing"),
            (
                json!({"prompt": "p", "chosen": "", "rejected": "r"}),
                "chosen",
                "empty string",
            ),
            (
                json!({"prompt": "p", "chosen": 3, "rejected": "r"}),
                "chosen",
                "got a number",
            ),
            (
                json!({"prompt": 5, "chosen": "c", "rejected": "r"}),
                "prompt",
                "got a number",
            ),
            (
                json!({"prompt": "p", "chosen": [{"role": "assistant"}], "rejected": "r"}),
                "chosen[0].content",
                "missing",
            ),
            (
                json!({"prompt": "p", "chosen": [{"role": "a", "content": "x"}], "rejected": "r"}),
                "rejected",
                "same format",
            ),
            (
                json!({"chosen": "same", "rejected": "same"}),
                "rejected",
                "identical",
            ),
            (
                json!({"chosen": "abc", "rejected": "xyz"}),
                "prompt",
                "share no prefix",
            ),
        ];
        for (row, field, problem) in cases {
            let e = parse_record(&row).unwrap_err();
            assert_eq!(e.field, field, "{row}");
            assert!(e.problem.contains(problem), "{row}: {}", e.problem);
        }
    }
}
