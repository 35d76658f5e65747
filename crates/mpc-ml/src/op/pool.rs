//! Pooling: max pooling as a tree of comparisons; average and global pooling as local sums
//! and a public fixed-point scale.

use crate::backend::Backend;
use mpc_proto::compare::cost::OpShape;
use mpc_proto::ring::pool_out_len;
use mpc_proto::{AShare, FixedPoint, RingTensor};
use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use super::{Operator, PrivateCx, Runs};
use crate::bounds::{levels, window_for};
use crate::error::ModelError;
use crate::model::{Layer, Step};
use crate::onnx::export::{Graph, ints_attr};
use crate::onnx::{Ctx, ImportError, attr_i, attr_ints, norm_axis, proto::NodeProto};
use crate::ops;
use crate::plain;

/// Max pooling (padding never wins).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MaxPool {
    /// Window.
    pub kernel: (usize, usize),
    /// Stride.
    pub stride: (usize, usize),
    /// Symmetric padding.
    pub padding: (usize, usize),
    /// Output size rounded up (ONNX `ceil_mode`).
    pub ceil_mode: bool,
}

/// Average pooling.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AvgPool {
    /// Window.
    pub kernel: (usize, usize),
    /// Stride.
    pub stride: (usize, usize),
    /// Symmetric zero padding.
    pub padding: (usize, usize),
    /// Whether padded zeros count in the divisor (ONNX `count_include_pad`).
    pub count_include_pad: bool,
    /// Output size rounded up (ONNX `ceil_mode`).
    pub ceil_mode: bool,
}

/// Mean over the spatial axes: `[n, c, h, w] → [n, c, 1, 1]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GlobalAvgPool;

/// Sum over the spatial axes: `[n, c, h, w] → [n, c, 1, 1]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GlobalSumPool;

fn pool_shape(
    input: &[usize],
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    ceil_mode: bool,
) -> Result<Vec<usize>, String> {
    let &[n, c, h, w] = input else { return Err("expects [batch, c, h, w]".into()) };
    let (Some(oh), Some(ow)) = (
        pool_out_len(h, kernel.0, stride.0, padding.0, ceil_mode),
        pool_out_len(w, kernel.1, stride.1, padding.1, ceil_mode),
    ) else {
        return Err("window larger than the padded input".into());
    };
    if padding.0 >= kernel.0 || padding.1 >= kernel.1 {
        return Err("padding must be smaller than the window".into());
    }
    Ok(vec![n, c, oh, ow])
}

fn pool_attrs(
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
    ceil: bool,
) -> Vec<crate::onnx::proto::AttributeProto> {
    use crate::onnx::export::int_attr;
    let (ph, pw) = (p.0 as i64, p.1 as i64);
    vec![
        ints_attr("kernel_shape", &[k.0 as i64, k.1 as i64]),
        ints_attr("strides", &[s.0 as i64, s.1 as i64]),
        ints_attr("pads", &[ph, pw, ph, pw]),
        int_attr("ceil_mode", i64::from(ceil)),
    ]
}

impl Operator for MaxPool {
    fn name(&self) -> &'static str {
        "maxpool"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        pool_shape(inputs[0], self.kernel, self.stride, self.padding, self.ceil_mode)
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        plain::max_pool2d_ext(xs[0], self.kernel, self.stride, self.padding, self.ceil_mode)
    }
    fn compares(&self) -> bool {
        true
    }
    // Max trees compare differences of two values.
    fn window(&self, b: f64, fixed: FixedPoint) -> u8 {
        window_for(2.0 * b, fixed)
    }
    fn cost_shape(&self, step: &Step, bits: u8) -> OpShape {
        let (windows, kk) = (step.output.iter().product::<usize>(), self.kernel.0 * self.kernel.1);
        OpShape {
            elements: windows * kk.saturating_sub(1),
            points: 1,
            relu: true,
            bits: u32::from(bits),
            sequential: levels(kk),
        }
    }
    fn runs(&self) -> Runs {
        Runs::Talks
    }
    fn rounds(&self, _: &Step, r: u64) -> u64 {
        levels(self.kernel.0 * self.kernel.1) as u64 * r
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        Ok(cx.party.maxpool2d_ceil(xs[0], self.kernel, self.stride, self.padding, self.ceil_mode).await?)
    }
    const ONNX: &'static [super::OnnxRule] =
        &[("MaxPool", import_pool), ("AveragePool", import_pool), ("GlobalMaxPool", import_global_max)];
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        g.node("MaxPool", ins, out, pool_attrs(self.kernel, self.stride, self.padding, self.ceil_mode));
        Ok(())
    }
}

