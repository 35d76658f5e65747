//! Correlated randomness: where Beaver triples come from.
//!
//! [`Correlations`] is the seam between the protocols and the source of their preprocessing
//! material. Two sources ship here:
//!
//! * [`DealerCorrelations`] — the deployed one. P2 (the dealer) shares a seed `s0` with P0 and
//!   `s1` with P1. P0's whole share of every triple is drawn from PRG(`s0`); P1's `a1`, `b1`
//!   from PRG(`s1`); the dealer, who can draw both, sends P1 only the correction
//!   `c1 = f(a, b) − c0`. For an `[m×k]·[k×n]` matrix triple that is `m·n` ring elements, not
//!   `m·k + k·n + m·n` per party, and nothing at all to P0.
//! * [`TestDealer`] — the ideal functionality for unit tests: P0 and P1 run the same generator
//!   from a common seed and keep their own halves; nothing is sent.
//!
//! The dealer runs the same program as P0 and P1 (on shape-only [`AShare`] placeholders), so it
//! produces material in lockstep with the public op sequence without being told what comes
//! next. It never waits for P0 or P1 after setup, so it runs ahead: started early it finishes
//! its offline phase before the online phase needs the material.

use crate::error::{Error, Result};
mod gate;
mod source;
pub mod two_party;

pub use gate::{CompactMaterial, Gate, GateMaterial, GateRequest, HelperBits, HelperMaterial, HelperState};
pub use source::{CorrelationSource, DealerSource, TestSource};
pub use two_party::TwoPartySource;

use crate::fss::{GateKey, PackedKeys};
use crate::ids::PartyId;
use crate::ot::{BitTriples, MuxTriples};
use crate::prg::Prg;
use crate::ring::{Conv2dParams, RingTensor, conv2d, matmul_dims};
use crate::share::AShare;
use crate::transport::{BoxFuture, Channel, FrameKind};

/// A public bilinear map `f(X, Y)` over Z_2^64 for which Beaver triples `(A, B, f(A, B))` exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bilinear {
    /// Elementwise product (same shapes).
    Mul,
    /// Matrix product `[m, k] · [k, n]`.
    MatMul,
    /// Convolution `[n, c, h, w] ⊛ [o, c, kh, kw]`.
    Conv2d(Conv2dParams),
}

impl Bilinear {
    /// Name for statistics.
    pub fn name(&self) -> &'static str {
        match self {
            Bilinear::Mul => "mul",
            Bilinear::MatMul => "matmul",
            Bilinear::Conv2d(_) => "conv2d",
        }
    }

    /// Shape of `f(X, Y)`, or a shape error.
    pub fn output_shape(&self, x: &[usize], y: &[usize]) -> Result<Vec<usize>> {
        match self {
            Bilinear::Mul if x == y => Ok(x.to_vec()),
            Bilinear::Mul => Err(Error::ShapeMismatch { op: "mul", lhs: x.to_vec(), rhs: y.to_vec() }),
            Bilinear::MatMul => matmul_dims(x, y).map(|(m, _, n)| vec![m, n]),
            Bilinear::Conv2d(p) => p.output_shape(x, y).map(|s| s.to_vec()),
        }
    }

    /// `f(x, y)`.
    pub fn apply(&self, x: &RingTensor, y: &RingTensor) -> Result<RingTensor> {
        match self {
            Bilinear::Mul => x.mul(y),
            Bilinear::MatMul => x.matmul(y),
            Bilinear::Conv2d(p) => conv2d(x, y, p),
        }
    }
}

/// One party's share of a Beaver triple `(A, B, C = f(A, B))`.
#[derive(Debug)]
pub struct Triple {
    /// Share of the mask of the left operand.
    pub a: AShare,
    /// Share of the mask of the right operand.
    pub b: AShare,
    /// Share of `f(A, B)`.
    pub c: AShare,
}

/// One party's truncation material for `n` values ([`Request::Trunc`]): shares of a
/// uniform mask `r`, of its top bits `r >> bits` and of its top bit `r >> 63`, as what
/// [`Party::trunc_exact`](crate::Party::trunc_exact) needs. `None` on the dealer and in an
/// offline pass.
pub struct TruncPair {
    /// Number of values.
    pub n: usize,
    /// Shares `(r, r >> bits, r >> 63)`.
    pub parts: Option<[Vec<u64>; 3]>,
}

impl std::fmt::Debug for TruncPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TruncPair({} values)", self.n)
    }
}

/// One party's share of an elementwise triple (`C = A ⊙ B`), as [`Request::MulTriple`]
/// returns it: each part is a tensor, a PRG stream positioned at the part's first word (seed
/// material, drawn as the product reads it, so a large triple is never materialised), or the
/// dealer's frame read in place. `Debug` prints the shape only.
pub struct MulTriple {
    shape: Vec<usize>,
    /// `[a, b, c]`; `None` on the dealer and in a placeholder pass.
    parts: Option<[Words; 3]>,
}

impl std::fmt::Debug for MulTriple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MulTriple({:?})", self.shape)
    }
}

/// Where one part of a [`MulTriple`] comes from.
enum Words {
    Tensor(RingTensor),
    /// The stream at the part's first word (readers are cloned from it: it never moves).
    Seeded(Box<Prg>),
    /// Little-endian words of a received frame from byte offset `.1`.
    Frame(Vec<u8>, usize),
    /// The dealer's correction, not yet received ([`MulTriple::resolve`] receives it): lets
    /// P1 mask and send while the dealer is still producing it.
    FromDealer,
}

