//! The prediction service through three `party-node run` processes and the CLI: Alice publishes
//! with a policy, Bob predicts with one command and gets the plaintext reference; an
//! organisation not allowed is refused; a quota holds across a restart (kill -9); a held job
//! waits for `approve`; a plan Bob pinned that differs from Alice's is refused before any share
//! moves; the audit log has no torn line after kill -9; the OpenAPI document lists every route.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use party_node::testbed;
use serde_json::{Value, json};

mod common;
use common::Node;

const BIN: &str = env!("CARGO_BIN_EXE_party-node");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/onnx").join(name)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("RUST_BACKTRACE", "0").output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

struct Consortium {
    _dir: tempfile::TempDir,
    root: PathBuf,
    paths: [PathBuf; 3],
    nodes: [Node; 3],
}

impl Consortium {
    async fn start() -> Consortium {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let paths = testbed::write_consortium(&root, testbed::free_addrs().unwrap(), false).unwrap();
        let nodes = [Node::spawn(&paths[0]), Node::spawn(&paths[1]), Node::spawn(&paths[2])];
        common::wait_ready(&[&nodes[0], &nodes[1], &nodes[2]], Duration::from_secs(30)).await;
        Consortium { _dir: dir, root, paths, nodes }
    }

    /// The three nodes' logs, for a failure message.
    fn logs(&self) -> String {
        ["alice", "bob", "dealer"]
            .iter()
            .zip(&self.nodes)
            .map(|(r, n)| format!("--- {r}'s log:\n{}", n.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn config(&self, i: usize) -> &str {
        self.paths[i].to_str().unwrap()
    }

    /// `party-node publish` of the network_a fixture as `name` with `extra` policy flags.
    fn publish(&self, name: &str, extra: &[&str]) -> Output {
        let model = fixture("network_a.onnx");
        let mut args = vec!["publish", "--config", self.config(0), "--model", model.to_str().unwrap(), "--name", name];
        args.extend_from_slice(extra);
        cli(&args)
    }

    /// Bob's one command; the output path.
    fn predict(&self, name: &str, out: &str) -> (Output, PathBuf) {
        let input = fixture("network_a.input.npy");
        let out = self.root.join(out);
        let o = cli(&[
            "predict",
            "--config",
            self.config(1),
            "--model",
            name,
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        (o, out)
    }

    /// Waits until Bob's node lists `name` with plan hash `hash` (offers arrive over the mesh).
    async fn offered(&self, name: &str) -> Value {
        let t0 = Instant::now();
        loop {
            let m = self.nodes[1].get("/v1/models").await;
            if let Some(v) = m["models"].as_array().unwrap().iter().find(|v| v["name"] == name) {
                return v.clone();
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "{name} never offered: {m}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn audit(&self, i: usize) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.paths[i].with_file_name("data").join("audit.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}"))).collect()
    }
}

fn rows() -> usize {
    mpc_ml::npy::read(&fixture("network_a.input.npy")).unwrap().shape()[0]
}

fn max_err(out: &Path) -> f64 {
    let got = mpc_ml::npy::read(out).unwrap();
    let want = mpc_ml::npy::read(&fixture("network_a.logits.npy")).unwrap();
    assert_eq!(got.shape(), want.shape());
    got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

#[test]
fn publish_then_predict_in_one_command_with_policies_and_audit() {
    runtime().block_on(async {
        let mut c = Consortium::start().await;
        let n = rows();
        // Publish for Bob's organisation, with a quota for three jobs' rows.
        let quota = (3 * n).to_string();
        let o = c.publish("net", &["--allow", "bob-clinic", "--quota-rows", &quota]);
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        assert!(text(&o).contains("offered to bob (\"bob-clinic\"): stored"), "{}", text(&o));
        let m = c.offered("net").await;
        assert_eq!(m["terms"]["allowed"], true, "{m}");
        assert_eq!(m["remaining_rows"], json!(3 * n), "{m}");

        // One command, outputs equal to onnxruntime's (16 fractional bits: within 2e-2).
        let (o, out) = c.predict("net", "y1.npy");
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        let err = max_err(&out);
        assert!(err < 2e-2, "max |private − onnxruntime| = {err}");
        let (o, _) = c.predict("net", "y2.npy");
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());

        // The quota is on disk: it holds across a kill -9 of Alice's node.
        c.nodes[0].restart();
        common::wait_ready(&[&c.nodes[0], &c.nodes[1], &c.nodes[2]], Duration::from_secs(30)).await;
        // Bob's node asks Alice's for his use live: wait for the answer after her restart.
        let t0 = Instant::now();
        loop {
            let m = c.offered("net").await;
            if !m["remaining_rows"].is_null() {
                assert_eq!(m["remaining_rows"], json!(n), "one job's rows left after the restart: {m}");
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "no use reported after the restart: {m}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (o, _) = c.predict("net", "y3.npy");
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        let (o, out4) = c.predict("net", "y4.npy");
        assert!(!o.status.success(), "the fourth job exceeds the quota");
        let msg = text(&o);
        assert!(msg.contains(&format!("quota: {} rows allowed, {} used, {n} requested", 3 * n, 3 * n)), "{msg}");
        assert!(!out4.exists(), "a refused job writes no output");

        // An organisation not on the allow list is refused, naming the rule.
        let o = c.publish("other", &["--allow", "carol-labs"]);
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        c.offered("other").await;
        let (o, _) = c.predict("other", "y5.npy");
        assert!(!o.status.success());
        assert!(text(&o).contains("allow: \"other\" is not offered to \"bob-clinic\""), "{}", text(&o));

        // Every node audited: Alice decided 5 proposals (4 accepted, 1 quota, 1 allow → 6).
        let alice = c.audit(0);
        let decided: Vec<&str> =
            alice.iter().filter(|e| e["event"] == "decided").map(|e| e["decision"].as_str().unwrap()).collect();
        assert_eq!(decided, ["accepted", "accepted", "accepted", "refused", "refused"], "{alice:#?}");
        let outcomes = alice.iter().filter(|e| e["event"] == "outcome" && e["decision"] == "done").count();
        assert_eq!(outcomes, 3, "{alice:#?}");
        assert!(alice.iter().all(|e| e["peer"] == "bob-clinic" && e["kind"] == "predict"));
        assert!(alice.iter().filter(|e| e["event"] == "outcome").all(|e| e["bytes"].as_u64().unwrap() > 0));
        let dealer = c.audit(2);
        assert!(dealer.iter().any(|e| e["event"] == "decided" && e["decision"] == "accepted"), "{dealer:#?}");
        // `party-node audit` prints the same log.
        let o = cli(&["audit", "--config", c.config(0)]);
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        assert!(text(&o).contains("quota: "), "{}", text(&o));
        // No share value, path or token in the log.
        let raw = std::fs::read_to_string(c.paths[0].with_file_name("data").join("audit.jsonl")).unwrap();
        assert!(!raw.contains(".npy") && !raw.contains(&c.nodes[0].cfg.api_token.0), "{raw}");
    });
}

/// An `.npy` of `int16` values (a dtype `predict` does not take), written by hand.
fn write_int16_npy(path: &Path, shape: &[usize]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!("{{'descr': '<i2', 'fortran_order': False, 'shape': ({},), }}", dims.join(", "));
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + 2 * shape.iter().product::<usize>(), 0);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bad_inputs_are_refused_on_bobs_node_with_their_place_before_any_share_moves() {
    runtime().block_on(async {
        let c = Consortium::start().await;
        let o = c.publish("net", &["--allow", "bob-clinic"]);
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        c.offered("net").await;
        let good = mpc_ml::npy::read(&fixture("network_a.input.npy")).unwrap();
        let with = |row: usize, col: usize, v: f64, name: &str| {
            let mut a = good.clone();
            a[[row, col]] = v;
            let path = c.root.join(name);
            mpc_ml::npy::write(&path, &a).unwrap();
            path
        };
        let int16 = c.root.join("int16.npy");
        write_int16_npy(&int16, good.shape());
        let cases = [
            (
                with(2, 5, f64::NAN, "nan.npy"),
                "the value at row 2, column 5 is NaN: NaN and infinite values are refused",
            ),
            (
                with(0, 3, f64::INFINITY, "inf.npy"),
                "the value at row 0, column 3 is inf: NaN and infinite values are refused",
            ),
            (
                with(1, 7, 1e30, "big.npy"),
                "the value 1000000000000000000000000000000 at row 1, column 7 does not fit the model's fixed point (31 \
                 integer and 16 fractional bits: |x| < 2147483648): scale the data: no fixed point of 47 bits holds it",
            ),
            (with(1, 7, -5e9, "large.npy"), "publish it with --frac-bits 13 or fewer"),
            (int16, "dtype int16 (\"<i2\") is not accepted"),
        ];
        for (input, want) in &cases {
            let out = c.root.join("never.npy");
            let o = cli(&[
                "predict",
                "--config",
                c.config(1),
                "--model",
                "net",
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ]);
            let msg = text(&o);
            assert!(!o.status.success(), "{input:?} was accepted: {msg}");
            assert!(msg.contains(want), "{input:?}: {msg}");
            assert!(!out.exists(), "{input:?}: a refused input writes no output");
        }
        // Refused on Bob's node: no proposal reached Alice's or the dealer's node, no job ran.
        for i in [0, 2] {
            let decided = c.audit(i).into_iter().filter(|e| e["event"] == "decided").count();
            assert_eq!(decided, 0, "node {i} decided a proposal:\n{}", c.logs());
            let jobs = c.nodes[i].get("/v1/jobs").await;
            assert_eq!(jobs["jobs"].as_array().map_or(0, Vec::len), 0, "node {i}: {jobs}");
        }
    });
}

#[test]
fn a_held_job_waits_for_approve_and_a_refusal_reaches_bob() {
    runtime().block_on(async {
        let c = Consortium::start().await;
        let o = c.publish("net", &["--allow", "*", "--approval", "manual"]);
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        c.offered("net").await;
        let input = fixture("network_a.input.npy");
        let out = c.root.join("held.npy");
        let mut bob = Command::new(BIN)
            .args(["predict", "--config", c.config(1), "--model", "net", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The proposal shows on Alice's node; Bob's job is held, nothing has run.
        let t0 = Instant::now();
        let held = loop {
            let p = c.nodes[0].get("/v1/proposals").await;
            if let Some(h) = p["proposals"].as_array().unwrap().first() {
                break h.clone();
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "no held proposal");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let id = held["job"].as_str().unwrap().to_string();
        assert_eq!(held["peer"], "bob-clinic");
        let t0 = Instant::now();
        while c.nodes[1].get(&format!("/v1/jobs/{id}")).await["state"] != "held" {
            assert!(t0.elapsed() < Duration::from_secs(20));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!out.exists());
        // Still held a while later: it waits for a person.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(bob.try_wait().unwrap().is_none(), "bob's command waits while the job is held");
        let o = cli(&["approve", "--config", c.config(0), &id]);
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        let status = tokio::task::spawn_blocking(move || bob.wait_with_output().unwrap()).await.unwrap();
        assert!(status.status.success(), "{}", text(&status));
        assert!(max_err(&out) < 2e-2);

        // A refusal by hand reaches Bob with the reason.
        let out2 = c.root.join("refused.npy");
        let alice_cfg = c.config(0).to_string();
        let refuser = std::thread::spawn(move || {
            let t0 = Instant::now();
            loop {
                let o = cli(&["proposals", "--config", &alice_cfg]);
                let s = String::from_utf8_lossy(&o.stdout).to_string();
                if let Some(id) = s.split_whitespace().next().filter(|w| w.len() == 32) {
                    return cli(&["refuse", "--config", &alice_cfg, id, "--reason", "not this week"]);
                }
                assert!(t0.elapsed() < Duration::from_secs(30), "no proposal to refuse");
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let bob = Command::new(BIN)
            .args(["predict", "--config", c.config(1), "--model", "net", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out2)
            .env("RUST_BACKTRACE", "0")
            .output();
        let o = bob.unwrap();
        let r = refuser.join().unwrap();
        assert!(r.status.success(), "{}", text(&r));
        assert!(!o.status.success());
        assert!(text(&o).contains("refused by hand: not this week"), "{}", text(&o));
        assert!(!out2.exists());
    });
}

#[test]
fn a_plan_bob_pinned_that_differs_is_refused_before_any_share_moves() {
    runtime().block_on(async {
        let c = Consortium::start().await;
        let plan = c.root.join("net.plan.json");
        let o = c.publish("net", &["--allow", "bob-clinic", "--plan-out", plan.to_str().unwrap()]);
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        c.offered("net").await;
        // Bob pins this version by hand; Alice then publishes another (20 fractional bits).
        let o = cli(&["register", "--config", c.config(1), "--name", "net", "--plan", plan.to_str().unwrap()]);
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        let o = c.publish("net", &["--allow", "bob-clinic", "--frac-bits", "20"]);
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        let t0 = Instant::now();
        while c.offered("net").await["offered_plan_hash"].is_null() {
            assert!(t0.elapsed() < Duration::from_secs(20));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (o, out) = c.predict("net", "y.npy");
        assert!(!o.status.success());
        let msg = text(&o);
        assert!(msg.contains("plan: bob's plan for \"net\""), "{msg}");
        assert!(
            msg.contains("frac_bits\":16") && msg.contains("frac_bits\":20"),
            "the differing field is named: {msg}"
        );
        assert!(!out.exists());
        // Nothing moved: Bob's job record shows no bytes, and Alice never recorded a job.
        let jobs = c.nodes[1].get("/v1/jobs").await;
        let job = jobs["jobs"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(job["state"], "refused", "{job}");
        assert_eq!(job["wire_sent"], 0);
        assert_eq!(c.nodes[0].get("/v1/jobs").await["jobs"], json!([]));
    });
}

#[test]
fn the_audit_log_has_no_torn_line_after_kill_9() {
    runtime().block_on(async {
        let c = Consortium::start().await;
        let o = c.publish("net", &["--allow", "nobody-else"]);
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        c.offered("net").await;
        let input = fixture("network_a.input.npy").display().to_string();
        let out = c.root.join("x.npy").display().to_string();
        let body = json!({"kind": "predict", "model": "net", "input": input, "output": out});
        // Refused proposals as fast as Bob's node sends them; Alice's node is killed mid-stream,
        // three times.
        let mut c = c;
        for _ in 0..3 {
            let t0 = Instant::now();
            let mut sent = 0;
            while t0.elapsed() < Duration::from_millis(400) {
                let r = c.nodes[1].post("/v1/requests", body.clone()).await;
                assert!(r.status == 201 || r.status == 503, "{:?}", r.body);
                sent += 1;
            }
            assert!(sent > 0);
            c.nodes[0].kill9();
            // Whatever the kill cut short, the lines before it are whole.
            let before = c.audit(0);
            assert!(!before.is_empty());
            c.nodes[0] = Node::spawn(&c.paths[0]);
            common::wait_ready(&[&c.nodes[0], &c.nodes[1], &c.nodes[2]], Duration::from_secs(30)).await;
        }
        let text = std::fs::read_to_string(c.paths[0].with_file_name("data").join("audit.jsonl")).unwrap();
        assert!(text.ends_with('\n'), "the log ends with a whole line");
        for l in text.lines() {
            let e: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}"));
            assert_eq!(e["decision"], "refused", "{e}");
        }
    });
}

/// Resolves `{"$ref": "#/components/schemas/X"}` in `doc`.
fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => s,
    }
}

#[test]
fn the_openapi_document_describes_the_served_api() {
    runtime().block_on(async {
        let c = Consortium::start().await;
        let o = c.publish("net", &["--allow", "bob-clinic"]);
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        c.offered("net").await;
        let (o, _) = c.predict("net", "y.npy");
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        let job = c.nodes[1].get("/v1/jobs").await["jobs"][0]["id"].as_str().unwrap().to_string();
        let doc = c.nodes[1].get("/v1/openapi.json").await;
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 15, "{}", paths.len());
        let mut checked = 0;
        for (path, ops) in paths {
            for (method, op) in ops.as_object().unwrap() {
                let concrete = path.replace("{id}", &job);
                let reply = match method.as_str() {
                    "get" => c.nodes[1].request("GET", &concrete, None).await.unwrap(),
                    // An empty body: the route exists and says what is wrong with the body.
                    "post" => c.nodes[1].request("POST", &concrete, Some(json!({}))).await.unwrap(),
                    m => panic!("undocumented method {m}"),
                };
                let err = reply.body["error"].as_str().unwrap_or("");
                assert!(!err.starts_with("no such route"), "{method} {path} is documented but not served");
                if method == "post" {
                    assert!(op["requestBody"].is_object() || path.contains("{id}"), "{path} documents no body");
                    continue;
                }
                if reply.status != 200 {
                    continue;
                }
                // Every property the schema requires is in the live answer, and the answer has
                // no property the schema does not describe.
                let Some(schema) = op["responses"]["200"]["content"]["application/json"].get("schema") else {
                    continue;
                };
                let schema = resolve(&doc, schema);
                let props = schema["properties"].as_object().unwrap_or_else(|| panic!("{path}: {schema}"));
                for r in schema["required"].as_array().into_iter().flatten() {
                    assert!(reply.body.get(r.as_str().unwrap()).is_some(), "{path}: no {r} in {}", reply.body);
                }
                for k in reply.body.as_object().unwrap().keys() {
                    assert!(props.contains_key(k), "{path}: {k} is not in the schema");
                }
                checked += 1;
            }
        }
        assert!(checked >= 7, "{checked} answers checked");
        // An undocumented route is not served.
        assert_eq!(c.nodes[1].request("GET", "/v1/nothing", None).await.unwrap().status, 404);
        // The request bodies the CLI sends deserialise as the schema's types: the schema of
        // /v1/requests names the three kinds.
        let req = resolve(
            &doc,
            &doc["paths"]["/v1/requests"]["post"]["requestBody"]["content"]["application/json"]["schema"],
        );
        let kinds = req.to_string();
        for k in ["predict", "train", "analyze"] {
            assert!(kinds.contains(&format!("\"{k}\"")), "{kinds}");
        }
    });
}

#[test]
fn a_job_submitted_by_hand_with_other_parameters_names_the_fields_that_differ() {
    runtime().block_on(async {
        let c = Consortium::start().await;
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data/breast_cancer.csv");
        let data = data.canonicalize().unwrap();
        let (samples, features, _) = party_node::ml::train_shape(&data, "malignant", "logreg", 0.2, 1).unwrap();
        let train = |epochs: usize, bob: bool| {
            let mut t =
                json!({"arch": "logreg", "epochs": epochs, "batch": 32, "lr": 0.1, "seed": 1, "test_split": 0.2});
            if bob {
                t["data"] = json!(data.display().to_string());
                t["label"] = json!("malignant");
            } else {
                t["samples"] = json!(samples);
                t["features"] = json!(features);
            }
            t
        };
        let r = c.nodes[1].post("/v1/jobs", json!({"kind": "train", "train": train(10, true)})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        // Alice typed 2 epochs; the dealer got it right.
        for (i, epochs) in [(0, 2), (2, 10)] {
            let r =
                c.nodes[i].post("/v1/jobs", json!({"id": id, "kind": "train", "train": train(epochs, false)})).await;
            assert_eq!(r.status, 201, "{:?}", r.body);
        }
        let alice = common::wait_final(&c.nodes[0], &id, Duration::from_secs(60)).await;
        assert_eq!(alice["state"], "failed");
        let e = alice["error"].as_str().unwrap();
        assert!(e.contains("epochs 2 vs 10"), "alice's error names the field and both values: {e}");
        let bob = common::wait_final(&c.nodes[1], &id, Duration::from_secs(60)).await;
        let e = bob["error"].as_str().unwrap();
        assert!(e.contains("epochs 10 vs 2") || e.contains("alice (P0) stopped the job"), "{e}");
    });
}

/// Appends `text` to the config at `path`.
fn append(path: &Path, text: &str) {
    let mut s = std::fs::read_to_string(path).unwrap();
    s.push_str(text);
    std::fs::write(path, s).unwrap();
}

#[test]
fn node_policies_hold_training_and_bound_the_dealers_budget() {
    runtime().block_on(async {
        let mut c = Consortium::start().await;
        // Alice's organisation approves training by hand; the dealer joins one job a day.
        append(&c.paths[0], "\n[policy]\ntrain = \"manual\"\n");
        append(&c.paths[2], "\n[policy]\njobs_per_day = 1\n");
        c.nodes[0].restart();
        c.nodes[2].restart();
        common::wait_ready(&[&c.nodes[0], &c.nodes[1], &c.nodes[2]], Duration::from_secs(30)).await;

        // Training is held on Alice's node; refused by hand, it never counts against the budget.
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data/breast_cancer.csv");
        let train = json!({"kind": "train", "arch": "logreg", "epochs": 1, "batch": 32, "lr": 0.1,
                           "data": data.canonicalize().unwrap().display().to_string(), "label": "malignant"});
        let r = c.nodes[1].post("/v1/requests", train).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        let t0 = Instant::now();
        let job = loop {
            let j = c.nodes[1].get(&format!("/v1/jobs/{id}")).await;
            if j["state"] == "held" {
                break j;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "not held: {j}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(job["step"].as_str().unwrap().contains("[policy] train = \"manual\""), "{job}");
        assert_eq!(job["decisions"]["dealer"], "accepted", "{job}");
        let r =
            c.nodes[0].post(&format!("/v1/proposals/{id}/refuse"), json!({"reason": "no training this quarter"})).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let j = common::wait_final(&c.nodes[1], &id, Duration::from_secs(20)).await;
        assert_eq!(j["state"], "refused");
        assert!(j["error"].as_str().unwrap().contains("refused by hand: no training this quarter"), "{j}");
        assert_eq!(c.nodes[0].get("/v1/proposals").await["proposals"], json!([]));

        // One prediction fits the dealer's budget, the next does not.
        let o = c.publish("net", &["--allow", "bob-clinic"]);
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        c.offered("net").await;
        let (o, _) = c.predict("net", "y1.npy");
        assert!(o.status.success(), "{}\n{}", text(&o), c.logs());
        let (o, _) = c.predict("net", "y2.npy");
        assert!(!o.status.success());
        let msg = text(&o);
        assert!(
            msg.contains("refused by dealer (P2, \"dealer-co\"): budget:")
                && msg.contains("1 jobs a day ([policy] jobs_per_day), 1 joined today"),
            "{msg}"
        );
        // The dealer's audit log has the accepted job, its outcome and the refusal.
        let decided: Vec<String> = c
            .audit(2)
            .iter()
            .filter(|e| e["event"] == "decided")
            .map(|e| e["decision"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(decided, ["accepted", "cancelled", "accepted", "refused"], "{:#?}", c.audit(2));
    });
}
