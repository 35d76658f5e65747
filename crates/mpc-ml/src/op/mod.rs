//! The operator registry: every graph operator is one type implementing [`Operator`], which
//! owns everything about it — its public hyperparameters (what a plan records and hashes), the
//! public shapes of its weights, its shape inference, its `f64` plaintext reference, its value
//! bound and comparison window for the plan's interval analysis, its cost-model view, its
//! private evaluation over shares, and its ONNX import rules and export.
//!
//! [`Op`] is the closed set of registered operators: one enum variant per type, generated with
//! the forwarding `impl Operator for Op` by one macro, so adding an operator is one new type and
//! one line in `registry!` — never another arm in a dozen matches. A model's [`Layer`](crate::Layer) is an
//! [`Op`] with its weights; a plan's [`Step`] is an [`Op`] with its shapes.
//!
//! The modules group the operators by how they run privately:
//! * [`linear`] — [`Linear`], [`Conv2d`]: matrix Beaver with pre-opened weights, one round;
//! * [`act`] — [`Relu`], [`Act`] (splines), [`PRelu`], [`Sigmoid`], [`Softmax`],
//!   [`LogSoftmax`]: comparison layers;
//! * [`pool`] — [`MaxPool`] (comparison trees), [`AvgPool`], [`GlobalAvgPool`],
//!   [`GlobalSumPool`] (local);
//! * [`arith`] — [`Add`], [`Sub`] (local), [`Mul`] (Beaver), [`Affine`] (a secret scale);
//! * [`shape`] — [`Flatten`], [`Reshape`], [`Concat`], [`Slice`], [`Pad`], [`Transpose`]:
//!   public index maps applied to shares, local.

pub mod act;
pub mod arith;
pub mod linear;
pub mod pool;
pub mod shape;

use crate::backend::Backend;
use mpc_proto::compare::cost::OpShape;
use mpc_proto::correlations::Bilinear;
use mpc_proto::{AShare, FixedPoint, PreopenedWeights, RingTensor};
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

pub use crate::ops::Act;
pub use act::{LogSoftmax, PRelu, Relu, Sigmoid, Softmax};
pub use arith::{Add, Affine, Mul, Sub};
pub use linear::{Conv2d, Linear};
pub use pool::{AvgPool, GlobalAvgPool, GlobalSumPool, MaxPool};
pub use shape::{Concat, Flatten, Pad, Reshape, Slice, Transpose};

use crate::error::ModelError;
use crate::model::Step;
use crate::onnx::ImportError;
use crate::onnx::export::Graph as OnnxGraph;
use crate::onnx::{Ctx as OnnxCtx, proto::NodeProto};

/// How many tensors an operator reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exactly(usize),
    /// One or more (Concat).
    AtLeastOne,
}

impl Arity {
    /// Whether `n` inputs fit.
    pub fn admits(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::AtLeastOne => n >= 1,
        }
    }
}

/// How an operator runs privately: what the evaluation schedule batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runs {
    /// A local function of the shares: no communication.
    Local,
    /// A bilinear map of the input and the first (pre-opened) weight: one round, and steps of
    /// one depth open their inputs together.
    Bilinear(Bilinear),
    /// An elementwise ReLU: steps of one depth with equal comparison settings run as one
    /// comparison layer.
    Relu,
    /// Anything else that communicates, one step at a time.
    Talks,
}

/// What a step's private evaluation works with besides its inputs and weights.
pub struct PrivateCx<'a> {
    /// This party's session (the comparison settings already set from the step's).
    pub party: &'a mut dyn Backend,
    /// The step being evaluated (its shapes and settings).
    pub step: &'a Step,
    /// The pre-opened first weight of a [`Runs::Bilinear`] step.
    pub opened: Option<&'a PreopenedWeights>,
}

