//! The seam between model code and the secure-computation engine.
//!
//! Everything in this crate that computes on secret shares — layers, inference, training,
//! analytics — reaches the engine through [`Backend`], never through a concrete party type.
//! Today's [`Party`] (additive sharing over Z_2^64 with dealer-made or test correlations)
//! implements it; another engine (a different sharing scheme, or an instrumented wrapper for
//! tests) implements the same methods and runs the same model code unchanged.
//!
//! The methods mirror [`Party`]'s and keep its contract: every party of a session makes the
//! same calls in the same order with the same public arguments, and each method's rounds,
//! bytes and error are documented on the `Party` method of the same name. The asynchronous
//! ones return boxed futures so the trait can be used as `dyn Backend`.

use mpc_proto::approx::Spline;
use mpc_proto::compare::Comparisons;
use mpc_proto::correlations::Bilinear;
use mpc_proto::transport::BoxFuture;
use mpc_proto::{AShare, FixedPoint, Party, PartyId, PreopenedWeights, Result, RingTensor, Stats, Truncation};

/// A secure-computation engine as model code uses it (see the [module docs](self)).
pub trait Backend: Send {
    // ----- the session -----

    /// This party's id.
    fn id(&self) -> PartyId;
    /// The session's fixed-point format.
    fn fixed(&self) -> FixedPoint;
    /// Rounds and bytes so far.
    fn stats(&self) -> &Stats;
    /// Whether shares here are shape-only placeholders (the dealer, an offline pass).
    fn placeholder(&self) -> bool;
    /// Whether an earlier error poisoned this party.
    fn is_poisoned(&self) -> bool;
    /// Aborts the session: tells the peers (best effort) and poisons this party.
    fn abort(&mut self) -> BoxFuture<'_, ()>;
    /// The comparison settings in force.
    fn comparisons(&self) -> Comparisons;
    /// Sets the comparison settings for what follows (part of the program).
    fn set_comparisons(&mut self, c: Comparisons) -> Result<()>;
    /// How fixed-point products are truncated now.
    fn truncation(&self) -> Truncation;
    /// Sets how the products that follow are truncated (part of the program).
    fn set_truncation(&mut self, t: Truncation);

    // ----- input and output -----

    /// Shares `value` (held by `owner`) of public `shape`.
    fn share_input(&mut self, owner: PartyId, shape: &[usize], value: Option<&RingTensor>) -> Result<AShare>;
    /// Reveals `x` to `to` only (`Some` there).
    fn reveal_to<'a>(&'a mut self, to: PartyId, x: &'a AShare) -> BoxFuture<'a, Result<Option<RingTensor>>>;

    // ----- local (no communication) -----

