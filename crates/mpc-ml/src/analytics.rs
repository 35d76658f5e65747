//! Private analytics: statistics of columns whose rows the computing parties cannot read.
//!
//! Rows come from Alice (P0), Bob (P1) or both (the same columns; the row counts are public) and
//! are secret-shared at once; the statistics are revealed to Bob only. This is what
//! record-level homomorphic-encryption analytics offers (the server adds up encrypted records,
//! the key holder decrypts aggregates), with the dealer model's speed.
//!
//! # What is computed under MPC and what is revealed
//!
//! | statistic | under MPC | revealed to Bob |
//! |-----------|-----------|-----------------|
//! | `count` | — (row counts are public) | `n` |
//! | `sum`, `mean` | column sums (local) | the sums |
//! | `var`, `std` | sums of squares (one exact Beaver product, no truncation) | sums and sums of squares |
//! | `corr` | the matrix `XᵀX` (one exact Beaver matrix product) | sums and `XᵀX` |
//! | `min`, `max` | a comparison tree over the rows (⌈log2 n⌉ rounds) | the extremes only |
//! | histogram | one comparison per row and edge, summed | the bin counts only |
//!
//! `var`, `std` and `corr` reveal their *sufficient statistics* (column sums, sums of squares and
//! cross products) rather than the final figure: Bob's node finishes the computation in exact
//! 128-bit integer arithmetic, so the result is exact for the fixed-point-encoded data — no
//! truncation error, no catastrophic cancellation. When Bob owns every row this reveals nothing
//! to anyone; when Alice contributes rows, Bob learns these pooled aggregates (never a row).
//!
//! # Bounds (checked by each contributor on its own rows before the job, see [`check_data`])
//!
//! * Every value must be encodable: `|x| < 2^int_bits` (2^31 by default).
//! * `var`, `std`, `corr`: each contributor's sum of squares per column below `2^(62 − 2f) / 2`
//!   (`2^29` at f = 16), so that the exact products at scale `2^2f` cannot wrap the ring.
//!   Scale large columns down before the job (correlations are unchanged), or run the job with
//!   fewer fractional bits (each one fewer quadruples the range: `2^33` at f = 14).

use std::fmt;
use std::str::FromStr;

use crate::backend::Backend;
use mpc_proto::{AShare, FixedPoint, PartyId, RingTensor};
use ndarray::{Array2, ArrayView1, Axis};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// A statistic an analytics job can compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    /// Number of rows (public).
    Count,
    /// Column sums.
    Sum,
    /// Column means.
    Mean,
    /// Sample variance (divisor `n − 1`).
    Var,
    /// Sample standard deviation.
    Std,
    /// Column minima.
    Min,
    /// Column maxima.
    Max,
    /// Pearson correlation matrix of the columns.
    Corr,
}

impl Stat {
    /// All statistics, in report order.
    pub const ALL: [Stat; 8] =
        [Stat::Count, Stat::Sum, Stat::Mean, Stat::Var, Stat::Std, Stat::Min, Stat::Max, Stat::Corr];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Stat::Count => "count",
            Stat::Sum => "sum",
            Stat::Mean => "mean",
            Stat::Var => "var",
            Stat::Std => "std",
            Stat::Min => "min",
            Stat::Max => "max",
            Stat::Corr => "corr",
        }
    }
}

impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Stat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stat::ALL.into_iter().find(|k| k.name() == s.trim()).ok_or_else(|| {
            format!(
                "unknown statistic {s:?} (choose from {})",
                Stat::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// Parses a comma-separated list of statistics (`mean,var,corr`).
pub fn parse_stats(s: &str) -> Result<Vec<Stat>, String> {
    let mut v: Vec<Stat> = s.split(',').filter(|p| !p.trim().is_empty()).map(str::parse).collect::<Result<_, _>>()?;
    v.sort();
    v.dedup();
    if v.is_empty() {
        return Err("no statistics given".into());
    }
    Ok(v)
}

/// A histogram of one column with public bin edges `e_1 < … < e_k`: `k + 1` bins
/// `(−∞, e_1), [e_1, e_2), …, [e_k, ∞)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// The column's name.
    pub column: String,
    /// Increasing bin edges.
    pub edges: Vec<f64>,
}

impl FromStr for Histogram {
    type Err = String;

    /// `COLUMN:e1,e2,…`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (column, edges) = s
            .split_once(':')
            .ok_or_else(|| format!("histogram {s:?}: expected COLUMN:EDGE,EDGE,… (e.g. age:30,50,70)"))?;
        let edges = edges
            .split(',')
            .map(|e| e.trim().parse::<f64>().map_err(|_| format!("histogram {s:?}: edge {e:?} is not a number")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Histogram { column: column.trim().to_string(), edges })
    }
}

/// The public description of an analytics job; all three parties must agree on it (by hash).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsPlan {
    /// Rows contributed by Alice (P0) and by Bob (P1); either may be zero, not both.
    pub rows: [usize; 2],
    /// Column names (the same for both contributors).
    pub columns: Vec<String>,
    /// Statistics, sorted and without duplicates.
    pub stats: Vec<Stat>,
    /// Histograms.
    pub histograms: Vec<Histogram>,
    /// Fixed-point encoding.
    pub fixed: FixedPoint,
}

/// Largest number of histogram edges in one job (`rows × edges` comparisons).
pub const MAX_EDGES: usize = 1024;

impl AnalyticsPlan {
    /// Total rows.
    pub fn n(&self) -> usize {
        self.rows[0] + self.rows[1]
    }

    /// Columns.
    pub fn d(&self) -> usize {
        self.columns.len()
    }

    /// The plan's hash ([`crate::plan_hash()`], domain `analytics`): the parties compare it when
    /// they connect.
    pub fn hash(&self) -> [u8; 32] {
        crate::plan_hash("analytics", self)
    }

    fn has(&self, s: Stat) -> bool {
        self.stats.contains(&s)
    }

    fn needs_sums(&self) -> bool {
        self.stats.iter().any(|s| matches!(s, Stat::Sum | Stat::Mean | Stat::Var | Stat::Std | Stat::Corr))
    }

    fn needs_squares(&self) -> bool {
        self.stats.iter().any(|s| matches!(s, Stat::Var | Stat::Std | Stat::Corr))
    }

    fn needs_extremes(&self) -> bool {
        self.has(Stat::Min) || self.has(Stat::Max)
    }

    /// Index of each histogram's column.
    fn hist_columns(&self) -> Result<Vec<usize>, ModelError> {
        self.histograms
            .iter()
            .map(|h| {
                self.columns.iter().position(|c| *c == h.column).ok_or_else(|| {
                    ModelError::Invalid(format!(
                        "histogram of {:?}: no such column (columns: {})",
                        h.column,
                        self.columns.join(", ")
                    ))
                })
            })
            .collect()
    }

    /// Checks the plan is well formed.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Invalid(m));
        if self.n() == 0 {
            return bad("an analytics job needs at least one row".into());
        }
        if self.columns.is_empty() {
            return bad("an analytics job needs at least one column".into());
        }
        if self.stats.is_empty() && self.histograms.is_empty() {
            return bad("nothing to compute: give statistics or histograms".into());
        }
        if self.stats.windows(2).any(|w| w[0] >= w[1]) {
            return bad("statistics must be sorted and distinct (use parse_stats)".into());
        }
        if self.needs_squares() && self.n() < 2 {
            return bad("var, std and corr need at least two rows".into());
        }
        self.hist_columns()?;
        let mut edges = 0;
        for h in &self.histograms {
            if h.edges.is_empty() {
                return bad(format!("histogram of {:?} has no edges", h.column));
            }
            if h.edges.windows(2).any(|w| w[0] >= w[1]) || h.edges.iter().any(|e| !e.is_finite()) {
                return bad(format!("histogram of {:?}: edges must be finite and increasing", h.column));
            }
            for &e in &h.edges {
                self.fixed.encode(e).map_err(|_| {
                    ModelError::Invalid(format!(
                        "histogram of {:?}: edge {e} is outside the fixed-point range",
                        h.column
                    ))
                })?;
            }
            edges += h.edges.len();
        }
        if edges > MAX_EDGES {
            return bad(format!("{edges} histogram edges in all; at most {MAX_EDGES}"));
        }
        Ok(())
    }

    /// Largest per-contributor sum of squares of a column that `var`, `std` and `corr` accept.
    pub fn max_sum_of_squares(&self) -> f64 {
        2f64.powi(61 - 2 * self.fixed.frac_bits as i32)
    }
}

