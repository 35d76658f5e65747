//! Real exported models (PyTorch TorchScript and dynamo exporters, see tools/fixtures/): import,
//! then private inference against the onnxruntime reference outputs committed with them.

mod common;

use std::path::{Path, PathBuf};

use mpc_ml::onnx::{ImportError, import, import_file};
use mpc_ml::{Model, OutputPolicy, npy};
use mpc_proto::FixedPoint;
use ndarray::{ArrayD, Axis};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/onnx").join(name)
}

fn private(model: &Model, x: &ArrayD<f64>, policy: OutputPolicy) -> ArrayD<f64> {
    common::private_output(model, x, policy, FixedPoint::default())
}

fn argmax(a: &ArrayD<f64>) -> Vec<usize> {
    a.axis_iter(Axis(0)).map(|r| r.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0).collect()
}

/// (model, samples used, output tolerance, fractional bits, samples also run in the two-party
/// mode — no dealer: triples by OT and HE, truncation by the known top bit; the same tolerance)
const MODELS: &[(&str, usize, f64, u32, usize)] = &[
    ("mnist_mlp", 100, 1e-3, 16, 8),
    ("mnist_mlp_dynamo", 100, 1e-3, 16, 0),
    ("mnist_cnn", 100, 1e-3, 16, 8),
    ("mnist_cnn_dynamo", 100, 1e-3, 16, 0),
    ("network_a", 8, 1e-3, 16, 8),
    ("lenet5", 8, 1e-3, 16, 8),
    // Raw (unstandardised) features up to ~4,000 meet weights of ~10^-3 (the standardisation
    // is folded into them): 16 fractional bits leave the logit ~10^-2 off, so this model runs
    // with 20. Output: the sigmoid probability.
    ("breast_cancer_logreg", 114, 1e-3, 20, 114),
];

#[test]
fn exported_models_match_onnxruntime() {
    for &(name, n, tol, frac, n2) in MODELS {
        let imported = import_file(&fixture(&format!("{name}.onnx"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        let x = npy::read(&fixture(&format!("{name}.input.npy"))).unwrap();
        let want = npy::read(&fixture(&format!("{name}.logits.npy"))).unwrap();
        let x = x.slice_axis(Axis(0), (0..n).into()).to_owned();
        let want = want.slice_axis(Axis(0), (0..n).into()).to_owned();
        // The importer's plaintext evaluation reproduces onnxruntime (float32 there).
        let plain = imported.model.eval_plain(&x);
        let perr = plain.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(perr < 1e-3, "{name}: plaintext import differs from onnxruntime by {perr}");
        // Private inference: logits within tolerance and the same predictions.
        let fx = FixedPoint::new(frac, 47 - frac).unwrap();
        let got = common::private_output(&imported.model, &x, OutputPolicy::Logits, fx);
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        eprintln!(
            "{name}: opset {}, {} layers, max |private − onnxruntime| = {err:.2e}",
            imported.opset,
            imported.model.layers.len()
        );
        assert!(err <= tol, "{name}: max error {err} > {tol}");
        if want.shape()[1] > 1 {
            assert_eq!(argmax(&got), argmax(&want), "{name}: predictions differ");
        } else {
            let same = got.iter().zip(&want).all(|(a, b)| (*a >= 0.5) == (*b >= 0.5) || (b - 0.5).abs() < 1e-3);
            assert!(same, "{name}: predictions differ");
        }
        if n2 > 0 {
            // The same model with two parties and no dealer.
            let (x, want) = (x.slice_axis(Axis(0), (0..n2).into()), want.slice_axis(Axis(0), (0..n2).into()));
            let plan = imported.model.plan(n2, OutputPolicy::Logits, fx).unwrap();
            let mode = mpc_proto::CorrelationMode::TwoParty;
            let got = common::run_plan_in(mode, &imported.model, &x.to_owned(), &plan).output.unwrap();
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            eprintln!("{name}, two-party mode: max |private − onnxruntime| = {err:.2e} over {n2} samples");
            assert!(err <= tol, "{name}, two-party mode: max error {err} > {tol}");
            if want.shape()[1] > 1 {
                assert_eq!(argmax(&got), argmax(&want.to_owned()), "{name}, two-party mode: predictions differ");
            }
        }
    }
}

#[test]
fn label_policy_reveals_only_the_class() {
    let imported = import_file(&fixture("mnist_cnn.onnx")).unwrap();
    let x = npy::read(&fixture("mnist_cnn.input.npy")).unwrap().slice_axis(Axis(0), (0..16).into()).to_owned();
    let want = npy::read(&fixture("mnist_cnn.logits.npy")).unwrap();
    let labels = private(&imported.model, &x, OutputPolicy::Label);
    assert_eq!(labels.shape(), &[16]);
    let expect: Vec<f64> = argmax(&want).into_iter().take(16).map(|i| i as f64).collect();
    assert_eq!(labels.as_slice().unwrap(), expect.as_slice());
}

#[test]
fn batchnorm_is_folded_into_the_convolution() {
    let imported = import_file(&fixture("mnist_cnn.onnx")).unwrap();
    let kinds: Vec<&str> = imported.model.layers.iter().map(|l| l.name()).collect();
    assert!(!kinds.contains(&"affine"), "BatchNormalization should fold into Conv: {kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "conv2d").count(), 2);
}

#[test]
fn malformed_and_unsupported_files_are_clear_errors() {
    let good = std::fs::read(fixture("mnist_mlp.onnx")).unwrap();
    // Truncated and garbage bytes.
    for bad in [&good[..good.len() / 2], &b"definitely not onnx"[..], &[][..]] {
        match import(bad) {
            Err(ImportError::Decode(_) | ImportError::Graph(_)) => {}
            other => panic!("expected a decode error, got {:?}", other.map(|i| i.model.layers.len())),
        }
    }
    // An unsupported operator: rename the first Relu to TopK in the protobuf.
    use mpc_ml::onnx::proto::ModelProto;
    use prost::Message;
    let mut m = ModelProto::decode(good.as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let relu = g.node.iter_mut().find(|n| n.op_type() == "Relu").unwrap();
    relu.op_type = Some("TopK".into());
    let e = import(&m.encode_to_vec()).unwrap_err().to_string();
    assert!(e.contains("1 unsupported operator node(s): TopK at node"), "{e}");
    // An attribute that does not fit: two groups over one input channel.
    let mut m = ModelProto::decode(std::fs::read(fixture("lenet5.onnx")).unwrap().as_slice()).unwrap();
    let conv = m.graph.as_mut().unwrap().node.iter_mut().find(|n| n.op_type() == "Conv").unwrap();
    conv.attribute.retain(|a| a.name() != "group");
    conv.attribute.push(mpc_ml::onnx::proto::AttributeProto {
        name: Some("group".into()),
        i: Some(2),
        r#type: Some(2),
        ..Default::default()
    });
    let e = import(&m.encode_to_vec()).unwrap_err().to_string();
    assert!(e.contains("unsupported Conv") && e.contains("in 2 groups"), "{e}");
}
