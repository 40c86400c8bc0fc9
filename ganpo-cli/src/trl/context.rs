//! Reading a TRL recipe's values as TRL does (numbers given as text, `True`, one value for a
//! list) while the mapping builds the run configuration.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Recipe, known};

/// A recipe being mapped: its values (TRL's defaults where not given), the run-config table
/// built so far, and what was refused or noted.
pub(super) struct Ctx<'a> {
    recipe: &'a Recipe,
    /// Refusals, each naming the key, its value and its origin.
    pub errors: Vec<String>,
    /// Notes for the printed run.toml.
    pub notes: Vec<String>,
    /// Keys read so far (the rest are checked against TRL's defaults).
    pub used: BTreeSet<String>,
    /// The run configuration being built.
    pub table: toml::Table,
}

impl<'a> Ctx<'a> {
    /// Starts mapping `recipe`.
    pub fn new(recipe: &'a Recipe) -> Self {
        Self {
            recipe,
            errors: vec![],
            notes: vec![],
            used: BTreeSet::new(),
            table: toml::Table::new(),
        }
    }

    /// The recipe being mapped.
    pub fn recipe(&self) -> &'a Recipe {
        self.recipe
    }

    /// The effective value of `key`: given, else TRL's default.
    pub fn get(&mut self, key: &str) -> Value {
        self.used.insert(key.to_string());
        match self.recipe.given.get(key) {
            Some((v, _)) => v.clone(),
            None => known()
                .1
                .get(key)
                .map(|k| k.default.clone())
                .unwrap_or(Value::Null),
        }
    }

    /// Whether the recipe sets `key` itself.
    pub fn given(&self, key: &str) -> bool {
        self.recipe.given.contains_key(key)
    }

    /// Where `key`'s value came from: the file, the command line or TRL's default.
    pub fn origin(&self, key: &str) -> String {
        self.recipe
            .given
            .get(key)
            .map_or_else(|| "TRL's default".into(), |(_, o)| o.clone())
    }

    /// Records that `key` = `value` cannot be honoured, and why.
    pub fn refuse(&mut self, key: &str, value: &Value, why: &str) {
        let origin = self.origin(key);
        self.errors
            .push(format!("{origin}: `{key}` = {value}: {why}"));
    }

    /// `key` as a number (text such as `5e-7` included); `None` for null.
    pub fn number(&mut self, key: &str) -> Option<f64> {
        let v = self.get(key);
        match &v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok().or_else(|| {
                self.refuse(key, &v, "expected a number");
                None
            }),
            Value::Null => None,
            _ => {
                self.refuse(key, &v, "expected a number");
                None
            }
        }
    }

    /// A whole number (TRL's float epochs included, when whole).
    pub fn count(&mut self, key: &str) -> Option<i64> {
        let x = self.number(key)?;
        if x.fract() != 0.0 {
            let v = self.get(key);
            self.refuse(key, &v, "ganpo takes a whole number here");
            return None;
        }
        Some(x as i64)
    }

    /// `key` as a boolean (`true`, `"True"`, `1`, ...); `None` for null.
    pub fn boolean(&mut self, key: &str) -> Option<bool> {
        let v = self.get(key);
        match &v {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Some(true),
                "false" | "no" | "0" => Some(false),
                _ => {
                    self.refuse(key, &v, "expected true or false");
                    None
                }
            },
            Value::Null => None,
            _ => {
                self.refuse(key, &v, "expected true or false");
                None
            }
        }
    }

    /// `key` as text; `None` for null.
    pub fn text(&mut self, key: &str) -> Option<String> {
        match self.get(key) {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        }
    }

    /// `key` as a list (one value, or comma-separated text, is a list of itself).
    pub fn list(&mut self, key: &str) -> Vec<Value> {
        match self.get(key) {
            Value::Null => vec![],
            Value::Array(a) => a,
            Value::String(s) if s.contains(',') => s
                .split(',')
                .map(|p| Value::String(p.trim().to_string()))
                .collect(),
            one => vec![one],
        }
    }

    /// Requires `key` to ask for `expected` (what ganpo does); refuses it with `why` otherwise.
    pub fn require(&mut self, key: &str, expected: &Value, why: &str) {
        let v = self.get(key);
        if !same(&v, expected) {
            self.refuse(key, &v, why);
        }
    }

    /// Copies the number TRL's `key` holds (when not null) to the run-config key `ours`.
    pub fn copy_number(&mut self, key: &str, ours: &str) {
        if let Some(x) = self.number(key) {
            self.set(ours, x);
        }
    }

    /// Copies the whole number TRL's `key` holds (when not null) to the run-config key `ours`.
    pub fn copy_count(&mut self, key: &str, ours: &str) {
        if let Some(n) = self.count(key) {
            self.set(ours, n);
        }
    }

    /// Sets the run-config key `section.key`.
    pub fn set(&mut self, dotted: &str, value: impl Into<toml::Value>) {
        let (section, key) = dotted.split_once('.').expect("section.key");
        let table = self
            .table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = table {
            t.insert(key.to_string(), value.into());
        }
    }
}

/// Whether two values mean the same (numbers given as text included).
pub(super) fn same(a: &Value, b: &Value) -> bool {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => match (a, b) {
            (Value::String(s), Value::Bool(t)) | (Value::Bool(t), Value::String(s)) => {
                s.eq_ignore_ascii_case(&t.to_string())
            }
            (Value::Array(x), y) | (y, Value::Array(x)) if x.len() == 1 && !y.is_array() => {
                same(&x[0], y)
            }
            _ => a == b,
        },
    }
}
