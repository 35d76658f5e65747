//! The native module of the `membrane` Python package (`membrane._native`, built by maturin
//! from `python/`).
//!
//! It links `party-node`, so installing the wheel is all a machine needs to run nodes and to
//! drive them:
//!
//! * `run_node` is `party-node run` inside a Python process (`python -m membrane._node run
//!   --config …`, which `membrane.local_consortium()` starts three of);
//! * `call` is one control-API request ([`party_node::client`]); `node_config` reads what a
//!   client needs from a node's config (address, token, role);
//! * `encode` checks a request body against the node's own request types (the types the
//!   server, the CLI and this client share) and returns it normalised, so a misspelt field is a
//!   client-side error naming the field;
//! * `simulate_*` run the three parties in this process over the in-memory transport
//!   ([`mpc_proto::testing`]): no ports, no processes, the node's preparation and checks.
//!
//! What it does not do: anything with numpy (arrays cross as `.npy` files, written and read by
//! the Python side), HTTP routing or retries (the Python client decides what a status means).
//!
//! `unsafe_code` is forbidden: the `unsafe` that PyO3's macros expand to is PyO3's (it does not
//! trip this crate's lint), and this crate writes none.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use mpc_ml::{OutputPolicy, onnx};
use mpc_proto::testing::{LocalConfig, run_parties_with};
use mpc_proto::{FixedPoint, PartyId};
use party_node::config::{Config, Role};
use party_node::ml::{AnalyzeRequest, PublishRequest, RegisterRequest, TrainRequest};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use serde::{Deserialize, Serialize};

/// The protocols allocate and free many multi-megabyte tensors (see party-node's `main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pyo3::create_exception!(
    membrane,
    MembraneError,
    PyException,
    "Base class of every error the membrane package raises; the message is the node's or the \
     native module's own."
);
pyo3::create_exception!(
    membrane,
    Unreachable,
    MembraneError,
    "A node's control API could not be reached (is the node running? is the config's [api] \
     listen address right?)."
);

fn err(e: anyhow::Error) -> PyErr {
    MembraneError::new_err(format!("{e:#}"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// Runs the node of `config` until SIGTERM or SIGINT (what `party-node run --config` does),
/// logging to stderr at the level `MEMBRANE_LOG` names (default `info`).
#[pyfunction]
fn run_node(py: Python<'_>, config: PathBuf) -> PyResult<()> {
    let cfg = Config::load(&config).map_err(err)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEMBRANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second node in the same process keeps the first subscriber.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::io::stderr).try_init();
    py.detach(|| runtime()?.block_on(party_node::node::run(cfg))).map_err(err)
}

/// What a client needs from a node's config: `(role, organisation name, API address, bearer
/// token, data directory)`. The config is loaded and checked as `party-node run` does.
#[pyfunction]
fn node_config(config: PathBuf) -> PyResult<(String, String, String, String, String)> {
    let cfg = Config::load(&config).map_err(err)?;
    let role = cfg.role();
    let name = cfg.parties[cfg.me.index()].name.clone();
    let data = std::path::absolute(&cfg.data_dir).unwrap_or(cfg.data_dir.clone());
    Ok((
        role.as_str().to_string(),
        name,
        cfg.api_listen.to_string(),
        cfg.api_token.0.clone(),
        data.display().to_string(),
    ))
}

/// Writes a consortium on loopback under `dir` (identities, pinned certificates, one config per
/// node, free ports) and returns the config paths in party order: alice, bob, dealer for
/// `mode = "dealer"`; alice and bob for `"2pc"` (no dealer).
#[pyfunction]
#[pyo3(signature = (dir, mode="dealer"))]
fn write_consortium(dir: PathBuf, mode: &str) -> PyResult<Vec<String>> {
    let mode = match mode {
        "dealer" => party_node::config::Mode::Dealer,
        "2pc" => party_node::config::Mode::TwoParty,
        other => return Err(MembraneError::new_err(format!("mode {other:?}: valid are \"dealer\" and \"2pc\""))),
    };
    let addrs = party_node::testbed::free_addrs().map_err(err)?;
    let paths = party_node::testbed::write_mode(&dir, addrs, None, party_node::testbed::NAMES, mode).map_err(err)?;
    Ok(paths.iter().map(|p| p.display().to_string()).collect())
}

/// One control-API request: `method path` with an optional JSON `body`, the bearer `token`
/// (None sends none), at most `timeout` seconds. Returns `(status, body as JSON text)`; raises
/// `Unreachable` if the node cannot be reached.
#[pyfunction]
#[pyo3(signature = (addr, token, method, path, body=None, timeout=60.0))]
fn call(
    py: Python<'_>,
    addr: &str,
    token: Option<String>,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: f64,
) -> PyResult<(u16, String)> {
    let addr: std::net::SocketAddr =
        addr.parse().map_err(|e| MembraneError::new_err(format!("control API address {addr:?}: {e}")))?;
    let body: Option<serde_json::Value> = body
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| MembraneError::new_err(format!("request body is not JSON: {e}")))?;
    let limit = Duration::from_secs_f64(timeout.max(0.001));
    let reply = py.detach(|| -> anyhow::Result<_> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            tokio::time::timeout(limit, party_node::client::call(addr, token.as_deref(), method, path, body))
                .await
                .map_err(|_| anyhow::anyhow!("the node at {addr} did not answer {method} {path} within {limit:?}"))?
        })
    });
    let reply = reply.map_err(|e| Unreachable::new_err(format!("{e:#}")))?;
    Ok((reply.status, reply.body.to_string()))
}

