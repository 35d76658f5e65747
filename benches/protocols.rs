//! Protocols over the in-memory mesh (three threads, real seed-compressed dealer).
//!
//! Two figures per workload: `wall` is the whole job with the dealer producing material on
//! demand (what a peer whose dealer works on demand should be compared with); `online` is P1's
//! time for the online pass after an offline pass fetched every correlation
//! ([`Party::begin_offline`]). Bytes and rounds are printed once per workload beside the times.

use std::time::{Duration, Instant};

/// As in `party-node`: keep large tensors' memory mapped between allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mpc_proto::compare::{Comparisons, Method, Policy};
use mpc_proto::correlations::Bilinear;
use mpc_proto::prg::Prg;
use mpc_proto::{AShare, LocalConfig, Party, PartyId, Result, RingTensor, run_parties_with};

#[derive(Clone, Copy)]
enum Workload {
    Mul(usize),
    MatMul(usize, usize, usize),
    MatMulPreopened(usize, usize, usize),
    Relu(usize, Policy),
    Cmp(usize, Policy),
}

impl Workload {
    fn name(&self) -> String {
        match self {
            Workload::Mul(n) => format!("mul-{n}"),
            Workload::MatMul(m, k, n) => format!("matmul-{m}x{k}x{n}"),
            Workload::MatMulPreopened(m, k, n) => format!("matmul-preopened-{m}x{k}x{n}"),
            Workload::Relu(n, p) => format!("relu-{n}-{p}"),
            Workload::Cmp(n, p) => format!("cmp-{n}-{p}"),
        }
    }

    fn policy(&self) -> Policy {
        match self {
            Workload::Relu(_, p) | Workload::Cmp(_, p) => *p,
            _ => Policy::Auto,
        }
    }
}

fn input(p: &mut Party, owner: PartyId, v: &RingTensor) -> Result<AShare> {
    let value = (p.id() == owner).then_some(v);
    p.share_input(owner, v.shape(), value)
}

/// The workload's program; returns the time and counters of the query part (after weights
/// are pre-opened).
async fn program(
    p: &mut Party,
    w: Workload,
    data: &(RingTensor, RingTensor),
) -> Result<(Duration, mpc_proto::OpStats)> {
    let (x, y) = data;
    // Weights are pre-opened once per model, outside the timed query.
    let pre = match w {
        Workload::MatMulPreopened(..) => {
            let ys = input(p, PartyId::P0, y)?;
            Some(p.preopen(Bilinear::MatMul, &ys).await?)
        }
        _ => None,
    };
    let before = p.stats().total;
    let t = Instant::now();
    let xs = input(p, PartyId::P1, x)?;
    let z = match (w, &pre) {
        (Workload::Mul(_), _) => {
            let ys = input(p, PartyId::P0, y)?;
            p.mul(&xs, &ys).await?
        }
        (Workload::MatMul(..), _) => {
            let ys = input(p, PartyId::P0, y)?;
            p.matmul(&xs, &ys).await?
        }
        (Workload::MatMulPreopened(..), Some(pw)) => p.matmul_preopened(&xs, pw).await?,
        (Workload::Relu(..), _) => p.relu(&xs).await?,
        (Workload::Cmp(..), _) => p.ltz(&xs.neg()).await?, // x > 0  ⇔  −x < 0
        _ => unreachable!(),
    };
    let _ = p.reveal_to(PartyId::P1, &z).await?;
    Ok((t.elapsed(), p.stats().total.since(&before)))
}

/// Runs one job; returns P1's elapsed time for the query and P0, P1, P2 counters. With
/// `pooled`, an offline pass first fetches all correlations (dealer traffic, seed expansion)
/// and the time is the online pass's alone.
fn run(w: Workload, pooled: bool, data: &(RingTensor, RingTensor)) -> (Duration, [mpc_proto::OpStats; 3]) {
    let mut cfg = LocalConfig::new(1);
    cfg.comparisons = Some(Comparisons { policy: w.policy(), ..Comparisons::for_fixed(cfg.fixed) });
    let out = run_parties_with(cfg, |mut p| async move {
        if pooled {
            p.begin_offline()?;
            program(&mut p, w, data).await?;
            p.begin_online()?;
        }
        program(&mut p, w, data).await
    })
    .expect("benchmark job");
    (out[1].0, [out[0].1, out[1].1, out[2].1])
}

