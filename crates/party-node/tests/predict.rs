//! Private inference through three `party-node` processes over QUIC (`party-node local
//! predict`), against the onnxruntime outputs committed with the fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_party-node");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/onnx").join(name)
}

#[test]
fn local_predict_over_quic_matches_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    for (name, policy) in [("network_a", "logits"), ("lenet5", "logits"), ("breast_cancer_logreg", "label")] {
        let out = dir.path().join(format!("{name}.npy"));
        let mut args = vec![
            "local".into(),
            "predict".into(),
            "--model".into(),
            fixture(&format!("{name}.onnx")).display().to_string(),
            "--input".into(),
            fixture(&format!("{name}.input.npy")).display().to_string(),
            "--output".into(),
            out.display().to_string(),
            "--output-policy".into(),
            policy.to_string(),
        ];
        if name == "breast_cancer_logreg" {
            args.extend(["--frac-bits".to_string(), "20".to_string()]);
        }
        let run = Command::new(BIN).args(&args).output().unwrap();
        assert!(run.status.success(), "{name}: {}", String::from_utf8_lossy(&run.stderr));
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(stdout.contains("per-layer profile"), "{stdout}");
        let got = mpc_ml::npy::read(&out).unwrap();
        let want = mpc_ml::npy::read(&fixture(&format!("{name}.logits.npy"))).unwrap();
        if policy == "logits" {
            let err = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err <= 1e-3, "{name}: max error {err}");
        } else {
            // Binary labels: threshold of onnxruntime's probabilities.
            let expect: Vec<f64> = want.iter().map(|&p| f64::from(p >= 0.5)).collect();
            assert_eq!(got.iter().copied().collect::<Vec<_>>(), expect, "{name}");
        }
    }
}

/// `party-node local predict --model model --input input --output output`.
fn local_predict(model: impl AsRef<Path>, input: impl AsRef<Path>, output: &Path) -> std::process::Output {
    let args = ["local", "predict", "--model"];
    Command::new(BIN)
        .args(args)
        .arg(model.as_ref())
        .arg("--input")
        .arg(input.as_ref())
        .arg("--output")
        .arg(output)
        .output()
        .unwrap()
}

#[test]
fn bad_inputs_fail_before_any_node_starts_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    // Wrong shape: LeNet-5 expects [batch, 1, 28, 28]; give it Network A's [8, 784]... which has
    // the same per-sample size, so use the breast-cancer inputs ([n, 30]) instead.
    let run =
        local_predict(fixture("lenet5.onnx"), fixture("breast_cancer_logreg.input.npy"), &dir.path().join("o.npy"));
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("the model expects [batch, 1, 28, 28]"), "{err}");
    // Not an ONNX file.
    let bogus = dir.path().join("bogus.onnx");
    std::fs::write(&bogus, b"not a model").unwrap();
    let run = local_predict(&bogus, fixture("lenet5.input.npy"), &dir.path().join("o.npy"));
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("not a valid ONNX model"));
    // A NaN: refused with its place.
    let mut x = mpc_ml::npy::read(&fixture("network_a.input.npy")).unwrap();
    x[[1, 2]] = f64::NAN;
    let nan = dir.path().join("nan.npy");
    mpc_ml::npy::write(&nan, &x).unwrap();
    let run = local_predict(fixture("network_a.onnx"), &nan, &dir.path().join("o.npy"));
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("the value at row 1, column 2 is NaN: NaN and infinite values are refused"), "{err}");
}