/// A chunked reader over one part of a [`MulTriple`].
pub(crate) enum WordReader<'a> {
    Slice(&'a [u64]),
    Prg(Box<Prg>),
    Bytes(&'a [[u8; 8]]),
}

impl WordReader<'_> {
    /// The next `buf.len()` words (the caller tracks the total): borrowed in place where the
    /// part is in memory, generated or decoded into `buf` otherwise.
    pub(crate) fn next<'s>(&'s mut self, buf: &'s mut [u64]) -> &'s [u64] {
        let m = buf.len();
        match self {
            WordReader::Slice(s) => {
                let (head, tail) = s.split_at(m);
                *s = tail;
                head
            }
            WordReader::Prg(p) => {
                p.fill(buf);
                buf
            }
            WordReader::Bytes(b) => {
                let (head, tail) = b.split_at(m);
                *b = tail;
                buf.iter_mut().zip(head).for_each(|(o, w)| *o = u64::from_le_bytes(*w));
                buf
            }
        }
    }
}

impl Words {
    fn reader(&self) -> WordReader<'_> {
        match self {
            Words::Tensor(t) => WordReader::Slice(t.as_slice()),
            Words::Seeded(p) => WordReader::Prg(Box::new(p.reader_at(0))),
            Words::Frame(raw, start) => WordReader::Bytes(raw[*start..].as_chunks::<8>().0),
            Words::FromDealer => unreachable!("a triple is resolved before its correction is read"),
        }
    }

    fn into_tensor(self, shape: &[usize]) -> Result<RingTensor> {
        let n: usize = shape.iter().product();
        match self {
            Words::Tensor(t) => Ok(t),
            Words::Seeded(mut p) => {
                let mut v = vec![0u64; n];
                p.fill(&mut v);
                RingTensor::from_vec(shape, v)
            }
            Words::Frame(raw, start) => {
                RingTensor::from_vec(shape, crate::transport::frame::bytes_to_u64(&raw[start..]))
            }
            Words::FromDealer => unreachable!("a triple is resolved before it is materialised"),
        }
    }
}

impl MulTriple {
    fn placeholder(shape: &[usize]) -> Self {
        MulTriple { shape: shape.to_vec(), parts: None }
    }

    fn from_triple(t: Triple) -> Result<Self> {
        let shape = t.a.shape().to_vec();
        if t.a.is_dealer() {
            return Ok(Self::placeholder(&shape));
        }
        let part = |s: AShare| s.into_share().map(Words::Tensor);
        Ok(MulTriple { shape, parts: Some([part(t.a)?, part(t.b)?, part(t.c)?]) })
    }

    /// The same triple with every part in memory (what a preprocessing pool keeps, so the
    /// online pass does no seed expansion).
    fn materialised(self) -> Result<Self> {
        let Some(parts) = self.parts else { return Ok(self) };
        let [a, b, c] = parts;
        let t = |w: Words| w.into_tensor(&self.shape).map(Words::Tensor);
        Ok(MulTriple { parts: Some([t(a)?, t(b)?, t(c)?]), shape: self.shape })
    }

    /// Receives the dealer's correction if it is still outstanding (P1 of the dealer source).
    /// Call before reading `c`; nothing else may be received from the dealer in between.
    pub async fn resolve(&mut self, ch: &mut Channel) -> Result<()> {
        if let Some([_, _, c @ Words::FromDealer]) = &mut self.parts {
            let n = self.shape.iter().product::<usize>();
            let (raw, start) = ch.recv_frame(PartyId::P2, FrameKind::Material, Some(8 * n)).await?;
            *c = Words::Frame(raw, start);
        }
        Ok(())
    }

    /// The shape of `A`, `B` and `C`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Whether this party holds parts (not the dealer, not a placeholder pass).
    pub(crate) fn has_parts(&self) -> bool {
        self.parts.is_some()
    }

    /// A reader over part `i` (0: `a`, 1: `b`, 2: `c`, which must be resolved first).
    ///
    /// # Panics
    /// Without parts ([`MulTriple::has_parts`]).
    pub(crate) fn reader(&self, i: usize) -> WordReader<'_> {
        self.parts.as_ref().expect("a triple with parts")[i].reader()
    }
}

/// One party's share of a triple whose `B` is fixed (registered once, e.g. model weights).
#[derive(Debug)]
pub struct FixedBTriple {
    /// Share of a fresh mask of the left operand.
    pub a: AShare,
    /// Share of `f(A, B)` for the registered `B`.
    pub c: AShare,
}

/// Handle of a registered fixed `B` (index in registration order, equal on all parties).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FixedBHandle(pub(crate) usize);

/// What a protocol step asks of a correlation source: the kind of material and its public
/// parameters. Every party of a session makes the same requests in the same order (the dealer
/// included); sources rely on that to stay in step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A fresh triple for `op` with operand shapes `x` and `y`.
    Triple {
        /// The bilinear map.
        op: Bilinear,
        /// Shape of the left operand.
        x: Vec<usize>,
        /// Shape of the right operand.
        y: Vec<usize>,
    },
    /// A fresh elementwise triple on `shape` (the same material as a [`Request::Triple`] for
    /// [`Bilinear::Mul`] and in the same place in the parties' streams), in a form the product
    /// reads a chunk at a time ([`MulTriple`]).
    MulTriple {
        /// Shape of `A`, `B` and `C`.
        shape: Vec<usize>,
    },
    /// Registers a fixed random `B` of shape `y` for `op` (e.g. for model weights).
    FixedB {
        /// The bilinear map the `B` serves.
        op: Bilinear,
        /// Shape of `B`.
        y: Vec<usize>,
    },
    /// A fresh `(A, f(A, B))` for a registered `B` and a left operand of shape `x`.
    FixedBTriple {
        /// The registered `B`.
        handle: FixedBHandle,
        /// Shape of the left operand.
        x: Vec<usize>,
    },
    /// Material for a comparison-based operation ([`GateRequest`]; what each party draws and
    /// receives is listed in the `gate` module's table).
    Gate(GateRequest),
    /// `n` Boolean AND triples ([`BitTriples`]; the two-party comparison's gates).
    BitTriples {
        /// Number of triples.
        n: usize,
    },
    /// `n` mux triples ([`MuxTriples`]; the two-party comparison's bit conversion and
    /// selection).
    MuxTriples {
        /// Number of triples.
        n: usize,
    },
    /// Truncation material for `n` values shifted by `bits` ([`TruncPair`]).
    Trunc {
        /// Number of values.
        n: usize,
        /// The shift.
        bits: u32,
    },
}