fn bench_protocols(c: &mut Criterion) {
    let mut g = c.benchmark_group("protocols");
    g.sample_size(10);
    let only = std::env::var("MEMBRANE_BENCH").ok();
    let mut all =
        vec![Workload::Mul(1_000_000), Workload::MatMul(128, 784, 128), Workload::MatMulPreopened(128, 784, 128)];
    for p in [Policy::Auto, Policy::Fixed(Method::Helper), Policy::Fixed(Method::Fss), Policy::Fixed(Method::Fss1)] {
        all.extend([Workload::Relu(100_000, p), Workload::Cmp(100_000, p)]);
    }
    for w in all {
        if only.as_ref().is_some_and(|o| !w.name().contains(o.as_str())) {
            continue;
        }
        let mut prg = Prg::from_u64(9);
        let data = match w {
            Workload::Mul(n) => (RingTensor::random(&[n], &mut prg), RingTensor::random(&[n], &mut prg)),
            Workload::MatMul(m, k, n) | Workload::MatMulPreopened(m, k, n) => {
                (RingTensor::random(&[m, k], &mut prg), RingTensor::random(&[k, n], &mut prg))
            }
            // Fixed-point values in (−2^15, 2^15): well inside the comparison domain.
            Workload::Relu(n, _) | Workload::Cmp(n, _) => {
                (RingTensor::random(&[n], &mut prg).map(|v| ((v as i64) >> 32) as u64), RingTensor::zeros(&[0]))
            }
        };
        let (_, s) = run(w, false, &data);
        let (_, online) = run(w, true, &data);
        eprintln!(
            "{}: rounds {} (incl. reveal), online bytes sent P0 {} P1 {}, dealer material {} bytes; pooled online pass: {} dealer bytes",
            w.name(),
            s[1].rounds,
            s[0].online_sent,
            s[1].online_sent,
            s[2].offline_sent,
            online[1].offline_recv + online[2].offline_sent
        );
        if let Workload::Relu(..) | Workload::Cmp(..) = w {
            g.sample_size(10).measurement_time(Duration::from_secs(8));
        }
        g.bench_function(BenchmarkId::new("wall", w.name()), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    run(w, false, &data);
                }
                t.elapsed()
            })
        });
        g.bench_function(BenchmarkId::new("online", w.name()), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run(w, true, &data).0).sum())
        });
    }
    g.finish();
}

/// Dealer-free elementwise triples (base OTs once, IKNP extension, Gilboa), two parties in
/// memory: the cost the two-party mode pays for what the dealer sends in 8 bytes a triple.
fn bench_ot_triples(c: &mut Criterion) {
    use mpc_proto::ot::{CotReceiver, CotSender, triples_receiver, triples_sender};
    use rand_chacha::ChaCha12Rng;
    use rand_core::SeedableRng;
    let mut g = c.benchmark_group("ot");
    g.sample_size(10);
    let n = 100_000;
    let run = || {
        let (mut c0, mut c1) = mpc_proto::testing::channel_pair(mpc_proto::SessionId(7));
        std::thread::scope(|s| {
            let p0 = s.spawn(move || {
                futures::executor::block_on(async {
                    let mut rng = ChaCha12Rng::seed_from_u64(1);
                    let mut cot = CotSender::setup(&mut c0, PartyId::P1, &mut rng).await.unwrap();
                    triples_sender(&mut cot, &mut c0, PartyId::P1, n, &mut rng).await.unwrap();
                    c0.traffic()
                })
            });
            futures::executor::block_on(async {
                let mut rng = ChaCha12Rng::seed_from_u64(2);
                let mut cot = CotReceiver::setup(&mut c1, PartyId::P0, &mut rng).await.unwrap();
                triples_receiver(&mut cot, &mut c1, PartyId::P0, n, &mut rng).await.unwrap();
            });
            p0.join().unwrap()
        })
    };
    eprintln!("ot triples {n}: {:?}", run());
    g.bench_function(BenchmarkId::new("triples", n), |b| b.iter(run));
    g.finish();
}

criterion_group!(benches, bench_protocols, bench_ot_triples);
criterion_main!(benches);
