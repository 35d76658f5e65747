//! Private training through three `party-node` processes over QUIC (`party-node local train`),
//! against the same SGD in plain f64.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_party-node");

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data").join(name)
}

fn last_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(text.lines().last().expect("output")).expect("a JSON line")
}

#[test]
fn local_train_matches_plaintext_training() {
    for (file, label, model, lr, key) in [
        ("breast_cancer.csv", "malignant", "logreg", "0.5", "test_accuracy"),
        ("wine.csv", "cultivar", "mlp:16", "0.2", "test_accuracy"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let onnx = dir.path().join("model.onnx");
        let run = Command::new(BIN)
            .args(["local", "train", "--data"])
            .arg(data(file))
            .args(["--label", label, "--model", model, "--epochs", "5", "--batch", "16", "--lr", lr])
            .args(["--reveal-to", "bob", "--verify", "--json", "--export"])
            .arg(&onnx)
            .output()
            .unwrap();
        assert!(run.status.success(), "{file}: {}", String::from_utf8_lossy(&run.stderr));
        let m = last_json(&run.stdout);
        let (private, plain) = (m[key].as_f64().unwrap(), m[format!("plain_{key}")].as_f64().unwrap());
        assert!((private - plain).abs() <= 0.01 + 1e-9, "{file}: private {private} vs plain {plain}");
        assert!(plain > 0.85, "{file}: {plain}");
        // The model also served the held-out rows while still secret-shared (Bob's node
        // standardised them as in training): the same accuracy within one row's worth.
        let served = m[format!("served_{key}")].as_f64().unwrap();
        assert!((served - private).abs() <= 0.01 + 1e-9, "{file}: served {served} vs revealed {private}");
        // The export takes raw features: it reproduces the revealed model's held-out accuracy.
        let exported = mpc_ml::onnx::import_file(&onnx).unwrap().model;
        let t = mpc_ml::data::load_csv(&data(file), label).unwrap();
        let (_, test) = mpc_ml::data::split(&t, 0.2, 1);
        let acc = mpc_ml::train::accuracy(&exported, &test.x, &test.y);
        assert!((acc - private).abs() <= 0.01 + 1e-9, "{file}: exported model {acc} vs revealed {private}");
    }
}

#[test]
fn unusable_training_data_is_refused_with_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "a,b,y\n1,2,0\n3,oops,1\n").unwrap();
    let run = Command::new(BIN)
        .args(["local", "train", "--data"])
        .arg(&csv)
        .args(["--label", "y", "--model", "logreg"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("row 3, column \"b\": \"oops\" is not a number"), "{err}");
    let run = Command::new(BIN)
        .args(["local", "train", "--data"])
        .arg(data("breast_cancer.csv"))
        .args(["--label", "diagnosis", "--model", "logreg"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("no column named \"diagnosis\""));
    // Unstandardisable settings: a learning rate that vanishes in fixed point.
    let run = Command::new(BIN)
        .args(["local", "train", "--data"])
        .arg(data("breast_cancer.csv"))
        .args(["--label", "malignant", "--model", "logreg", "--lr", "0.00001"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("updates would vanish"));
}
