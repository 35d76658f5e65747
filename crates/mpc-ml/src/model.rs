//! Models (the owner's plaintext network) and plans (the public op list all parties derive).
//!
//! A [`Model`] is a graph of [`Layer`]s with their weights (layers in topological order, each
//! reading numbered tensors): what the model owner holds. A [`Plan`] is the same graph with the
//! weights removed and every shape fixed for one batch size: what the three parties agree on (by
//! [`Plan::hash`]) before any share moves. The architecture (which tensors each layer reads
//! included), the shapes, the fixed-point format and the output policy are public; the weights
//! are not. The supported layers and their private evaluation are tabled in docs/operators.md.

use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use mpc_proto::FixedPoint;
use mpc_proto::ring::pool_out_len;

use crate::bounds::{self, CompareSpec, PlanOptions};
use crate::error::ModelError;
use crate::ops;
pub use crate::ops::{Act, PubF64};
use crate::plain;

/// What the data owner learns from a prediction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutputPolicy {
    /// The raw outputs of the last layer.
    #[default]
    Logits,
    /// Class probabilities (softmax over the last axis, or the sigmoid output as is).
    Probabilities,
    /// Only the predicted class index (argmax): reveals least about the model.
    Label,
}

impl std::str::FromStr for OutputPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "logits" => Ok(Self::Logits),
            "probabilities" | "probs" => Ok(Self::Probabilities),
            "label" => Ok(Self::Label),
            other => Err(format!("unknown output policy {other:?}: use logits, probabilities or label")),
        }
    }
}

/// One layer of a model, with its weights (plaintext, the model owner's secret).
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// `y = x·W + b`, `W` of shape `[in, out]`, `b` of shape `[out]`.
    Linear {
        /// Weights `[in, out]`.
        weight: ArrayD<f64>,
        /// Optional bias `[out]`.
        bias: Option<ArrayD<f64>>,
    },
    /// 2-D convolution, NCHW, weights `[out, in/groups, kh, kw]`.
    Conv2d {
        /// Weights `[out, in/groups, kh, kw]`.
        weight: ArrayD<f64>,
        /// Optional bias `[out]`.
        bias: Option<ArrayD<f64>>,
        /// Stride.
        stride: (usize, usize),
        /// Symmetric zero padding.
        padding: (usize, usize),
        /// Kernel dilation (1 = dense).
        dilation: (usize, usize),
        /// Channel groups (`in` for a depthwise convolution).
        groups: usize,
    },
    /// `max(x, 0)`.
    Relu,
    /// Max pooling (padding never wins).
    MaxPool {
        /// Window.
        kernel: (usize, usize),
        /// Stride.
        stride: (usize, usize),
        /// Symmetric padding.
        padding: (usize, usize),
        /// Output size rounded up (ONNX `ceil_mode`).
        ceil_mode: bool,
    },
    /// Average pooling.
    AvgPool {
        /// Window.
        kernel: (usize, usize),
        /// Stride.
        stride: (usize, usize),
        /// Symmetric zero padding.
        padding: (usize, usize),
        /// Whether padded zeros count in the divisor (ONNX `count_include_pad`).
        count_include_pad: bool,
        /// Output size rounded up (ONNX `ceil_mode`).
        ceil_mode: bool,
    },
    /// Mean over the spatial axes: `[n, c, h, w] → [n, c, 1, 1]`.
    GlobalAvgPool,
    /// Sum over the spatial axes: `[n, c, h, w] → [n, c, 1, 1]`.
    GlobalSumPool,
    /// Elementwise sum of the layer's two inputs (numpy broadcasting of per-sample shapes).
    Add,
    /// Difference of the layer's two inputs (first minus second, broadcasting).
    Sub,
    /// Elementwise product of the layer's two inputs (broadcasting): one Beaver product.
    Mul,
    /// Concatenation of the layer's inputs along per-sample axis `axis` (0 = channels).
    Concat {
        /// Per-sample axis.
        axis: usize,
    },
    /// `x[start:end:step]` along per-sample axis `axis`.
    Slice {
        /// Per-sample axis.
        axis: usize,
        /// First index.
        start: usize,
        /// One past the last index.
        end: usize,
        /// Step (≥ 1).
        step: usize,
    },
    /// Constant padding of the per-sample axes, with `dilate[i] − 1` values inserted between
    /// neighbours along axis `i` (a transposed convolution's input); the value is public.
    Pad {
        /// Values before, per axis.
        begin: Vec<usize>,
        /// Values after, per axis.
        end: Vec<usize>,
        /// Zero-insertion factor per axis (1 = none).
        dilate: Vec<usize>,
        /// The pad value.
        value: PubF64,
    },
    /// Permutation of the per-sample axes (output axis `i` is input axis `perm[i]`).
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// A public elementwise activation ([`Act`]): Clip/ReLU6, LeakyRelu, HardSigmoid,
    /// HardSwish, Tanh, SiLU, GELU, ELU.
    Act(Act),
    /// `max(x, 0) + slope·min(x, 0)` with a secret slope of the per-sample shape.
    PRelu {
        /// The slope, of the per-sample shape.
        slope: ArrayD<f64>,
    },
    /// Log-softmax over the last axis; only as the model's last layer (the parties centre the
    /// logits privately and the data owner applies log-softmax to what is revealed).
    LogSoftmax,
    /// `[n, ...] → [n, prod(...)]`.
    Flatten,
    /// `[n, ...] → [n, shape...]` (same number of elements).
    Reshape {
        /// Per-sample target shape.
        shape: Vec<usize>,
    },
    /// Elementwise `x·scale + shift` with per-sample-shaped secret constants (what remains of
    /// a BatchNormalization or a constant Mul/Add that could not be folded into a neighbour).
    Affine {
        /// Multiplier, per-sample shape.
        scale: ArrayD<f64>,
        /// Addend, per-sample shape.
        shift: ArrayD<f64>,
    },
    /// Softmax over the last axis.
    Softmax,
    /// Logistic sigmoid.
    Sigmoid,
}

