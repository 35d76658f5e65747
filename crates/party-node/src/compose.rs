//! `party-node compose …`: the consortium in containers (deploy/docker-compose.yml).
//!
//! `compose init` writes three self-contained node directories addressed by host names (the
//! compose services `alice`, `bob`, `dealer`), one per party volume. `compose demo --role R`
//! drives party R's node through the demo from a container that shares the node's network
//! namespace, so it reaches the control API on 127.0.0.1 and the API stays loopback-only. The
//! three drivers never talk to each other's nodes: like three organisations, they exchange only
//! public files — Alice's plan and Bob's job id and batch size — through a shared directory
//! (`--exchange`, a volume standing in for e-mail).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Subcommand;
use mpc_ml::{OutputPolicy, npy};
use ndarray::{Axis, Slice};
use party_node::client;
use party_node::config::{
    ApiSection, Config, ConfigFile, NodeSection, PartySection, PeerAddr, Role, TrustMode, TrustSection, random_token,
};
use party_node::identity;
use party_node::jobs::JobId;
use party_node::testbed::NAMES;
use serde_json::json;

/// `party-node compose …`.
#[derive(Subcommand)]
pub(crate) enum ComposeAction {
    /// Write identities and configs for three nodes reachable by host names: OUT/alice,
    /// OUT/bob, OUT/dealer, each self-contained (peers' pinned certificates under peers/), so
    /// each directory can be mounted alone in its party's container. Does nothing if all three
    /// already exist.
    Init {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Host names of alice, bob and the dealer (as their peers resolve them).
        #[arg(long, value_delimiter = ',', default_value = "alice,bob,dealer")]
        hosts: Vec<String>,
        /// UDP port of every node.
        #[arg(long, default_value_t = 7000)]
        port: u16,
        /// Control API port of every node (on 127.0.0.1 inside its container).
        #[arg(long, default_value_t = 7100)]
        api_port: u16,
        /// Also empty this exchange directory (files left by an earlier run of the demo).
        #[arg(long)]
        clear_exchange: Option<PathBuf>,
    },
    /// Drive one party's node through the demo: Alice publishes the MNIST CNN, Bob and the
    /// dealer register its plan, Bob predicts on bundled images; Bob prints accuracy and
    /// agreement with plaintext and fails on disagreement.
    Demo {
        /// This driver's party.
        #[arg(long)]
        role: Role,
        /// The party's node config (API address and token).
        #[arg(long)]
        config: PathBuf,
        /// Directory shared by the three drivers for the public plan and job ids.
        #[arg(long)]
        exchange: PathBuf,
        /// Directory with mnist_cnn.onnx, mnist_cnn.input.npy and mnist_cnn.labels.npy.
        #[arg(long, default_value = "/fixtures")]
        fixtures: PathBuf,
        /// Bob: how many of the bundled test images to classify (1-100).
        #[arg(long, default_value_t = 24)]
        images: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

/// Runs a `compose` action.
pub(crate) fn run(action: ComposeAction) -> anyhow::Result<()> {
    match action {
        ComposeAction::Init { out, hosts, port, api_port, clear_exchange } => {
            if let Some(dir) = clear_exchange {
                clear_dir(&dir)?;
            }
            init(&out, &hosts, port, api_port)
        }
        ComposeAction::Demo { role, config, exchange, fixtures, images, timeout } => {
            let cfg = Config::load(&config)?;
            ensure!(cfg.role() == role, "--role {role} but {} is the config of {}", config.display(), cfg.role());
            let d = Driver { cfg, exchange, deadline: Instant::now() + Duration::from_secs(timeout) };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(d.run(&fixtures, images))
        }
    }
}

fn clear_dir(dir: &Path) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) }
            .with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

