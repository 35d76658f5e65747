//! The architectures people export (fixtures/onnx/arch, made by
//! tools/fixtures/make_arch_fixtures.py with both PyTorch exporters): ResNet-20, MobileNetV2,
//! SqueezeNet 1.1, EfficientNet-B0 (narrow), a VGG with LeakyReLU, a narrow ResNet-18 and a
//! CNN with exact GELU (the TorchScript exporter writes it as Erf arithmetic), CIFAR-sized. Each imports,
//! its plaintext evaluation reproduces onnxruntime, and private inference reproduces it
//! within 1e-3 relative to the logits' scale with the same predicted class on every sample.

mod common;

use std::path::{Path, PathBuf};

use common::max_diff;

use mpc_ml::onnx::import_file;
use mpc_ml::{Model, OutputPolicy, npy};
use mpc_proto::FixedPoint;
use ndarray::{ArrayD, Axis};

fn arch(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/onnx/arch").join(name)
}

const MODELS: &[&str] = &["resnet20", "resnet18", "mobilenetv2", "squeezenet", "efficientnet", "vgg_leaky", "gelu_cnn"];
const EXPORTERS: &[&str] = &["ts", "ts_bn", "dynamo"];

fn variants() -> Vec<(String, String)> {
    let mut v = vec![];
    for m in MODELS {
        for e in EXPORTERS {
            if arch(&format!("{m}_{e}.onnx")).exists() {
                v.push((m.to_string(), format!("{m}_{e}")));
            }
        }
    }
    v
}

fn max_abs(a: &ArrayD<f64>) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

fn argmax(a: &ArrayD<f64>) -> Vec<usize> {
    a.axis_iter(Axis(0)).map(|r| r.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0).collect()
}

fn private(model: &Model, x: &ArrayD<f64>) -> ArrayD<f64> {
    // Deep networks with folded batch norms amplify the 2^-16 rounding of every truncation
    // past 10^-3 (MobileNetV2: 2·10^-2 at 16 fractional bits); 20 bits bring it to ~10^-4.
    // `recommended_frac_bits` picks the same for these models.
    assert_eq!(mpc_ml::model::recommended_frac_bits(model), 20);
    common::private_output(model, x, OutputPolicy::Logits, FixedPoint::new(20, 27).unwrap())
}

#[test]
fn every_architecture_imports_and_matches_onnxruntime_in_plaintext() {
    let all = variants();
    assert!(all.len() >= 16, "fixtures missing: {all:?}");
    for (model, variant) in all {
        let imported = import_file(&arch(&format!("{variant}.onnx"))).unwrap_or_else(|e| panic!("{variant}: {e}"));
        let x = npy::read(&arch(&format!("{model}.input.npy"))).unwrap();
        let want = npy::read(&arch(&format!("{variant}.logits.npy"))).unwrap();
        let got = imported.model.eval_plain(&x);
        let err = max_diff(&got, &want);
        eprintln!("{variant}: {} layers, plaintext max error {err:.2e}", imported.model.layers.len());
        assert!(err <= 1e-4 * max_abs(&want).max(1.0), "{variant}: plaintext differs from onnxruntime by {err}");
    }
}

/// Private inference of one variant: logits within 1e-3 of the logits' scale, same classes.
fn check_private(model: &str, variant: &str, rows: usize) {
    let imported = import_file(&arch(&format!("{variant}.onnx"))).unwrap_or_else(|e| panic!("{variant}: {e}"));
    let x = npy::read(&arch(&format!("{model}.input.npy"))).unwrap();
    let want = npy::read(&arch(&format!("{variant}.logits.npy"))).unwrap();
    let x = x.slice_axis(Axis(0), (0..rows).into()).to_owned();
    let want = want.slice_axis(Axis(0), (0..rows).into()).to_owned();
    let t = std::time::Instant::now();
    let got = private(&imported.model, &x);
    let err = max_diff(&got, &want);
    let scale = max_abs(&want).max(1.0);
    eprintln!(
        "{variant}: private max error {err:.2e} (scale {scale:.2}), {rows} rows in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(err <= 1e-3 * scale, "{variant}: private logits differ from onnxruntime by {err}");
    assert_eq!(argmax(&got), argmax(&want), "{variant}: predictions differ");
}

fn check_all_private(model: &str) {
    for e in EXPORTERS {
        let variant = format!("{model}_{e}");
        if arch(&format!("{variant}.onnx")).exists() {
            check_private(model, &variant, 4);
        }
    }
}

#[test]
fn resnet20_private() {
    check_all_private("resnet20");
}

#[test]
fn mobilenetv2_private() {
    check_all_private("mobilenetv2");
}

#[test]
fn squeezenet_private() {
    check_all_private("squeezenet");
}

#[test]
fn efficientnet_private() {
    check_all_private("efficientnet");
}

#[test]
fn vgg_leaky_private() {
    check_all_private("vgg_leaky");
}

#[test]
fn resnet18_private() {
    check_all_private("resnet18");
}

#[test]
fn gelu_cnn_private() {
    check_all_private("gelu_cnn");
}

/// GELU exported before opset 20 (`Div → Erf → Add → Mul → Mul`) imports as one GELU layer per
/// activation, as the opset-20 `Gelu` node does: the same layer list from both exporters.
#[test]
fn erf_form_gelu_imports_as_one_gelu_layer() {
    let names = |variant: &str| -> Vec<&'static str> {
        let m = import_file(&arch(&format!("{variant}.onnx"))).unwrap().model;
        m.layers.iter().map(|l| l.name()).collect()
    };
    let (ts, dynamo) = (names("gelu_cnn_ts"), names("gelu_cnn_dynamo"));
    assert_eq!(ts.iter().filter(|n| **n == "gelu").count(), 4, "{ts:?}");
    assert!(!ts.iter().any(|n| matches!(*n, "erf" | "affine" | "mul")), "{ts:?}");
    assert_eq!(ts, dynamo);
}