fn import_pool(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    if attr_ints(n, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
        return Err(cx.err(n, "dilation > 1 is not supported"));
    }
    if attr_i(n, "storage_order", 0) != 0 {
        return Err(cx.err(n, "storage_order = 1 is not supported"));
    }
    let kernel = cx.pair(n, "kernel_shape", 0)?;
    if kernel.0 == 0 {
        return Err(cx.err(n, "kernel_shape is required"));
    }
    let stride = cx.pair(n, "strides", 1)?;
    let padding = cx.pads2(n)?;
    let ceil_mode = attr_i(n, "ceil_mode", 0) != 0;
    let layer = if n.op_type() == "MaxPool" {
        Layer::of(MaxPool { kernel, stride, padding, ceil_mode })
    } else {
        let count_include_pad = attr_i(n, "count_include_pad", 0) != 0;
        Layer::of(AvgPool { kernel, stride, padding, count_include_pad, ceil_mode })
    };
    cx.push(n, layer, vec![t])
}

fn import_global_max(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    let &[_, h, w] = cx.shape(t) else { return Err(cx.err(n, "expects [batch, c, h, w]")) };
    cx.push(n, Layer::of(MaxPool { kernel: (h, w), stride: (1, 1), padding: (0, 0), ceil_mode: false }), vec![t])
}

impl Operator for AvgPool {
    fn name(&self) -> &'static str {
        "avgpool"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        pool_shape(inputs[0], self.kernel, self.stride, self.padding, self.ceil_mode)
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        plain::avg_pool2d_ext(xs[0], self.kernel, self.stride, self.padding, self.count_include_pad, self.ceil_mode)
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        let AvgPool { kernel, stride, padding, count_include_pad, ceil_mode } = *self;
        if (count_include_pad || padding == (0, 0)) && !ceil_mode {
            Ok(cx.party.avg_pool2d(xs[0], kernel, stride, padding)?)
        } else {
            avg_pool_exact(cx.party, xs[0], cx.step, self)
        }
    }
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        let mut attrs = pool_attrs(self.kernel, self.stride, self.padding, self.ceil_mode);
        attrs.push(crate::onnx::export::int_attr("count_include_pad", i64::from(self.count_include_pad)));
        g.node("AveragePool", ins, out, attrs);
        Ok(())
    }
}

/// Average pooling whose divisor varies by window (padding not counted, or a `ceil_mode`
/// overhang): sum pooling over the explicitly padded input, then a public per-window
/// reciprocal (fixed point) and one truncation. Local.
fn avg_pool_exact(party: &dyn Backend, x: &AShare, step: &Step, p: &AvgPool) -> Result<AShare, ModelError> {
    let fx = party.fixed();
    let (kernel, stride, padding) = (p.kernel, p.stride, p.padding);
    let &[n, c, h, w] = step.input.as_slice() else { unreachable!("checked by the plan") };
    let &[_, _, oh, ow] = step.output.as_slice() else { unreachable!("checked by the plan") };
    // Pad so that every (possibly overhanging) window lies inside, then pool without padding.
    let (eh, ew) = ((oh - 1) * stride.0 + kernel.0, (ow - 1) * stride.1 + kernel.1);
    let (bh, bw) = (eh.saturating_sub(h + padding.0), ew.saturating_sub(w + padding.1));
    let (shape, map) = ops::pad_map(&[c, h, w], &[0, padding.0, padding.1], &[0, bh, bw], &[1, 1, 1]);
    let padded = ops::gather(party.id(), x, &shape, &map, 0)?;
    let sums = party.sum_pool2d(&padded, kernel, stride, (0, 0))?;
    // The divisor of each window (ONNX semantics, as the plaintext reference counts it).
    let mut inv = Vec::with_capacity(n * c * oh * ow);
    let divisors = window_divisors(h, w, p, (oh, ow));
    for _ in 0..n * c {
        for &d in &divisors {
            inv.push(fx.encode(1.0 / d as f64)?);
        }
    }
    let inv = RingTensor::from_vec(&step.output, inv)?;
    Ok(party.trunc(&sums.mul_public(&inv)?, fx.frac_bits))
}