impl Request {
    /// What is asked for, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Triple { .. } => "triple",
            Request::MulTriple { .. } => "elementwise triple",
            Request::FixedB { .. } => "fixed B",
            Request::FixedBTriple { .. } => "fixed-B triple",
            Request::Gate(_) => "comparison material",
            Request::BitTriples { .. } => "AND triples",
            Request::MuxTriples { .. } => "mux triples",
            Request::Trunc { .. } => "truncation material",
        }
    }
}

/// One party's material for a [`Request`] (the variant of the same name).
#[derive(Debug)]
pub enum Material {
    /// For [`Request::Triple`].
    Triple(Triple),
    /// For [`Request::MulTriple`].
    MulTriple(MulTriple),
    /// For [`Request::FixedB`]: the handle and this party's share of `B`.
    FixedB(FixedBHandle, AShare),
    /// For [`Request::FixedBTriple`].
    FixedBTriple(FixedBTriple),
    /// For [`Request::Gate`].
    Gate(Gate),
    /// For [`Request::BitTriples`].
    BitTriples(BitTriples),
    /// For [`Request::MuxTriples`].
    MuxTriples(MuxTriples),
    /// For [`Request::Trunc`].
    Trunc(TruncPair),
}

impl Material {
    /// Whether this is the material `req` asks for (same kind; shapes are the source's contract).
    fn answers(&self, req: &Request) -> bool {
        matches!(
            (self, req),
            (Material::Triple(_), Request::Triple { .. })
                | (Material::MulTriple(_), Request::MulTriple { .. })
                | (Material::FixedB(..), Request::FixedB { .. })
                | (Material::FixedBTriple(_), Request::FixedBTriple { .. })
                | (Material::Gate(_), Request::Gate(_))
                | (Material::BitTriples(_), Request::BitTriples { .. })
                | (Material::MuxTriples(_), Request::MuxTriples { .. })
                | (Material::Trunc(_), Request::Trunc { .. })
        )
    }

    /// Completes anything still outstanding (a dealer's correction not yet received) and puts
    /// every part in memory: what a preprocessing pool keeps, so that the online pass expands
    /// and receives nothing.
    async fn ready(self, ch: &mut Channel) -> Result<Self> {
        Ok(match self {
            Material::MulTriple(mut t) => {
                t.resolve(ch).await?;
                Material::MulTriple(t.materialised()?)
            }
            Material::Gate(Gate::Helper(mut h)) => {
                h.resolve(ch).await?;
                Material::Gate(Gate::Helper(h))
            }
            other => other,
        })
    }

    /// The shape-only stand-in an offline pass computes on.
    fn placeholder(&self) -> Material {
        match self {
            Material::Triple(t) => Material::Triple(Triple {
                a: AShare::dealer(t.a.shape()),
                b: AShare::dealer(t.b.shape()),
                c: AShare::dealer(t.c.shape()),
            }),
            Material::MulTriple(t) => Material::MulTriple(MulTriple::placeholder(t.shape())),
            Material::FixedB(h, b) => Material::FixedB(*h, AShare::dealer(b.shape())),
            Material::FixedBTriple(t) => {
                Material::FixedBTriple(FixedBTriple { a: AShare::dealer(t.a.shape()), c: AShare::dealer(t.c.shape()) })
            }
            Material::Gate(_) => Material::Gate(Gate::Placeholder),
            Material::BitTriples(t) => Material::BitTriples(BitTriples { n: t.n, x: vec![], y: vec![], z: vec![] }),
            Material::MuxTriples(t) => {
                Material::MuxTriples(MuxTriples { n: t.n, bits: vec![], b: vec![], a: vec![], c: vec![] })
            }
            Material::Trunc(t) => Material::Trunc(TruncPair { n: t.n, parts: None }),
        }
    }
}

/// A source of correlated randomness for one party of one session: one method, one request
/// and one material type for every kind of material.
///
/// Every party of a session calls [`Correlations::fetch`] with the same requests in the same
/// order (the dealer included); implementations rely on that to stay in step. A source that
/// cannot supply a kind says so with [`Error::Unsupported`].
pub trait Correlations: Send {
    /// This party's material for `req`, with whatever traffic the source needs on `ch`.
    fn fetch<'a>(&'a mut self, ch: &'a mut Channel, req: &'a Request) -> BoxFuture<'a, Result<Material>>;

    /// Switches a recording [`Pool`] to replay (see [`Party::begin_online`](crate::Party::begin_online)).
    fn replay(&mut self) -> Result<()> {
        Err(Error::InvalidInput("this correlation source has no preprocessing pool".into()))
    }
}

/// Typed requests, as the protocols make them.
impl dyn Correlations {
    async fn expect(&mut self, ch: &mut Channel, req: Request) -> Result<Material> {
        let m = self.fetch(ch, &req).await?;
        if m.answers(&req) {
            Ok(m)
        } else {
            Err(Error::Desync {
                peer: PartyId::P2,
                detail: format!("the correlation source answered a request for {} with other material", req.name()),
            })
        }
    }

    /// [`Request::Triple`].
    pub(crate) async fn triple(&mut self, ch: &mut Channel, op: Bilinear, x: &[usize], y: &[usize]) -> Result<Triple> {
        match self.expect(ch, Request::Triple { op, x: x.to_vec(), y: y.to_vec() }).await? {
            Material::Triple(t) => Ok(t),
            _ => unreachable!("checked by expect"),
        }
    }

