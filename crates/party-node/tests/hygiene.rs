//! Secret hygiene: three nodes log at `trace` level while they run a matmul, a training and an
//! analytics job; no share, seed, private key or API token of the run may appear in any log
//! line or API response.

use std::path::Path;
use std::time::{Duration, Instant};

use party_node::client::call;
use party_node::config::Config;
use party_node::testbed;
use serde_json::{Value, json};

mod common;
use common::Node;

/// API calls whose response bodies are kept for the scan.
trait Seen {
    async fn api(&self, method: &str, path: &str, body: Option<Value>, seen: &mut String) -> Value;
}

impl Seen for Node {
    async fn api(&self, method: &str, path: &str, body: Option<Value>, seen: &mut String) -> Value {
        let r = self.request(method, path, body).await.unwrap();
        seen.push_str(&r.body.to_string());
        seen.push('\n');
        r.ok().unwrap()
    }
}

/// Every way a 64-bit secret word could be printed.
fn renderings(v: u64) -> [String; 4] {
    [v.to_string(), (v as i64).to_string(), format!("{v:x}"), format!("{v:X}")]
}

#[test]
fn no_secret_reaches_a_log_line_or_an_api_response() {
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_consortium(dir.path(), testbed::free_addrs().unwrap(), false).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data/breast_cancer.csv");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut seen = String::new();
    let nodes: Vec<Node> =
        paths.iter().map(|p| Node::spawn_with(p, "trace.log", &[("MEMBRANE_LOG", "trace")])).collect();
    // Secret job seeds, chosen to be unmistakable in text.
    let (seed_a, seed_b) = (0x5ec2_e7a1_1ce5_eed1u64, 0x5ec2_e7b0_b5ee_d002u64);
    let ids = rt.block_on(async {
        let t0 = Instant::now();
        for n in &nodes {
            while !call(n.cfg.api_listen, Some(&n.cfg.api_token.0), "GET", "/v1/health", None)
                .await
                .map(|r| r.body["mesh_ready"] == json!(true))
                .unwrap_or(false)
            {
                assert!(t0.elapsed() < Duration::from_secs(30), "mesh not ready");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut ids = vec![];
        // A matmul with secret seeds.
        let j = nodes[0]
            .api("POST", "/v1/jobs", Some(json!({"kind": "matmul", "m": 4, "k": 6, "n": 3, "seed": seed_a})), &mut seen)
            .await;
        let id = j["id"].as_str().unwrap().to_string();
        nodes[1]
            .api(
                "POST",
                "/v1/jobs",
                Some(json!({"id": id, "kind": "matmul", "m": 4, "k": 6, "n": 3, "seed": seed_b})),
                &mut seen,
            )
            .await;
        nodes[2]
            .api("POST", "/v1/jobs", Some(json!({"id": id, "kind": "matmul", "m": 4, "k": 6, "n": 3})), &mut seen)
            .await;
        ids.push(id);
        // Training (the model stays shared: each node stores its share).
        let train = json!({"arch": "logreg", "epochs": 1, "batch": 64, "lr": 0.5, "seed": 3});
        let mut bob = train.clone();
        bob["data"] = json!(data.display().to_string());
        bob["label"] = json!("malignant");
        let j = nodes[1].api("POST", "/v1/jobs", Some(json!({"kind": "train", "train": bob})), &mut seen).await;
        let id = j["id"].as_str().unwrap().to_string();
        let rec = nodes[1].api("GET", &format!("/v1/jobs/{id}"), None, &mut seen).await;
        let mut other = train.clone();
        other["samples"] = rec["plan"]["plan"]["samples"].clone();
        other["features"] = rec["plan"]["plan"]["features"].clone();
        for n in [&nodes[0], &nodes[2]] {
            n.api("POST", "/v1/jobs", Some(json!({"id": id, "kind": "train", "train": other})), &mut seen).await;
        }
        ids.push(id);
        for id in &ids {
            for n in &nodes {
                loop {
                    let r = n.api("GET", &format!("/v1/jobs/{id}"), None, &mut seen).await;
                    match r["state"].as_str().unwrap() {
                        "done" => break,
                        "joining" | "running" => tokio::time::sleep(Duration::from_millis(50)).await,
                        s => panic!("job {id} {s}: {r}"),
                    }
                    assert!(t0.elapsed() < Duration::from_secs(120), "jobs did not finish");
                }
            }
        }
        nodes[1].api("GET", &format!("/v1/jobs/{}/result", ids[0]), None, &mut seen).await;
        for n in &nodes {
            n.api("GET", "/v1/jobs", None, &mut seen).await;
            n.api("GET", "/v1/peers", None, &mut seen).await;
            n.api("GET", "/v1/models", None, &mut seen).await;
        }
        ids
    });
    let logs: String = nodes.iter().map(|n| std::fs::read_to_string(&n.log).unwrap()).collect();
    assert!(logs.lines().count() > 100, "trace logging is on: {} lines", logs.lines().count());
    let text = logs + &seen;
    // Negative control: what is public (job ids, in logs and responses) is found by the scan.
    assert!(ids.iter().all(|id| text.matches(id.as_str()).count() >= 3));

    // The secrets of this run: every share word Alice's and Bob's nodes stored, the job seeds,
    // each node's API token and the base64 body of its private key.
    let mut words = vec![seed_a, seed_b];
    for n in &nodes[..2] {
        let shares = n.cfg.data_dir.join("shares");
        for e in std::fs::read_dir(&shares).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            words.extend(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())));
        }
    }
    // Small words (zeros, tiny values) could occur by chance; shares are uniform, so nearly all
    // are large. Insist that most are checked.
    let big: Vec<u64> = words.into_iter().filter(|&w| w > 1 << 40 && (w as i64).unsigned_abs() > 1 << 40).collect();
    assert!(big.len() > 60, "only {} share words to look for", big.len());
    for w in &big {
        for r in renderings(*w) {
            assert!(!text.contains(&r), "secret word {w:#x} appears (as {r:?})");
        }
    }
    for (n, path) in nodes.iter().zip(&paths) {
        assert!(!text.contains(&n.cfg.api_token.0), "an API token appears");
        let key = std::fs::read_to_string(path.with_file_name("node.key.pem")).unwrap();
        for line in key.lines().filter(|l| !l.starts_with("-----") && l.len() > 20) {
            assert!(!text.contains(line), "private key material appears");
        }
    }
}