    /// `x + c` for a public `c`.
    fn add_public(&self, x: &AShare, c: &RingTensor) -> Result<AShare>;
    /// `x · k` for a public real `k` (fixed point, truncated).
    fn mul_const(&self, x: &AShare, k: f64) -> Result<AShare>;
    /// `x >> bits` (local truncation).
    fn trunc(&self, x: &AShare, bits: u32) -> AShare;
    /// `1 − b` for a shared bit `b`.
    fn one_minus(&self, b: &AShare) -> Result<AShare>;
    /// Sum pooling over windows.
    fn sum_pool2d(
        &self,
        x: &AShare,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<AShare>;
    /// Average pooling over windows (public divisor).
    fn avg_pool2d(
        &self,
        x: &AShare,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<AShare>;

    // ----- products -----

    /// Elementwise product, ring semantics.
    fn mul<'a>(&'a mut self, x: &'a AShare, y: &'a AShare) -> BoxFuture<'a, Result<AShare>>;
    /// Elementwise product of fixed-point values (truncated).
    fn mul_fixed<'a>(&'a mut self, x: &'a AShare, y: &'a AShare) -> BoxFuture<'a, Result<AShare>>;
    /// Matrix product, ring semantics.
    fn matmul<'a>(&'a mut self, x: &'a AShare, y: &'a AShare) -> BoxFuture<'a, Result<AShare>>;
    /// Matrix product of fixed-point values (truncated).
    fn matmul_fixed<'a>(&'a mut self, x: &'a AShare, y: &'a AShare) -> BoxFuture<'a, Result<AShare>>;
    /// Opens the masked weights of a model once, for products with many inputs.
    fn preopen_many<'a>(
        &'a mut self,
        items: &'a [(Bilinear, &'a AShare)],
    ) -> BoxFuture<'a, Result<Vec<PreopenedWeights>>>;
    /// `f(x, W)` for pre-opened weights.
    fn apply_preopened<'a>(
        &'a mut self,
        x: &'a AShare,
        w: &'a PreopenedWeights,
        trunc: bool,
    ) -> BoxFuture<'a, Result<AShare>>;
    /// Several [`Backend::apply_preopened`] in one round.
    fn apply_preopened_many<'a>(
        &'a mut self,
        items: &'a [(&'a AShare, &'a PreopenedWeights)],
        trunc: bool,
    ) -> BoxFuture<'a, Result<Vec<AShare>>>;

    // ----- comparisons and approximations -----

    /// Shares of `[x < c]` for a public `c`.
    fn lt_public<'a>(&'a mut self, x: &'a AShare, c: &'a RingTensor) -> BoxFuture<'a, Result<AShare>>;
    /// `max(x, 0)`.
    fn relu<'a>(&'a mut self, x: &'a AShare) -> BoxFuture<'a, Result<AShare>>;
    /// `max(x, 0)` and the bit `[x ≥ 0]`.
    fn relu_with_bit<'a>(&'a mut self, x: &'a AShare) -> BoxFuture<'a, Result<(AShare, AShare)>>;
    /// A public piecewise-linear function of `x`.
    fn spline<'a>(&'a mut self, x: &'a AShare, s: &'a Spline) -> BoxFuture<'a, Result<AShare>>;
    /// The logistic function.
    fn sigmoid<'a>(&'a mut self, x: &'a AShare) -> BoxFuture<'a, Result<AShare>>;
    /// Softmax over the last axis.
    fn softmax<'a>(&'a mut self, x: &'a AShare) -> BoxFuture<'a, Result<AShare>>;
    /// Maximum along `axis`.
    fn max<'a>(&'a mut self, x: &'a AShare, axis: usize) -> BoxFuture<'a, Result<AShare>>;
    /// One-hot argmax over the last axis.
    fn argmax<'a>(&'a mut self, x: &'a AShare) -> BoxFuture<'a, Result<AShare>>;
    /// Max pooling (with ONNX `ceil_mode`).
    fn maxpool2d_ceil<'a>(
        &'a mut self,
        x: &'a AShare,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        ceil_mode: bool,
    ) -> BoxFuture<'a, Result<AShare>>;
}

impl Backend for Party {
    fn id(&self) -> PartyId {
        Party::id(self)
    }
    fn fixed(&self) -> FixedPoint {
        Party::fixed(self)
    }
    fn stats(&self) -> &Stats {
        Party::stats(self)
    }
    fn placeholder(&self) -> bool {
        Party::placeholder(self)
    }
    fn is_poisoned(&self) -> bool {
        Party::is_poisoned(self)
    }
    fn abort(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(Party::abort(self))
    }
    fn comparisons(&self) -> Comparisons {
        Party::comparisons(self)
    }
    fn set_comparisons(&mut self, c: Comparisons) -> Result<()> {
        Party::set_comparisons(self, c)
    }
    fn truncation(&self) -> Truncation {
        Party::truncation(self)
    }
    fn set_truncation(&mut self, t: Truncation) {
        Party::set_truncation(self, t)
    }

    fn share_input(&mut self, owner: PartyId, shape: &[usize], value: Option<&RingTensor>) -> Result<AShare> {
        Party::share_input(self, owner, shape, value)
    }
    fn reveal_to<'a>(&'a mut self, to: PartyId, x: &'a AShare) -> BoxFuture<'a, Result<Option<RingTensor>>> {
        Box::pin(Party::reveal_to(self, to, x))
    }