/// A histogram's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistogramResult {
    /// The column.
    pub column: String,
    /// The edges.
    pub edges: Vec<f64>,
    /// `edges.len() + 1` counts.
    pub counts: Vec<u64>,
}

/// What Bob learns. Statistics that were not asked for are `None`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Rows in all.
    pub count: usize,
    /// Column names.
    pub columns: Vec<String>,
    /// Column sums.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<Vec<f64>>,
    /// Column means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f64>>,
    /// Sample variances.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub var: Option<Vec<f64>>,
    /// Sample standard deviations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f64>>,
    /// Minima.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<Vec<f64>>,
    /// Maxima.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<Vec<f64>>,
    /// Pearson correlations, row-major `d × d` (0 where a column is constant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corr: Option<Vec<Vec<f64>>>,
    /// Histograms.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub histograms: Vec<HistogramResult>,
}

impl Report {
    /// Largest absolute difference from `other` over every figure both have (counts included),
    /// for tests and `--verify`.
    pub fn max_abs_diff(&self, other: &Report) -> f64 {
        let mut m: f64 = (self.count as f64 - other.count as f64).abs();
        let pairs = [
            (&self.sum, &other.sum),
            (&self.mean, &other.mean),
            (&self.var, &other.var),
            (&self.std, &other.std),
            (&self.min, &other.min),
            (&self.max, &other.max),
        ];
        for (a, b) in pairs {
            if let (Some(a), Some(b)) = (a, b) {
                m = a.iter().zip(b).fold(m, |m, (x, y)| m.max((x - y).abs()));
            }
        }
        if let (Some(a), Some(b)) = (&self.corr, &other.corr) {
            m = a.iter().flatten().zip(b.iter().flatten()).fold(m, |m, (x, y)| m.max((x - y).abs()));
        }
        for (a, b) in self.histograms.iter().zip(&other.histograms) {
            m = a.counts.iter().zip(&b.counts).fold(m, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
        }
        m
    }
}

/// Checks one contributor's rows against the plan before the job runs: shape, encodability and
/// the ranges of [the module docs](self). `me` is the contributor (P0 or P1).
pub fn check_data(plan: &AnalyticsPlan, me: PartyId, x: &Array2<f64>) -> Result<(), ModelError> {
    let want = match me {
        PartyId::P0 => plan.rows[0],
        PartyId::P1 => plan.rows[1],
        _ => return Err(ModelError::Invalid("the dealer contributes no rows".into())),
    };
    if x.nrows() != want || x.ncols() != plan.d() {
        return Err(ModelError::Invalid(format!(
            "data of shape {} × {}, the plan says {want} × {} for {me}",
            x.nrows(),
            x.ncols(),
            plan.d()
        )));
    }
    let limit = plan.fixed.max_value();
    let ss_limit = plan.max_sum_of_squares();
    for (j, col) in x.axis_iter(Axis(1)).enumerate() {
        let name = &plan.columns[j];
        if let Some((i, v)) = col.iter().enumerate().find(|(_, v)| !v.is_finite() || v.abs() >= limit) {
            return Err(ModelError::Invalid(format!(
                "column {name:?}, data row {}: {v} is outside the fixed-point range ±{limit}",
                i + 1
            )));
        }
        if plan.needs_squares() {
            let ss: f64 = col.iter().map(|v| v * v).sum();
            if ss >= ss_limit {
                return Err(ModelError::Invalid(format!(
                    "column {name:?}: sum of squares {ss:.3e} exceeds {ss_limit:.3e}, the range var/std/corr can \
                     compute exactly at {} fractional bits; scale the column down (e.g. divide by {:.0}; correlations \
                     are unchanged) or use fewer fractional bits (each one fewer quadruples the range)",
                    plan.fixed.frac_bits,
                    10f64.powf((ss / ss_limit).sqrt().log10().ceil().max(1.0))
                )));
            }
        }
    }
    Ok(())
}

/// Stacks two `[r, d]` shares vertically (local).
fn vstack(a: Option<AShare>, b: Option<AShare>) -> Result<AShare, ModelError> {
    Ok(match (a, b) {
        (Some(a), None) | (None, Some(a)) => a,
        (Some(a), Some(b)) => match (a.expose_share(), b.expose_share()) {
            (Ok(at), Ok(bt)) => {
                let mut v = at.as_slice().to_vec();
                v.extend_from_slice(bt.as_slice());
                let shape = [a.shape()[0] + b.shape()[0], a.shape()[1]];
                AShare::from_share(RingTensor::from_vec(&shape, v)?)
            }
            _ => AShare::dealer(&[a.shape()[0] + b.shape()[0], a.shape()[1]]),
        },
        (None, None) => return Err(ModelError::Invalid("no rows".into())),
    })
}

/// Concatenates shares into one flat vector (local), so one reveal carries everything.
fn concat_flat(parts: &[&AShare]) -> Result<AShare, ModelError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if parts.iter().any(|p| p.is_dealer()) {
        return Ok(AShare::dealer(&[len]));
    }
    let mut v = Vec::with_capacity(len);
    for p in parts {
        v.extend_from_slice(p.expose_share()?.as_slice());
    }
    Ok(AShare::from_share(RingTensor::from_vec(&[len], v)?))
}

