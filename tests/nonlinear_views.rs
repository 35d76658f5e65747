//! View tests: what each party *receives* during a comparison does not depend on the other
//! parties' secrets.
//!
//! Every frame a party receives is recorded under the real protocol (three parties, the real
//! seed-compressed dealer, in-memory transport). The same program runs on two inputs that differ
//! only in sign — every element positive, or every element negative, which is exactly the bit
//! being computed — and the distributions of the recorded views are compared with two-sample
//! chi-square tests (histograms over all elements, strict thresholds: about six standard
//! deviations, so the tests are deterministic in practice and a real leak shows as a χ² in the
//! thousands). For P2, the helper, the test also checks the statistics the security argument
//! names: whether a zero term exists, where it sits, and the non-zero sums.

use std::sync::{Arc, Mutex};

use mpc_proto::compare::helper::P;
use mpc_proto::compare::{Comparisons, Method, Policy};
use mpc_proto::testing::run_two_parties_on;
use mpc_proto::transport::frame::{self, FrameKind};
use mpc_proto::transport::{BoxFuture, Traffic, Transport, TransportError};
use mpc_proto::{LocalConfig, MemoryTransport, PartyId, RingTensor, testing::run_parties_on};

/// A transport that keeps a copy of every frame it receives.
struct Recording {
    inner: MemoryTransport,
    log: Mutex<Vec<(PartyId, Vec<u8>)>>,
}

impl Transport for Recording {
    fn local_id(&self) -> PartyId {
        self.inner.local_id()
    }
    fn send(&self, to: PartyId, f: Vec<u8>) -> BoxFuture<'_, Result<(), TransportError>> {
        self.inner.send(to, f)
    }
    fn recv(&self, from: PartyId) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        Box::pin(async move {
            let f = self.inner.recv(from).await?;
            self.log.lock().unwrap().push((from, f.clone()));
            Ok(f)
        })
    }
    fn traffic(&self) -> &Traffic {
        self.inner.traffic()
    }
}

/// Each party's received payloads: `(from, kind, payload)`.
type Views = [Vec<(PartyId, FrameKind, Vec<u8>)>; 3];

const N: usize = 20_000;
const K: u8 = 32;

/// `n` values of many magnitudes, all of one sign.
fn one_sign(n: usize, negative: bool) -> RingTensor {
    let vals = (0..n as i64).map(|i| (i * 7919 % 1_000_000 + 1) * if negative { -1 } else { 1 }).map(|v| v as u64);
    RingTensor::from_vec(&[n], vals.collect()).unwrap()
}

/// Every frame `r` received, decoded: `(from, kind, payload)`.
fn decode(r: &Recording) -> Vec<(PartyId, FrameKind, Vec<u8>)> {
    r.log
        .lock()
        .unwrap()
        .iter()
        .map(|(from, f)| {
            let (h, payload) = frame::decode(f, usize::MAX).unwrap();
            (*from, h.kind, payload.to_vec())
        })
        .collect()
}

/// Runs one ReLU-with-bit layer and one comparison layer over `N` elements of value `±v` by
/// `method`, recording every party's view.
fn views(method: Method, negative: bool, seed: u64) -> Views {
    let rec: Vec<Arc<Recording>> = MemoryTransport::mesh(3)
        .into_iter()
        .map(|t| Arc::new(Recording { inner: t, log: Mutex::new(vec![]) }))
        .collect();
    let transports: Vec<Arc<dyn Transport>> = rec.iter().map(|r| r.clone() as Arc<dyn Transport>).collect();
    let mut cfg = LocalConfig::new(seed);
    cfg.comparisons = Some(Comparisons { policy: Policy::Fixed(method), bits: K, ..Comparisons::for_fixed(cfg.fixed) });
    let x = one_sign(N, negative);
    run_parties_on(transports, cfg, |mut p| {
        let x = x.clone();
        async move {
            let v = (p.id() == PartyId::P0).then_some(&x);
            let xs = p.share_input(PartyId::P0, &[N], v)?;
            p.relu_with_bit(&xs).await?;
            p.ltz(&xs).await?;
            Ok(())
        }
    })
    .unwrap();
    [decode(&rec[0]), decode(&rec[1]), decode(&rec[2])]
}