    /// [`Request::MulTriple`].
    pub(crate) async fn mul_triple(&mut self, ch: &mut Channel, shape: &[usize]) -> Result<MulTriple> {
        match self.expect(ch, Request::MulTriple { shape: shape.to_vec() }).await? {
            Material::MulTriple(t) => Ok(t),
            _ => unreachable!("checked by expect"),
        }
    }

    /// [`Request::FixedB`]: the handle and this party's share of `B`.
    pub(crate) async fn register_fixed_b(
        &mut self,
        ch: &mut Channel,
        op: Bilinear,
        y: &[usize],
    ) -> Result<(FixedBHandle, AShare)> {
        match self.expect(ch, Request::FixedB { op, y: y.to_vec() }).await? {
            Material::FixedB(h, b) => Ok((h, b)),
            _ => unreachable!("checked by expect"),
        }
    }

    /// [`Request::FixedBTriple`].
    pub(crate) async fn fixed_b_triple(
        &mut self,
        ch: &mut Channel,
        handle: FixedBHandle,
        x: &[usize],
    ) -> Result<FixedBTriple> {
        match self.expect(ch, Request::FixedBTriple { handle, x: x.to_vec() }).await? {
            Material::FixedBTriple(t) => Ok(t),
            _ => unreachable!("checked by expect"),
        }
    }

    /// [`Request::Gate`].
    pub(crate) async fn gate(&mut self, ch: &mut Channel, req: GateRequest) -> Result<Gate> {
        match self.expect(ch, Request::Gate(req)).await? {
            Material::Gate(g) => Ok(g),
            _ => unreachable!("checked by expect"),
        }
    }

    /// [`Request::BitTriples`].
    pub(crate) async fn bit_triples(&mut self, ch: &mut Channel, n: usize) -> Result<BitTriples> {
        match self.expect(ch, Request::BitTriples { n }).await? {
            Material::BitTriples(t) => Ok(t),
            _ => unreachable!("checked by expect"),
        }
    }

    /// [`Request::MuxTriples`].
    pub(crate) async fn mux_triples(&mut self, ch: &mut Channel, n: usize) -> Result<MuxTriples> {
        match self.expect(ch, Request::MuxTriples { n }).await? {
            Material::MuxTriples(t) => Ok(t),
            _ => unreachable!("checked by expect"),
        }
    }

    /// [`Request::Trunc`].
    pub(crate) async fn trunc_pair(&mut self, ch: &mut Channel, n: usize, bits: u32) -> Result<TruncPair> {
        match self.expect(ch, Request::Trunc { n, bits }).await? {
            Material::Trunc(t) => Ok(t),
            _ => unreachable!("checked by expect"),
        }
    }
}

/// A source's material kind by kind: the dealer-backed sources implement this and get
/// [`Correlations::fetch`] from [`by_kind`].
trait ByKind: Send {
    fn triple<'a>(
        &'a mut self,
        ch: &'a mut Channel,
        op: Bilinear,
        x_shape: &'a [usize],
        y_shape: &'a [usize],
    ) -> BoxFuture<'a, Result<Triple>>;

    /// The default wraps [`ByKind::triple`]; the dealer's source overrides it so that seed
    /// material is drawn as it is read.
    fn mul_triple<'a>(&'a mut self, ch: &'a mut Channel, shape: &'a [usize]) -> BoxFuture<'a, Result<MulTriple>> {
        Box::pin(async move { MulTriple::from_triple(self.triple(ch, Bilinear::Mul, shape, shape).await?) })
    }

    fn register_fixed_b<'a>(
        &'a mut self,
        ch: &'a mut Channel,
        op: Bilinear,
        y_shape: &'a [usize],
    ) -> BoxFuture<'a, Result<(FixedBHandle, AShare)>>;

    fn fixed_b_triple<'a>(
        &'a mut self,
        ch: &'a mut Channel,
        handle: FixedBHandle,
        x_shape: &'a [usize],
    ) -> BoxFuture<'a, Result<FixedBTriple>>;

    fn gate<'a>(&'a mut self, ch: &'a mut Channel, req: GateRequest) -> BoxFuture<'a, Result<Gate>>;

    /// P0 draws its three shares from its seed, P1 draws its share of `r` and receives the
    /// other two (16 bytes per value from the dealer).
    fn trunc_pair<'a>(&'a mut self, ch: &'a mut Channel, n: usize, bits: u32) -> BoxFuture<'a, Result<TruncPair>>;
}

/// [`Correlations::fetch`] for a [`ByKind`] source.
async fn by_kind<S: ByKind + ?Sized>(s: &mut S, ch: &mut Channel, req: &Request) -> Result<Material> {
    Ok(match req {
        Request::Triple { op, x, y } => Material::Triple(s.triple(ch, *op, x, y).await?),
        Request::MulTriple { shape } => Material::MulTriple(s.mul_triple(ch, shape).await?),
        Request::FixedB { op, y } => {
            let (h, b) = s.register_fixed_b(ch, *op, y).await?;
            Material::FixedB(h, b)
        }
        Request::FixedBTriple { handle, x } => Material::FixedBTriple(s.fixed_b_triple(ch, *handle, x).await?),
        Request::Gate(g) => Material::Gate(s.gate(ch, *g).await?),
        Request::Trunc { n, bits } => Material::Trunc(s.trunc_pair(ch, *n, *bits).await?),
        // The two-party comparison's gates: a dealer would rather deal comparison keys.
        Request::BitTriples { .. } | Request::MuxTriples { .. } => {
            return Err(Error::Unsupported { correlations: "dealer-backed", what: req.name() });
        }
    })
}

/// A preprocessing pool around any source: records every request a program makes and the
/// material the source supplies during the offline pass (returning shape-only placeholders),
/// then hands the material out in the same order online, checking that each request is the one
/// recorded.
pub struct Pool {
    inner: Option<Box<dyn Correlations>>,
    stored: std::collections::VecDeque<(Request, Material)>,
    recording: bool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} items, recording: {})", self.stored.len(), self.recording)
    }
}

