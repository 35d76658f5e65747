//! Tampered, desynchronised and mismatched sessions end in clean errors (never a panic or a
//! hang), and a party's view does not depend on the other party's secret.

use std::sync::{Arc, Mutex};

use mpc_proto::prg::Prg;
use mpc_proto::testing::run_parties_on;
use mpc_proto::transport::{BoxFuture, Traffic, Transport, TransportError};
use mpc_proto::{
    CorrelationMode, DealerSource, Error, FixedPoint, LocalConfig, MemoryTransport, Party, PartyId, RingTensor,
    SessionConfig, SessionId,
};

/// Every frame P1 received, with its sender.
type FrameLog = Arc<Mutex<Vec<(PartyId, Vec<u8>)>>>;

/// What the tamperer does to the `nth` frame P1 receives from P0.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    Drop,
    Duplicate,
    Truncate,
    /// Flips header byte `i` counted from the header's start (`i < 0`: from its end).
    FlipHeaderByte(isize),
    /// Corrupts the 2-byte header-length prefix.
    FlipLengthPrefix,
    Reorder,
    None,
}

/// Wraps P1's endpoint: tampers with frames from P0 and records every payload P1 receives.
struct Tamperer {
    inner: MemoryTransport,
    nth: usize,
    how: Tamper,
    seen: Mutex<usize>,
    held: Mutex<Vec<Vec<u8>>>,
    log: FrameLog,
}

impl Transport for Tamperer {
    fn local_id(&self) -> PartyId {
        self.inner.local_id()
    }
    fn send(&self, to: PartyId, frame: Vec<u8>) -> BoxFuture<'_, Result<(), TransportError>> {
        self.inner.send(to, frame)
    }
    fn recv(&self, from: PartyId) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        Box::pin(async move {
            if let Some(f) = self.held.lock().unwrap().pop() {
                return Ok(f);
            }
            let mut f = self.inner.recv(from).await?;
            if from == PartyId::P0 {
                let i = {
                    let mut s = self.seen.lock().unwrap();
                    *s += 1;
                    *s - 1
                };
                if i == self.nth {
                    match self.how {
                        Tamper::Drop => f = self.inner.recv(from).await?,
                        Tamper::Duplicate => self.held.lock().unwrap().push(f.clone()),
                        Tamper::Truncate => f.truncate(f.len() - 3),
                        Tamper::FlipHeaderByte(b) => {
                            let hlen = u16::from_le_bytes([f[0], f[1]]) as isize;
                            let at = if b < 0 { hlen + b } else { b };
                            f[(2 + at) as usize] ^= 0x5a;
                        }
                        Tamper::FlipLengthPrefix => f[0] ^= 0x5a,
                        Tamper::Reorder => {
                            let next = self.inner.recv(from).await?;
                            self.held.lock().unwrap().push(f);
                            f = next;
                        }
                        Tamper::None => {}
                    }
                }
            }
            self.log.lock().unwrap().push((from, f.clone()));
            Ok(f)
        })
    }
    fn traffic(&self) -> &Traffic {
        self.inner.traffic()
    }
}

fn mesh_with(how: Tamper, nth: usize) -> (Vec<Arc<dyn Transport>>, FrameLog) {
    let mut m = MemoryTransport::mesh(3).into_iter();
    let (t0, t1, t2) = (m.next().unwrap(), m.next().unwrap(), m.next().unwrap());
    let log = Arc::new(Mutex::new(vec![]));
    let t1 = Tamperer { inner: t1, nth, how, seen: Mutex::new(0), held: Mutex::new(vec![]), log: log.clone() };
    (vec![Arc::new(t0), Arc::new(t1), Arc::new(t2)], log)
}

/// Four multiplications in a row (frames from P0 to P1: hello, then one per mul).
fn program(x: RingTensor) -> impl Fn(Party) -> BoxFuture<'static, mpc_proto::Result<Option<RingTensor>>> + Sync {
    move |mut p: Party| {
        let x = x.clone();
        Box::pin(async move {
            let v = (p.id() == PartyId::P0).then_some(&x);
            let mut xs = p.share_input(PartyId::P0, x.shape(), v)?;
            for _ in 0..4 {
                xs = p.mul(&xs, &xs).await?;
            }
            p.reveal_to(PartyId::P1, &xs).await
        })
    }
}