/// A network: input shape per sample and a graph of layers in topological order.
///
/// Tensors are numbered: 0 is the model's input, `i + 1` the output of layer `i`. Layer `i`
/// reads the tensors `wires[i]` (all numbered at most `i`); the model's output is the last
/// layer's. A chain ([`Model::chain`]) has `wires[i] = [i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Per-sample input shape (without the batch axis), e.g. `[1, 28, 28]` or `[784]`.
    pub input_shape: Vec<usize>,
    /// The layers, in topological order.
    pub layers: Vec<Layer>,
    /// The tensors each layer reads (see the type's docs).
    pub wires: Vec<Vec<usize>>,
}

/// The public description of one layer: its kind and hyperparameters, no weights.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StepKind {
    /// See [`Layer::Linear`].
    Linear {
        /// Input features.
        inputs: usize,
        /// Output features.
        outputs: usize,
        /// Whether there is a bias.
        bias: bool,
    },
    /// See [`Layer::Conv2d`].
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel size.
        kernel: (usize, usize),
        /// Stride.
        stride: (usize, usize),
        /// Padding.
        padding: (usize, usize),
        /// Whether there is a bias.
        bias: bool,
        /// Dilation.
        dilation: (usize, usize),
        /// Channel groups.
        groups: usize,
    },
    /// See [`Layer::Relu`].
    Relu,
    /// See [`Layer::MaxPool`].
    MaxPool {
        /// Window.
        kernel: (usize, usize),
        /// Stride.
        stride: (usize, usize),
        /// Padding.
        padding: (usize, usize),
        /// Rounded-up output size.
        ceil_mode: bool,
    },
    /// See [`Layer::AvgPool`].
    AvgPool {
        /// Window.
        kernel: (usize, usize),
        /// Stride.
        stride: (usize, usize),
        /// Padding.
        padding: (usize, usize),
        /// Divisor counts padding.
        count_include_pad: bool,
        /// Rounded-up output size.
        ceil_mode: bool,
    },
    /// See [`Layer::GlobalAvgPool`].
    GlobalAvgPool,
    /// See [`Layer::GlobalSumPool`].
    GlobalSumPool,
    /// See [`Layer::Add`].
    Add,
    /// See [`Layer::Sub`].
    Sub,
    /// See [`Layer::Mul`].
    Mul,
    /// See [`Layer::Concat`].
    Concat {
        /// Per-sample axis.
        axis: usize,
    },
    /// See [`Layer::Slice`].
    Slice {
        /// Per-sample axis.
        axis: usize,
        /// First index.
        start: usize,
        /// End.
        end: usize,
        /// Step.
        step: usize,
    },
    /// See [`Layer::Pad`].
    Pad {
        /// Before.
        begin: Vec<usize>,
        /// After.
        end: Vec<usize>,
        /// Zero insertion.
        dilate: Vec<usize>,
        /// Value.
        value: PubF64,
    },
    /// See [`Layer::Transpose`].
    Transpose {
        /// Permutation.
        perm: Vec<usize>,
    },
    /// See [`Layer::Act`].
    Act(Act),
    /// See [`Layer::PRelu`].
    PRelu,
    /// See [`Layer::LogSoftmax`].
    LogSoftmax,
    /// See [`Layer::Flatten`].
    Flatten,
    /// See [`Layer::Reshape`].
    Reshape,
    /// See [`Layer::Affine`].
    Affine,
    /// See [`Layer::Softmax`].
    Softmax,
    /// See [`Layer::Sigmoid`].
    Sigmoid,
}