/// An ONNX import rule: the operator type it handles and the function that turns such a node
/// into layers of the model being imported.
pub type OnnxRule = (&'static str, fn(&mut OnnxCtx, &NodeProto) -> Result<(), ImportError>);

/// One graph operator (see the module docs). Shapes carry the batch axis first unless a
/// parameter says per-sample.
// Dispatch is static (through `Op`), so the futures' auto traits are those of the concrete
// implementations, all `Send`.
#[allow(async_fn_in_trait)]
pub trait Operator {
    /// Short name for profiles and errors.
    fn name(&self) -> &'static str;

    /// How many tensors it reads.
    fn arity(&self) -> Arity {
        Arity::Exactly(1)
    }

    /// Public shapes of its weights in sharing order, given the per-sample shape of its first
    /// input (none for most operators).
    fn weight_shapes(&self, _per_sample: &[usize]) -> Vec<Vec<usize>> {
        vec![]
    }

    /// Its output shape given its inputs' (batch axes present and equal, arity checked), or
    /// what is wrong. The default is an elementwise operator's: its first input's shape.
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        Ok(inputs[0].to_vec())
    }

    /// The plaintext `f64` reference.
    fn eval_plain(&self, xs: &[&ArrayD<f64>], weights: &[ArrayD<f64>]) -> ArrayD<f64>;

    /// A bound on `|output|` given bounds on its inputs' `|values|`, its weights and its first
    /// input's shape (the plan's interval analysis, [`crate::bounds`]).
    fn bound(&self, bounds: &[f64], _weights: &[ArrayD<f64>], _input: &[usize]) -> f64 {
        bounds[0]
    }

    /// Whether its private evaluation compares (then its plan step carries comparison
    /// settings).
    fn compares(&self) -> bool {
        false
    }

    /// The comparison window it needs for inputs bounded by `bound` (comparing operators).
    fn window(&self, bound: f64, fixed: FixedPoint) -> u8 {
        crate::bounds::window_for(bound, fixed)
    }

    /// The cost model's view of its comparisons at window `bits` (comparing operators).
    fn cost_shape(&self, step: &Step, bits: u8) -> OpShape {
        let n: usize = step.input.iter().product();
        OpShape { elements: n, points: 1, relu: true, bits: u32::from(bits), sequential: 1 }
    }

    /// Whether its private evaluation truncates a product (weights or two secrets): what
    /// accumulates fixed-point rounding along a path ([`crate::model::recommended_frac_bits`]).
    fn truncates(&self) -> bool {
        false
    }

    /// Rounds of exact truncation a step of it adds when the plan truncates exactly
    /// ([`mpc_proto::Truncation::Exact`]): one per sequential product it truncates.
    fn exact_truncations(&self) -> u64 {
        u64::from(self.truncates())
    }

    /// How it runs privately.
    fn runs(&self) -> Runs {
        Runs::Local
    }

    /// Online rounds of one step run on its own, given the rounds `r` of one comparison layer
    /// by the step's method.
    fn rounds(&self, _step: &Step, r: u64) -> u64 {
        match self.runs() {
            Runs::Local => 0,
            Runs::Bilinear(_) => 1,
            Runs::Relu | Runs::Talks => r,
        }
    }

    /// Private evaluation on this party's shares of its inputs and weights (the dealer holds
    /// placeholders, [`AShare::dealer`], and runs the same code).
    async fn eval_private(
        &self,
        cx: &mut PrivateCx<'_>,
        xs: &[&AShare],
        weights: &[AShare],
    ) -> Result<AShare, ModelError>;

    /// The rest of a [`Runs::Bilinear`] step after the batched product `y` (a bias). Local.
    fn finish_bilinear(&self, y: AShare, _weights: &[AShare], _output: &[usize]) -> Result<AShare, ModelError> {
        Ok(y)
    }

    /// Its ONNX import rules.
    const ONNX: &'static [OnnxRule] = &[];

    /// Writes it as ONNX nodes reading `inputs` and writing `output`, with its weights as
    /// initializers; `Err` names why it cannot be written.
    fn to_onnx(
        &self,
        _g: &mut OnnxGraph,
        _inputs: &[String],
        _weights: &[ArrayD<f64>],
        _output: &str,
    ) -> Result<(), String> {
        Err("not written by the exporter".into())
    }
}