/// Frames whose header is dropped, duplicated, reordered, cut or altered end the session with a
/// desync on the receiver (and "peer aborted" on the others). Altered *payload* bytes are not
/// detectable here: integrity is the transport's job (TLS in `party-node`), as the semi-honest
/// model assumes.
#[test]
fn tampered_frames_give_clean_errors() {
    let x = RingTensor::from_vec(&[4], vec![3, 5, 7, 9]).unwrap();
    let cases = [
        (Tamper::Drop, 2),
        (Tamper::Duplicate, 2),
        (Tamper::Truncate, 3),
        (Tamper::FlipHeaderByte(0), 1),  // session id
        (Tamper::FlipHeaderByte(-1), 3), // payload length
        (Tamper::FlipHeaderByte(-2), 2), // kind
        (Tamper::FlipLengthPrefix, 2),
        (Tamper::Reorder, 1),
    ];
    for (how, nth) in cases {
        let (mesh, _) = mesh_with(how, nth);
        let r = run_parties_on(mesh, LocalConfig::new(9), program(x.clone()));
        match r {
            Err(Error::Desync { .. } | Error::PeerAborted(_) | Error::PeerLost { .. }) => {}
            other => panic!("{how:?}@{nth}: expected a desync, got {other:?}"),
        }
    }
    // The untampered run succeeds: the harness itself is sound.
    let (mesh, _) = mesh_with(Tamper::None, 0);
    let out = run_parties_on(mesh, LocalConfig::new(9), program(x.clone())).unwrap();
    let want = x.mul(&x).unwrap();
    let want = want.mul(&want).unwrap();
    let want = want.mul(&want).unwrap();
    assert_eq!(out[1].clone().unwrap(), want.mul(&want).unwrap());
}

