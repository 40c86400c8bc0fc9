//! The GGUF container: header, metadata and tensor directory (format versions 2 and 3).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::ModelError;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// `f32` or `f64`.
    F64(f64),
    /// `bool`.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array of values.
    Array(Vec<Value>),
}

impl Value {
    /// As an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::U64(v) => Some(*v),
            Value::I64(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// As a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(v) => Some(*v),
            Value::U64(v) => Some(*v as f64),
            Value::I64(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// As a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// As an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor of the directory.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// llama.cpp name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Shape in PyTorch order (outermost first; GGUF stores it innermost first).
    pub shape: Vec<usize>,
    /// ggml type id.
    pub ggml_type: u32,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
}

/// A parsed GGUF file, its bytes kept for the tensor data.
#[derive(Debug)]
pub struct GgufFile {
    /// The file.
    pub path: PathBuf,
    /// Metadata by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor directory, in file order.
    pub tensors: Vec<TensorInfo>,
    /// The whole file.
    pub bytes: std::sync::Arc<[u8]>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Cursor<'_> {
    fn bad(&self, message: impl Into<String>) -> ModelError {
        ModelError::BadWeights {
            path: self.path.to_path_buf(),
            message: format!("byte {}: {}", self.pos, message.into()),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], ModelError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.bad("file ends early"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, ModelError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn len(&mut self) -> Result<usize, ModelError> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| self.bad(format!("length {n} exceeds the file")))
    }

    fn string(&mut self) -> Result<String, ModelError> {
        let n = self.len()?;
        let raw = self.take(n)?.to_vec();
        String::from_utf8(raw).map_err(|_| self.bad("string is not UTF-8"))
    }

    fn value(&mut self, kind: u32) -> Result<Value, ModelError> {
        Ok(match kind {
            0 => Value::U64(self.take(1)?[0] as u64),
            1 => Value::I64(self.take(1)?[0] as i8 as i64),
            2 => Value::U64(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as u64),
            3 => Value::I64(i16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as i64),
            4 => Value::U64(self.u32()? as u64),
            5 => Value::I64(self.u32()? as i32 as i64),
            6 => Value::F64(f32::from_bits(self.u32()?) as f64),
            7 => Value::Bool(self.take(1)?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                let item = self.u32()?;
                let n = self.len()?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(item)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            other => return Err(self.bad(format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Reads and parses the file at `path`.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(ModelError::io(path))?;
        Self::parse(bytes.into(), path)
    }

    /// Parses GGUF bytes; `path` names them in errors.
    pub fn parse(bytes: std::sync::Arc<[u8]>, path: &Path) -> Result<Self, ModelError> {
        let mut c = Cursor {
            bytes: &bytes,
            pos: 0,
            path,
        };
        if c.take(4)? != b"GGUF" {
            return Err(ModelError::BadWeights {
                path: path.to_path_buf(),
                message: "not a GGUF file (bad magic)".into(),
            });
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(c.bad(format!("GGUF version {version} is not supported (2 or 3)")));
        }
        let n_tensors = c.len()?;
        let n_kv = c.len()?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let kind = c.u32()?;
            let value = c.value(kind)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()? as usize;
            if n_dims > 4 {
                return Err(c.bad(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut shape = (0..n_dims)
                .map(|_| c.len())
                .collect::<Result<Vec<_>, _>>()?;
            shape.reverse();
            let ggml_type = c.u32()?;
            let offset = usize::try_from(c.u64()?)
                .map_err(|_| c.bad(format!("tensor `{name}` has an impossible offset")))?;
            tensors.push(TensorInfo {
                name,
                shape,
                ggml_type,
                offset,
            });
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(32) as usize;
        let data_start = c.pos.div_ceil(alignment) * alignment;
        for t in &mut tensors {
            t.offset = t.offset.saturating_add(data_start);
        }
        Ok(Self {
            path: path.to_path_buf(),
            metadata,
            tensors,
            bytes,
        })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }
}
