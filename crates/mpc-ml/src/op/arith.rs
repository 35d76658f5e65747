//! Arithmetic of computed tensors (numpy broadcasting of per-sample shapes): sums and
//! differences are local, a product of two secret tensors is one Beaver product, and
//! [`Affine`] scales and shifts by secret per-element constants (the model owner's).

use mpc_proto::AShare;
use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use super::{Arity, Op, Operator, PrivateCx, Runs, max_abs, per_batch, with_batch};
use crate::error::ModelError;
use crate::model::Layer;
use crate::onnx::export::Graph;
use crate::onnx::{Ctx, ImportError, Val, attr_f, attr_i, proto::NodeProto};
use crate::ops::{self, Act};

/// Elementwise sum of two computed tensors (broadcasting). Local.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Add;

/// Difference of two computed tensors, first minus second (broadcasting). Local.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sub;

/// Elementwise product of two computed tensors (broadcasting): one Beaver product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mul;

/// `x·scale + shift` with secret constants of the sample's shape (weights: scale, shift): a
/// folded BatchNormalization that could not merge into a neighbour, or arithmetic with a
/// constant. One Beaver product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Affine;

fn broadcast_output(inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
    let (a, b) = (inputs[0], inputs[1]);
    if a.first() != b.first() {
        return Err(format!("second input {b:?} has another batch size"));
    }
    let out = ops::broadcast_shape(&a[1..], &b[1..]).ok_or_else(|| format!("second input {b:?} does not broadcast"))?;
    Ok(with_batch(a[0], &out))
}

/// The two inputs broadcast to the output's shape (public index maps: local).
fn widened(xs: &[&AShare], output: &[usize]) -> Result<(AShare, AShare), ModelError> {
    let out = &output[1..];
    let widen = |t: &AShare| -> Result<AShare, ModelError> {
        if &t.shape()[1..] == out {
            return Ok(t.clone());
        }
        let map = ops::broadcast_map(&t.shape()[1..], out)
            .ok_or_else(|| ModelError::Invalid(format!("{:?} does not broadcast to {out:?}", t.shape())))?;
        Ok(ops::gather_all(t, out, &map)?)
    };
    Ok((widen(xs[0])?, widen(xs[1])?))
}

macro_rules! binary_common {
    () => {
        fn arity(&self) -> Arity {
            Arity::Exactly(2)
        }
        fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
            broadcast_output(inputs)
        }
    };
}

impl Operator for Add {
    binary_common!();
    fn name(&self) -> &'static str {
        "add"
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        xs[0] + xs[1]
    }
    fn bound(&self, b: &[f64], _: &[ArrayD<f64>], _: &[usize]) -> f64 {
        b[0] + b[1]
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        let (a, b) = widened(xs, &cx.step.output)?;
        Ok(a.add(&b)?)
    }
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        g.node("Add", ins, out, vec![]);
        Ok(())
    }
}

impl Operator for Sub {
    binary_common!();
    fn name(&self) -> &'static str {
        "sub"
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        xs[0] - xs[1]
    }
    fn bound(&self, b: &[f64], _: &[ArrayD<f64>], _: &[usize]) -> f64 {
        b[0] + b[1]
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        let (a, b) = widened(xs, &cx.step.output)?;
        Ok(a.sub(&b)?)
    }
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        g.node("Sub", ins, out, vec![]);
        Ok(())
    }
}

impl Operator for Mul {
    binary_common!();
    fn name(&self) -> &'static str {
        "mul"
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        xs[0] * xs[1]
    }
    fn bound(&self, b: &[f64], _: &[ArrayD<f64>], _: &[usize]) -> f64 {
        b[0] * b[1]
    }
    fn truncates(&self) -> bool {
        true
    }
    fn runs(&self) -> Runs {
        Runs::Talks
    }
    fn rounds(&self, _: &super::Step, _: u64) -> u64 {
        1
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        let (a, b) = widened(xs, &cx.step.output)?;
        Ok(cx.party.mul_fixed(&a, &b).await?)
    }
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        g.node("Mul", ins, out, vec![]);
        Ok(())
    }
}

