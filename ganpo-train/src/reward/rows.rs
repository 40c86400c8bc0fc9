//! Reward-model data files: labelled texts (`text` + `label`) or preference pairs (`chosen` +
//! `rejected`, with or without `prompt`, plain or conversational, optional `margin`), tokenized
//! for a [`SequenceClassifier`](ganpo_models::classifier::SequenceClassifier).

use std::path::Path;

use ganpo_models::Tokenizer;
use serde_json::Value;

use super::data::{RewardData, RewardPair, reward_ids};
use crate::data::source::{RecordError, read_file};
use crate::data::{DataError, PairTokenizer, parse_record};

/// The label names of a labelled file: given (`--labels`), or `LABEL_0..` from integer labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelNames {
    /// These names, in class order; string labels must be among them, integer labels below
    /// their count.
    Given(Vec<String>),
    /// Integer labels only; `LABEL_i` names for `0..=max` (at least two classes).
    FromData,
}

/// Reads a reward-model file: every row labelled, or every row a pair (a mix is an error). Rows
/// are tokenized with `tokenizer` (pairs as preference training tokenizes them, chat template
/// included), each text cut to `max_length` tokens. Every malformed row is reported with its
/// line. Returns the data and, for labelled rows, the label names.
pub fn load_reward_data(
    path: &Path,
    tokenizer: &Tokenizer,
    labels: &LabelNames,
    max_length: usize,
) -> Result<(RewardData, Vec<String>), DataError> {
    let rows = read_file(path)?;
    let total = rows.len();
    let pair_tokenizer = PairTokenizer::new(tokenizer).map_err(|e| DataError::Invalid {
        errors: vec![RecordError {
            file: path.to_path_buf(),
            line: 0,
            field: "chat_template".into(),
            problem: e.to_string(),
        }],
        total,
    })?;
    let eos = tokenizer.eos_token_ids.clone();
    let mut labelled: Vec<(Vec<u32>, Label, usize)> = Vec::new();
    let mut pairs = Vec::new();
    let mut errors = Vec::new();
    let mut error = |line: usize, field: &str, problem: String| {
        errors.push(RecordError {
            file: path.to_path_buf(),
            line,
            field: field.to_string(),
            problem,
        })
    };
    for (line, row) in rows {
        let row = match row {
            Ok(v) => v,
            Err(problem) => {
                error(line, "", problem);
                continue;
            }
        };
        if let Some(text) = row.get("text") {
            if !pairs.is_empty() {
                error(line, "text", "a labelled row in a file of pairs".into());
                continue;
            }
            let Some(text) = text.as_str() else {
                error(line, "text", "expected a string".into());
                continue;
            };
            let label = match row.get("label") {
                Some(Value::String(s)) => Some(Label::Name(s.clone())),
                Some(Value::Bool(b)) => Some(Label::Index(usize::from(*b))),
                Some(v) => v.as_u64().map(|i| Label::Index(i as usize)),
                None => None,
            };
            let Some(label) = label else {
                error(
                    line,
                    "label",
                    "expected a class index (0, 1, ...), a label name or a boolean".into(),
                );
                continue;
            };
            match reward_ids(tokenizer, text, max_length) {
                Ok(ids) => labelled.push((ids, label, line)),
                Err(e) => error(line, "text", e.to_string()),
            }
        } else {
            if !labelled.is_empty() {
                error(line, "", "a pair in a file of labelled texts".into());
                continue;
            }
            let record = match parse_record(&row) {
                Ok(r) => r,
                Err(e) => {
                    error(line, &e.field, e.problem);
                    continue;
                }
            };
            let margin = match row.get("margin") {
                None | Some(Value::Null) => None,
                Some(m) => match m.as_f64() {
                    Some(m) => Some(m as f32),
                    None => {
                        error(line, "margin", "expected a number".into());
                        continue;
                    }
                },
            };
            match pair_tokenizer.tokenize(&record) {
                Ok(p) => {
                    let text = |completion: &[u32]| {
                        let mut ids = [p.prompt.as_slice(), completion].concat();
                        if ids.last().is_some_and(|t| eos.contains(t)) {
                            ids.pop();
                        }
                        ids.truncate(max_length.max(1));
                        ids
                    };
                    let pair = RewardPair {
                        chosen: text(&p.chosen),
                        rejected: text(&p.rejected),
                        margin,
                    };
                    pairs.push((pair, line));
                }
                Err(e) => error(line, "", format!("cannot tokenize: {e}")),
            }
        }
    }
    if let Some((first, _)) = pairs.first() {
        let with_margin = first.margin.is_some();
        if let Some((_, line)) = pairs
            .iter()
            .find(|(p, _)| p.margin.is_some() != with_margin)
        {
            error(
                *line,
                "margin",
                "some pairs have a margin and others not".into(),
            );
        }
    }
    let names = if labelled.is_empty() {
        vec!["reward".to_string()]
    } else {
        match class_names(&labelled, labels) {
            Ok(names) => names,
            Err((line, problem)) => {
                error(line, "label", problem);
                Vec::new()
            }
        }
    };
    if !errors.is_empty() {
        return Err(DataError::Invalid { errors, total });
    }
    if labelled.is_empty() && pairs.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let data = if pairs.is_empty() {
        RewardData::Labelled(
            labelled
                .into_iter()
                .map(|(ids, label, _)| {
                    let class = match label {
                        Label::Index(i) => i,
                        Label::Name(n) => names.iter().position(|x| *x == n).unwrap_or(0),
                    };
                    (ids, class)
                })
                .collect(),
        )
    } else {
        RewardData::Pairs(pairs.into_iter().map(|(p, _)| p).collect())
    };
    Ok((data, names))
}

/// A row's label as written.
#[derive(Clone, Debug)]
enum Label {
    Index(usize),
    Name(String),
}

/// The class names of labelled rows, or the first bad row's line and why.
fn class_names(
    rows: &[(Vec<u32>, Label, usize)],
    labels: &LabelNames,
) -> Result<Vec<String>, (usize, String)> {
    match labels {
        LabelNames::Given(names) => {
            for (_, label, line) in rows {
                match label {
                    Label::Index(i) if *i >= names.len() => {
                        return Err((
                            *line,
                            format!("class {i}, but only {} labels are given", names.len()),
                        ));
                    }
                    Label::Name(n) if !names.contains(n) => {
                        return Err((
                            *line,
                            format!("`{n}` is not one of the labels {}", names.join(", ")),
                        ));
                    }
                    _ => {}
                }
            }
            Ok(names.clone())
        }
        LabelNames::FromData => {
            let mut max = 1;
            for (_, label, line) in rows {
                match label {
                    Label::Index(i) => max = max.max(*i),
                    Label::Name(n) => {
                        return Err((
                            *line,
                            format!("label `{n}` is a name: give the label names (--labels)"),
                        ));
                    }
                }
            }
            Ok((0..=max).map(|i| format!("LABEL_{i}")).collect())
        }
    }
}
