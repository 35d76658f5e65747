//! Predict jobs through three `party-node run` processes: jobs larger than one micro-batch equal
//! the plaintext f64 reference row by row, in order; a party killed mid-job fails the job on
//! every node without leaving an output file that looks complete; small jobs are served from
//! the warm pool once it is filled, each preprocessed job used once, and a plan change
//! discards the pool.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ndarray::{ArrayD, Axis, IxDyn};
use party_node::testbed;
use serde_json::{Value, json};

mod common;
use common::{Node, wait_final};

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
    publish(&nodes, 16).await;
    nodes
}

/// (Re)publishes the MNIST CNN as `cnn` with `frac_bits` and registers the plan.
async fn publish(nodes: &[Node; 3], frac_bits: u32) {
    let model = fixture("mnist_cnn.onnx").canonicalize().unwrap();
    let published = nodes[0]
        .call(
            "POST",
            "/v1/models",
            Some(json!({"name": "cnn", "path": model.display().to_string(), "output": "logits",
                        "frac_bits": frac_bits})),
        )
        .await
        .unwrap();
    for n in &nodes[1..] {
        n.call("POST", "/v1/plans", Some(json!({"name": "cnn", "plan": published["plan"]}))).await.unwrap();
    }
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
            // Bob's request caps the micro-batch; the nodes' memory budgets may cap it lower
            // (the plan's methods, hence its bytes per row, follow the link measured at
            // publication: a loaded machine measures a slower link and picks bulkier keys).
            let b = rec["rows"]["micro_batch"].as_u64().unwrap();
            if micro == 48 {
                assert_eq!(b, 48, "{rec}");
            } else {
                assert!((48..=micro.min(rows) as u64).contains(&b), "{rec}");
            }
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

/// Runs a prediction of `x` to completion on every node; Bob's output and job record.
async fn predict(nodes: &[Node; 3], dir: &Path, name: &str, x: &ArrayD<f64>) -> (ArrayD<f64>, Value) {
    let (input, output) = (dir.join(format!("{name}.in.npy")), dir.join(format!("{name}.out.npy")));
    mpc_ml::npy::write(&input, x).unwrap();
    let id = submit([&nodes[0], &nodes[1], &nodes[2]], x.shape()[0], &input, &output, 1000).await;
    for n in nodes {
        let j = wait_final(n, &id, Duration::from_secs(120)).await;
        assert_eq!(j["state"], "done", "{j}");
    }
    (mpc_ml::npy::read(&output).unwrap(), nodes[1].get(&format!("/v1/jobs/{id}")).await)
}

/// Waits until every node's pool holds `n` entries (the refill runs after a job is done).
async fn pool_holds(nodes: &[Node; 3], n: usize) -> [Value; 3] {
    let t0 = Instant::now();
    loop {
        let s = [nodes[0].get("/v1/pool").await, nodes[1].get("/v1/pool").await, nodes[2].get("/v1/pool").await];
        if s.iter().all(|p| p["entries"].as_array().unwrap().len() == n) {
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "pools never held {n} entries: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(status: &Value) -> Vec<String> {
    status["entries"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn small_jobs_are_served_from_the_warm_pool_once_and_a_plan_change_discards_it() {
    let dir = tempfile::tempdir().unwrap();
    let x = tiled_input(1);
    let model = mpc_ml::onnx::import_file(&fixture("mnist_cnn.onnx")).unwrap().model;
    // Jobs of 5 rows, each on different rows.
    let rows = |k: usize| x.slice_axis(Axis(0), (5 * k..5 * k + 5).into()).to_owned();
    let close = |got: &ArrayD<f64>, x: &ArrayD<f64>, what: &str| {
        let want = model.eval_plain(x);
        let err = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err <= 1e-2, "{what}: max error {err} against plaintext");
    };
    runtime().block_on(async {
        let nodes = consortium(dir.path()).await;
        // Cold: nothing preprocessed yet.
        let (y, rec) = predict(&nodes, dir.path(), "cold", &rows(0)).await;
        close(&y, &rows(0), "cold job");
        assert_eq!(rec["rows"]["from_pool"], json!(0), "{rec}");
        // After it, every node holds two preprocessed jobs of this model and size, the same two.
        let before = pool_holds(&nodes, 2).await;
        assert!(before.iter().all(|s| ids(s) == ids(&before[0])), "{before:?}");
        assert!(before.iter().all(|s| s["counters"]["created"] == json!(2)), "{before:?}");

        // Warm: served from the pool, equal to plaintext, and the entry it used is gone.
        for (k, name) in [(1, "warm1"), (2, "warm2"), (3, "warm3")] {
            let (y, rec) = predict(&nodes, dir.path(), name, &rows(k)).await;
            close(&y, &rows(k), name);
            assert_eq!(rec["rows"]["from_pool"], json!(5), "{name}: {rec}");
            assert_eq!(rec["state"], "done");
        }
        let after = pool_holds(&nodes, 2).await;
        for s in &after {
            // Three jobs served, one entry each; two made per job would exceed the two held,
            // so each refill added one. No entry served twice: the served ones are gone.
            assert_eq!(s["counters"]["served"], json!(3), "{s}");
            assert_eq!(s["counters"]["created"], json!(5), "{s}");
            assert_eq!(s["counters"]["discarded"], json!(0), "{s}");
            let held = ids(s);
            assert!(ids(&before[0]).iter().all(|id| !held.contains(id)), "served entries never come back: {s}");
        }

        // A plan change (other fixed-point format) discards every node's entries for the model.
        publish(&nodes, 14).await;
        let cleared = pool_holds(&nodes, 0).await;
        assert!(cleared.iter().all(|s| s["counters"]["discarded"] == json!(2)), "{cleared:?}");
        let (y, rec) = predict(&nodes, dir.path(), "new-plan", &rows(4)).await;
        close(&y, &rows(4), "job on the new plan");
        assert_eq!(rec["rows"]["from_pool"], json!(0), "{rec}");
    });
}
