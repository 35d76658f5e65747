//! Failures of a reduced comparison window, counted at scale against the stated rate.
//!
//! A comparison on a `k`-bit window is exact for `|x| < 2^(k−1)` ulps and otherwise computes
//! the sign of `x mod 2^k` read as a `k`-bit signed number (`mpc_proto::compare`): it fails
//! exactly when bit `k − 1` of `x` differs from its sign bit. Here 10^7 comparisons run through
//! the real protocol (three parties, the dealer, the in-memory transport) on inputs of which a
//! known share lies outside the window; the failures counted must be exactly the predicted
//! elements, and their number must match the stated probability within five standard
//! deviations.
//!
//! The input law: with probability 3/4 a value uniform inside the window (never fails), with
//! probability 1/4 a value uniform in `[−2^(k+1), 2^(k+1))` (fails with probability exactly
//! 1/2: on each sign, bit `k − 1` disagrees with the sign on half of the range). The stated
//! failure probability is therefore 1/8.

use mpc_proto::compare::{Comparisons, Method, Policy};
use mpc_proto::prg::Prg;
use mpc_proto::{LocalConfig, PartyId, RingTensor, run_parties_with};

const K: u32 = 24;
const CHUNK: usize = 500_000;

/// Inputs of the stated law, `n` of them.
fn inputs(n: usize, g: &mut Prg) -> Vec<i64> {
    (0..n)
        .map(|_| {
            let w = g.next_u64();
            if w & 3 != 0 {
                (g.next_u64() as i64) >> (64 - K) // uniform in [−2^(k−1), 2^(k−1))
            } else {
                (g.next_u64() as i64) >> (64 - K - 2) // uniform in [−2^(k+1), 2^(k+1))
            }
        })
        .collect()
}

/// Whether the window's result for `x` differs from `[x < 0]`.
fn predicted_failure(x: i64) -> bool {
    ((x >> (K - 1)) & 1 == 1) != (x < 0)
}

/// Runs `total` comparisons by `method` in chunks; returns (failures, predicted failures, mismatches
/// between the two sets).
fn count(method: Method, total: usize, seed: u64) -> (u64, u64, u64) {
    let mut g = Prg::from_u64(seed);
    let mut cfg = LocalConfig::new(seed);
    cfg.comparisons =
        Some(Comparisons { policy: Policy::Fixed(method), bits: K as u8, ..Comparisons::for_fixed(cfg.fixed) });
    let (mut failed, mut predicted, mut mismatched) = (0u64, 0u64, 0u64);
    let mut done = 0;
    while done < total {
        let n = CHUNK.min(total - done);
        let xs = inputs(n, &mut g);
        let x = RingTensor::from_vec(&[n], xs.iter().map(|&v| v as u64).collect()).unwrap();
        let out = run_parties_with(cfg, |mut p| {
            let x = x.clone();
            async move {
                let v = (p.id() == PartyId::P1).then_some(&x);
                let xs = p.share_input(PartyId::P1, &[n], v)?;
                let b = p.ltz(&xs).await?;
                p.reveal_to(PartyId::P1, &b).await
            }
        })
        .unwrap();
        let bits = out[1].as_ref().unwrap();
        for (&x, &b) in xs.iter().zip(bits.as_slice()) {
            let fail = (b == 1) != (x < 0);
            let pred = predicted_failure(x);
            failed += u64::from(fail);
            predicted += u64::from(pred);
            mismatched += u64::from(fail != pred);
        }
        done += n;
        cfg.seed += 1;
    }
    (failed, predicted, mismatched)
}

fn check(method: Method, total: usize, seed: u64) {
    let (failed, predicted, mismatched) = count(method, total, seed);
    assert_eq!(mismatched, 0, "{method}: every failure is a predicted one and vice versa");
    assert_eq!(failed, predicted);
    let (n, p) = (total as f64, 1.0 / 8.0);
    let sd = (n * p * (1.0 - p)).sqrt();
    let z = (failed as f64 - n * p) / sd;
    eprintln!(
        "{method}: {failed} failures in {total} comparisons (stated rate 1/8: expected {:.0}, z = {z:.2})",
        n * p
    );
    assert!(z.abs() < 5.0, "{method}: failure count {failed} is {z:.1} standard deviations from the stated rate");
}

/// 10^7 comparisons by the cost model's bulk method (the helper), 10^6 by each FSS method.
#[test]
fn window_failures_match_the_stated_rate() {
    check(Method::Helper, 10_000_000, 1);
    check(Method::Fss, 1_000_000, 2);
    check(Method::Fss1, 1_000_000, 3);
}
