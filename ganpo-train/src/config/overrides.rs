//! `--set key=value`: dotted keys into the TOML table, values parsed as TOML.

use std::path::PathBuf;

/// A configuration that cannot be used; each variant names the file or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}: invalid TOML: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key is unknown or has a value of the wrong type.
    #[error("{origin}: key `{key}`: {message}")]
    Key {
        /// The config file (or `--set`).
        origin: String,
        /// The dotted key.
        key: String,
        /// What is wrong, with the accepted keys or values.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting `{key}` = {value}: expected {expected}")]
    Value {
        /// The dotted key.
        key: String,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// A `--set` argument is not `key=value`.
    #[error("--set {0:?}: expected key=value, for example --set train.lr=5e-7")]
    SetSyntax(String),
}

/// Applies one `key=value` override to `table`. The value is read as TOML (`5e-7`, `true`,
/// `"text"`, `[1, 2]`); anything that is not valid TOML is taken as a string, so
/// `--set model.path=runs/x` works without quotes.
pub fn apply_set(table: &mut toml::Table, set: &str) -> Result<(), ConfigError> {
    let (key, raw) = set
        .split_once('=')
        .filter(|(k, _)| !k.trim().is_empty())
        .ok_or_else(|| ConfigError::SetSyntax(set.to_string()))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut node = table;
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = node
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().ok_or_else(|| ConfigError::Key {
            origin: "--set".into(),
            key: parts[..=i].join("."),
            message: "is not a table, so it has no sub-keys".into(),
        })?;
    }
    node.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}
