//! Comparison, ReLU, max/argmax/pooling and smooth functions by every comparison method
//! (helper, compact FSS, one-round FSS, and the `auto` choice) and in the dealer-free two-party
//! mode (its own comparison circuit), against exact ring results and the plaintext f64
//! reference, with rounds and bytes counted against the design's table.
#![allow(clippy::needless_range_loop)] // index-parallel arrays of inputs and expected outputs

use mpc_ml::plain;
use mpc_proto::compare::{Comparisons, Method, Policy};
use mpc_proto::fss::{Relu64Key, SignKey, bitdcf};
use mpc_proto::prg::Prg;
use mpc_proto::{
    AShare, CorrelationMode, FixedPoint, LocalConfig, OpStats, Party, PartyId, Result, RingTensor, run_in,
    run_parties_with,
};
use ndarray::{ArrayD, IxDyn};

/// Every method, then the cost model's choice.
const POLICIES: [Policy; 4] =
    [Policy::Fixed(Method::Helper), Policy::Fixed(Method::Fss), Policy::Fixed(Method::Fss1), Policy::Auto];

/// Where a test body runs: each method with the dealer, then the two-party mode (no dealer; its
/// comparisons are a Boolean circuit whatever the policy says).
#[derive(Clone, Copy, Debug)]
struct Setting {
    mode: CorrelationMode,
    policy: Policy,
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.mode {
            CorrelationMode::TwoParty => f.write_str("two-party"),
            _ => write!(f, "{}", self.policy),
        }
    }
}

fn settings() -> impl Iterator<Item = Setting> {
    POLICIES
        .into_iter()
        .map(|policy| Setting { mode: CorrelationMode::Dealer, policy })
        .chain([Setting { mode: CorrelationMode::TwoParty, policy: Policy::Auto }])
}

/// A session in `s` on the default fixed point.
fn session(seed: u64, s: Setting) -> LocalConfig {
    LocalConfig { correlations: s.mode, ..cfg(seed, s.policy, None) }
}

/// A session on the default fixed point with comparisons by `policy` on a `bits`-bit window.
fn cfg(seed: u64, policy: Policy, bits: Option<u8>) -> LocalConfig {
    let fx = FixedPoint::default();
    let mut c = LocalConfig::new(seed);
    let d = Comparisons::for_fixed(fx);
    c.comparisons = Some(Comparisons { policy, bits: bits.unwrap_or(d.bits), ..d });
    c
}

const P0: PartyId = PartyId::P0;
const P1: PartyId = PartyId::P1;

fn input(p: &mut Party, owner: PartyId, v: &RingTensor) -> Result<AShare> {
    let value = (p.id() == owner).then_some(v);
    p.share_input(owner, v.shape(), value)
}

/// Edge and sweep inputs in the ring: the sign boundary (±1000 ulp), ± the largest encodable
/// value, and random values across the encodable range.
fn edge_values(fx: FixedPoint, random: usize) -> Vec<u64> {
    let max = fx.encode(fx.max_value()).unwrap();
    let mut v: Vec<u64> = (-1000i64..=1000).map(|i| i as u64).collect();
    v.extend([max, max.wrapping_neg(), max - 1, (max - 1).wrapping_neg(), 1, u64::MAX, 0]);
    let mut g = Prg::from_u64(77);
    let span = 2 * max + 1;
    v.extend((0..random).map(|_| (g.next_u64() % span).wrapping_sub(max)));
    v
}

#[test]
fn comparison_and_relu_are_exact() {
    let fx = FixedPoint::default();
    let vals = edge_values(fx, 20_000);
    let n = vals.len();
    let x = RingTensor::from_vec(&[n], vals.clone()).unwrap();
    for setting in settings() {
        let out = run_in(session(1, setting), |mut p| {
            let x = x.clone();
            async move {
                let xs = input(&mut p, P0, &x)?;
                let b = p.ltz(&xs).await?;
                let (r, d) = p.relu_with_bit(&xs).await?;
                Ok([p.open(&b).await?, p.open(&r).await?, p.open(&d).await?])
            }
        })
        .unwrap();
        let [b, r, d] = out[0].clone().map(Option::unwrap);
        for i in 0..n {
            let v = vals[i] as i64;
            assert_eq!(b.as_slice()[i], u64::from(v < 0), "{setting}: ltz({v})");
            assert_eq!(r.as_slice()[i], v.max(0) as u64, "{setting}: relu({v})");
            assert_eq!(d.as_slice()[i], u64::from(v >= 0), "{setting}: drelu({v})");
        }
    }
}