impl StepKind {
    /// Short name for profiles.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Linear { .. } => "linear",
            StepKind::Conv2d { .. } => "conv2d",
            StepKind::Relu => "relu",
            StepKind::MaxPool { .. } => "maxpool",
            StepKind::AvgPool { .. } => "avgpool",
            StepKind::GlobalAvgPool => "globalavgpool",
            StepKind::GlobalSumPool => "globalsumpool",
            StepKind::Flatten => "flatten",
            StepKind::Reshape => "reshape",
            StepKind::Affine => "affine",
            StepKind::Softmax => "softmax",
            StepKind::Sigmoid => "sigmoid",
            StepKind::Add => "add",
            StepKind::Sub => "sub",
            StepKind::Mul => "mul",
            StepKind::Concat { .. } => "concat",
            StepKind::Slice { .. } => "slice",
            StepKind::Pad { .. } => "pad",
            StepKind::Transpose { .. } => "transpose",
            StepKind::Act(a) => a.name(),
            StepKind::PRelu => "prelu",
            StepKind::LogSoftmax => "logsoftmax",
        }
    }
}

/// One step of a plan: what runs and on which shapes (batch axis included).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Step {
    /// The layer kind and its public hyperparameters.
    pub kind: StepKind,
    /// The tensors it reads: 0 is the plan's input, `i + 1` the output of step `i`.
    pub inputs: Vec<usize>,
    /// Shape of its first input.
    pub input: Vec<usize>,
    /// Output shape.
    pub output: Vec<usize>,
    /// Comparison-based steps: their method and window ([`crate::bounds`]); `None` otherwise.
    pub compare: Option<CompareSpec>,
}

/// The public op list for one model and batch size; all three parties derive the same one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Plan {
    /// Format version of this structure (part of the hash).
    pub version: u32,
    /// Input shape with the batch axis.
    pub input: Vec<usize>,
    /// The steps.
    pub steps: Vec<Step>,
    /// What the data owner learns.
    pub output: OutputPolicy,
    /// Fixed-point format.
    pub fixed: FixedPoint,
    /// How comparison-based steps run (method policy, link, declared input range).
    pub options: PlanOptions,
    /// The output stage's comparison settings, when it compares (argmax, threshold, a final
    /// softmax or sigmoid).
    pub output_compare: Option<CompareSpec>,
}

/// Version of the [`Plan`] structure (part of its hash).
pub const PLAN_VERSION: u32 = 3;

impl Plan {
    /// The plan's hash ([`crate::plan_hash()`], domain `inference`): what the parties compare.
    pub fn hash(&self) -> [u8; 32] {
        crate::plan_hash("inference", self)
    }

    /// Output shape of the last step (or the input shape for an empty plan).
    pub fn output_shape(&self) -> &[usize] {
        self.steps.last().map(|s| s.output.as_slice()).unwrap_or(&self.input)
    }

    /// Batch size.
    pub fn batch(&self) -> usize {
        self.input[0]
    }

    /// The same plan for another batch size (every layer's shape depends on the batch only
    /// through the leading axis). This is how the data owner and the dealer, who hold the
    /// published architecture but not the weights, derive a job's plan.
    pub fn rebatch(&self, batch: usize) -> Result<Plan, ModelError> {
        if batch == 0 {
            return Err(ModelError::Invalid("batch size must be at least 1".into()));
        }
        let with = |s: &[usize]| {
            let mut v = s.to_vec();
            if let Some(first) = v.first_mut() {
                *first = batch;
            }
            v
        };
        let mut plan = Plan {
            version: self.version,
            input: with(&self.input),
            steps: self
                .steps
                .iter()
                .map(|st| Step {
                    kind: st.kind.clone(),
                    inputs: st.inputs.clone(),
                    input: with(&st.input),
                    output: with(&st.output),
                    compare: st.compare,
                })
                .collect(),
            output: self.output,
            fixed: self.fixed,
            options: self.options,
            output_compare: self.output_compare,
        };
        // Methods depend on the layers' sizes, so on the batch.
        plan.resolve_methods();
        Ok(plan)
    }

