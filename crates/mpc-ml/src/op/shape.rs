//! Shape operators: public index maps (of public shapes and hyperparameters) applied to each
//! party's shares. Local, exact.

use mpc_proto::AShare;
use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use super::{Arity, Operator, PrivateCx, with_batch};
use crate::error::ModelError;
use crate::model::Layer;
use crate::onnx::export::{Graph, int_attr, ints_attr};
use crate::onnx::{
    BATCH, Ctx, ImportError, Val, attr, attr_f, attr_i, attr_ints, norm_axis, proto::NodeProto, squeezed,
};
use crate::ops::{self, PubF64};

/// `[n, …] → [n, ∏…]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flatten;

/// A per-sample reshape (the batch axis stays).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reshape {
    /// Per-sample target shape.
    pub shape: Vec<usize>,
}

/// Concatenation of the inputs along per-sample axis `axis` (0 = channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Concat {
    /// Per-sample axis.
    pub axis: usize,
}

/// `x[start:end:step]` along per-sample axis `axis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slice {
    /// Per-sample axis.
    pub axis: usize,
    /// First index.
    pub start: usize,
    /// One past the last index.
    pub end: usize,
    /// Step (≥ 1).
    pub step: usize,
}

/// Constant padding of the per-sample axes, with optional zero insertion between elements
/// (`dilate`, for transposed convolutions): `out[begin + i·dilate] = x[i]`, `value` elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pad {
    /// Elements before, per per-sample axis.
    pub begin: Vec<usize>,
    /// Elements after.
    pub end: Vec<usize>,
    /// Spacing of the input's elements (1 = none inserted).
    pub dilate: Vec<usize>,
    /// The fill value (public).
    pub value: PubF64,
}

/// A permutation of the per-sample axes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transpose {
    /// Output axis `i` is input axis `perm[i]` (per-sample numbering).
    pub perm: Vec<usize>,
}

fn reshaped(x: &ArrayD<f64>, shape: &[usize]) -> ArrayD<f64> {
    x.as_standard_layout().into_owned().into_shape_with_order(IxDyn(shape)).expect("checked by the plan")
}

impl Operator for Flatten {
    fn name(&self) -> &'static str {
        "flatten"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let i = inputs[0];
        Ok(vec![i[0], i[1..].iter().product()])
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        let n = xs[0].shape()[0];
        reshaped(xs[0], &[n, xs[0].len() / n.max(1)])
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        Ok(xs[0].reshape(&cx.step.output)?)
    }
    const ONNX: &'static [super::OnnxRule] = &[("Flatten", |cx, n| {
        let t = cx.data(n, 0)?;
        if attr_i(n, "axis", 1) != 1 {
            return Err(cx.err(n, "only axis = 1 (keep the batch axis) is supported"));
        }
        cx.push(n, Layer::of(Flatten), vec![t])
    })];
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        g.node("Flatten", ins, out, vec![int_attr("axis", 1)]);
        Ok(())
    }
}

impl Operator for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let i = inputs[0];
        if self.shape.iter().product::<usize>() != i[1..].iter().product::<usize>() {
            return Err(format!("cannot reshape to {:?}", self.shape));
        }
        Ok(with_batch(i[0], &self.shape))
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        reshaped(xs[0], &with_batch(xs[0].shape()[0], &self.shape))
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        Ok(xs[0].reshape(&cx.step.output)?)
    }
    const ONNX: &'static [super::OnnxRule] =
        &[("Reshape", import_reshape), ("Squeeze", import_squeeze), ("Unsqueeze", import_squeeze)];
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        let mut target = vec![0.0];
        target.extend(self.shape.iter().map(|&d| d as f64));
        let t = g.int64("shape", &target);
        g.node("Reshape", &[ins[0].clone(), t], out, vec![]);
        Ok(())
    }
}