/// Applies `f` to this party's share (a placeholder on the dealer keeps only the shape).
fn map_share(x: &AShare, shape: &[usize], f: impl Fn(&RingTensor) -> Vec<u64>) -> Result<AShare, ModelError> {
    Ok(match x.expose_share() {
        Ok(t) => AShare::from_share(RingTensor::from_vec(shape, f(t))?),
        Err(_) => AShare::dealer(shape),
    })
}

/// Runs an analytics job. P0 and P1 pass their own rows if they contribute any (`None` when
/// their row count is zero); the dealer passes `None`. Returns the report at Bob (P1) and
/// `None` elsewhere.
///
/// Rounds: 1 for the products (if `var`, `std` or `corr`), ⌈log2 n⌉ for `min`/`max`, 1 for the
/// histograms, 1 for the reveal — independent phases are not merged yet.
pub async fn analyze(
    party: &mut dyn Backend,
    plan: &AnalyticsPlan,
    data: Option<&Array2<f64>>,
) -> Result<Option<Report>, ModelError> {
    plan.validate()?;
    let me = party.id();
    let fx = plan.fixed;
    if fx != party.fixed() {
        return Err(ModelError::Invalid("the session's fixed-point encoding differs from the plan's".into()));
    }
    let (n, d) = (plan.n(), plan.d());
    let mut inputs = [None, None];
    for (k, owner) in [PartyId::P0, PartyId::P1].into_iter().enumerate() {
        if plan.rows[k] == 0 {
            continue;
        }
        let value = match (me == owner, data) {
            (true, Some(x)) => {
                check_data(plan, me, x)?;
                Some(fx.encode_array(&x.clone().into_dyn())?)
            }
            (true, None) => return Err(ModelError::Invalid(format!("{me} contributes rows: pass its data"))),
            (false, _) => None,
        };
        inputs[k] = Some(party.share_input(owner, &[plan.rows[k], d], value.as_ref())?);
    }
    if data.is_some() && (me == PartyId::P2 || plan.rows[me.index()] == 0) {
        return Err(ModelError::Invalid(format!("{me} contributes no rows in this plan: pass no data")));
    }
    let [a, b] = inputs;
    let x = vstack(a, b)?;

    let mut parts: Vec<AShare> = Vec::new();
    let sums = x.sum_axis(0)?;
    if plan.needs_sums() {
        parts.push(sums.clone());
    }
    if plan.needs_squares() {
        if plan.has(Stat::Corr) {
            // XᵀX exactly (scale 2^2f, no truncation): one Beaver matrix product.
            let xt = map_share(&x, &[d, n], |t| t.transpose().expect("2-D").as_slice().to_vec())?;
            parts.push(party.matmul(&xt, &x).await?);
        } else {
            parts.push(party.mul(&x, &x).await?.sum_axis(0)?);
        }
    }
    if plan.needs_extremes() {
        // One comparison tree for both: max over [x, −x] gives the maxima and minus the minima.
        let both = map_share(&x, &[n, 2 * d], |t| {
            let s = t.as_slice();
            let mut v = Vec::with_capacity(2 * n * d);
            for r in 0..n {
                let row = &s[r * d..(r + 1) * d];
                v.extend_from_slice(row);
                v.extend(row.iter().map(|e| e.wrapping_neg()));
            }
            v
        })?;
        parts.push(party.max(&both, 0).await?);
    }
    if !plan.histograms.is_empty() {
        let cols = plan.hist_columns()?;
        let spec: Vec<(usize, f64)> =
            plan.histograms.iter().zip(&cols).flat_map(|(h, &c)| h.edges.iter().map(move |&e| (c, e))).collect();
        let k = spec.len();
        let picked = map_share(&x, &[n, k], |t| {
            let s = t.as_slice();
            (0..n).flat_map(|r| spec.iter().map(move |&(c, _)| s[r * d + c])).collect()
        })?;
        let mut edges = Vec::with_capacity(n * k);
        for _ in 0..n {
            for &(_, e) in &spec {
                edges.push(fx.encode(e)?);
            }
        }
        let bits = party.lt_public(&picked, &RingTensor::from_vec(&[n, k], edges)?).await?;
        parts.push(bits.sum_axis(0)?);
    }
    let all = concat_flat(&parts.iter().collect::<Vec<_>>())?;
    let Some(open) = party.reveal_to(PartyId::P1, &all).await? else { return Ok(None) };
    Ok(Some(finish(plan, open.as_slice())?))
}

