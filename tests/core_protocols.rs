//! The MPC core against exact ring arithmetic and the plaintext f64 reference, with rounds and
//! bytes counted per operation (design.md §5). Runs the three parties over the in-memory mesh
//! with the real seed-compressed dealer, and — where a test takes the mode as a parameter — the
//! same test body in the dealer-free two-party mode.

use mpc_ml::plain;
use mpc_proto::compare::{Comparisons, Method, Policy};
use mpc_proto::prg::Prg;
use mpc_proto::ring::{Conv2dParams, conv2d};
use mpc_proto::{
    AShare, CorrelationMode, FixedPoint, LocalConfig, OpStats, Party, PartyId, Result, RingTensor, run_in, run_parties,
    run_parties_with, run_two_parties,
};
use ndarray::ArrayD;

const P0: PartyId = PartyId::P0;
const P1: PartyId = PartyId::P1;

fn random(shape: &[usize], seed: u64) -> RingTensor {
    RingTensor::random(shape, &mut Prg::from_u64(seed))
}

/// Uniform reals in [-r, r), deterministic.
fn reals(shape: &[usize], r: f64, seed: u64) -> ArrayD<f64> {
    let mut g = Prg::from_u64(seed);
    ArrayD::from_shape_simple_fn(shape, || ((g.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * r)
}

fn input(p: &mut Party, owner: PartyId, v: &RingTensor) -> Result<AShare> {
    let value = (p.id() == owner).then_some(v);
    p.share_input(owner, v.shape(), value)
}

/// The modes a parameterised test body runs in: the dealer (three parties), and two parties
/// with OT-made correlations (no third node).
const MODES: [CorrelationMode; 2] = [CorrelationMode::Dealer, CorrelationMode::TwoParty];

/// Runs `program` on every party of a session in `mode`; their results in party order (P1's
/// at index 1 in both modes).
fn run_mode<F, Fut, T>(mode: CorrelationMode, seed: u64, program: F) -> Vec<T>
where
    F: Fn(Party) -> Fut + Sync,
    Fut: std::future::Future<Output = Result<T>>,
    T: Send,
{
    let cfg = LocalConfig { correlations: mode, ..LocalConfig::new(seed) };
    run_in(cfg, program).unwrap_or_else(|e| panic!("{mode:?}: {e}"))
}

fn max_abs_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn share_open_and_reveal_roundtrip() {
    let x = random(&[17, 3], 1);
    let y = random(&[5], 2);
    let out = run_parties(1, |mut p| {
        let (x, y) = (x.clone(), y.clone());
        async move {
            let xs = input(&mut p, P0, &x)?;
            let ys = input(&mut p, P1, &y)?;
            let ox = p.open(&xs).await?;
            let ry = p.reveal_to(P1, &ys).await?;
            let rx = p.reveal_to(P0, &xs).await?;
            Ok((ox, ry, rx, p.stats().op("open"), p.stats().op("reveal")))
        }
    })
    .unwrap();
    for i in [0, 1] {
        assert_eq!(out[i].0.as_ref(), Some(&x));
    }
    assert_eq!(out[2].0, None, "the dealer learns nothing");
    assert_eq!((out[0].1.as_ref(), out[1].1.as_ref(), out[2].1.as_ref()), (None, Some(&y), None));
    assert_eq!((out[0].2.as_ref(), out[1].2.as_ref()), (Some(&x), None));
    // open: 1 round, 8 bytes per element each way; reveal: the non-recipient sends 8 per element.
    assert_eq!((out[0].3.rounds, out[0].3.online_sent, out[1].3.online_sent), (1, 8 * 51, 8 * 51));
    assert_eq!(out[0].4.online_sent, 8 * 5, "P0 sends its share of y to P1");
    assert_eq!(out[1].4.online_sent, 8 * 51, "P1 sends its share of x to P0");
}

#[test]
fn shares_are_uniform_looking_and_reconstruct() {
    // A party's share of a constant input is PRG output, not the input.
    let x = RingTensor::filled(&[1000], 42);
    let out = run_parties(2, |mut p| {
        let x = x.clone();
        async move { Ok(input(&mut p, P0, &x)?.expose_share().ok().cloned()) }
    })
    .unwrap();
    let (s0, s1) = (out[0].clone().unwrap(), out[1].clone().unwrap());
    assert_eq!(s0.add(&s1).unwrap(), x);
    assert!(s1.as_slice().iter().filter(|&&v| v == 42).count() < 2);
}

#[test]
fn beaver_products_are_exact_in_the_ring() {
    // Full-range ring elements, including wrap boundaries.
    let mut x = random(&[4, 64], 3);
    let mut y = random(&[4, 64], 4);
    for (i, v) in [0, 1, u64::MAX, 1 << 63, (1 << 63) - 1, u64::MAX - 1].into_iter().enumerate() {
        x.as_mut_slice()[i] = v;
        y.as_mut_slice()[i + 3] = v;
    }
    let a = random(&[9, 31], 5);
    let b = random(&[31, 6], 6);
    let img = random(&[2, 3, 9, 8], 7);
    let ker = random(&[4, 3, 3, 3], 8);
    let cp = Conv2dParams::new((2, 1), (1, 1));
    // A depthwise, dilated, strided kernel with uneven padding, pre-opened (a fixed B) and used
    // twice: in the two-party mode its OTs are made once and used by both triples.
    let dw = Conv2dParams { groups: 3, dilation: (2, 1), ..Conv2dParams::new((1, 2), (2, 1)) };
    let kdw = random(&[6, 1, 3, 2], 11);
    // Few rows against the same B, and a padded convolution with few output positions: in the
    // two-party mode their vector products take the scalars from A's side (A has fewer).
    let a2 = random(&[2, 31], 12);
    let (img2, ker2) = (random(&[1, 2, 2, 2], 13), random(&[8, 2, 3, 3], 14));
    let cp2 = Conv2dParams::new((1, 1), (1, 1));
    // The elementwise product works a chunk at a time: a length over several chunks with a
    // ragged tail, after the small one (the dealer's streams must stay in step across both).
    let (u, v) = (random(&[1531], 9), random(&[1531], 10));
    for mode in MODES {
        let out = run_mode(mode, 3, |mut p| {
            let (x, y, a, b, img, ker) = (x.clone(), y.clone(), a.clone(), b.clone(), img.clone(), ker.clone());
            let (u, v, kdw) = (u.clone(), v.clone(), kdw.clone());
            let (a2, img2, ker2) = (a2.clone(), img2.clone(), ker2.clone());
            async move {
                let (us, vs) = (input(&mut p, P1, &u)?, input(&mut p, P0, &v)?);
                let (xs, ys) = (input(&mut p, P0, &x)?, input(&mut p, P1, &y)?);
                let (as_, bs) = (input(&mut p, P1, &a)?, input(&mut p, P0, &b)?);
                let (is, ks) = (input(&mut p, P1, &img)?, input(&mut p, P0, &ker)?);
                let z = p.mul(&xs, &ys).await?;
                let uv = p.mul(&us, &vs).await?;
                let m = p.matmul(&as_, &bs).await?;
                let c = p.conv2d(&is, &ks, cp).await?;
                let w = p.preopen(mpc_proto::correlations::Bilinear::MatMul, &bs).await?;
                let a2s = input(&mut p, P1, &a2)?;
                let m4 = p.apply_preopened(&a2s, &w, false).await?;
                let m2 = p.apply_preopened(&as_, &w, false).await?;
                let m3 = p.apply_preopened(&as_, &w, false).await?; // B reused with a fresh A
                let kd = input(&mut p, P0, &kdw)?;
                let wd = p.preopen(mpc_proto::correlations::Bilinear::Conv2d(dw), &kd).await?;
                let c2 = p.apply_preopened(&is, &wd, false).await?;
                let c3 = p.apply_preopened(&is, &wd, false).await?;
                let (i2, k2) = (input(&mut p, P1, &img2)?, input(&mut p, P0, &ker2)?);
                let c4 = p.conv2d(&i2, &k2, cp2).await?;
                Ok([
                    p.open(&m4).await?,
                    p.open(&c4).await?,
                    p.open(&c2).await?,
                    p.open(&c3).await?,
                    p.open(&z).await?,
                    p.open(&m).await?,
                    p.open(&c).await?,
                    p.open(&m2).await?,
                    p.open(&m3).await?,
                    p.open(&uv).await?,
                ])
            }
        });
        let [m4, c4, c2, c3, z, m, c, m2, m3, uv] = out[1].clone();
        assert_eq!(m4.unwrap(), a2.matmul(&b).unwrap(), "{mode:?}");
        assert_eq!(c4.unwrap(), conv2d(&img2, &ker2, &cp2).unwrap(), "{mode:?}");
        let cd = conv2d(&img, &kdw, &dw).unwrap();
        assert_eq!(c2.unwrap(), cd, "{mode:?}");
        assert_eq!(c3.unwrap(), cd, "{mode:?}");
        assert_eq!(z.unwrap(), x.mul(&y).unwrap(), "{mode:?}");
        assert_eq!(uv.unwrap(), u.mul(&v).unwrap(), "{mode:?}");
        assert_eq!(m.unwrap(), a.matmul(&b).unwrap(), "{mode:?}");
        assert_eq!(c.unwrap(), conv2d(&img, &ker, &cp).unwrap(), "{mode:?}");
        assert_eq!(m2.unwrap(), a.matmul(&b).unwrap(), "{mode:?}");
        assert_eq!(m3.unwrap(), a.matmul(&b).unwrap(), "{mode:?}");
    }
}

/// Tolerance of a fixed-point product summed over `k` terms of magnitude ≤ `mx`, `my`: each
/// encoding is off by ≤ ulp/2, each product by ≤ (mx + my)·ulp/2 (+ ulp²/4), and truncation
/// adds ≤ 1 ulp.
fn fx_tol(fx: FixedPoint, k: usize, mx: f64, my: f64) -> f64 {
    let u = fx.ulp();
    k as f64 * ((mx + my) * u / 2.0 + u * u / 4.0) + u
}

#[test]
fn fixed_point_layers_match_f64() {
    let fx = FixedPoint::default();
    let (xr, wr) = (4.0, 1.0);
    let x = reals(&[8, 100], xr, 10);
    let w = reals(&[100, 12], wr, 11);
    let e = reals(&[8, 100], xr, 12);
    let img = reals(&[2, 3, 10, 10], xr, 13);
    let ker = reals(&[5, 3, 3, 3], wr, 14);
    let cp = Conv2dParams::new((1, 1), (1, 1));
    let enc = |a: &ArrayD<f64>| fx.encode_array(a).unwrap();
    let (xe, we, ee, ie, ke) = (enc(&x), enc(&w), enc(&e), enc(&img), enc(&ker));
    for mode in MODES {
        let out = run_mode(mode, 4, |mut p| {
            let (xe, we, ee, ie, ke) = (xe.clone(), we.clone(), ee.clone(), ie.clone(), ke.clone());
            async move {
                let (xs, ws, es) = (input(&mut p, P1, &xe)?, input(&mut p, P0, &we)?, input(&mut p, P0, &ee)?);
                let (is, ks) = (input(&mut p, P1, &ie)?, input(&mut p, P0, &ke)?);
                let prod = p.mul_fixed(&xs, &es).await?;
                let mm = p.matmul_fixed(&xs, &ws).await?;
                let pw = p.preopen(mpc_proto::correlations::Bilinear::MatMul, &ws).await?;
                let mp = p.matmul_preopened(&xs, &pw).await?;
                let cv = p.conv2d_fixed(&is, &ks, cp).await?;
                let pool = p.avg_pool2d(&is, (2, 2), (2, 2), (0, 0))?;
                let pool3 = p.avg_pool2d(&is, (3, 3), (1, 1), (1, 1))?;
                let mut outs = vec![];
                for t in [&prod, &mm, &mp, &cv, &pool, &pool3] {
                    outs.push(p.reveal_to(P1, t).await?);
                }
                Ok(outs)
            }
        });
        let got: Vec<ArrayD<f64>> = out[1].iter().map(|t| fx.decode_tensor(t.as_ref().unwrap())).collect();
        let checks = [
            ("mul_fixed", plain::mul(&x, &e), fx_tol(fx, 1, xr, xr)),
            ("matmul_fixed", plain::matmul(&x, &w), fx_tol(fx, 100, xr, wr)),
            ("matmul_preopened", plain::matmul(&x, &w), fx_tol(fx, 100, xr, wr)),
            ("conv2d_fixed", plain::conv2d(&img, &ker, (1, 1), (1, 1)), fx_tol(fx, 27, xr, wr)),
            // Pooling: inputs rounded (ulp/2), 1/k² encoded (rel. 2^-17), truncation (1 ulp).
            ("avg_pool 2x2", plain::avg_pool2d(&img, (2, 2), (2, 2), (0, 0)), 2.0 * fx.ulp()),
            (
                "avg_pool 3x3",
                plain::avg_pool2d(&img, (3, 3), (1, 1), (1, 1)),
                2.0 * fx.ulp() + 9.0 * xr * fx.ulp() / 2.0,
            ),
        ];
        for ((name, want, tol), g) in checks.iter().zip(&got) {
            let err = max_abs_diff(g, want);
            assert!(err <= *tol, "{mode:?}: {name}: max error {err} > tolerance {tol}");
        }
    }
}

#[test]
fn fixed_point_edges() {
    let fx = FixedPoint::default();
    let big = fx.max_value();
    // Edge values times small factors; every product stays encodable.
    let xv = [0.0, fx.ulp(), -fx.ulp(), big, -big, 1.0, -1.0, 2f64.powi(20), -(2f64.powi(20))];
    let yv = [123.0, 1.0, -1.0, 2f64.powi(-10), -(2f64.powi(-10)), -fx.ulp(), fx.ulp(), 0.5, -0.25];
    let x = fx.encode_slice(&xv, &[9]).unwrap();
    let y = fx.encode_slice(&yv, &[9]).unwrap();
    let out = run_parties(5, |mut p| {
        let (x, y) = (x.clone(), y.clone());
        async move {
            let (xs, ys) = (input(&mut p, P0, &x)?, input(&mut p, P1, &y)?);
            let z = p.mul_fixed(&xs, &ys).await?;
            p.reveal_to(P1, &z).await
        }
    })
    .unwrap();
    let z = fx.decode_tensor(out[1].as_ref().unwrap());
    for i in 0..9 {
        let want = xv[i] * yv[i];
        assert!((z[i] - want).abs() <= 1.5 * fx.ulp(), "{} * {}: got {}, want {want}", xv[i], yv[i], z[i]);
    }
}

#[test]
fn counts_match_the_design_table() {
    // The headline count: [128×784]·[784×128] with pre-opened weights.
    let (m, k, n) = (128, 784, 128);
    let x = random(&[m, k], 20);
    let w = random(&[k, n], 21);
    let v = random(&[1000], 22);
    let img = random(&[2, 3, 8, 8], 23);
    let ker = random(&[4, 3, 3, 3], 24);
    let out = run_parties(6, |mut p| {
        let (x, w, v, img, ker) = (x.clone(), w.clone(), v.clone(), img.clone(), ker.clone());
        async move {
            let ws = input(&mut p, P0, &w)?;
            let xs = input(&mut p, P1, &x)?;
            let vs = input(&mut p, P1, &v)?;
            let (is, ks) = (input(&mut p, P1, &img)?, input(&mut p, P0, &ker)?);
            let after_setup = p.traffic();
            let after_inputs = p.stats().total;
            let pw = p.preopen(mpc_proto::correlations::Bilinear::MatMul, &ws).await?;
            let before = p.traffic();
            let st_before = p.stats().total;
            let _y = p.matmul_preopened(&xs, &pw).await?;
            let mm = p.stats().total.since(&st_before);
            let during = (before, p.traffic());
            let _z = p.mul(&vs, &vs).await?;
            let _c = p.conv2d(&is, &ks, Conv2dParams::default()).await?;
            let _t = p.trunc(&vs, 16);
            let _s = p.sum_pool2d(&is, (2, 2), (2, 2), (0, 0))?;
            Ok((after_setup, after_inputs, mm, during, p.stats().clone()))
        }
    })
    .unwrap();
    let [r0, r1, r2] = &out;
    // Input sharing costs nothing.
    for r in [r0, r1] {
        assert_eq!((r.1.online_sent, r.1.rounds), (0, 1), "only the setup round before the first op");
    }
    // matmul with pre-opened weights: 1 round, 8·m·k bytes online from each of P0 and P1.
    for r in [r0, r1] {
        assert_eq!(r.2.rounds, 1);
        assert_eq!(r.2.online_sent, 8 * (m * k) as u64);
        assert_eq!(r.2.offline_sent, 0);
    }
    // The dealer sends P1 the correction for C = A·B only: 8·m·n bytes, and P0 nothing.
    assert_eq!(r2.2.offline_sent, 8 * (m * n) as u64);
    assert_eq!(r1.2.offline_recv, 8 * (m * n) as u64);
    let (before, after) = r2.3;
    assert_eq!(after.sent_bytes[0] - before.sent_bytes[0], 0, "dealer sends P0 nothing online");
    assert_eq!(after.sent_frames[0], 1, "dealer sends P0 its setup hello (the seed) and nothing else");
    assert_eq!(r2.0.sent_frames, [1, 1, 0]);
    // Elementwise mul: 16 bytes per element per party, 1 round; dealer 8 per element to P1.
    let mul: OpStats = r0.4.op("mul");
    assert_eq!((mul.rounds, mul.online_sent), (1, 16 * 1000));
    assert_eq!((r2.4.op("mul").offline_sent, r2.4.op("mul").online_sent), (8 * 1000, 0));
    // conv2d: the input and the kernel are opened once (8·(|x| + |w|)), not im2col.
    let conv = r1.4.op("conv2d");
    assert_eq!((conv.rounds, conv.online_sent), (1, 8 * (2 * 3 * 64 + 4 * 27)));
    assert_eq!(r2.4.op("conv2d").offline_sent, 8 * 2 * 4 * 6 * 6);
    // preopen: once per model, 8·|W|.
    assert_eq!((r0.4.op("preopen").rounds, r0.4.op("preopen").online_sent), (1, 8 * (k * n) as u64));
    // Nothing else went over the wire: totals are the sum of the ops (+ setup).
    for r in [r0, r1] {
        let t = r.4.total;
        assert_eq!(t.rounds, 1 + 1 + 1 + 1 + 1, "setup, preopen, matmul, mul, conv");
    }
}

#[test]
fn offline_phase_can_run_ahead() {
    // The offline pass fetches every correlation (the dealer produces and delivers it) while
    // shares are placeholders; the online pass then finds it all in the pool, and only its
    // online traffic remains: no dealer material moves, the result is exact.
    let x = random(&[64, 64], 30);
    // ReLU inputs inside the comparison window: signed 40-bit values.
    let small = RingTensor::from_vec(
        &[4096],
        random(&[4096], 31).as_slice().iter().map(|&v| ((v as i64) >> 24) as u64).collect(),
    )
    .unwrap();
    let out = run_parties(7, |mut p| {
        let (x, small) = (x.clone(), small.clone());
        async move {
            let mut result = None;
            for online in [false, true] {
                if online {
                    p.begin_online()?
                } else {
                    p.begin_offline()?
                }
                let before = p.stats().total;
                let xs = input(&mut p, P0, &x)?;
                let ys = input(&mut p, P1, &x)?;
                let z = p.matmul(&xs, &ys).await?;
                let z = p.mul(&z, &z).await?;
                let s = input(&mut p, P1, &small)?;
                let (r, _) = p.relu_with_bit(&s).await?;
                let out = (p.reveal_to(P1, &z).await?, p.reveal_to(P1, &r).await?);
                let spent = p.stats().total.since(&before);
                if online {
                    assert_eq!((spent.offline_sent, spent.offline_recv), (0, 0), "{} online pass", p.id());
                    result = Some(out);
                }
            }
            Ok(result.expect("online pass ran"))
        }
    })
    .unwrap();
    let xx = x.matmul(&x).unwrap();
    let (z, r) = out[1].clone();
    assert_eq!(z.unwrap(), xx.mul(&xx).unwrap());
    let want: Vec<u64> = small.as_slice().iter().map(|&v| (v as i64).max(0) as u64).collect();
    assert_eq!(r.unwrap().as_slice(), want.as_slice());
}

/// Exact truncation in both modes (dealer truncation pairs; in 2pc the shares' known top bit):
/// every result is `⌊x/2^f⌋` or one more, both occur about equally (no drift), and values up to
/// 2^61 in magnitude — where local truncation would wrap about once in eight — never go wrong.
#[test]
fn exact_truncation_is_floor_or_one_more_in_both_modes() {
    let n = 20_000;
    let mut g = Prg::from_u64(41);
    let vals: Vec<u64> =
        (0..n).map(|i| ((g.next_u64() >> (3 + i % 40)) as i64 * if i % 2 == 0 { 1 } else { -1 }) as u64).collect();
    let x = RingTensor::from_vec(&[n], vals.clone()).unwrap();
    for mode in MODES {
        let out = run_mode(mode, 9, |mut p| {
            let x = x.clone();
            async move {
                let xs = input(&mut p, P1, &x)?;
                let t = p.trunc_exact(&xs, 16).await?;
                p.reveal_to(P1, &t).await
            }
        });
        let got = out[1].as_ref().unwrap().as_slice();
        let mut ones = 0;
        for (v, t) in vals.iter().zip(got) {
            let d = (*t as i64).wrapping_sub((*v as i64) >> 16);
            assert!(d == 0 || d == 1, "{mode:?}: {} truncated to {}", *v as i64, *t as i64);
            ones += d;
        }
        let share = ones as f64 / n as f64;
        assert!((0.4..0.6).contains(&share), "{mode:?}: one more in {share} of the values");
    }
}

#[test]
fn truncation_error_at_scale() {
    // 10^7 truncations of secret values below 2^20 (ring scale): error ≤ 1 ulp, always.
    // Failure probability per element is about 2^(21-64); a failure would show as ~2^48 error.
    let n = 10_000_000;
    let mut g = Prg::from_u64(40);
    let vals: Vec<u64> = (0..n).map(|_| ((g.next_u64() % (1 << 21)) as i64 - (1 << 20)) as u64).collect();
    let x = RingTensor::from_vec(&[n], vals.clone()).unwrap();
    let out = run_parties(8, |mut p| {
        let x = x.clone();
        async move {
            let xs = input(&mut p, P1, &x)?;
            let t = p.trunc(&xs, 16);
            p.reveal_to(P1, &t).await
        }
    })
    .unwrap();
    let got = out[1].as_ref().unwrap().as_slice();
    let mut worst = 0i64;
    for (v, t) in vals.iter().zip(got) {
        let want = (*v as i64) >> 16;
        worst = worst.max(((*t as i64).wrapping_sub(want)).abs());
    }
    assert!(worst <= 1, "worst truncation error {worst} ulp");
}

/// One program run twice: an offline pass that only fetches correlations (all dealer traffic),
/// then the online pass, which must see no dealer traffic at all and give the same result.
#[test]
fn preprocessing_pool_moves_all_dealer_traffic_offline() {
    async fn program(p: &mut Party, x: &RingTensor, w: &RingTensor) -> Result<Option<RingTensor>> {
        let xs = input(p, P1, x)?;
        let ws = input(p, P0, w)?;
        let z = p.matmul(&xs, &ws).await?;
        let z = p.trunc(&z, 16);
        let r = p.relu(&z).await?;
        let m = p.mul(&r, &r).await?;
        p.reveal_to(P1, &m).await
    }
    let fx = FixedPoint::default();
    let x = fx.encode_array(&reals(&[16, 32], 2.0, 50)).unwrap();
    let w = fx.encode_array(&reals(&[32, 8], 1.0, 51)).unwrap();
    for method in Method::ALL {
        let mut cfg = LocalConfig::new(9);
        cfg.comparisons = Some(Comparisons { policy: Policy::Fixed(method), ..Comparisons::for_fixed(fx) });
        let direct = run_parties_with(cfg, |mut p| {
            let (x, w) = (x.clone(), w.clone());
            async move { program(&mut p, &x, &w).await }
        })
        .unwrap();
        let pooled = run_parties_with(cfg, |mut p| {
            let (x, w) = (x.clone(), w.clone());
            async move {
                p.begin_offline()?;
                let none = program(&mut p, &x, &w).await?;
                assert!(none.is_none(), "nothing is revealed in the offline pass");
                let offline = p.stats().total;
                p.begin_online()?;
                let out = program(&mut p, &x, &w).await?;
                Ok((out, offline, p.stats().total.since(&offline)))
            }
        })
        .unwrap();
        assert_eq!(pooled[1].0, direct[1], "{method}: same result with and without preprocessing");
        for (i, (_, offline, online)) in pooled.iter().enumerate() {
            assert_eq!((online.offline_recv, online.offline_sent), (0, 0), "{method}: P{i}: dealer traffic online");
            assert_eq!(offline.rounds, 1, "{method}: P{i}: only session setup before the online pass");
        }
        assert!(pooled[2].1.offline_sent > 0 && pooled[1].1.offline_recv > 0);
        // P1's critical path: matmul, the ReLU's rounds, mul, reveal.
        let relu_rounds = mpc_proto::compare::cost::rounds(method) as u64;
        assert_eq!(pooled[1].2.rounds, 3 + relu_rounds, "{method}: matmul, relu, mul, reveal");
    }
    // An online pass that asks for something else is a desync, not silent misuse.
    let bad = run_parties(9, |mut p| {
        let (x, w) = (x.clone(), w.clone());
        async move {
            p.begin_offline()?;
            program(&mut p, &x, &w).await?;
            p.begin_online()?;
            let xs = input(&mut p, P1, &x)?;
            p.relu(&xs).await.map(|_| ())
        }
    });
    assert!(matches!(bad, Err(mpc_proto::Error::Desync { .. })), "{bad:?}");
}

#[test]
fn agreements_on_public_values_give_every_party_the_same_answer() {
    let out = run_parties(5, |mut p| async move {
        let me = p.id().index() as u64;
        // Each party brings a different bound; all learn the smallest.
        let min = p.agree_min(100 - 10 * me).await?;
        let same = p.agree_equal([7; 32]).await?;
        // The dealer brings a different value: nobody may conclude they agree.
        let mut v = [7; 32];
        v[31] ^= u8::from(p.is_dealer());
        let differ = p.agree_equal(v).await?;
        Ok((min, same, differ))
    })
    .unwrap();
    for o in &out {
        assert_eq!(*o, (80, true, false));
    }
}

#[test]
fn comparisons_match_plaintext_in_both_modes() {
    // Values across the window, with the edges: 0, ±1 ulp, ±2^38 ulps (inside a 40-bit window).
    let fx = FixedPoint::default();
    let mut x = reals(&[5, 40], 1000.0, 41);
    for (i, v) in [0.0, fx.ulp(), -fx.ulp(), 2f64.powi(22), -2f64.powi(22)].into_iter().enumerate() {
        x[[0, i]] = v;
    }
    let xe = fx.encode_array(&x).unwrap();
    for mode in MODES {
        for bits in [64u32, 40] {
            let comparisons = Comparisons { bits: bits as u8, ..Comparisons::for_fixed(fx) };
            let cfg = LocalConfig { correlations: mode, comparisons: Some(comparisons), ..LocalConfig::new(7) };
            let program = |mut p: Party| {
                let xe = xe.clone();
                async move {
                    let xs = input(&mut p, P1, &xe)?;
                    let lt = p.ltz(&xs).await?;
                    let r = p.relu(&xs).await?;
                    let (r2, bit) = p.relu_with_bit(&xs).await?;
                    let m = p.max(&xs, 1).await?;
                    let mut out = vec![];
                    for t in [&lt, &r, &r2, &bit, &m] {
                        out.push(p.reveal_to(P1, t).await?);
                    }
                    Ok(out)
                }
            };
            let out = run_in(cfg, program).unwrap_or_else(|e| panic!("{mode:?}, k = {bits}: {e}"));
            let got: Vec<RingTensor> = out[1].iter().map(|t| t.clone().unwrap()).collect();
            let signed = |v: u64| v as i64;
            let ltz: Vec<u64> = xe.as_slice().iter().map(|&v| u64::from(signed(v) < 0)).collect();
            let relu: Vec<u64> = xe.as_slice().iter().map(|&v| if signed(v) < 0 { 0 } else { v }).collect();
            let ge: Vec<u64> = ltz.iter().map(|b| 1 - b).collect();
            let max: Vec<u64> =
                xe.as_slice().chunks(40).map(|row| *row.iter().max_by_key(|&&v| signed(v)).unwrap()).collect();
            let what = format!("{mode:?}, k = {bits}");
            assert_eq!(got[0].as_slice(), &ltz[..], "{what}: ltz");
            assert_eq!(got[1].as_slice(), &relu[..], "{what}: relu");
            assert_eq!(got[2].as_slice(), &relu[..], "{what}: relu_with_bit's value");
            assert_eq!(got[3].as_slice(), &ge[..], "{what}: relu_with_bit's bit");
            assert_eq!(got[4].as_slice(), &max[..], "{what}: max");
        }
    }
}

#[test]
fn a_three_party_harness_refuses_a_two_party_source() {
    // Rather than starting a dealer the source has no use for.
    let cfg = LocalConfig { correlations: CorrelationMode::TwoParty, ..LocalConfig::new(5) };
    let e = run_parties_with(cfg, |_| async { Ok(()) }).unwrap_err();
    assert!(e.to_string().contains("use run_two_parties"), "{e}");
}

#[test]
fn the_two_party_mode_makes_its_triples_offline() {
    // The OT traffic is preprocessing: with the pool, the online pass sends only openings.
    let (a, b) = (random(&[6, 20], 31), random(&[20, 5], 32));
    async fn program(p: &mut Party, a: &RingTensor, b: &RingTensor) -> Result<Option<RingTensor>> {
        let (x, w) = (input(p, P1, a)?, input(p, P0, b)?);
        let y = p.matmul(&x, &w).await?;
        let z = p.mul(&y, &y).await?;
        p.reveal_to(P1, &z).await
    }
    let out = run_two_parties(LocalConfig::new(6), |mut p| {
        let (a, b) = (a.clone(), b.clone());
        async move {
            p.begin_offline()?;
            assert!(program(&mut p, &a, &b).await?.is_none(), "nothing is revealed offline");
            let offline = p.stats().total;
            p.begin_online()?;
            let out = program(&mut p, &a, &b).await?;
            Ok((out, offline, p.stats().total.since(&offline)))
        }
    })
    .unwrap();
    let y = a.matmul(&b).unwrap();
    assert_eq!(out[1].0.as_ref(), Some(&y.mul(&y).unwrap()));
    for (i, (_, offline, online)) in out.iter().enumerate() {
        assert!(offline.offline_sent > 0 && offline.offline_recv > 0, "P{i}: the OTs ran offline");
        assert_eq!((online.offline_sent, online.offline_recv), (0, 0), "P{i}: OT traffic online");
        // matmul, mul (one opening round each), reveal.
        assert_eq!(online.rounds, 3, "P{i}");
    }
}

#[test]
fn a_two_party_relu_costs_what_the_circuit_says() {
    // k = 64: 63 generates, then 31 + 16 + 8 + 4 + 2 + 1 merged pairs of 2 ANDs = 187 ANDs per
    // element in 7 layers; each layer opens 16 bytes per gate per 64 elements. Then one opening
    // with a mux triple (the bit made arithmetic, and the ReLU): 1 bit and 8 bytes an element.
    let n = 640;
    let x = random(&[n], 61);
    let comparisons = Comparisons { bits: 64, ..Comparisons::for_fixed(FixedPoint::default()) };
    let cfg = LocalConfig { comparisons: Some(comparisons), ..LocalConfig::new(8) };
    let out = run_two_parties(cfg, |mut p| {
        let x = x.clone();
        async move {
            let xs = input(&mut p, P0, &x)?;
            p.relu(&xs).await?;
            Ok(p.stats().op("relu"))
        }
    })
    .unwrap();
    let words = n.div_ceil(64) as u64;
    for (i, s) in out.iter().enumerate() {
        assert_eq!(s.rounds, 7 + 1, "P{i}: AND layers, then one opening");
        assert_eq!(s.online_sent, 16 * 187 * words + 8 * words + 8 * n as u64, "P{i}");
        println!("P{i}: {} online and {} OT bytes sent per ReLU", s.online_sent / n as u64, s.offline_sent / n as u64);
    }
    // The OT columns go from P1 (the extension's receiver) to P0.
    assert!(out[1].offline_sent > out[0].offline_sent);
    // OT traffic: 32 bytes an AND triple, 56 a mux triple, and the session's base OTs (both
    // ways, 8 KiB each plus framing).
    let ot = out[0].offline_sent + out[1].offline_sent;
    let want = n as u64 * (187 * 32 + 56);
    assert!(ot >= want && ot < want + 24 * 1024, "{ot} OT bytes for {want} of triples");
}