impl Pool {
    /// A placeholder used while swapping sources.
    pub(crate) fn empty() -> Self {
        Pool { inner: None, stored: Default::default(), recording: false }
    }

    /// Records what `inner` supplies.
    pub(crate) fn recording(inner: Box<dyn Correlations>) -> Self {
        Pool { inner: Some(inner), stored: Default::default(), recording: true }
    }

    async fn record(&mut self, ch: &mut Channel, req: &Request) -> Result<Material> {
        let inner = self.inner.as_mut().ok_or_else(|| Error::InvalidInput("empty correlation pool".into()))?;
        let m = inner.fetch(ch, req).await?.ready(ch).await?;
        let placeholder = m.placeholder();
        self.stored.push_back((req.clone(), m));
        Ok(placeholder)
    }

    fn next(&mut self, req: &Request) -> Result<Material> {
        let desync = |detail: String| Error::Desync { peer: PartyId::P2, detail };
        let (got, m) = self.stored.pop_front().ok_or_else(|| {
            desync(format!("the online pass asks for {} beyond what the offline pass prepared", req.name()))
        })?;
        if got != *req {
            return Err(desync(format!("the online pass asks for {req:?} where the offline pass prepared {got:?}")));
        }
        Ok(m)
    }
}

impl Correlations for Pool {
    fn fetch<'a>(&'a mut self, ch: &'a mut Channel, req: &'a Request) -> BoxFuture<'a, Result<Material>> {
        Box::pin(async move { if self.recording { self.record(ch, req).await } else { self.next(req) } })
    }

    fn replay(&mut self) -> Result<()> {
        self.recording = false;
        Ok(())
    }
}

/// The operation and shape a fixed `B` was registered with.
fn fixed_shape(shapes: &[(Bilinear, Vec<usize>)], handle: FixedBHandle) -> Result<(Bilinear, Vec<usize>)> {
    shapes.get(handle.0).cloned().ok_or_else(|| Error::InvalidInput(format!("unknown fixed-B handle {}", handle.0)))
}

/// The generator both P0's and P1's halves come from. `prg0` feeds P0's half, `prg1` P1's; P1's
/// product share is the correction `f(a, b) − c0`.
struct Generator {
    prg: [Option<Prg>; 2],
    /// The dealer's private randomness (FSS key generation); P0 and P1 must not know it.
    private: Option<Prg>,
    /// Registered fixed `B`s in full (dealer / test dealer only) with their op.
    fixed: Vec<(Bilinear, RingTensor)>,
}

impl Generator {
    fn draw(&mut self, half: usize, shape: &[usize]) -> RingTensor {
        RingTensor::random(shape, self.prg[half].as_mut().expect("generator holds this half's PRG"))
    }

    /// `K` consecutive draws of `n` words from `half`'s stream, as positioned readers (nothing
    /// is generated yet); the stream moves past them as if they had been drawn.
    fn seeded_parts<const K: usize>(&mut self, half: usize, n: usize) -> [Words; K] {
        let s = self.prg[half].as_mut().expect("generator holds this half's PRG");
        let parts = std::array::from_fn(|i| Words::Seeded(Box::new(s.reader_at(i * n))));
        s.skip_words(K * n);
        parts
    }
}

/// Where a party stands in the dealer protocol.
enum Role {
    /// P0: draws its whole share from `s0`.
    P0(Generator),
    /// P1: draws `a1`, `b1` from `s1`, receives `c1` from the dealer.
    P1(Generator),
    /// P2: draws everything, sends corrections to P1.
    Dealer(Generator),
}

/// The seed-compressed dealer (see the module docs). Construct with the seeds agreed at session
/// setup ([`Party::connect`](crate::Party::connect) does this).
pub struct DealerCorrelations {
    role: Role,
    fixed_shapes: Vec<(Bilinear, Vec<usize>)>,
}

impl std::fmt::Debug for DealerCorrelations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DealerCorrelations(..)")
    }
}

const P0: usize = 0;
const P1: usize = 1;

impl DealerCorrelations {
    /// P0's side, from the seed it shares with the dealer.
    pub fn for_p0(s0: Prg) -> Self {
        Self { role: Role::P0(Generator { prg: [Some(s0), None], private: None, fixed: vec![] }), fixed_shapes: vec![] }
    }
    /// P1's side, from the seed it shares with the dealer.
    pub fn for_p1(s1: Prg) -> Self {
        Self { role: Role::P1(Generator { prg: [None, Some(s1)], private: None, fixed: vec![] }), fixed_shapes: vec![] }
    }
    /// The dealer's side, from both seeds and its private PRG (for FSS key generation).
    pub fn for_dealer(s0: Prg, s1: Prg, private: Prg) -> Self {
        Self {
            role: Role::Dealer(Generator { prg: [Some(s0), Some(s1)], private: Some(private), fixed: vec![] }),
            fixed_shapes: vec![],
        }
    }
}

impl Correlations for DealerCorrelations {
    fn fetch<'a>(&'a mut self, ch: &'a mut Channel, req: &'a Request) -> BoxFuture<'a, Result<Material>> {
        Box::pin(by_kind(self, ch, req))
    }
}

