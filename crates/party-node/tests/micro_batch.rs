//! Predict jobs larger than one micro-batch through three `party-node run` processes: every row
//! equals the plaintext f64 reference, in order, and a party killed mid-job fails the job on
//! every node without leaving an output file that looks complete.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ndarray::{ArrayD, Axis, IxDyn};
use party_node::testbed;
use serde_json::{Value, json};

mod common;
use common::Node;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/onnx").join(name)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// `copies` copies of the committed MNIST rows, every second copy in reverse order (so a
/// reordered or repeated micro-batch cannot pass), with each copy scaled slightly differently
/// (so copies differ).
fn tiled_input(copies: usize) -> ArrayD<f64> {
    let x = mpc_ml::npy::read(&fixture("mnist_cnn.input.npy")).unwrap();
    let n = x.shape()[0];
    let mut parts = Vec::new();
    for c in 0..copies {
        let order: Vec<usize> = if c % 2 == 0 { (0..n).collect() } else { (0..n).rev().collect() };
        let scale = 1.0 - 0.01 * c as f64;
        parts.push(x.select(Axis(0), &order).mapv(|v| v * scale));
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    ndarray::concatenate(Axis(0), &views).unwrap()
}

/// Starts the three nodes, publishes the MNIST CNN on Alice's and registers its plan on the
/// others'.
async fn consortium(dir: &Path) -> [Node; 3] {
    let paths = testbed::write_consortium(dir, testbed::free_addrs().unwrap(), false).unwrap();
    let nodes = [Node::spawn(&paths[0]), Node::spawn(&paths[1]), Node::spawn(&paths[2])];
    common::wait_ready(&[&nodes[0], &nodes[1], &nodes[2]], Duration::from_secs(30)).await;
    let model = fixture("mnist_cnn.onnx").canonicalize().unwrap();
    let published = nodes[0]
        .call(
            "POST",
            "/v1/models",
            Some(json!({"name": "cnn", "path": model.display().to_string(), "output": "logits"})),
        )
        .await
        .unwrap();
    for n in &nodes[1..] {
        n.call("POST", "/v1/plans", Some(json!({"name": "cnn", "plan": published["plan"]}))).await.unwrap();
    }
    nodes
}

/// Submits a predict job on every node (Bob with the input and output paths); its id.
async fn submit(nodes: [&Node; 3], rows: usize, input: &Path, output: &Path, micro_batch: usize) -> String {
    let r = nodes[0].post("/v1/jobs", json!({"kind": "predict", "model": "cnn", "batch": rows})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = nodes[2].post("/v1/jobs", json!({"id": id, "kind": "predict", "model": "cnn", "batch": rows})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = nodes[1]
        .post(
            "/v1/jobs",
            json!({"id": id, "kind": "predict", "model": "cnn", "input": input.display().to_string(),
                   "output": output.display().to_string(), "micro_batch": micro_batch}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    id
}

async fn wait_final(n: &Node, id: &str, within: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let j = n.get(&format!("/v1/jobs/{id}")).await;
        if ["done", "failed", "interrupted"].contains(&j["state"].as_str().unwrap()) {
            return j;
        }
        assert!(t0.elapsed() < within, "job {id} not final after {within:?}: {j}\nlog:\n{}", n.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a CSV of numbers written by Bob's node.
fn read_csv(path: &Path, per_row: usize) -> ArrayD<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let values: Vec<f64> = text.lines().flat_map(|l| l.split(',').map(|v| v.parse::<f64>().unwrap())).collect();
    ArrayD::from_shape_vec(IxDyn(&[values.len() / per_row, per_row]), values).unwrap()
}

#[test]
fn a_batch_of_many_micro_batches_equals_plaintext_row_by_row_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let x = tiled_input(4);
    let rows = x.shape()[0];
    let input = dir.path().join("rows.npy");
    mpc_ml::npy::write(&input, &x).unwrap();
    let want = mpc_ml::onnx::import_file(&fixture("mnist_cnn.onnx")).unwrap().model.eval_plain(&x);
    let classes = want.shape()[1];
    runtime().block_on(async {
        let nodes = consortium(dir.path()).await;
        // 400 rows in micro-batches of 48: eight full ones and a short last one.
        for (output, micro) in [(dir.path().join("out.csv"), 48), (dir.path().join("out.npy"), 400)] {
            let id = submit([&nodes[0], &nodes[1], &nodes[2]], rows, &input, &output, micro).await;
            for n in &nodes {
                let j = wait_final(n, &id, Duration::from_secs(300)).await;
                assert_eq!(j["state"], "done", "{j}");
            }
            let rec = nodes[1].get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(rec["rows"]["done"], json!(rows), "{rec}");
            assert_eq!(rec["rows"]["total"], json!(rows), "{rec}");
            assert_eq!(rec["rows"]["micro_batch"], json!(micro.min(rows)), "{rec}");
            let got = if micro == 48 { read_csv(&output, classes) } else { mpc_ml::npy::read(&output).unwrap() };
            assert_eq!(got.shape(), want.shape());
            // Fixed point with 16 fractional bits through three layers: within 1e-2 of f64, and
            // every row's predicted class the same.
            for (r, (g, w)) in got.outer_iter().zip(want.outer_iter()).enumerate() {
                let err = g.iter().zip(w.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                assert!(err <= 1e-2, "row {r}: max error {err}");
                let arg = |v: ndarray::ArrayViewD<'_, f64>| {
                    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
                };
                assert_eq!(arg(g.view()), arg(w.view()), "row {r}");
            }
            let name = output.file_name().unwrap().to_str().unwrap();
            assert!(!dir.path().join(format!("{name}.partial")).exists(), "the partial file is renamed");
        }
    });
}

#[test]
fn a_party_killed_mid_job_fails_it_everywhere_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let x = tiled_input(20);
    let rows = x.shape()[0];
    let input = dir.path().join("rows.npy");
    mpc_ml::npy::write(&input, &x).unwrap();
    let output = dir.path().join("out.npy");
    runtime().block_on(async {
        let [mut alice, bob, dealer] = consortium(dir.path()).await;
        let id = submit([&alice, &bob, &dealer], rows, &input, &output, 20).await;
        // Wait until some micro-batches are done, then SIGKILL Alice.
        let t0 = Instant::now();
        loop {
            let j = bob.get(&format!("/v1/jobs/{id}")).await;
            let done = j["rows"]["done"].as_u64().unwrap_or(0);
            if done >= 40 {
                assert!(done < rows as u64, "the job finished before the kill: {j}");
                break;
            }
            assert_ne!(j["state"], "failed", "{j}");
            assert!(t0.elapsed() < Duration::from_secs(120), "{j}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        alice.kill9();
        for n in [&bob, &dealer] {
            let j = wait_final(n, &id, Duration::from_secs(10)).await;
            assert_eq!(j["state"], "failed", "{j}");
            assert!(j["error"].as_str().unwrap().contains("alice"), "the error names the lost peer: {j}");
        }
        assert!(!output.exists(), "no output file after a failed job");
        assert!(!dir.path().join("out.npy.partial").exists(), "Bob's node removes the partial output");
        assert_eq!(bob.get("/v1/health").await["status"], "ok", "Bob's node keeps serving");
    });
}
