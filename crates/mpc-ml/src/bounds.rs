//! Comparison settings of a plan: value bounds by interval analysis, a comparison window per
//! step, and a method per step from the cost model.
//!
//! A comparison is exact when its input fits its window, `|x| < 2^(k−1)` ulps
//! ([`mpc_proto::compare`]); a narrower window makes every method cheaper (fewer DCF levels,
//! fewer helper terms). When the model owner declares the range of the input values
//! ([`PlanOptions::input_range`]), [`comparison_bits`] propagates a bound on every activation
//! through the layers — `Σ|w|·B + |b|` through linear and convolution layers (per output
//! unit), unchanged through ReLU and pooling, `max|scale|·B + max|shift|` through affine
//! layers — and sets each comparison step's window to that bound with one bit of margin (the
//! fixed-point rounding of weights and truncations stays far inside it), capped at the widest
//! window ([`Comparisons::default_bits`]). Without a declared range every window is the widest.
//!
//! **What this reveals.** The windows are part of the public plan: each is `⌈log2⌉` of an upper
//! bound on one layer's activations given the declared input range, i.e. roughly the log of
//! the layer's largest row L1 norm times the bound before it — a few bits about the model's
//! weights per comparison layer, which docs/security.md lists as public.
//!
//! **Failure case.** An input value outside the declared range can push an activation past
//! its window, where a comparison gives the sign of `x mod 2^k` instead of `x`. Nodes refuse
//! such inputs before any share moves; the only other source is local truncation's rare
//! large error (probability ≈ 2^(l+1−64) per product, [`mpc_proto::Party::trunc`]), which
//! corrupts the value itself whatever the window.

use mpc_proto::approx;
use mpc_proto::compare::cost::{self, OpShape};
use mpc_proto::compare::{Comparisons, Link, Method, Objective, Policy};
use mpc_proto::{FixedPoint, Truncation};
use serde::{Deserialize, Serialize};

use crate::model::{Model, OutputPolicy, Plan, Step};
use crate::op::{Op, Operator, Runs};

/// How a plan's comparison-based steps run and its products truncate; public and hashed with
/// the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlanOptions {
    /// Method choice: one method everywhere, or per step by the cost model (`auto`).
    pub comparisons: Policy,
    /// The link the cost model assumes.
    pub link: Link,
    /// What the cost model minimises ([`Objective`]): the whole job with material made on
    /// demand, or the online latency with the dealer running ahead.
    #[serde(default)]
    pub objective: Objective,
    /// The declared range of every input value, in ulps of the plan's fixed point (`lo ≤ hi`):
    /// narrows the comparison windows ([`comparison_bits`]) and is enforced on the data owner's
    /// inputs. `None`: no declared range, widest windows.
    pub input_range: Option<(i64, i64)>,
    /// How the products of linear, convolution and secret-product steps truncate:
    /// [`Truncation::Exact`] by default (one more round per product depth, never a large
    /// error); [`Truncation::Local`] saves that round and accepts local truncation's rare wrap
    /// (probability about `|v|·2^(2f+1−64)` per value `v`, which corrupts the row it hits:
    /// measured 4 of 500 ResNet-20 rows at 20 fractional bits).
    pub truncation: Truncation,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            comparisons: Policy::default(),
            link: Link::default(),
            objective: Objective::default(),
            input_range: None,
            truncation: Truncation::Exact,
        }
    }
}

impl PlanOptions {
    /// Options with a declared real input range `[lo, hi]` for `fixed`.
    pub fn with_input_range(mut self, lo: f64, hi: f64, fixed: FixedPoint) -> Self {
        let s = (1u64 << fixed.frac_bits) as f64;
        self.input_range = Some(((lo * s).floor() as i64, (hi * s).ceil() as i64));
        self
    }

    /// The declared range in real units.
    pub fn input_range_real(&self, fixed: FixedPoint) -> Option<(f64, f64)> {
        let s = (1u64 << fixed.frac_bits) as f64;
        self.input_range.map(|(lo, hi)| (lo as f64 / s, hi as f64 / s))
    }
}