impl ByKind for DealerCorrelations {
    fn triple<'a>(
        &'a mut self,
        ch: &'a mut Channel,
        op: Bilinear,
        xs: &'a [usize],
        ys: &'a [usize],
    ) -> BoxFuture<'a, Result<Triple>> {
        Box::pin(async move {
            let zs = op.output_shape(xs, ys)?;
            match &mut self.role {
                Role::P0(g) => {
                    let (a, b, c) = (g.draw(P0, xs), g.draw(P0, ys), g.draw(P0, &zs));
                    Ok(Triple { a: AShare::from_share(a), b: AShare::from_share(b), c: AShare::from_share(c) })
                }
                Role::P1(g) => {
                    let (a, b) = (g.draw(P1, xs), g.draw(P1, ys));
                    let c = ch.recv_u64(PartyId::P2, FrameKind::Material, zs.iter().product()).await?;
                    let c = RingTensor::from_vec(&zs, c)?;
                    Ok(Triple { a: AShare::from_share(a), b: AShare::from_share(b), c: AShare::from_share(c) })
                }
                Role::Dealer(g) => {
                    let c1 = full_triple(g, op, xs, ys, &zs)?.1;
                    ch.send_u64(PartyId::P1, FrameKind::Material, c1.as_slice()).await?;
                    Ok(Triple { a: AShare::dealer(xs), b: AShare::dealer(ys), c: AShare::dealer(&zs) })
                }
            }
        })
    }

    fn mul_triple<'a>(&'a mut self, ch: &'a mut Channel, shape: &'a [usize]) -> BoxFuture<'a, Result<MulTriple>> {
        Box::pin(async move {
            let n: usize = shape.iter().product();
            match &mut self.role {
                Role::P0(g) => Ok(MulTriple { shape: shape.to_vec(), parts: Some(g.seeded_parts(P0, n)) }),
                Role::P1(g) => {
                    let [a, b] = g.seeded_parts(P1, n);
                    Ok(MulTriple { shape: shape.to_vec(), parts: Some([a, b, Words::FromDealer]) })
                }
                Role::Dealer(g) => {
                    let mut f = ch.begin_frame(PartyId::P1, FrameKind::Material, 8 * n);
                    mul_correction_into(g, n, |words| crate::transport::frame::extend_u64(f.payload(), words));
                    ch.send_frame(f).await?;
                    Ok(MulTriple::placeholder(shape))
                }
            }
        })
    }

    fn register_fixed_b<'a>(
        &'a mut self,
        _ch: &'a mut Channel,
        op: Bilinear,
        ys: &'a [usize],
    ) -> BoxFuture<'a, Result<(FixedBHandle, AShare)>> {
        Box::pin(async move {
            let handle = FixedBHandle(self.fixed_shapes.len());
            self.fixed_shapes.push((op, ys.to_vec()));
            let share = match &mut self.role {
                Role::P0(g) => AShare::from_share(g.draw(P0, ys)),
                Role::P1(g) => AShare::from_share(g.draw(P1, ys)),
                Role::Dealer(g) => {
                    let b = g.draw(P0, ys).add(&g.draw(P1, ys))?;
                    g.fixed.push((op, b));
                    AShare::dealer(ys)
                }
            };
            Ok((handle, share))
        })
    }

    fn fixed_b_triple<'a>(
        &'a mut self,
        ch: &'a mut Channel,
        handle: FixedBHandle,
        xs: &'a [usize],
    ) -> BoxFuture<'a, Result<FixedBTriple>> {
        Box::pin(async move {
            let (op, ys) = fixed_shape(&self.fixed_shapes, handle)?;
            let zs = op.output_shape(xs, &ys)?;
            match &mut self.role {
                Role::P0(g) => {
                    let (a, c) = (g.draw(P0, xs), g.draw(P0, &zs));
                    Ok(FixedBTriple { a: AShare::from_share(a), c: AShare::from_share(c) })
                }
                Role::P1(g) => {
                    let a = g.draw(P1, xs);
                    let c = ch.recv_u64(PartyId::P2, FrameKind::Material, zs.iter().product()).await?;
                    Ok(FixedBTriple { a: AShare::from_share(a), c: AShare::from_share(RingTensor::from_vec(&zs, c)?) })
                }
                Role::Dealer(g) => {
                    let c1 = fixed_triple(g, handle, xs)?.1;
                    ch.send_u64(PartyId::P1, FrameKind::Material, c1.as_slice()).await?;
                    Ok(FixedBTriple { a: AShare::dealer(xs), c: AShare::dealer(&zs) })
                }
            }
        })
    }
    fn trunc_pair<'a>(&'a mut self, ch: &'a mut Channel, n: usize, bits: u32) -> BoxFuture<'a, Result<TruncPair>> {
        Box::pin(async move {
            match &mut self.role {
                Role::P0(g) => {
                    let mut draw = || g.draw(P0, &[n]).as_slice().to_vec();
                    Ok(TruncPair { n, parts: Some([draw(), draw(), draw()]) })
                }
                Role::P1(g) => {
                    let r1 = g.draw(P1, &[n]).as_slice().to_vec();
                    let mut c = ch.recv_u64(PartyId::P2, FrameKind::Material, 2 * n).await?;
                    let m1 = c.split_off(n);
                    Ok(TruncPair { n, parts: Some([r1, c, m1]) })
                }
                Role::Dealer(g) => {
                    let (_, _, [hi1, m1]) = trunc_material(g, n, bits);
                    let mut f = ch.begin_frame(PartyId::P1, FrameKind::Material, 16 * n);
                    crate::transport::frame::extend_u64(f.payload(), &hi1);
                    crate::transport::frame::extend_u64(f.payload(), &m1);
                    ch.send_frame(f).await?;
                    Ok(TruncPair { n, parts: None })
                }
            }
        })
    }

    fn gate<'a>(&'a mut self, ch: &'a mut Channel, req: GateRequest) -> BoxFuture<'a, Result<Gate>> {
        Box::pin(gate::dealer_gate(&mut self.role, ch, req))
    }
}