fn import_reshape(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    let target = cx.konst_ints(n, 1)?;
    let per = cx.shape(t).to_vec();
    let per_sample: usize = per.iter().product();
    if target.is_empty() {
        return Err(cx.err(n, "empty target shape"));
    }
    // Axis 0 keeps the batch (0 = copy, the folded batch size, or −1 with the rest fixed).
    let first = target[0];
    let mut rest: Vec<i64> = target[1..].to_vec();
    for (i, v) in rest.iter_mut().enumerate() {
        if *v == 0 {
            *v = *per.get(i).ok_or_else(|| cx.err(n, "0 in the target refers to a missing axis"))? as i64;
        }
    }
    let known: i64 = rest.iter().filter(|&&v| v != -1).product();
    let infer = rest.iter().filter(|&&v| v == -1).count();
    let keeps_batch = first == 0 || first == BATCH as i64 || (first == -1 && infer == 0);
    if !keeps_batch {
        return Err(cx.err(n, format!("target {target:?} fixes the batch size")));
    }
    if infer > 1
        || known <= 0
        || (infer == 0 && known as usize != per_sample)
        || !per_sample.is_multiple_of(known as usize)
    {
        return Err(cx.err(n, format!("cannot reshape {per:?} per sample to {target:?}")));
    }
    let shape: Vec<usize> =
        rest.iter().map(|&v| if v == -1 { per_sample / known as usize } else { v as usize }).collect();
    reshape_to(cx, n, t, shape)
}

fn import_squeeze(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    let axes = if cx.opset >= 13 {
        if cx.has(n, 1) { cx.konst_ints(n, 1)? } else { vec![] }
    } else {
        attr_ints(n, "axes").unwrap_or_default()
    };
    let mut full = vec![1usize];
    full.extend_from_slice(cx.shape(t));
    let (out, normalised) =
        squeezed(n.op_type() == "Unsqueeze", &full, &axes, 1).ok_or_else(|| cx.err(n, format!("axes {axes:?}")))?;
    if normalised.contains(&0) {
        return Err(cx.err(n, "squeezing the batch axis or adding one before it is not supported"));
    }
    reshape_to(cx, n, t, out[1..].to_vec())
}

/// Tensor `t` reshaped per sample to `shape` (nothing when it has that shape already).
fn reshape_to(cx: &mut Ctx, n: &NodeProto, t: usize, shape: Vec<usize>) -> Result<(), ImportError> {
    if shape == cx.shape(t) {
        return cx.set_output(n, 0, t);
    }
    if shape.len() == 1 {
        cx.push(n, Layer::of(Flatten), vec![t])
    } else {
        cx.push(n, Layer::of(Reshape { shape }), vec![t])
    }
}

impl Operator for Concat {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn arity(&self) -> Arity {
        Arity::AtLeastOne
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let (input, axis) = (inputs[0], self.axis);
        let (n, per) = (input[0], &input[1..]);
        if axis >= per.len() {
            return Err(format!("axis {axis} of a rank-{} sample", per.len()));
        }
        let mut out = per.to_vec();
        out[axis] = 0;
        for t in inputs {
            let same = t.len() == input.len()
                && t[0] == n
                && t[1..].iter().zip(per).enumerate().all(|(i, (a, b))| i == axis || a == b);
            if !same {
                return Err(format!("input {t:?} differs off axis {axis}"));
            }
            out[axis] += t[1 + axis];
        }
        Ok(with_batch(n, &out))
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        let views: Vec<_> = xs.iter().map(|a| a.view()).collect();
        ndarray::concatenate(Axis(self.axis + 1), &views).expect("checked by the plan")
    }
    fn bound(&self, b: &[f64], _: &[ArrayD<f64>], _: &[usize]) -> f64 {
        b.iter().copied().fold(0.0, f64::max)
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        Ok(ops::concat(xs, self.axis, &cx.step.output[1..])?)
    }
    const ONNX: &'static [super::OnnxRule] = &[("Concat", |cx, n| {
        let ts: Vec<usize> = (0..n.input.len()).map(|i| cx.data(n, i)).collect::<Result<_, _>>()?;
        let axis = cx.sample_axis(n, attr_i(n, "axis", 1), ts[0])?;
        if ts.len() == 1 {
            return cx.set_output(n, 0, ts[0]);
        }
        cx.push(n, Layer::of(Concat { axis }), ts)
    })];
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        g.node("Concat", ins, out, vec![int_attr("axis", self.axis as i64 + 1)]);
        Ok(())
    }
}

