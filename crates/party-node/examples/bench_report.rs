//! Turns `party-node bench` results into the generated part of BENCHMARKS.md and SVG charts.
//!
//! `cargo run --release -p party-node --example bench_report -- RESULTS_DIR BENCHMARKS.md CHART_DIR`
//!
//! RESULTS_DIR holds what `tools/bench/regenerate.sh` wrote: `lan.jsonl`, `wan20.jsonl`,
//! `batch.jsonl`, `rtt-<ms>.jsonl` and `machine.txt`. The text between the markers
//! `<!-- bench:begin -->` and `<!-- bench:end -->` in BENCHMARKS.md is replaced; the rest of the
//! file (hand-written notes, micro-benchmarks) is kept. An example, so that `plotters` is a
//! dev-dependency only and never part of the daemon.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use plotters::prelude::*;
use serde_json::Value;

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";

/// The peers' workload names (`shared/anchors`) and ours.
const PEER_NAMES: [(&str, &str); 9] = [
    ("matmul_128x784x128", "matmul"),
    ("mul_1e6", "mul-1m"),
    ("relu_1e5", "relu-100k"),
    ("gt0_1e5", "cmp-100k"),
    ("mlp_a_b1", "mlp-a-b1"),
    ("mlp_a_b128", "mlp-a-b128"),
    ("lenet5_b1", "lenet5-b1"),
    ("lenet5_b64", "lenet5-b64"),
    ("logreg_train_1000x13", "logreg-train"),
];

/// Peer wall times measured in the same sitting: system ("CrypTen", "SPU SEMI2K", …) →
/// our workload name → seconds.
type Peers = BTreeMap<String, BTreeMap<String, f64>>;

fn load_peers(results: &Path) -> Peers {
    let mut peers = Peers::new();
    for (file, system) in [("crypten.jsonl", "CrypTen"), ("spu.jsonl", "SPU")] {
        for v in load(&results.join(file)).unwrap_or_default() {
            let Some(ours) = PEER_NAMES.iter().find(|(p, _)| v["workload"] == *p).map(|(_, o)| *o) else { continue };
            let Some(wall) = v["wall_s_median"].as_f64().filter(|_| v["measured"].as_bool() != Some(false)) else {
                continue;
            };
            let name = match (system, v["provider"].as_str()) {
                ("SPU", Some(p)) => format!("SPU {p}"),
                _ => system.to_string(),
            };
            peers.entry(name).or_default().insert(ours.to_string(), wall);
        }
    }
    peers
}

fn load(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad line in {}", path.display())))
        .collect()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

fn secs(s: f64) -> String {
    if s.is_nan() {
        "—".into()
    } else if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn bytes(b: u64) -> String {
    match b {
        0..1_000 => format!("{b} B"),
        1_000..1_000_000 => format!("{:.1} KB", b as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} MB", b as f64 / 1e6),
        _ => format!("{:.2} GB", b as f64 / 1e9),
    }
}

fn sent(v: &Value, k: &str) -> Vec<u64> {
    v[k].as_array().map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0)).collect()).unwrap_or_default()
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn rtt_ms(v: &Value) -> f64 {
    f(v, "rtt_ms")
}

fn ratio(x: f64) -> String {
    if x.is_finite() { format!("{x:.1}×") } else { "—".into() }
}

fn err(v: &Value) -> String {
    match v["max_abs_err"].as_f64() {
        Some(0.0) => "exact".into(),
        Some(e) => format!("{e:.1e}"),
        None => "—".into(),
    }
}

