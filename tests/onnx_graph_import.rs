//! The importer on hand-built ONNX graphs: every unsupported node named at once, external weight
//! files with their path and size checks, a transposed convolution against a direct reference,
//! and the `x.view(x.size(0), -1)` shape subgraph at several batch sizes.

mod common;

use std::path::PathBuf;

use mpc_ml::OutputPolicy;
use mpc_ml::onnx::proto::{self, tensor_shape_proto::dimension::Value as Dim};
use mpc_ml::onnx::{ImportError, import, import_file};
use mpc_proto::FixedPoint;
use mpc_proto::prg::Prg;
use ndarray::{ArrayD, IxDyn};
use prost::Message;

fn value_info(name: &str, per_sample: &[i64]) -> proto::ValueInfoProto {
    let mut dim =
        vec![proto::tensor_shape_proto::Dimension { denotation: None, value: Some(Dim::DimParam("N".into())) }];
    dim.extend(
        per_sample
            .iter()
            .map(|&d| proto::tensor_shape_proto::Dimension { denotation: None, value: Some(Dim::DimValue(d)) }),
    );
    proto::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            denotation: None,
            value: Some(proto::type_proto::Value::TensorType(proto::type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(proto::TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

fn floats(name: &str, dims: &[i64], v: &[f32]) -> proto::TensorProto {
    proto::TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(1),
        raw_data: Some(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> proto::TensorProto {
    proto::TensorProto {
        name: Some(name.into()),
        dims: vec![v.len() as i64],
        data_type: Some(7),
        raw_data: Some(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<proto::AttributeProto>,
) -> proto::NodeProto {
    proto::NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

fn a_ints(name: &str, v: &[i64]) -> proto::AttributeProto {
    proto::AttributeProto { name: Some(name.into()), ints: v.to_vec(), r#type: Some(7), ..Default::default() }
}

fn a_int(name: &str, v: i64) -> proto::AttributeProto {
    proto::AttributeProto { name: Some(name.into()), i: Some(v), r#type: Some(2), ..Default::default() }
}

fn model(
    input: &[i64],
    nodes: Vec<proto::NodeProto>,
    inits: Vec<proto::TensorProto>,
    out: &str,
    opset: i64,
) -> proto::ModelProto {
    proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![proto::OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
        graph: Some(proto::GraphProto {
            name: Some("g".into()),
            node: nodes,
            initializer: inits,
            input: vec![value_info("x", input)],
            output: vec![proto::ValueInfoProto { name: Some(out.into()), ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn random(shape: &[usize], g: &mut Prg) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        ((g.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 as f64
    })
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("membrane-onnx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn every_unsupported_node_is_named_at_once() {
    let nodes = vec![
        node("Relu", "r", &["x"], &["a"], vec![]),
        node("TopK", "topk_1", &["a"], &["b"], vec![]),
        node("Resize", "up", &["b"], &["c"], vec![]),
        node("Relu", "r2", &["c"], &["d"], vec![]),
        node("Lstm", "rnn", &["d"], &["e"], vec![]),
    ];
    let bytes = model(&[4], nodes, vec![], "e", 17).encode_to_vec();
    match import(&bytes) {
        Err(ImportError::UnsupportedOps(list)) => {
            let names: Vec<(&str, &str, i64)> =
                list.iter().map(|u| (u.op.as_str(), u.node.as_str(), u.opset)).collect();
            assert_eq!(names, [("TopK", "topk_1", 17), ("Resize", "up", 17), ("Lstm", "rnn", 17)]);
            let msg = ImportError::UnsupportedOps(list).to_string();
            assert!(msg.starts_with("3 unsupported operator node(s)"), "{msg}");
        }
        other => panic!("expected the unsupported list, got {other:?}"),
    }
}

/// A Gemm whose weight lives in an external file described by `entries`.
fn external_model(entries: &[(&str, &str)]) -> proto::ModelProto {
    let mut w = floats("w", &[4, 3], &[]);
    w.raw_data = None;
    w.data_location = Some(1);
    w.external_data = entries
        .iter()
        .map(|(k, v)| proto::StringStringEntryProto { key: Some(k.to_string()), value: Some(v.to_string()) })
        .collect();
    let nodes = vec![node("Gemm", "fc", &["x", "w", "b"], &["y"], vec![])];
    model(&[4], nodes, vec![w, floats("b", &[3], &[0.5, -0.5, 0.25])], "y", 17)
}

#[test]
fn external_weights_load_with_path_and_size_checks() {
    let dir = scratch("external");
    let weights: Vec<f32> = (0..12).map(|i| i as f32 / 10.0 - 0.5).collect();
    let mut data = vec![0u8; 16]; // some other tensor first: the offset matters
    data.extend(weights.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(dir.join("m.onnx.data"), &data).unwrap();
    let write = |name: &str, entries: &[(&str, &str)]| {
        let p = dir.join(name);
        std::fs::write(&p, external_model(entries).encode_to_vec()).unwrap();
        p
    };
    // Good: the weights arrive, the model computes x·W + b.
    let good = write("good.onnx", &[("location", "m.onnx.data"), ("offset", "16"), ("length", "48")]);
    let m = import_file(&good).unwrap().model;
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 4]), vec![1.0, 2.0, -1.0, 0.5]).unwrap();
    let want: Vec<f64> = (0..3)
        .map(|j| {
            let b = [0.5, -0.5, 0.25][j];
            (0..4).map(|i| x[[0, i]] * weights[i * 3 + j] as f64).sum::<f64>() + b
        })
        .collect();
    let got = m.eval_plain(&x);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    // The same bytes without the file's directory: a clear pointer to import_file.
    let e = import(&std::fs::read(&good).unwrap()).unwrap_err().to_string();
    assert!(e.contains("external data") && e.contains("import_file"), "{e}");
    // Refused: escapes, absolute paths, sizes that do not match, a file too short.
    std::fs::write(std::env::temp_dir().join(format!("membrane-outside-{}.data", std::process::id())), &data).unwrap();
    let outside = format!("../membrane-outside-{}.data", std::process::id());
    let abs = dir.join("m.onnx.data").display().to_string();
    for (entries, want) in [
        (vec![("location", outside.as_str())], "leaves the model's directory"),
        (vec![("location", abs.as_str())], "leaves the model's directory"),
        (vec![("location", "m.onnx.data"), ("length", "40")], "need 48 bytes"),
        (vec![("location", "m.onnx.data"), ("offset", "32")], "the tensor needs 48 at offset 32"),
        (vec![("location", "m.onnx.data"), ("offset", "-1")], "not a number"),
        (vec![("location", "missing.data")], "missing.data"),
        (vec![("offset", "0")], "has no location"),
    ] {
        let p = write("bad.onnx", &entries);
        let e = import_file(&p).unwrap_err().to_string();
        assert!(e.contains(want), "{entries:?}: {e:?} should say {want:?}");
    }
    #[cfg(unix)]
    {
        let link = dir.join("link.data");
        std::os::unix::fs::symlink(
            std::env::temp_dir().join(format!("membrane-outside-{}.data", std::process::id())),
            &link,
        )
        .unwrap();
        let p = write("bad.onnx", &[("location", "link.data")]);
        let e = import_file(&p).unwrap_err().to_string();
        assert!(e.contains("resolves outside"), "{e}");
    }
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("membrane-outside-{}.data", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Transposed convolution by its definition: each input pixel scatters `x·W` into the output.
fn conv_transpose_direct(x: &ArrayD<f64>, w: &ArrayD<f64>, b: &[f64], s: usize, p: usize, op: usize) -> ArrayD<f64> {
    let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (o, k) = (w.shape()[1], w.shape()[2]);
    let (oh, ow) = ((h - 1) * s + k - 2 * p + op, (wd - 1) * s + k - 2 * p + op);
    let mut y = ArrayD::zeros(IxDyn(&[n, o, oh, ow]));
    for bi in 0..n {
        for oc in 0..o {
            for yy in 0..oh {
                for xx in 0..ow {
                    y[[bi, oc, yy, xx]] = b[oc];
                }
            }
            for ci in 0..c {
                for iy in 0..h {
                    for ix in 0..wd {
                        for dy in 0..k {
                            for dx in 0..k {
                                let (ty, tx) =
                                    ((iy * s + dy) as isize - p as isize, (ix * s + dx) as isize - p as isize);
                                if ty >= 0 && tx >= 0 && (ty as usize) < oh && (tx as usize) < ow {
                                    y[[bi, oc, ty as usize, tx as usize]] += x[[bi, ci, iy, ix]] * w[[ci, oc, dy, dx]];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

#[test]
fn conv_transpose_matches_its_definition_in_plaintext_and_privately() {
    let g = &mut Prg::from_u64(21);
    let w = random(&[2, 3, 3, 3], g);
    let b = [0.1, -0.2, 0.3];
    let wv: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let attrs = vec![
        a_ints("strides", &[2, 2]),
        a_ints("pads", &[1, 1, 1, 1]),
        a_ints("output_padding", &[1, 1]),
        a_ints("kernel_shape", &[3, 3]),
    ];
    let nodes = vec![node("ConvTranspose", "up", &["x", "w", "b"], &["y"], attrs)];
    let bf: Vec<f32> = b.iter().map(|&v| v as f32).collect();
    let m = model(&[2, 4, 4], nodes, vec![floats("w", &[2, 3, 3, 3], &wv), floats("b", &[3], &bf)], "y", 17);
    let imported = import(&m.encode_to_vec()).unwrap().model;
    let x = random(&[2, 2, 4, 4], g);
    let want = conv_transpose_direct(&x, &w, &[b[0] as f32 as f64, b[1] as f32 as f64, b[2] as f32 as f64], 2, 1, 1);
    let plain = imported.eval_plain(&x);
    assert_eq!(plain.shape(), &[2, 3, 8, 8]);
    let perr = plain.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(perr < 1e-9, "plaintext error {perr}");
    let got = common::private_output(&imported, &x, OutputPolicy::Logits, FixedPoint::default());
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(err < 1e-3, "private error {err}");
}

#[test]
fn shape_subgraph_flatten_keeps_the_batch_dynamic() {
    // y = Relu(x).view(x.size(0), -1) as the TorchScript exporter writes it.
    let nodes = vec![
        node("Relu", "r", &["x"], &["a"], vec![]),
        node("Shape", "s", &["a"], &["shape"], vec![]),
        node("Gather", "g", &["shape", "zero"], &["n"], vec![a_int("axis", 0)]),
        node("Unsqueeze", "u", &["n", "axes0"], &["n1"], vec![]),
        node("Concat", "c", &["n1", "minus1"], &["target"], vec![a_int("axis", 0)]),
        node("Reshape", "view", &["a", "target"], &["y"], vec![]),
    ];
    let mut zero = ints("zero", &[0]);
    zero.dims = vec![]; // a scalar index
    let inits = vec![zero, ints("axes0", &[0]), ints("minus1", &[-1])];
    let m = import(&model(&[2, 3, 3], nodes, inits, "y", 17).encode_to_vec()).unwrap().model;
    assert_eq!(m.input_shape, [2, 3, 3]);
    for n in [1, 5] {
        let plan = m.plan(n, OutputPolicy::Logits, FixedPoint::default()).unwrap();
        assert_eq!(plan.output_shape(), &[n, 18]);
    }
    // Slicing and padding the data import too; the batch axis stays untouched.
    let nodes = vec![
        node("Slice", "sl", &["x", "st", "en", "ax"], &["a"], vec![]),
        node("Pad", "pd", &["a", "pads", "val"], &["y"], vec![a_ints("unused", &[])]),
    ];
    let mut val = floats("val", &[], &[1.5]);
    val.dims = vec![];
    let inits = vec![
        ints("st", &[1]),
        ints("en", &[i64::MAX]),
        ints("ax", &[-1]),
        ints("pads", &[0, 0, 1, 0, 0, 0, 2, 0]),
        val,
    ];
    let m = import(&model(&[2, 3, 3], nodes, inits, "y", 17).encode_to_vec()).unwrap().model;
    let x = ArrayD::from_shape_fn(IxDyn(&[1, 2, 3, 3]), |ix| (ix[1] * 9 + ix[2] * 3 + ix[3]) as f64);
    let y = m.eval_plain(&x);
    assert_eq!(y.shape(), &[1, 2, 6, 2]);
    assert_eq!(y[[0, 0, 0, 0]], 1.5);
    assert_eq!(y[[0, 1, 1, 0]], 10.0);
    assert_eq!(y[[0, 1, 5, 1]], 1.5);
}

/// GELU's erf form (what opset < 20 exports) fuses into one GELU layer; when an intermediate of
/// the pattern is read elsewhere the pattern stays as written, with a lone Erf spline, and both
/// evaluate to the formula.
#[test]
fn erf_form_gelu_fuses_only_when_exact() {
    let gelu_nodes = |extra: bool| {
        let mut n = vec![
            node("Div", "div", &["x", "sqrt2"], &["a"], vec![]),
            node("Erf", "erf", &["a"], &["b"], vec![]),
            node("Add", "add", &["b", "one"], &["c"], vec![]),
            node("Mul", "mul", &["x", "c"], &["d"], vec![]),
            node("Mul", "half", &["d", "half_c"], &["y"], vec![]),
        ];
        if extra {
            // The Erf's output is read a second time: no fusion.
            n.push(node("Add", "also", &["y", "b"], &["z"], vec![]));
        }
        n
    };
    let inits = || {
        vec![
            floats("sqrt2", &[], &[std::f32::consts::SQRT_2]),
            floats("one", &[], &[1.0]),
            floats("half_c", &[], &[0.5]),
        ]
    };
    let g = &mut Prg::from_u64(11);
    let x = ArrayD::from_shape_fn(IxDyn(&[3, 7]), |_| ((g.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 12.0);
    let erf = |v: f64| mpc_ml::model::Act::Erf.eval(v);
    let gelu = |v: f64| 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2));
    for (extra, out) in [(false, "y"), (true, "z")] {
        let bytes = model(&[7], gelu_nodes(extra), inits(), out, 17).encode_to_vec();
        let m = import(&bytes).unwrap().model;
        let names: Vec<&str> = m.layers.iter().map(|l| l.name()).collect();
        if extra {
            assert!(names.contains(&"erf") && !names.contains(&"gelu"), "{names:?}");
        } else {
            assert_eq!(names, ["gelu"]);
        }
        let want = x.mapv(|v| gelu(v) + if extra { erf(v / std::f64::consts::SQRT_2) } else { 0.0 });
        let got = m.eval_plain(&x);
        let err = common::max_diff(&got, &want);
        // float32 constants (√2 to 4·10^-8 relative).
        assert!(err < 1e-6, "extra {extra}: {err}");
        // Privately: within the splines' 10^-5 and fixed-point rounding.
        let private = common::private_output(&m, &x, OutputPolicy::Logits, FixedPoint::default());
        let err = common::max_diff(&private, &want);
        assert!(err < 2e-3, "extra {extra}: private {err}");
    }
}
