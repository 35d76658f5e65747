//! `party-node bench --workload mnist-cnn-10k`: throughput of a large prediction through the
//! daemons. Three `party-node run` processes (the same [`local::Consortium`] as `local
//! predict`); Alice publishes the bundled MNIST CNN (inputs declared in [0, 1]); Bob predicts
//! 10,000 rows (the 100 bundled test images, tiled, each copy scaled slightly differently) once
//! with the micro-batch the nodes choose from their memory budget and once per fixed micro-batch
//! of the sweep. Per run: rows/s, each node's peak RSS during the job (VmHWM, reset before),
//! the dealer's bytes per row, and the largest difference from the plaintext f64 evaluation.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, ensure};
use mpc_ml::{OutputPolicy, npy};
use ndarray::{ArrayD, Axis};
use party_node::config::Mode;
use serde_json::{Value, json};

use crate::local::{self, Consortium};

const MODEL: &[u8] = include_bytes!("../../../fixtures/onnx/mnist_cnn.onnx");
const IMAGES: &[u8] = include_bytes!("../../../fixtures/onnx/mnist_cnn.input.npy");
const LENET5: (&[u8], &[u8]) =
    (include_bytes!("../../../fixtures/onnx/lenet5.onnx"), include_bytes!("../../../fixtures/onnx/lenet5.input.npy"));
const NETWORK_A: (&[u8], &[u8]) = (
    include_bytes!("../../../fixtures/onnx/network_a.onnx"),
    include_bytes!("../../../fixtures/onnx/network_a.input.npy"),
);

/// `pool-lenet5-b1` / `pool-mlp-a-b1`: the committed LeNet-5 or Network A (MLP-A) fixture, one
/// row, through the daemons with a warm pool.
pub(crate) fn parse_pool(name: &str) -> Option<(&'static [u8], &'static [u8])> {
    match name {
        "pool-lenet5-b1" => Some(LENET5),
        "pool-mlp-a-b1" => Some(NETWORK_A),
        _ => None,
    }
}

/// Latency of a one-row prediction through three daemons: one cold job (material made on
/// demand), then `runs` jobs each started once every node's warm pool is full. The figure is
/// Bob's job record's `seconds`: from his submission (Alice's and the dealer's were in first,
/// as when they serve) to his output written. One JSON line (also appended to `json_out`).
pub(crate) fn pool_latency(
    name: &str,
    fixture: (&[u8], &[u8]),
    runs: usize,
    json_out: Option<&Path>,
    mode: Mode,
) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("membrane-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let model = dir.join("model.onnx");
    std::fs::write(&model, fixture.0)?;
    let x = npy::parse(fixture.1).map_err(anyhow::Error::msg)?;
    let x = x.slice_axis(Axis(0), (0..1).into()).to_owned();
    let input = dir.join("row.npy");
    npy::write(&input, &x)?;
    let output = dir.join("out.npy");
    let in_unit = x.iter().all(|&v| (0.0..=1.0).contains(&v));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut c = Consortium::start(false, mode)?;
    let opts = local::PublishOptions { input_range: in_unit.then_some([0.0, 1.0]), ..Default::default() };
    rt.block_on(local::publish(&mut c, &model, OutputPolicy::Logits, &opts))?;
    let path = input.display().to_string();
    let job = |c: &mut Consortium| -> anyhow::Result<(f64, f64, bool)> {
        let r = rt.block_on(local::run_predict(c, "model", &path, &output, None))?;
        let b = &r.bob_job;
        let stages: f64 = b["layers"].as_array().map_or(0.0, |l| l.iter().filter_map(|x| x["seconds"].as_f64()).sum());
        Ok((b["seconds"].as_f64().unwrap_or(f64::NAN), stages, b["rows"]["from_pool"].as_u64().unwrap_or(0) > 0))
    };
    eprintln!("{name}: cold job, then {runs} with a warm pool…");
    let (cold, _, _) = job(&mut c)?;
    let (mut warm, mut stages, mut missed) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        if !rt.block_on(local::wait_pool(&mut c, "model", std::time::Duration::from_secs(30)))? {
            missed += 1;
        }
        let (s, st, pooled) = job(&mut c)?;
        if pooled {
            warm.push(s);
            stages.push(st);
        } else {
            missed += 1;
        }
    }
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let line = json!({
        "workload": name,
        "cold_s": cold,
        "warm_s_median": median(&mut warm.clone()),
        "warm_s_runs": warm,
        "warm_stages_s_median": median(&mut stages),
        "not_from_pool": missed,
    });
    println!("{line}");
    if let Some(p) = json_out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
        writeln!(f, "{line}")?;
    }
    Ok(line)
}

/// `mnist-cnn-<rows>` (`10k` = 10,000), if `name` is a throughput workload.
pub(crate) fn parse(name: &str) -> Option<anyhow::Result<usize>> {
    let rest = name.strip_prefix("mnist-cnn-")?;
    let (digits, mult) = match rest.strip_suffix('k') {
        Some(d) => (d, 1000),
        None => (rest, 1),
    };
    Some(
        digits
            .parse::<usize>()
            .ok()
            .map(|n| n * mult)
            .filter(|&n| (1..=1_000_000).contains(&n))
            .with_context(|| format!("bad row count in workload {name:?}: mnist-cnn-N or mnist-cnn-Nk, 1 to 1000k")),
    )
}

