//! The in-process demo: three parties over the in-memory mesh with the real dealer.

use std::time::Instant;

use anyhow::{Context, ensure};
use mpc_proto::correlations::Bilinear;
use mpc_proto::prg::Prg;
use mpc_proto::{FixedPoint, PartyId, RingTensor, run_parties};
use ndarray::{Array2, Axis};

const FEATURES: usize = 784;
const CLASSES: usize = 10;

/// Seeded uniform reals in `[-r, r)`.
fn reals(rows: usize, cols: usize, r: f64, seed: u64) -> Array2<f64> {
    let mut g = Prg::from_u64(seed);
    Array2::from_shape_simple_fn((rows, cols), || ((g.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * r)
}

pub(crate) fn run(batch: usize) -> anyhow::Result<()> {
    ensure!((1..=4096).contains(&batch), "--batch must be between 1 and 4096");
    let fx = FixedPoint::default();
    // Alice's model: a 784→10 linear scorer. Bob's data: `batch` records of 784 features in [0, 1).
    let weights = reals(FEATURES, CLASSES, 0.1, 1);
    let bias = reals(1, CLASSES, 0.5, 2);
    let records = reals(batch, FEATURES, 1.0, 3).mapv(f64::abs);

    println!("Membrane demo: Alice (P0) owns a {FEATURES}→{CLASSES} linear model, Bob (P1) owns {batch} records,");
    println!("the dealer (P2) supplies correlated randomness. Only Bob learns the scores.\n");

    let enc = |a: &Array2<f64>| fx.encode_array(&a.clone().into_dyn()).context("encoding");
    let (w, b, x) = (enc(&weights)?, enc(&bias)?.reshape(&[CLASSES])?, enc(&records)?);
    let started = Instant::now();
    let results = run_parties(42, |mut party| {
        let (w, b, x) = (w.clone(), b.clone(), x.clone());
        async move {
            let me = party.id();
            let is = |p: PartyId, t: &RingTensor| (me == p).then(|| t.clone());
            let w = party.share_input(PartyId::P0, w.shape(), is(PartyId::P0, &w).as_ref())?;
            let b = party.share_input(PartyId::P0, b.shape(), is(PartyId::P0, &b).as_ref())?;
            let x = party.share_input(PartyId::P1, x.shape(), is(PartyId::P1, &x).as_ref())?;
            // Once per model: open W − B for a fixed random B.
            let w = party.preopen(Bilinear::MatMul, &w).await?;
            // Per query: one round for the product; the bias add is local.
            let t = Instant::now();
            let y = party.matmul_preopened(&x, &w).await?;
            let bias_rows = b.reshape(&[1, CLASSES])?;
            let y = y.add(&broadcast_rows(&bias_rows, batch)?)?;
            let out = party.reveal_to(PartyId::P1, &y).await?;
            Ok((out, party.stats().clone(), t.elapsed()))
        }
    })
    .context("the private job failed")?;
    let total = started.elapsed();

    let scores = fx.decode_tensor(results[1].0.as_ref().context("Bob receives the scores")?);
    let plain = records.dot(&weights) + &bias;
    let err = scores.iter().zip(plain.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let argmax =
        |row: ndarray::ArrayView1<'_, f64>| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
    let scores2 = scores.into_dimensionality::<ndarray::Ix2>()?;
    let agree =
        scores2.axis_iter(Axis(0)).zip(plain.axis_iter(Axis(0))).filter(|(s, p)| argmax(*s) == argmax(*p)).count();

    println!("result (Bob): max |private − plaintext| = {err:.2e}; top class agrees on {agree}/{batch} records");
    println!(
        "time: {:.1} ms for the whole job (setup, dealer, pre-opening, query); query {:.1} ms\n",
        total.as_secs_f64() * 1e3,
        results[1].2.as_secs_f64() * 1e3
    );
    println!("{:<8} {:>8} {:>14} {:>16}", "party", "rounds", "online sent", "dealer material");
    for (name, r) in ["Alice", "Bob", "dealer"].iter().zip(&results) {
        let t = r.1.total;
        println!("{name:<8} {:>8} {:>12} B {:>14} B", t.rounds, t.online_sent, t.offline_sent);
    }
    println!("\nNext: `cargo test --workspace` runs the test suite; examples/ has custom protocols");
    println!("(`cargo run --release --example private_dot_product`); README.md maps the crates.");
    ensure!(err < 1e-2 && agree == batch, "private result disagrees with plaintext");
    Ok(())
}

/// A `[1, n]` share repeated to `[rows, n]` (local).
fn broadcast_rows(row: &mpc_proto::AShare, rows: usize) -> mpc_proto::Result<mpc_proto::AShare> {
    let n = row.shape()[1];
    row.map_linear(
        |_| Ok(vec![rows, n]),
        |t| RingTensor::from_vec(&[rows, n], t.as_slice().iter().copied().cycle().take(rows * n).collect()),
    )
}