    fn add_public(&self, x: &AShare, c: &RingTensor) -> Result<AShare> {
        Party::add_public(self, x, c)
    }
    fn mul_const(&self, x: &AShare, k: f64) -> Result<AShare> {
        Party::mul_const(self, x, k)
    }
    fn trunc(&self, x: &AShare, bits: u32) -> AShare {
        Party::trunc(self, x, bits)
    }
    fn one_minus(&self, b: &AShare) -> Result<AShare> {
        Party::one_minus(self, b)
    }
    fn sum_pool2d(
        &self,
        x: &AShare,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<AShare> {
        Party::sum_pool2d(self, x, kernel, stride, padding)
    }
    fn avg_pool2d(
        &self,
        x: &AShare,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<AShare> {
        Party::avg_pool2d(self, x, kernel, stride, padding)
    }

    fn mul<'a>(&'a mut self, x: &'a AShare, y: &'a AShare) -> BoxFuture<'a, Result<AShare>> {
        Box::pin(Party::mul(self, x, y))
    }
    fn mul_fixed<'a>(&'a mut self, x: &'a AShare, y: &'a AShare) -> BoxFuture<'a, Result<AShare>> {
        Box::pin(Party::mul_fixed(self, x, y))
    }
    fn matmul<'a>(&'a mut self, x: &'a AShare, y: &'a AShare) -> BoxFuture<'a, Result<AShare>> {
        Box::pin(Party::matmul(self, x, y))
    }
    fn matmul_fixed<'a>(&'a mut self, x: &'a AShare, y: &'a AShare) -> BoxFuture<'a, Result<AShare>> {
        Box::pin(Party::matmul_fixed(self, x, y))
    }
    fn preopen_many<'a>(
        &'a mut self,
        items: &'a [(Bilinear, &'a AShare)],
    ) -> BoxFuture<'a, Result<Vec<PreopenedWeights>>> {
        Box::pin(Party::preopen_many(self, items))
    }
    fn apply_preopened<'a>(
        &'a mut self,
        x: &'a AShare,
        w: &'a PreopenedWeights,
        trunc: bool,
    ) -> BoxFuture<'a, Result<AShare>> {
        Box::pin(Party::apply_preopened(self, x, w, trunc))
    }
    fn apply_preopened_many<'a>(
        &'a mut self,
        items: &'a [(&'a AShare, &'a PreopenedWeights)],
        trunc: bool,
    ) -> BoxFuture<'a, Result<Vec<AShare>>> {
        Box::pin(Party::apply_preopened_many(self, items, trunc))
    }

    fn lt_public<'a>(&'a mut self, x: &'a AShare, c: &'a RingTensor) -> BoxFuture<'a, Result<AShare>> {
        Box::pin(Party::lt_public(self, x, c))
    }
    fn relu<'a>(&'a mut self, x: &'a AShare) -> BoxFuture<'a, Result<AShare>> {
        Box::pin(Party::relu(self, x))
    }
    fn relu_with_bit<'a>(&'a mut self, x: &'a AShare) -> BoxFuture<'a, Result<(AShare, AShare)>> {
        Box::pin(Party::relu_with_bit(self, x))
    }
    fn spline<'a>(&'a mut self, x: &'a AShare, s: &'a Spline) -> BoxFuture<'a, Result<AShare>> {
        Box::pin(Party::spline(self, x, s))
    }
    fn sigmoid<'a>(&'a mut self, x: &'a AShare) -> BoxFuture<'a, Result<AShare>> {
        Box::pin(Party::sigmoid(self, x))
    }
    fn softmax<'a>(&'a mut self, x: &'a AShare) -> BoxFuture<'a, Result<AShare>> {
        Box::pin(Party::softmax(self, x))
    }
    fn max<'a>(&'a mut self, x: &'a AShare, axis: usize) -> BoxFuture<'a, Result<AShare>> {
        Box::pin(Party::max(self, x, axis))
    }
    fn argmax<'a>(&'a mut self, x: &'a AShare) -> BoxFuture<'a, Result<AShare>> {
        Box::pin(Party::argmax(self, x))
    }
    fn maxpool2d_ceil<'a>(
        &'a mut self,
        x: &'a AShare,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        ceil_mode: bool,
    ) -> BoxFuture<'a, Result<AShare>> {
        Box::pin(Party::maxpool2d_ceil(self, x, kernel, stride, padding, ceil_mode))
    }
}