#[test]
fn pairwise_comparisons_and_select() {
    let fx = FixedPoint::default();
    let mut g = Prg::from_u64(3);
    let max = fx.encode(fx.max_value()).unwrap();
    let n = 4000;
    let a: Vec<u64> = (0..n).map(|_| (g.next_u64() % (2 * max + 1)).wrapping_sub(max)).collect();
    // Every 4th pair is equal; others random, including extreme differences.
    let b: Vec<u64> = a
        .iter()
        .enumerate()
        .map(|(i, &v)| match i % 4 {
            0 => v,
            1 => max.wrapping_neg(),
            _ => (g.next_u64() % (2 * max + 1)).wrapping_sub(max),
        })
        .collect();
    let (ta, tb) = (RingTensor::from_vec(&[n], a.clone()).unwrap(), RingTensor::from_vec(&[n], b.clone()).unwrap());
    for setting in settings() {
        let out = run_in(session(2, setting), |mut p| {
            let (ta, tb) = (ta.clone(), tb.clone());
            async move {
                let (xa, xb) = (input(&mut p, P0, &ta)?, input(&mut p, P1, &tb)?);
                let lt = p.lt(&xa, &xb).await?;
                let gt = p.gt(&xa, &xb).await?;
                let le = p.le(&xa, &xb).await?;
                let ge = p.ge(&xa, &xb).await?;
                let mx = p.select(&ge, &xa, &xb).await?;
                let mut o = vec![];
                for t in [&lt, &gt, &le, &ge, &mx] {
                    o.push(p.reveal_to(P1, t).await?);
                }
                Ok(o)
            }
        })
        .unwrap();
        let o: Vec<RingTensor> = out[1].iter().map(|t| t.clone().unwrap()).collect();
        for i in 0..n {
            let (x, y) = (a[i] as i64, b[i] as i64);
            assert_eq!(o[0].as_slice()[i], u64::from(x < y));
            assert_eq!(o[1].as_slice()[i], u64::from(x > y));
            assert_eq!(o[2].as_slice()[i], u64::from(x <= y));
            assert_eq!(o[3].as_slice()[i], u64::from(x >= y));
            assert_eq!(o[4].as_slice()[i] as i64, x.max(y), "{setting}");
        }
    }
}

#[test]
fn max_argmax_and_maxpool() {
    let fx = FixedPoint::default();
    // Rows: random, ties (first maximal index wins), all negative, single max at the end,
    // extremes.
    let rows: Vec<Vec<f64>> = vec![
        vec![0.5, -3.0, 7.25, 2.0, 7.0, -1.0, 0.0],
        vec![1.0, 4.0, -2.0, 4.0, 4.0, 0.0, 3.0],
        vec![-5.0, -1.5, -9.0, -1.5, -3.0, -2.0, -7.0],
        vec![-1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 0.0],
        vec![-fx.max_value(), fx.max_value(), 0.0, -fx.ulp(), fx.ulp(), 1.0, fx.max_value()],
    ];
    let flat: Vec<f64> = rows.concat();
    let x = fx.encode_slice(&flat, &[5, 7]).unwrap();
    let img = ArrayD::from_shape_fn(IxDyn(&[2, 3, 7, 6]), |i| {
        ((i[0] * 31 + i[1] * 7 + i[2] * 5 + i[3] * 3) % 17) as f64 - 8.5
    });
    let ie = fx.encode_array(&img).unwrap();
    for setting in settings() {
        let out = run_in(session(3, setting), |mut p| {
            let (x, ie) = (x.clone(), ie.clone());
            async move {
                let xs = input(&mut p, P1, &x)?;
                let m1 = p.max(&xs, 1).await?;
                let m0 = p.max(&xs, 0).await?;
                let am = p.argmax(&xs).await?;
                let is = input(&mut p, P1, &ie)?;
                let mp = p.maxpool2d(&is, (2, 2), (2, 2), (0, 0)).await?;
                let mp3 = p.maxpool2d(&is, (3, 3), (2, 2), (1, 1)).await?;
                let mut o = vec![];
                for t in [&m1, &m0, &am, &mp, &mp3] {
                    o.push(p.reveal_to(P1, t).await?.unwrap_or(RingTensor::zeros(&[0])));
                }
                Ok(o)
            }
        })
        .unwrap();
        let o = &out[1];
        let dec = |t: &RingTensor| fx.decode_tensor(t);
        for (r, row) in rows.iter().enumerate() {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(dec(&o[0])[r], fx.decode(fx.encode(m).unwrap()), "row max {r}");
            let first = row.iter().position(|&v| fx.encode(v).unwrap() == fx.encode(m).unwrap()).unwrap();
            for j in 0..7 {
                assert_eq!(o[2].as_slice()[r * 7 + j], u64::from(j == first), "argmax row {r} col {j}");
            }
        }
        for j in 0..7 {
            let m = (0..5).map(|r| rows[r][j]).fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(dec(&o[1])[j], m, "column max {j}");
        }
        assert_eq!(dec(&o[3]), plain::max_pool2d(&img, (2, 2), (2, 2), (0, 0)), "{setting}");
        assert_eq!(dec(&o[4]), plain::max_pool2d(&img, (3, 3), (2, 2), (1, 1)), "{setting}");
    }
}