/// A comparison-based step's public settings: method and window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompareSpec {
    /// How its comparisons run.
    pub method: Method,
    /// Its comparison window `k`.
    pub bits: u8,
}

impl CompareSpec {
    /// The party settings for this step over `link` (the method is fixed, so the objective is
    /// moot).
    pub fn comparisons(&self, link: Link) -> Comparisons {
        Comparisons { policy: Policy::Fixed(self.method), link, objective: Objective::default(), bits: self.bits }
    }
}

/// Whether the output policy compares (argmax, threshold, or a final softmax/sigmoid).
pub(crate) fn output_compares(plan: &Plan) -> bool {
    let ends_in_prob = matches!(plan.steps.last().map(|s| &s.kind), Some(Op::Softmax(_) | Op::Sigmoid(_)));
    match plan.output {
        OutputPolicy::Logits => false,
        OutputPolicy::Label => true,
        OutputPolicy::Probabilities => !ends_in_prob,
    }
}

/// The comparison window for values bounded by `|x| ≤ bound` (real units): the bound in ulps
/// with one bit of sign and one of margin, or the widest window when it does not fit. What a
/// plan gives each comparison step, and what a program comparing data of known range sets with
/// [`mpc_proto::Party::set_comparisons`].
pub fn window_for(bound: f64, fixed: FixedPoint) -> u8 {
    bits_for(bound, fixed)
}

fn bits_for(bound: f64, fixed: FixedPoint) -> u8 {
    let widest = Comparisons::default_bits(fixed);
    let ulps = bound * (1u64 << fixed.frac_bits) as f64 + 2.0;
    if !ulps.is_finite() || ulps >= 2f64.powi(i32::from(widest) - 2) {
        return widest;
    }
    // |x| ≤ ulps < 2^(k−2): one bit of sign, one of margin.
    ((ulps.log2().ceil() as u8) + 2).clamp(2, widest)
}

/// Comparison windows of a model's comparison-based layers, in layer order (`None` for the
/// others), and of its output stage, given the declared input range (see the module docs).
/// Bounds follow the graph: a sum of two tensors is bounded by the sum of their bounds, a
/// product by the product, a concatenation by the larger.
pub fn comparison_bits(model: &Model, fixed: FixedPoint, range: Option<(f64, f64)>) -> (Vec<Option<u8>>, u8) {
    let widest = Comparisons::default_bits(fixed);
    let Some((lo, hi)) = range else {
        let per = model.layers.iter().map(|l| l.op.compares().then_some(widest)).collect();
        return (per, widest);
    };
    let shapes: Vec<Vec<usize>> = match model.steps(1) {
        Ok(steps) => steps.into_iter().map(|s| s.input).collect(),
        Err(_) => vec![vec![]; model.layers.len()],
    };
    let mut bound = vec![lo.abs().max(hi.abs())];
    let mut out = Vec::with_capacity(model.layers.len());
    for (i, (layer, wires)) in model.layers.iter().zip(&model.wires).enumerate() {
        let ins: Vec<f64> = wires.iter().map(|&t| bound.get(t).copied().unwrap_or(f64::INFINITY)).collect();
        out.push(layer.op.compares().then(|| layer.op.window(ins[0], fixed)));
        bound.push(layer.op.bound(&ins, &layer.weights, &shapes[i]));
    }
    let b = *bound.last().expect("the input's bound");
    // The output stage compares logits (argmax: differences) or thresholds them.
    (out, if b.is_finite() { bits_for(2.0 * b, fixed).max(bits_for(0.5, fixed)) } else { widest })
}

/// Levels of a binary tree over `len` leaves: `⌈log2 len⌉`.
pub(crate) fn levels(len: usize) -> usize {
    (usize::BITS - len.max(1).saturating_sub(1).leading_zeros()) as usize
}

/// The widest comparison window for `fixed` (the default when nothing bounds the values).
pub(crate) fn widest(fixed: FixedPoint) -> u8 {
    Comparisons::default_bits(fixed)
}