impl Operator for Slice {
    fn name(&self) -> &'static str {
        "slice"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let (input, Slice { axis, start, end, step }) = (inputs[0], *self);
        let per = &input[1..];
        if axis >= per.len() || step == 0 || start >= end || end > per[axis] {
            return Err(format!("slice {start}..{end} step {step} of axis {axis}"));
        }
        let (out, _) = ops::slice_map(per, axis, start, end, step);
        Ok(with_batch(input[0], &out))
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        let s = ndarray::Slice::new(self.start as isize, Some(self.end as isize), self.step as isize);
        xs[0].slice_axis(Axis(self.axis + 1), s).to_owned()
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        let (out, map) = ops::slice_map(&cx.step.input[1..], self.axis, self.start, self.end, self.step);
        Ok(ops::gather_all(xs[0], &out, &map)?)
    }
    const ONNX: &'static [super::OnnxRule] = &[("Slice", import_slice), ("Split", import_split)];
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        let k = |g: &mut Graph, name: &str, v: usize| g.int64(name, &[v as f64]);
        let (s, e, a, st) =
            (k(g, "starts", self.start), k(g, "ends", self.end), k(g, "axes", self.axis + 1), k(g, "steps", self.step));
        g.node("Slice", &[ins[0].clone(), s, e, a, st], out, vec![]);
        Ok(())
    }
}

fn import_split(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    let axis = cx.sample_axis(n, attr_i(n, "axis", 0), t)?;
    let len = cx.shape(t)[axis];
    let outs = n.output.len();
    let sizes: Vec<usize> = if cx.has(n, 1) {
        cx.konst_ints(n, 1)?.iter().map(|&v| v as usize).collect()
    } else if let Some(s) = attr_ints(n, "split") {
        s.iter().map(|&v| v as usize).collect()
    } else {
        let k = attr_i(n, "num_outputs", outs as i64).max(1) as usize;
        let chunk = len.div_ceil(k);
        (0..k).map(|i| chunk.min(len.saturating_sub(i * chunk))).collect()
    };
    if sizes.len() != outs || sizes.iter().sum::<usize>() != len {
        return Err(cx.err(n, format!("split sizes {sizes:?} for an axis of {len} into {outs} outputs")));
    }
    let mut start = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let y = cx.add_layer(n, Layer::of(Slice { axis, start, end: start + size, step: 1 }), vec![t])?;
        let name = n.output[i].clone();
        if !name.is_empty() {
            cx.vals.insert(name, Val::Data(y));
        }
        start += size;
    }
    Ok(())
}