fn normalise<T: for<'de> Deserialize<'de> + Serialize>(kind: &str, body: &str) -> anyhow::Result<String> {
    let v: T = serde_json::from_str(body).with_context(|| format!("{kind} request"))?;
    Ok(serde_json::to_string(&v)?)
}

/// Checks `body` (JSON) against the node's own request type `kind` and returns it
/// re-serialised: `publish` (with its `policy`), `register`, `request` (`POST /v1/requests`,
/// [`party_node::service::Request`], tagged by `kind`), `job` (`POST /v1/jobs`,
/// [`party_node::jobs::JobRequest`], tagged by `kind`), `train`, `analyze` (the bodies of a
/// request of that kind), `approve` and `refuse` (a held proposal's decision). Raises
/// `MembraneError` naming an unknown or mistyped field.
#[pyfunction]
fn encode(kind: &str, body: &str) -> PyResult<String> {
    match kind {
        "publish" => normalise::<PublishRequest>(kind, body),
        "register" => normalise::<RegisterRequest>(kind, body),
        "request" => normalise::<party_node::service::Request>(kind, body),
        "job" => normalise::<party_node::jobs::JobRequest>(kind, body),
        "train" => normalise::<TrainRequest>(kind, body),
        "analyze" => normalise::<AnalyzeRequest>(kind, body),
        "approve" => normalise::<party_node::api::Approve>(kind, body),
        "refuse" => normalise::<party_node::api::Refuse>(kind, body),
        _ => Err(anyhow::anyhow!("unknown request type {kind:?}")),
    }
    .map_err(err)
}

/// Writes the held-out rows of Bob's training CSV — the rows a training job with `test_split`
/// and `seed` keeps out, raw features without the label — to `out` (CSV) and returns their
/// labels, so the served model can be scored on them (what `party-node local train` does).
#[pyfunction]
fn write_heldout(data: PathBuf, label: &str, test_split: f64, seed: u64, out: PathBuf) -> PyResult<Vec<f64>> {
    (|| -> anyhow::Result<Vec<f64>> {
        let (_, test) = mpc_ml::data::split(&mpc_ml::data::load_csv(&data, label)?, test_split, seed);
        let rows: Vec<String> =
            test.x.outer_iter().map(|r| r.iter().map(|v| format!("{v:e}")).collect::<Vec<_>>().join(",")).collect();
        std::fs::write(&out, rows.join("\n") + "\n").with_context(|| format!("writing {}", out.display()))?;
        Ok(test.y.to_vec())
    })()
    .map_err(err)
}

