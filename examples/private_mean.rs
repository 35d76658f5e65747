//! A custom protocol: the mean of Alice's and Bob's private salary lists, pooled, revealed to
//! both — neither learns the other's individual values.
//!
//! Run with `cargo run --release --example private_mean`.

use anyhow::Context;
use mpc_proto::{FixedPoint, PartyId, RingTensor, run_parties};

fn main() -> anyhow::Result<()> {
    let fx = FixedPoint::default();
    let alice = [52_000.0, 61_500.0, 48_250.0];
    let bob = [75_000.0, 39_900.0, 58_100.0, 66_600.0];
    let total = (alice.len() + bob.len()) as f64;

    let results = run_parties(7, |mut party| async move {
        let me = party.id();
        // Scale to thousands so every sum stays well inside the fixed-point range.
        let enc = |v: &[f64]| {
            fx.encode_slice(&v.iter().map(|s| s / 1000.0).collect::<Vec<_>>(), &[v.len()]).expect("encodable")
        };
        let a: Option<RingTensor> = (me == PartyId::P0).then(|| enc(&alice));
        let b: Option<RingTensor> = (me == PartyId::P1).then(|| enc(&bob));
        let a = party.share_input(PartyId::P0, &[alice.len()], a.as_ref())?;
        let b = party.share_input(PartyId::P1, &[bob.len()], b.as_ref())?;
        // Sums are local; dividing by the public count is a public fixed-point multiplication.
        let sum = a.sum_axis(0)?.add(&b.sum_axis(0)?)?.reshape(&[1])?;
        let mean = party.mul_const(&sum, 1000.0 / total)?;
        party.open(&mean).await
    })
    .context("private mean failed")?;

    let want = (alice.iter().sum::<f64>() + bob.iter().sum::<f64>()) / total;
    for (who, r) in ["Alice", "Bob"].iter().zip(&results) {
        let got = fx.decode(r.as_ref().context("computing parties learn the mean")?.as_slice()[0]);
        println!("{who} learns the pooled mean salary: {got:.2} (plaintext {want:.2})");
        anyhow::ensure!((got - want).abs() < 0.5, "mean off by more than 0.5");
    }
    println!("The dealer learns: {:?}", results[2]);
    Ok(())
}