/// [`views`] in the two-party mode (no dealer: OT-made triples and the AND-gate circuit), on
/// fewer elements; the third view is empty.
fn views_2pc(negative: bool, seed: u64) -> Views {
    const N2: usize = 4000;
    let rec: Vec<Arc<Recording>> = MemoryTransport::mesh(2)
        .into_iter()
        .map(|t| Arc::new(Recording { inner: t, log: Mutex::new(vec![]) }))
        .collect();
    let transports: Vec<Arc<dyn Transport>> = rec.iter().map(|r| r.clone() as Arc<dyn Transport>).collect();
    let mut cfg = LocalConfig::new(seed);
    cfg.comparisons = Some(Comparisons { bits: K, ..Comparisons::for_fixed(cfg.fixed) });
    let x = one_sign(N2, negative);
    run_two_parties_on(transports, cfg, |mut p| {
        let x = x.clone();
        async move {
            let v = (p.id() == PartyId::P0).then_some(&x);
            let xs = p.share_input(PartyId::P0, &[N2], v)?;
            p.relu_with_bit(&xs).await?;
            p.ltz(&xs).await?;
            Ok(())
        }
    })
    .unwrap();
    [decode(&rec[0]), decode(&rec[1]), vec![]]
}

/// Payload bytes a party received from `from` in frames of `kind`, concatenated.
fn bytes(v: &Views, at: PartyId, from: PartyId, kind: FrameKind) -> Vec<u8> {
    v[at.index()].iter().filter(|(f, k, _)| *f == from && *k == kind).flat_map(|(_, _, p)| p.clone()).collect()
}

/// Two-sample chi-square statistic of two histograms (totals may differ) and its degrees of
/// freedom (bins where either is non-empty, minus one).
fn chi2(a: &[u64], b: &[u64]) -> (f64, usize) {
    let (na, nb) = (a.iter().sum::<u64>() as f64, b.iter().sum::<u64>() as f64);
    let (ka, kb) = ((nb / na).sqrt(), (na / nb).sqrt());
    let mut s = 0.0;
    let mut bins = 0usize;
    for (&x, &y) in a.iter().zip(b) {
        if x + y > 0 {
            s += (x as f64 * ka - y as f64 * kb).powi(2) / (x + y) as f64;
            bins += 1;
        }
    }
    (s, bins.saturating_sub(1))
}

/// Asserts two samples come from one distribution: χ² within six standard deviations of its
/// mean (`dof + 6·√(2·dof)`).
fn same_distribution(name: &str, a: &[u64], b: &[u64]) {
    let (s, dof) = chi2(a, b);
    let limit = dof as f64 + 6.0 * (2.0 * dof as f64).sqrt() + 10.0;
    assert!(s <= limit, "{name}: χ² = {s:.1} with {dof} degrees of freedom (limit {limit:.1})");
}

fn byte_hist(b: &[u8]) -> Vec<u64> {
    let mut h = vec![0u64; 256];
    b.iter().for_each(|&x| h[x as usize] += 1);
    h
}

/// The byte histograms of every frame kind each party receives from each peer match across
/// the two inputs.
fn computing_views_match(method: impl std::fmt::Display, a: &Views, b: &Views) {
    for at in PartyId::ALL {
        for from in PartyId::ALL {
            for kind in [FrameKind::Open, FrameKind::Helper, FrameKind::Material, FrameKind::Reveal] {
                let (x, y) = (bytes(a, at, from, kind), bytes(b, at, from, kind));
                assert_eq!(
                    x.len(),
                    y.len(),
                    "{method}: {at} from {from}, {kind:?}: message sizes depend only on shapes"
                );
                if x.is_empty() {
                    continue;
                }
                let name = format!("{method}: what {at} receives from {from} ({kind:?})");
                same_distribution(&name, &byte_hist(&x), &byte_hist(&y));
            }
        }
    }
}

#[test]
fn no_party_view_depends_on_the_sign() {
    for method in Method::ALL {
        let (a, b) = (views(method, false, 40), views(method, true, 41));
        computing_views_match(method, &a, &b);
    }
}

