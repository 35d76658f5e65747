//! Elementwise activations and the normalisations of the last axis: comparison layers.
//!
//! [`Relu`] is one comparison and a select (and ReLUs of one depth share one comparison
//! layer); every other public activation is an [`Act`] evaluated as one spline (one comparison
//! layer whatever its number of pieces); [`PRelu`] has secret slopes (a comparison layer and a
//! product); [`Sigmoid`] and [`Softmax`] are the output-stage approximations, and
//! [`LogSoftmax`] centres the logits locally for the data owner to finish in the clear.

use mpc_proto::approx;
use mpc_proto::compare::cost::OpShape;
use mpc_proto::protocol::spline_chunks;
use mpc_proto::{AShare, FixedPoint};
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use super::{Operator, PrivateCx, Runs, max_abs, per_batch};
use crate::bounds::{levels, widest, window_for};
use crate::error::ModelError;
use crate::model::{Layer, Step};
use crate::onnx::export::{Graph, int_attr};
use crate::onnx::{Ctx, ImportError, attr, attr_f, attr_i, proto::NodeProto};
use crate::ops::{self, Act, PubF64};
use crate::plain;

/// `max(x, 0)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Relu;

/// The logistic sigmoid as the network's last layer (the probability policy recognises it);
/// a sigmoid inside the network imports as the tighter [`Act::Sigmoid`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sigmoid;

/// Softmax over the last axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Softmax;

/// Log-softmax over the last axis (the last layer only): the parties centre the logits and the
/// data owner finishes it in the clear.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogSoftmax;

/// `max(x, 0) + slope·min(x, 0)` with a secret slope of the sample's shape (weight `[…]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PRelu;

fn unary(cx: &mut Ctx, n: &NodeProto, layer: Layer) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    cx.push(n, layer, vec![t])
}

impl Operator for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        plain::relu(xs[0])
    }
    fn compares(&self) -> bool {
        true
    }
    fn runs(&self) -> Runs {
        Runs::Relu
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        Ok(cx.party.relu(xs[0]).await?)
    }
    const ONNX: &'static [super::OnnxRule] = &[("Relu", |cx, n| unary(cx, n, Layer::of(Relu)))];
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        g.node("Relu", ins, out, vec![]);
        Ok(())
    }
}

impl Operator for Sigmoid {
    fn name(&self) -> &'static str {
        "sigmoid"
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        plain::sigmoid(xs[0])
    }
    fn bound(&self, _: &[f64], _: &[ArrayD<f64>], _: &[usize]) -> f64 {
        1.0
    }
    fn compares(&self) -> bool {
        true
    }
    // Its spline compares against breakpoints out to ±16: the widest window.
    fn window(&self, _: f64, fixed: FixedPoint) -> u8 {
        widest(fixed)
    }
    fn cost_shape(&self, step: &Step, bits: u8) -> OpShape {
        let n: usize = step.input.iter().product();
        OpShape {
            elements: n,
            points: approx::sigmoid().breaks.len(),
            relu: true,
            bits: u32::from(bits),
            sequential: 1,
        }
    }
    fn runs(&self) -> Runs {
        Runs::Talks
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        Ok(cx.party.sigmoid(xs[0]).await?)
    }
    const ONNX: &'static [super::OnnxRule] = &[("Sigmoid", |cx, n| unary(cx, n, Layer::of(Sigmoid)))];
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        g.node("Sigmoid", ins, out, vec![]);
        Ok(())
    }
}

impl Operator for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        plain::softmax(xs[0])
    }
    fn bound(&self, _: &[f64], _: &[ArrayD<f64>], _: &[usize]) -> f64 {
        1.0
    }
    fn compares(&self) -> bool {
        true
    }
    // The reciprocal inside normalises sums up to 2^14: the widest window.
    fn window(&self, _: f64, fixed: FixedPoint) -> u8 {
        widest(fixed)
    }
    fn cost_shape(&self, step: &Step, bits: u8) -> OpShape {
        let n: usize = step.input.iter().product();
        let last = *step.input.last().unwrap_or(&1);
        OpShape { elements: n, points: 1, relu: true, bits: u32::from(bits), sequential: levels(last) + 3 }
    }
    fn runs(&self) -> Runs {
        Runs::Talks
    }
    fn rounds(&self, step: &Step, r: u64) -> u64 {
        (levels(*step.input.last().unwrap_or(&1)) as u64 + 3) * r + 3
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        Ok(cx.party.softmax(xs[0]).await?)
    }
    const ONNX: &'static [super::OnnxRule] = &[("Softmax", import_softmax), ("LogSoftmax", import_softmax)];
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        g.node("Softmax", ins, out, vec![int_attr("axis", -1)]);
        Ok(())
    }
}