/// The model and the batch-1 plan Alice's node would publish for `model` (an ONNX file) with
/// these options (the link is the default LAN: there is no network to measure).
fn simulated_plan(
    model: &Path,
    output: &str,
    frac_bits: Option<u32>,
    nonlinear: Option<&str>,
    input_range: Option<[f64; 2]>,
) -> anyhow::Result<(mpc_ml::Model, mpc_ml::Plan)> {
    let bytes = onnx::read_model_file(model).with_context(|| format!("reading the model file {}", model.display()))?;
    let imported = onnx::import(&bytes).with_context(|| format!("importing {}", model.display()))?;
    let policy: OutputPolicy = output.parse().map_err(anyhow::Error::msg)?;
    let frac = frac_bits.unwrap_or_else(|| mpc_ml::model::recommended_frac_bits(&imported.model));
    let fixed = FixedPoint::new(frac, 47u32.saturating_sub(frac)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let options = party_node::ml::plan_options(nonlinear, input_range, mpc_proto::compare::Link::default(), fixed)?;
    let plan = imported.model.plan_with(1, policy, fixed, options)?;
    Ok((imported.model, plan))
}

/// Runs a prediction with the three parties in this process: Alice's ONNX `model` published
/// as a node would (same output policy, fixed point, comparison options), Bob's `input` file
/// checked as his node checks it, the output written to `output` (.npy or .csv). Returns a
/// JSON summary (`rows`, `rounds`, online and dealer bytes at Bob, `seconds`).
#[pyfunction]
#[pyo3(signature = (model, input, output, policy="logits", frac_bits=None, nonlinear=None, input_range=None, seed=0))]
#[allow(clippy::too_many_arguments)] // mirrors publish's options, each a keyword in Python
fn simulate_predict(
    py: Python<'_>,
    model: PathBuf,
    input: PathBuf,
    output: PathBuf,
    policy: &str,
    frac_bits: Option<u32>,
    nonlinear: Option<String>,
    input_range: Option<[f64; 2]>,
    seed: u64,
) -> PyResult<String> {
    py.detach(|| -> anyhow::Result<String> {
        let (model, plan) = simulated_plan(&model, policy, frac_bits, nonlinear.as_deref(), input_range)?;
        let per_sample = plan.input[1..].to_vec();
        let rows = party_node::rows::scan(&input, &per_sample, plan.options.input_range_real(plan.fixed), plan.fixed)?;
        let x = party_node::ml::read_input(&input, &per_sample)?;
        let plan = plan.rebatch(rows)?;
        let started = std::time::Instant::now();
        let mut cfg = LocalConfig::new(seed);
        cfg.fixed = plan.fixed;
        let out = run_parties_with(cfg, |mut party| {
            let (plan, model, x) = (&plan, &model, &x);
            async move {
                let me = party.id();
                let inf = mpc_ml::infer(
                    &mut party,
                    plan,
                    (me == PartyId::P0).then_some(model),
                    (me == PartyId::P1).then_some(x),
                )
                .await?;
                Ok((inf.output, party.stats().total))
            }
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let seconds = started.elapsed().as_secs_f64();
        let [_, (y, stats), _] = out;
        let y = y.context("bob's party revealed no output")?;
        party_node::ml::write_output(&output, &y)?;
        Ok(serde_json::json!({
            "rows": rows,
            "rounds": stats.rounds,
            "online_sent": stats.online_sent,
            "offline_recv": stats.offline_recv,
            "seconds": seconds,
        })
        .to_string())
    })
    .map_err(err)
}

/// Runs a training job with the three parties in this process. `request` is Bob's
/// [`TrainRequest`] (JSON: his CSV `data`, `label`, `arch`, …), prepared exactly as his node
/// prepares it. Returns the metrics a node records: with `reveal_to_bob`, `train_accuracy` and
/// `test_accuracy` (`train_r2`/`test_r2` for linreg) and the ONNX export if asked; without, the
/// model stays shared and `served_test_accuracy` (or `served_test_r2`) is measured by a private
/// prediction of the held-out rows through the shared model, as `party-node local train` does.
#[pyfunction]
#[pyo3(signature = (request, seed=0))]
fn simulate_train(py: Python<'_>, request: &str, seed: u64) -> PyResult<String> {
    let req: TrainRequest = serde_json::from_str(request).context("train request").map_err(err)?;
    py.detach(|| -> anyhow::Result<String> {
        use mpc_ml::train::{Arch, accuracy, r2};
        let prep = party_node::ml::prepare_train(Role::Bob, &req)?;
        let fixed = FixedPoint::default();
        let serving_policy =
            if prep.plan.config.arch == Arch::LinReg { OutputPolicy::Logits } else { OutputPolicy::Probabilities };
        let test = prep.test.clone().context("bob has test rows")?;
        let serving = if test.0.nrows() > 0 {
            Some(prep.plan.inference_plan(test.0.nrows(), serving_policy, fixed)?)
        } else {
            None
        };
        let mut cfg = LocalConfig::new(seed);
        cfg.fixed = fixed;
        let started = std::time::Instant::now();
        let out = run_parties_with(cfg, |mut party| {
            let (prep, serving, test) = (&prep, &serving, &test);
            async move {
                let me = party.id();
                let data = prep.train.as_ref().filter(|_| me == PartyId::P1).map(|(x, y)| (x, y));
                let shared = mpc_ml::train::train(&mut party, &prep.plan, data, |_| {}).await?;
                let served = match serving {
                    Some(plan) => {
                        let x = test.0.clone().into_dyn();
                        let w = shared.weight_shares();
                        let x = (me == PartyId::P1).then_some(&x);
                        mpc_ml::infer_shared(&mut party, plan, &w, x).await?.output
                    }
                    None => None,
                };
                let revealed = if prep.reveal { shared.reveal_to(&mut party, PartyId::P1).await? } else { None };
                Ok((served, revealed))
            }
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let [_, (served, revealed), _] = out;
        let mut metrics = serde_json::json!({ "seconds": started.elapsed().as_secs_f64() });
        let is_linreg = prep.plan.config.arch == Arch::LinReg;
        if let Some(y) = served {
            metrics[if is_linreg { "served_test_r2" } else { "served_test_accuracy" }] = if is_linreg {
                let mean = test.1.mean().unwrap_or(0.0);
                let ss_res: f64 = y.iter().zip(&test.1).map(|(p, t)| (p - t).powi(2)).sum();
                let ss_tot: f64 = test.1.iter().map(|t| (t - mean).powi(2)).sum();
                serde_json::json!(1.0 - ss_res / ss_tot)
            } else {
                let preds = mpc_ml::train::predictions(&y);
                let hits = preds.iter().zip(&test.1).filter(|(p, t)| (**p - **t).abs() < 0.5).count();
                serde_json::json!(hits as f64 / test.1.len() as f64)
            };
        }
        if let (Some(m), Some((x, y))) = (revealed, &prep.train) {
            let (xt, yt) = &test;
            if is_linreg {
                metrics["train_r2"] = serde_json::json!(r2(&m, x, y));
                metrics["test_r2"] = serde_json::json!(r2(&m, xt, yt));
            } else {
                metrics["train_accuracy"] = serde_json::json!(accuracy(&m, x, y));
                metrics["test_accuracy"] = serde_json::json!(accuracy(&m, xt, yt));
            }
            if let (Some(path), Some(s)) = (&prep.export, &prep.standardizer) {
                let mut raw = m.clone();
                s.fold_into(&mut raw)?;
                std::fs::write(path, onnx::export(&raw)?).with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Ok(metrics.to_string())
    })
    .map_err(err)
}

/// Runs an analytics job with the three parties in this process. `request` is Bob's
/// [`AnalyzeRequest`] (JSON: his CSV `data`, `stats`, `histograms`, `alice_rows`);
/// `alice_data` is Alice's CSV if she contributes rows. Returns Bob's report (JSON).
#[pyfunction]
#[pyo3(signature = (request, alice_data=None, seed=0))]
fn simulate_analyze(py: Python<'_>, request: &str, alice_data: Option<String>, seed: u64) -> PyResult<String> {
    let req: AnalyzeRequest = serde_json::from_str(request).context("analyze request").map_err(err)?;
    py.detach(|| -> anyhow::Result<String> {
        let bob = party_node::ml::prepare_analyze(Role::Bob, &req)?;
        let alice_req = AnalyzeRequest { plan: Some(bob.plan.clone()), data: alice_data, ..Default::default() };
        let alice = party_node::ml::prepare_analyze(Role::Alice, &alice_req)?;
        ensure!(alice.plan == bob.plan, "alice's and bob's plans differ");
        let mut cfg = LocalConfig::new(seed);
        cfg.fixed = bob.plan.fixed;
        let out = run_parties_with(cfg, |mut party| {
            let (plan, a, b) = (&bob.plan, alice.data.as_ref(), bob.data.as_ref());
            async move {
                let data = match party.id() {
                    PartyId::P0 => a,
                    PartyId::P1 => b,
                    _ => None,
                };
                Ok(mpc_ml::analytics::analyze(&mut party, plan, data).await?)
            }
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let [_, report, _] = out;
        Ok(serde_json::to_string(&report.context("bob's party revealed no statistics")?)?)
    })
    .map_err(err)
}

/// The module `membrane._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MembraneError", m.py().get_type::<MembraneError>())?;
    m.add("Unreachable", m.py().get_type::<Unreachable>())?;
    m.add_function(wrap_pyfunction!(run_node, m)?)?;
    m.add_function(wrap_pyfunction!(node_config, m)?)?;
    m.add_function(wrap_pyfunction!(write_consortium, m)?)?;
    m.add_function(wrap_pyfunction!(call, m)?)?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(write_heldout, m)?)?;
    m.add_function(wrap_pyfunction!(simulate_predict, m)?)?;
    m.add_function(wrap_pyfunction!(simulate_train, m)?)?;
    m.add_function(wrap_pyfunction!(simulate_analyze, m)?)?;
    Ok(())
}