/// The main table of one network setting.
fn table(out: &mut String, rows: &[Value], peers: Option<&Peers>) {
    let with_crypten = peers.is_some();
    let crypten = |name: &str| peers.and_then(|p| p.get("CrypTen")).and_then(|m| m.get(name)).copied();
    out.push_str("| workload | wall | online | offline | rounds | bytes sent P0 / P1 / P2 | max abs error | plaintext | wall ÷ plaintext |");
    out.push_str(if with_crypten {
        " CrypTen wall | CrypTen ÷ wall | CrypTen ÷ online | ≥ 10× |\n"
    } else {
        "\n"
    });
    out.push_str("|---|---|---|---|---|---|---|---|---|");
    out.push_str(if with_crypten { "---|---|---|---|\n" } else { "\n" });
    for v in rows {
        let name = v["workload"].as_str().unwrap_or("?");
        let (wall, online) = (f(v, "wall_s"), f(v, "online_s"));
        let b = sent(v, "bytes_sent");
        let c = crypten(name);
        let verdict = match c {
            Some(c) if c / wall >= 10.0 => "yes (wall)",
            Some(c) if c / online >= 10.0 => "online only",
            Some(_) => "**no**",
            None => "",
        };
        let _ = write!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            secs(wall),
            secs(online),
            secs(f(v, "offline_s")),
            v["rounds"],
            b.iter().map(|&x| bytes(x)).collect::<Vec<_>>().join(" / "),
            err(v),
            secs(f(v, "plaintext_s")),
            ratio(wall / f(v, "plaintext_s")),
        );
        if with_crypten {
            let _ = write!(
                out,
                " {} | {} | {} | {} |",
                c.map_or("—".into(), secs),
                c.map_or("—".into(), |c| ratio(c / wall)),
                c.map_or("—".into(), |c| ratio(c / online)),
                verdict
            );
        }
        out.push('\n');
    }
}

/// WAN latency against a prediction from the LAN figures and the network: the LAN latency
/// (compute) plus one one-way delay per round (in an opening round both computing parties send
/// at once and wait for each other, so a round costs RTT/2, not a round trip) plus the
/// transfer time at the link rate. The issue's model, rounds × RTT + transfer, is shown too.
fn wan_model(out: &mut String, wan: &[Value], lan: &BTreeMap<String, Value>) {
    out.push_str(
        "| workload | rounds | RTT measured | rounds × RTT + transfer | online LAN | predicted = LAN + rounds × RTT/2 + transfer | online WAN | WAN ÷ predicted | wall LAN | wall predicted | wall WAN | WAN ÷ predicted |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let (mut under, mut within, mut within_wall, mut n) = (0, 0, 0, 0);
    for v in wan {
        let name = v["workload"].as_str().unwrap_or("?");
        let Some(l) = lan.get(name) else { continue };
        n += 1;
        let rtt = rtt_ms(v) / 1e3;
        let rounds = v["rounds"].as_f64().unwrap_or(0.0);
        let rate = v["rate_bps"].as_f64();
        let at_rate = |b: u64| rate.map_or(0.0, |r| b as f64 * 8.0 / r);
        // Online: the largest party's online bytes; wall: every byte a party sends (the dealer's
        // material leaves through its one link).
        let pooled = !f(v, "online_s").is_nan();
        let online_bytes =
            sent(v, if pooled { "online_bytes_sent" } else { "bytes_sent" }).into_iter().max().unwrap_or(0);
        let all_bytes = sent(v, "bytes_sent").into_iter().max().unwrap_or(0);
        let issue = rounds * rtt + at_rate(online_bytes);
        let (on_lan, on_wan) =
            if pooled { (f(l, "online_s"), f(v, "online_s")) } else { (f(l, "wall_s"), f(v, "wall_s")) };
        let on_pred = on_lan + rounds * rtt / 2.0 + at_rate(online_bytes);
        // Wall adds session setup and the dealer material at the link rate. Setup costs two
        // one-way delays: a higher party can write only once the lower party's stream header
        // has arrived, and then its hello travels back.
        let wall_pred = f(l, "wall_s") + (rounds + 2.0) * rtt / 2.0 + at_rate(all_bytes);
        let wall_wan = f(v, "wall_s");
        under += usize::from(on_wan <= issue);
        within += usize::from(on_wan / on_pred <= 1.1);
        within_wall += usize::from(wall_wan / wall_pred <= 1.1);
        let _ = writeln!(
            out,
            "| {name}{} | {rounds} | {:.1} ms | {} | {} | {} | {} | {:.2} | {} | {} | {} | {:.2} |",
            if pooled { "" } else { " (wall only)" },
            rtt * 1e3,
            secs(issue),
            secs(on_lan),
            secs(on_pred),
            secs(on_wan),
            on_wan / on_pred,
            secs(f(l, "wall_s")),
            secs(wall_pred),
            secs(wall_wan),
            wall_wan / wall_pred,
        );
    }
    let _ = writeln!(
        out,
        "\nAt most 10 % above the prediction: online {within} of {n} workloads, wall {within_wall} of {n}. \
         Online latency at or below the issue's rounds × RTT + transfer: {under} of {n}."
    );
}

fn layers(out: &mut String, v: &Value) {
    let name = v["workload"].as_str().unwrap_or("?");
    let _ = writeln!(out, "\n**{name}** (P1's view of the last counted run)\n");
    out.push_str("| stage | online pass | rounds | online bytes sent (P1) | wall run (dealer on demand) | dealer material (P1) |\n|---|---|---|---|---|---|\n");
    let on = v["layers_online"].as_array().cloned().unwrap_or_default();
    let wall = v["layers_wall"].as_array().cloned().unwrap_or_default();
    for (i, l) in on.iter().enumerate() {
        let w = wall.get(i).cloned().unwrap_or(Value::Null);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            l["name"].as_str().unwrap_or("?"),
            secs(f(l, "seconds")),
            l["rounds"],
            bytes(l["online_sent"].as_u64().unwrap_or(0)),
            secs(f(&w, "seconds")),
            bytes(w["offline_bytes"].as_u64().unwrap_or(0)),
        );
    }
}

