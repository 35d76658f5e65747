//! Dense and convolution layers: a matrix Beaver product with the weights pre-opened once per
//! model ([`mpc_proto::Party::preopen_many`]), one round per depth, then a local bias.

use mpc_proto::correlations::Bilinear;
use mpc_proto::ring::Conv2dParams;
use mpc_proto::{AShare, RingTensor};
use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use super::{Operator, PrivateCx, Runs, max_abs, zip_local};
use crate::error::ModelError;
use crate::model::Layer;
use crate::onnx::export::{Graph, int_attr, ints_attr};
use crate::onnx::{Ctx, ImportError, attr, attr_f, attr_i, attr_ints, broadcast_to, proto::NodeProto};
use crate::plain;

/// `y = x·W + b`, `W` of shape `[inputs, outputs]`, `b` of shape `[outputs]`; input
/// `[batch, inputs]`. Weights: `W`, then `b` when `bias`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Linear {
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
    /// Whether there is a bias.
    pub bias: bool,
}

/// 2-D convolution, NCHW. Weights: `[out_channels, in_channels / groups, kh, kw]`, then the
/// bias `[out_channels]` when `bias`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conv2d {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size.
    pub kernel: (usize, usize),
    /// Stride.
    pub stride: (usize, usize),
    /// Symmetric zero padding.
    pub padding: (usize, usize),
    /// Whether there is a bias.
    pub bias: bool,
    /// Kernel dilation (1 = dense).
    pub dilation: (usize, usize),
    /// Channel groups (`in_channels` for a depthwise convolution).
    pub groups: usize,
}

impl Conv2d {
    fn params(&self) -> Conv2dParams {
        Conv2dParams { stride: self.stride, padding: self.padding, dilation: self.dilation, groups: self.groups }
    }
}

fn bias_max(w: &[ArrayD<f64>]) -> f64 {
    w.get(1).map_or(0.0, max_abs)
}

impl Operator for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn weight_shapes(&self, _: &[usize]) -> Vec<Vec<usize>> {
        let mut v = vec![vec![self.inputs, self.outputs]];
        if self.bias {
            v.push(vec![self.outputs]);
        }
        v
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        match inputs[0] {
            &[n, i] if i == self.inputs => Ok(vec![n, self.outputs]),
            _ => Err(format!("expects [batch, {}]", self.inputs)),
        }
    }

    fn eval_plain(&self, xs: &[&ArrayD<f64>], w: &[ArrayD<f64>]) -> ArrayD<f64> {
        let y = plain::matmul(xs[0], &w[0]);
        match w.get(1) {
            Some(b) => &y + b,
            None => y,
        }
    }

    fn bound(&self, b: &[f64], w: &[ArrayD<f64>], _: &[usize]) -> f64 {
        // Σ|w|·B + |b| per output unit, at the largest.
        let cols = w[0].shape()[1].max(1);
        let mut l1 = vec![0.0f64; cols];
        for (i, v) in w[0].iter().enumerate() {
            l1[i % cols] += v.abs();
        }
        l1.into_iter().fold(0.0, f64::max) * b[0] + bias_max(w)
    }

    fn truncates(&self) -> bool {
        true
    }

    fn runs(&self) -> Runs {
        Runs::Bilinear(Bilinear::MatMul)
    }

    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], w: &[AShare]) -> Result<AShare, ModelError> {
        let opened = cx.opened.ok_or_else(|| ModelError::Invalid("linear step without pre-opened weights".into()))?;
        let y = cx.party.apply_preopened(xs[0], opened, true).await?;
        self.finish_bilinear(y, w, &cx.step.output)
    }

    fn finish_bilinear(&self, y: AShare, w: &[AShare], output: &[usize]) -> Result<AShare, ModelError> {
        match w.get(1) {
            Some(b) => zip_local(&y, b, output, |a, b| a.add_row_broadcast(b)),
            None => Ok(y),
        }
    }

    const ONNX: &'static [super::OnnxRule] = &[("Gemm", import_gemm), ("MatMul", import_matmul)];

    fn to_onnx(&self, g: &mut Graph, ins: &[String], w: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        let mut inputs = vec![ins[0].clone(), g.init("w", &w[0])];
        if let Some(b) = w.get(1) {
            inputs.push(g.init("b", b));
        }
        g.node("Gemm", &inputs, out, vec![]);
        Ok(())
    }
}