/// Bob's side: exact integer post-processing of the revealed aggregates.
fn finish(plan: &AnalyticsPlan, open: &[u64]) -> Result<Report, ModelError> {
    let (n, d) = (plan.n(), plan.d());
    let f = plan.fixed.frac_bits;
    let s1 = 2f64.powi(f as i32);
    let mut at = 0;
    let mut take = |len: usize| {
        let v = &open[at..at + len];
        at += len;
        v.iter().map(|&u| u as i64).collect::<Vec<i64>>()
    };
    let sums = if plan.needs_sums() { take(d) } else { vec![] };
    let products = if plan.needs_squares() { take(if plan.has(Stat::Corr) { d * d } else { d }) } else { vec![] };
    let extremes = if plan.needs_extremes() { take(2 * d) } else { vec![] };
    let k: usize = plan.histograms.iter().map(|h| h.edges.len()).sum();
    let below = if plan.histograms.is_empty() { vec![] } else { take(k) };

    let mut r = Report {
        count: n,
        columns: plan.columns.clone(),
        sum: None,
        mean: None,
        var: None,
        std: None,
        min: None,
        max: None,
        corr: None,
        histograms: vec![],
    };
    if plan.has(Stat::Sum) {
        r.sum = Some(sums.iter().map(|&s| s as f64 / s1).collect());
    }
    if plan.has(Stat::Mean) {
        r.mean = Some(sums.iter().map(|&s| s as f64 / s1 / n as f64).collect());
    }
    if plan.needs_squares() {
        let nn = n as i128;
        // q(i, j) = Σ x_i x_j at scale 2^2f; the centred co-moment n·q − s_i·s_j is exact.
        let q = |i: usize, j: usize| if plan.has(Stat::Corr) { products[i * d + j] } else { products[i] } as i128;
        let comoment = |i: usize, j: usize| nn * q(i, j) - sums[i] as i128 * sums[j] as i128;
        let scale = s1 * s1 * (n * (n - 1)) as f64;
        let var: Vec<f64> = (0..d).map(|i| (comoment(i, i).max(0) as f64) / scale).collect();
        if plan.has(Stat::Var) {
            r.var = Some(var.clone());
        }
        if plan.has(Stat::Std) {
            r.std = Some(var.iter().map(|v| v.sqrt()).collect());
        }
        if plan.has(Stat::Corr) {
            let c = (0..d)
                .map(|i| {
                    (0..d)
                        .map(|j| {
                            let den = (comoment(i, i) as f64 * comoment(j, j) as f64).sqrt();
                            if den > 0.0 { (comoment(i, j) as f64 / den).clamp(-1.0, 1.0) } else { 0.0 }
                        })
                        .collect()
                })
                .collect();
            r.corr = Some(c);
        }
    }
    if plan.needs_extremes() {
        let val = |v: i64| v as f64 / s1;
        if plan.has(Stat::Max) {
            r.max = Some((0..d).map(|j| val(extremes[j])).collect());
        }
        if plan.has(Stat::Min) {
            r.min = Some((0..d).map(|j| -val(extremes[d + j])).collect());
        }
    }
    let mut at = 0;
    for h in &plan.histograms {
        let c = &below[at..at + h.edges.len()];
        at += h.edges.len();
        let mut counts = Vec::with_capacity(c.len() + 1);
        let mut prev = 0i64;
        for &v in c.iter().chain(std::iter::once(&(n as i64))) {
            if v < prev || v > n as i64 {
                return Err(ModelError::Invalid(format!("inconsistent histogram counts for {:?}", h.column)));
            }
            counts.push((v - prev) as u64);
            prev = v;
        }
        r.histograms.push(HistogramResult { column: h.column.clone(), edges: h.edges.clone(), counts });
    }
    Ok(r)
}

