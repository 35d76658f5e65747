//! Building blocks of the graph operators beyond the linear layers: public elementwise
//! activations evaluated as one spline ([`Act`]) and the public index maps behind the shape
//! operators (broadcast, slice, pad, transpose, zero-insertion), which move shares locally.
//!
//! Every map here is a function of public shapes and public hyperparameters only, so all three
//! parties derive the same; applied to shares they cost no communication.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use mpc_proto::approx::Spline;
use mpc_proto::{AShare, PartyId, RingTensor};
use serde::{Deserialize, Serialize};

/// A public `f64` hyperparameter (activation bounds, slopes, pad values) that can sit in a
/// hashed plan: compared and hashed by its bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PubF64(pub f64);

impl Eq for PubF64 {}

impl Hash for PubF64 {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}

/// A public elementwise activation, evaluated privately as one [`Spline`] (one comparison
/// layer whatever the number of pieces). Piecewise-linear activations (Clip, LeakyRelu,
/// HardSigmoid) are exact up to fixed-point rounding; the smooth ones are fitted once, with
/// the bound [`Act::error_bound`] against the exact function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Act {
    /// `min(max(x, lo), hi)` (ONNX Clip; ReLU6 is `[0, 6]`). Infinite bounds are open.
    Clip {
        /// Lower bound (`-inf` for none).
        lo: PubF64,
        /// Upper bound (`+inf` for none).
        hi: PubF64,
    },
    /// `x` for `x ≥ 0`, `alpha·x` below.
    LeakyRelu {
        /// Slope below zero.
        alpha: PubF64,
    },
    /// `clip(alpha·x + beta, 0, 1)`.
    HardSigmoid {
        /// Slope.
        alpha: PubF64,
        /// Offset.
        beta: PubF64,
    },
    /// `x · clip(x/6 + 1/2, 0, 1)`.
    HardSwish,
    /// Hyperbolic tangent.
    Tanh,
    /// The logistic sigmoid, fitted 10× tighter than [`crate::op::Sigmoid`]'s (which the
    /// output stage and training share): for gates inside a network (squeeze-excitation),
    /// whose error multiplies activations.
    Sigmoid,
    /// `x · sigmoid(x)` (SiLU, Swish).
    Silu,
    /// `x · Φ(x)` (exact GELU, erf form; the tanh form differs from it by < 5·10^-4).
    Gelu,
    /// The error function (ONNX Erf): what GELU exported before opset 20 is built from. The
    /// importer fuses the whole erf form of GELU into [`Act::Gelu`]; a lone Erf runs as its own
    /// spline.
    Erf,
    /// `x` for `x ≥ 0`, `alpha·(e^x − 1)` below.
    Elu {
        /// Scale of the negative part.
        alpha: PubF64,
    },
}

/// Tolerance of the fitted smooth activations (absolute, before fixed-point effects).
const FIT_TOL: f64 = 1e-5;

fn erf(x: f64) -> f64 {
    let ax = x.abs();
    if ax < 2.5 {
        // Maclaurin series: terms below 2.5^(2n+1)/n! lose at most ~3 digits to cancellation.
        let (mut sum, mut term, x2) = (x, x, x * x);
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
        }
        return sum * 2.0 / std::f64::consts::PI.sqrt();
    }
    if ax > 9.0 {
        return x.signum();
    }
    // erfc by its continued fraction (Lentz), accurate for x ≥ 2.5.
    let tiny = 1e-300;
    let (mut f, mut c, mut d) = (ax, ax, 0.0);
    for k in 1..300 {
        let a = k as f64 / 2.0;
        d = ax + a * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = ax + a / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    let erfc = (-ax * ax).exp() / (f * std::f64::consts::PI.sqrt());
    x.signum() * (1.0 - erfc)
}