fn import_softmax(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    let rank = cx.shape(t).len() as i64 + 1;
    let default = if cx.opset >= 13 { -1 } else { 1 };
    let axis = attr_i(n, "axis", default);
    let op = n.op_type();
    if axis != -1 && axis != rank - 1 {
        return Err(
            cx.err(n, format!("{op} over axis {axis} of a rank-{rank} tensor: only the last axis is supported"))
        );
    }
    let layer = if op == "Softmax" { Layer::of(Softmax) } else { Layer::of(LogSoftmax) };
    cx.push(n, layer, vec![t])
}

impl Operator for LogSoftmax {
    fn name(&self) -> &'static str {
        "logsoftmax"
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        plain::softmax(xs[0]).mapv(f64::ln)
    }
    fn bound(&self, b: &[f64], _: &[ArrayD<f64>], _: &[usize]) -> f64 {
        2.0 * b[0]
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        // Centre each row (a local linear map): log-softmax is shift-invariant, so the centred
        // logits reveal exactly what log-softmax does, and the data owner finishes it in the
        // clear.
        let step = cx.step;
        let last = *step.input.last().expect("a batch axis");
        let rows: usize = step.input.iter().product::<usize>() / last;
        let flat = xs[0].reshape(&[rows, last])?;
        let sums = flat.sum_axis(1)?;
        let mean = cx.party.mul_const(&sums, 1.0 / last as f64)?;
        let rep = ops::gather_all(&mean.reshape(&[rows, 1])?, &[last], &vec![0; last])?;
        Ok(flat.sub(&rep)?.reshape(&step.output)?)
    }
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        g.node("LogSoftmax", ins, out, vec![int_attr("axis", -1)]);
        Ok(())
    }
}

impl Operator for PRelu {
    fn name(&self) -> &'static str {
        "prelu"
    }
    fn weight_shapes(&self, per_sample: &[usize]) -> Vec<Vec<usize>> {
        vec![per_sample.to_vec()]
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], w: &[ArrayD<f64>]) -> ArrayD<f64> {
        let neg = xs[0].mapv(|v| v.min(0.0));
        plain::relu(xs[0]) + &neg * &w[0]
    }
    fn bound(&self, b: &[f64], w: &[ArrayD<f64>], _: &[usize]) -> f64 {
        b[0] * max_abs(&w[0]).max(1.0)
    }
    fn compares(&self) -> bool {
        true
    }
    fn truncates(&self) -> bool {
        true
    }
    fn runs(&self) -> Runs {
        Runs::Talks
    }
    fn rounds(&self, _: &Step, r: u64) -> u64 {
        r + 1
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], w: &[AShare]) -> Result<AShare, ModelError> {
        // relu(x) + slope·(x − relu(x)): one comparison layer and one product.
        let x = xs[0];
        let r = cx.party.relu(x).await?;
        let slope = per_batch(x, &w[0], &cx.step.input)?;
        let neg = cx.party.mul_fixed(&x.sub(&r)?, &slope).await?;
        Ok(r.add(&neg)?)
    }
    const ONNX: &'static [super::OnnxRule] = &[("PRelu", import_prelu)];
}

fn import_prelu(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    let slope = cx.konst(n, 1)?;
    let slope = cx.per_sample(n, slope, t)?;
    cx.push(n, Layer::new(PRelu, vec![slope]), vec![t])
}

