//! `party-node bench`: the end-to-end benchmark runner (issue 8).
//!
//! The parent writes a temporary three-node consortium on loopback ([`crate::testbed`]) and
//! starts three child processes of its own binary (`bench --child-config …`), one per party.
//! Each child builds the QUIC [`Mesh`] from its config — through an emulated WAN link
//! ([`wan::DelayedUdpSocket`]) with `--rtt`/`--rate` — and runs every workload in fresh
//! sessions:
//!
//! * **wall**: the whole job from nothing — session setup, the dealer producing and delivering
//!   material on demand, the online phase — to P1's decoded output (P1's clock);
//! * **offline** / **online**: a second session runs the program once in the preprocessing pass
//!   ([`Party::begin_offline`]: dealer material produced and delivered) and then again
//!   ([`Party::begin_online`]); a barrier separates the two, so `online_s` is the latency a user
//!   waits for when the dealer has run ahead, and `offline_s` the slowest party's preprocessing.
//!
//! Barriers and an RTT ping go over a separate control session. Each child prints one JSON line
//! per workload on its stdout; the parent aggregates them (medians over the counted runs after
//! the warm-up) into one JSON line per workload in the format of `shared/bench/workloads.md`.
//! Progress goes to stderr.

pub mod wan;
pub mod workloads;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use mpc_proto::compare::{Comparisons, Link, Objective, Policy};
use mpc_proto::transport::Transport;
use mpc_proto::{FixedPoint, OpStats, Party, PartyId, SessionConfig, SessionId};
use rand_core::SeedableRng;
use serde_json::{Value, json};

use crate::config::Config;
use crate::mesh::{Mesh, MeshOptions};
use crate::transport::QuicTransport;
use wan::{DelayedUdpSocket, WanLink};
use workloads::{Data, Workload};

/// Options of `party-node bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Workloads, comma-separated: matmul, mul-1m, relu-100k, cmp-100k, mlp-a-bN, lenet5-bN
    /// (N = batch size), logreg-train, or all (the standard set); through three daemons:
    /// mnist-cnn-ROWS (throughput, e.g. mnist-cnn-10k), pool-lenet5-b1 and pool-mlp-a-b1
    /// (latency with a warm pool).
    #[arg(long, default_value = "all")]
    pub workload: String,
    /// Counted runs per workload (medians are reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Warm-up runs per workload (not counted).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Emulated round-trip time between the parties (e.g. 20ms; 0 = plain loopback).
    #[arg(long, default_value = "0", value_parser = wan::parse_duration)]
    pub rtt: Duration,
    /// Emulated link rate out of each party (e.g. 1gbit, 100mbit; default unlimited).
    #[arg(long, value_parser = wan::parse_rate)]
    pub rate: Option<u64>,
    /// Also write the JSON lines to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Seed of the workloads' data and weights.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Comparison method: auto (per operation, by the cost model), helper, fss or fss1.
    #[arg(long, default_value = "auto", value_parser = parse_policy)]
    pub nonlinear: Policy,
    /// What `auto` minimises: wall (the whole job, material made on demand: what the wall
    /// figures measure) or latency (the online phase with the dealer running ahead: what the
    /// online figures measure, e.g. on a WAN).
    #[arg(long, default_value = "wall", value_parser = parse_objective)]
    pub objective: Objective,
    /// Ignore the workloads' declared input ranges: every comparison on the widest window
    /// (exact for any encodable value, and slower).
    #[arg(long)]
    pub widest_windows: bool,
    /// Throughput workloads: fixed micro-batch sizes to run besides the one the nodes choose
    /// from their memory budget (comma-separated; empty for none).
    #[arg(long, default_value = "250,500,1000,2000,4000")]
    pub sweep: String,
    /// `dealer`: three party processes, a dealer supplies correlated randomness; `2pc`: two,
    /// making it themselves with oblivious transfer and homomorphic encryption (no dealer process).
    #[arg(long, value_enum, default_value_t = crate::config::Mode::Dealer)]
    pub mode: crate::config::Mode,
    /// Internal: run as the party of this node config (a child of the runner).
    #[arg(long, hide = true)]
    pub child_config: Option<PathBuf>,
    /// Internal: first session id (hex) of the children's sessions.
    #[arg(long, hide = true)]
    pub session_base: Option<String>,
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse()
}

