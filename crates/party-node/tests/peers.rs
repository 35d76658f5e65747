//! Peers that are down, reconnecting or strangers, seen from `party-node run` processes: a job
//! that needs a down peer fails at once naming it; one that needs a reconnecting peer waits out
//! the grace and says so; reconnects log at INFO and `status` clears the error; a stranger's
//! refusals are logged once a minute and the refused node backs off.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use party_node::testbed;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_party-node");

mod common;
use common::{Node, wait_final, wait_ready};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/onnx").join(name)
}

/// Waits until `n`'s control API answers.
async fn api_up(n: &Node) {
    let t0 = Instant::now();
    while n.request("GET", "/v1/health", None).await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the API is not up:\n{}", n.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n`'s view of the peer with role `role`, from `GET /v1/peers`.
async fn peer(n: &Node, role: &str) -> Value {
    api_up(n).await;
    let v = n.get("/v1/peers").await;
    v["peers"].as_array().unwrap().iter().find(|p| p["role"] == role).unwrap().clone()
}

/// Polls `n`'s view of `role` until its state is `state`; the view then.
async fn wait_state(n: &Node, role: &str, state: &str, within: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let p = peer(n, role).await;
        if p["state"] == state {
            return p;
        }
        assert!(t0.elapsed() < within, "{role} not {state} after {within:?}: {p}\nlog:\n{}", n.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What every "peer is not connected" error must say: who (role, party, name), where, the
/// last connection error and when, and what to check.
fn assert_names_the_peer(err: &str, role: &str, party: &str, name: &str, addr: &str) {
    for part in [&format!("{role} ({party}, \"{name}\") at {addr}"), "last connection error", " ago (", " UTC)"] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert!(err.contains("check that"), "the error says what to check: {err}");
}

#[test]
fn a_job_needing_a_down_peer_fails_at_once_naming_the_peer_its_address_and_last_error() {
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_consortium(dir.path(), testbed::free_addrs().unwrap(), false).unwrap();
    let csv = dir.path().join("bob.csv");
    std::fs::write(&csv, "a,b\n1,2\n3,4\n5,6\n").unwrap();
    let rt = runtime();
    rt.block_on(async {
        // The dealer's organisation has not started its node.
        let alice = Node::spawn(&paths[0]);
        let bob = Node::spawn(&paths[1]);
        let dealer_addr = alice.cfg.parties[2].address.to_string();
        // Down once the start grace is over (a node that just started gives its peers time).
        wait_state(&alice, "dealer", "down", Duration::from_secs(60)).await;
        wait_state(&bob, "dealer", "down", Duration::from_secs(60)).await;

        // HTTP, every kind of job: refused at once (503), naming the dealer.
        let name = testbed::NAMES[2];
        let published = alice
            .post("/v1/models", json!({"name": "net", "path": fixture("network_a.onnx").display().to_string()}))
            .await;
        assert_eq!(published.status, 201, "{:?}", published.body);
        let requests = [
            (&alice, json!({"kind": "matmul", "m": 2, "k": 3, "n": 4, "seed": 1})),
            (&alice, json!({"kind": "predict", "model": "net", "batch": 2})),
            (
                &alice,
                json!({"kind": "train", "train": {"arch": "logreg", "epochs": 1, "batch": 2, "lr": 0.1,
                        "samples": 8, "features": 2, "classes": 1}}),
            ),
            (&bob, json!({"kind": "analyze", "analyze": {"stats": "mean", "data": csv.display().to_string()}})),
        ];
        for (node, req) in requests {
            let t0 = Instant::now();
            let r = node.post("/v1/jobs", req.clone()).await;
            let took = t0.elapsed();
            assert_eq!(r.status, 503, "{req}: {:?}", r.body);
            // "At once": not after the 30 s join timeout (room for a loaded machine).
            assert!(took < Duration::from_secs(15), "{req}: answered after {took:?}, not at once");
            let err = r.body["error"].as_str().unwrap();
            assert!(err.starts_with("job not started: "), "{err}");
            assert_names_the_peer(err, "dealer", "P2", name, &dealer_addr);
            // Both computing parties dial the dealer: the fix is on the path to it.
            assert!(err.contains(&format!("UDP {dealer_addr} is reachable from here")), "{err}");
        }
        // Nothing was recorded: the same id can be submitted again once the dealer is up.
        assert_eq!(alice.get("/v1/jobs").await["jobs"], json!([]));
        assert_eq!(bob.get("/v1/jobs").await["jobs"], json!([]));

        // The CLI says the same, at once, and exits non-zero.
        let t0 = Instant::now();
        let out = Command::new(BIN)
            .args(["jobs", "--config"])
            .arg(&paths[0])
            .args(["submit", "--m", "2", "--k", "3", "--n", "4", "--seed", "1"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(t0.elapsed() < Duration::from_secs(15), "the CLI waited {:?}", t0.elapsed());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("503"), "{err}");
        assert_names_the_peer(&err, "dealer", "P2", name, &dealer_addr);

        // `status` shows the dealer down with the error and when it happened.
        let out = Command::new(BIN).args(["status", "--config"]).arg(&paths[0]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.starts_with("dealer")).unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("down") && line.contains(" ago"), "{line}");

        // The dealer starts: the mesh forms, the error is cleared, the last failure is kept.
        let dealer = Node::spawn(&paths[2]);
        wait_ready(&[&alice, &bob, &dealer], Duration::from_secs(60)).await;
        let p = wait_state(&alice, "dealer", "connected", Duration::from_secs(30)).await;
        assert!(p["last_error"].is_null(), "a connected peer shows no error: {p}");
        assert!(p["last_failed_unix_ms"].is_u64(), "when it last failed stays: {p}");
        let h = alice.get("/v1/health").await;
        let hp = h["peers"].as_array().unwrap().iter().find(|p| p["role"] == "dealer").unwrap();
        assert_eq!((hp["state"].as_str(), hp["last_error"].is_null()), (Some("connected"), true), "{h}");
        let r = alice.post("/v1/jobs", json!({"kind": "matmul", "m": 2, "k": 3, "n": 4, "seed": 1})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        bob.post("/v1/jobs", json!({"id": id, "kind": "matmul", "m": 2, "k": 3, "n": 4, "seed": 2}))
            .await
            .ok()
            .unwrap();
        dealer.post("/v1/jobs", json!({"id": id, "kind": "matmul", "m": 2, "k": 3, "n": 4})).await.ok().unwrap();
        for n in [&alice, &bob, &dealer] {
            assert_eq!(wait_final(n, &id, Duration::from_secs(60)).await["state"], "done");
        }
    });
}

/// SIGTERM: the node closes its connections, so its peers see it leave at once.
fn terminate(n: &mut Node) {
    let ok = Command::new("kill").args(["-TERM", &n.child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    n.child.wait().unwrap();
}

#[test]
fn a_job_needing_a_reconnecting_peer_waits_out_the_grace_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_consortium(dir.path(), testbed::free_addrs().unwrap(), false).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let alice = Node::spawn(&paths[0]);
        let bob = Node::spawn(&paths[1]);
        let mut dealer = Node::spawn(&paths[2]);
        wait_ready(&[&alice, &bob, &dealer], Duration::from_secs(60)).await;
        terminate(&mut dealer);
        // Alice saw the connection close: the dealer is (re)connecting for 5 s.
        wait_state(&alice, "dealer", "connecting", Duration::from_secs(10)).await;
        let t0 = Instant::now();
        let r = alice.post("/v1/jobs", json!({"kind": "matmul", "m": 2, "k": 3, "n": 4, "seed": 1})).await;
        assert_eq!(r.status, 201, "a reconnecting peer gets its grace: {:?}", r.body);
        let id = r.body["id"].as_str().unwrap();
        let j = wait_final(&alice, id, Duration::from_secs(30)).await;
        let took = t0.elapsed();
        assert_eq!(j["state"], "failed", "{j}");
        assert!(took < Duration::from_secs(15), "failed after {took:?}: the grace, not the 30 s join timeout");
        let err = j["error"].as_str().unwrap();
        let addr = alice.cfg.parties[2].address.to_string();
        assert!(err.contains(&format!("dealer (P2, \"{}\") at {addr} was connecting", testbed::NAMES[2])), "{err}");
        assert!(
            err.contains("its connection dropped") && err.contains("did not connect within the 5.0 s grace"),
            "{err}"
        );
        assert!(err.contains("last connection error") && err.contains("node shutting down"), "{err}");
        // After the grace the dealer is down and the next job is refused at once.
        wait_state(&alice, "dealer", "down", Duration::from_secs(30)).await;
        let r = alice.post("/v1/jobs", json!({"kind": "matmul", "m": 2, "k": 3, "n": 4, "seed": 1})).await;
        assert_eq!(r.status, 503, "{:?}", r.body);
    });
}

#[test]
fn reconnects_log_at_info_and_status_clears_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_consortium(dir.path(), testbed::free_addrs().unwrap(), false).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let alice = Node::spawn(&paths[0]);
        let mut bob = Node::spawn(&paths[1]);
        let dealer = Node::spawn(&paths[2]);
        wait_ready(&[&alice, &bob, &dealer], Duration::from_secs(60)).await;
        // Bob restarts twice: a clean stop, then a SIGKILL (the others time out on him).
        for kill in [false, true] {
            if kill {
                bob.kill9();
            } else {
                terminate(&mut bob);
            }
            wait_state(&alice, "bob", "connecting", Duration::from_secs(20)).await;
            bob = Node::spawn(&paths[1]);
            wait_ready(&[&alice, &bob, &dealer], Duration::from_secs(60)).await;
        }
        for n in [&alice, &dealer] {
            let p = wait_state(n, "bob", "connected", Duration::from_secs(30)).await;
            assert!(p["last_error"].is_null(), "the error is cleared once bob is back: {p}");
            assert!(p["last_failed_unix_ms"].is_u64(), "when bob last failed is kept: {p}");
            let log = n.log_text();
            assert!(log.contains("peer reconnected"), "{log}");
            for line in log.lines().filter(|l| l.contains("WARN")) {
                assert!(!line.contains("refused"), "a healthy reconnect is not a refusal: {line}");
            }
        }
        // The clean stop was routine (INFO), the kill a lost connection (WARN).
        let log = alice.log_text();
        assert!(log.lines().any(|l| l.contains("INFO") && l.contains("peer closed the connection")), "{log}");
        assert!(log.lines().any(|l| l.contains("WARN") && l.contains("peer connection lost")), "{log}");
    });
}