impl Operator for Act {
    fn name(&self) -> &'static str {
        Act::name(self)
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        xs[0].mapv(|v| self.eval(v))
    }
    fn bound(&self, b: &[f64], _: &[ArrayD<f64>], _: &[usize]) -> f64 {
        Act::bound(self, b[0])
    }
    fn compares(&self) -> bool {
        true
    }
    // A spline compares x − p_j for each breakpoint p_j.
    fn window(&self, b: f64, fixed: FixedPoint) -> u8 {
        let far = self.spline().breaks.iter().fold(0f64, |m, p| m.max(p.abs()));
        window_for(b + far, fixed)
    }
    // Large activations run in chunks of bounded material, one comparison layer each.
    fn cost_shape(&self, step: &Step, bits: u8) -> OpShape {
        let n: usize = step.input.iter().product();
        let points = self.spline().breaks.len();
        let sequential = spline_chunks(n, points);
        OpShape { elements: n, points, relu: true, bits: u32::from(bits), sequential }
    }
    fn rounds(&self, step: &Step, r: u64) -> u64 {
        spline_chunks(step.input.iter().product(), self.spline().breaks.len()) as u64 * r
    }
    // The spline's own truncation (its values can be as large as its input); none with
    // integer slopes (Clip).
    fn exact_truncations(&self) -> u64 {
        u64::from(!self.spline().integral_slopes())
    }
    fn runs(&self) -> Runs {
        Runs::Talks
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        Ok(cx.party.spline(xs[0], &self.spline()).await?)
    }
    const ONNX: &'static [super::OnnxRule] = &[
        ("Tanh", |cx, n| unary(cx, n, Layer::of(Act::Tanh))),
        ("HardSwish", |cx, n| unary(cx, n, Layer::of(Act::HardSwish))),
        ("Gelu", import_gelu),
        ("Erf", |cx, n| unary(cx, n, Layer::of(Act::Erf))),
        ("LeakyRelu", |cx, n| {
            let alpha = PubF64(attr_f(n, "alpha", 0.01) as f64);
            unary(cx, n, Layer::of(Act::LeakyRelu { alpha }))
        }),
        ("Elu", |cx, n| {
            let alpha = PubF64(attr_f(n, "alpha", 1.0) as f64);
            unary(cx, n, Layer::of(Act::Elu { alpha }))
        }),
        ("HardSigmoid", |cx, n| {
            let (alpha, beta) = (PubF64(attr_f(n, "alpha", 0.2) as f64), PubF64(attr_f(n, "beta", 0.5) as f64));
            unary(cx, n, Layer::of(Act::HardSigmoid { alpha, beta }))
        }),
        ("Clip", import_clip),
    ];
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        use crate::onnx::export::float_attr;
        match *self {
            Act::Tanh => g.node("Tanh", ins, out, vec![]),
            Act::HardSwish => g.node("HardSwish", ins, out, vec![]),
            Act::Sigmoid => g.node("Sigmoid", ins, out, vec![]),
            Act::Erf => g.node("Erf", ins, out, vec![]),
            Act::LeakyRelu { alpha } => g.node("LeakyRelu", ins, out, vec![float_attr("alpha", alpha.0)]),
            Act::Elu { alpha } => g.node("Elu", ins, out, vec![float_attr("alpha", alpha.0)]),
            Act::HardSigmoid { alpha, beta } => {
                g.node("HardSigmoid", ins, out, vec![float_attr("alpha", alpha.0), float_attr("beta", beta.0)])
            }
            Act::Clip { lo, hi } => {
                let (l, h) = (g.scalar("min", lo.0), g.scalar("max", hi.0));
                g.node("Clip", &[ins[0].clone(), l, h], out, vec![])
            }
            Act::Silu => {
                let s = g.fresh("silu");
                g.node("Sigmoid", ins, &s, vec![]);
                g.node("Mul", &[ins[0].clone(), s], out, vec![]);
            }
            Act::Gelu => return Err("GELU needs opset 20".into()),
        }
        Ok(())
    }
}

/// GELU (opset 20). The tanh form (`approximate = "tanh"`) imports as the erf form it
/// approximates: they differ by < 5·10^-4 (docs/operators.md states the bound).
fn import_gelu(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    unary(cx, n, Layer::of(Act::Gelu))
}

fn import_clip(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    let (mut lo, mut hi) = (f64::NEG_INFINITY, f64::INFINITY);
    if cx.opset < 11 {
        lo = attr(n, "min").and_then(|a| a.f).map_or(lo, f64::from);
        hi = attr(n, "max").and_then(|a| a.f).map_or(hi, f64::from);
    } else {
        if cx.has(n, 1) {
            lo = cx.scalar(n, 1)?;
        }
        if cx.has(n, 2) {
            hi = cx.scalar(n, 2)?;
        }
    }
    if lo > hi {
        return Err(cx.err(n, format!("min {lo} above max {hi}")));
    }
    if lo == 0.0 && hi == f64::INFINITY {
        return cx.push(n, Layer::of(Relu), vec![t]);
    }
    if lo.is_infinite() && hi.is_infinite() {
        return cx.set_output(n, 0, t);
    }
    cx.push(n, Layer::of(Act::Clip { lo: PubF64(lo), hi: PubF64(hi) }), vec![t])
}