    /// Checks that the plan is internally consistent (what a node does with a plan it
    /// received): every step reads earlier tensors of the shapes it records, keeps the batch
    /// axis, and only the last step may be a log-softmax.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.version != PLAN_VERSION {
            return Err(ModelError::Invalid(format!(
                "plan format version {}, this node reads version {PLAN_VERSION}: publish the model again",
                self.version
            )));
        }
        bounds::check(self).map_err(ModelError::Invalid)?;
        if let Some((lo, hi)) = self.options.input_range
            && lo > hi
        {
            return Err(ModelError::Invalid(format!("declared input range [{lo}, {hi}] ulps is empty")));
        }
        if self.input.is_empty() || self.input[0] == 0 {
            return Err(ModelError::Invalid("plan input needs a batch axis".into()));
        }
        let mut shapes: Vec<&[usize]> = vec![&self.input];
        for (i, st) in self.steps.iter().enumerate() {
            let bad = |what: String| ModelError::Invalid(format!("step {i} ({}) {what}", st.kind.name()));
            if st.inputs.is_empty() || st.inputs.iter().any(|&t| t > i) {
                return Err(bad(format!("reads tensors {:?}, not all computed before it", st.inputs)));
            }
            let arity = st.kind.arity();
            if arity.is_some_and(|a| a != st.inputs.len()) {
                return Err(bad(format!("reads {} tensors", st.inputs.len())));
            }
            if st.input != shapes[st.inputs[0]] {
                return Err(bad(format!("expects {:?}, gets {:?}", st.input, shapes[st.inputs[0]])));
            }
            if st.inputs.iter().any(|&t| shapes[t].first() != self.input.first()) {
                return Err(bad("reads a tensor without the batch axis".into()));
            }
            if st.output.first() != self.input.first() || st.output.iter().product::<usize>() == 0 {
                return Err(bad(format!("has a bad output shape {:?}", st.output)));
            }
            if st.kind == StepKind::LogSoftmax && i + 1 != self.steps.len() {
                return Err(bad("is a log-softmax before the last step".into()));
            }
            shapes.push(&st.output);
        }
        Ok(())
    }
}

impl StepKind {
    /// How many tensors a step of this kind reads (`None`: one or more, for Concat).
    pub fn arity(&self) -> Option<usize> {
        match self {
            StepKind::Add | StepKind::Sub | StepKind::Mul => Some(2),
            StepKind::Concat { .. } => None,
            _ => Some(1),
        }
    }
}

impl Layer {
    /// The public step for this layer on input shape `input` (batch included), or a shape
    /// error: [`Layer::step_on`] for a layer that reads one tensor.
    pub fn step(&self, input: &[usize]) -> Result<Step, ModelError> {
        self.step_on(&[input])
    }

