//! A job that one party stops: every party's error names who failed first and why, in words
//! that reveal nothing of that party's data, instead of blaming the messenger.

use std::path::{Path, PathBuf};
use std::time::Duration;

use party_node::testbed;
use serde_json::json;

mod common;
use common::{Node, wait_final, wait_ready};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/onnx").join(name)
}

#[test]
fn when_bobs_input_stops_a_prediction_every_party_says_bob_stopped_it_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_consortium(dir.path(), testbed::free_addrs().unwrap(), false).unwrap();
    let input = dir.path().join("bob-private-input.npy");
    std::fs::copy(fixture("network_a.input.npy"), &input).unwrap();
    let output = dir.path().join("out.npy");
    let rt = runtime();
    rt.block_on(async {
        let alice = Node::spawn(&paths[0]);
        let bob = Node::spawn(&paths[1]);
        let dealer = Node::spawn(&paths[2]);
        wait_ready(&[&alice, &bob, &dealer], Duration::from_secs(60)).await;
        let r = alice
            // The dealer helps online with every comparison: it is mid-job when Bob stops.
            .post(
                "/v1/models",
                json!({"name": "net", "path": fixture("network_a.onnx").display().to_string(), "nonlinear": "helper"}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let plan = r.body["plan"].clone();
        for n in [&bob, &dealer] {
            let r = n.post("/v1/plans", json!({"name": "net", "plan": plan})).await;
            assert_eq!(r.status, 201, "{:?}", r.body);
        }
        // Bob's node checks his input and accepts the job…
        let r = bob
            .post(
                "/v1/jobs",
                json!({"kind": "predict", "model": "net", "input": input.display().to_string(),
                       "output": output.display().to_string(), "micro_batch": 2}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        // …then the file loses its last rows before the job reads them (a disk or a colleague):
        // the first micro-batch runs, the second cannot be read.
        let header = {
            let b = std::fs::read(&input).unwrap();
            10 + usize::from(u16::from_le_bytes([b[8], b[9]]))
        };
        std::fs::OpenOptions::new().write(true).open(&input).unwrap().set_len((header + 3 * 784 * 4) as u64).unwrap();
        for n in [&alice, &dealer] {
            let r = n.post("/v1/jobs", json!({"id": id, "kind": "predict", "model": "net", "batch": 8})).await;
            assert_eq!(r.status, 201, "{:?}", r.body);
        }
        let mut errors = Vec::new();
        for n in [&alice, &bob, &dealer] {
            let j = wait_final(n, &id, Duration::from_secs(60)).await;
            assert_eq!(j["state"], "failed", "{j}");
            errors.push(j["error"].as_str().unwrap().to_string());
        }
        // Bob's own record has the details.
        assert!(errors[1].contains("bob-private-input.npy"), "{}", errors[1]);
        // Alice and the dealer learn who stopped the job first and why — not the file's name.
        for e in [&errors[0], &errors[2]] {
            assert!(e.starts_with("bob (P1) stopped the job: its input file could not be read (at step "), "{e}");
            assert!(e.contains("its job record has the details"), "{e}");
            assert!(!e.contains("bob-private-input"), "nothing of bob's machine leaks: {e}");
            assert!(!e.contains("alice (P0)"), "the messenger is not blamed: {e}");
        }
        assert!(!output.exists(), "no output appears");
    });
}
