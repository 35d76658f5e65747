//! A `party-node` daemon started as a child process, for the process-level tests (multiprocess,
//! hostile, hygiene, soak): spawn from a config, call its API, kill or restart it, read its log
//! and RSS. Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use party_node::client::{Reply, call};
use party_node::config::Config;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_party-node");

/// A running node; killed (SIGKILL) and reaped when dropped.
pub(crate) struct Node {
    pub(crate) child: Child,
    pub(crate) cfg: Config,
    /// Its config file.
    pub(crate) path: PathBuf,
    /// Where its stderr (the log) goes.
    pub(crate) log: PathBuf,
    env: Vec<(String, String)>,
}

impl Node {
    /// Starts `party-node run --config path`, appending its log to `node.log` beside the config
    /// (a restarted node keeps one log).
    pub(crate) fn spawn(path: &Path) -> Node {
        Self::start(path, path.with_file_name("node.log"), vec![], true)
    }

    /// As [`Node::spawn`], with a fresh log file `log_name` beside the config and extra
    /// environment variables.
    pub(crate) fn spawn_with(path: &Path, log_name: &str, env: &[(&str, &str)]) -> Node {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self::start(path, path.with_file_name(log_name), env, false)
    }

    fn start(path: &Path, log: PathBuf, env: Vec<(String, String)>, append: bool) -> Node {
        let cfg = Config::load(path).unwrap();
        let file = std::fs::OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(&log);
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(path)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(file.unwrap())
            .spawn()
            .unwrap();
        Node { child, cfg, path: path.to_path_buf(), log, env }
    }

    /// SIGKILLs the node and starts it again on the same config, appending to the same log.
    pub(crate) fn restart(&mut self) {
        self.kill9();
        *self = Self::start(&self.path.clone(), self.log.clone(), std::mem::take(&mut self.env), true);
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    pub(crate) fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// One API request with the node's token.
    pub(crate) async fn request(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Reply> {
        call(self.cfg.api_listen, Some(&self.cfg.api_token.0), method, path, body).await
    }

    /// One API request whose reply must be a success; its body.
    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.request(method, path, body).await?.ok()
    }

    /// `GET path`, which must succeed.
    pub(crate) async fn get(&self, path: &str) -> Value {
        self.call("GET", path, None).await.unwrap()
    }

    /// `POST path` with a JSON body; the reply, whatever its status.
    pub(crate) async fn post(&self, path: &str, body: Value) -> Reply {
        self.request("POST", path, Some(body)).await.unwrap()
    }

    /// Resident set size in KiB (0 once the process is gone).
    pub(crate) fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The log so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until every node reports its mesh ready, failing with the laggard's log after `within`.
pub(crate) async fn wait_ready(nodes: &[&Node], within: Duration) {
    let t0 = Instant::now();
    for n in nodes {
        while !n.call("GET", "/v1/health", None).await.map(|h| h["mesh_ready"] == json!(true)).unwrap_or(false) {
            assert!(t0.elapsed() < within, "mesh not ready after {within:?}; log:\n{}", n.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Polls job `id` on `n` until it is done, failed or interrupted; its record. Fails the test
/// with the node's log after `within`.
pub(crate) async fn wait_final(n: &Node, id: &str, within: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let j = n.get(&format!("/v1/jobs/{id}")).await;
        if ["done", "failed", "interrupted", "refused"].contains(&j["state"].as_str().unwrap()) {
            return j;
        }
        assert!(t0.elapsed() < within, "job {id} not final after {within:?}: {j}\nlog:\n{}", n.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A seeded `m×k · k×n` matmul job on Alice, Bob and the dealer (`nodes` in party order): each
/// submits its part, all three finish, and Bob's result is the product of the two private
/// inputs. Its id.
pub(crate) async fn run_matmul_job(nodes: &[&Node], m: usize, k: usize, n: usize) -> String {
    let r = nodes[0].post("/v1/jobs", json!({"kind": "matmul", "m": m, "k": k, "n": n, "seed": 11})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = nodes[1].post("/v1/jobs", json!({"id": id, "kind": "matmul", "m": m, "k": k, "n": n, "seed": 22})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = nodes[2].post("/v1/jobs", json!({"id": id, "kind": "matmul", "m": m, "k": k, "n": n})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    for node in nodes {
        let j = wait_final(node, &id, Duration::from_secs(60)).await;
        assert_eq!(j["state"], "done", "{j}");
    }
    let res = nodes[1].get(&format!("/v1/jobs/{id}/result")).await;
    let seeded = party_node::jobs::seeded_matrix;
    let want = seeded(22, m, k).matmul(&seeded(11, k, n)).unwrap();
    let want: Vec<i64> = want.as_slice().iter().map(|&v| v as i64).collect();
    assert_eq!(res["shape"], json!([m, n]));
    assert_eq!(res["values"], json!(want), "Bob's result is the product of the two private inputs");
    id
}