/// Draws both mask halves (the parties draw their own in the same order) and appends both
/// parties' serialised one-round keys to `out0` and `out1`; returns the masks `(r0, r1)`.
fn gen_gate_keys_into<K: GateKey>(
    g: &mut Generator,
    len: usize,
    bits: u32,
    out0: &mut Vec<u8>,
    out1: &mut Vec<u8>,
) -> Result<(RingTensor, RingTensor)> {
    let r0 = g.draw(P0, &[len]);
    let r1 = g.draw(P1, &[len]);
    let rng = g.private.as_mut().expect("the dealer holds its private PRG");
    let r: Vec<u64> = r0.as_slice().iter().zip(r1.as_slice()).map(|(a, b)| a.wrapping_add(*b)).collect();
    K::keygen_into(bits, &r, rng, out0, out1).map_err(|e| Error::InvalidInput(format!("{} gate: {e}", K::NAME)))?;
    Ok((r0, r1))
}

fn pack_keys<K: GateKey>(buf: Vec<u8>, start: usize, len: usize, bits: u32) -> Result<PackedKeys<K>> {
    K::packed(buf, start, len, bits)
        .map_err(|e| Error::Desync { peer: PartyId::P2, detail: format!("malformed {} key material: {e}", K::NAME) })
}

/// Both halves of a fresh triple: P0's `(a0, b0, c0)`, P1's correction `c1` and P1's `(a1, b1)`.
#[allow(clippy::type_complexity)]
fn full_triple(
    g: &mut Generator,
    op: Bilinear,
    xs: &[usize],
    ys: &[usize],
    zs: &[usize],
) -> Result<((RingTensor, RingTensor, RingTensor), RingTensor, (RingTensor, RingTensor))> {
    // Draw order per stream must match the parties' own draws exactly.
    let (a0, b0, c0) = (g.draw(P0, xs), g.draw(P0, ys), g.draw(P0, zs));
    let (a1, b1) = (g.draw(P1, xs), g.draw(P1, ys));
    let c = op.apply(&a0.add(&a1)?, &b0.add(&b1)?)?;
    let c1 = c.sub(&c0)?;
    Ok(((a0, b0, c0), c1, (a1, b1)))
}

/// The correction `c1 = (a0 + a1)·(b0 + b1) − c0` of an elementwise triple of `n` elements:
/// the dealer's part of [`full_triple`] for [`Bilinear::Mul`], computed a chunk at a time from
/// readers placed at each draw's offset in the two streams, so that none of the five draws
/// (nor a temporary) is materialised; `sink` gets `c1` a chunk at a time (the dealer writes it
/// straight into the frame for P1). Leaves the streams where [`full_triple`] would (the parties
/// draw `a0, b0, c0` and `a1, b1` in that order).
fn mul_correction_into(g: &mut Generator, n: usize, mut sink: impl FnMut(&[u64])) {
    const CHUNK: usize = 1024;
    let (s0, s1) = match &mut g.prg {
        [Some(s0), Some(s1)] => (s0, s1),
        _ => unreachable!("the dealer's generator holds both halves' PRGs"),
    };
    let (mut a0, mut b0, mut c0) = (s0.reader_at(0), s0.reader_at(n), s0.reader_at(2 * n));
    let (mut a1, mut b1) = (s1.reader_at(0), s1.reader_at(n));
    s0.skip_words(3 * n);
    s1.skip_words(2 * n);
    let mut w = [[0u64; CHUNK]; 6];
    let mut done = 0;
    while done < n {
        let m = (n - done).min(CHUNK);
        for (prg, buf) in [&mut a0, &mut b0, &mut c0, &mut a1, &mut b1].into_iter().zip(w.iter_mut()) {
            prg.fill(&mut buf[..m]);
        }
        let [wa0, wb0, wc0, wa1, wb1, out] = &mut w;
        for (i, o) in out[..m].iter_mut().enumerate() {
            *o = wa0[i].wrapping_add(wa1[i]).wrapping_mul(wb0[i].wrapping_add(wb1[i])).wrapping_sub(wc0[i]);
        }
        sink(&out[..m]);
        done += m;
    }
}

/// Both halves of a fixed-B triple: P0's `(a0, c0)`, P1's correction `c1`, P1's `a1`.
#[allow(clippy::type_complexity)]
fn fixed_triple(
    g: &mut Generator,
    handle: FixedBHandle,
    xs: &[usize],
) -> Result<((RingTensor, RingTensor), RingTensor, RingTensor)> {
    let (op, b) =
        g.fixed.get(handle.0).ok_or_else(|| Error::InvalidInput(format!("unknown fixed-B handle {}", handle.0)))?;
    let op = *op;
    let zs = op.output_shape(xs, b.shape())?;
    let (a0, c0) = (g.draw(P0, xs), g.draw(P0, &zs));
    let a1 = g.draw(P1, xs);
    let (_, b) = &g.fixed[handle.0];
    let c1 = op.apply(&a0.add(&a1)?, b)?.sub(&c0)?;
    Ok(((a0, c0), c1, a1))
}

/// The truncation material of `n` values from both halves: P0's `(r0, hi0, m0)`, P1's `r1`
/// and the corrections `(hi1, m1)` that make `hi0 + hi1 = r >> bits`, `m0 + m1 = r >> 63` for
/// `r = r0 + r1`.
#[allow(clippy::type_complexity)]
fn trunc_material(g: &mut Generator, n: usize, bits: u32) -> ([Vec<u64>; 3], Vec<u64>, [Vec<u64>; 2]) {
    let mut draw = |half: usize| g.draw(half, &[n]).as_slice().to_vec();
    let (r0, hi0, m0) = (draw(P0), draw(P0), draw(P0));
    let r1 = draw(P1);
    let (mut hi1, mut m1) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let r = r0[i].wrapping_add(r1[i]);
        hi1.push((r >> bits).wrapping_sub(hi0[i]));
        m1.push((r >> 63).wrapping_sub(m0[i]));
    }
    ([r0, hi0, m0], r1, [hi1, m1])
}

/// The ideal dealer for unit tests: all three parties run the full generator from a common seed
/// and keep their own part (P2 only its state for the helper's online step). No communication, so tests of a protocol's online
/// phase see exactly its own traffic.
pub struct TestDealer {
    me: PartyId,
    g: Generator,
    fixed_shapes: Vec<(Bilinear, Vec<usize>)>,
}

