//! A consortium of two organisations and no one else (`[consortium] mode = "2pc"`): the test
//! starts exactly two `party-node run` processes — alice's and bob's; no dealer process exists
//! — and drives them through the CLI: Alice publishes, Bob predicts with one command and gets
//! the plaintext reference. `local train|analyze|predict --mode 2pc` match plaintext;
//! `init-local --mode 2pc` writes two nodes, and a config or `init` that names a dealer is
//! refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use party_node::config::{Config, Mode};
use party_node::testbed;
use serde_json::Value;

mod common;
use common::Node;

const BIN: &str = env!("CARGO_BIN_EXE_party-node");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("RUST_BACKTRACE", "0").output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The logits of the two-party mode are within this of plaintext f64, as the dealer mode's:
/// truncation by the shares' known top bit is within one unit in the last place per product
/// (2^-16), never a large error; network_a has two weighted layers.
const LOGIT_TOLERANCE: f64 = 1e-3;

#[test]
fn two_nodes_serve_a_prediction_from_the_cli_with_no_dealer() {
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_two_party(dir.path(), testbed::free_addrs().unwrap(), false).unwrap();
    for p in &paths {
        let cfg = Config::load(p).unwrap();
        assert_eq!((cfg.mode, cfg.parties.len()), (Mode::TwoParty, 2), "{}", p.display());
    }
    assert!(!dir.path().join("dealer").exists(), "a two-party consortium has no dealer directory");
    // The only node processes: alice's and bob's.
    let nodes = [Node::spawn(&paths[0]), Node::spawn(&paths[1])];
    let rt = runtime();
    rt.block_on(common::wait_ready(&[&nodes[0], &nodes[1]], Duration::from_secs(30)));
    let logs = || nodes.iter().map(|n| n.log_text()).collect::<Vec<_>>().join("\n---\n");

    // Each node's mesh has one peer: the other organisation.
    for (n, other) in [(&nodes[0], "bob"), (&nodes[1], "alice")] {
        let status = rt.block_on(n.get("/v1/peers"));
        let peers = status["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 1, "{status}");
        assert_eq!((peers[0]["role"].as_str(), peers[0]["connected"].as_bool()), (Some(other), Some(true)));
    }
    let status = cli(&["status", "--config", paths[1].to_str().unwrap()]);
    assert!(status.status.success() && !text(&status).contains("dealer"), "{}", text(&status));

    let model = fixture("onnx/network_a.onnx");
    let publish = cli(&[
        "publish",
        "--config",
        paths[0].to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--name",
        "net",
        "--allow",
        "bob-clinic",
    ]);
    assert!(publish.status.success(), "{}\n{}", text(&publish), logs());
    let t0 = Instant::now();
    while !rt.block_on(nodes[1].get("/v1/models"))["models"].as_array().unwrap().iter().any(|m| m["name"] == "net") {
        assert!(t0.elapsed() < Duration::from_secs(20), "the plan never reached bob\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }

    let input = fixture("onnx/network_a.input.npy");
    let out = dir.path().join("out.npy");
    let predict = cli(&[
        "predict",
        "--config",
        paths[1].to_str().unwrap(),
        "--model",
        "net",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(predict.status.success(), "{}\n{}", text(&predict), logs());
    let got = mpc_ml::npy::read(&out).unwrap();
    let want = mpc_ml::npy::read(&fixture("onnx/network_a.logits.npy")).unwrap();
    assert_eq!(got.shape(), want.shape());
    let err = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(err <= LOGIT_TOLERANCE, "max |private - plaintext| = {err}");

    // Both nodes ran the job, and what they moved includes the OT traffic that replaced the
    // dealer: correlation bytes flowed between alice and bob themselves.
    let jobs = rt.block_on(nodes[1].get("/v1/jobs"));
    let job = jobs["jobs"].as_array().unwrap().iter().find(|j| j["state"] == "done").cloned().unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    for n in &nodes {
        let r = rt.block_on(n.get(&format!("/v1/jobs/{id}")));
        assert_eq!(r["state"], "done", "{r}");
        let t = &r["total"];
        let material = t["offline_sent"].as_u64().unwrap() + t["offline_recv"].as_u64().unwrap();
        assert!(material > 0, "no correlation traffic recorded: {r}");
    }
}

#[test]
fn local_train_analyze_and_predict_in_2pc_mode_match_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("model.onnx");
    let run = Command::new(BIN)
        .args(["local", "train", "--mode", "2pc", "--data"])
        .arg(fixture("data/breast_cancer.csv"))
        .args(["--label", "malignant", "--model", "logreg", "--epochs", "2", "--batch", "16", "--lr", "0.5"])
        .args(["--reveal-to", "bob", "--verify", "--json", "--export"])
        .arg(&onnx)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("alice and bob nodes (mode 2pc: no dealer)"), "{}", text(&run));
    let m: Value = serde_json::from_str(String::from_utf8_lossy(&run.stdout).lines().last().unwrap()).unwrap();
    let (private, plain) = (m["test_accuracy"].as_f64().unwrap(), m["plain_test_accuracy"].as_f64().unwrap());
    // The same SGD on shares: the held-out accuracy within one row (114 rows) of plaintext's.
    assert!((private - plain).abs() <= 0.01 + 1e-9, "private {private} vs plain {plain}");
    assert!(plain > 0.85, "{m}");

    // Statistics of Bob's rows: the comparisons of min/max and the divisions of the mean run
    // on OT-made material as well.
    let run = Command::new(BIN)
        .args(["local", "analyze", "--mode", "2pc", "--stats", "mean,min,max", "--verify", "--data"])
        .arg(fixture("data/wine.csv"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let line = String::from_utf8_lossy(&run.stdout).lines().find(|l| l.starts_with("verify:")).unwrap().to_string();
    let err: f64 = line.split("= ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    // Wine's columns reach 1680 (proline): 16 fractional bits and a reciprocal approximation.
    assert!(err <= 1e-3, "{line}");

    let out = dir.path().join("out.npy");
    let run = Command::new(BIN)
        .args(["local", "predict", "--mode", "2pc", "--verify", "--model"])
        .arg(fixture("onnx/network_a.onnx"))
        .arg("--input")
        .arg(fixture("onnx/network_a.input.npy"))
        .arg("--output")
        .arg(&out)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let t = text(&run);
    assert!(t.contains("OT correlations") && !t.contains("dealer material"), "{t}");
    let got = mpc_ml::npy::read(&out).unwrap();
    let want = mpc_ml::npy::read(&fixture("onnx/network_a.logits.npy")).unwrap();
    let err = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(err <= LOGIT_TOLERANCE, "max |private - plaintext| = {err}\n{t}");
}

#[test]
fn init_local_2pc_writes_two_nodes_and_configs_refuse_a_dealer() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    let o = cli(&["init-local", "--mode", "2pc", "--out", out.to_str().unwrap(), "--base-port", "7400"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o).lines().filter(|l| l.starts_with("party-node run --config")).count(), 2, "{}", text(&o));
    assert!(out.join("alice/node.toml").exists() && out.join("bob/node.toml").exists());
    assert!(!out.join("dealer").exists());
    let toml = std::fs::read_to_string(out.join("bob/node.toml")).unwrap();
    assert!(toml.contains("[consortium]") && toml.contains("mode = \"2pc\""), "{toml}");
    assert_eq!(Config::load(&out.join("bob/node.toml")).unwrap().parties.len(), 2);

    // A dealer entry in a two-party config is refused, naming the fix.
    let bad = out.join("bob/bad.toml");
    let dealer = "\n[[party]]\nrole = \"dealer\"\nname = \"dealer-co\"\naddress = \"127.0.0.1:7402\"\ncert = \"node.cert.pem\"\n";
    std::fs::write(&bad, format!("{toml}{dealer}")).unwrap();
    let e = format!("{:#}", Config::load(&bad).unwrap_err());
    assert!(e.contains("[[party]] dealer is listed, but [consortium] mode = \"2pc\" has no dealer"), "{e}");
    // `init --role dealer --mode 2pc` is refused before anything is written.
    let o = cli(&[
        "init",
        "--role",
        "dealer",
        "--name",
        "d",
        "--mode",
        "2pc",
        "--out",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert!(!o.status.success() && text(&o).contains("a two-party consortium has only alice and bob"), "{}", text(&o));
    assert!(!dir.path().join("d").exists());
    // `init --mode 2pc` writes a config with the mode and one peer to add.
    let o = cli(&[
        "init",
        "--role",
        "bob",
        "--name",
        "clinic",
        "--mode",
        "2pc",
        "--out",
        dir.path().join("b").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let toml = std::fs::read_to_string(dir.path().join("b/node.toml")).unwrap();
    assert!(
        toml.contains("mode = \"2pc\"") && toml.contains("# role = \"alice\"") && !toml.contains("dealer\""),
        "{toml}"
    );
}