impl Operator for Affine {
    fn name(&self) -> &'static str {
        "affine"
    }
    fn weight_shapes(&self, per_sample: &[usize]) -> Vec<Vec<usize>> {
        vec![per_sample.to_vec(), per_sample.to_vec()]
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], w: &[ArrayD<f64>]) -> ArrayD<f64> {
        xs[0] * &w[0] + &w[1]
    }
    fn bound(&self, b: &[f64], w: &[ArrayD<f64>], _: &[usize]) -> f64 {
        max_abs(&w[0]) * b[0] + max_abs(&w[1])
    }
    fn truncates(&self) -> bool {
        true
    }
    fn runs(&self) -> Runs {
        Runs::Talks
    }
    fn rounds(&self, _: &super::Step, _: u64) -> u64 {
        1
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], w: &[AShare]) -> Result<AShare, ModelError> {
        let x = xs[0];
        let scale = per_batch(x, &w[0], &cx.step.input)?;
        let shift = per_batch(x, &w[1], &cx.step.input)?;
        Ok(cx.party.mul_fixed(x, &scale).await?.add(&shift)?)
    }
    const ONNX: &'static [super::OnnxRule] = &[
        ("Add", import_arith),
        ("Sub", import_arith),
        ("Mul", import_arith),
        ("Div", import_arith),
        ("BatchNormalization", import_batchnorm),
    ];
    fn to_onnx(&self, g: &mut Graph, ins: &[String], w: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        let (s, t) = (g.init("scale", &w[0]), g.init("shift", &w[1]));
        let scaled = g.fresh("scaled");
        g.node("Mul", &[ins[0].clone(), s], &scaled, vec![]);
        g.node("Add", &[scaled, t], out, vec![]);
        Ok(())
    }
}

/// Add, Sub, Mul, Div: of two computed tensors a layer of their own; with a constant operand
/// an affine map of the computed one, folded into the layer before it where it can be.
fn import_arith(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let op = n.op_type();
    if let (Ok(Val::Data(a)), Ok(Val::Data(b))) = (cx.val(n, 0), cx.val(n, 1)) {
        return binary(cx, n, a, b);
    }
    let (d, t) = cx.only_data(n)?;
    let k = cx.konst(n, 1 - d)?;
    let (scale, shift) = match (op, d) {
        ("Mul", _) => (Some(k), None),
        ("Add", _) => (None, Some(k)),
        ("Sub", 0) => (None, Some(-k)),
        ("Sub", _) => (Some(ArrayD::from_elem(IxDyn(&[]), -1.0)), Some(k)),
        ("Div", 0) => {
            if k.iter().any(|&v| v == 0.0) {
                return Err(cx.err(n, "division by zero"));
            }
            (Some(k.mapv(|v| 1.0 / v)), None)
        }
        _ => {
            return Err(cx.err(n, "division of a constant by the data (needs a secret reciprocal) is not supported"));
        }
    };
    affine_const(cx, n, t, scale, shift)
}

/// Two computed tensors: a residual sum, a difference or a product (SiLU when the product is
/// `x · sigmoid(x)`).
fn binary(cx: &mut Ctx, n: &NodeProto, a: usize, b: usize) -> Result<(), ImportError> {
    let op = n.op_type();
    if op == "Div" {
        return Err(cx.err(n, "division of two computed tensors (needs a secret reciprocal) is not supported"));
    }
    if op == "Mul" {
        // x · sigmoid(x) → one SiLU spline, when the sigmoid feeds nothing else.
        for (x, s, si) in [(a, b, 1), (b, a, 0)] {
            let sig_name = &n.input[si];
            if s == cx.layers.len()
                && cx.layers.last().is_some_and(|l| matches!(l.op, Op::Sigmoid(_)))
                && cx.wires.last() == Some(&vec![x])
                && cx.uses.get(sig_name) == Some(&1)
            {
                *cx.layers.last_mut().expect("checked") = Layer::of(Act::Silu);
                return cx.set_output(n, 0, s);
            }
        }
    }
    let layer = match op {
        "Add" => Layer::of(Add),
        "Sub" => Layer::of(Sub),
        _ => Layer::of(Mul),
    };
    // The layer's output takes the first input's rank; put the larger first when the
    // operation commutes.
    let (sa, sb) = (cx.shape(a).to_vec(), cx.shape(b).to_vec());
    let bigger_second = sb.iter().product::<usize>() > sa.iter().product::<usize>();
    let wires = if bigger_second && op != "Sub" { vec![b, a] } else { vec![a, b] };
    cx.push(n, layer, wires)
}

