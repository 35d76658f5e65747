//! Models (the owner's plaintext network) and plans (the public op list all parties derive).
//!
//! A [`Model`] is a chain of [`Layer`]s with their weights: what the model owner holds. A
//! [`Plan`] is the same chain with the weights removed and every shape fixed for one batch size:
//! what the three parties agree on (by [`Plan::hash`]) before any share moves. The architecture,
//! the shapes, the fixed-point format and the output policy are public; the weights are not.

use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use mpc_proto::FixedPoint;

use crate::bounds::{self, CompareSpec, PlanOptions};
use crate::error::ModelError;
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
    /// 2-D convolution, NCHW, weights `[out, in, kh, kw]`, groups 1, dilation 1.
    Conv2d {
        /// Weights `[out, in, kh, kw]`.
        weight: ArrayD<f64>,
        /// Optional bias `[out]`.
        bias: Option<ArrayD<f64>>,
        /// Stride.
        stride: (usize, usize),
        /// Symmetric zero padding.
        padding: (usize, usize),
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
    },
    /// Mean over the spatial axes: `[n, c, h, w] → [n, c, 1, 1]`.
    GlobalAvgPool,
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

/// A network: input shape per sample and a chain of layers.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Per-sample input shape (without the batch axis), e.g. `[1, 28, 28]` or `[784]`.
    pub input_shape: Vec<usize>,
    /// The layers, applied in order.
    pub layers: Vec<Layer>,
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
    },
    /// See [`Layer::GlobalAvgPool`].
    GlobalAvgPool,
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
            StepKind::Flatten => "flatten",
            StepKind::Reshape => "reshape",
            StepKind::Affine => "affine",
            StepKind::Softmax => "softmax",
            StepKind::Sigmoid => "sigmoid",
        }
    }
}

/// One step of a plan: what runs and on which shapes (batch axis included).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Step {
    /// The layer kind and its public hyperparameters.
    pub kind: StepKind,
    /// Input shape.
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
pub const PLAN_VERSION: u32 = 2;

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
    /// received): shapes chain, every step's output follows from its input.
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
        let mut cur = self.input.clone();
        if cur.is_empty() || cur[0] == 0 {
            return Err(ModelError::Invalid("plan input needs a batch axis".into()));
        }
        for (i, st) in self.steps.iter().enumerate() {
            if st.input != cur {
                return Err(ModelError::Invalid(format!(
                    "step {i} ({}) expects {:?}, gets {cur:?}",
                    st.kind.name(),
                    st.input
                )));
            }
            if st.output.first() != cur.first() || st.output.iter().product::<usize>() == 0 {
                return Err(ModelError::Invalid(format!(
                    "step {i} ({}) has a bad output shape {:?}",
                    st.kind.name(),
                    st.output
                )));
            }
            cur = st.output.clone();
        }
        Ok(())
    }
}

fn pool_out(h: usize, k: usize, s: usize, p: usize) -> Option<usize> {
    (k > 0 && s > 0 && h + 2 * p >= k).then(|| (h + 2 * p - k) / s + 1)
}

