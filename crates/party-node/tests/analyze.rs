//! Private analytics through three `party-node` processes over QUIC (`party-node local
//! analyze`), against the plain f64 statistics of the same rows.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_party-node");

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data").join(name)
}

#[test]
fn pooled_statistics_equal_plaintext() {
    // Alice holds the first 100 wines, Bob the other 78: the statistics cover all 178.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(data("wine.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (alice, bob) = (dir.path().join("alice.csv"), dir.path().join("bob.csv"));
    std::fs::write(&alice, [&lines[..101], &[""]].concat().join("\n")).unwrap();
    std::fs::write(&bob, [&lines[..1], &lines[101..], &[""]].concat().join("\n")).unwrap();
    let run = Command::new(BIN)
        .args(["local", "analyze", "--data"])
        .arg(&bob)
        .arg("--alice-data")
        .arg(&alice)
        .args(["--stats", "count,mean,var,min,max,corr", "--hist", "cultivar:0.5,1.5", "--verify", "--json"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(report["count"], 178);
    // 59/71/48 wines per cultivar in the UCI data set.
    assert_eq!(report["histograms"][0]["counts"], serde_json::json!([59, 71, 48]));
    // The verify line: every figure within fixed-point encoding error (≤ 2^-17 per value).
    let verify = out.lines().find(|l| l.starts_with("verify:")).expect("verify line");
    let err: f64 = verify.split('=').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(err < 1e-3, "{verify}");
}

#[test]
fn unusable_analytics_input_is_refused_before_the_job() {
    let run = Command::new(BIN)
        .args(["local", "analyze", "--data"])
        .arg(data("breast_cancer.csv"))
        .args(["--stats", "mean,median"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("unknown statistic \"median\""));
    let run = Command::new(BIN)
        .args(["local", "analyze", "--data"])
        .arg(data("breast_cancer.csv"))
        .args(["--stats", "var"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("column \"worst_area\"") && err.contains("scale the column down"), "{err}");
    let run = Command::new(BIN)
        .args(["local", "analyze", "--data"])
        .arg(data("wine.csv"))
        .args(["--hist", "age:1,2"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("\"age\": no such column"));
}
