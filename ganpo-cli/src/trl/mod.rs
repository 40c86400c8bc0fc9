//! TRL recipes as they are: the YAML (or JSON) config and the command-line flags `trl dpo`
//! takes, mapped onto a ganpo run configuration.
//!
//! `trl dpo` reads four dataclasses (ScriptArguments, DPOConfig with transformers'
//! TrainingArguments, ModelConfig, DatasetMixtureConfig); `dpo_keys.json` lists every field with
//! TRL 1.16's default (written by `tools/fixtures/trl_config_fixtures.py` from TRL itself). A
//! recipe is TRL's defaults overlaid by the file, then by the flags. Each key is either mapped
//! onto a run-config key, or checked to ask for what ganpo does anyway (e.g. `disable_dropout:
//! true`), or has no effect on the result (`dataloader_num_workers`, `run_name`: listed in the
//! notes); a key ganpo does not implement is refused by name unless it keeps TRL's default,
//! and a key TRL does not have is refused as one.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

mod context;
mod mapping;

pub use mapping::map;

/// TRL's `trl dpo` keys: owner dataclass, default, kind.
const KEYS: &str = include_str!("dpo_keys.json");

/// How `trl dpo`'s command line reads a key's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `--flag` alone is true; `--no_flag` is false.
    Bool,
    /// One or more values (`nargs="+"`).
    List,
    /// Exactly one value.
    Value,
}

/// One key of `trl dpo`.
#[derive(Clone, Debug)]
pub struct Known {
    /// The dataclass that declares it (`DPOConfig`, `ModelConfig`, ...).
    pub owner: String,
    /// TRL's default.
    pub default: Value,
    /// How the command line reads it.
    pub kind: Kind,
}

/// Every key of `trl dpo`, with the TRL version they were read from.
pub fn known() -> &'static (String, BTreeMap<String, Known>) {
    static KNOWN: std::sync::OnceLock<(String, BTreeMap<String, Known>)> =
        std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        let json: Value = serde_json::from_str(KEYS).expect("dpo_keys.json is valid JSON");
        let keys = json["keys"]
            .as_object()
            .expect("dpo_keys.json has keys")
            .iter()
            .map(|(k, v)| {
                let kind = match v["kind"].as_str() {
                    Some("bool") => Kind::Bool,
                    Some("list") => Kind::List,
                    _ => Kind::Value,
                };
                let owner = v["owner"].as_str().unwrap_or("").to_string();
                let default = v["default"].clone();
                (
                    k.clone(),
                    Known {
                        owner,
                        default,
                        kind,
                    },
                )
            })
            .collect();
        (json["trl"].as_str().unwrap_or("?").to_string(), keys)
    })
}

/// Keys of transformers 4.x's TrainingArguments that recipes still carry, and their names in
/// the TRL / transformers this mapping follows.
const RENAMED: &[(&str, &str)] = &[
    ("evaluation_strategy", "eval_strategy"),
    ("torch_dtype", "dtype"),
];

/// A TRL recipe: the values given, each with where it came from.
#[derive(Clone, Debug, Default)]
pub struct Recipe {
    /// Key -> (value, origin: the file or `command line`).
    pub given: BTreeMap<String, (Value, String)>,
}

impl Recipe {
    /// Reads a `trl dpo` config file: a YAML (or JSON) mapping of TRL keys.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: Value = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{}: not a YAML or JSON document", path.display()))?;
        let Value::Object(map) = value else {
            bail!(
                "{}: expected a mapping of TRL keys (model_name_or_path: ..., learning_rate: \
                 ...), found {value}",
                path.display()
            );
        };
        let mut recipe = Self::default();
        for (k, v) in map {
            recipe.put(&k, v, &path.display().to_string());
        }
        Ok(recipe)
    }

    fn put(&mut self, key: &str, value: Value, origin: &str) {
        let key = key.replace('-', "_");
        let key = RENAMED
            .iter()
            .find(|(old, _)| *old == key)
            .map_or(key.clone(), |(_, new)| new.to_string());
        self.given.insert(key, (value, origin.to_string()));
    }

    /// Applies `trl dpo`'s command-line flags (`--key value`, `--key=value`, `--flag` and
    /// `--no_flag` for booleans, several values for list keys), over the file's values.
    pub fn apply_flags(&mut self, flags: &[String]) -> Result<()> {
        let (_, keys) = known();
        let mut i = 0;
        while i < flags.len() {
            let flag = &flags[i];
            let Some(name) = flag.strip_prefix("--") else {
                bail!("command line: expected a --flag, found `{flag}`");
            };
            i += 1;
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n.replace('-', "_"), Some(v.to_string())),
                None => (name.replace('-', "_"), None),
            };
            let values: Vec<String> = match inline {
                Some(v) => vec![v],
                None => {
                    let start = i;
                    while i < flags.len() && !flags[i].starts_with("--") {
                        i += 1;
                    }
                    flags[start..i].to_vec()
                }
            };
            let negated = name
                .strip_prefix("no_")
                .filter(|n| keys.get(*n).is_some_and(|k| k.kind == Kind::Bool));
            let origin = "command line";
            if let Some(base) = negated {
                if !values.is_empty() {
                    bail!("command line: --{name} takes no value, got {values:?}");
                }
                self.put(base, Value::Bool(false), origin);
                continue;
            }
            let kind = keys.get(&name).map_or(Kind::Value, |k| k.kind);
            let value = match (kind, values.as_slice()) {
                (Kind::Bool, []) => Value::Bool(true),
                (_, []) => bail!("command line: --{name} needs a value"),
                (Kind::List, many) => Value::Array(many.iter().map(|v| scalar(v)).collect()),
                (_, [one]) => scalar(one),
                (_, many) => bail!("command line: --{name} takes one value, got {many:?}"),
            };
            self.put(&name, value, origin);
        }
        Ok(())
    }
}

/// A command-line value as YAML reads it (`5e-7` stays text; the mapping converts numbers).
fn scalar(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}