    /// The public step for this layer reading tensors of shapes `inputs` (batch included), or a
    /// shape error. The step's `inputs` (tensor numbers) are left empty for the caller.
    pub fn step_on(&self, inputs: &[&[usize]]) -> Result<Step, ModelError> {
        let input = inputs.first().copied().unwrap_or(&[]);
        let bad = |what: String| ModelError::Shape { layer: self.name().into(), input: input.to_vec(), detail: what };
        let want = match self {
            Layer::Add | Layer::Sub | Layer::Mul => Some(2),
            Layer::Concat { .. } => None,
            _ => Some(1),
        };
        if want.is_some_and(|w| w != inputs.len()) || inputs.is_empty() {
            return Err(bad(format!("reads {} tensors", inputs.len())));
        }
        if input.is_empty() {
            return Err(bad("input without a batch axis".into()));
        }
        let n = input[0];
        let per = &input[1..];
        let with_batch = |rest: &[usize]| {
            let mut v = vec![n];
            v.extend_from_slice(rest);
            v
        };
        let (kind, output) = match self {
            Layer::Linear { weight, bias } => {
                let &[i, o] = weight.shape() else { return Err(bad(format!("weight of shape {:?}", weight.shape()))) };
                if input.len() != 2 || input[1] != i {
                    return Err(bad(format!("expects [batch, {i}]")));
                }
                if let Some(b) = bias
                    && b.shape() != [o]
                {
                    return Err(bad(format!("bias of shape {:?}, expected [{o}]", b.shape())));
                }
                (StepKind::Linear { inputs: i, outputs: o, bias: bias.is_some() }, vec![n, o])
            }
            Layer::Conv2d { weight, bias, stride, padding, dilation, groups } => {
                let &[o, c, kh, kw] = weight.shape() else {
                    return Err(bad(format!("weight of shape {:?}", weight.shape())));
                };
                let &[_, ci, _, _] = input else { return Err(bad("expects [batch, c, h, w]".into())) };
                if *groups == 0 || ci != c * groups || o % groups != 0 {
                    return Err(bad(format!("{ci} input channels, weight {:?} in {groups} groups", weight.shape())));
                }
                if let Some(b) = bias
                    && b.shape() != [o]
                {
                    return Err(bad(format!("bias of shape {:?}, expected [{o}]", b.shape())));
                }
                let params = mpc_proto::ring::Conv2dParams {
                    stride: *stride,
                    padding: *padding,
                    dilation: *dilation,
                    groups: *groups,
                };
                let out = params
                    .output_shape(input, weight.shape())
                    .map_err(|_| bad("kernel larger than the padded input, or a zero stride or dilation".into()))?;
                let kind = StepKind::Conv2d {
                    in_channels: ci,
                    out_channels: o,
                    kernel: (kh, kw),
                    stride: *stride,
                    padding: *padding,
                    bias: bias.is_some(),
                    dilation: *dilation,
                    groups: *groups,
                };
                (kind, out.to_vec())
            }
            Layer::Relu => (StepKind::Relu, input.to_vec()),
            Layer::Sigmoid => (StepKind::Sigmoid, input.to_vec()),
            Layer::Softmax => (StepKind::Softmax, input.to_vec()),
            Layer::LogSoftmax => (StepKind::LogSoftmax, input.to_vec()),
            Layer::Act(a) => (StepKind::Act(*a), input.to_vec()),
            Layer::PRelu { slope } => {
                if slope.shape() != per {
                    return Err(bad(format!("slope of shape {:?}, expected the sample's {per:?}", slope.shape())));
                }
                (StepKind::PRelu, input.to_vec())
            }
            Layer::MaxPool { kernel, stride, padding, ceil_mode }
            | Layer::AvgPool { kernel, stride, padding, ceil_mode, .. } => {
                let &[_, c, h, w] = input else { return Err(bad("expects [batch, c, h, w]".into())) };
                let (Some(oh), Some(ow)) = (
                    pool_out_len(h, kernel.0, stride.0, padding.0, *ceil_mode),
                    pool_out_len(w, kernel.1, stride.1, padding.1, *ceil_mode),
                ) else {
                    return Err(bad("window larger than the padded input".into()));
                };
                if padding.0 >= kernel.0 || padding.1 >= kernel.1 {
                    return Err(bad("padding must be smaller than the window".into()));
                }
                let kind = match self {
                    Layer::MaxPool { .. } => {
                        StepKind::MaxPool { kernel: *kernel, stride: *stride, padding: *padding, ceil_mode: *ceil_mode }
                    }
                    Layer::AvgPool { count_include_pad, .. } => StepKind::AvgPool {
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                        count_include_pad: *count_include_pad,
                        ceil_mode: *ceil_mode,
                    },
                    _ => unreachable!(),
                };
                (kind, vec![n, c, oh, ow])
            }
            Layer::GlobalAvgPool | Layer::GlobalSumPool => {
                let &[_, c, _, _] = input else { return Err(bad("expects [batch, c, h, w]".into())) };
                let kind = if matches!(self, Layer::GlobalAvgPool) {
                    StepKind::GlobalAvgPool
                } else {
                    StepKind::GlobalSumPool
                };
                (kind, vec![n, c, 1, 1])
            }
            Layer::Flatten => (StepKind::Flatten, vec![n, per.iter().product()]),
            Layer::Reshape { shape } => {
                if shape.iter().product::<usize>() != per.iter().product::<usize>() {
                    return Err(bad(format!("cannot reshape to {shape:?}")));
                }
                (StepKind::Reshape, with_batch(shape))
            }
            Layer::Affine { scale, shift } => {
                if scale.shape() != per || shift.shape() != per {
                    return Err(bad(format!("affine constants of shape {:?}/{:?}", scale.shape(), shift.shape())));
                }
                (StepKind::Affine, input.to_vec())
            }
            Layer::Add | Layer::Sub | Layer::Mul => {
                let other = inputs[1];
                if other.first() != Some(&n) {
                    return Err(bad(format!("second input {other:?} has another batch size")));
                }
                let out = ops::broadcast_shape(per, &other[1..])
                    .ok_or_else(|| bad(format!("second input {other:?} does not broadcast")))?;
                let kind = match self {
                    Layer::Add => StepKind::Add,
                    Layer::Sub => StepKind::Sub,
                    _ => StepKind::Mul,
                };
                (kind, with_batch(&out))
            }
            Layer::Concat { axis } => {
                if *axis >= per.len() {
                    return Err(bad(format!("axis {axis} of a rank-{} sample", per.len())));
                }
                let mut out = per.to_vec();
                out[*axis] = 0;
                for t in inputs {
                    let same = t.len() == input.len()
                        && t[0] == n
                        && t[1..].iter().zip(per).enumerate().all(|(i, (a, b))| i == *axis || a == b);
                    if !same {
                        return Err(bad(format!("input {t:?} differs off axis {axis}")));
                    }
                    out[*axis] += t[1 + axis];
                }
                (StepKind::Concat { axis: *axis }, with_batch(&out))
            }
            Layer::Slice { axis, start, end, step } => {
                if *axis >= per.len() || *step == 0 || start >= end || *end > per[*axis] {
                    return Err(bad(format!("slice {start}..{end} step {step} of axis {axis}")));
                }
                let (out, _) = ops::slice_map(per, *axis, *start, *end, *step);
                (StepKind::Slice { axis: *axis, start: *start, end: *end, step: *step }, with_batch(&out))
            }
            Layer::Pad { begin, end, dilate, value } => {
                if begin.len() != per.len()
                    || end.len() != per.len()
                    || dilate.len() != per.len()
                    || dilate.contains(&0)
                {
                    return Err(bad(format!("padding {begin:?}/{end:?}/{dilate:?} for a rank-{} sample", per.len())));
                }
                let out: Option<Vec<usize>> = (0..per.len())
                    .map(|i| (per[i] - 1).checked_mul(dilate[i])?.checked_add(1 + begin[i])?.checked_add(end[i]))
                    .collect();
                let out = out.ok_or_else(|| bad(format!("padding {begin:?}/{end:?} overflows")))?;
                let kind =
                    StepKind::Pad { begin: begin.clone(), end: end.clone(), dilate: dilate.clone(), value: *value };
                (kind, with_batch(&out))
            }
            Layer::Transpose { perm } => {
                let mut seen = perm.clone();
                seen.sort_unstable();
                if seen != (0..per.len()).collect::<Vec<_>>() {
                    return Err(bad(format!("permutation {perm:?} of a rank-{} sample", per.len())));
                }
                let out: Vec<usize> = perm.iter().map(|&p| per[p]).collect();
                (StepKind::Transpose { perm: perm.clone() }, with_batch(&out))
            }
        };
        Ok(Step { kind, inputs: vec![], input: input.to_vec(), output, compare: None })
    }

    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            Layer::Linear { .. } => "linear",
            Layer::Conv2d { .. } => "conv2d",
            Layer::Relu => "relu",
            Layer::MaxPool { .. } => "maxpool",
            Layer::AvgPool { .. } => "avgpool",
            Layer::GlobalAvgPool => "globalavgpool",
            Layer::GlobalSumPool => "globalsumpool",
            Layer::Flatten => "flatten",
            Layer::Reshape { .. } => "reshape",
            Layer::Affine { .. } => "affine",
            Layer::Softmax => "softmax",
            Layer::Sigmoid => "sigmoid",
            Layer::Add => "add",
            Layer::Sub => "sub",
            Layer::Mul => "mul",
            Layer::Concat { .. } => "concat",
            Layer::Slice { .. } => "slice",
            Layer::Pad { .. } => "pad",
            Layer::Transpose { .. } => "transpose",
            Layer::Act(a) => a.name(),
            Layer::PRelu { .. } => "prelu",
            Layer::LogSoftmax => "logsoftmax",
        }
    }

    /// The plaintext f64 reference of a layer that reads one tensor.
    pub fn eval_plain(&self, x: &ArrayD<f64>) -> ArrayD<f64> {
        self.eval_plain_on(&[x])
    }

    /// The plaintext f64 reference of this layer on its inputs.
    pub fn eval_plain_on(&self, xs: &[&ArrayD<f64>]) -> ArrayD<f64> {
        let x = xs[0];
        match self {
            Layer::Linear { weight, bias } => {
                let y = plain::matmul(x, weight);
                match bias {
                    Some(b) => &y + b,
                    None => y,
                }
            }
            Layer::Conv2d { weight, bias, stride, padding, dilation, groups } => {
                let mut y = plain::conv2d_ext(x, weight, *stride, *padding, *dilation, *groups);
                if let Some(b) = bias {
                    for (c, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
                        plane += b[[c]];
                    }
                }
                y
            }
            Layer::Relu => plain::relu(x),
            Layer::Sigmoid => plain::sigmoid(x),
            Layer::Softmax => plain::softmax(x),
            Layer::LogSoftmax => plain::softmax(x).mapv(f64::ln),
            Layer::Act(a) => x.mapv(|v| a.eval(v)),
            Layer::PRelu { slope } => {
                let neg = x.mapv(|v| v.min(0.0));
                plain::relu(x) + &neg * slope
            }
            Layer::MaxPool { kernel, stride, padding, ceil_mode } => {
                plain::max_pool2d_ext(x, *kernel, *stride, *padding, *ceil_mode)
            }
            Layer::AvgPool { kernel, stride, padding, count_include_pad, ceil_mode } => {
                plain::avg_pool2d_ext(x, *kernel, *stride, *padding, *count_include_pad, *ceil_mode)
            }
            Layer::GlobalAvgPool | Layer::GlobalSumPool => {
                let (n, c) = (x.shape()[0], x.shape()[1]);
                let hw = (x.shape()[2] * x.shape()[3]) as f64;
                let s = x.sum_axis(Axis(3)).sum_axis(Axis(2));
                let m = if matches!(self, Layer::GlobalAvgPool) { s / hw } else { s };
                m.into_shape_with_order(IxDyn(&[n, c, 1, 1])).expect("same size")
            }
            Layer::Flatten => {
                let n = x.shape()[0];
                let rest = x.len() / n.max(1);
                x.as_standard_layout().into_owned().into_shape_with_order(IxDyn(&[n, rest])).expect("same size")
            }
            Layer::Reshape { shape } => {
                let mut s = vec![x.shape()[0]];
                s.extend_from_slice(shape);
                x.as_standard_layout().into_owned().into_shape_with_order(IxDyn(&s)).expect("checked by step")
            }
            Layer::Affine { scale, shift } => x * scale + shift,
            Layer::Add => x + xs[1],
            Layer::Sub => x - xs[1],
            Layer::Mul => x * xs[1],
            Layer::Concat { axis } => {
                let views: Vec<_> = xs.iter().map(|a| a.view()).collect();
                ndarray::concatenate(Axis(axis + 1), &views).expect("checked by step")
            }
            Layer::Slice { axis, start, end, step } => x
                .slice_axis(Axis(axis + 1), ndarray::Slice::new(*start as isize, Some(*end as isize), *step as isize))
                .to_owned(),
            Layer::Pad { begin, end, dilate, value } => {
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
            Layer::Transpose { perm } => {
                let mut p = vec![0];
                p.extend(perm.iter().map(|&a| a + 1));
                x.clone().permuted_axes(IxDyn(&p)).as_standard_layout().into_owned()
            }
        }
    }
}

