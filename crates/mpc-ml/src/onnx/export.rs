//! ONNX export of a revealed model, so that PyTorch, onnxruntime and the rest of the ONNX
//! ecosystem can use a model trained privately (or any [`Model`]).
//!
//! Each operator writes itself ([`crate::op::Operator::to_onnx`]); graphs export as graphs.
//! Opset 13, IR version 8, float32 weights, a dynamic batch axis. An operator without an ONNX
//! form at opset 13 (GELU, zero-inserting padding) is refused with its position and reason.

use ndarray::ArrayD;
use prost::Message;

use super::proto;
use crate::model::Model;
use crate::op::Operator;

/// Why a model cannot be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A layer the exporter does not write.
    #[error("layer {index} ({kind}) cannot be exported: {reason}")]
    Unsupported {
        /// Position in the model.
        index: usize,
        /// What it is.
        kind: String,
        /// Why.
        reason: String,
    },
    /// The model's shapes do not fit together.
    #[error("{0}")]
    Shape(String),
}

const FLOAT: i32 = 1;
const INT64: i32 = 7;

/// The ONNX graph being written: nodes and initializers, with unique names.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<proto::NodeProto>,
    inits: Vec<proto::TensorProto>,
    next: usize,
}

impl Graph {
    /// A fresh tensor name starting with `hint`.
    pub fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    /// A float32 initializer holding `a`; its name.
    pub fn init(&mut self, hint: &str, a: &ArrayD<f64>) -> String {
        let name = self.fresh(hint);
        self.inits.push(proto::TensorProto {
            dims: a.shape().iter().map(|&d| d as i64).collect(),
            data_type: Some(FLOAT),
            float_data: a.iter().map(|&v| v as f32).collect(),
            name: Some(name.clone()),
            ..Default::default()
        });
        name
    }

    /// A float32 scalar initializer; its name.
    pub fn scalar(&mut self, hint: &str, v: f64) -> String {
        self.init(hint, &ArrayD::from_elem(ndarray::IxDyn(&[]), v))
    }

    /// A 1-D int64 initializer (shapes, pads, slice bounds); its name.
    pub fn int64(&mut self, hint: &str, v: &[f64]) -> String {
        let name = self.fresh(hint);
        self.inits.push(proto::TensorProto {
            dims: vec![v.len() as i64],
            data_type: Some(INT64),
            int64_data: v.iter().map(|&x| x as i64).collect(),
            name: Some(name.clone()),
            ..Default::default()
        });
        name
    }

    /// A node `op(inputs) → output`.
    pub fn node(&mut self, op: &str, inputs: &[String], output: &str, attrs: Vec<proto::AttributeProto>) {
        self.nodes.push(proto::NodeProto {
            input: inputs.to_vec(),
            output: vec![output.into()],
            name: Some(format!("{op}_{output}")),
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        });
    }
}

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

/// An integer attribute.
pub fn int_attr(name: &str, v: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

/// An integer-list attribute.
pub fn ints_attr(name: &str, v: &[i64]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// A float attribute.
pub fn float_attr(name: &str, v: f64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Float as i32),
        f: Some(v as f32),
        ..Default::default()
    }
}

/// Serialises a model as an ONNX file (`input` `[batch, …]` → `output`).
pub fn export(model: &Model) -> Result<Vec<u8>, ExportError> {
    if model.layers.is_empty() {
        return Err(ExportError::Shape("an empty model".into()));
    }
    let steps = model.steps(1).map_err(|e| ExportError::Shape(e.to_string()))?;
    let last = model.layers.len();
    let name = |t: usize| match t {
        0 => "input".to_string(),
        t if t == last => "output".to_string(),
        t => format!("t{t}"),
    };
    let mut g = Graph::default();
    for (i, (layer, wires)) in model.layers.iter().zip(&model.wires).enumerate() {
        let ins: Vec<String> = wires.iter().map(|&t| name(t)).collect();
        layer.op.to_onnx(&mut g, &ins, &layer.weights, &name(i + 1)).map_err(|reason| ExportError::Unsupported {
            index: i,
            kind: layer.op.name().into(),
            reason,
        })?;
    }
    let dims = |s: &[usize]| -> Vec<Option<i64>> {
        std::iter::once(None).chain(s[1..].iter().map(|&d| Some(d as i64))).collect()
    };
    let mut input = vec![1];
    input.extend_from_slice(&model.input_shape);
    let output = &steps.last().expect("a layer").output;
    let graph = proto::GraphProto {
        node: g.nodes,
        name: Some("membrane".into()),
        initializer: g.inits,
        input: vec![value_info("input", &dims(&input))],
        output: vec![value_info("output", &dims(output))],
        doc_string: Some("exported by Membrane".into()),
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