/// Our wall and online figures beside every peer's wall time.
fn peer_table(out: &mut String, lan: &BTreeMap<String, Value>, peers: &Peers) {
    if peers.is_empty() {
        return;
    }
    out.push_str("\n#### Side by side with the peers (wall time, seconds; ratio = peer ÷ ours, wall)\n\n| workload | ours wall | ours online |");
    for p in peers.keys() {
        let _ = write!(out, " {p} | ÷ |");
    }
    out.push_str("\n|---|---|---|");
    for _ in peers.keys() {
        out.push_str("---|---|");
    }
    out.push('\n');
    for (_, name) in PEER_NAMES {
        let Some(v) = lan.get(name) else { continue };
        let wall = f(v, "wall_s");
        let _ = write!(out, "| {name} | {} | {} |", secs(wall), secs(f(v, "online_s")));
        for m in peers.values() {
            match m.get(name) {
                Some(&t) => {
                    let _ = write!(out, " {} | {} |", secs(t), ratio(t / wall));
                }
                None => out.push_str(" — | — |"),
            }
        }
        out.push('\n');
    }
}

/// Each comparison method forced (`--nonlinear helper|fss|fss1`) beside the cost model's choice.
fn methods_table(out: &mut String, lan: &BTreeMap<String, Value>, forced: &[(&str, Vec<Value>)]) {
    if forced.iter().all(|(_, v)| v.is_empty()) {
        return;
    }
    out.push_str(
        "\n### Comparison methods (LAN)\n\n\
         Every comparison of the workload forced to one method (`party-node bench --nonlinear M`), and `auto`: \
         the cost model's per-layer choice (the standard run above; its choices in the last column). \
         Dealer material is P2's bytes sent.\n\n\
         | workload | method | wall | online | offline | rounds | dealer material | max abs error |\n|---|---|---|---|---|---|---|---|\n",
    );
    let names: Vec<String> = forced
        .iter()
        .flat_map(|(_, v)| v.iter().filter_map(|x| x["workload"].as_str().map(String::from)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for name in names {
        let mut rows: Vec<(String, &Value)> = forced
            .iter()
            .filter_map(|(m, v)| v.iter().find(|x| x["workload"] == name.as_str()).map(|x| (m.to_string(), x)))
            .collect();
        if let Some(a) = lan.get(&name) {
            let chosen = a["methods"]
                .as_array()
                .map_or(String::new(), |m| m.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "));
            rows.push((format!("auto ({chosen})"), a));
        }
        for (m, v) in rows {
            let _ = writeln!(
                out,
                "| {name} | {m} | {} | {} | {} | {} | {} | {} |",
                secs(f(v, "wall_s")),
                secs(f(v, "online_s")),
                secs(f(v, "offline_s")),
                v["rounds"],
                bytes(sent(v, "bytes_sent").get(2).copied().unwrap_or(0)),
                err(v)
            );
        }
    }
    // The cost model's crossover for one ReLU layer, on the links measured.
    out.push_str(
        "\n**Crossover** (`mpc_proto::compare::cost::crossover`: one ReLU layer of n elements, 25-bit window as the \
         relu-100k workload declares; the size from which the cost model switches method):\n\n\
         | link | objective | choice by size |\n|---|---|---|\n",
    );
    use mpc_proto::compare::{Link, Objective, cost};
    for (label, link) in [
        ("LAN (0.2 ms, 4 Gbit/s)", Link { rtt_us: 200, mbit_s: 4000 }),
        ("WAN (20 ms, 1 Gbit/s)", Link { rtt_us: 20_000, mbit_s: 1000 }),
        ("WAN (50 ms, 100 Mbit/s)", Link { rtt_us: 50_000, mbit_s: 100 }),
    ] {
        for (obj, oname) in [(Objective::Wall, "wall"), (Objective::Latency, "latency")] {
            let c = cost::crossover(&link, obj, 25);
            let text = c.iter().map(|(n, m)| format!("{m:?} from {n}")).collect::<Vec<_>>().join(", ");
            let _ = writeln!(out, "| {label} | {oname} | {text} |");
        }
    }
}

/// Throughput of a large prediction through the daemons, per micro-batch.
fn throughput_table(out: &mut String, tp: &[Value]) {
    for v in tp {
        let _ = writeln!(
            out,
            "\n### Throughput through the daemons: {} ({} rows of the bundled MNIST CNN)\n\n\
             `party-node bench --workload {}`: three `party-node run` processes, Bob's rows read and his logits \
             written one micro-batch at a time. A fresh consortium per row of the table (peak RSS is each process's \
             VmHWM during the job), one unmeasured 200-row job first. Agreement: predicted class equal to the \
             plaintext f64 evaluation's.\n\n\
             | micro-batch | chosen by | rows/s | wall | peak RSS alice / bob / dealer | dealer bytes per row | max abs error | class agrees |\n\
             |---|---|---|---|---|---|---|---|",
            v["workload"].as_str().unwrap_or("?"),
            v["rows"],
            v["workload"].as_str().unwrap_or("?"),
        );
        for r in v["sweep"].as_array().into_iter().flatten() {
            let rss = r["peak_rss_mib"]
                .as_array()
                .map(|a| a.iter().map(|x| format!("{:.0}", x.as_f64().unwrap_or(0.0))).collect::<Vec<_>>().join(" / "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {rss} MiB | {} | {} | {} / {} |",
                r["micro_batch"],
                r["chosen_by"].as_str().unwrap_or("?"),
                f(r, "rows_per_s"),
                secs(f(r, "wall_s")),
                bytes(f(r, "dealer_bytes_per_row") as u64),
                err(r),
                r["argmax_agree"],
                v["rows"]
            );
        }
        let _ = writeln!(
            out,
            "\nBest fixed micro-batch ÷ the nodes' choice: {:.2} (target ≤ 1.5).",
            f(v, "best_over_chosen")
        );
    }
}

/// Warm-pool latency through the daemons against the bench's online figure.
fn pool_table(out: &mut String, pool: &[Value], lan: &BTreeMap<String, Value>) {
    if pool.is_empty() {
        return;
    }
    out.push_str(
        "\n### Latency through the daemons with a warm pool\n\n\
         `party-node bench --workload pool-lenet5-b1,pool-mlp-a-b1`: three `party-node run` processes, the committed \
         fixture, one row. The first job makes its material on demand; every later job starts once the three warm \
         pools are full, and runs only its online phase. Latency = Bob's job record `seconds`: from his submission \
         (Alice's and the dealer's were in first) to his output file written and synced. Beside it, the bench's \
         online figure for the same architecture (three processes, material delivered before a barrier).\n\n\
         | workload | cold | warm (median) | warm, model stages only | bench online | warm ÷ bench online |\n|---|---|---|---|---|---|\n",
    );
    for v in pool {
        let name = v["workload"].as_str().unwrap_or("?");
        let online = lan.get(name.trim_start_matches("pool-")).map_or(f64::NAN, |l| f(l, "online_s"));
        let warm = f(v, "warm_s_median");
        let _ = writeln!(
            out,
            "| {name} | {} | {} ({} jobs) | {} | {} | {} |",
            secs(f(v, "cold_s")),
            secs(warm),
            v["warm_s_runs"].as_array().map_or(0, Vec::len),
            secs(f(v, "warm_stages_s_median")),
            secs(online),
            ratio(warm / online)
        );
    }
}

/// How a series is drawn.
#[derive(Clone, Copy, PartialEq)]
enum Line {
    /// Measured online latency.
    Bold,
    /// Measured wall latency.
    Thin,
    /// A model, not a measurement.
    Dashed,
}

type Series = (String, Vec<(f64, f64)>, RGBColor, Line);

/// One point of the RTT sweep: RTT set (ms), online (s), wall (s), rounds, RTT measured (ms).
type RttPoint = (f64, f64, f64, f64, f64);

fn chart(path: &Path, title: &str, xlabel: &str, log_axes: bool, series: &[Series]) -> anyhow::Result<()> {
    let pts = series.iter().flat_map(|s| s.1.iter()).filter(|p| p.1.is_finite());
    let (xmax, ymin, ymax) = pts.fold((0f64, f64::INFINITY, 0f64), |(a, b, c), &(x, y)| (a.max(x), b.min(y), c.max(y)));
    if !ymax.is_finite() || ymax <= 0.0 {
        bail!("no data for {}", path.display());
    }
    let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    macro_rules! draw {
        ($x:expr, $y:expr, $yfmt:expr, $ydesc:expr) => {{
            let mut c = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d($x, $y)?;
            c.configure_mesh()
                .light_line_style(WHITE)
                .x_desc(xlabel)
                .y_desc($ydesc)
                .x_label_formatter(&|v: &f64| format!("{v:.0}"))
                .y_label_formatter($yfmt)
                .draw()?;
            for (name, data, color, line) in series {
                let style = ShapeStyle {
                    color: color.to_rgba(),
                    filled: true,
                    stroke_width: if *line == Line::Bold { 3 } else { 1 },
                };
                let d: Vec<(f64, f64)> = data.iter().copied().filter(|p| p.1.is_finite()).collect();
                let legend = move |(x, y): (i32, i32)| PathElement::new(vec![(x, y), (x + 18, y)], style);
                if *line == Line::Dashed {
                    c.draw_series(DashedLineSeries::new(d.clone(), 6, 4, style))?.label(name.as_str()).legend(legend);
                } else {
                    c.draw_series(LineSeries::new(d.clone(), style))?.label(name.as_str()).legend(legend);
                    c.draw_series(d.iter().map(|&p| Circle::new(p, 3, style)))?;
                }
            }
            c.configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }};
    }
    if log_axes {
        draw!(
            (0.8..xmax * 1.3).log_scale(),
            ((ymin / 1.5)..(ymax * 1.5)).log_scale(),
            &|v: &f64| if *v >= 1.0 { format!("{v:.0} s") } else { format!("{:.0} ms", v * 1e3) },
            "latency (log scale)"
        );
    } else {
        draw!(-1.0..xmax + 2.0, 0.0..ymax * 1.1, &|v: &f64| format!("{:.0} ms", v * 1e3), "latency");
    }
    root.present()?;
    Ok(())
}

/// Rows per second against the micro-batch size (log x axis).
fn throughput_chart(path: &Path, pts: &[(f64, f64)]) -> anyhow::Result<()> {
    let (xmax, ymax) = pts.iter().fold((1f64, 0f64), |(a, b), &(x, y)| (a.max(x), b.max(y)));
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut c = ChartBuilder::on(&root)
        .caption("Prediction throughput vs micro-batch (MNIST CNN, 3 daemons, LAN)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d((pts.first().map_or(1.0, |p| p.0) / 1.5..xmax * 1.5).log_scale(), 0.0..ymax * 1.15)?;
    c.configure_mesh()
        .light_line_style(WHITE)
        .x_desc("rows per micro-batch (log scale)")
        .y_desc("rows per second")
        .x_label_formatter(&|v: &f64| format!("{v:.0}"))
        .y_label_formatter(&|v: &f64| format!("{v:.0}"))
        .draw()?;
    let blue = RGBColor(31, 119, 180);
    let style = ShapeStyle { color: blue.to_rgba(), filled: true, stroke_width: 3 };
    c.draw_series(LineSeries::new(pts.to_vec(), style))?;
    c.draw_series(pts.iter().map(|&p| Circle::new(p, 4, style)))?;
    root.present()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [results, md, charts] = args.as_slice() else {
        bail!("usage: bench_report RESULTS_DIR BENCHMARKS.md CHART_DIR");
    };
    let (results, md, charts) = (PathBuf::from(results), PathBuf::from(md), PathBuf::from(charts));
    std::fs::create_dir_all(&charts)?;
    let lan = load(&results.join("lan.jsonl"))?;
    let wan = load(&results.join("wan20.jsonl")).unwrap_or_default();
    let batch = load(&results.join("batch.jsonl")).unwrap_or_default();
    let machine = std::fs::read_to_string(results.join("machine.txt")).unwrap_or_default();
    let lan_by: BTreeMap<String, Value> =
        lan.iter().map(|v| (v["workload"].as_str().unwrap_or("?").to_string(), v.clone())).collect();
    let peers = load_peers(&results);

    let mut o = String::new();
    o.push_str(BEGIN);
    o.push_str("\n<!-- Generated by tools/bench/regenerate.sh (crates/party-node/examples/bench_report.rs); edit those, not this section. -->\n\n");
    o.push_str("## End-to-end runs (`party-node bench`)\n\n");
    let _ = writeln!(o, "Machine and run:\n\n```\n{machine}```\n");
    o.push_str(
        "Three `party-node` processes (alice P0, bob P1, dealer P2) talk QUIC with mutual TLS on loopback, \
         started by `party-node bench`. Per workload: warm-up run(s), then counted runs; medians are shown.\n\n\
         * **wall** — the whole job from nothing: session setup, dealer material generated on demand and delivered, \
         online phase, to Bob's decoded output. This is the figure to put beside CrypTen (its dealer works on demand).\n\
         * **online** — the same job when the dealer's material was produced and delivered beforehand (preprocessing \
         pool; a barrier separates the passes): the latency a user waits for when the dealer runs ahead. \
         **offline** — the preprocessing alone (slowest party).\n\
         * **bytes sent** — application payload per party over the whole job (setup, online, dealer material: P2's \
         figure is the dealer material). **rounds** — online rounds on the critical path, reveal included.\n\
         * **max abs error** — against the f64 plaintext evaluation of the same seeded data (for logreg-train: the \
         trained weights against f64 training). **plaintext** — the same in f64 on one core.\n\
         * CrypTen 0.4.1 (2 parties and a trusted dealer) and SecretFlow SPU 0.9.5 (SEMI2K with a trusted first \
         party, ABY3, CHEETAH) were run by `shared/anchors` in the same sitting, on the same host, right after \
         ours (their JSON lines are in docs/bench/results). The target is ≥ 10× CrypTen on every row; the last \
         column says which rows meet it, and on which figure.\n\n",
    );
    o.push_str("### LAN (loopback)\n\n");
    table(&mut o, &lan, Some(&peers));
    peer_table(&mut o, &lan_by, &peers);
    if !wan.is_empty() {
        let rtt = median(&wan.iter().map(rtt_ms).collect::<Vec<_>>());
        let rate = wan[0]["rate_bps"].as_f64().map_or("unlimited".into(), |r| format!("{} Mbit/s", r / 1e6));
        let _ = writeln!(
            o,
            "\n### WAN: 20 ms RTT, {rate} (emulated in the runner; measured RTT {rtt:.1} ms)\n\n\
             `party-node bench --rtt 20ms --rate 1gbit`: every party's outgoing datagrams are held for RTT/2 and paced \
             to the rate by a delaying UDP socket under quinn (no netem, no root). The RTT is measured by a ping over \
             QUIC between the parties' processes. CrypTen's figures are LAN figures, so this table does not compare with \
             them.\n"
        );
        table(&mut o, &wan, None);
        o.push_str(
            "\n#### How close to rounds × RTT + transfer\n\n\
             The issue asks for WAN latency within 10 % of rounds × RTT + transfer time. Two refinements make that \
             testable: the local compute is what the same job takes on the LAN (measured just before), and in an \
             opening round both computing parties send at once and wait for each other, so a round costs one one-way \
             delay (RTT/2), not a round trip (the final reveal is one message). Prediction = LAN latency + rounds × \
             RTT/2 + the largest party's bytes at the link rate (online: its online bytes; wall: everything it sends, \
             i.e. the dealer's material, plus session setup: two one-way delays, as a party can write to a lower party only \
             once that party's stream header has arrived). The LAN figure already contains the loopback \
             transfer of the same bytes, so bandwidth-heavy rows land below 1.0; a ratio below 1.0 also means compute overlapped the network. \
             The target is met where the ratio is at most 1.10.\n\n",
        );
        wan_model(&mut o, &wan, &lan_by);
    }
    for name in ["lenet5-b1", "lenet5-b64"] {
        if let Some(v) = lan_by.get(name) {
            if name == "lenet5-b1" {
                o.push_str("\n### LeNet-5 per layer (LAN)\n");
            }
            layers(&mut o, v);
        }
    }

    let forced: Vec<(&str, Vec<Value>)> = ["helper", "fss", "fss1"]
        .into_iter()
        .map(|m| (m, load(&results.join(format!("methods-{m}.jsonl"))).unwrap_or_default()))
        .collect();
    methods_table(&mut o, &lan_by, &forced);
    let tp = load(&results.join("throughput.jsonl")).unwrap_or_default();
    throughput_table(&mut o, &tp);
    pool_table(&mut o, &load(&results.join("pool.jsonl")).unwrap_or_default(), &lan_by);

    // Charts.
    if let Some(v) = tp.first() {
        let mut pts: Vec<(f64, f64)> =
            v["sweep"].as_array().into_iter().flatten().map(|r| (f(r, "micro_batch"), f(r, "rows_per_s"))).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts.dedup_by(|a, b| a.0 == b.0);
        throughput_chart(&charts.join("throughput-vs-batch.svg"), &pts)?;
    }
    let mut all: Vec<Value> = lan.clone();
    all.extend(batch.iter().cloned());
    let by_batch = |prefix: &str, key: &str| -> Vec<(f64, f64)> {
        let mut m = BTreeMap::new();
        for v in &all {
            if let Some(b) =
                v["workload"].as_str().and_then(|n| n.strip_prefix(prefix)).and_then(|b| b.parse::<u32>().ok())
            {
                m.insert(b, f(v, key));
            }
        }
        m.into_iter().map(|(b, s)| (f64::from(b), s)).collect()
    };
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    chart(
        &charts.join("latency-vs-batch.svg"),
        "Latency vs batch size (LAN, 3 processes, QUIC)",
        "batch size (log scale)",
        true,
        &[
            ("mlp-a online".into(), by_batch("mlp-a-b", "online_s"), blue, Line::Bold),
            ("mlp-a wall".into(), by_batch("mlp-a-b", "wall_s"), blue, Line::Thin),
            ("lenet5 online".into(), by_batch("lenet5-b", "online_s"), orange, Line::Bold),
            ("lenet5 wall".into(), by_batch("lenet5-b", "wall_s"), orange, Line::Thin),
        ],
    )?;
    let mut by_rtt: BTreeMap<String, Vec<RttPoint>> = BTreeMap::new();
    let mut rtt_files: Vec<_> = std::fs::read_dir(&results)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("rtt-")))
        .collect();
    rtt_files.sort();
    for p in &rtt_files {
        for v in load(p)? {
            let set = f(&v, "rtt_set_ms");
            by_rtt.entry(v["workload"].as_str().unwrap_or("?").into()).or_default().push((
                set,
                f(&v, "online_s"),
                f(&v, "wall_s"),
                f(&v, "rounds"),
                rtt_ms(&v),
            ));
        }
    }
    if !by_rtt.is_empty() {
        let colors = [blue, orange, RGBColor(44, 160, 44), RGBColor(214, 39, 40)];
        let mut series = Vec::new();
        for (i, (name, pts)) in by_rtt.iter_mut().enumerate() {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let c = colors[i % colors.len()];
            series.push((format!("{name} online"), pts.iter().map(|p| (p.0, p.1)).collect(), c, Line::Bold));
            series.push((format!("{name} wall"), pts.iter().map(|p| (p.0, p.2)).collect(), c, Line::Thin));
            // Model: the online latency at RTT 0 plus one one-way delay per round.
            let base = pts.first().map_or(f64::NAN, |p| p.1);
            let model = pts.iter().map(|p| (p.0, base + p.3 * p.4 / 2e3)).collect();
            series.push((format!("{name} model: online(0) + rounds × RTT/2"), model, c, Line::Dashed));
        }
        chart(
            &charts.join("latency-vs-rtt.svg"),
            "Latency vs round-trip time (emulated WAN, 1 Gbit/s)",
            "RTT (ms)",
            false,
            &series,
        )?;
        o.push_str(
            "\n### Latency vs RTT (1 Gbit/s link)\n\n\
             | workload | RTT set | RTT measured | rounds | online | model: online(0) + rounds × RTT/2 | wall |\n|---|---|---|---|---|---|---|\n",
        );
        for (name, pts) in &by_rtt {
            let base = pts.first().map_or(f64::NAN, |p| p.1);
            for p in pts {
                let _ = writeln!(
                    o,
                    "| {name} | {} ms | {:.2} ms | {} | {} | {} | {} |",
                    p.0,
                    p.4,
                    p.3,
                    secs(p.1),
                    secs(base + p.3 * p.4 / 2e3),
                    secs(p.2)
                );
            }
        }
    }
    let rel = |p: &str| {
        let c = charts.join(p);
        let base = md.parent().unwrap_or(Path::new("."));
        c.strip_prefix(base).map(Path::to_path_buf).unwrap_or(c).display().to_string()
    };
    let _ = writeln!(
        o,
        "\n### Charts\n\n![latency vs batch size]({})\n\n![latency vs RTT]({})\n",
        rel("latency-vs-batch.svg"),
        rel("latency-vs-rtt.svg")
    );
    if !tp.is_empty() {
        let _ = writeln!(o, "![throughput vs micro-batch]({})\n", rel("throughput-vs-batch.svg"));
    }
    if !batch.is_empty() {
        o.push_str("\n### Batch sweep (LAN)\n\n");
        table(&mut o, &batch, None);
    }
    o.push_str(END);

    let old = std::fs::read_to_string(&md).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &old[..a], o, &old[b + END.len()..]),
        _ => format!("{old}\n{o}\n"),
    };
    std::fs::write(&md, new).with_context(|| format!("writing {}", md.display()))?;
    eprintln!("wrote {} and charts in {}", md.display(), charts.display());
    Ok(())
}