fn init(out: &Path, hosts: &[String], port: u16, api_port: u16) -> anyhow::Result<()> {
    ensure!(hosts.len() == 3, "--hosts needs three names (alice,bob,dealer), got {}", hosts.len());
    let addrs: Vec<PeerAddr> = hosts
        .iter()
        .map(|h| format!("{h}:{port}").parse::<PeerAddr>().with_context(|| format!("--hosts {h}")))
        .collect::<anyhow::Result<_>>()?;
    let tomls: Vec<PathBuf> = Role::ALL.iter().map(|r| out.join(r.as_str()).join("node.toml")).collect();
    let present = tomls.iter().filter(|p| p.exists()).count();
    if present == 3 {
        println!("consortium in {} already initialised; keeping it", out.display());
        return Ok(());
    }
    ensure!(
        present == 0,
        "{} holds a partial consortium ({present} of 3 node.toml): remove it (docker-compose down -v) and start over",
        out.display()
    );
    let mut certs = Vec::new();
    for role in Role::ALL {
        let d = out.join(role.as_str());
        std::fs::create_dir_all(d.join("peers")).with_context(|| format!("creating {}", d.display()))?;
        let id = identity::self_signed(NAMES[role.party().index()])?;
        identity::write_new(&d.join("node.key.pem"), &id.key_pem, true)?;
        identity::write_new(&d.join("node.cert.pem"), &id.cert_pem, false)?;
        certs.push(id.cert_pem);
    }
    for me in Role::ALL {
        let d = out.join(me.as_str());
        let mut parties = Vec::new();
        for r in Role::ALL {
            let i = r.party().index();
            let cert = if r == me {
                PathBuf::from("node.cert.pem")
            } else {
                // Each node directory carries copies of its peers' certificates: it is mounted
                // alone in its container, as it would sit alone on its organisation's machine.
                let rel = PathBuf::from("peers").join(format!("{r}.cert.pem"));
                identity::write_new(&d.join(&rel), &certs[i], false)?;
                rel
            };
            parties.push(PartySection { role: r, name: NAMES[i].into(), address: addrs[i].clone(), cert: Some(cert) });
        }
        let file = ConfigFile {
            node: NodeSection {
                role: me,
                listen: None,
                cert: "node.cert.pem".into(),
                key: "node.key.pem".into(),
                data_dir: "data".into(),
            },
            api: ApiSection { listen: ([127, 0, 0, 1], api_port).into(), token: random_token() },
            trust: TrustSection { mode: TrustMode::Pinned, ca: None },
            consortium: Default::default(),
            parties,
            limits: Default::default(),
            link: Default::default(),
            policy: Default::default(),
        };
        let text = toml::to_string_pretty(&file).context("serialising the config")?;
        identity::write_new(&d.join("node.toml"), &text, true)?;
    }
    for p in &tomls {
        Config::load(p)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

struct Driver {
    cfg: Config,
    exchange: PathBuf,
    deadline: Instant,
}

const MODEL: &str = "mnist";

impl Driver {
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        client::call(self.cfg.api_listen, Some(&self.cfg.api_token.0), method, path, body)
            .await?
            .ok()
            .with_context(|| format!("{}'s node: {method} {path}", self.cfg.role()))
    }

    fn say(&self, msg: impl std::fmt::Display) {
        println!("[{}] {msg}", self.cfg.role());
    }

    fn check_deadline(&self, what: &str) -> anyhow::Result<()> {
        ensure!(Instant::now() < self.deadline, "{} driver: gave up waiting for {what}", self.cfg.role());
        Ok(())
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        loop {
            let r = client::call(self.cfg.api_listen, Some(&self.cfg.api_token.0), "GET", "/v1/health", None).await;
            if let Ok(r) = r
                && r.status == 200
                && r.body["mesh_ready"] == json!(true)
            {
                return Ok(());
            }
            self.check_deadline("the node and its two peers (mesh_ready)")?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for a file another driver publishes in the exchange directory.
    async fn wait_file(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        let path = self.exchange.join(name);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()));
            }
            self.check_deadline(&path.display().to_string())?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Publishes a file atomically (written aside, then renamed) for the other drivers.
    fn put_file(&self, name: &str, v: &serde_json::Value) -> anyhow::Result<()> {
        let path = self.exchange.join(name);
        let tmp = self.exchange.join(format!(".{name}.{}", self.cfg.role()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(v)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
    }

    async fn wait_job(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        loop {
            let r = self.call("GET", &format!("/v1/jobs/{id}"), None).await?;
            match r["state"].as_str() {
                Some("done") => return Ok(r),
                Some(s @ ("failed" | "interrupted" | "refused")) => {
                    bail!("job {id} {s} on {}'s node: {}", self.cfg.role(), r["error"].as_str().unwrap_or("no reason"))
                }
                _ => {
                    self.check_deadline(&format!("job {id}"))?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn run(&self, fixtures: &Path, images: usize) -> anyhow::Result<()> {
        let role = self.cfg.role();
        self.say("waiting for the node and its QUIC connections to the two peers…");
        self.wait_ready().await?;
        self.say("mesh up (mutual TLS with pinned certificates)");
        let model_path = fixtures.join("mnist_cnn.onnx");
        match role {
            Role::Alice => {
                // Offered to Bob's organisation only, with a quota; her node sends the public
                // plan to Bob's and the dealer's nodes over the mesh.
                let bob = self.cfg.parties[1].name.clone();
                let published = self
                    .call(
                        "POST",
                        "/v1/models",
                        Some(json!({"name": MODEL, "path": model_path.display().to_string(), "output": "label",
                                    "policy": {"allow": [bob], "quota_rows": 1000}})),
                    )
                    .await?;
                let offered: Vec<String> = published["offered"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        format!(
                            "{} {}",
                            d["role"].as_str().unwrap_or("?"),
                            if d["delivered"] == true { "stored it" } else { "missed it" }
                        )
                    })
                    .collect();
                self.say(format!(
                    "published {} as {MODEL:?} for {bob:?} (quota 1000 rows): {}",
                    model_path.display(),
                    offered.join(", ")
                ));
            }
            Role::Bob | Role::Dealer => {}
        }
        if role != Role::Bob {
            // Nothing to do per prediction: the node decides on Bob's proposal by its policy.
            // The driver only reports the job Bob's driver announces.
            let job = self.wait_file("job.json").await?;
            let id = job["id"].as_str().context("job.json has no id")?.to_string();
            self.say(format!("bob's node proposed job {id}; this node decides by its policy"));
            loop {
                if self.call("GET", &format!("/v1/jobs/{id}"), None).await.is_ok() {
                    break;
                }
                self.check_deadline(&format!("job {id}"))?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.wait_job(&id).await?;
            self.say(format!("job {id} done"));
            return Ok(());
        }
        self.bob(fixtures, &model_path, images).await
    }

    async fn bob(&self, fixtures: &Path, model_path: &Path, images: usize) -> anyhow::Result<()> {
        ensure!((1..=100).contains(&images), "--images must be between 1 and 100 (the bundled test set)");
        let read = |name: &str| {
            let p = fixtures.join(name);
            npy::read(&p).with_context(|| format!("reading {}", p.display()))
        };
        let x = read("mnist_cnn.input.npy")?.slice_axis(Axis(0), Slice::from(0..images)).to_owned();
        let labels = read("mnist_cnn.labels.npy")?;
        // Bob's files live in his volume, where his node (same path, other container) reads them.
        let dir = self.cfg.path.parent().unwrap_or(Path::new(".")).join("demo");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tag = JobId::random().to_string();
        let input = dir.join(format!("{tag}.input.npy"));
        let output = dir.join(format!("{tag}.output.npy"));
        npy::write(&input, &x)?;
        let input = std::fs::canonicalize(&input)?;
        let output = std::fs::canonicalize(&dir)?.join(output.file_name().expect("file name"));
        // Alice's offer reaches Bob's node over the mesh.
        loop {
            let m = self.call("GET", "/v1/models", None).await?;
            if m["models"].as_array().into_iter().flatten().any(|m| m["name"] == MODEL) {
                break;
            }
            self.check_deadline("alice's offer")?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.say(format!("alice offers {MODEL:?}; predicting {images} private images with one request"));
        let t0 = Instant::now();
        let created = self
            .call(
                "POST",
                "/v1/requests",
                Some(json!({"kind": "predict", "model": MODEL,
                            "input": input.display().to_string(), "output": output.display().to_string()})),
            )
            .await?;
        let id = created["id"].as_str().context("no job id")?.to_string();
        self.put_file("job.json", &json!({"id": id}))?;
        let rec = self.wait_job(&id).await?;
        let secs = t0.elapsed().as_secs_f64();
        let got: Vec<usize> = crate::ml_read_output(&output)?.iter().map(|&v| v as usize).collect();
        // The check needs the model, which a real Bob never has: this image bundles it for the demo.
        let want: Vec<usize> =
            crate::local::plaintext(model_path, &input, OutputPolicy::Label)?.iter().map(|&v| v as usize).collect();
        let truth: Vec<usize> = labels.iter().take(images).map(|&v| v as usize).collect();
        ensure!(got.len() == images, "bob's output has {} rows, expected {images}", got.len());
        let agree = got.iter().zip(&want).filter(|(a, b)| a == b).count();
        let correct = got.iter().zip(&truth).filter(|(a, b)| a == b).count();
        let digits = |v: &[usize]| v.iter().take(32).map(|d| d.to_string()).collect::<Vec<_>>().join(" ");
        println!("bob learns only the predicted digit of each image (output policy: label):");
        println!("  predicted: {}", digits(&got));
        println!("  true:      {}", digits(&truth));
        println!("  accuracy {correct}/{images}; agreement with plaintext inference {agree}/{images}");
        println!(
            "  wall time {secs:.2} s for the job; {} rounds, {} bytes on the wire from bob",
            rec["total"]["rounds"].as_u64().unwrap_or(0),
            rec["wire_sent"].as_u64().unwrap_or(0)
        );
        ensure!(agree == images, "private predictions disagree with plaintext on {} images", images - agree);
        println!("DEMO OK");
        Ok(())
    }
}