impl Model {
    /// A chain: layer `i` reads the output of layer `i − 1` (the first, the input).
    pub fn chain(input_shape: Vec<usize>, layers: Vec<Layer>) -> Model {
        let wires = (0..layers.len()).map(|i| vec![i]).collect();
        Model { input_shape, layers, wires }
    }

    /// Whether every layer reads the previous layer's output only.
    pub fn is_chain(&self) -> bool {
        self.wires.iter().enumerate().all(|(i, w)| w.as_slice() == [i])
    }

    /// The public plan for `batch` samples, with default [`PlanOptions`] (comparison methods
    /// by the cost model on the default link, widest comparison windows).
    pub fn plan(&self, batch: usize, output: OutputPolicy, fixed: FixedPoint) -> Result<Plan, ModelError> {
        self.plan_with(batch, output, fixed, PlanOptions::default())
    }

    /// The steps of the model for `batch` samples (no comparison settings yet).
    pub(crate) fn steps(&self, batch: usize) -> Result<Vec<Step>, ModelError> {
        if self.wires.len() != self.layers.len() {
            return Err(ModelError::Invalid(format!(
                "{} layers but {} wire lists",
                self.layers.len(),
                self.wires.len()
            )));
        }
        let mut shapes = vec![vec![batch]];
        shapes[0].extend_from_slice(&self.input_shape);
        let mut steps = Vec::with_capacity(self.layers.len());
        for (i, (layer, wires)) in self.layers.iter().zip(&self.wires).enumerate() {
            if wires.is_empty() || wires.iter().any(|&t| t > i) {
                return Err(ModelError::Invalid(format!(
                    "layer {i} ({}) reads tensors {wires:?}: only the input (0) and earlier layers' outputs (1..={i}) exist",
                    layer.name()
                )));
            }
            if matches!(layer, Layer::LogSoftmax) && i + 1 != self.layers.len() {
                return Err(ModelError::Invalid(format!(
                    "layer {i} is a log-softmax but not the last layer: only a final log-softmax is supported"
                )));
            }
            let ins: Vec<&[usize]> = wires.iter().map(|&t| shapes[t].as_slice()).collect();
            let mut step = layer.step_on(&ins)?;
            step.inputs = wires.clone();
            shapes.push(step.output.clone());
            steps.push(step);
        }
        Ok(steps)
    }

