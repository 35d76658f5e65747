//! Piecewise-linear approximations (splines) of smooth functions, for evaluation under MPC.
//!
//! A [`Spline`] has breakpoints `p_1 < … < p_m` and a linear piece `a_j + b_j·x` on each of the
//! `m + 1` intervals (the first and last are usually constant: saturation). Under MPC it costs
//! one round: one ReLU-gate key per element, evaluated at the `m` shifted points `y − p_j` (see
//! [`Party::spline`](crate::Party::spline)).
//!
//! Splines are fitted greedily here, in `f64`, at first use: each interval is grown as far as
//! the minimax line on it (the chord shifted by half its largest deviation) stays within the
//! tolerance `max(rel·|f(x)|, abs)`. The fitted tables are public and deterministic.

use std::sync::OnceLock;

/// A public piecewise-linear function.
#[derive(Clone, Debug, PartialEq)]
pub struct Spline {
    /// Breakpoints `p_1 < … < p_m` (multiples of 2^-16, so they encode exactly).
    pub breaks: Vec<f64>,
    /// Values `c_0 … c_m` at each piece's anchor: piece `j` is `c_j + b_j·(x − p_j)` on
    /// `[p_j, p_{j+1})`, with `p_0 = −∞` and anchor 0 for the first piece. Anchoring at the
    /// piece's start keeps the slope's rounding error proportional to the piece width, not |x|.
    pub a: Vec<f64>,
    /// Slopes `b_0 … b_m`.
    pub b: Vec<f64>,
}

impl Spline {
    /// Evaluates the spline in `f64` (the plaintext reference of the MPC evaluation).
    pub fn eval(&self, x: f64) -> f64 {
        let j = self.breaks.partition_point(|&p| p <= x);
        self.a[j] + self.b[j] * (x - self.anchor(j))
    }

    /// Where piece `j` is anchored: its left breakpoint (0 for the first piece).
    pub fn anchor(&self, j: usize) -> f64 {
        if j == 0 { 0.0 } else { self.breaks[j - 1] }
    }

    /// Whether every slope is a small integer (Clip, ReLU-like pieces): then the spline
    /// evaluates at the fixed-point scale itself, with no product to truncate.
    pub fn integral_slopes(&self) -> bool {
        self.b.iter().all(|b| b.fract() == 0.0 && b.abs() <= 1024.0)
    }

    /// Number of breakpoints (= ReLU-gate evaluations per element under MPC).
    pub fn len(&self) -> usize {
        self.breaks.len()
    }

    /// Whether the spline is a single line.
    pub fn is_empty(&self) -> bool {
        self.breaks.is_empty()
    }

    /// Fits `f` on `[lo, hi]` with error at most `max(rel·|f(x)|, abs)` on every piece (checked
    /// on a grid), saturating to `left` below `lo` and to `right` at and above `hi`. Breakpoints
    /// are rounded to multiples of `2^-16`; pieces are at most 2 wide (so a slope rounded to
    /// 2^-17 errs by at most 2^-16 over its piece).
    pub fn fit(f: impl Fn(f64) -> f64, lo: f64, hi: f64, rel: f64, abs: f64, left: f64, right: f64) -> Spline {
        let q = |x: f64| (x * 65536.0).round() / 65536.0;
        let tol = |x: f64| (rel * f(x).abs()).max(abs);
        // Minimax line on [l, h] (for functions convex or concave there) and its error.
        let line = |l: f64, h: f64| -> (f64, f64, f64) {
            let b = (f(h) - f(l)) / (h - l);
            let a = f(l) - b * l;
            let (mut lo_dev, mut hi_dev) = (0f64, 0f64);
            let mut t = f64::INFINITY;
            for i in 0..=64 {
                let x = l + (h - l) * i as f64 / 64.0;
                let d = f(x) - (a + b * x);
                lo_dev = lo_dev.min(d);
                hi_dev = hi_dev.max(d);
                t = t.min(tol(x));
            }
            let shift = (lo_dev + hi_dev) / 2.0;
            (a + shift, b, (hi_dev - lo_dev) / 2.0 / t)
        };
        let mut breaks = vec![q(lo)];
        let (mut a, mut b) = (vec![left], vec![0.0]);
        let mut l = q(lo);
        while l < hi {
            // Largest h (bisection on a growing step) whose line meets the tolerance.
            let mut step = (hi - l).min(1.0 / 64.0);
            while l + step < hi && step < 1.0 && line(l, (l + 2.0 * step).min(hi)).2 <= 1.0 {
                step *= 2.0;
            }
            let (mut ok, mut bad) = (step.min(hi - l), (2.0 * step).min(hi - l));
            if line(l, l + ok).2 > 1.0 {
                (ok, bad) = (0.0, ok);
            }
            for _ in 0..30 {
                let mid = (ok + bad) / 2.0;
                if line(l, l + mid).2 <= 1.0 { ok = mid } else { bad = mid }
            }
            let h = if l + bad >= hi && line(l, hi).2 <= 1.0 { hi } else { q(l + ok.max(1.0 / 65536.0)) };
            let h = if h <= l { l + 1.0 / 65536.0 } else { h };
            let (ai, bi, _) = line(l, h);
            a.push(ai + bi * l);
            b.push(bi);
            breaks.push(h);
            l = h;
        }
        a.push(right);
        b.push(0.0);
        Spline { breaks, a, b }
    }
}