fn import_gemm(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    if attr_i(n, "transA", 0) != 0 {
        return Err(cx.err(n, "transA = 1 is not supported"));
    }
    let b = cx.konst(n, 1)?;
    if b.ndim() != 2 {
        return Err(cx.err(n, "B must be 2-D"));
    }
    let alpha = attr_f(n, "alpha", 1.0) as f64;
    let beta = attr_f(n, "beta", 1.0) as f64;
    let w = if attr_i(n, "transB", 0) != 0 { b.t().to_owned() } else { b } * alpha;
    let out = w.shape()[1];
    let bias = if cx.has(n, 2) {
        let c = cx.konst(n, 2)?;
        Some(
            broadcast_to(&c, out)
                .ok_or_else(|| cx.err(n, format!("bias of shape {:?} for {out} outputs", c.shape())))?
                * beta,
        )
    } else {
        None
    };
    cx.push(n, Layer::linear(w, bias), vec![t])
}

fn import_matmul(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    let w = cx.konst(n, 1)?;
    if w.ndim() != 2 {
        return Err(cx.err(n, "the weight must be 2-D"));
    }
    cx.push(n, Layer::linear(w, None), vec![t])
}

impl Operator for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn weight_shapes(&self, _: &[usize]) -> Vec<Vec<usize>> {
        let per_group = self.in_channels / self.groups.max(1);
        let mut v = vec![vec![self.out_channels, per_group, self.kernel.0, self.kernel.1]];
        if self.bias {
            v.push(vec![self.out_channels]);
        }
        v
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let input = inputs[0];
        let &[_, ci, _, _] = input else { return Err("expects [batch, c, h, w]".into()) };
        let (o, g) = (self.out_channels, self.groups);
        if g == 0 || ci != self.in_channels || ci % g != 0 || o % g != 0 {
            return Err(format!("{ci} input channels for a convolution of {} in {g} groups", self.in_channels));
        }
        let w = &self.weight_shapes(&[])[0];
        let out = self
            .params()
            .output_shape(input, w)
            .map_err(|_| "kernel larger than the padded input, or a zero stride or dilation".to_string())?;
        Ok(out.to_vec())
    }

    fn eval_plain(&self, xs: &[&ArrayD<f64>], w: &[ArrayD<f64>]) -> ArrayD<f64> {
        let mut y = plain::conv2d_ext(xs[0], &w[0], self.stride, self.padding, self.dilation, self.groups);
        if let Some(b) = w.get(1) {
            for (c, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
                plane += b[[c]];
            }
        }
        y
    }

    fn bound(&self, b: &[f64], w: &[ArrayD<f64>], _: &[usize]) -> f64 {
        let weight = &w[0];
        let per = (weight.len() / weight.shape()[0].max(1)).max(1);
        let l1 = match weight.as_slice() {
            Some(s) => s.chunks(per).map(|c| c.iter().map(|v| v.abs()).sum::<f64>()).fold(0.0, f64::max),
            None => weight.iter().map(|v| v.abs()).sum(),
        };
        l1 * b[0] + bias_max(w)
    }

    fn truncates(&self) -> bool {
        true
    }

    fn runs(&self) -> Runs {
        Runs::Bilinear(Bilinear::Conv2d(self.params()))
    }

    async fn eval_private(&self, cx: &mut PrivateCx<'_>, xs: &[&AShare], w: &[AShare]) -> Result<AShare, ModelError> {
        let opened = cx.opened.ok_or_else(|| ModelError::Invalid("conv step without pre-opened weights".into()))?;
        let y = cx.party.apply_preopened(xs[0], opened, true).await?;
        self.finish_bilinear(y, w, &cx.step.output)
    }

    fn finish_bilinear(&self, y: AShare, w: &[AShare], output: &[usize]) -> Result<AShare, ModelError> {
        match w.get(1) {
            Some(b) => zip_local(&y, b, output, add_channel_bias),
            None => Ok(y),
        }
    }

    const ONNX: &'static [super::OnnxRule] = &[("Conv", import_conv), ("ConvTranspose", import_conv_transpose)];

    fn to_onnx(&self, g: &mut Graph, ins: &[String], w: &[ArrayD<f64>], out: &str) -> Result<(), String> {
        let mut inputs = vec![ins[0].clone(), g.init("w", &w[0])];
        if let Some(b) = w.get(1) {
            inputs.push(g.init("b", b));
        }
        let pair = |p: (usize, usize)| vec![p.0 as i64, p.1 as i64];
        let (ph, pw) = (self.padding.0 as i64, self.padding.1 as i64);
        let attrs = vec![
            ints_attr("kernel_shape", &pair(self.kernel)),
            ints_attr("strides", &pair(self.stride)),
            ints_attr("pads", &[ph, pw, ph, pw]),
            ints_attr("dilations", &pair(self.dilation)),
            int_attr("group", self.groups as i64),
        ];
        g.node("Conv", &inputs, out, attrs);
        Ok(())
    }
}