impl Act {
    /// Short name for profiles and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Act::Clip { .. } => "clip",
            Act::LeakyRelu { .. } => "leakyrelu",
            Act::HardSigmoid { .. } => "hardsigmoid",
            Act::HardSwish => "hardswish",
            Act::Tanh => "tanh",
            Act::Sigmoid => "sigmoid",
            Act::Silu => "silu",
            Act::Gelu => "gelu",
            Act::Erf => "erf",
            Act::Elu { .. } => "elu",
        }
    }

    /// The exact function (the plaintext reference).
    pub fn eval(&self, x: f64) -> f64 {
        match *self {
            Act::Clip { lo, hi } => x.max(lo.0).min(hi.0),
            Act::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha.0 * x
                }
            }
            Act::HardSigmoid { alpha, beta } => (alpha.0 * x + beta.0).clamp(0.0, 1.0),
            Act::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Act::Tanh => x.tanh(),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Silu => x / (1.0 + (-x).exp()),
            Act::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            Act::Erf => erf(x),
            Act::Elu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha.0 * x.exp_m1()
                }
            }
        }
    }

    /// Largest difference between [`Act::eval`] and the spline the parties evaluate, before
    /// fixed-point effects (breakpoints and slopes rounded to 2^-16, one truncation: add
    /// 2^-15 plus 1 ulp for those).
    pub fn error_bound(&self) -> f64 {
        match self {
            Act::Clip { .. } | Act::LeakyRelu { .. } | Act::HardSigmoid { .. } => 0.0,
            _ => FIT_TOL,
        }
    }

    /// Whether the spline is the function itself (piecewise linear).
    pub fn is_exact(&self) -> bool {
        self.error_bound() == 0.0
    }

    /// Largest `|f(x)|` over inputs bounded by `|x| ≤ b` (for the plan's bound analysis).
    pub fn bound(&self, b: f64) -> f64 {
        match *self {
            Act::Clip { lo, hi } => b.min(lo.0.abs().max(hi.0.abs())),
            Act::LeakyRelu { alpha } => b * alpha.0.abs().max(1.0),
            Act::HardSigmoid { .. } | Act::Tanh | Act::Sigmoid | Act::Erf => 1.0,
            Act::Elu { alpha } => b.max(alpha.0.abs()),
            Act::HardSwish | Act::Silu | Act::Gelu => b + 1.0,
        }
    }

    /// The public spline the parties evaluate (fitted once per activation and cached).
    pub fn spline(&self) -> Arc<Spline> {
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock};
        static CACHE: OnceLock<Mutex<HashMap<Act, Arc<Spline>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(s) = cache.lock().expect("spline cache").get(self) {
            return s.clone();
        }
        let s = Arc::new(self.make_spline());
        cache.lock().expect("spline cache").insert(*self, s.clone());
        s
    }

    fn make_spline(&self) -> Spline {
        let q = |x: f64| (x * 65536.0).round() / 65536.0;
        // Exact pieces: breakpoints p_j, values at their anchors and slopes.
        // The first piece is anchored at 0: its line extended from the first breakpoint.
        let exact = |breaks: Vec<f64>, f: &dyn Fn(f64) -> f64, slopes: Vec<f64>| {
            let mut a = vec![f(breaks[0]) - slopes[0] * breaks[0]];
            a.extend(breaks.iter().map(|&p| f(p)));
            Spline { breaks, a, b: slopes }
        };
        match *self {
            Act::Clip { lo, hi } => {
                let (lo, hi) = (q(lo.0), q(hi.0));
                let f = |x: f64| x.max(lo).min(hi);
                match (lo.is_finite(), hi.is_finite()) {
                    (true, true) => exact(vec![lo, hi], &f, vec![0.0, 1.0, 0.0]),
                    (true, false) => exact(vec![lo], &f, vec![0.0, 1.0]),
                    (false, true) => exact(vec![hi], &f, vec![1.0, 0.0]),
                    (false, false) => Spline { breaks: vec![], a: vec![0.0], b: vec![1.0] },
                }
            }
            Act::LeakyRelu { alpha } => exact(vec![0.0], &|x| self.eval(x), vec![alpha.0, 1.0]),
            Act::HardSigmoid { alpha, beta } => {
                if alpha.0 == 0.0 {
                    return Spline { breaks: vec![], a: vec![beta.0.clamp(0.0, 1.0)], b: vec![0.0] };
                }
                let (x0, x1) = ((0.0 - beta.0) / alpha.0, (1.0 - beta.0) / alpha.0);
                let (l, h) = (q(x0.min(x1)), q(x0.max(x1)));
                let (left, right) = if alpha.0 > 0.0 { (0.0, 1.0) } else { (1.0, 0.0) };
                Spline { breaks: vec![l, h], a: vec![left, left, right], b: vec![0.0, (right - left) / (h - l), 0.0] }
            }
            Act::Tanh => Spline::fit(f64::tanh, -8.0, 8.0, 0.0, FIT_TOL, -1.0, 1.0),
            // erf(±4.5) = ±(1 − 2·10^-10): saturated beyond.
            Act::Erf => Spline::fit(erf, -4.5, 4.5, 0.0, FIT_TOL, -1.0, 1.0),
            Act::Sigmoid => Spline::fit(|x| self.eval(x), -12.0, 12.0, 0.0, FIT_TOL, 0.0, 1.0),
            // Smooth activations with an identity right tail: fit, then let the last piece
            // continue as `x`.
            Act::HardSwish | Act::Silu | Act::Gelu | Act::Elu { .. } => {
                let (lo, hi) = match self {
                    Act::HardSwish => (-3.0, 3.0),
                    Act::Silu => (-20.0, 20.0),
                    Act::Gelu => (-8.0, 8.0),
                    _ => (-20.0, 0.0),
                };
                let f = |x: f64| self.eval(x);
                let mut s = Spline::fit(f, lo, hi, 0.0, FIT_TOL, f(lo), hi);
                let last = s.b.len() - 1;
                s.a[last] = hi;
                s.b[last] = 1.0;
                s
            }
        }
    }
}