/// The output stage's view: argmax over the classes (compare and select per level), a binary
/// threshold, or a final softmax / sigmoid.
fn output_shape_of(plan: &Plan, bits: u8) -> OpShape {
    let shape = plan.output_shape();
    let (n, classes) = (shape.iter().product::<usize>(), *shape.last().unwrap_or(&1));
    let b = u32::from(bits);
    match (plan.output, classes) {
        (OutputPolicy::Label, 1) => OpShape { elements: n, points: 1, relu: false, bits: b, sequential: 1 },
        (OutputPolicy::Label, c) => {
            OpShape { elements: n / c * (c - 1), points: 1, relu: true, bits: b, sequential: 2 * levels(c) }
        }
        (_, 1) => OpShape { elements: n, points: approx::sigmoid().breaks.len(), relu: true, bits: b, sequential: 1 },
        (_, c) => OpShape { elements: n, points: 1, relu: true, bits: b, sequential: levels(c) + 3 },
    }
}

impl Plan {
    /// Sets every comparison-based step's method from the plan's options and the steps' sizes
    /// and windows (all parties derive the same: a public function of public data).
    pub(crate) fn resolve_methods(&mut self) {
        let mut ops: Vec<OpShape> =
            self.steps.iter().filter_map(|st| st.compare.map(|c| st.kind.cost_shape(st, c.bits))).collect();
        if let Some(c) = self.output_compare {
            ops.push(output_shape_of(self, c.bits));
        }
        let methods = match self.options.comparisons {
            Policy::Fixed(m) => vec![m; ops.len()],
            Policy::Auto => cost::choose(&self.options.link, self.options.objective, &ops),
        };
        let mut it = methods.into_iter();
        for st in &mut self.steps {
            if let Some(c) = st.compare.as_mut() {
                c.method = it.next().expect("one method per comparison step");
            }
        }
        if let Some(c) = self.output_compare.as_mut() {
            c.method = it.next().expect("one method for the output stage");
        }
    }
}

/// Dealer material and helper traffic per comparison, by method, at window `k`: what a
/// party holds for it at once (an estimate for memory budgets, both parties' keys for FSS).
fn comparison_bytes(method: Method, k: u32) -> u64 {
    let k = u64::from(k);
    match method {
        Method::Helper => 2 * k + 64,
        Method::Fss => 2 * (16 * k.saturating_sub(7) + 60) + 32,
        Method::Fss1 => 2 * (32 * k + 60),
    }
}

impl Plan {
    /// An estimate of the memory one row of this plan needs at a party at once: the largest
    /// step's activations (input and output, shares, masks, openings and frames: six copies of
    /// eight bytes a value) plus its comparisons' material. What a node divides its memory
    /// budget by to size micro-batches.
    pub fn bytes_per_row(&self) -> u64 {
        let batch = self.batch().max(1) as u64;
        let per = |shape: &[usize]| shape.iter().product::<usize>() as u64 / batch;
        let step_bytes = |st: &Step| {
            let act = 6 * 8 * (per(&st.input) + per(&st.output));
            let cmp = st.compare.map_or(0, |c| {
                let op = st.kind.cost_shape(st, c.bits);
                let mut points = op.elements as u64 / batch * op.points as u64;
                if matches!(st.kind, Op::Act(_)) {
                    // Splines hold one chunk's material at a time.
                    points = points.min(mpc_proto::protocol::SPLINE_CHUNK_POINTS as u64);
                }
                points * comparison_bytes(c.method, u32::from(c.bits))
            });
            act + cmp
        };
        let out = self.output_compare.map_or(0, |c| {
            let op = output_shape_of(self, c.bits);
            op.elements as u64 / batch * op.points as u64 * comparison_bytes(c.method, u32::from(c.bits))
        });
        self.steps.iter().map(step_bytes).max().unwrap_or(0).max(out).max(6 * 8 * per(&self.input))
    }

