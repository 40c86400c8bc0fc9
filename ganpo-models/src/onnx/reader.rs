//! Reading an ONNX file's initializers (the weights) and the nodes that use them.

use std::path::{Path, PathBuf};

use onnx_ir::{ModelProto, TensorProto};
use protobuf::Message;

use crate::ModelError;

/// ONNX `TensorProto.DataType` codes ganpo converts to f32.
const FLOAT: i32 = 1;
const FLOAT16: i32 = 10;
const DOUBLE: i32 = 11;
const BFLOAT16: i32 = 16;

/// The name of an ONNX data type code (`F32`, `BF16`, ...), and whether ganpo reads it.
pub fn dtype_name(code: i32) -> (String, bool) {
    match code {
        FLOAT => ("F32".into(), true),
        FLOAT16 => ("F16".into(), true),
        DOUBLE => ("F64".into(), true),
        BFLOAT16 => ("BF16".into(), true),
        7 => ("I64".into(), false),
        other => (format!("ONNX type {other}"), false),
    }
}

/// How a node uses one of its inputs, for recovering a weight's module path.
#[derive(Clone, Debug, PartialEq)]
pub struct Use {
    /// The node's operator (`MatMul`, `Gemm`, `Gather`, ...).
    pub op_type: String,
    /// Which input of the node the tensor is.
    pub input: usize,
    /// The PyTorch module the node came from (`model.layers.0.self_attn.q_proj`), when the
    /// exporter recorded it: in the node name (TorchScript exporter,
    /// `/model/layers.0/self_attn/q_proj/MatMul`) or in the `namespace` metadata (dynamo
    /// exporter).
    pub module: Option<String>,
    /// For `Gemm`: whether the second input is transposed (`transB = 1`).
    pub trans_b: bool,
}

/// One initializer of the graph: its name, shape, dtype code and where its bytes are.
#[derive(Clone, Debug)]
pub struct Initializer {
    /// The initializer's name in the graph.
    pub name: String,
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// ONNX data type code.
    pub data_type: i32,
    /// The nodes that read it.
    pub uses: Vec<Use>,
    index: usize,
}

/// A parsed ONNX model (graph structure and initializers; the weights of external-data files are
/// read when asked for).
pub struct OnnxFile {
    /// The `.onnx` file.
    pub path: PathBuf,
    /// Every initializer with the nodes that use it.
    pub initializers: Vec<Initializer>,
    tensors: Vec<TensorProto>,
}

impl std::fmt::Debug for OnnxFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxFile")
            .field("path", &self.path)
            .field("initializers", &self.initializers.len())
            .finish()
    }
}

impl OnnxFile {
    /// Parses the ONNX protobuf at `path`.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(ModelError::io(path))?;
        let model = ModelProto::parse_from_bytes(&bytes).map_err(|e| ModelError::BadWeights {
            path: path.to_path_buf(),
            message: format!("not an ONNX model: {e}"),
        })?;
        let graph = model
            .graph
            .into_option()
            .ok_or_else(|| ModelError::BadWeights {
                path: path.to_path_buf(),
                message: "the ONNX model has no graph".into(),
            })?;
        let mut initializers: Vec<Initializer> = graph
            .initializer
            .iter()
            .enumerate()
            .map(|(index, t)| Initializer {
                name: t.name.clone(),
                shape: t.dims.iter().map(|&d| d.max(0) as usize).collect(),
                data_type: t.data_type,
                uses: Vec::new(),
                index,
            })
            .collect();
        let by_name: std::collections::HashMap<String, usize> = initializers
            .iter()
            .enumerate()
            .map(|(i, init)| (init.name.clone(), i))
            .collect();
        for node in &graph.node {
            let namespace = node
                .metadata_props
                .iter()
                .find(|p| p.key == "namespace")
                .map(|p| p.value.as_str());
            let module = module_path(&node.name, namespace);
            let trans_b = node
                .attribute
                .iter()
                .any(|a| a.name == "transB" && a.i == 1);
            for (input, name) in node.input.iter().enumerate() {
                if let Some(&i) = by_name.get(name) {
                    initializers[i].uses.push(Use {
                        op_type: node.op_type.clone(),
                        input,
                        module: module.clone(),
                        trans_b,
                    });
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            initializers,
            tensors: graph.initializer,
        })
    }