/// Per-sample index map of a numpy-style broadcast from `from` to `to` (right-aligned; each
/// axis of `from` equal to `to`'s or 1). `None` if the shapes do not broadcast.
pub fn broadcast_map(from: &[usize], to: &[usize]) -> Option<Vec<usize>> {
    if from.len() > to.len() {
        return None;
    }
    let off = to.len() - from.len();
    for (i, &f) in from.iter().enumerate() {
        if f != 1 && f != to[off + i] {
            return None;
        }
    }
    let strides = strides(from);
    let n: usize = to.iter().product();
    let mut map = Vec::with_capacity(n);
    let mut idx = vec![0usize; to.len()];
    for _ in 0..n {
        let mut src = 0;
        for (i, &f) in from.iter().enumerate() {
            if f != 1 {
                src += idx[off + i] * strides[i];
            }
        }
        map.push(src);
        bump(&mut idx, to);
    }
    Some(map)
}

/// Broadcast of two shapes (numpy rules), or `None`.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let get = |s: &[usize], i: usize| if i + s.len() < n { 1 } else { s[i + s.len() - n] };
    (0..n)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn bump(idx: &mut [usize], shape: &[usize]) {
    for i in (0..shape.len()).rev() {
        idx[i] += 1;
        if idx[i] < shape[i] {
            return;
        }
        idx[i] = 0;
    }
}

/// Per-sample index map of `x[..., start:end:step, ...]` along `axis` (`step ≥ 1`).
pub fn slice_map(shape: &[usize], axis: usize, start: usize, end: usize, step: usize) -> (Vec<usize>, Vec<usize>) {
    let len = end.saturating_sub(start).div_ceil(step.max(1));
    let mut out = shape.to_vec();
    out[axis] = len;
    let st = strides(shape);
    let n: usize = out.iter().product();
    let mut map = Vec::with_capacity(n);
    let mut idx = vec![0usize; out.len()];
    for _ in 0..n {
        let src: usize =
            idx.iter().enumerate().map(|(i, &v)| if i == axis { (start + v * step) * st[i] } else { v * st[i] }).sum();
        map.push(src);
        bump(&mut idx, &out);
    }
    (out, map)
}

