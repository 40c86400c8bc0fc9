//! Reading preference rows from files, with every malformed row reported by file, line and field.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::DataError;
use super::hub::HubDataset;
use super::record::{PreferenceRecord, Record, UnpairedRecord, parse_row};

/// A malformed row: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// The dataset file.
    pub file: PathBuf,
    /// 1-based line (JSONL) or row (Parquet) number.
    pub line: usize,
    /// The offending field (dotted); empty when the whole row is unreadable.
    pub field: String,
    /// What was expected.
    pub problem: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        write!(f, "{}", self.problem)
    }
}

/// A checked record and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcedRecord {
    /// The dataset file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// The record.
    pub record: PreferenceRecord,
}

/// A checked unpaired example and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcedUnpaired {
    /// The dataset file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// The example.
    pub record: UnpairedRecord,
}

/// The records of one or more files, and the malformed rows that were dropped. The files hold
/// pairs or unpaired examples, never both ([`load_records`] refuses a mix).
#[derive(Clone, Debug, Default)]
pub struct Records {
    /// Valid pairs in file order.
    pub records: Vec<SourcedRecord>,
    /// Valid unpaired examples in file order.
    pub unpaired: Vec<SourcedUnpaired>,
    /// Rows dropped with `skip_invalid` (empty otherwise).
    pub skipped: Vec<RecordError>,
}

/// One row of a dataset file: its 1-based line and its JSON value (or why it is not JSON).
pub type Row = (usize, Result<Value, String>);

/// Reads the JSON Lines file at `path`: one JSON object per line, blank lines ignored; a name
/// ending in `.gz` is decompressed on the fly (gzip, as the Hub often ships JSONL).
pub fn read_jsonl(path: &Path) -> Result<Vec<Row>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let reader: Box<dyn Read> = if is_gzip(path) {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut rows = Vec::new();
    // Bytes first, so a decompression error stays an I/O error and bad UTF-8 a bad row.
    for (i, line) in BufReader::new(reader).split(b'\n').enumerate() {
        let Ok(mut line) = String::from_utf8(line.map_err(io)?) else {
            rows.push((i + 1, Err("not valid UTF-8".to_string())));
            continue;
        };
        // A UTF-8 byte-order mark (as some Windows editors write) starts the first line.
        if i == 0 && line.starts_with('\u{feff}') {
            line.drain(..'\u{feff}'.len_utf8());
        }
        if line.trim().is_empty() {
            continue;
        }
        rows.push((
            i + 1,
            serde_json::from_str(&line).map_err(|e| format!("bad JSON: {e}")),
        ));
    }
    Ok(rows)
}

/// Reads the Parquet file at `path`, one row per record (nested columns, such as message lists,
/// become JSON arrays of objects); rows are numbered from 1.
#[cfg(feature = "parquet")]
pub fn read_parquet(path: &Path) -> Result<Vec<Row>, DataError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let bad = |e: parquet::errors::ParquetError| DataError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(bad)?;
    let rows = reader.get_row_iter(None).map_err(bad)?;
    Ok(rows
        .enumerate()
        .map(|(i, row)| {
            (
                i + 1,
                row.map(|r| r.to_json_value())
                    .map_err(|e| format!("unreadable row: {e}")),
            )
        })
        .collect())
}

/// Without the `parquet` feature a `.parquet` file is refused with an error naming the feature.
#[cfg(not(feature = "parquet"))]
pub fn read_parquet(path: &Path) -> Result<Vec<Row>, DataError> {
    Err(DataError::FeatureDisabled {
        what: path.display().to_string(),
        feature: "parquet",
    })
}

