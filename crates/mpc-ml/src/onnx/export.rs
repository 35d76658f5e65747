//! ONNX export of a revealed model, so that PyTorch, onnxruntime and the rest of the ONNX
//! ecosystem can use a model trained privately.
//!
//! Dense models only — `Linear` (as `Gemm`), `ReLU`, `Sigmoid`, `Softmax` — which is what
//! private training produces. Opset 13, IR version 8, float32 weights, a dynamic batch axis.

use prost::Message;

use super::proto;
use crate::model::{Layer, Model};

/// Why a model cannot be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A layer the exporter does not write.
    #[error("layer {index} ({kind}) cannot be exported: only dense models (linear, ReLU, sigmoid, softmax) are")]
    Unsupported {
        /// Position in the model.
        index: usize,
        /// What it is.
        kind: String,
    },
    /// The model's shapes do not chain.
    #[error("{0}")]
    Shape(String),
}

const FLOAT: i32 = 1;

fn value_info(name: &str, dims: &[Option<i64>]) -> proto::ValueInfoProto {
    use proto::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: None,
            value: Some(match d {
                Some(v) => Value::DimValue(*v),
                None => Value::DimParam("batch".into()),
            }),
        })
        .collect();
    proto::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            denotation: None,
            value: Some(proto::type_proto::Value::TensorType(proto::type_proto::Tensor {
                elem_type: Some(FLOAT),
                shape: Some(proto::TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

fn tensor(name: &str, a: &ndarray::ArrayD<f64>) -> proto::TensorProto {
    proto::TensorProto {
        dims: a.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(FLOAT),
        float_data: a.iter().map(|&v| v as f32).collect(),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<proto::AttributeProto>) -> proto::NodeProto {
    proto::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: Some(format!("{op}_{output}")),
        op_type: Some(op.into()),
        attribute: attrs,
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

/// Serialises a dense model as an ONNX file (`input` `[batch, features]` → `output`).
pub fn export(model: &Model) -> Result<Vec<u8>, ExportError> {
    if model.input_shape.len() != 1 {
        return Err(ExportError::Shape(format!("input of shape {:?}: export needs [features]", model.input_shape)));
    }
    let mut width = model.input_shape[0];
    let (mut nodes, mut inits) = (Vec::new(), Vec::new());
    let mut cur = "input".to_string();
    if !model.is_chain() {
        return Err(ExportError::Shape(
            "only chains export (every layer reading the previous one); this model is a graph".into(),
        ));
    }
    for (i, layer) in model.layers.iter().enumerate() {
        let out = if i + 1 == model.layers.len() { "output".to_string() } else { format!("t{i}") };
        match layer {
            Layer::Linear { weight, bias } => {
                let s = weight.shape();
                if s.len() != 2 || s[0] != width {
                    return Err(ExportError::Shape(format!("layer {i}: weight {s:?} after width {width}")));
                }
                let (w, b) = (format!("w{i}"), format!("b{i}"));
                inits.push(tensor(&w, weight));
                let mut ins = vec![cur.as_str(), w.as_str()];
                if let Some(bias) = bias {
                    inits.push(tensor(&b, bias));
                    ins.push(b.as_str());
                }
                nodes.push(node("Gemm", &ins, &out, vec![]));
                width = s[1];
            }
            Layer::Relu => nodes.push(node("Relu", &[&cur], &out, vec![])),
            Layer::Sigmoid => nodes.push(node("Sigmoid", &[&cur], &out, vec![])),
            Layer::Softmax => nodes.push(node("Softmax", &[&cur], &out, vec![int_attr("axis", -1)])),
            other => {
                let kind = format!("{other:?}");
                return Err(ExportError::Unsupported {
                    index: i,
                    kind: kind.split([' ', '{', '(']).next().unwrap_or("?").into(),
                });
            }
        }
        cur = out;
    }
    if model.layers.is_empty() {
        return Err(ExportError::Shape("an empty model".into()));
    }
    let graph = proto::GraphProto {
        node: nodes,
        name: Some("membrane".into()),
        initializer: inits,
        input: vec![value_info("input", &[None, Some(model.input_shape[0] as i64)])],
        output: vec![value_info("output", &[None, Some(width as i64)])],
        doc_string: Some("trained privately with Membrane".into()),
        ..Default::default()
    };
    let m = proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![proto::OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        producer_name: Some("membrane".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    };
    Ok(m.encode_to_vec())
}