fn grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64).collect()
}

#[test]
fn smooth_functions_meet_their_bounds() {
    let fx = FixedPoint::default();
    for setting in settings() {
        // The two-party mode's comparisons are Boolean circuits on OT-made gates: a sparser
        // grid (every tenth point, the edges kept) bounds the test's time.
        let n = |full: usize| if setting.mode == CorrelationMode::TwoParty { full / 10 + 1 } else { full };
        let mut sx = grid(-16.0, 16.0, n(3001));
        sx.extend([-40.0, -16.5, 16.5, 40.0, 0.0, fx.ulp(), -fx.ulp(), 1000.0, -1000.0]);
        let ex = grid(-16.0, 4.0, n(3001));
        let mut rx = grid(1.0 / 64.0, 64.0, n(1500));
        rx.extend(grid(64.0, 16384.0, n(1500)));
        let enc = |v: &Vec<f64>| fx.encode_slice(v, &[v.len()]).unwrap();
        let (se, ee, re) = (enc(&sx), enc(&ex), enc(&rx));
        let out = run_in(session(4, setting), |mut p| {
            let (se, ee, re) = (se.clone(), ee.clone(), re.clone());
            async move {
                let s = input(&mut p, P1, &se)?;
                let e = input(&mut p, P1, &ee)?;
                let r = input(&mut p, P1, &re)?;
                let s = p.sigmoid(&s).await?;
                let e = p.exp(&e).await?;
                let r = p.reciprocal(&r).await?;
                let q = p.div(&e.clone(), &e).await?; // e/e = 1 where e ∈ [2^-6, e^4]
                let mut o = vec![];
                for t in [&s, &e, &r, &q] {
                    o.push(p.reveal_to(P1, t).await?.unwrap_or(RingTensor::zeros(&[0])));
                }
                Ok(o)
            }
        })
        .unwrap();
        let o: Vec<ArrayD<f64>> = out[1].iter().map(|t| fx.decode_tensor(t)).collect();
        for (i, &x) in sx.iter().enumerate() {
            let want = 1.0 / (1.0 + (-x).exp());
            assert!((o[0][i] - want).abs() <= 1e-3, "sigmoid({x}) = {} vs {want}", o[0][i]);
        }
        for (i, &x) in ex.iter().enumerate() {
            let want = x.exp();
            let tol = (1e-3 * want).max(2.0 * fx.ulp());
            assert!((o[1][i] - want).abs() <= tol, "exp({x}) = {} vs {want}", o[1][i]);
            if want >= 1.0 / 64.0 {
                assert!((o[3][i] - 1.0).abs() <= 2e-3, "exp({x})/exp({x}) = {}", o[3][i]);
            }
        }
        for (i, &x) in rx.iter().enumerate() {
            let want = 1.0 / x;
            let tol = (1e-3 * want).max(3.0 * fx.ulp());
            assert!((o[2][i] - want).abs() <= tol, "{setting}: 1/{x} = {} vs {want}", o[2][i]);
        }
    }
}