/// ONNX AveragePool divisors per output position: the window clipped to the padded input
/// (`count_include_pad`) or to the real input.
fn window_divisors(h: usize, w: usize, p: &AvgPool, (oh, ow): (usize, usize)) -> Vec<usize> {
    let span = |o: usize, st: usize, pad: usize, kk: usize, len: usize| {
        let start = (o * st) as isize - pad as isize;
        let end = start + kk as isize;
        if p.count_include_pad {
            (end.min((len + pad) as isize) - start) as usize
        } else {
            (end.min(len as isize) - start.max(0)) as usize
        }
    };
    let mut v = Vec::with_capacity(oh * ow);
    for oy in 0..oh {
        for ox in 0..ow {
            v.push(span(oy, p.stride.0, p.padding.0, p.kernel.0, h) * span(ox, p.stride.1, p.padding.1, p.kernel.1, w));
        }
    }
    v
}

fn global_shape(inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
    let &[n, c, _, _] = inputs[0] else { return Err("expects [batch, c, h, w]".into()) };
    Ok(vec![n, c, 1, 1])
}

fn global_plain(x: &ArrayD<f64>, mean: bool) -> ArrayD<f64> {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let hw = (x.shape()[2] * x.shape()[3]) as f64;
    let s = x.sum_axis(Axis(3)).sum_axis(Axis(2));
    let m = if mean { s / hw } else { s };
    m.into_shape_with_order(IxDyn(&[n, c, 1, 1])).expect("same size")
}

fn global_private(party: &dyn Backend, x: &AShare, step: &Step, mean: bool) -> Result<AShare, ModelError> {
    let &[n, c, h, w] = step.input.as_slice() else { unreachable!("checked by the plan") };
    let s = x.reshape(&[n, c, h * w])?.sum_axis(2)?.reshape(&[n, c, 1, 1])?;
    Ok(if mean { party.mul_const(&s, 1.0 / (h * w) as f64)? } else { s })
}

impl Operator for GlobalAvgPool {
    fn name(&self) -> &'static str {
        "globalavgpool"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        global_shape(inputs)
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        global_plain(xs[0], true)
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        global_private(cx.party, xs[0], cx.step, true)
    }
    const ONNX: &'static [super::OnnxRule] = &[
        ("GlobalAveragePool", |cx, n| {
            let t = cx.data(n, 0)?;
            cx.push(n, Layer::of(GlobalAvgPool), vec![t])
        }),
        ("ReduceMean", import_reduce),
        ("ReduceSum", import_reduce),
    ];
    fn to_onnx(&self, g: &mut Graph, ins: &[String], _: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        g.node("GlobalAveragePool", ins, out, vec![]);
        Ok(())
    }
}

impl Operator for GlobalSumPool {
    fn name(&self) -> &'static str {
        "globalsumpool"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        global_shape(inputs)
    }
    fn eval_plain(&self, xs: &[&ArrayD<f64>], _: &[ArrayD<f64>]) -> ArrayD<f64> {
        global_plain(xs[0], false)
    }
    fn bound(&self, b: &[f64], _: &[ArrayD<f64>], input: &[usize]) -> f64 {
        b[0] * input.iter().skip(2).product::<usize>() as f64
    }
    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], _: &[AShare]) -> Result<AShare, ModelError> {
        global_private(cx.party, xs[0], cx.step, false)
    }
}

/// ReduceMean / ReduceSum over the spatial axes of NCHW.
fn import_reduce(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let op = n.op_type();
    let t = cx.data(n, 0)?;
    let axes = if cx.has(n, 1) { cx.konst_ints(n, 1)? } else { attr_ints(n, "axes").unwrap_or_default() };
    let rank = cx.shape(t).len() + 1;
    let mut axes: Vec<usize> =
        axes.iter().map(|&a| norm_axis(a, rank).ok_or_else(|| cx.err(n, "bad axis"))).collect::<Result<_, _>>()?;
    axes.sort_unstable();
    if rank != 4 || axes != [2, 3] {
        return Err(cx.err(
            n,
            format!(
                "{op} over axes {axes:?} of a rank-{rank} tensor: only the spatial axes [2, 3] of NCHW are supported"
            ),
        ));
    }
    let layer = if op == "ReduceMean" { Layer::of(GlobalAvgPool) } else { Layer::of(GlobalSumPool) };
    let y = cx.add_layer(n, layer, vec![t])?;
    if attr_i(n, "keepdims", 1) == 0 {
        let c = cx.shape(y)[0];
        let f = cx.add_layer(n, Layer::of(super::Reshape { shape: vec![c] }), vec![y])?;
        return cx.set_output(n, 0, f);
    }
    cx.set_output(n, 0, y)
}
