//! `party-node bench` end to end on one small workload: three party processes over QUIC on
//! loopback, one JSON line in the documented format. No timing assertions.

use std::process::Command;

/// Fixed-point matmul with 16 fractional bits: 784 products per output, each truncated once
/// after the sum (probabilistic truncation: off by at most a few units of 2^-16).
const MATMUL_TOLERANCE: f64 = 1e-3;

#[test]
fn bench_runs_matmul_end_to_end_and_prints_the_documented_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_party-node"))
        .args(["bench", "--workload", "matmul", "--runs", "1", "--warmup", "0", "--rtt", "2ms"])
        .output()
        .expect("running party-node bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must hold one JSON line per workload, got {stdout:?}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["workload"], "matmul");
    for k in ["wall_s", "offline_s", "online_s", "plaintext_s", "max_abs_err"] {
        assert!(v[k].as_f64().is_some_and(|x| x >= 0.0), "{k} missing or negative in {v}");
    }
    let bytes: Vec<u64> = v["bytes_sent"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect();
    assert_eq!(bytes.len(), 3);
    // Both computing parties open masked operands (128·784 + 784·128 words each) and the
    // dealer sends P1's matrix-triple correction (128·128 words).
    assert!(bytes[0] >= 2 * 128 * 784 * 8 && bytes[1] >= 2 * 128 * 784 * 8, "{bytes:?}");
    assert!(bytes[2] >= 128 * 128 * 8, "{bytes:?}");
    assert!(v["rounds"].as_u64().unwrap() >= 2, "matmul with truncation and reveal: {v}");
    let err = v["max_abs_err"].as_f64().unwrap();
    assert!(err <= MATMUL_TOLERANCE, "max_abs_err {err} above {MATMUL_TOLERANCE}");
    assert_eq!(v["online_pass_dealer_bytes"], 0, "the online pass must not receive dealer material");
    assert!(v["rtt_ms"].as_f64().is_some_and(|r| r > 0.0), "the measured RTT is reported: {v}");
}

#[test]
fn bench_rejects_an_unknown_workload_and_lists_the_valid_ones() {
    let out = Command::new(env!("CARGO_BIN_EXE_party-node"))
        .args(["bench", "--workload", "resnet50"])
        .output()
        .expect("running party-node bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown workload") && stderr.contains("lenet5-b<N>"), "{stderr}");
}