    /// The f32 values of an initializer (from the file, or from its external-data file).
    pub fn read(&self, init: &Initializer) -> Result<Vec<f32>, ModelError> {
        let tensor = &self.tensors[init.index];
        let bad = |message: String| ModelError::BadWeights {
            path: self.path.clone(),
            message: format!("initializer `{}`: {message}", init.name),
        };
        let n: usize = init.shape.iter().product();
        let width = match tensor.data_type {
            FLOAT => 4,
            DOUBLE => 8,
            FLOAT16 | BFLOAT16 => 2,
            other => {
                return Err(ModelError::UnsupportedDtype {
                    path: self.path.clone(),
                    name: init.name.clone(),
                    dtype: format!(
                        "ONNX data type {other} (supported: FLOAT, FLOAT16, BFLOAT16, DOUBLE)"
                    ),
                });
            }
        };
        let raw: Vec<u8> = if !tensor.external_data.is_empty() {
            self.read_external(tensor, n * width).map_err(bad)?
        } else if !tensor.raw_data.is_empty() {
            tensor.raw_data.to_vec()
        } else {
            // Typed fields: FLOAT in float_data, DOUBLE in double_data, 16-bit types in the low
            // half of int32_data.
            let values: Vec<f32> = match tensor.data_type {
                FLOAT => tensor.float_data.clone(),
                DOUBLE => tensor.double_data.iter().map(|&v| v as f32).collect(),
                FLOAT16 => tensor
                    .int32_data
                    .iter()
                    .map(|&v| half::f16::from_bits(v as u16).to_f32())
                    .collect(),
                _ => tensor
                    .int32_data
                    .iter()
                    .map(|&v| half::bf16::from_bits(v as u16).to_f32())
                    .collect(),
            };
            if values.len() != n {
                return Err(bad(format!(
                    "holds {} values, its shape {:?} needs {n}",
                    values.len(),
                    init.shape
                )));
            }
            return Ok(values);
        };
        if raw.len() != n * width {
            return Err(bad(format!(
                "holds {} bytes, its shape {:?} needs {}",
                raw.len(),
                init.shape,
                n * width
            )));
        }
        Ok(match tensor.data_type {
            FLOAT => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DOUBLE => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            FLOAT16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        })
    }

    /// Reads `len` bytes of an external-data tensor (`location`, `offset`, `length` keys; the
    /// location is relative to the `.onnx` file's directory).
    fn read_external(&self, tensor: &TensorProto, len: usize) -> Result<Vec<u8>, String> {
        use std::io::{Read, Seek, SeekFrom};
        let key = |k: &str| {
            tensor
                .external_data
                .iter()
                .find(|p| p.key == k)
                .map(|p| p.value.clone())
        };
        let location = key("location").ok_or("external data without a `location`")?;
        let number = |k: &str| -> Result<Option<u64>, String> {
            key(k)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| format!("`{k}` is not a number: {v}"))
                })
                .transpose()
        };
        let offset = number("offset")?.unwrap_or(0);
        let len = number("length")?.map_or(len, |l| l as usize);
        let file = self.path.parent().unwrap_or(Path::new(".")).join(&location);
        let mut f = std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).map_err(|e| {
            format!(
                "{}: cannot read {len} bytes at offset {offset}: {e}",
                file.display()
            )
        })?;
        Ok(buf)
    }
}

/// The PyTorch module path a node came from: the `namespace` metadata of the dynamo exporter
/// (`": Wrapper/m: LlamaForCausalLM/.../m.model.layers.0.self_attn.q_proj: Linear/linear: aten.linear"`,
/// the segment before the operator's), else the node name of the TorchScript exporter
/// (`/m/model/layers.0/self_attn/q_proj/MatMul`, all but the last segment).
pub fn module_path(node_name: &str, namespace: Option<&str>) -> Option<String> {
    if let Some(ns) = namespace {
        let segments: Vec<&str> = ns.split('/').collect();
        if segments.len() >= 2 {
            let owner = segments[segments.len() - 2];
            let path = owner.split(": ").next().unwrap_or("").trim();
            if !path.is_empty() {
                return Some(path.to_string());
            }
        }
    }
    let rest = node_name.strip_prefix('/')?;
    let (path, _op) = rest.rsplit_once('/')?;
    (!path.is_empty()).then(|| path.replace('/', "."))
}

#[cfg(test)]
mod tests {
    use super::module_path;

    #[test]
    fn module_paths_of_both_exporters() {
        assert_eq!(
            module_path("/m/model/layers.0/self_attn/q_proj/MatMul", None).as_deref(),
            Some("m.model.layers.0.self_attn.q_proj")
        );
        let ns = ": __main__.Exportable/m: transformers.LlamaForCausalLM/m.model.layers.0.mlp.up_proj: torch.nn.modules.linear.Linear/linear_5: aten.linear.default";
        assert_eq!(
            module_path("node_linear_5", Some(ns)).as_deref(),
            Some("m.model.layers.0.mlp.up_proj")
        );
        assert_eq!(module_path("node_linear_5", None), None);
        assert_eq!(module_path("/MatMul", None), None);
    }
}