    /// The public plan for `batch` samples with `options`: with a declared input range the
    /// comparison windows narrow to the bounds the weights imply ([`crate::bounds`]).
    pub fn plan_with(
        &self,
        batch: usize,
        output: OutputPolicy,
        fixed: FixedPoint,
        options: PlanOptions,
    ) -> Result<Plan, ModelError> {
        if batch == 0 {
            return Err(ModelError::Invalid("batch size must be at least 1".into()));
        }
        let mut steps = self.steps(batch)?;
        let input = {
            let mut s = vec![batch];
            s.extend_from_slice(&self.input_shape);
            s
        };
        let (bits, out_bits) = bounds::comparison_bits(self, fixed, options.input_range_real(fixed));
        bounds::attach(&mut steps, &bits);
        let mut plan = Plan { version: PLAN_VERSION, input, steps, output, fixed, options, output_compare: None };
        if bounds::output_compares(&plan) {
            // Probabilities run softmax or sigmoid, whose splines need the widest window.
            let widest = mpc_proto::compare::Comparisons::default_bits(fixed);
            let k = if output == OutputPolicy::Probabilities { widest } else { out_bits };
            plan.output_compare = Some(bounds::unresolved(k));
        }
        plan.resolve_methods();
        Ok(plan)
    }

    /// Evaluates the model in plain f64 (the reference for tests and `--verify`).
    pub fn eval_plain(&self, x: &ArrayD<f64>) -> ArrayD<f64> {
        let mut tensors: Vec<Option<ArrayD<f64>>> = vec![Some(x.clone())];
        let last_use = last_uses(&self.wires, 1 + self.layers.len());
        for (i, (layer, wires)) in self.layers.iter().zip(&self.wires).enumerate() {
            let ins: Vec<&ArrayD<f64>> =
                wires.iter().map(|&t| tensors[t].as_ref().expect("kept until its last use")).collect();
            let y = layer.eval_plain_on(&ins);
            for &t in wires {
                if last_use[t] == i {
                    tensors[t] = None;
                }
            }
            tensors.push(Some(y));
        }
        tensors.pop().flatten().unwrap_or_else(|| x.clone())
    }
}