/// Per-sample map of a transpose by `perm` (output axis `i` is input axis `perm[i]`).
pub fn transpose_map(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let st = strides(shape);
    let n: usize = out.iter().product();
    let mut map = Vec::with_capacity(n);
    let mut idx = vec![0usize; out.len()];
    for _ in 0..n {
        map.push(idx.iter().enumerate().map(|(i, &v)| v * st[perm[i]]).sum());
        bump(&mut idx, &out);
    }
    (out, map)
}

/// Per-sample map of zero padding by `begin`/`end` per axis, with optional zero insertion
/// (`dilate[i] − 1` zeros between neighbours along axis `i`, as a transposed convolution's
/// input needs): `None` entries take the pad value.
pub fn pad_map(shape: &[usize], begin: &[usize], end: &[usize], dilate: &[usize]) -> (Vec<usize>, Vec<Option<usize>>) {
    let inner: Vec<usize> = shape.iter().zip(dilate).map(|(&s, &d)| if s == 0 { 0 } else { (s - 1) * d + 1 }).collect();
    let out: Vec<usize> = (0..shape.len()).map(|i| begin[i] + inner[i] + end[i]).collect();
    let st = strides(shape);
    let n: usize = out.iter().product();
    let mut map = Vec::with_capacity(n);
    let mut idx = vec![0usize; out.len()];
    for _ in 0..n {
        let mut src = Some(0usize);
        for i in 0..out.len() {
            let v = idx[i].wrapping_sub(begin[i]);
            if v >= inner[i] || !v.is_multiple_of(dilate[i]) {
                src = None;
                break;
            }
            src = src.map(|s| s + (v / dilate[i]) * st[i]);
        }
        map.push(src);
        bump(&mut idx, &out);
    }
    (out, map)
}

/// Builds `[n, out...]` from a share `[n, ...]` row by row, output element `j` of a row being
/// `pick(row, j)` (local). The dealer gets a placeholder.
fn map_rows(x: &AShare, out: &[usize], pick: impl Fn(&[u64], usize) -> u64) -> mpc_proto::Result<AShare> {
    let n = x.shape()[0];
    let mut shape = vec![n];
    shape.extend_from_slice(out);
    let Ok(t) = x.expose_share() else { return Ok(AShare::dealer(&shape)) };
    let per_in = t.len() / n.max(1);
    let per_out: usize = out.iter().product();
    let mut v = Vec::with_capacity(n * per_out);
    for row in t.as_slice().chunks(per_in.max(1)).take(n) {
        v.extend((0..per_out).map(|j| pick(row, j)));
    }
    Ok(AShare::from_share(RingTensor::from_vec(&shape, v)?))
}

/// Applies a per-sample index map to a share `[n, ...] → [n, out...]` (local). `None` entries
/// take the public `fill` (encoded): P0's share holds it, P1's holds 0.
pub fn gather(me: PartyId, x: &AShare, out: &[usize], map: &[Option<usize>], fill: u64) -> mpc_proto::Result<AShare> {
    let fill = if me == PartyId::P0 { fill } else { 0 };
    map_rows(x, out, |row, j| map[j].map_or(fill, |i| row[i]))
}

/// [`gather`] with a map that has no fill entries.
pub fn gather_all(x: &AShare, out: &[usize], map: &[usize]) -> mpc_proto::Result<AShare> {
    map_rows(x, out, |row, j| row[map[j]])
}

/// Concatenation of shares `[n, ...]` along per-sample axis `axis` (local).
pub fn concat(xs: &[&AShare], axis: usize, out: &[usize]) -> mpc_proto::Result<AShare> {
    let n = xs[0].shape()[0];
    let mut shape = vec![n];
    shape.extend_from_slice(out);
    let mut ts = Vec::with_capacity(xs.len());
    for x in xs {
        match x.expose_share() {
            Ok(t) => ts.push(t),
            Err(_) => return Ok(AShare::dealer(&shape)),
        }
    }
    // Blocks: outer = product of per-sample axes before `axis` (times the batch).
    let outer: usize = n * out[..axis].iter().product::<usize>();
    let mut v = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for t in &ts {
            let block = t.len() / outer;
            v.extend_from_slice(&t.as_slice()[o * block..(o + 1) * block]);
        }
    }
    Ok(AShare::from_share(RingTensor::from_vec(&shape, v)?))
}