/// The same statistics in plain `f64` over all rows (Alice's then Bob's): the reference the
/// private job is compared against.
pub fn analyze_plain(plan: &AnalyticsPlan, x: &Array2<f64>) -> Report {
    let (n, d) = (x.nrows(), x.ncols());
    let col = |j: usize| x.column(j);
    let mean = |c: ArrayView1<'_, f64>| c.sum() / n as f64;
    let var = |c: ArrayView1<'_, f64>| {
        let m = mean(c);
        c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n as f64 - 1.0)
    };
    let want = |s: Stat| plan.stats.contains(&s);
    let per = |f: &dyn Fn(ArrayView1<'_, f64>) -> f64| Some((0..d).map(|j| f(col(j))).collect::<Vec<_>>());
    let mut r = Report {
        count: n,
        columns: plan.columns.clone(),
        sum: want(Stat::Sum).then(|| per(&|c| c.sum())).flatten(),
        mean: want(Stat::Mean).then(|| per(&mean)).flatten(),
        var: want(Stat::Var).then(|| per(&var)).flatten(),
        std: want(Stat::Std).then(|| per(&|c| var(c).sqrt())).flatten(),
        min: want(Stat::Min).then(|| per(&|c| c.fold(f64::INFINITY, |m, &v| m.min(v)))).flatten(),
        max: want(Stat::Max).then(|| per(&|c| c.fold(f64::NEG_INFINITY, |m, &v| m.max(v)))).flatten(),
        corr: None,
        histograms: vec![],
    };
    if want(Stat::Corr) {
        let cov = |a: usize, b: usize| {
            let (ma, mb) = (mean(col(a)), mean(col(b)));
            col(a).iter().zip(col(b)).map(|(u, v)| (u - ma) * (v - mb)).sum::<f64>()
        };
        r.corr = Some(
            (0..d)
                .map(|i| {
                    (0..d)
                        .map(|j| {
                            let den = (cov(i, i) * cov(j, j)).sqrt();
                            if den > 0.0 { cov(i, j) / den } else { 0.0 }
                        })
                        .collect()
                })
                .collect(),
        );
    }
    for h in &plan.histograms {
        let j = plan.columns.iter().position(|c| *c == h.column).unwrap_or(0);
        let mut counts = vec![0u64; h.edges.len() + 1];
        for &v in col(j) {
            counts[h.edges.iter().filter(|&&e| v >= e).count()] += 1;
        }
        r.histograms.push(HistogramResult { column: h.column.clone(), edges: h.edges.clone(), counts });
    }
    r
}