/// `Debug` of every secret-bearing type prints shapes and names, never values.
#[test]
fn debug_output_of_secret_bearing_types_holds_no_values() {
    use mpc_proto::prg::{Prg, Seed};
    use mpc_proto::{AShare, PartyId, RingTensor, run_parties};
    let secret = 0x0123_4567_89ab_cdefu64;
    let leaks = |s: &str| renderings(secret).iter().any(|r| s.contains(r.as_str())) || s.contains("239");
    let share = AShare::from_share(RingTensor::from_vec(&[2], vec![secret, secret]).unwrap());
    let seed = Seed::from_bytes([239; 32]);
    for (what, text) in [
        ("AShare", format!("{share:?} {share:#?}")),
        ("Seed", format!("{seed:?} {seed:#?}")),
        ("Prg", format!("{:?}", Prg::new(&seed, 7))),
    ] {
        assert!(!leaks(&text), "{what}: {text}");
    }
    // FSS keys and every kind of comparison material: no value (a long run of digits or hex
    // digits) in their Debug output.
    {
        use mpc_proto::compare::{Method, Window, compact};
        use mpc_proto::correlations::{Correlations, GateRequest, Request, TestDealer};
        use mpc_proto::fss::{DcfKey, Relu64Gate, SignGate, dcf};
        let no_value = |what: &str, text: &str| {
            let longest = text.split(|c: char| !c.is_ascii_hexdigit()).map(str::len).max().unwrap_or(0);
            assert!(longest < 8, "{what}: {text}");
        };
        let mut rng = Prg::new(&seed, 9);
        let (s0, s1) = SignGate::keygen(32, secret, &mut rng).unwrap();
        let (r0, r1) = Relu64Gate::keygen(32, secret, &mut rng).unwrap();
        let (d0, _): (DcfKey<1>, _) = dcf::keygen(20, 12345, [secret], &mut rng).unwrap();
        for (what, text) in [
            ("SignKey", format!("{s0:?} {s1:#?}")),
            ("Relu64Key", format!("{r0:?} {r1:#?}")),
            ("DcfKey", format!("{d0:?} {d0:#?}")),
        ] {
            no_value(what, &text);
        }
        let w = Window::new(20);
        let (mut m0, mut m1) = (vec![], vec![]);
        compact::keygen(w, &[secret; 4], 1, (&[1; 4], None), &mut rng, [&mut m0, &mut m1]).unwrap();
        no_value("CompactKeys", &format!("{:?}", compact::CompactKeys::new(m0, 0, 4, 1, w, true).unwrap()));
        // Material of every method at each party, from the test dealer.
        let mut ch = mpc_proto::testing::detached_channel();
        for me in PartyId::ALL {
            let mut t = TestDealer::new(me, 3);
            for method in Method::ALL {
                let req = GateRequest { method, len: 8, bits: 20, points: 2, relu: true };
                let g = futures::executor::block_on(t.fetch(&mut ch, &Request::Gate(req))).unwrap();
                no_value("Gate", &format!("{g:?} {g:#?}"));
            }
        }
    }
    // A party mid-session (holding seeds, PRGs, dealer material).
    let out = run_parties(3, |mut p| async move {
        let x = (p.id() == PartyId::P1).then(|| RingTensor::from_vec(&[1], vec![secret]).unwrap());
        let _ = p.share_input(PartyId::P1, &[1], x.as_ref())?;
        Ok(format!("{p:?}"))
    })
    .unwrap();
    for text in out {
        assert!(!renderings(secret).iter().any(|r| text.contains(r.as_str())), "Party: {text}");
    }
    // Node configuration (API token) and job requests (input seeds).
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_consortium(dir.path(), testbed::free_addrs().unwrap(), false).unwrap();
    let cfg = Config::load(&paths[0]).unwrap();
    let text = format!("{cfg:?}");
    assert!(!text.contains(&cfg.api_token.0), "Config: {text}");
    let req = party_node::jobs::JobRequest::matmul(None, 1, 1, 1, Some(secret));
    assert!(!leaks(&format!("{req:?}")), "JobRequest: {req:?}");
}