#[test]
fn softmax_matches_f64() {
    let fx = FixedPoint::default();
    let mut g = Prg::from_u64(9);
    let (rows, cols) = (64, 10);
    let mut v: Vec<f64> =
        (0..rows * cols).map(|_| (g.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 64.0 - 32.0).collect();
    // Edge rows: all equal, one dominant, extremes of the range.
    v[..cols].fill(3.0);
    v[cols..2 * cols].fill(-32.0);
    v[cols] = 32.0;
    v[2 * cols..3 * cols].copy_from_slice(&[-32.0, 32.0, 31.99, 0.0, -0.5, 0.5, 10.0, -10.0, 32.0, -31.0]);
    let x = fx.encode_slice(&v, &[rows, cols]).unwrap();
    for setting in settings() {
        let out = run_in(session(5, setting), |mut p| {
            let x = x.clone();
            async move {
                let xs = input(&mut p, P1, &x)?;
                let y = p.softmax(&xs).await?;
                Ok((p.reveal_to(P1, &y).await?, p.stats().op("softmax")))
            }
        })
        .unwrap();
        let got = fx.decode_tensor(out[1].0.as_ref().unwrap());
        let want = plain::softmax(&ArrayD::from_shape_vec(IxDyn(&[rows, cols]), v.clone()).unwrap());
        let err = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err <= 1e-3, "{setting}: softmax max error {err}");
        // Rounds: max tree ⌈log2 10⌉ = 4 layers, exp 1 layer, reciprocal 2 layers and 2 products,
        // one product: 7 comparison layers and 3 products.
        match (setting.mode, setting.policy) {
            (CorrelationMode::TwoParty, _) => {
                assert_eq!(out[1].1.rounds, 7 * rounds_2pc(Comparisons::for_fixed(fx).bits) + 3, "{setting}")
            }
            (_, Policy::Fixed(m)) => assert_eq!(out[1].1.rounds, 7 * rounds_p1(m) + 3, "{setting}"),
            _ => {}
        }
    }
}

/// Rounds of one selecting comparison layer (max, a spline's piece) in the two-party mode on a
/// `k`-bit window: the carry tree's `1 + ⌈log2(k − 1)⌉` AND layers, then one opening with a mux
/// triple that makes the bit arithmetic and selects with it.
fn rounds_2pc(k: u8) -> u64 {
    1 + u64::from((k as u32 - 1).next_power_of_two().trailing_zeros()) + 1
}

/// P1's rounds for one comparison layer (the critical path: the helper's answer goes to P1).
fn rounds_p1(m: Method) -> u64 {
    mpc_proto::compare::cost::rounds(m) as u64
}

/// P0's rounds for one comparison layer (it never waits for the helper).
fn rounds_p0(m: Method) -> u64 {
    if m == Method::Helper { 2 } else { rounds_p1(m) }
}