/// The shares of several tensors as one flat tensor (local): to run one comparison layer over
/// the elements of independent steps.
pub fn concat_flat(xs: &[&AShare]) -> mpc_proto::Result<AShare> {
    let total: usize = xs.iter().map(|x| x.len()).sum();
    let mut v = Vec::with_capacity(total);
    for x in xs {
        match x.expose_share() {
            Ok(t) => v.extend_from_slice(t.as_slice()),
            Err(_) => return Ok(AShare::dealer(&[total])),
        }
    }
    Ok(AShare::from_share(RingTensor::from_vec(&[total], v)?))
}

/// The inverse of [`concat_flat`]: consecutive flat pieces of lengths `lens` (local).
pub fn split_flat(x: &AShare, lens: &[usize]) -> mpc_proto::Result<Vec<AShare>> {
    let Ok(t) = x.expose_share() else { return Ok(lens.iter().map(|&l| AShare::dealer(&[l])).collect()) };
    let mut out = Vec::with_capacity(lens.len());
    let mut at = 0;
    for &l in lens {
        out.push(AShare::from_share(RingTensor::from_vec(&[l], t.as_slice()[at..at + l].to_vec())?));
        at += l;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_activations_are_their_splines() {
        for act in [
            Act::Clip { lo: PubF64(0.0), hi: PubF64(6.0) },
            Act::Clip { lo: PubF64(-1.5), hi: PubF64(f64::INFINITY) },
            Act::Clip { lo: PubF64(f64::NEG_INFINITY), hi: PubF64(2.0) },
            Act::LeakyRelu { alpha: PubF64(0.1) },
            Act::HardSigmoid { alpha: PubF64(0.2), beta: PubF64(0.5) },
        ] {
            let s = act.spline();
            for i in -4000..4000 {
                let x = i as f64 / 200.0;
                assert!((s.eval(x) - act.eval(x)).abs() < 1e-12, "{act:?} at {x}: {} vs {}", s.eval(x), act.eval(x));
            }
        }
    }

    #[test]
    fn smooth_activations_within_their_bound() {
        for act in [Act::Tanh, Act::Sigmoid, Act::Silu, Act::Gelu, Act::HardSwish, Act::Elu { alpha: PubF64(1.0) }] {
            let s = act.spline();
            let mut worst = 0f64;
            for i in -60_000..60_000 {
                let x = i as f64 / 2000.0;
                worst = worst.max((s.eval(x) - act.eval(x)).abs());
            }
            assert!(worst <= act.error_bound() * 1.01, "{act:?}: worst error {worst} ({} pieces)", s.len());
        }
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (4.0, 0.999_999_984_582_742_1),
        ] {
            assert!((erf(x) - want).abs() < 1e-14 && (erf(-x) + want).abs() < 1e-14);
        }
    }

    #[test]
    fn maps_move_the_right_elements() {
        // [2, 3] broadcast from [3] and from [2, 1].
        assert_eq!(broadcast_map(&[3], &[2, 3]).unwrap(), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_map(&[2, 1], &[2, 3]).unwrap(), vec![0, 0, 0, 1, 1, 1]);
        assert!(broadcast_map(&[2], &[2, 3]).is_none());
        assert_eq!(broadcast_shape(&[4, 1, 1], &[4, 5, 6]).unwrap(), vec![4, 5, 6]);
        assert_eq!(slice_map(&[2, 5], 1, 1, 5, 2), (vec![2, 2], vec![1, 3, 6, 8]));
        assert_eq!(transpose_map(&[2, 3], &[1, 0]), (vec![3, 2], vec![0, 3, 1, 4, 2, 5]));
        let (shape, map) = pad_map(&[2], &[1], &[1], &[2]);
        assert_eq!((shape, map), (vec![5], vec![None, Some(0), None, Some(1), None]));
    }
}