impl std::fmt::Debug for TestDealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestDealer({})", self.me)
    }
}

impl TestDealer {
    /// The test dealer of party `me`; all parties of a session must use the same `seed`.
    pub fn new(me: PartyId, seed: u64) -> Self {
        let seed = crate::prg::Seed::from_bytes({
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&seed.to_le_bytes());
            s
        });
        Self {
            me,
            g: Generator {
                prg: [Some(Prg::new(&seed, 0)), Some(Prg::new(&seed, 1))],
                private: Some(Prg::new(&seed, 2)),
                fixed: vec![],
            },
            fixed_shapes: vec![],
        }
    }
}

impl Correlations for TestDealer {
    fn fetch<'a>(&'a mut self, ch: &'a mut Channel, req: &'a Request) -> BoxFuture<'a, Result<Material>> {
        Box::pin(by_kind(self, ch, req))
    }
}

impl ByKind for TestDealer {
    fn triple<'a>(
        &'a mut self,
        _ch: &'a mut Channel,
        op: Bilinear,
        xs: &'a [usize],
        ys: &'a [usize],
    ) -> BoxFuture<'a, Result<Triple>> {
        Box::pin(async move {
            let zs = op.output_shape(xs, ys)?;
            // The dealer runs the generator too: its streams stay in step for the helper's state.
            let ((a0, b0, c0), c1, (a1, b1)) = full_triple(&mut self.g, op, xs, ys, &zs)?;
            if self.me.is_dealer() {
                return Ok(Triple { a: AShare::dealer(xs), b: AShare::dealer(ys), c: AShare::dealer(&zs) });
            }
            let (a, b, c) = if self.me == PartyId::P0 { (a0, b0, c0) } else { (a1, b1, c1) };
            Ok(Triple { a: AShare::from_share(a), b: AShare::from_share(b), c: AShare::from_share(c) })
        })
    }

    fn register_fixed_b<'a>(
        &'a mut self,
        _ch: &'a mut Channel,
        op: Bilinear,
        ys: &'a [usize],
    ) -> BoxFuture<'a, Result<(FixedBHandle, AShare)>> {
        Box::pin(async move {
            let handle = FixedBHandle(self.fixed_shapes.len());
            self.fixed_shapes.push((op, ys.to_vec()));
            let (b0, b1) = (self.g.draw(P0, ys), self.g.draw(P1, ys));
            let mine = if self.me == PartyId::P0 { b0.clone() } else { b1.clone() };
            self.g.fixed.push((op, b0.add(&b1)?));
            if self.me.is_dealer() {
                return Ok((handle, AShare::dealer(ys)));
            }
            Ok((handle, AShare::from_share(mine)))
        })
    }

    fn fixed_b_triple<'a>(
        &'a mut self,
        _ch: &'a mut Channel,
        handle: FixedBHandle,
        xs: &'a [usize],
    ) -> BoxFuture<'a, Result<FixedBTriple>> {
        Box::pin(async move {
            let (op, ys) = fixed_shape(&self.fixed_shapes, handle)?;
            let zs = op.output_shape(xs, &ys)?;
            let ((a0, c0), c1, a1) = fixed_triple(&mut self.g, handle, xs)?;
            if self.me.is_dealer() {
                return Ok(FixedBTriple { a: AShare::dealer(xs), c: AShare::dealer(&zs) });
            }
            let (a, c) = if self.me == PartyId::P0 { (a0, c0) } else { (a1, c1) };
            Ok(FixedBTriple { a: AShare::from_share(a), c: AShare::from_share(c) })
        })
    }
    fn trunc_pair<'a>(&'a mut self, _ch: &'a mut Channel, n: usize, bits: u32) -> BoxFuture<'a, Result<TruncPair>> {
        Box::pin(async move {
            let (p0, r1, [hi1, m1]) = trunc_material(&mut self.g, n, bits);
            let parts = match self.me {
                PartyId::P0 => Some(p0),
                PartyId::P1 => Some([r1, hi1, m1]),
                _ => None,
            };
            Ok(TruncPair { n, parts })
        })
    }

    fn gate<'a>(&'a mut self, _ch: &'a mut Channel, req: GateRequest) -> BoxFuture<'a, Result<Gate>> {
        Box::pin(async move { gate::test_gate(&mut self.g, self.me, req) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prg::Seed;

    fn mul_correction(g: &mut Generator, shape: &[usize]) -> Result<RingTensor> {
        let n: usize = shape.iter().product();
        let mut out = Vec::with_capacity(n);
        mul_correction_into(g, n, |words| out.extend_from_slice(words));
        RingTensor::from_vec(shape, out)
    }

    fn dealer_generator() -> Generator {
        let (s0, s1) = (Seed::from_bytes([1; 32]), Seed::from_bytes([2; 32]));
        Generator { prg: [Some(Prg::new(&s0, 0)), Some(Prg::new(&s1, 0))], private: None, fixed: vec![] }
    }

    #[test]
    fn chunked_mul_correction_equals_the_materialised_triple() {
        // Odd sizes (reads that end mid-block) and sizes across the chunk boundary, one after
        // another on the same streams: both generators must give the same c1 and leave the
        // streams in the same place (checked by the next draw).
        let (mut a, mut b) = (dealer_generator(), dealer_generator());
        for n in [1usize, 3, 1023, 1024, 1025, 5000] {
            let shape = [n];
            let want = full_triple(&mut a, Bilinear::Mul, &shape, &shape, &shape).unwrap().1;
            let got = mul_correction(&mut b, &shape).unwrap();
            assert_eq!(got, want, "n = {n}");
        }
        assert_eq!(a.draw(P0, &[5]), b.draw(P0, &[5]));
        assert_eq!(a.draw(P1, &[5]), b.draw(P1, &[5]));
    }
}