fn parse_objective(s: &str) -> Result<Objective, String> {
    s.parse()
}

/// The link the cost model assumes: the RTT P1 measured to P0 over the mesh (`measured_us`,
/// shared with the others so every party plans alike; at least the emulated RTT) and the rate
/// (the emulated one, or what QUIC moves on loopback, ~4 Gbit/s).
pub fn link_model(args: &BenchArgs, measured_us: u32) -> Link {
    let d = Link::default();
    Link {
        rtt_us: (args.rtt.as_micros() as u32).max(measured_us).max(1),
        mbit_s: args.rate.map_or(d.mbit_s, |r| (r / 1_000_000).clamp(1, u64::from(u32::MAX)) as u32),
    }
}

/// The session's comparison settings for workload `w` in this run.
fn comparisons(args: &BenchArgs, w: Workload, link: Link) -> Comparisons {
    let base = Comparisons {
        policy: args.nonlinear,
        link,
        objective: args.objective,
        ..Comparisons::for_fixed(FixedPoint::default())
    };
    w.comparisons(base, !args.widest_windows)
}

/// Entry point of `party-node bench`.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    let mut workloads = workloads::parse_list(&args.workload).map_err(|e| anyhow!(e))?;
    ensure!(args.runs >= 1, "--runs must be at least 1");
    if args.mode == crate::config::Mode::TwoParty && args.child_config.is_none() {
        // `all` in the two-party mode: the workloads it can run; one named explicitly that it
        // cannot is refused with the reason.
        let (ok, too_big): (Vec<Workload>, Vec<Workload>) =
            workloads.iter().partition(|w| w.two_party_bytes().is_some_and(|b| b <= workloads::TWO_PARTY_LIMIT));
        if !too_big.is_empty() {
            let names = too_big
                .iter()
                .map(|w| match w.two_party_bytes() {
                    Some(b) => format!("{w} (~{:.1} GB)", b as f64 / 1e9),
                    None => w.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            let why = "the two parties would move more than 4 GB between them to make the correlations \
                       (products by HE or OT, comparisons by OT-made AND triples)";
            ensure!(
                args.workload.split(',').any(|w| w.trim() == "all"),
                "--mode 2pc cannot run {names}: {why}; run them with --mode dealer"
            );
            eprintln!("bench: --mode 2pc leaves out {names}: {why}");
            workloads = ok;
        }
    }
    match &args.child_config {
        Some(cfg) => child(&args, cfg, &workloads),
        None => parent(&args, &workloads),
    }
}

// ---------------------------------------------------------------------------------------------
// Parent: consortium, children, aggregation.

/// The children; killed (by their PIDs) and the consortium directory removed when dropped.
/// Each child's stdin is a pipe held here: if the runner dies, the pipes close and the
/// children stop (see `child`).
struct Children {
    dir: PathBuf,
    procs: Vec<Child>,
    lifelines: Vec<std::process::ChildStdin>,
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn random_u128() -> u128 {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("OS randomness");
    u128::from_le_bytes(b)
}

fn parent(args: &BenchArgs, list: &[Workload]) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("membrane-bench-{:016x}", random_u128() as u64));
    let addrs = crate::testbed::free_addrs()?;
    let paths = crate::testbed::write_mode(&dir, addrs, None, crate::testbed::NAMES, args.mode)?;
    let n = paths.len();
    let exe = std::env::current_exe().context("locating the party-node binary")?;
    let names: Vec<String> = list.iter().map(Workload::to_string).collect();
    let base = format!("{:032x}", random_u128() & !0xffff_ffff);
    let mut out_file = match &args.json_out {
        Some(p) => Some(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => None,
    };
    eprintln!(
        "bench: {} workload(s), {} warm-up + {} counted run(s), rtt {:?}{}; {} party processes over QUIC on loopback \
         (mode {})",
        list.len(),
        args.warmup,
        args.runs,
        args.rtt,
        args.rate.map(|r| format!(", rate {} Mbit/s", r / 1_000_000)).unwrap_or_default(),
        if n == 2 { "two" } else { "three" },
        args.mode
    );
    let mut children = Children { dir: dir.clone(), procs: vec![], lifelines: vec![] };
    let (tx, rx) = std::sync::mpsc::channel::<(usize, String)>();
    for (i, path) in paths.iter().enumerate() {
        let mut cmd = Command::new(&exe);
        cmd.arg("bench")
            .arg("--child-config")
            .arg(path)
            .args(["--session-base", &base, "--workload", &names.join(",")])
            .args(["--runs", &args.runs.to_string(), "--warmup", &args.warmup.to_string()])
            .args(["--seed", &args.seed.to_string(), "--rtt", &format!("{}us", args.rtt.as_micros())])
            .args(["--nonlinear", &args.nonlinear.to_string(), "--objective", &args.objective.to_string()])
            .args(["--mode", args.mode.as_str()]);
        if args.widest_windows {
            cmd.arg("--widest-windows");
        }
        if let Some(r) = args.rate {
            cmd.args(["--rate", &format!("{r}bit")]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting party {i}"))?;
        children.lifelines.push(child.stdin.take().expect("piped stdin"));
        let stdout = child.stdout.take().expect("piped stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((i, line)).is_err() {
                    break;
                }
            }
        });
        children.procs.push(child);
    }
    drop(tx);
    let mut reports: Vec<Vec<Option<Value>>> = vec![vec![None; n]; list.len()];
    let mut done = 0;
    while done < list.len() {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((i, line)) => {
                let v: Value = serde_json::from_str(&line).with_context(|| format!("party {i} printed {line:?}"))?;
                let k = v["index"].as_u64().context("child report without index")? as usize;
                ensure!(k < list.len(), "child report for an unknown workload");
                reports[k][i] = Some(v);
                if reports[k].iter().all(Option::is_some) {
                    let parts: Vec<Value> = reports[k].iter().map(|r| r.clone().expect("all present")).collect();
                    let line = aggregate(list[k], args, &parts)?.to_string();
                    println!("{line}");
                    std::io::stdout().flush()?;
                    if let Some(f) = &mut out_file {
                        writeln!(f, "{line}")?;
                    }
                    done += 1;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // Every child closed its stdout: nothing more will come.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        for (i, c) in children.procs.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()?
                && !status.success()
            {
                bail!("party {i} ({}) failed ({status}); see its error above", ["alice", "bob", "dealer"][i]);
            }
        }
    }
    ensure!(done == list.len(), "the party processes exited before reporting every workload");
    for c in &mut children.procs {
        let _ = c.wait();
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

/// One workload's JSON line from the parties' reports (P0, P1[, P2]; per-party figures are
/// listed in that order).
fn aggregate(w: Workload, args: &BenchArgs, p: &[Value]) -> anyhow::Result<Value> {
    let bob = &p[1];
    let runs = floats(&bob["wall_s"]).len();
    let pooled = !floats(&bob["online_s"]).is_empty();
    let or_null = |x: f64| if pooled { json!(x) } else { Value::Null };
    let offline: Vec<f64> = (0..if pooled { runs } else { 0 })
        .map(|r| p.iter().map(|x| floats(&x["offline_s"]).get(r).copied().unwrap_or(f64::NAN)).fold(0.0, f64::max))
        .collect();
    let u = |x: &Value, k: &str| x[k].as_u64().unwrap_or(0);
    let round6 = |x: f64| (x * 1e6).round() / 1e6;
    Ok(json!({
        "workload": w.to_string(),
        "wall_s": round6(median(&floats(&bob["wall_s"]))),
        "offline_s": or_null(round6(median(&offline))),
        "online_s": or_null(round6(median(&floats(&bob["online_s"])))),
        "mode": args.mode.as_str(),
        "bytes_sent": p.iter().map(|x| u(x, "bytes_sent")).collect::<Vec<_>>(),
        "rounds": u(bob, "rounds"),
        "max_abs_err": bob["max_abs_err"],
        "plaintext_s": median(&floats(&bob["plaintext_s"])),
        "online_bytes_sent": p.iter().map(|x| u(x, "online_sent")).collect::<Vec<_>>(),
        "runs": runs,
        "warmup": args.warmup,
        "wall_runs_s": bob["wall_s"],
        "online_runs_s": bob["online_s"],
        "offline_runs_s": offline,
        "rtt_set_ms": args.rtt.as_secs_f64() * 1e3,
        "rate_bps": args.rate,
        "rtt_ms": median(&floats(&bob["ping_ms"])),
        "rtt_pings_ms": bob["ping_ms"],
        "quic_srtt_ms": bob["quic_srtt_ms"],
        "dropped_datagrams": p.iter().map(|x| u(x, "dropped")).sum::<u64>(),
        "online_pass_dealer_bytes": u(&p[1], "online_pass_dealer_bytes") + u(&p[0], "online_pass_dealer_bytes"),
        "layers_online": bob["layers_online"],
        "layers_wall": bob["layers_wall"],
        "ops_p1": bob["ops"],
        "nonlinear": args.nonlinear.to_string(),
        "objective": args.objective.to_string(),
        "declared_ranges": !args.widest_windows,
        "link": bob["link"],
        "methods": bob["methods"],
    }))
}

// ---------------------------------------------------------------------------------------------
// Child: one party.

/// Sends one frame to each other party and waits for theirs.
async fn barrier(ctl: &QuicTransport, mesh: &Mesh) -> anyhow::Result<()> {
    let others = mesh.others();
    for p in mesh.others() {
        ctl.send(p, vec![0xba]).await?;
    }
    for p in others {
        ctl.recv(p).await?;
    }
    Ok(())
}

/// P1 times `n` small-frame round trips to P0 (the others echo); returns milliseconds.
async fn ping(ctl: &QuicTransport, me: PartyId, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..n {
        match me {
            PartyId::P1 => {
                let t = Instant::now();
                ctl.send(PartyId::P0, vec![0x70; 8]).await?;
                ctl.recv(PartyId::P0).await?;
                out.push(t.elapsed().as_secs_f64() * 1e3);
            }
            PartyId::P0 => {
                let f = ctl.recv(PartyId::P1).await?;
                ctl.send(PartyId::P1, f).await?;
            }
            _ => {}
        }
    }
    Ok(out)
}

/// P1 sends `v` to the others; everyone returns it.
async fn share_u32(ctl: &QuicTransport, mesh: &Mesh, v: u32) -> anyhow::Result<u32> {
    if mesh.me() == PartyId::P1 {
        for p in mesh.others() {
            ctl.send(p, v.to_le_bytes().to_vec()).await?;
        }
        Ok(v)
    } else {
        let b = ctl.recv(PartyId::P1).await?;
        Ok(u32::from_le_bytes(b.as_slice().try_into().context("a 4-byte value from P1")?))
    }
}

fn layers_json(layers: &[mpc_ml::LayerProfile]) -> Value {
    Value::Array(
        layers
            .iter()
            .map(|l| {
                json!({"name": l.name, "seconds": l.seconds, "rounds": l.stats.rounds,
                       "online_sent": l.stats.online_sent,
                       "offline_bytes": l.stats.offline_sent + l.stats.offline_recv})
            })
            .collect(),
    )
}

fn payload(s: &OpStats) -> u64 {
    s.online_sent + s.offline_sent + s.setup_sent
}

struct Sessions {
    base: u128,
    next: u128,
}

impl Sessions {
    fn next(&mut self) -> SessionId {
        self.next += 1;
        SessionId(self.base + self.next)
    }
}

async fn connect(
    mesh: &Mesh,
    sessions: &mut Sessions,
    w: Workload,
    args: &BenchArgs,
    cmp: Comparisons,
) -> anyhow::Result<Party> {
    let id = sessions.next();
    let transport = mesh.open_session(id).await?;
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("OS randomness");
    let mut rng = rand_chacha::ChaCha12Rng::from_seed(b);
    let config = SessionConfig { comparisons: cmp, fixed: w.fixed(), ..SessionConfig::new(id, w.plan_hash(args.seed)) };
    Ok(Party::connect(Arc::new(transport), config, args.mode.correlations().source(), &mut rng).await?)
}

fn child(args: &BenchArgs, cfg_path: &Path, list: &[Workload]) -> anyhow::Result<()> {
    // The runner holds our stdin open; when it goes away (killed, Ctrl-C), stop too.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        eprintln!("bench: the runner went away; stopping");
        std::process::exit(2);
    });
    let cfg = Config::load(cfg_path)?;
    ensure!(cfg.mode == args.mode, "--mode {} but the config's [consortium] mode is {}", args.mode, cfg.mode);
    let base = u128::from_str_radix(args.session_base.as_deref().context("--session-base missing")?, 16)
        .context("--session-base")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let link = (args.rtt > Duration::ZERO || args.rate.is_some()).then(|| WanLink::with_rtt(args.rtt, args.rate));
    // A longer idle timeout than the node's: a party busy generating a large batch of dealer
    // material on a shared core must not be taken for gone.
    let opts =
        MeshOptions { idle_timeout: Duration::from_secs(20), keep_alive: Duration::from_secs(1), ..Default::default() };
    let (mesh, delayed) = rt.block_on(async {
        let raw = crate::mesh::bind_udp(cfg.listen)?;
        let sock = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, raw).context("QUIC socket")?;
        let (sock, delayed): (Arc<dyn quinn::AsyncUdpSocket>, _) = match link {
            Some(l) => {
                let d = DelayedUdpSocket::new(sock, l, tokio::runtime::Handle::current())?;
                (d.clone(), Some(d))
            }
            None => (sock, None),
        };
        anyhow::Ok((Mesh::start_with_socket(&cfg, sock, opts)?, delayed))
    })?;
    let me = cfg.me;
    let result = rt.block_on(async {
        mesh.wait_ready(Duration::from_secs(60)).await?;
        let mut sessions = Sessions { base, next: 0 };
        let ctl = mesh.open_session(SessionId(base)).await?;
        // Warm the connections (path-MTU discovery, congestion window) before timing anything.
        barrier(&ctl, &mesh).await?;
        let _ = ping(&ctl, me, 5).await?;
        // Open the congestion windows: a deployed node's connections are long-lived, and quinn
        // grows a window only while it is full, so on a fresh connection the first megabytes of
        // every job would pay extra round trips (seen at 10 ms RTT before this warm-up).
        for _ in 0..4 {
            let others = mesh.others();
            for p in mesh.others() {
                ctl.send(p, vec![0x77; 4 << 20]).await?;
            }
            for p in others {
                ctl.recv(p).await?;
            }
        }
        let pings = ping(&ctl, me, 20).await?;
        // P1's median round trip, shared: every party's cost model must see the same link.
        let median_us = (median(&pings) * 1e3).round() as u32;
        let link = share_u32(&ctl, &mesh, median_us).await.map(|us| link_model(args, us))?;
        let mut dropped = delayed.as_ref().map_or(0, |d| d.dropped());
        for (k, &w) in list.iter().enumerate() {
            let mut line = run_workload(&mesh, &ctl, &mut sessions, me, w, args, link)
                .await
                .with_context(|| format!("workload {w} on {me}"))?;
            line["index"] = json!(k);
            line["party"] = json!(me.0);
            line["ping_ms"] = json!(pings);
            line["quic_srtt_ms"] = json!(mesh.peers().iter().map(|s| s.rtt_ms).collect::<Vec<_>>());
            let dropped_now = delayed.as_ref().map_or(0, |d| d.dropped());
            line["dropped"] = json!(dropped_now - dropped);
            dropped = dropped_now;
            println!("{line}");
            std::io::stdout().flush()?;
        }
        // Let the last frames of every party reach the others before anyone closes: the final
        // barrier's own frames may be cut by a peer's close, which is harmless here.
        let _ = barrier(&ctl, &mesh).await;
        tokio::time::sleep(args.rtt * 2 + Duration::from_millis(200)).await;
        anyhow::Ok(())
    });
    rt.block_on(mesh.shutdown());
    result
}

