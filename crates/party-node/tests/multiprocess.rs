//! Three `party-node run` processes on loopback: the mesh forms, jobs run and give Bob the
//! right product, a SIGKILLed peer fails the others' job within 5 s and a restarted one serves
//! the next job, the control API refuses missing and wrong tokens, and the store survives
//! SIGKILL at any moment.

use std::process::Command;
use std::time::{Duration, Instant};

use party_node::client::call;
use party_node::testbed;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_party-node");

mod common;
use common::{Node, wait_final};

fn spawn(path: &std::path::Path, run: u32) -> Node {
    Node::spawn_with(path, &format!("node-{run}.log"), &[])
}

async fn wait_ready(nodes: &[&Node]) {
    common::wait_ready(nodes, Duration::from_secs(30)).await;
}

async fn run_job(nodes: &[&Node; 3], m: usize, k: usize, n: usize) -> String {
    common::run_matmul_job(nodes, m, k, n).await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// How soon a job must fail after a peer is killed: the 3 s idle timeout and then at once —
/// well under the 30 s join timeout that would fail it otherwise, with room for a loaded
/// machine (the suite runs while other builds keep both cores busy).
const LOSS_DEADLINE: Duration = Duration::from_secs(15);

#[test]
fn three_processes_form_a_mesh_run_jobs_and_survive_a_sigkilled_peer() {
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_consortium(dir.path(), testbed::free_addrs().unwrap(), false).unwrap();
    let rt = runtime();
    rt.block_on(async {
        // Start in reverse order: the dialers (lower ids) come up last.
        let dealer = spawn(&paths[2], 0);
        let bob = spawn(&paths[1], 0);
        let alice = spawn(&paths[0], 0);
        wait_ready(&[&alice, &bob, &dealer]).await;
        let peers = alice.get("/v1/peers").await;
        assert!(
            peers["peers"].as_array().unwrap().iter().all(|p| p["connected"] == json!(true) && p["rtt_ms"].is_number())
        );

        let id = run_job(&[&alice, &bob, &dealer], 7, 13, 5).await;
        let j = alice.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(j["ops"]["matmul"]["rounds"], json!(1), "{j}");
        assert_eq!(j["ops"]["matmul"]["online_sent"], json!(8 * (7 * 13 + 13 * 5)), "{j}");
        let r = call(alice.cfg.api_listen, Some(&alice.cfg.api_token.0), "GET", &format!("/v1/jobs/{id}/result"), None)
            .await
            .unwrap();
        assert_eq!(r.status, 403, "only Bob learns results");

        // Alice and Bob join a job; the dealer is SIGKILLed before it submits its side.
        let r = alice.post("/v1/jobs", json!({"kind": "matmul", "m": 4, "k": 4, "n": 4, "seed": 1})).await;
        let id = r.body["id"].as_str().unwrap().to_string();
        bob.post("/v1/jobs", json!({"id": id, "kind": "matmul", "m": 4, "k": 4, "n": 4, "seed": 2}))
            .await
            .ok()
            .unwrap();
        let t0 = Instant::now();
        loop {
            let (a, b) = (alice.get(&format!("/v1/jobs/{id}")).await, bob.get(&format!("/v1/jobs/{id}")).await);
            if a["state"] == "running" && b["state"] == "running" {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "{a} {b}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut dealer = dealer;
        dealer.kill9();
        let killed = Instant::now();
        // Deadlines here separate "failed on losing the peer" (the 3 s idle timeout, then at
        // once) from the 30 s join timeout, with room for a machine under full load.
        for n in [&alice, &bob] {
            let j = wait_final(n, &id, LOSS_DEADLINE).await;
            assert_eq!(j["state"], "failed", "{j}");
            let err = j["error"].as_str().unwrap();
            assert!(err.contains("dealer"), "the error names the lost peer: {err}");
        }
        let took = killed.elapsed();
        assert!(took < LOSS_DEADLINE, "failed after {took:?}: not on the loss");
        let health = alice.get("/v1/health").await;
        assert_eq!(health["status"], "ok", "the node keeps serving");

        // The dealer restarts; the next job works.
        let dealer = spawn(&dealer.path.clone(), 1);
        wait_ready(&[&alice, &bob, &dealer]).await;
        run_job(&[&alice, &bob, &dealer], 3, 2, 4).await;

        // A computing party dies: Alice is in session setup waiting for Bob's hello, the dealer
        // is waiting for Bob's stream. Both fail within 5 s, naming Bob.
        let r = alice.post("/v1/jobs", json!({"kind": "matmul", "m": 4, "k": 4, "n": 4, "seed": 1})).await;
        let id = r.body["id"].as_str().unwrap().to_string();
        dealer.post("/v1/jobs", json!({"id": id, "kind": "matmul", "m": 4, "k": 4, "n": 4})).await.ok().unwrap();
        let t0 = Instant::now();
        while alice.get(&format!("/v1/jobs/{id}")).await["state"] != "running" {
            assert!(t0.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut bob = bob;
        bob.kill9();
        let killed = Instant::now();
        for n in [&alice, &dealer] {
            let j = wait_final(n, &id, LOSS_DEADLINE).await;
            assert_eq!(j["state"], "failed", "{j}");
            let err = j["error"].as_str().unwrap();
            assert!(err.contains("lost the connection to bob"), "{err}");
        }
        assert!(killed.elapsed() < LOSS_DEADLINE, "failed after {:?}", killed.elapsed());
        let bob = spawn(&bob.path.clone(), 1);
        wait_ready(&[&alice, &bob, &dealer]).await;
        let jobs = bob.get("/v1/jobs").await;
        assert_eq!(jobs["jobs"].as_array().unwrap().len(), 3, "Bob's records survive its SIGKILL: {jobs}");

        // Plan mismatch: Bob's shapes differ -> every side fails cleanly.
        let r = alice.post("/v1/jobs", json!({"kind": "matmul", "m": 2, "k": 2, "n": 2, "seed": 1})).await;
        let id = r.body["id"].as_str().unwrap().to_string();
        bob.post("/v1/jobs", json!({"id": id, "kind": "matmul", "m": 3, "k": 2, "n": 2, "seed": 2}))
            .await
            .ok()
            .unwrap();
        dealer.post("/v1/jobs", json!({"id": id, "kind": "matmul", "m": 2, "k": 2, "n": 2})).await.ok().unwrap();
        for n in [&alice, &bob, &dealer] {
            let j = wait_final(n, &id, Duration::from_secs(10)).await;
            assert_eq!(j["state"], "failed", "{j}");
        }
        let e = bob.get(&format!("/v1/jobs/{id}")).await["error"].as_str().unwrap().to_string();
        // The plans are public: the error names the field that differs and both values.
        assert!(e.contains("shapes differ from alice's") && e.contains("m 3 vs 2"), "{e}");

        // No secret in any log line: the API token and the input seeds' values are not printed.
        for n in [&alice, &bob, &dealer] {
            let log = n.log_text();
            assert!(!log.contains(&n.cfg.api_token.0), "token in the log");
            assert!(!log.contains("PRIVATE KEY"), "key in the log");
        }
    });
}

#[test]
fn the_api_refuses_missing_and_wrong_tokens_and_names_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_consortium(dir.path(), testbed::free_addrs().unwrap(), false).unwrap();
    let bob = spawn(&paths[1], 0);
    let rt = runtime();
    rt.block_on(async {
        let addr = bob.cfg.api_listen;
        let t0 = Instant::now();
        let r = loop {
            match call(addr, None, "GET", "/v1/health", None).await {
                Ok(r) => break r,
                Err(_) if t0.elapsed() < Duration::from_secs(20) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("{e:#}\n{}", bob.log_text()),
            }
        };
        assert_eq!(r.status, 401);
        assert!(r.body["error"].as_str().unwrap().contains("missing bearer token"));
        let r = call(addr, Some("not-the-token-at-all"), "GET", "/v1/jobs", None).await.unwrap();
        assert_eq!((r.status, r.body["error"].as_str().unwrap()), (401, "wrong bearer token"));
        let r = call(addr, Some("not-the-token-at-all"), "GET", "/metrics", None).await.unwrap();
        assert_eq!(r.status, 401);
        let ok = bob.get("/metrics").await;
        assert!(ok.as_str().unwrap().contains("membrane_peer_connected{peer=\"alice\"} 0"), "{ok}");

        let r = bob.post("/v1/jobs", json!({"kind": "matmul", "m": 2, "k": 2})).await;
        assert_eq!(r.status, 400);
        assert!(r.body["error"].as_str().unwrap().contains("missing field `n`"), "{:?}", r.body);
        let r = bob.post("/v1/jobs", json!({"kind": "matmul", "m": 2, "k": 2, "n": 0})).await;
        assert_eq!(r.status, 422);
        assert!(r.body["error"].as_str().unwrap().contains("n = 0 must be between 1 and"), "{:?}", r.body);
        let r = bob
            .post(
                "/v1/jobs",
                json!({"kind": "predict", "model": "nope", "input": "/nonexistent.npy", "output": "/tmp/o.npy"}),
            )
            .await;
        assert_eq!(r.status, 422);
        assert!(r.body["error"].as_str().unwrap().contains("no model named \"nope\""), "{:?}", r.body);
        let r = bob.post("/v1/jobs", json!({"kind": "bake"})).await;
        assert_eq!(r.status, 400, "{:?}", r.body);
        let r = bob.post("/v1/jobs", json!({"kind": "matmul", "m": 2, "k": 2, "n": 2})).await;
        assert_eq!(r.status, 422);
        assert!(r.body["error"].as_str().unwrap().contains("seed"), "{:?}", r.body);
        let r = bob.post("/v1/jobs", json!({"kind": "matmul", "m": 2, "k": 2, "n": 2, "seed": 1, "id": "xyz"})).await;
        assert_eq!(r.status, 422, "{:?}", r.body);
        let r = bob.post("/v1/jobs", json!({"kind": "matmul", "m": 0, "k": 2, "n": 2, "seed": 1})).await;
        assert_eq!(r.status, 422, "{:?}", r.body);
        let big = "x".repeat(64 * 1024);
        let r = bob.post("/v1/jobs", json!({"kind": "matmul", "m": 1, "k": 1, "n": 1, "id": big})).await;
        assert_eq!(r.status, 413, "{:?}", r.body);
        // A plan may be larger (it grows with the network): a 200 KiB one is read, and refused
        // for what it says, not for its size.
        let r = bob.post("/v1/plans", json!({"name": "big", "plan": {"steps": "y".repeat(200 * 1024)}})).await;
        assert!(r.status != 413 && r.status >= 400 && r.status < 500, "{:?}", r.status);
        let r = bob.get("/v1/jobs").await;
        assert_eq!(r["jobs"], json!([]));
        let r = call(addr, Some(&bob.cfg.api_token.0), "GET", "/v1/jobs/00", None).await.unwrap();
        assert_eq!(r.status, 400);
    });
}

#[test]
fn store_items_survive_sigkill_at_any_moment() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..12u64 {
        let mut child = Command::new(BIN).args(["store-torture", "--dir"]).arg(dir.path()).spawn().unwrap();
        // Killed at a varying moment once it writes (on a loaded machine the process may take
        // longer than any fixed sleep to start).
        let t0 = Instant::now();
        while std::fs::read_dir(dir.path().join("done")).map_or(true, |mut d| d.next().is_none()) {
            assert!(t0.elapsed() < Duration::from_secs(30), "store-torture wrote nothing in 30 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis((round * 37) % 150));
        child.kill().unwrap();
        child.wait().unwrap();
        let store = party_node::store::Store::open(dir.path()).unwrap();
        let items = store.list("items").unwrap();
        assert!(!items.is_empty());
        for name in items {
            let slot: u64 = name.parse().unwrap();
            let payload = store.get("items", &name).unwrap().expect("listed");
            let i = u64::from_le_bytes(payload[..8].try_into().unwrap());
            assert_eq!(i % 50, slot);
            assert_eq!(payload.len(), 8 * (1 + (i as usize % 4096)), "item {name} complete");
            assert!(payload.chunks(8).all(|c| c == i.to_le_bytes()), "item {name} not mixed");
            if let Some(done) = store.get("done", &name).unwrap() {
                assert!(u64::from_le_bytes(done[..8].try_into().unwrap()) <= i, "items are written before `done`");
            }
        }
        for kind in ["items", "done"] {
            let leftovers = std::fs::read_dir(dir.path().join(kind))
                .map(|d| d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.')).count())
                .unwrap_or(0);
            assert_eq!(leftovers, 0, "temporary files are cleaned when the store opens");
        }
    }
}