fn is_gzip(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// Reads the rows of a `.jsonl` (or gzip-compressed `.jsonl.gz`) or `.parquet` file.
pub fn read_file(path: &Path) -> Result<Vec<Row>, DataError> {
    let gzip = is_gzip(path);
    let inner = if gzip {
        path.file_stem().map(Path::new)
    } else {
        Some(path)
    };
    match inner.and_then(Path::extension).and_then(|e| e.to_str()) {
        Some("jsonl" | "json" | "ndjson") => read_jsonl(path),
        Some("parquet") if !gzip => read_parquet(path),
        _ => Err(DataError::UnsupportedFormat {
            path: path.to_path_buf(),
        }),
    }
}

/// Reads every row of a `.jsonl` or `.parquet` file as a `T` (fields `T` does not name are
/// ignored). Rows that do not fit are all reported together, with their line and the field
/// serde names; an empty file is an error.
pub fn read_rows<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, DataError> {
    let rows = read_file(path)?;
    let total = rows.len();
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    for (line, row) in rows {
        match row.and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string())) {
            Ok(t) => out.push(t),
            Err(problem) => errors.push(RecordError {
                file: path.to_path_buf(),
                line,
                field: String::new(),
                problem,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(DataError::Invalid { errors, total });
    }
    if out.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// Reads and checks every row of `paths` (`.jsonl` or `.parquet` files, or
/// Hub datasets, `hf://datasets/...` or `OWNER/NAME`, see [`super::hub`]).
///
/// With `skip_invalid = false` any malformed row fails the whole load with
/// [`DataError::Invalid`], which lists every bad row; with `true` they are dropped and returned
/// in [`Records::skipped`]. A file without any valid record is an error either way.
pub fn load_records(paths: &[PathBuf], skip_invalid: bool) -> Result<Records, DataError> {
    let mut files = Vec::new();
    let mut hub = None;
    for p in paths {
        match p.to_str().and_then(HubDataset::parse) {
            Some(dataset) => {
                let dataset = dataset?;
                let hub = match &mut hub {
                    Some(h) => h,
                    None => hub.insert(crate::hub::Hub::from_env(false)?),
                };
                files.extend(dataset.fetch(hub)?);
            }
            None => files.push(p.clone()),
        }
    }
    let paths = &files;
    let mut out = Records::default();
    let mut total = 0;
    for path in paths {
        let rows = read_file(path)?;
        let before = out.records.len() + out.unpaired.len();
        total += rows.len();
        for (line, row) in rows {
            let err = |field: String, problem: String| RecordError {
                file: path.clone(),
                line,
                field,
                problem,
            };
            match row {
                Err(problem) => out.skipped.push(err(String::new(), problem)),
                Ok(value) => match parse_row(&value) {
                    Ok(Record::Paired(record)) => out.records.push(SourcedRecord {
                        file: path.clone(),
                        line,
                        record,
                    }),
                    Ok(Record::Unpaired(record)) => out.unpaired.push(SourcedUnpaired {
                        file: path.clone(),
                        line,
                        record,
                    }),
                    Err(e) => out.skipped.push(err(e.field, e.problem)),
                },
            }
        }
        let after = out.records.len() + out.unpaired.len();
        if after == before && (skip_invalid || out.skipped.is_empty()) {
            return Err(DataError::Empty { path: path.clone() });
        }
    }
    if let (Some(pair), Some(example)) = (out.records.first(), out.unpaired.first()) {
        return Err(DataError::MixedRows {
            paired: (pair.file.clone(), pair.line),
            unpaired: (example.file.clone(), example.line),
        });
    }
    if !skip_invalid && !out.skipped.is_empty() {
        return Err(DataError::Invalid {
            errors: std::mem::take(&mut out.skipped),
            total,
        });
    }
    Ok(out)
}

impl Records {
    /// The examples as unpaired rows: the unpaired ones as read, or each pair split into its
    /// chosen (desirable) and rejected (undesirable) completion as TRL's
    /// `unpair_preference_dataset` orders them (per block of 1,000 pairs, the chosen rows, then
    /// the rejected rows).
    pub fn as_unpaired(&self) -> Vec<SourcedUnpaired> {
        if !self.unpaired.is_empty() {
            return self.unpaired.clone();
        }
        let mut out = Vec::with_capacity(2 * self.records.len());
        for block in self.records.chunks(1000) {
            for label in [true, false] {
                out.extend(block.iter().map(|r| SourcedUnpaired {
                    file: r.file.clone(),
                    line: r.line,
                    record: UnpairedRecord {
                        prompt: r.record.prompt.clone(),
                        completion: match label {
                            true => r.record.chosen.clone(),
                            false => r.record.rejected.clone(),
                        },
                        label,
                    },
                }));
            }
        }
        out
    }
}