fn import_slice(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    let rank = cx.shape(t).len() + 1;
    let (starts, ends, axes, steps) = if cx.opset >= 10 {
        let starts = cx.konst_ints(n, 1)?;
        let ends = cx.konst_ints(n, 2)?;
        let axes = if cx.has(n, 3) { cx.konst_ints(n, 3)? } else { (0..starts.len() as i64).collect() };
        let steps = if cx.has(n, 4) { cx.konst_ints(n, 4)? } else { vec![1; starts.len()] };
        (starts, ends, axes, steps)
    } else {
        let starts = attr_ints(n, "starts").unwrap_or_default();
        let ends = attr_ints(n, "ends").unwrap_or_default();
        let axes = attr_ints(n, "axes").unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = vec![1; starts.len()];
        (starts, ends, axes, steps)
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(cx.err(n, "starts, ends, axes and steps differ in length"));
    }
    let mut cur = t;
    for i in 0..starts.len() {
        let a = norm_axis(axes[i], rank).ok_or_else(|| cx.err(n, format!("axis {}", axes[i])))?;
        if steps[i] < 1 {
            return Err(cx.err(n, "only positive slice steps are supported"));
        }
        let len = if a == 0 { i64::MAX } else { cx.shape(cur)[a - 1] as i64 };
        let clamp = |v: i64| (if v < 0 { v.saturating_add(len) } else { v }).clamp(0, len);
        let (s, e) = (clamp(starts[i]), clamp(ends[i]));
        if a == 0 {
            if s == 0 && (ends[i] >= BATCH as i64 || ends[i] == i64::MAX || e == len) && steps[i] == 1 {
                continue; // the whole batch
            }
            return Err(cx.err(n, "slicing the batch axis is not supported"));
        }
        if s == 0 && e == len && steps[i] == 1 {
            continue;
        }
        if s >= e {
            return Err(cx.err(n, format!("empty slice {s}..{e} of axis {a}")));
        }
        let layer = Layer::of(Slice { axis: a - 1, start: s as usize, end: e as usize, step: steps[i] as usize });
        cur = cx.add_layer(n, layer, vec![cur])?;
    }
    cx.set_output(n, 0, cur)
}

impl Operator for Pad {
    fn name(&self) -> &'static str {
        "pad"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let (input, Pad { begin, end, dilate, .. }) = (inputs[0], self);
        let per = &input[1..];
        if begin.len() != per.len() || end.len() != per.len() || dilate.len() != per.len() || dilate.contains(&0) {
            return Err(format!("padding {begin:?}/{end:?}/{dilate:?} for a rank-{} sample", per.len()));
        }
        let out: Option<Vec<usize>> = (0..per.len())
            .map(|i| (per[i] - 1).checked_mul(dilate[i])?.checked_add(1 + begin[i])?.checked_add(end[i]))
            .collect();
        let out = out.ok_or_else(|| format!("padding {begin:?}/{end:?} overflows"))?;
        Ok(with_batch(input[0], &out))
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        let (x, Pad { begin, end, dilate, value }) = (xs[0], self);
        let per = &x.shape()[1..];
        let mut out_shape = vec![x.shape()[0]];
        out_shape.extend((0..per.len()).map(|i| begin[i] + (per[i] - 1) * dilate[i] + 1 + end[i]));
        let mut out = ArrayD::from_elem(IxDyn(&out_shape), value.0);
        for (ix, &v) in x.indexed_iter() {
            let mut o: Vec<usize> = (0..x.ndim()).map(|d| ix[d]).collect();
            for i in 0..per.len() {
                o[i + 1] = begin[i] + o[i + 1] * dilate[i];
            }
            out[IxDyn(&o)] = v;
        }
        out
    }
    fn bound(&self, b: &[f64], _: &[ArrayD<f64>], _: &[usize]) -> f64 {
        b[0].max(self.value.0.abs())
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        let (out, map) = ops::pad_map(&cx.step.input[1..], &self.begin, &self.end, &self.dilate);
        let fill = cx.party.fixed().encode(self.value.0)?;
        Ok(ops::gather(cx.party.id(), xs[0], &out, &map, fill)?)
    }
    const ONNX: &'static [super::OnnxRule] = &[("Pad", import_pad)];
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        if self.dilate.iter().any(|&d| d != 1) {
            return Err("zero insertion has no ONNX Pad equivalent".into());
        }
        let mut pads = vec![0.0];
        pads.extend(self.begin.iter().map(|&v| v as f64));
        pads.push(0.0);
        pads.extend(self.end.iter().map(|&v| v as f64));
        let p = g.int64("pads", &pads);
        let v = g.scalar("value", self.value.0);
        g.node("Pad", &[ins[0].clone(), p, v], out, vec![]);
        Ok(())
    }
}