/// Defines [`Op`] over the registered operator types, its `From` conversions, the forwarding
/// `Operator` implementation and the ONNX rule table.
macro_rules! registry {
    ($($(#[$doc:meta])* $v:ident($t:ty),)*) => {
        /// A registered operator with its public hyperparameters (see the module docs).
        #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum Op {
            $($(#[$doc])* $v($t),)*
        }

        $(impl From<$t> for Op {
            fn from(op: $t) -> Op {
                Op::$v(op)
            }
        })*

        impl Operator for Op {
            fn name(&self) -> &'static str {
                match self { $(Op::$v(o) => Operator::name(o),)* }
            }
            fn arity(&self) -> Arity {
                match self { $(Op::$v(o) => Operator::arity(o),)* }
            }
            fn weight_shapes(&self, per_sample: &[usize]) -> Vec<Vec<usize>> {
                match self { $(Op::$v(o) => Operator::weight_shapes(o, per_sample),)* }
            }
            fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
                match self { $(Op::$v(o) => Operator::output_shape(o, inputs),)* }
            }
            fn eval_plain(&self, xs: &[&ArrayD<f64>], weights: &[ArrayD<f64>]) -> ArrayD<f64> {
                match self { $(Op::$v(o) => Operator::eval_plain(o, xs, weights),)* }
            }
            fn bound(&self, bounds: &[f64], weights: &[ArrayD<f64>], input: &[usize]) -> f64 {
                match self { $(Op::$v(o) => Operator::bound(o, bounds, weights, input),)* }
            }
            fn compares(&self) -> bool {
                match self { $(Op::$v(o) => Operator::compares(o),)* }
            }
            fn window(&self, bound: f64, fixed: FixedPoint) -> u8 {
                match self { $(Op::$v(o) => Operator::window(o, bound, fixed),)* }
            }
            fn cost_shape(&self, step: &Step, bits: u8) -> OpShape {
                match self { $(Op::$v(o) => Operator::cost_shape(o, step, bits),)* }
            }
            fn truncates(&self) -> bool {
                match self { $(Op::$v(o) => Operator::truncates(o),)* }
            }
            fn exact_truncations(&self) -> u64 {
                match self { $(Op::$v(o) => Operator::exact_truncations(o),)* }
            }
            fn runs(&self) -> Runs {
                match self { $(Op::$v(o) => Operator::runs(o),)* }
            }
            fn rounds(&self, step: &Step, r: u64) -> u64 {
                match self { $(Op::$v(o) => Operator::rounds(o, step, r),)* }
            }
            async fn eval_private(
                &self,
                cx: &mut PrivateCx<'_>,
                xs: &[&AShare],
                weights: &[AShare],
            ) -> Result<AShare, ModelError> {
                match self { $(Op::$v(o) => Operator::eval_private(o, cx, xs, weights).await,)* }
            }
            fn finish_bilinear(&self, y: AShare, weights: &[AShare], output: &[usize]) -> Result<AShare, ModelError> {
                match self { $(Op::$v(o) => Operator::finish_bilinear(o, y, weights, output),)* }
            }
            fn to_onnx(
                &self,
                g: &mut OnnxGraph,
                inputs: &[String],
                weights: &[ArrayD<f64>],
                output: &str,
            ) -> Result<(), String> {
                match self { $(Op::$v(o) => Operator::to_onnx(o, g, inputs, weights, output),)* }
            }
        }

        /// Every registered ONNX import rule.
        pub(crate) fn onnx_rules() -> impl Iterator<Item = &'static OnnxRule> {
            [$(<$t as Operator>::ONNX,)*].into_iter().flatten()
        }
    };
}

registry! {
    /// See [`Linear`].
    Linear(Linear),
    /// See [`Conv2d`].
    Conv2d(Conv2d),
    /// See [`Relu`].
    Relu(Relu),
    /// See [`Act`].
    Act(Act),
    /// See [`PRelu`].
    PRelu(PRelu),
    /// See [`Sigmoid`].
    Sigmoid(Sigmoid),
    /// See [`Softmax`].
    Softmax(Softmax),
    /// See [`LogSoftmax`].
    LogSoftmax(LogSoftmax),
    /// See [`MaxPool`].
    MaxPool(MaxPool),
    /// See [`AvgPool`].
    AvgPool(AvgPool),
    /// See [`GlobalAvgPool`].
    GlobalAvgPool(GlobalAvgPool),
    /// See [`GlobalSumPool`].
    GlobalSumPool(GlobalSumPool),
    /// See [`Add`].
    Add(Add),
    /// See [`Sub`].
    Sub(Sub),
    /// See [`Mul`].
    Mul(Mul),
    /// See [`Affine`].
    Affine(Affine),
    /// See [`Flatten`].
    Flatten(Flatten),
    /// See [`Reshape`].
    Reshape(Reshape),
    /// See [`Concat`].
    Concat(Concat),
    /// See [`Slice`].
    Slice(Slice),
    /// See [`Pad`].
    Pad(Pad),
    /// See [`Transpose`].
    Transpose(Transpose),
}

/// A local op on two shares of the same party (the dealer gets a placeholder of `shape`).
pub(crate) fn zip_local(
    x: &AShare,
    b: &AShare,
    shape: &[usize],
    f: impl FnOnce(&RingTensor, &RingTensor) -> mpc_proto::Result<RingTensor>,
) -> Result<AShare, ModelError> {
    Ok(match (x.expose_share(), b.expose_share()) {
        (Ok(xv), Ok(bv)) => AShare::from_share(f(xv, bv)?),
        _ => AShare::dealer(shape),
    })
}

/// A per-sample weight repeated over the batch of `x` (shape `shape`): `[...] → [n, ...]`.
pub(crate) fn per_batch(x: &AShare, w: &AShare, shape: &[usize]) -> Result<AShare, ModelError> {
    let n = shape[0];
    zip_local(x, w, shape, |_, a| {
        let mut s = vec![n];
        s.extend_from_slice(a.shape());
        RingTensor::from_vec(&s, a.as_slice().iter().copied().cycle().take(n * a.len()).collect())
    })
}

/// `shape` with its batch axis `n` put back in front.
pub(crate) fn with_batch(n: usize, rest: &[usize]) -> Vec<usize> {
    let mut v = Vec::with_capacity(rest.len() + 1);
    v.push(n);
    v.extend_from_slice(rest);
    v
}

/// Largest `|value|` of a tensor.
pub(crate) fn max_abs(a: &ArrayD<f64>) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

impl Op {
    /// Short name for profiles and errors (without importing [`Operator`]).
    pub fn name(&self) -> &'static str {
        Operator::name(self)
    }
}