/// Adds a per-channel bias `[c]` to `[n, c, h, w]`.
fn add_channel_bias(x: &RingTensor, b: &RingTensor) -> mpc_proto::Result<RingTensor> {
    let &[_, c, h, w] = x.shape() else { unreachable!("conv output is 4-D") };
    let mut out = x.clone();
    for (i, v) in out.as_mut_slice().iter_mut().enumerate() {
        *v = v.wrapping_add(b.as_slice()[(i / (h * w)) % c]);
    }
    Ok(out)
}

fn import_conv(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    let w = cx.konst(n, 1)?;
    if w.ndim() != 4 {
        return Err(cx.err(n, "only 2-D convolution is supported"));
    }
    let bias = if cx.has(n, 2) { Some(cx.konst(n, 2)?) } else { None };
    let stride = cx.pair(n, "strides", 1)?;
    let dilation = cx.pair(n, "dilations", 1)?;
    let padding = cx.pads2(n)?;
    let groups = usize::try_from(attr_i(n, "group", 1)).unwrap_or(0);
    if groups == 0 {
        return Err(cx.err(n, "group must be positive"));
    }
    cx.push(n, Layer::conv2d(w, bias, stride, padding, dilation, groups), vec![t])
}

/// A transposed convolution as zero insertion and padding (one local Pad layer) followed by a
/// stride-1 convolution with the kernel flipped and its channel axes swapped.
fn import_conv_transpose(cx: &mut Ctx, n: &NodeProto) -> Result<(), ImportError> {
    let t = cx.data(n, 0)?;
    let w = cx.konst(n, 1)?;
    let &[c_in, og, kh, kw] = w.shape() else {
        return Err(cx.err(n, "only 2-D transposed convolution is supported"));
    };
    if attr_i(n, "group", 1) != 1 {
        return Err(cx.err(n, "group > 1 is not supported for ConvTranspose"));
    }
    if attr(n, "output_shape").is_some() {
        return Err(cx.err(n, "output_shape is not supported: export with pads and output_padding"));
    }
    let stride = cx.pair(n, "strides", 1)?;
    let dil = cx.pair(n, "dilations", 1)?;
    let (ph, pw) = cx.pads2(n)?;
    let op = match attr_ints(n, "output_padding").as_deref() {
        None => (0, 0),
        Some([a, b]) if *a >= 0 && *b >= 0 => (*a as usize, *b as usize),
        Some(v) => return Err(cx.err(n, format!("output_padding {v:?}"))),
    };
    let (eh, ew) = (dil.0 * (kh - 1), dil.1 * (kw - 1));
    if ph > eh || pw > ew {
        return Err(cx.err(n, "padding larger than the dilated kernel is not supported"));
    }
    let c = cx.shape(t).first().copied().unwrap_or(0);
    if c != c_in {
        return Err(cx.err(n, format!("{c} input channels, weight expects {c_in}")));
    }
    let pad = super::Pad {
        begin: vec![0, eh - ph, ew - pw],
        end: vec![0, eh - ph + op.0, ew - pw + op.1],
        dilate: vec![1, stride.0, stride.1],
        value: crate::ops::PubF64(0.0),
    };
    let padded = cx.add_layer(n, Layer::of(pad), vec![t])?;
    // Conv weight [o, c, kh, kw] = W[c, o, kh−1−y, kw−1−x].
    let weight =
        ArrayD::from_shape_fn(IxDyn(&[og, c_in, kh, kw]), |ix| w[[ix[1], ix[0], kh - 1 - ix[2], kw - 1 - ix[3]]]);
    let bias = if cx.has(n, 2) { Some(cx.konst(n, 2)?) } else { None };
    cx.push(n, Layer::conv2d(weight, bias, (1, 1), (0, 0), dil, 1), vec![padded])
}