/// `rows` rows from the bundled images.
fn rows_input(rows: usize) -> anyhow::Result<ArrayD<f64>> {
    let x = npy::parse(IMAGES).map_err(anyhow::Error::msg)?;
    let n = x.shape()[0];
    let parts: Vec<ArrayD<f64>> = (0..rows.div_ceil(n))
        .map(|c| {
            let take = n.min(rows - c * n);
            x.slice_axis(Axis(0), (0..take).into()).mapv(|v| v * (1.0 - 0.001 * (c % 100) as f64))
        })
        .collect();
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    Ok(ndarray::concatenate(Axis(0), &views)?)
}

/// A process's peak resident set (VmHWM) in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Resets a process's peak RSS to its current RSS (`clear_refs` 5; Linux ≥ 4.0).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Runs the workload; one JSON line (also appended to `json_out`).
pub(crate) fn run(
    name: &str,
    rows: usize,
    sweep: &[usize],
    json_out: Option<&Path>,
    mode: Mode,
) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("membrane-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let model = dir.join("mnist_cnn.onnx");
    std::fs::write(&model, MODEL)?;
    let x = rows_input(rows)?;
    let input = dir.join("rows.npy");
    npy::write(&input, &x)?;
    let output = dir.join("out.npy");
    eprintln!("{name}: plaintext reference of {rows} rows…");
    let want = mpc_ml::onnx::import_file(&model)?.model.eval_plain(&x);
    drop(x);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let warm = rows.min(200);
    let warm_in = dir.join("warm.npy");
    npy::write(&warm_in, &rows_input(warm)?)?;
    let mut sweep = sweep.to_vec();
    sweep.sort_unstable();
    let mut runs = Vec::new();
    // A fresh consortium per run (peak RSS is per process), after one unmeasured job
    // (connections' congestion windows, page cache, allocator).
    for micro in std::iter::once(None).chain(sweep.into_iter().map(Some)) {
        let label = micro.map_or("chosen by the nodes".to_string(), |b| b.to_string());
        eprintln!("{name}: micro-batch {label}…");
        let mut c = Consortium::start(false, mode)?;
        let opts = local::PublishOptions { input_range: Some([0.0, 1.0]), ..Default::default() };
        rt.block_on(local::publish(&mut c, &model, OutputPolicy::Logits, &opts))?;
        rt.block_on(local::run_predict(&mut c, "model", &warm_in.display().to_string(), &output, None))?;
        let pids = c.pids();
        pids.iter().for_each(|&p| reset_peak(p));
        let t0 = Instant::now();
        let r = rt.block_on(local::run_predict(&mut c, "model", &input.display().to_string(), &output, micro))?;
        let wall = t0.elapsed().as_secs_f64();
        let rss: Vec<f64> = pids.iter().map(|&p| (peak_rss_mib(p) * 10.0).round() / 10.0).collect();
        drop(c);
        ensure!(r.output.shape() == want.shape(), "output of shape {:?}", r.output.shape());
        let err = r.output.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let arg = |v: ndarray::ArrayView1<'_, f64>| {
            v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
        };
        let got2 = r.output.view().into_dimensionality::<ndarray::Ix2>()?;
        let want2 = want.view().into_dimensionality::<ndarray::Ix2>()?;
        let agree = got2.outer_iter().zip(want2.outer_iter()).filter(|(g, w)| arg(g.view()) == arg(w.view())).count();
        let sent = |j: &Value| {
            j["total"]["offline_sent"].as_u64().unwrap_or(0) + j["total"]["online_sent"].as_u64().unwrap_or(0)
        };
        // The dealer's traffic (dealer mode), or what the two parties send each other (2pc).
        let dealer_bytes = r.jobs.get(2).map(sent);
        let party_bytes: u64 = r.jobs.iter().take(2).map(sent).sum();
        let b = r.bob_job["rows"]["micro_batch"].as_u64().unwrap_or(0);
        let line = json!({
            "micro_batch": b,
            "chosen_by": if micro.is_some() { "fixed" } else { "nodes" },
            "rows_per_s": rows as f64 / wall,
            "wall_s": wall,
            "peak_rss_mib": rss,
            "dealer_bytes_per_row": dealer_bytes.map(|b| b as f64 / rows as f64),
            "party_bytes_per_row": party_bytes as f64 / rows as f64,
            "max_abs_err": err,
            "argmax_agree": agree,
        });
        eprintln!("  {line}");
        runs.push(line);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let best = runs.iter().filter_map(|r| r["rows_per_s"].as_f64()).fold(0.0, f64::max);
    let auto = &runs[0];
    let line = json!({
        "workload": name,
        "rows": rows,
        "micro_batch": auto["micro_batch"],
        "rows_per_s": auto["rows_per_s"],
        "wall_s": auto["wall_s"],
        "peak_rss_mib": auto["peak_rss_mib"],
        "mode": mode.to_string(),
        "dealer_bytes_per_row": auto["dealer_bytes_per_row"],
        "party_bytes_per_row": auto["party_bytes_per_row"],
        "max_abs_err": auto["max_abs_err"],
        "argmax_agree": auto["argmax_agree"],
        "best_rows_per_s": best,
        "best_over_chosen": best / auto["rows_per_s"].as_f64().unwrap_or(f64::NAN),
        "memory_mib": party_node::config::Limits::default().memory_mib,
        "sweep": runs,
    });
    println!("{line}");
    if let Some(p) = json_out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
        writeln!(f, "{line}")?;
    }
    Ok(line)
}
