//! Comparison, ReLU, max/argmax/pooling and smooth functions by FSS, against exact ring results
//! and the plaintext f64 reference, with rounds and bytes counted.
#![allow(clippy::needless_range_loop)] // index-parallel arrays of inputs and expected outputs

use mpc_ml::plain;
use mpc_proto::fss::{Relu64Key, SignKey};
use mpc_proto::prg::Prg;
use mpc_proto::{AShare, FixedPoint, Party, PartyId, Result, RingTensor, run_parties};
use ndarray::{ArrayD, IxDyn};

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
    let out = run_parties(1, |mut p| {
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
        assert_eq!(b.as_slice()[i], u64::from(v < 0), "ltz({v})");
        assert_eq!(r.as_slice()[i], v.max(0) as u64, "relu({v})");
        assert_eq!(d.as_slice()[i], u64::from(v >= 0), "drelu({v})");
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
    let out = run_parties(2, |mut p| {
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
        assert_eq!(o[4].as_slice()[i] as i64, x.max(y));
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
    let out = run_parties(3, |mut p| {
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
    assert_eq!(dec(&o[3]), plain::max_pool2d(&img, (2, 2), (2, 2), (0, 0)));
    assert_eq!(dec(&o[4]), plain::max_pool2d(&img, (3, 3), (2, 2), (1, 1)));
}

fn grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64).collect()
}

#[test]
fn smooth_functions_meet_their_bounds() {
    let fx = FixedPoint::default();
    let mut sx = grid(-16.0, 16.0, 3001);
    sx.extend([-40.0, -16.5, 16.5, 40.0, 0.0, fx.ulp(), -fx.ulp(), 1000.0, -1000.0]);
    let ex = grid(-16.0, 4.0, 3001);
    let mut rx = grid(1.0 / 64.0, 64.0, 1500);
    rx.extend(grid(64.0, 16384.0, 1500));
    let enc = |v: &Vec<f64>| fx.encode_slice(v, &[v.len()]).unwrap();
    let (se, ee, re) = (enc(&sx), enc(&ex), enc(&rx));
    let out = run_parties(4, |mut p| {
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
        assert!((o[2][i] - want).abs() <= tol, "1/{x} = {} vs {want}", o[2][i]);
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
    let out = run_parties(5, |mut p| {
        let x = x.clone();
        async move {
            let xs = input(&mut p, P1, &x)?;
            let y = p.softmax(&xs).await?;
            Ok((p.reveal_to(P1, &y).await?, p.stats().op("softmax")))
        }
    })
    .unwrap();
    let got = fx.decode_tensor(out[1].0.as_ref().unwrap());
    let want = plain::softmax(&ArrayD::from_shape_vec(IxDyn(&[rows, cols]), v).unwrap());
    let err = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(err <= 1e-3, "softmax max error {err}");
    // Rounds: max tree ⌈log2 10⌉ = 4, exp 1, reciprocal 4, product 1.
    assert_eq!(out[1].1.rounds, 10);
}

#[test]
fn gate_costs_are_counted() {
    let fx = FixedPoint::default();
    let n = 1000;
    let bits = fx.int_bits + fx.frac_bits + 2;
    let x = RingTensor::random(&[n], &mut Prg::from_u64(1)).map(|v| v >> 20);
    let out = run_parties(6, |mut p| {
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
    let bpe = bits.div_ceil(8) as u64;
    for s in &out[..2] {
        let (c, r) = (s.op("cmp"), s.op("relu"));
        assert_eq!((c.rounds, c.online_sent), (1, bpe * n as u64), "cmp online");
        assert_eq!((r.rounds, r.online_sent), (1, 8 * n as u64), "relu online: the full 64-bit masked value");
        assert_eq!(c.offline_recv, (SignKey::byte_len_for(bits) * n) as u64);
        assert_eq!(r.offline_recv, (Relu64Key::byte_len_for(bits) * n) as u64);
        assert_eq!(s.op("max").rounds, 4, "⌈log2 10⌉ levels");
        assert_eq!(s.op("argmax").rounds, 8, "two rounds per level");
    }
    let d = out[2].op("relu");
    assert_eq!(d.offline_sent, 2 * (Relu64Key::byte_len_for(bits) * n) as u64, "dealer sends a key to each party");
    eprintln!(
        "per element per party: sign key {} B, relu key {} B, online {bpe} B",
        SignKey::byte_len_for(bits),
        Relu64Key::byte_len_for(bits)
    );
}