fn import_batchnorm(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    if attr_i(n, "training_mode", 0) != 0 {
        return Err(cx.err(n, "training_mode = 1: export the model in eval mode"));
    }
    let eps = attr_f(n, "epsilon", 1e-5) as f64;
    let (scale, b, mean, var) = (cx.konst(n, 1)?, cx.konst(n, 2)?, cx.konst(n, 3)?, cx.konst(n, 4)?);
    let c = cx.shape(t).first().copied().unwrap_or(0);
    if [&scale, &b, &mean, &var].iter().any(|t| t.len() != c) {
        return Err(cx.err(n, format!("per-channel parameters must have {c} entries")));
    }
    let v = |a: &ArrayD<f64>| a.iter().copied().collect::<Vec<f64>>();
    let (scale, b, mean, var) = (v(&scale), v(&b), v(&mean), v(&var));
    let a: Vec<f64> = (0..c).map(|i| scale[i] / (var[i] + eps).sqrt()).collect();
    let sh: Vec<f64> = (0..c).map(|i| b[i] - mean[i] * a[i]).collect();
    affine_per_channel(cx, n, t, &a, &sh)
}

/// `x·scale + shift` with constants broadcastable to the per-sample shape: folded into the
/// previous Linear/Conv when they are per output feature/channel, else an Affine layer.
fn affine_const(
    cx: &mut Ctx,
    n: &NodeProto,
    t: usize,
    scale: Option<ArrayD<f64>>,
    shift: Option<ArrayD<f64>>,
) -> Result<(), ImportError> {
    let shape = cx.shape(t).to_vec();
    let s = match scale {
        Some(s) => cx.per_sample(n, s, t)?,
        None => ArrayD::from_elem(IxDyn(&shape), 1.0),
    };
    let sh = match shift {
        Some(v) => cx.per_sample(n, v, t)?,
        None => ArrayD::zeros(IxDyn(&shape)),
    };
    // Per-channel (axis 0 of the per-sample shape) constants fold into a preceding layer.
    let c = shape.first().copied().unwrap_or(1);
    let chan = |a: &ArrayD<f64>| -> Option<Vec<f64>> {
        let v: Vec<f64> = (0..c).map(|i| a.index_axis(Axis(0), i).iter().next().copied().unwrap_or(0.0)).collect();
        a.indexed_iter().all(|(ix, &x)| x == v[ix[0]]).then_some(v)
    };
    if let (Some(a), Some(b)) = (chan(&s), chan(&sh)) {
        return affine_per_channel(cx, n, t, &a, &b);
    }
    cx.push(n, Layer::new(Affine, vec![s, sh]), vec![t])
}

/// Per-channel `x·a + b` (axis 0 of the per-sample shape), folded into the layer that produced
/// `t` when that is the latest Linear/Conv and nothing else reads its output.
fn affine_per_channel(cx: &mut Ctx, n: &NodeProto, t: usize, a: &[f64], b: &[f64]) -> Result<(), ImportError> {
    let data_name = n.input.iter().find(|i| matches!(cx.vals.get(*i), Some(Val::Data(x)) if *x == t));
    let sole = data_name.and_then(|d| cx.uses.get(d)) == Some(&1) && t == cx.layers.len() && t > 0;
    let flat = cx.shape(t).len() == 1;
    if let Some(last) = cx.layers.last_mut()
        && sole
        && (matches!(last.op, Op::Linear(_)) && flat || matches!(last.op, Op::Conv2d(_)))
    {
        // A linear layer's outputs are its weight's columns, a convolution's its weight's rows.
        let axis = if matches!(last.op, Op::Linear(_)) { 1 } else { 0 };
        for (j, mut lane) in last.weights[0].axis_iter_mut(Axis(axis)).enumerate() {
            lane *= a[j];
        }
        let old = last.take_bias().unwrap_or_else(|| ArrayD::zeros(IxDyn(&[a.len()])));
        last.set_bias(ArrayD::from_shape_fn(IxDyn(&[a.len()]), |ix| old[[ix[0]]] * a[ix[0]] + b[ix[0]]));
        return cx.set_output(n, 0, t);
    }
    let shape = cx.shape(t).to_vec();
    let s = ArrayD::from_shape_fn(IxDyn(&shape), |ix| a[ix[0]]);
    let sh = ArrayD::from_shape_fn(IxDyn(&shape), |ix| b[ix[0]]);
    cx.push(n, Layer::new(Affine, vec![s, sh]), vec![t])
}