/// The logistic sigmoid `1 / (1 + e^-x)`: |error| ≤ 5·10^-4 on [−16, 16] before fixed-point
/// effects, saturating to 0 below and 1 above.
pub fn sigmoid() -> &'static Spline {
    static S: OnceLock<Spline> = OnceLock::new();
    S.get_or_init(|| Spline::fit(|x| 1.0 / (1.0 + (-x).exp()), -16.0, 16.0, 0.0, 5e-4, 0.0, 1.0))
}

/// `e^x` on [−16, 4]: error ≤ max(5·10^-4·e^x, 2^-18); 0 below −16, `e^4` at and above 4.
pub fn exp() -> &'static Spline {
    static S: OnceLock<Spline> = OnceLock::new();
    S.get_or_init(|| Spline::fit(f64::exp, -16.0, 4.0, 5e-4, 1.0 / 262_144.0, 0.0, 4f64.exp()))
}

/// `e^x` on [−16, 0] (softmax after subtracting the maximum): same tolerance as [`exp`].
pub fn exp_nonpositive() -> &'static Spline {
    static S: OnceLock<Spline> = OnceLock::new();
    S.get_or_init(|| Spline::fit(f64::exp, -16.0, 0.0, 5e-4, 1.0 / 262_144.0, 0.0, 1.0))
}

/// The power of two `2^-k` with `x·2^-k ∈ [1, 2)`, for `x` in [2^-6, 2^15) (64 below, 2^-14
/// above): a step function (20 breakpoints at the powers of two), exact in fixed point.
pub fn pow2_normalizer() -> &'static Spline {
    static S: OnceLock<Spline> = OnceLock::new();
    S.get_or_init(|| {
        let breaks: Vec<f64> = (-5..=14).map(|k| 2f64.powi(k)).collect();
        let mut a = vec![64.0];
        a.extend((-5..=14).map(|k| 2f64.powi(-k)));
        Spline { b: vec![0.0; a.len()], breaks, a }
    })
}

/// `1/z` on [1, 2] (slightly widened for rounding): relative error ≤ 2.5·10^-4.
pub fn reciprocal_unit() -> &'static Spline {
    static S: OnceLock<Spline> = OnceLock::new();
    S.get_or_init(|| Spline::fit(|x| 1.0 / x, 0.99, 2.01, 2.5e-4, 0.0, 1.0 / 0.99, 1.0 / 2.01))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &Spline, f: impl Fn(f64) -> f64, lo: f64, hi: f64, tol: impl Fn(f64) -> f64) {
        for i in 0..=200_000 {
            let x = lo + (hi - lo) * i as f64 / 200_000.0;
            let e = (s.eval(x) - f(x)).abs();
            assert!(e <= tol(x) * 1.01, "x = {x}: error {e} > {}", tol(x));
        }
    }

    #[test]
    fn fitted_tables_meet_their_tolerances() {
        check(sigmoid(), |x| 1.0 / (1.0 + (-x).exp()), -16.0, 16.0, |_| 5e-4);
        check(sigmoid(), |x| 1.0 / (1.0 + (-x).exp()), -40.0, 40.0, |_| 1.2e-7 + 5e-4);
        check(exp(), f64::exp, -16.0, 4.0, |x| (5e-4 * x.exp()).max(1.0 / 262_144.0));
        check(exp_nonpositive(), f64::exp, -16.0, 0.0, |x| (5e-4 * x.exp()).max(1.0 / 262_144.0));
        check(reciprocal_unit(), |x| 1.0 / x, 0.99, 2.01, |x| 2.5e-4 / x);
        for k in -6..15 {
            let x = 2f64.powi(k) * 1.5;
            assert_eq!(pow2_normalizer().eval(x) * x, 1.5, "normaliser at {x}");
        }
        // Sizes stay modest: each breakpoint is one gate evaluation per element.
        for (name, s, max) in [("sigmoid", sigmoid(), 40), ("exp", exp(), 140), ("recip", reciprocal_unit(), 40)] {
            assert!(s.len() <= max, "{name}: {} pieces", s.len());
        }
    }
}