#[test]
fn gate_costs_are_counted() {
    // Rounds and bytes per op against the design's table (docs in `mpc_proto::compare`), for
    // each method, at the default window k = 49 and at k = 32.
    let n = 1000usize;
    let x = RingTensor::random(&[n], &mut Prg::from_u64(1)).map(|v| ((v as i64) >> 40) as u64);
    for k in [49u32, 32] {
        for m in Method::ALL {
            let out = run_parties_with(cfg(6, Policy::Fixed(m), Some(k as u8)), |mut p| {
                let x = x.clone();
                async move {
                    let xs = input(&mut p, P0, &x)?;
                    p.ltz(&xs).await?;
                    p.relu(&xs).await?;
                    let rows = xs.reshape(&[100, 10])?;
                    p.max(&rows, 1).await?;
                    p.argmax(&rows).await?;
                    Ok(p.stats().clone())
                }
            })
            .unwrap();
            let nn = n as u64;
            // k·n terms (or bits) of 7 bits each.
            let packed = |terms: u64| mpc_proto::compare::helper::packed_len(terms as usize) as u64;
            let k64 = u64::from(k);
            let bpe = u64::from(k.div_ceil(8));
            let key = bitdcf::key_len(k - 1) as u64;
            let bits = nn.div_ceil(8);
            // (online bytes sent by P0/P1, material received by P0, by P1)
            let (cmp_on, cmp_m0, cmp_m1) = match m {
                Method::Fss1 => (bpe * nn, SignKey::byte_len_for(k) as u64 * nn, SignKey::byte_len_for(k) as u64 * nn),
                Method::Fss => (bpe * nn + bits, key * nn + bits, key * nn + 8 * nn),
                Method::Helper => (bpe * nn + packed(k64 * nn), 0, packed((k64 - 1) * nn)),
            };
            let (relu_on, relu_m0, relu_m1) = match m {
                Method::Fss1 => {
                    (8 * nn, Relu64Key::byte_len_for(k) as u64 * nn, Relu64Key::byte_len_for(k) as u64 * nn)
                }
                Method::Fss => (8 * nn + bits, key * nn + bits, key * nn + 16 * nn),
                Method::Helper => (8 * nn + packed(k64 * nn), 0, packed((k64 - 1) * nn)),
            };
            for (i, s) in out[..2].iter().enumerate() {
                let rounds = if i == 0 { rounds_p0(m) } else { rounds_p1(m) };
                let (c, r) = (s.op("cmp"), s.op("relu"));
                let tag = format!("k={k} {m} P{i}");
                assert_eq!((c.rounds, c.online_sent), (rounds, cmp_on), "{tag}: cmp online");
                assert_eq!((r.rounds, r.online_sent), (rounds, relu_on), "{tag}: relu online");
                assert_eq!(c.offline_recv, if i == 0 { cmp_m0 } else { cmp_m1 }, "{tag}: cmp material");
                assert_eq!(r.offline_recv, if i == 0 { relu_m0 } else { relu_m1 }, "{tag}: relu material");
                assert_eq!(s.op("max").rounds, 4 * rounds, "{tag}: ⌈log2 10⌉ levels");
                assert_eq!(s.op("argmax").rounds, 4 * (rounds + 1), "{tag}: compare and select per level");
            }
            let d: OpStats = out[2].op("relu");
            assert_eq!(d.offline_sent, relu_m0 + relu_m1, "k={k} {m}: the dealer's material is what P0 and P1 got");
            if m == Method::Helper {
                assert_eq!(
                    d.online_recv,
                    2 * packed(k64 * nn),
                    "k={k}: P2 receives k 7-bit terms per element from each"
                );
                assert_eq!(d.online_sent, 16 * nn, "k={k}: P2 answers P1 with shares of v and v·r");
                assert!(relu_m1 <= 100 * nn, "helper material ≤ 100 B per comparison per party");
            }
            if m == Method::Fss && k == 32 {
                assert!(relu_m1 <= 500 * nn && relu_m0 <= 500 * nn, "compact FSS ≤ 500 B per comparison per party");
            }
            eprintln!(
                "k={k} {m}: cmp {cmp_on} B online, {}/{} B material; relu {relu_on} B online, {}/{} B material                  (per {n} elements, P0/P1)",
                cmp_m0, cmp_m1, relu_m0, relu_m1
            );
        }
    }
}

/// Inside a reduced window every method is exact; outside it each computes the sign of
/// `x mod 2^k` read as a `k`-bit signed number — the documented failure case.
#[test]
fn reduced_windows_are_exact_inside_and_wrap_outside() {
    let mut g = Prg::from_u64(12);
    for k in [2u8, 9, 20, 32] {
        let half = (1i64 << (k - 1)) - 1;
        let mut vals: Vec<i64> = (-300i64..=300).map(|v| v.clamp(-half - 1, half)).collect();
        vals.extend([half, -half - 1, half - 1, -half, 0, 1, -1]);
        vals.extend((0..2000).map(|_| (g.next_u64() as i64) >> (64 - k as u32)));
        let inside = vals.len();
        // Outside: up to 4 bits wider than the window.
        vals.extend((0..2000).map(|_| (g.next_u64() as i64) >> (60 - k as u32)));
        let x = RingTensor::from_vec(&[vals.len()], vals.iter().map(|&v| v as u64).collect()).unwrap();
        for policy in POLICIES {
            let out = run_parties_with(cfg(13, policy, Some(k)), |mut p| {
                let x = x.clone();
                async move {
                    let xs = input(&mut p, P0, &x)?;
                    let (r, d) = p.relu_with_bit(&xs).await?;
                    let b = p.ltz(&xs).await?;
                    Ok([p.open(&r).await?, p.open(&d).await?, p.open(&b).await?])
                }
            })
            .unwrap();
            let [r, d, b] = out[0].clone().map(Option::unwrap);
            for (i, &v) in vals.iter().enumerate() {
                let wrapped = (v << (64 - k as u32)) >> (64 - k as u32);
                let pos = wrapped >= 0;
                if i < inside {
                    assert_eq!(wrapped, v);
                }
                assert_eq!(d.as_slice()[i], u64::from(pos), "k={k} {policy}: [{v} ≥ 0]");
                assert_eq!(b.as_slice()[i], u64::from(!pos), "k={k} {policy}: [{v} < 0]");
                assert_eq!(r.as_slice()[i], if pos { v as u64 } else { 0 }, "k={k} {policy}: relu({v})");
            }
        }
    }
}