#[test]
fn a_strangers_refusals_are_logged_once_a_minute_and_it_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = testbed::free_addrs().unwrap();
    let paths = testbed::write_consortium(&dir.path().join("real"), addrs, false).unwrap();
    // Mallory: bob's role and address with a key of her own; she pins the real dealer's
    // certificate, so the dealer is the one that refuses.
    let rogue = testbed::write_consortium(&dir.path().join("rogue"), addrs, false).unwrap();
    let real_dealer_cert = paths[2].with_file_name("node.cert.pem");
    let rogue_text = std::fs::read_to_string(&rogue[1]).unwrap();
    let pinned = rogue_text.replace("../dealer/node.cert.pem", &real_dealer_cert.display().to_string());
    assert_ne!(pinned, rogue_text, "the rogue config pins the dealer's certificate by path:\n{rogue_text}");
    std::fs::write(&rogue[1], pinned).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let dealer = Node::spawn(&paths[2]);
        let t0 = Instant::now();
        let mallory = Node::spawn(&rogue[1]);
        api_up(&dealer).await;
        // Wait until the dealer has refused her certificate six times.
        let refused = loop {
            let v = dealer.get("/v1/peers").await;
            if let Some(r) = v["refused_certificates"].as_array().and_then(|a| a.first())
                && r["count"].as_u64().unwrap() >= 6
            {
                break r.clone();
            }
            assert!(t0.elapsed() < Duration::from_secs(45), "{v}\n{}", dealer.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(60), "the test must end within the log interval");
        // Mallory backs off: six attempts take at least 50+100+200+400+800 ms (at one per
        // 50 ms they would take a quarter of a second).
        assert!(took >= Duration::from_millis(1500), "six refusals in {took:?}: no backoff");
        assert!(refused["names"].as_array().unwrap().contains(&json!(testbed::NAMES[1])), "{refused}");
        let log = dealer.log_text();
        let warns: Vec<&str> =
            log.lines().filter(|l| l.contains("WARN") && l.contains("refused a peer certificate")).collect();
        assert_eq!(warns.len(), 1, "one WARN per certificate per minute:\n{log}");
        assert!(warns[0].contains(refused["fingerprint"].as_str().unwrap()), "{}", warns[0]);
        // The refused node says why, once, and shows it in its status.
        let p = peer(&mallory, "dealer").await;
        assert_eq!(p["state"], "down", "{p}");
        assert!(p["last_error"].as_str().unwrap().contains("refused this node's certificate"), "{p}");
        let log = mallory.log_text();
        let warns = log.lines().filter(|l| l.contains("WARN") && l.contains("retrying with backoff")).count();
        assert_eq!(warns, 1, "{log}");
    });
}