    /// Bytes the two parties of a two-party session (no dealer) send, together, to make this
    /// plan's correlations: each linear or convolution step's first triple by the route and
    /// layout the session picks (`mpc_proto::correlations::two_party::triple_bytes`), every
    /// comparison's AND and mux triples at its window, and the HE keys. An estimate (the
    /// splines' products and the openings are left out): what a caller weighs a job by before
    /// starting it.
    pub fn two_party_bytes(&self) -> u64 {
        use mpc_proto::correlations::two_party::{HE_KEY_BYTES, comparison_bytes, triple_bytes};
        let cmp = |op: OpShape| op.elements as u64 * op.points as u64 * comparison_bytes(op.bits);
        let mut total = HE_KEY_BYTES;
        for st in &self.steps {
            if let Runs::Bilinear(op) = st.kind.runs()
                && let Some(w) = st.kind.weight_shapes(&st.input[1..]).first()
            {
                total += triple_bytes(op, &st.input, w, true).unwrap_or(0);
            }
            if let Some(c) = st.compare {
                total += cmp(st.kind.cost_shape(st, c.bits));
            }
        }
        total + self.output_compare.map_or(0, |c| cmp(output_shape_of(self, c.bits)))
    }

    /// Online rounds of the plan on the data owner's critical path (as the parties count
    /// them): 1 to pre-open the weights (when there are any), then per step and for the output
    /// stage — linear, convolution and affine 1 (consecutive independent linear and
    /// convolution steps 1 together), a comparison layer 1, 2 or 3 by its method
    /// (a max tree one per level, softmax `⌈log2 L⌉ + 3` and three products, argmax a compare
    /// and a select per level), pooling and reshapes 0 — and 1 to reveal.
    pub fn online_rounds(&self) -> u64 {
        let r = |c: Option<CompareSpec>| c.map_or(0, |c| cost::rounds(c.method) as u64);
        let weights = self.steps.iter().any(|s| matches!(s.kind.runs(), Runs::Bilinear(_)));
        let mut total = u64::from(weights);
        // Exact truncation opens the products once more, one round for all of a batch.
        let exact = u64::from(self.options.truncation == Truncation::Exact);
        // As the parties schedule the steps: batched linear/conv steps one round together,
        // batched ReLUs one comparison layer together.
        for batch in crate::infer::schedule(self) {
            total += match batch {
                crate::infer::Batch::Bilinear(_) => 1 + exact,
                crate::infer::Batch::Relu(ks) => r(self.steps[ks[0]].compare),
                crate::infer::Batch::One(k) => {
                    let st = &self.steps[k];
                    st.kind.rounds(st, r(st.compare)) + exact * st.kind.exact_truncations()
                }
            };
        }
        let shape = self.output_shape();
        let classes = *shape.last().unwrap_or(&1);
        total += match (self.output, self.output_compare) {
            (_, None) => 0,
            (OutputPolicy::Label, c) if classes > 1 => levels(classes) as u64 * (r(c) + 1),
            (OutputPolicy::Probabilities, c) if classes > 1 => (levels(classes) as u64 + 3) * r(c) + 3,
            (_, c) => r(c),
        };
        total + 1
    }
}

/// A step's spec with a placeholder method (set by [`Plan::resolve_methods`]).
pub(crate) fn unresolved(bits: u8) -> CompareSpec {
    CompareSpec { method: Method::Fss1, bits }
}

/// Checks a received plan's comparison settings: every comparison-based step (and the output
/// stage when it compares) has a valid window, and the methods are what the options give.
pub(crate) fn check(plan: &Plan) -> Result<(), String> {
    for (i, st) in plan.steps.iter().enumerate() {
        match (st.kind.compares(), st.compare) {
            (true, Some(c)) if (2..=64).contains(&c.bits) => {}
            (true, _) => return Err(format!("step {i} ({}) has no valid comparison settings", st.kind.name())),
            (false, Some(_)) => return Err(format!("step {i} ({}) does not compare", st.kind.name())),
            (false, None) => {}
        }
    }
    if output_compares(plan) != plan.output_compare.is_some() {
        return Err("the output stage's comparison settings do not match its policy".into());
    }
    let mut again = plan.clone();
    again.resolve_methods();
    if &again != plan {
        return Err("comparison methods differ from what the plan's options give".into());
    }
    Ok(())
}

/// Steps' windows into `Step::compare` (methods unresolved).
pub(crate) fn attach(steps: &mut [Step], bits: &[Option<u8>]) {
    for (st, b) in steps.iter_mut().zip(bits) {
        st.compare = b.map(unresolved);
    }
}