impl Layer {
    /// The public step for this layer on input shape `input` (batch included), or a shape error.
    pub fn step(&self, input: &[usize]) -> Result<Step, ModelError> {
        let bad = |what: String| ModelError::Shape { layer: self.name().into(), input: input.to_vec(), detail: what };
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
                (StepKind::Linear { inputs: i, outputs: o, bias: bias.is_some() }, vec![input[0], o])
            }
            Layer::Conv2d { weight, bias, stride, padding } => {
                let &[o, c, kh, kw] = weight.shape() else {
                    return Err(bad(format!("weight of shape {:?}", weight.shape())));
                };
                let &[n, ci, h, w] = input else { return Err(bad("expects [batch, c, h, w]".into())) };
                if ci != c {
                    return Err(bad(format!("{ci} input channels, weight expects {c}")));
                }
                if let Some(b) = bias
                    && b.shape() != [o]
                {
                    return Err(bad(format!("bias of shape {:?}, expected [{o}]", b.shape())));
                }
                let (Some(oh), Some(ow)) = (pool_out(h, kh, stride.0, padding.0), pool_out(w, kw, stride.1, padding.1))
                else {
                    return Err(bad("kernel larger than the padded input".into()));
                };
                let kind = StepKind::Conv2d {
                    in_channels: c,
                    out_channels: o,
                    kernel: (kh, kw),
                    stride: *stride,
                    padding: *padding,
                    bias: bias.is_some(),
                };
                (kind, vec![n, o, oh, ow])
            }
            Layer::Relu => (StepKind::Relu, input.to_vec()),
            Layer::Sigmoid => (StepKind::Sigmoid, input.to_vec()),
            Layer::Softmax => (StepKind::Softmax, input.to_vec()),
            Layer::MaxPool { kernel, stride, padding } | Layer::AvgPool { kernel, stride, padding, .. } => {
                let &[n, c, h, w] = input else { return Err(bad("expects [batch, c, h, w]".into())) };
                let (Some(oh), Some(ow)) =
                    (pool_out(h, kernel.0, stride.0, padding.0), pool_out(w, kernel.1, stride.1, padding.1))
                else {
                    return Err(bad("window larger than the padded input".into()));
                };
                if padding.0 >= kernel.0 || padding.1 >= kernel.1 {
                    return Err(bad("padding must be smaller than the window".into()));
                }
                let kind = match self {
                    Layer::MaxPool { .. } => StepKind::MaxPool { kernel: *kernel, stride: *stride, padding: *padding },
                    Layer::AvgPool { count_include_pad, .. } => StepKind::AvgPool {
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                        count_include_pad: *count_include_pad,
                    },
                    _ => unreachable!(),
                };
                (kind, vec![n, c, oh, ow])
            }
            Layer::GlobalAvgPool => {
                let &[n, c, _, _] = input else { return Err(bad("expects [batch, c, h, w]".into())) };
                (StepKind::GlobalAvgPool, vec![n, c, 1, 1])
            }
            Layer::Flatten => (StepKind::Flatten, vec![input[0], input[1..].iter().product()]),
            Layer::Reshape { shape } => {
                if shape.iter().product::<usize>() != input[1..].iter().product::<usize>() {
                    return Err(bad(format!("cannot reshape to {shape:?}")));
                }
                let mut out = vec![input[0]];
                out.extend_from_slice(shape);
                (StepKind::Reshape, out)
            }
            Layer::Affine { scale, shift } => {
                if scale.shape() != &input[1..] || shift.shape() != &input[1..] {
                    return Err(bad(format!("affine constants of shape {:?}/{:?}", scale.shape(), shift.shape())));
                }
                (StepKind::Affine, input.to_vec())
            }
        };
        Ok(Step { kind, input: input.to_vec(), output, compare: None })
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
            Layer::Flatten => "flatten",
            Layer::Reshape { .. } => "reshape",
            Layer::Affine { .. } => "affine",
            Layer::Softmax => "softmax",
            Layer::Sigmoid => "sigmoid",
        }
    }

    /// The plaintext f64 reference of this layer.
    pub fn eval_plain(&self, x: &ArrayD<f64>) -> ArrayD<f64> {
        match self {
            Layer::Linear { weight, bias } => {
                let y = plain::matmul(x, weight);
                match bias {
                    Some(b) => &y + b,
                    None => y,
                }
            }
            Layer::Conv2d { weight, bias, stride, padding } => {
                let mut y = plain::conv2d(x, weight, *stride, *padding);
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
            Layer::MaxPool { kernel, stride, padding } => plain::max_pool2d(x, *kernel, *stride, *padding),
            Layer::AvgPool { kernel, stride, padding, count_include_pad } => {
                if *count_include_pad || *padding == (0, 0) {
                    plain::avg_pool2d(x, *kernel, *stride, *padding)
                } else {
                    let ones = ArrayD::from_elem(IxDyn(x.shape()), 1.0);
                    let counts = plain::avg_pool2d(&ones, *kernel, *stride, *padding);
                    plain::avg_pool2d(x, *kernel, *stride, *padding) / counts
                }
            }
            Layer::GlobalAvgPool => {
                let (n, c) = (x.shape()[0], x.shape()[1]);
                let hw = (x.shape()[2] * x.shape()[3]) as f64;
                let m = x.sum_axis(Axis(3)).sum_axis(Axis(2)) / hw;
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
        }
    }
}

impl Model {
    /// The public plan for `batch` samples, with default [`PlanOptions`] (comparison methods
    /// by the cost model on the default link, widest comparison windows).
    pub fn plan(&self, batch: usize, output: OutputPolicy, fixed: FixedPoint) -> Result<Plan, ModelError> {
        self.plan_with(batch, output, fixed, PlanOptions::default())
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
        let mut shape = vec![batch];
        shape.extend_from_slice(&self.input_shape);
        let input = shape.clone();
        let mut steps = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let step = layer.step(&shape)?;
            shape = step.output.clone();
            steps.push(step);
        }
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
        self.layers.iter().fold(x.clone(), |acc, l| l.eval_plain(&acc))
    }
}
