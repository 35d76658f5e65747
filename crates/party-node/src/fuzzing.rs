//! Entry points of the fuzz targets (`fuzz/`), one per decoder that takes bytes from outside.
//! They live here so that `cargo test` replays the committed corpora and every crash found
//! (`tests/fuzz_corpora.rs`) on stable Rust, with the same code the fuzzer ran.
//!
//! Each function must return normally for any input: errors are fine, panics, hangs and
//! unbounded allocations are the bugs.

use mpc_proto::transport::frame;

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Targets by name, as in `fuzz/fuzz_targets/`.
pub const TARGETS: [(&str, Target); 8] = [
    ("frame", frame_decode),
    ("hello", hello),
    ("onnx", onnx),
    ("onnx_external", onnx_external),
    ("npy", npy),
    ("csv", csv),
    ("config", config),
    ("api_json", api_json),
];

/// A peer's frame: header, lengths, then the session hello inside.
pub fn frame_decode(data: &[u8]) {
    if let Ok((h, payload)) = frame::decode(data, 1 << 20) {
        assert!(payload.len() as u64 == h.len, "decode returned a payload of the wrong length");
    }
}

/// The session hello (configuration and seeds) a peer sends first.
pub fn hello(data: &[u8]) {
    let _ = mpc_proto::party::decode_hello(data);
}

/// An ONNX model (Alice's `publish`), then its public plan.
pub fn onnx(data: &[u8]) {
    if let Ok(imported) = mpc_ml::onnx::import(data) {
        let _ = imported.model.plan(1, mpc_ml::OutputPolicy::Logits, mpc_proto::FixedPoint::default());
    }
}

/// An ONNX model whose weights live in a file beside it (the dynamo exporter's layout): the
/// input is `len (u32 LE) | model bytes | data file bytes`, written as `m.onnx` and
/// `m.onnx.data` in a scratch directory, then imported with its path and size checks.
pub fn onnx_external(data: &[u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let Some((len, rest)) = data.split_first_chunk::<4>() else { return };
    let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (model, weights) = rest.split_at(len);
    let dir = std::env::temp_dir().join(format!(
        "membrane-fuzz-ext-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let path = dir.join("m.onnx");
    if std::fs::write(&path, model).is_ok()
        && std::fs::write(dir.join("m.onnx.data"), weights).is_ok()
        && let Ok(imported) = mpc_ml::onnx::import_file(&path)
    {
        let _ = imported.model.plan(1, mpc_ml::OutputPolicy::Logits, mpc_proto::FixedPoint::default());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `.npy` input (Bob's `predict`).
pub fn npy(data: &[u8]) {
    let _ = mpc_ml::npy::parse(data);
}

/// A CSV file (training and analytics data).
pub fn csv(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mpc_ml::data::parse_matrix("fuzz.csv", text);
        let _ = mpc_ml::data::parse_csv("fuzz.csv", text, "y");
    }
}

/// A node config file (`node.toml`).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = toml::from_str::<crate::config::ConfigFile>(text);
    }
}

/// The control API's JSON bodies, and the plans inside them.
pub fn api_json(data: &[u8]) {
    let _ = serde_json::from_slice::<crate::jobs::JobRequest>(data);
    let _ = serde_json::from_slice::<crate::ml::PublishRequest>(data);
    if let Ok(r) = serde_json::from_slice::<crate::ml::RegisterRequest>(data) {
        let _ = r.plan.validate();
        let _ = r.plan.hash();
    }
    if let Ok(r) = serde_json::from_slice::<crate::ml::AnalyzeRequest>(data)
        && let Some(p) = r.plan
    {
        let _ = p.validate();
    }
    let _ = serde_json::from_slice::<crate::ml::TrainRequest>(data);
}