#[test]
fn mismatched_configuration_aborts_everywhere() {
    let mesh = MemoryTransport::mesh(3);
    let base = SessionConfig::new(SessionId(77), [1; 32]);
    let configs = [base, SessionConfig { plan_hash: [2; 32], ..base }, base];
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = mesh
            .into_iter()
            .zip(configs)
            .map(|(t, c)| {
                s.spawn(move || {
                    futures::executor::block_on(async move {
                        let mut rng = rand_chacha::ChaCha12Rng::from_seed([t.local_id().0; 32]);
                        Party::connect(Arc::new(t), c, Box::new(DealerSource::default()), &mut rng).await.map(|_| ())
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in results.iter().enumerate() {
        assert!(matches!(r, Err(Error::ConfigMismatch { .. }) | Err(Error::PeerAborted(_))), "P{i}: {r:?}");
    }
    assert!(matches!(results[0], Err(Error::ConfigMismatch { .. })));
    let fx = FixedPoint::new(20, 20).unwrap();
    assert_ne!(fx, FixedPoint::default());
}

#[test]
fn parties_with_different_correlation_sources_refuse_each_other() {
    // P1 brings the in-process test dealer where the others expect the real one: its material
    // would not match theirs, so the hello refuses it before any share moves.
    let mesh = MemoryTransport::mesh(3);
    let config = SessionConfig::new(SessionId(78), [1; 32]);
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = mesh
            .into_iter()
            .map(|t| {
                s.spawn(move || {
                    futures::executor::block_on(async move {
                        let id = t.local_id();
                        let mut rng = rand_chacha::ChaCha12Rng::from_seed([id.0; 32]);
                        let source = if id == PartyId::P1 { CorrelationMode::Test(3) } else { CorrelationMode::Dealer };
                        Party::connect(Arc::new(t), config, source.source(), &mut rng).await.map(|_| ())
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in results.iter().enumerate() {
        assert!(matches!(r, Err(Error::ConfigMismatch { .. }) | Err(Error::PeerAborted(_))), "P{i}: {r:?}");
    }
    let Err(Error::ConfigMismatch { detail, .. }) = &results[0] else { panic!("P0: {:?}", results[0]) };
    assert_eq!(detail, "correlation source dealer vs test");
}

#[test]
fn errors_poison_the_party() {
    let out = mpc_proto::run_parties(10, |mut p| async move {
        let a = p.share_input(PartyId::P0, &[2], (p.id() == PartyId::P0).then(|| RingTensor::zeros(&[2])).as_ref())?;
        let b = p.share_input(PartyId::P0, &[3], (p.id() == PartyId::P0).then(|| RingTensor::zeros(&[3])).as_ref())?;
        // A shape error is the caller's and does not poison (all parties see it identically).
        assert!(matches!(p.mul(&a, &b).await, Err(Error::ShapeMismatch { .. })));
        assert!(!p.is_poisoned());
        p.abort().await;
        Ok(matches!(p.mul(&a, &a).await, Err(Error::Poisoned)))
    })
    .unwrap();
    assert_eq!(out, [true, true, true]);
}

/// Chi-square statistic of byte values against uniform (255 degrees of freedom).
fn chi2_uniform(bytes: &[u8]) -> f64 {
    let mut h = [0f64; 256];
    for &b in bytes {
        h[b as usize] += 1.0;
    }
    let e = bytes.len() as f64 / 256.0;
    h.iter().map(|o| (o - e) * (o - e) / e).sum()
}

#[test]
fn p1_view_of_a_mul_does_not_depend_on_p0_input() {
    // Two runs with P0's input all zeros vs all 0xFFFF…: P1 receives P0's masked openings; both
    // must look uniform. Chi-square with 255 d.o.f.: mean 255, sd ≈ 22.6; 400 is > 6 sd.
    let n = 50_000;
    let mut views = vec![];
    for x in [RingTensor::zeros(&[n]), RingTensor::filled(&[n], u64::MAX / 3)] {
        let (mesh, log) = mesh_with(Tamper::None, usize::MAX);
        let y = RingTensor::random(&[n], &mut Prg::from_u64(5));
        run_parties_on(mesh, LocalConfig::new(11), move |mut p: Party| {
            let (x, y) = (x.clone(), y.clone());
            async move {
                let xs = p.share_input(PartyId::P0, &[n], (p.id() == PartyId::P0).then_some(&x))?;
                let ys = p.share_input(PartyId::P1, &[n], (p.id() == PartyId::P1).then_some(&y))?;
                p.mul(&xs, &ys).await.map(|_| ())
            }
        })
        .unwrap();
        let frames = log.lock().unwrap();
        let opening = frames.iter().filter(|(from, _)| *from == PartyId::P0).nth(1).expect("the mul opening").1.clone();
        // Skip the header: the payload is the last 16·n bytes.
        views.push(opening[opening.len() - 16 * n..].to_vec());
    }
    for v in &views {
        let c = chi2_uniform(v);
        assert!(c < 400.0, "P1's view is not uniform: chi2 = {c}");
    }
    // Two-sample check: the byte histograms of the two views are close.
    let (mut h0, mut h1) = ([0f64; 256], [0f64; 256]);
    views[0].iter().for_each(|&b| h0[b as usize] += 1.0);
    views[1].iter().for_each(|&b| h1[b as usize] += 1.0);
    let chi2: f64 = h0.iter().zip(&h1).map(|(a, b)| if a + b > 0.0 { (a - b) * (a - b) / (a + b) } else { 0.0 }).sum();
    assert!(chi2 < 400.0, "views differ: two-sample chi2 = {chi2}");
}

#[test]
fn p1_view_of_a_comparison_does_not_depend_on_p0_input() {
    // P1 receives P0's share of x + r mod 2^49 (7 bytes per element, the top byte holding one
    // bit). Its low six bytes must look uniform whatever x is.
    let n = 40_000;
    let mut views = vec![];
    for x in [RingTensor::zeros(&[n]), RingTensor::filled(&[n], 12345 << 16)] {
        let (mesh, log) = mesh_with(Tamper::None, usize::MAX);
        run_parties_on(mesh, LocalConfig::new(12), move |mut p: Party| {
            let x = x.clone();
            async move {
                let xs = p.share_input(PartyId::P0, &[n], (p.id() == PartyId::P0).then_some(&x))?;
                p.ltz(&xs).await.map(|_| ())
            }
        })
        .unwrap();
        let frames = log.lock().unwrap();
        let opening = frames.iter().filter(|(from, _)| *from == PartyId::P0).nth(1).expect("the opening").1.clone();
        let payload = &opening[opening.len() - 7 * n..];
        views.push(payload.chunks_exact(7).flat_map(|c| c[..6].to_vec()).collect::<Vec<u8>>());
    }
    for v in &views {
        let c = chi2_uniform(v);
        assert!(c < 400.0, "P1's view is not uniform: chi2 = {c}");
    }
}

use rand_core::SeedableRng;