#[test]
fn no_view_depends_on_the_sign_in_the_two_party_mode() {
    // The OT messages (Material), the AND gates' openings and the products' (Open): P0's
    // secret sign changes none of their distributions.
    let (a, b) = (views_2pc(false, 44), views_2pc(true, 45));
    assert!(!bytes(&a, PartyId::P1, PartyId::P0, FrameKind::Open).is_empty(), "the circuit ran");
    computing_views_match("two-party", &a, &b);
}

#[test]
fn the_helper_learns_nothing_from_the_terms() {
    let k = K as usize;
    let (a, b) = (views(Method::Helper, false, 42), views(Method::Helper, true, 43));
    // Per element and layer: P0's k bytes and P1's k bytes at the same rotated positions.
    let stats = |v: &Views| {
        // Each layer's frame packs N·k terms at 7 bits.
        let frames = |from: PartyId| -> Vec<u8> {
            v[2].iter()
                .filter(|(f, kind, _)| *f == from && *kind == FrameKind::Helper)
                .flat_map(|(_, _, p)| mpc_proto::compare::helper::unpack7(p, N * k))
                .collect()
        };
        let (d0, d1) = (frames(PartyId::P0), frames(PartyId::P1));
        assert_eq!(d0.len(), 2 * N * k, "two layers of N elements, k terms each");
        let (mut zero, mut pos, mut nonzero) = (vec![0u64; 2], vec![0u64; k], vec![]);
        for (t0, t1) in d0.chunks(k).zip(d1.chunks(k)) {
            let sums: Vec<u8> = t0.iter().zip(t1).map(|(x, y)| (x + y) % P).collect();
            let z = sums.iter().position(|&s| s == 0);
            zero[usize::from(z.is_some())] += 1;
            if let Some(i) = z {
                pos[i] += 1;
            }
            nonzero.extend(sums.iter().filter(|&&s| s != 0));
            assert!(sums.iter().filter(|&&s| s == 0).count() <= 1, "at most one zero term");
        }
        (zero, pos, nonzero, byte_hist(&d0))
    };
    let (sa, sb) = (stats(&a), stats(&b));
    // The one bit P2 could learn, z = [Y_l < R_l] ⊕ β, is a fair coin for both inputs ...
    for (name, z) in [("positive", &sa.0), ("negative", &sb.0)] {
        let p = z[1] as f64 / (2 * N) as f64;
        let sd = (0.25 / (2 * N) as f64).sqrt();
        assert!((p - 0.5).abs() < 6.0 * sd, "{name}: a zero term in {p:.4} of the comparisons");
    }
    same_distribution("whether a zero term exists", &sa.0, &sb.0);
    // ... its position is uniform ...
    same_distribution("where the zero term sits", &sa.1, &sb.1);
    let expect = sa.1.iter().sum::<u64>() as f64 / k as f64;
    let spread: f64 = sa.1.iter().map(|&c| (c as f64 - expect).powi(2) / expect).sum();
    assert!(spread < (k - 1) as f64 + 6.0 * (2.0 * (k - 1) as f64).sqrt(), "zero positions not uniform: χ² {spread}");
    // ... the other sums are uniform non-zero values, and P0's message bytes uniform in Z_p.
    assert!(sa.2.iter().all(|&s| s < P));
    same_distribution("non-zero term sums", &byte_hist(&sa.2), &byte_hist(&sb.2));
    same_distribution("P0's blinded terms", &sa.3, &sb.3);
    assert!(sa.3[P as usize..].iter().all(|&c| c == 0), "terms are elements of Z_p");
}

#[test]
fn the_distribution_test_detects_a_leak() {
    // Negative control: the statistic separates two visibly different distributions (the
    // opened values' top byte when x itself, not x + r, were sent) at this sample size.
    let a: Vec<u8> = (0..N as u32).map(|i| (i % 256) as u8).collect();
    let b: Vec<u8> = (0..N as u32).map(|i| (i % 200) as u8).collect();
    let (s, dof) = chi2(&byte_hist(&a), &byte_hist(&b));
    assert!(s > dof as f64 + 6.0 * (2.0 * dof as f64).sqrt() + 10.0, "χ² {s} should flag the difference");
}