fn import_pad(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    let mode = attr(n, "mode").and_then(|a| a.s.clone()).unwrap_or_else(|| b"constant".to_vec());
    if mode != b"constant" {
        return Err(cx.err(n, format!("mode {:?}: only constant padding is supported", String::from_utf8_lossy(&mode))));
    }
    let rank = cx.shape(t).len() + 1;
    let (pads, value) = if cx.opset >= 11 {
        let pads = cx.konst_ints(n, 1)?;
        let value = if cx.has(n, 2) { cx.scalar(n, 2)? } else { 0.0 };
        (pads, value)
    } else {
        (attr_ints(n, "pads").unwrap_or_default(), attr_f(n, "value", 0.0) as f64)
    };
    let axes: Vec<usize> = if cx.has(n, 3) {
        cx.konst_ints(n, 3)?
            .iter()
            .map(|&a| norm_axis(a, rank).ok_or_else(|| cx.err(n, "bad axis")))
            .collect::<Result<_, _>>()?
    } else {
        (0..rank).collect()
    };
    if pads.len() != 2 * axes.len() || pads.iter().any(|&p| p < 0) {
        return Err(cx.err(n, format!("pads {pads:?}: need two non-negative values per axis")));
    }
    let (mut begin, mut end) = (vec![0; rank - 1], vec![0; rank - 1]);
    for (i, &a) in axes.iter().enumerate() {
        let (b, e) = (pads[i] as usize, pads[i + axes.len()] as usize);
        if a == 0 {
            if b != 0 || e != 0 {
                return Err(cx.err(n, "padding the batch axis is not supported"));
            }
            continue;
        }
        begin[a - 1] = b;
        end[a - 1] = e;
    }
    if begin.iter().chain(&end).all(|&p| p == 0) {
        return cx.set_output(n, 0, t);
    }
    let dilate = vec![1; rank - 1];
    cx.push(n, Layer::of(Pad { begin, end, dilate, value: PubF64(value) }), vec![t])
}

impl Operator for Transpose {
    fn name(&self) -> &'static str {
        "transpose"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let (input, perm) = (inputs[0], &self.perm);
        let per = &input[1..];
        let mut seen = perm.clone();
        seen.sort_unstable();
        if seen != (0..per.len()).collect::<Vec<_>>() {
            return Err(format!("permutation {perm:?} of a rank-{} sample", per.len()));
        }
        let out: Vec<usize> = perm.iter().map(|&p| per[p]).collect();
        Ok(with_batch(input[0], &out))
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        let mut p = vec![0];
        p.extend(self.perm.iter().map(|&a| a + 1));
        xs[0].clone().permuted_axes(IxDyn(&p)).as_standard_layout().into_owned()
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        let (out, map) = ops::transpose_map(&cx.step.input[1..], &self.perm);
        Ok(ops::gather_all(xs[0], &out, &map)?)
    }
    const ONNX: &'static [super::OnnxRule] = &[("Transpose", |cx, n| {
        let t = cx.data(n, 0)?;
        let rank = cx.shape(t).len() + 1;
        let perm: Vec<i64> = attr_ints(n, "perm").unwrap_or_else(|| (0..rank as i64).rev().collect());
        if perm.first() != Some(&0) || perm.len() != rank {
            return Err(cx.err(n, format!("permutation {perm:?} moves the batch axis")));
        }
        let perm: Vec<usize> = perm[1..].iter().map(|&p| (p as usize).wrapping_sub(1)).collect();
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return cx.set_output(n, 0, t);
        }
        cx.push(n, Layer::of(Transpose { perm }), vec![t])
    })];
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        let mut perm = vec![0i64];
        perm.extend(self.perm.iter().map(|&p| p as i64 + 1));
        g.node("Transpose", ins, out, vec![ints_attr("perm", &perm)]);
        Ok(())
    }
}
