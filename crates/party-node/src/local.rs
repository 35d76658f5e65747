//! `party-node local …` and `party-node demo`: a consortium on this machine — three `party-node
//! run` processes (two in mode "2pc": no dealer) talking QUIC with mutual TLS over loopback —
//! driven through their control APIs exactly as the organisations would drive their own nodes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use mpc_ml::{OutputPolicy, onnx};
use ndarray::{ArrayD, Axis};
use party_node::client;
use party_node::config::{Config, Mode};
use party_node::jobs::JobId;
use party_node::testbed;
use serde_json::json;

const ROLES: [&str; 3] = ["alice", "bob", "dealer"];

/// The running nodes (alice, bob and, with a dealer, the dealer); killed (by their PIDs) when
/// dropped.
pub(crate) struct Consortium {
    dir: PathBuf,
    children: Vec<Child>,
    configs: Vec<Config>,
    keep: bool,
}

impl Drop for Consortium {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_addr(udp: bool) -> anyhow::Result<SocketAddr> {
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?
    })
}

impl Consortium {
    /// Writes identities and configs in a fresh temporary directory and starts the nodes of
    /// `mode` (three, or two without a dealer).
    pub(crate) fn start(keep: bool, mode: Mode) -> anyhow::Result<Consortium> {
        let mut b = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("OS randomness");
        let dir = std::env::temp_dir().join(format!("membrane-local-{}", u64::from_le_bytes(b)));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let addrs = testbed::Addrs {
            udp: [free_addr(true)?, free_addr(true)?, free_addr(true)?],
            api: [free_addr(false)?, free_addr(false)?, free_addr(false)?],
        };
        let paths = testbed::write_mode(&dir, addrs, None, testbed::NAMES, mode)?;
        let exe = std::env::current_exe().context("locating the party-node binary")?;
        let mut c = Consortium { dir: dir.clone(), children: vec![], configs: vec![], keep };
        for (role, path) in ROLES.iter().zip(&paths) {
            let log = std::fs::File::create(dir.join(format!("{role}.log")))?;
            let mut cmd = Command::new(&exe);
            let child = cmd
                .args(["run", "--config"])
                .arg(path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting the {role} node"))?;
            c.children.push(child);
            c.configs.push(Config::load(path)?);
        }
        Ok(c)
    }

    /// The nodes' process ids (alice, bob[, dealer]).
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    fn log_tail(&self, role: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("{role}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    async fn call(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let cfg = &self.configs[i];
        client::call(cfg.api_listen, Some(&cfg.api_token.0), method, path, body)
            .await?
            .ok()
            .with_context(|| format!("{}'s node", ROLES[i]))
    }

    /// The consortium's mode.
    pub(crate) fn mode(&self) -> Mode {
        self.configs[0].mode
    }

    /// Who is starting, for the progress lines: "alice, bob and dealer nodes" or "alice and bob
    /// nodes (mode 2pc, no dealer)".
    pub(crate) fn who(&self) -> &'static str {
        match self.mode() {
            Mode::Dealer => "alice, bob and dealer nodes",
            Mode::TwoParty => "alice and bob nodes (mode 2pc: no dealer)",
        }
    }

    /// Waits until every node's mesh is up.
    #[allow(clippy::needless_range_loop)] // i indexes parallel arrays (children, configs, ROLES)
    pub(crate) async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let t0 = Instant::now();
        for i in 0..self.configs.len() {
            loop {
                if let Some(status) = self.children[i].try_wait()? {
                    bail!("the {} node exited ({status}):\n{}", ROLES[i], self.log_tail(ROLES[i]));
                }
                let cfg = &self.configs[i];
                let ready = match client::call(cfg.api_listen, Some(&cfg.api_token.0), "GET", "/v1/health", None).await
                {
                    Ok(r) => r.status == 200 && r.body["mesh_ready"] == json!(true),
                    Err(_) => false,
                };
                if ready {
                    break;
                }
                ensure!(
                    t0.elapsed() < timeout,
                    "the mesh did not form within {timeout:?}:\n{}",
                    self.log_tail(ROLES[i])
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

impl Consortium {
    /// Polls job `id` on every node until it is done on all of them; returns their final
    /// records (alice, bob[, dealer]). Fails with the node's reason as soon as one reports the job
    /// failed, or after `limit`. `watch` sees Bob's record while the job runs.
    #[allow(clippy::needless_range_loop)] // i indexes the nodes' parallel arrays
    pub(crate) async fn wait_job(
        &self,
        id: &str,
        limit: Duration,
        mut watch: impl FnMut(&serde_json::Value),
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let t0 = Instant::now();
        let mut records = vec![serde_json::Value::Null; self.configs.len()];
        while records.iter().any(serde_json::Value::is_null) {
            for i in 0..records.len() {
                if !records[i].is_null() {
                    continue;
                }
                // Bob proposed the job: the other nodes record it once they start it.
                let r = match self.call(i, "GET", &format!("/v1/jobs/{id}"), None).await {
                    Ok(r) => r,
                    Err(_) if i != 1 => continue,
                    Err(e) => return Err(e),
                };
                match r["state"].as_str() {
                    Some("done") => records[i] = r,
                    Some(s @ ("failed" | "interrupted" | "refused")) => bail!(
                        "the job {s} on {}'s node: {}",
                        ROLES[i],
                        r["error"].as_str().unwrap_or("no reason recorded")
                    ),
                    _ if i == 1 => watch(&r),
                    _ => {}
                }
            }
            ensure!(t0.elapsed() < limit, "the job did not finish within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(records)
    }
}

/// What `local predict` returns to its caller (the demo prints more from it).
pub(crate) struct LocalResult {
    /// Bob's output as written.
    pub output: ArrayD<f64>,
    /// Bob's job record (per-layer profile, totals).
    pub bob_job: serde_json::Value,
    /// The nodes' job records (alice, bob[, dealer]).
    pub jobs: Vec<serde_json::Value>,
    /// Seconds from submission to Bob's output.
    pub seconds: f64,
    /// The consortium's mode (names the correlation column: dealer material or OT traffic).
    pub mode: Mode,
}

/// Publishes `model` on Alice's node, registers its plan with Bob and the dealer, and runs one
/// prediction of `input` (Bob's), writing `output`.
/// How a local run publishes its model.
#[derive(Clone, Debug, Default)]
pub(crate) struct PublishOptions {
    /// Fixed-point fractional bits.
    pub(crate) frac_bits: Option<u32>,
    /// Comparison method policy (`auto`, `helper`, `fss`, `fss1`).
    pub(crate) nonlinear: Option<String>,
    /// Declared range of the input values.
    pub(crate) input_range: Option<[f64; 2]>,
    /// A cap on the rows per micro-batch.
    pub(crate) micro_batch: Option<usize>,
}

pub(crate) async fn predict(
    c: &mut Consortium,
    model: &Path,
    input: &Path,
    output: &Path,
    policy: OutputPolicy,
    opts: &PublishOptions,
) -> anyhow::Result<LocalResult> {
    let abs = |p: &Path| -> anyhow::Result<String> {
        Ok(std::fs::canonicalize(p).with_context(|| format!("{} not found", p.display()))?.display().to_string())
    };
    let (model_path, input_path) = (abs(model)?, abs(input)?);
    let output_path = if output.is_absolute() { output.to_path_buf() } else { std::env::current_dir()?.join(output) };
    eprintln!("[1/4] starting {} (QUIC + mutual TLS on loopback)…", c.who());
    c.wait_ready(Duration::from_secs(30)).await?;
    let others = if c.mode() == Mode::Dealer { "bob and the dealer register" } else { "bob registers" };
    eprintln!("[2/4] alice publishes {}; {others} its public plan…", model.display());
    let published = publish(c, Path::new(&model_path), policy, opts).await?;
    let batch = {
        let per_sample: Vec<usize> =
            serde_json::from_value::<Vec<usize>>(published["plan"]["input"].clone())?[1..].to_vec();
        crate::read_input_rows(Path::new(&input_path), &per_sample)?
    };
    eprintln!("[3/4] bob predicts on {batch} private records…");
    let r = run_predict(c, "model", &input_path, &output_path, opts.micro_batch).await?;
    eprintln!("[4/4] done in {:.2} s; bob's output is in {}", r.seconds, output_path.display());
    Ok(r)
}

/// Alice publishes `model` as `model`, offered to every organisation (her node sends the plan
/// to Bob's and the dealer's). Returns Alice's reply (`plan`).
pub(crate) async fn publish(
    c: &mut Consortium,
    model: &Path,
    policy: OutputPolicy,
    opts: &PublishOptions,
) -> anyhow::Result<serde_json::Value> {
    c.wait_ready(Duration::from_secs(30)).await?;
    let policy_s = match policy {
        OutputPolicy::Logits => "logits",
        OutputPolicy::Probabilities => "probabilities",
        OutputPolicy::Label => "label",
    };
    let req = party_node::ml::PublishRequest {
        name: "model".into(),
        path: std::fs::canonicalize(model)?.display().to_string(),
        output: Some(policy_s.into()),
        frac_bits: opts.frac_bits,
        nonlinear: opts.nonlinear.clone(),
        input_range: opts.input_range,
        policy: Some(party_node::service::ModelPolicy {
            allow: vec![party_node::service::ANYONE.into()],
            ..Default::default()
        }),
    };
    let published = c.call(0, "POST", "/v1/models", Some(serde_json::to_value(&req)?)).await?;
    for d in published["offered"].as_array().into_iter().flatten() {
        ensure!(d["delivered"] == true, "the offer did not reach {}: {}", d["role"], d["error"]);
    }
    Ok(published)
}

/// Bob's one request for predictions of `model`, which the other nodes accept by their policies.
pub(crate) async fn run_predict(
    c: &mut Consortium,
    model: &str,
    input_path: &str,
    output_path: &Path,
    micro_batch: Option<usize>,
) -> anyhow::Result<LocalResult> {
    let t0 = Instant::now();
    let created = c
        .call(
            1,
            "POST",
            "/v1/requests",
            Some(json!({"kind": "predict", "model": model, "input": input_path,
                        "output": output_path.display().to_string(), "micro_batch": micro_batch})),
        )
        .await?;
    let id = created["id"].as_str().context("no job id")?.to_string();
    let bar = rows_bar();
    let records = c.wait_job(&id, Duration::from_secs(24 * 3600), |r| follow(&bar, r)).await;
    bar.finish_and_clear();
    let records = records?;
    let seconds = t0.elapsed().as_secs_f64();
    let out = crate::ml_read_output(output_path)?;
    Ok(LocalResult { output: out, bob_job: records[1].clone(), jobs: records, seconds, mode: c.mode() })
}

/// Waits (at most `limit`) until the three nodes' warm pools are full for `model`; whether
/// they are.
pub(crate) async fn wait_pool(c: &mut Consortium, model: &str, limit: Duration) -> anyhow::Result<bool> {
    let t0 = Instant::now();
    loop {
        let mut ready = true;
        for i in 0..c.configs.len() {
            let s = c.call(i, "GET", "/v1/pool", None).await?;
            // Full: as many entries as a refill makes (two, within capacity), so no offline pass
            // competes with the next job for the CPU.
            let want = s["capacity"].as_u64().unwrap_or(0).min(2) as usize;
            ready &= s["entries"].as_array().is_some_and(|e| e.iter().filter(|e| e["model"] == model).count() >= want);
        }
        if ready {
            return Ok(true);
        }
        if t0.elapsed() > limit {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `local predict --repeat N`: the same prediction N more times, each once the warm pools hold
/// a preprocessed job (the nodes refill them after every job); prints each job's latency at
/// Bob's node and the median of those served from the pool.
pub(crate) async fn repeat_predict(
    c: &mut Consortium,
    input: &Path,
    output: &Path,
    first: &LocalResult,
    repeat: usize,
) -> anyhow::Result<()> {
    let line = |k: usize, r: &serde_json::Value| {
        let s = r["seconds"].as_f64().unwrap_or(f64::NAN);
        let pooled = r["rows"]["from_pool"].as_u64().unwrap_or(0);
        let how = if pooled > 0 { format!("warm pool, {pooled} rows") } else { "material made on demand".into() };
        let layers: f64 = r["layers"].as_array().map_or(0.0, |l| l.iter().filter_map(|x| x["seconds"].as_f64()).sum());
        println!(
            "  job {k:>3}: {:>8.2} ms at bob's node, {:>8.2} ms in the model's stages ({how})",
            s * 1e3,
            layers * 1e3
        );
        (s, pooled > 0)
    };
    println!(
        "
latency of the same prediction, from bob's submission to his output (the other nodes joined first):"
    );
    line(1, &first.bob_job);
    let input = std::fs::canonicalize(input)?.display().to_string();
    let output = if output.is_absolute() { output.to_path_buf() } else { std::env::current_dir()?.join(output) };
    let output = output.as_path();
    let mut warm = Vec::new();
    for k in 2..=repeat + 1 {
        if !wait_pool(c, "model", Duration::from_secs(30)).await? {
            println!("  (the warm pool was not refilled within 30 s: [limits] pool_jobs, pool_rows, memory_mib)");
        }
        let r = run_predict(c, "model", &input, output, None).await?;
        let (s, pooled) = line(k, &r.bob_job);
        if pooled {
            warm.push(s);
        }
    }
    if !warm.is_empty() {
        warm.sort_by(f64::total_cmp);
        println!("  median with a warm pool: {:.2} ms over {} jobs", warm[warm.len() / 2] * 1e3, warm.len());
    }
    Ok(())
}

/// Prints Bob's per-layer profile and the three nodes' totals.
pub(crate) fn print_profile(r: &LocalResult) {
    let rows = &r.bob_job["rows"];
    if let (Some(total), Some(b)) = (rows["total"].as_u64(), rows["micro_batch"].as_u64()) {
        println!(
            "\n{total} rows in micro-batches of {b} ({:.0} rows/s); per-layer profile (bob's node, all micro-batches):",
            rows["per_second"].as_f64().unwrap_or(0.0)
        );
    } else {
        println!("\nper-layer profile (bob's node):");
    }
    // Correlated randomness: the dealer's material, or (mode 2pc) the OT traffic that makes it.
    let material = if r.mode == Mode::Dealer { "dealer material" } else { "OT correlations" };
    println!("  {:<14} {:>9} {:>7} {:>13} {:>15}", "stage", "time", "rounds", "online sent", material);
    for l in r.bob_job["layers"].as_array().into_iter().flatten() {
        println!(
            "  {:<14} {:>7.1}ms {:>7} {:>11} B {:>13} B",
            l["name"].as_str().unwrap_or("?"),
            l["seconds"].as_f64().unwrap_or(0.0) * 1e3,
            l["rounds"].as_u64().unwrap_or(0),
            l["online_sent"].as_u64().unwrap_or(0),
            l["offline_bytes"].as_u64().unwrap_or(0)
        );
    }
    println!("\n  {:<8} {:>7} {:>14} {:>16} {:>14}", "node", "rounds", "online sent", material, "on the wire");
    for (role, j) in ROLES.iter().zip(&r.jobs) {
        let t = &j["total"];
        let material = t["offline_sent"].as_u64().unwrap_or(0) + t["offline_recv"].as_u64().unwrap_or(0);
        println!(
            "  {:<8} {:>7} {:>12} B {:>14} B {:>12} B",
            role,
            t["rounds"].as_u64().unwrap_or(0),
            t["online_sent"].as_u64().unwrap_or(0),
            material,
            j["wire_sent"].as_u64().unwrap_or(0)
        );
    }
}

/// The plaintext evaluation of the same model under the same output policy (`--verify`).
pub(crate) fn plaintext(model: &Path, input: &Path, policy: OutputPolicy) -> anyhow::Result<ArrayD<f64>> {
    let m = onnx::import_file(model)?.model;
    let x = party_node::ml::read_input(input, &m.input_shape)?;
    let y = m.eval_plain(&x);
    let ends_in_prob = m.layers.last().is_some_and(|l| matches!(l.op, mpc_ml::Op::Softmax(_) | mpc_ml::Op::Sigmoid(_)));
    let classes = *y.shape().last().unwrap_or(&1);
    Ok(match policy {
        OutputPolicy::Logits => y,
        OutputPolicy::Probabilities if ends_in_prob => y,
        OutputPolicy::Probabilities if classes == 1 => mpc_ml::plain::sigmoid(&y),
        OutputPolicy::Probabilities => mpc_ml::plain::softmax(&y),
        OutputPolicy::Label => labels(&y, ends_in_prob),
    })
}

/// Class labels from outputs `[n, c]` (argmax, first on ties) or `[n, 1]` (threshold).
pub(crate) fn labels(y: &ArrayD<f64>, prob: bool) -> ArrayD<f64> {
    let n = y.shape()[0];
    let c = y.len() / n.max(1);
    let y2 = y.view().into_shape_with_order((n, c)).expect("2-D");
    y2.axis_iter(Axis(0))
        .map(|r| {
            if c == 1 {
                f64::from(r[0] >= if prob { 0.5 } else { 0.0 })
            } else {
                let mut best = 0;
                for j in 1..c {
                    if r[j] > r[best] {
                        best = j;
                    }
                }
                best as f64
            }
        })
        .collect::<ndarray::Array1<f64>>()
        .into_dyn()
}

/// Runs one training job on the three nodes; returns Bob's metrics and the job's duration.
pub(crate) async fn train(
    c: &mut Consortium,
    bob: &party_node::ml::TrainRequest,
) -> anyhow::Result<(serde_json::Value, f64)> {
    eprintln!("[1/3] starting {} (QUIC + mutual TLS on loopback)…", c.who());
    c.wait_ready(Duration::from_secs(30)).await?;
    eprintln!(
        "[2/3] bob shares his data; the {} nodes train {} for {} epochs on shares…",
        c.configs.len(),
        bob.arch,
        bob.epochs
    );
    let t0 = Instant::now();
    // Bob's request, proposed to the other two nodes (their [policy] train accepts it).
    let req = serde_json::to_value(party_node::service::Request::Train(bob.clone()))?;
    let created = c.call(1, "POST", "/v1/requests", Some(req)).await?;
    let id = created["id"].as_str().context("no job id")?.to_string();
    let bar = progress_bar();
    let records = c.wait_job(&id, Duration::from_secs(3600), |r| follow(&bar, r)).await;
    if records.is_err() {
        bar.abandon();
    }
    let metrics = records?[1]["metrics"].clone();
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("[3/3] done in {secs:.2} s");
    Ok((metrics, secs))
}

/// Runs one analytics job on the three nodes: Bob's node builds the plan from his file, Alice
/// (with her rows, if any) and the dealer join with that plan. Returns Bob's report and the
/// job's duration.
pub(crate) async fn analyze(
    c: &mut Consortium,
    bob: &party_node::ml::AnalyzeRequest,
    alice_data: Option<String>,
) -> anyhow::Result<(mpc_ml::analytics::Report, f64)> {
    eprintln!("[1/3] starting {} (QUIC + mutual TLS on loopback)…", c.who());
    c.wait_ready(Duration::from_secs(30)).await?;
    let id = JobId::random().to_string();
    let t0 = Instant::now();
    c.call(1, "POST", "/v1/jobs", Some(json!({"id": id, "kind": "analyze", "analyze": bob}))).await?;
    let rec = c.call(1, "GET", &format!("/v1/jobs/{id}"), None).await?;
    let plan = rec["plan"]["plan"].clone();
    ensure!(!plan.is_null(), "bob's job record has no analytics plan: {rec}");
    let rows = plan["rows"].clone();
    eprintln!("[2/3] rows {rows} (alice, bob) are secret-shared; the nodes compute on shares…");
    for i in (0..c.configs.len()).filter(|&i| i != 1) {
        let data = if i == 0 { alice_data.clone() } else { None };
        c.call(
            i,
            "POST",
            "/v1/jobs",
            Some(json!({"id": id, "kind": "analyze", "analyze": {"plan": plan, "data": data}})),
        )
        .await?;
    }
    let records = c.wait_job(&id, Duration::from_secs(3600), |_| {}).await?;
    let report = serde_json::from_value(records[1]["metrics"].clone()).ok();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("[3/3] done in {secs:.2} s");
    Ok((report.context("bob's node recorded no statistics")?, secs))
}

/// Prints an analytics report as tables.
pub(crate) fn print_report(r: &mpc_ml::analytics::Report) {
    let per_column: Vec<(&str, &Vec<f64>)> =
        [("sum", &r.sum), ("mean", &r.mean), ("var", &r.var), ("std", &r.std), ("min", &r.min), ("max", &r.max)]
            .into_iter()
            .filter_map(|(n, v)| v.as_ref().map(|v| (n, v)))
            .collect();
    println!("rows: {}", r.count);
    if !per_column.is_empty() {
        let w = r.columns.iter().map(|c| c.len()).max().unwrap_or(6).max(6);
        print!("  {:<w$}", "column");
        for (n, _) in &per_column {
            print!(" {n:>14}");
        }
        println!();
        for (j, c) in r.columns.iter().enumerate() {
            print!("  {c:<w$}");
            for (_, v) in &per_column {
                print!(" {:>14.6}", v[j] + 0.0);
            }
            println!();
        }
    }
    if let Some(corr) = &r.corr {
        println!("correlation (Pearson):");
        let short: Vec<String> = r.columns.iter().map(|c| c.chars().take(8).collect()).collect();
        print!("  {:<10}", "");
        for s in &short {
            print!(" {s:>8}");
        }
        println!();
        for (s, row) in short.iter().zip(corr) {
            print!("  {s:<10}");
            for v in row {
                print!(" {v:>8.4}");
            }
            println!();
        }
    }
    for h in &r.histograms {
        println!("histogram of {}:", h.column);
        let total = h.counts.iter().sum::<u64>().max(1);
        for (k, &count) in h.counts.iter().enumerate() {
            let lo = if k == 0 { "-inf".to_string() } else { h.edges[k - 1].to_string() };
            let hi = if k == h.edges.len() { "inf".to_string() } else { h.edges[k].to_string() };
            let bar = "#".repeat((40 * count / total) as usize);
            println!("  [{lo:>8}, {hi:>8})  {count:>8}  {bar}");
        }
    }
}

/// A progress bar with `template` (drawn on stderr when it is a terminal, hidden otherwise).
fn bar(template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(1), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
    bar
}

/// A progress bar for a training job.
pub(crate) fn progress_bar() -> indicatif::ProgressBar {
    bar("      {msg:40} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, ~{eta} left")
}

/// A progress bar for a prediction, in rows.
pub(crate) fn rows_bar() -> indicatif::ProgressBar {
    bar("      {msg:28} [{bar:30}] {pos}/{len} rows, {per_sec}, {elapsed} elapsed, ~{eta} left")
}

/// Moves `bar` to a job record's progress (a training's steps, or a prediction's rows).
pub(crate) fn follow(bar: &indicatif::ProgressBar, record: &serde_json::Value) {
    if let Some([done, total]) =
        record["progress"].as_array().and_then(|a| Some([a.first()?.as_u64()?, a.get(1)?.as_u64()?]))
    {
        bar.set_length(total);
        bar.set_position(done);
    }
    if let (Some(done), Some(total)) = (record["rows"]["done"].as_u64(), record["rows"]["total"].as_u64()) {
        bar.set_length(total);
        bar.set_position(done);
        let b = record["rows"]["micro_batch"].as_u64().unwrap_or(0);
        bar.set_message(format!("micro-batches of {b}"));
        return;
    }
    let step = record["step"].as_str().unwrap_or("");
    let mut msg = step.split(", step").next().unwrap_or(step).to_string();
    if let Some(l) = record["loss"].as_array().and_then(|a| a.last()).and_then(|l| l.as_f64()) {
        msg += &format!(", loss {l:.4}");
    }
    bar.set_message(msg);
}