/// The comparison method of each comparing step, as `kind:method/bits`. Two parties have one
/// method whatever the policy: the Boolean circuit (`gmw`, `mpc_proto::protocol::gmw`).
fn methods(w: Workload, data: &Data, cmp: Comparisons, mode: crate::config::Mode) -> Vec<String> {
    let all = w.methods(data, cmp);
    if mode == crate::config::Mode::Dealer {
        return all;
    }
    all.into_iter()
        .map(|m| match (m.split_once(':'), m.rsplit_once('/')) {
            (Some((kind, _)), Some((_, bits))) => format!("{kind}:gmw/{bits}"),
            _ => m,
        })
        .collect()
}

async fn run_workload(
    mesh: &Mesh,
    ctl: &QuicTransport,
    sessions: &mut Sessions,
    me: PartyId,
    w: Workload,
    args: &BenchArgs,
    link: Link,
) -> anyhow::Result<Value> {
    let cmp = comparisons(args, w, link);
    let data: Data = w.data(args.seed, cmp, !args.widest_windows)?;
    // P1 measures the plaintext evaluation while the others wait at the barrier.
    let mut plain_s = Vec::new();
    let mut reference = None;
    if me == PartyId::P1 {
        for _ in 0..args.runs.max(3) {
            let t = Instant::now();
            let r = w.plaintext(&data);
            plain_s.push(t.elapsed().as_secs_f64());
            reference = Some(r);
        }
    }
    let (mut wall_s, mut offline_s, mut online_s) = (vec![], vec![], vec![]);
    let (mut bytes, mut online_sent, mut rounds, mut dealer_in_online) = (0, 0, 0, 0);
    let mut err: f64 = 0.0;
    let (mut layers_wall, mut layers_online, mut per_op) = (Value::Null, Value::Null, Value::Null);
    let check = |out: &Option<ndarray::ArrayD<f64>>| -> anyhow::Result<f64> {
        match (&reference, out) {
            (Some(r), Some(o)) => Ok(workloads::max_abs_err(r, o)),
            (Some(_), None) => bail!("P1 got no output"),
            _ => Ok(0.0),
        }
    };
    for run in 0..args.warmup + args.runs {
        let counted = run >= args.warmup;
        // Whole job from nothing: session setup, dealer on demand, online phase.
        barrier(ctl, mesh).await?;
        let t0 = Instant::now();
        let mut party = connect(mesh, sessions, w, args, cmp).await?;
        let out = w.run(&mut party, &data).await?;
        let wall = t0.elapsed().as_secs_f64();
        err = err.max(check(&out.output)?);
        let total = party.stats().total;
        // Where the whole job's bytes went, per top-level operation (sent and received).
        per_op = party
            .stats()
            .per_op
            .iter()
            .map(|(k, v)| (k.to_string(), json!({"rounds": v.rounds, "bytes": payload(v) + v.offline_recv})))
            .collect::<serde_json::Map<_, _>>()
            .into();
        drop(party);
        if !w.supports_pool() {
            if me == PartyId::P1 {
                eprintln!(
                    "  {w} run {}/{}{}: wall {wall:.4} s (no preprocessing pool for this workload)",
                    run + 1,
                    args.warmup + args.runs,
                    if counted { "" } else { " (warm-up)" },
                );
            }
            if counted {
                wall_s.push(wall);
                bytes = payload(&total);
                online_sent = total.online_sent;
                rounds = total.rounds.saturating_sub(1); // less the session-setup round
            }
            continue;
        }
        // The same job with the preprocessing pool: offline pass, barrier, online pass.
        let mut party = connect(mesh, sessions, w, args, cmp).await?;
        barrier(ctl, mesh).await?;
        let t0 = Instant::now();
        party.begin_offline()?;
        w.run(&mut party, &data).await?;
        party.begin_online()?;
        let offline = t0.elapsed().as_secs_f64();
        barrier(ctl, mesh).await?;
        let before = party.stats().total;
        let t1 = Instant::now();
        let out2 = w.run(&mut party, &data).await?;
        let online = t1.elapsed().as_secs_f64();
        let d = party.stats().total.since(&before);
        err = err.max(check(&out2.output)?);
        if me == PartyId::P1 {
            eprintln!(
                "  {w} run {}/{}{}: wall {:.4} s, offline {:.4} s, online {:.4} s, {} rounds",
                run + 1,
                args.warmup + args.runs,
                if counted { "" } else { " (warm-up)" },
                wall,
                offline,
                online,
                d.rounds
            );
        }
        if counted {
            wall_s.push(wall);
            offline_s.push(offline);
            online_s.push(online);
            bytes = payload(&total);
            online_sent = total.online_sent;
            rounds = d.rounds;
            dealer_in_online = d.offline_recv + d.offline_sent;
            layers_wall = layers_json(&out.layers);
            layers_online = layers_json(&out2.layers);
        }
    }
    Ok(json!({
        "workload": w.to_string(),
        "wall_s": wall_s,
        "offline_s": offline_s,
        "online_s": online_s,
        "bytes_sent": bytes,
        "online_sent": online_sent,
        "rounds": rounds,
        "max_abs_err": if me == PartyId::P1 { json!(err) } else { Value::Null },
        "plaintext_s": plain_s,
        "online_pass_dealer_bytes": dealer_in_online,
        "layers_wall": layers_wall,
        "layers_online": layers_online,
        "methods": methods(w, &data, cmp, args.mode),
        "ops": per_op,
        "link": cmp.link,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
