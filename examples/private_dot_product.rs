//! A custom protocol written only against the public API: the dot product of Alice's private
//! weight vector and Bob's private feature vector, revealed to Bob alone.
//!
//! Run with `cargo run --release --example private_dot_product`.

use anyhow::Context;
use mpc_proto::{FixedPoint, PartyId, run_parties};

fn main() -> anyhow::Result<()> {
    let fx = FixedPoint::default();
    let alice_weights = [0.25, -1.5, 2.0, 0.125, -0.75];
    let bob_features = [4.0, 0.5, 1.25, -8.0, 2.0];

    let [_, bob, _] = run_parties(2024, |mut party| async move {
        let n = alice_weights.len();
        let me = party.id();
        // Each owner encodes its own vector; the others know only the shape.
        let w = (me == PartyId::P0).then(|| fx.encode_slice(&alice_weights, &[n]).expect("encodable"));
        let x = (me == PartyId::P1).then(|| fx.encode_slice(&bob_features, &[n]).expect("encodable"));
        let w = party.share_input(PartyId::P0, &[n], w.as_ref())?;
        let x = party.share_input(PartyId::P1, &[n], x.as_ref())?;
        // Elementwise secret product (one round), then a local sum and truncation.
        let prod = party.mul(&w, &x).await?;
        let dot = party.trunc(&prod.sum_axis(0)?.reshape(&[1])?, fx.frac_bits);
        let out = party.reveal_to(PartyId::P1, &dot).await?;
        Ok((out, party.stats().total))
    })
    .context("private dot product failed")?;

    let (result, stats) = bob;
    let got = fx.decode(result.context("Bob receives the result")?.as_slice()[0]);
    let want: f64 = alice_weights.iter().zip(&bob_features).map(|(a, b)| a * b).sum();
    println!("Bob learns w·x = {got:.5} (plaintext {want:.5})");
    println!("Bob's traffic: {} rounds, {} bytes sent online", stats.rounds, stats.online_sent);
    anyhow::ensure!((got - want).abs() < 1e-3, "result off by more than 1e-3");
    Ok(())
}