/// For each tensor, the index of the last layer that reads it (`usize::MAX`: none, or the
/// output).
pub(crate) fn last_uses(wires: &[Vec<usize>], tensors: usize) -> Vec<usize> {
    let mut last = vec![usize::MAX; tensors];
    for (i, w) in wires.iter().enumerate() {
        for &t in w {
            last[t] = i;
        }
    }
    last
}

/// The fractional bits that keep a model's logits within 10^-3 of their scale: 16 for shallow
/// networks (at most 4 weighted layers — linear, convolution, affine, secret products — on any
/// path from input to output), 20 for deeper ones, where the 2^-16 rounding of every
/// truncation, amplified through the layers, exceeds that (MobileNetV2: 2·10^-2 at 16 bits,
/// 10^-3 at 20; a 6-layer VGG: 7.6·10^-3 and 5·10^-4).
///
/// **Not the nodes' default**, which stays 16: local truncation's rare wrap (probability
/// `2^(ℓ+1−64)` per product, ℓ = log2|v| + 2f) is 2^8 times likelier at 20 bits, and measured
/// on 500 random CIFAR rows through ResNet-20 it corrupted 4 rows at 20 bits and none at 16
/// (where the largest logit error was 7.2·10^-3 and every class matched onnxruntime). Use 20
/// (`--frac-bits 20`) for tight logits on a few rows; docs/security.md has the trade-off.
pub fn recommended_frac_bits(model: &Model) -> u32 {
    let mut depth = vec![0usize; model.layers.len() + 1];
    for (i, (layer, wires)) in model.layers.iter().zip(&model.wires).enumerate() {
        let weighted = matches!(
            layer,
            Layer::Linear { .. } | Layer::Conv2d { .. } | Layer::Affine { .. } | Layer::Mul | Layer::PRelu { .. }
        );
        depth[i + 1] =
            wires.iter().map(|&t| depth.get(t).copied().unwrap_or(0)).max().unwrap_or(0) + usize::from(weighted);
    }
    if depth.into_iter().max().unwrap_or(0) > 4 { 20 } else { 16 }
}
