//! Dealer-free correlations for a two-party session (P0 and P1 only): the parties make their
//! triples themselves with oblivious transfer ([`crate::ot`]), so no third node exists.
//!
//! Every triple for a bilinear map `f` is made the same way. Each party draws its own shares
//! `a_i`, `b_i` uniformly; `f(a, b) = f(a0, b0) + f(a1, b1) + [f(a0, b1) + f(a1, b0)]`, the
//! first two local, the bracket from OT or HE:
//!
//! * an elementwise product by Gilboa's multiplication ([`crate::ot::products_both_ways`]),
//!   one per term and cross term, each party choosing with its share of `B` (so both send
//!   alike);
//! * a matrix product or a convolution by vector products ([`crate::ot::vole`]): each cross
//!   term is a sum of (scalar × vector)s, the scalars the entries of one party's share of `A`
//!   or of `B` (whichever has fewer entries: 64 OTs each), the vectors from the other party's
//!   share of the other operand (260 bytes per term). The two cross terms have their
//!   scalars on opposite parties, so the session runs an IKNP extension each way. For a fixed
//!   `B` (a layer's weights) whose entries are the scalars, their OTs are made on first use and
//!   kept: every later batch pays the corrections only.
//!
//! * or a matrix product or convolution by homomorphic encryption ([`crate::he::matmul`]):
//!   each party encrypts its share of one operand under its own key, the peer multiplies it by
//!   its share of the other in plaintext and returns it masked. A fixed `B` is the encrypted
//!   operand, and its ciphertexts are kept (within 256 MiB), so later batches pay only the
//!   responses. Which route a product takes — and the HE block layout — is a function of the
//!   public shapes and of what both parties kept ([`triple_bytes`] reports the bytes).
//!
//! The base OTs (both ways) run once, in [`CorrelationSource::start`]; the HE keys on the first
//! product that takes that route.
//!
//! | request | supplied | cost (bytes between the parties) |
//! |---|---|---|
//! | elementwise triple | yes | 2568 per term, half each way; one round trip per 8192 terms |
//! | matrix / convolution triple, OT route | yes | 520 per term + 1024 per scalar; two round trips per 2^14 scalars |
//! | matrix / convolution triple, HE route | yes | 256 KiB per ciphertext and per response, each way (a few per layer); a round trip per 8 |
//! | fixed `B` and its triples | yes (`B`'s shares drawn locally) | as above; `B`'s OTs or ciphertexts once, within 256 MiB each |
//! | AND triples (the two-party comparison's gates) | yes | 32 per gate; one message per 2^19 |
//! | mux triples (comparisons' B2A and select; truncation by the known top bit) | yes | 56 per triple |
//! | the dealer's comparison keys and truncation pairs | no ([`Error::Unsupported`]) | — |
//!
//! Security: semi-honest, as [`crate::ot`]; reusing a fixed `B`'s OTs is safe because every use
//! hashes with its own tweak ([`crate::ot::vole`]).

use crate::error::{Error, Result};
use crate::he::matmul::{self as he_mm, Dims, Encrypted, Keys, Operand, Plan};
use crate::ids::PartyId;
use crate::ot::{
    CotReceiver, CotSender, MuxTriples, VoleReceiver, VoleSender, bit_triples_receiver, bit_triples_sender,
    products_both_ways,
};
use crate::prg::{Prg, Seed};
use crate::ring::{Conv2dParams, RingTensor};
use crate::share::AShare;
use crate::transport::{BoxFuture, Channel};

use super::{
    Bilinear, CorrelationSource, Correlations, FixedBHandle, FixedBTriple, Material, MulTriple, Request, Triple,
};

/// Scalars per OT extension of a vector-product cross term: 2^20 OTs, 16 MiB of rows.
const EXTENSION: usize = 1 << 14;

/// Entries of fixed `B`s whose OTs a session keeps: 2 KiB each on each party (its share's
/// OTs and the peer's), 256 MiB in all. A layer whose weights' entries are the cheaper scalars
/// (a convolution's kernel; a dense layer's weights at a large batch) then pays their OTs once,
/// and every batch after only the corrections. Entries beyond the budget get fresh OTs.
const CACHED_SCALARS: usize = 1 << 17;

/// Bytes of the peer's ciphertexts of fixed `B`s a session keeps (HE route): 512 KiB per
/// ciphertext, 256 MiB in all.
const CACHED_HE_BYTES: usize = 1 << 28;

/// Estimated time per byte of the OT route (IKNP columns, hashing, corrections), µs; against
/// [`Plan::cost`] to pick the route of each product (see [`he_mm`]).
const OT_BYTE_US: f64 = 0.003;

/// The dealer-free two-party source (see the [module docs](self)). Each party's randomness
/// comes from a fresh seed the caller's RNG draws at session setup.
#[derive(Default)]
pub struct TwoPartySource {
    seed: Option<Seed>,
}

impl std::fmt::Debug for TwoPartySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TwoPartySource(..)")
    }
}

const PARTIES: [PartyId; 2] = [PartyId::P0, PartyId::P1];

impl CorrelationSource for TwoPartySource {
    fn name(&self) -> &'static str {
        "2pc-ot"
    }

    fn parties(&self) -> &'static [PartyId] {
        &PARTIES
    }

    fn hello(&mut self, _me: PartyId, fresh: &mut dyn FnMut() -> Seed) -> [Option<Seed>; 3] {
        // Nothing to send: the seed is this party's own randomness.
        self.seed = Some(fresh());
        [None, None, None]
    }

    fn start<'a>(
        self: Box<Self>,
        me: PartyId,
        ch: &'a mut Channel,
        _received: [Option<Seed>; 3],
    ) -> BoxFuture<'a, Result<Box<dyn Correlations>>> {
        Box::pin(async move {
            let seed = self.seed.expect("hello drew the seed");
            let mut rng = Prg::new(&seed, 0);
            // Two IKNP instances, one each way (P1 chooses in the first): a vector product can
            // then take its scalars from either party's operand.
            let (send, recv) = match me {
                PartyId::P0 => {
                    let send = CotSender::setup(ch, PartyId::P1, &mut rng).await?;
                    (send, CotReceiver::setup(ch, PartyId::P1, &mut rng).await?)
                }
                PartyId::P1 => {
                    let recv = CotReceiver::setup(ch, PartyId::P0, &mut rng).await?;
                    (CotSender::setup(ch, PartyId::P0, &mut rng).await?, recv)
                }
                other => {
                    return Err(Error::InvalidInput(format!("{other} is not a party of a two-party session")));
                }
            };
            let ots = Ots { me, peer: PartyId(1 - me.0), send, recv };
            let he = Lazy { keys: None, cached: 0 };
            Ok(Box::new(TwoPartyCorrelations { ots, rng, fixed: vec![], cached: 0, he }) as Box<dyn Correlations>)
        })
    }
}

/// How the cross terms of a matrix product or convolution are made.
enum Route {
    /// Homomorphic encryption of one operand, with this layout.
    He(HeView, Plan),
    /// OT vector products; the lanes of both sides.
    Ot(Lanes, Lanes),
}

/// The route of `f(X, Y)`: HE or OT vector products, whichever is estimated faster (a function
/// of public sizes and of what both parties kept, so both decide alike). `ot_kept`: a fixed
/// `B`'s OTs exist; `he_kept`: the layout of a fixed `B`'s kept ciphertexts; `fixed`: `Y` is a
/// fixed `B` (then it is the encrypted operand, so that its ciphertexts serve every batch).
fn route(op: Bilinear, xs: &[usize], ys: &[usize], ot_kept: bool, he_kept: Option<Plan>, fixed: bool) -> Result<Route> {
    let (lx, ly) = (Lanes::new(op, xs, ys, Side::X)?, Lanes::new(op, xs, ys, Side::Y)?);
    let view = HeView::new(op, xs, ys)?;
    let only = fixed.then_some(view.b_operand);
    if let Some(plan) = Plan::choose(view.dims, he_kept, only) {
        let ot = if ot_kept || lx.scalars() > ly.scalars() { &ly } else { &lx };
        let ot_bytes = ot.scalars() * ot.len() * 520 + if ot_kept { 0 } else { ot.scalars() * 2048 };
        if plan.cost(he_kept == Some(plan)) < ot_bytes as f64 * OT_BYTE_US {
            return Ok(Route::He(view, plan));
        }
    }
    Ok(Route::Ot(lx, ly))
}

/// Bytes both parties send, together, to make a first triple for `f(X, Y)` of these shapes in a
/// two-party session (`fixed`: `Y` is a fixed `B` on its first use). For estimates (the
/// bench's refusal of jobs too large for the mode): the routes and layouts are the real ones.
pub fn triple_bytes(op: Bilinear, xs: &[usize], ys: &[usize], fixed: bool) -> Result<u64> {
    if matches!(op, Bilinear::Mul) {
        op.output_shape(xs, ys)?;
        return Ok(2568 * xs.iter().product::<usize>() as u64);
    }
    Ok(match route(op, xs, ys, false, None, fixed)? {
        Route::He(_, plan) => 2 * plan.bytes(false),
        Route::Ot(lx, ly) => {
            let l = if lx.scalars() <= ly.scalars() { lx } else { ly };
            (l.scalars() * (2048 + 520 * l.len())) as u64
        }
    })
}

/// Bytes both parties send, together, for the material of one comparison (or ReLU) on a
/// `bits`-bit window in a two-party session: the carry tree's AND triples (32 bytes each) and a
/// mux triple (56), plus the online openings. An estimate, as [`triple_bytes`].
pub fn comparison_bytes(bits: u32) -> u64 {
    let ands = crate::protocol::gmw_and_gates(bits.saturating_sub(1).max(1) as usize) as u64;
    32 * ands + 56 + 2 * (2 * ands).div_ceil(8) + 16
}

/// Bytes both parties send, together, for the public keys of the HE route (once a session).
pub const HE_KEY_BYTES: u64 = 2 * 8 * crate::he::matmul::KEY_WORDS as u64;

/// This party's OT extensions: as the sender to the peer's choices, and as the receiver.
struct Ots {
    me: PartyId,
    peer: PartyId,
    send: CotSender,
    recv: CotReceiver,
}

/// One party's dealer-free correlations (made by [`TwoPartySource`]).
struct TwoPartyCorrelations {
    ots: Ots,
    /// This party's private randomness (its shares of every mask).
    rng: Prg,
    /// Registered fixed `B`s.
    fixed: Vec<Fixed>,
    /// Entries of fixed `B`s whose OTs are kept (at most [`CACHED_SCALARS`]).
    cached: usize,
    /// The HE route's keys (made on first use) and the bytes of kept ciphertexts.
    he: Lazy,
}

/// HE keys, made when a product first takes the HE route (both parties alike: the route is a
/// function of public shapes), and the bytes of fixed `B`s' ciphertexts kept (at most
/// [`CACHED_HE_BYTES`]).
struct Lazy {
    keys: Option<Keys>,
    cached: usize,
}

/// A registered fixed `B`: the op, this party's share, and — once a triple has used the `B`
/// side's entries as scalars — the OTs behind them.
struct Fixed {
    op: Bilinear,
    b: RingTensor,
    keys: Option<KeyPair>,
    /// The peer's ciphertexts of its share, when the HE route encrypted `B`.
    enc: Option<Encrypted>,
}

/// The OTs behind both parties' shares of a fixed operand: this party's (it chooses) and the
/// peer's (it sends).
struct KeyPair {
    mine: VoleReceiver,
    theirs: VoleSender,
}

impl KeyPair {
    /// P1's shares' OTs first, then P0's.
    async fn make(ots: &mut Ots, ch: &mut Channel, share: &RingTensor) -> Result<Self> {
        let n = share.len();
        Ok(if ots.me == PartyId::P1 {
            let mine = VoleReceiver::make(&mut ots.recv, ch, ots.peer, share.as_slice().to_vec(), 64).await?;
            KeyPair { mine, theirs: VoleSender::make(&mut ots.send, ch, ots.peer, n, 64).await? }
        } else {
            let theirs = VoleSender::make(&mut ots.send, ch, ots.peer, n, 64).await?;
            KeyPair {
                theirs,
                mine: VoleReceiver::make(&mut ots.recv, ch, ots.peer, share.as_slice().to_vec(), 64).await?,
            }
        })
    }
}

impl TwoPartyCorrelations {
    /// This party's share of `f(a, b)` for its shares `a`, `b`. With `cache` (a fixed `B`'s
    /// slot), the OTs behind `B`'s entries are made on first use and kept.
    #[allow(clippy::too_many_arguments)]
    async fn product(
        ots: &mut Ots,
        he: &mut Lazy,
        rng: &mut Prg,
        ch: &mut Channel,
        op: Bilinear,
        a: &RingTensor,
        b: &RingTensor,
        cache: Option<&mut Option<KeyPair>>,
        enc: Option<&mut Option<Encrypted>>,
    ) -> Result<RingTensor> {
        if matches!(op, Bilinear::Mul) {
            return Self::gilboa(ots, ch, a, b).await;
        }
        let mut c = op.apply(a, b)?;
        let kept = cache.as_ref().is_some_and(|k| k.is_some());
        let kept_plan = enc.as_ref().and_then(|e| e.as_ref()).map(Encrypted::plan);
        let (lx, ly) = match route(op, a.shape(), b.shape(), kept, kept_plan, enc.is_some())? {
            Route::He(view, plan) => {
                // A fixed B's ciphertexts are kept when B is the encrypted operand, within budget.
                let keep = enc.filter(|_| {
                    plan.enc == view.b_operand
                        && (kept_plan == Some(plan)
                            || he.cached + plan.encrypted() * 2 * crate::he::POLY_WORDS * 8 <= CACHED_HE_BYTES)
                });
                let before = keep.as_ref().and_then(|e| e.as_ref()).map_or(0, Encrypted::bytes);
                let keys = he.keys.get_or_insert_with(|| Keys::generate(rng));
                let keep = view.cross_terms(keys, ch, ots.peer, rng, &plan, a, b, keep, &mut c).await?;
                he.cached = he.cached + keep - before;
                return Ok(c);
            }
            Route::Ot(lx, ly) => (lx, ly),
        };
        // The cross terms f(a1, b0) and f(a0, b1) as vector products whose scalars are A's
        // entries (P1's, then P0's) or B's (P0's, then P1's): whichever has fewer scalars, as
        // each costs 64 OTs — or B's, where their OTs were made for an earlier triple.
        if !kept && lx.scalars() <= ly.scalars() {
            for chooser in [PartyId::P1, PartyId::P0] {
                Self::cross_term(ots, ch, chooser, &lx, None, a, b, &mut c).await?;
            }
            return Ok(c);
        }
        let mut keys = match cache {
            Some(slot) => {
                if slot.is_none() {
                    *slot = Some(KeyPair::make(ots, ch, b).await?);
                }
                slot.as_mut()
            }
            None => None,
        };
        for chooser in [PartyId::P0, PartyId::P1] {
            Self::cross_term(ots, ch, chooser, &ly, keys.as_deref_mut(), b, a, &mut c).await?;
        }
        Ok(c)
    }

    /// One cross term as vector products: the scalars from `chooser`'s share of one operand
    /// (`scalars`), the lanes from the other party's share of the other (`lanes_of`), both
    /// parties' shares added into `c`. With `keys`, the OTs made for these scalars before;
    /// without, fresh ones per [`EXTENSION`] scalars.
    #[allow(clippy::too_many_arguments)]
    async fn cross_term(
        ots: &mut Ots,
        ch: &mut Channel,
        chooser: PartyId,
        lanes: &Lanes,
        keys: Option<&mut KeyPair>,
        scalars: &RingTensor,
        lanes_of: &RingTensor,
        c: &mut RingTensor,
    ) -> Result<()> {
        let (len, total, peer) = (lanes.len(), lanes.scalars(), ots.peer);
        let choose = ots.me == chooser;
        let (sv, lv) = (scalars.as_slice(), lanes_of.as_slice());
        let out = c.as_mut_slice();
        let mut add = |s: usize, l: usize, share: u64| {
            let z = lanes.lane(s, l).1;
            out[z] = out[z].wrapping_add(share);
        };
        if let Some(k) = keys {
            return if choose {
                k.mine.receive(ch, peer, len, add).await
            } else {
                k.theirs.send(ch, peer, len, |s, l| lanes.lane(s, l).0.map_or(0, |i| lv[i]), add).await
            };
        }
        for start in (0..total).step_by(EXTENSION) {
            let end = (start + EXTENSION).min(total);
            if choose {
                let x = (start..end).map(|s| lanes.scalar(s).map_or(0, |i| sv[i])).collect();
                let mut k = VoleReceiver::make(&mut ots.recv, ch, peer, x, 64).await?;
                k.receive(ch, peer, len, |s, l, w| add(start + s, l, w)).await?;
            } else {
                let mut k = VoleSender::make(&mut ots.send, ch, peer, end - start, 64).await?;
                let v = |s: usize, l: usize| lanes.lane(start + s, l).0.map_or(0, |i| lv[i]);
                k.send(ch, peer, len, v, |s, l, w| add(start + s, l, w)).await?;
            }
        }
        Ok(())
    }

    /// The elementwise product by Gilboa products, one cross term each way
    /// ([`products_both_ways`]: each party chooses with its share of `B` and sends its share of
    /// `A`).
    async fn gilboa(ots: &mut Ots, ch: &mut Channel, a: &RingTensor, b: &RingTensor) -> Result<RingTensor> {
        let mut c = a.mul(b)?;
        let cross = products_both_ways(&mut ots.send, &mut ots.recv, ch, ots.peer, a.as_slice(), b.as_slice()).await?;
        c.as_mut_slice().iter_mut().zip(cross).for_each(|(z, w)| *z = z.wrapping_add(w));
        Ok(c)
    }

    async fn triple(&mut self, ch: &mut Channel, op: Bilinear, xs: &[usize], ys: &[usize]) -> Result<Triple> {
        op.output_shape(xs, ys)?;
        let a = RingTensor::random(xs, &mut self.rng);
        let b = RingTensor::random(ys, &mut self.rng);
        let c = Self::product(&mut self.ots, &mut self.he, &mut self.rng, ch, op, &a, &b, None, None).await?;
        Ok(Triple { a: AShare::from_share(a), b: AShare::from_share(b), c: AShare::from_share(c) })
    }

    /// `n` mux triples ([`MuxTriples`]). Each party draws its bits `b_i` and its `a_i`;
    /// `b = b0 ⊕ b1 = b0 + b1 − 2·b0·b1` and `c = (a0 + a1)·b`, where
    /// `a0·b = a0·b0 + b1·a0·(1 − 2·b0)` and `a1·b = a1·b1 + b0·a1·(1 − 2·b1)`. So P1 chooses
    /// with `b1` in single-bit vector products of two lanes from P0, `a0·(1 − 2·b0)` and `b0`;
    /// then P0 with `b0`, one lane from P1, `a1·(1 − 2·b1)`. Two OTs and 24 bytes of
    /// corrections a triple, two messages each way.
    async fn mux_triples(&mut self, ch: &mut Channel, n: usize) -> Result<MuxTriples> {
        let Self { ots, rng, .. } = self;
        let (me, peer) = (ots.me, ots.peer);
        let mut own = vec![0u64; n];
        rng.fill(&mut own);
        own.iter_mut().for_each(|v| *v &= 1);
        let mut a = vec![0u64; n];
        rng.fill(&mut a);
        // Shares of b1·a0·(1 − 2·b0) and of b0·b1 (P1 choosing), of b0·a1·(1 − 2·b1) (P0).
        let (mut ab, mut bb) = (vec![0u64; n], vec![0u64; n]);
        let lane0 = |s: usize| a[s].wrapping_mul(1u64.wrapping_sub(own[s] << 1));
        for chooser in [PartyId::P1, PartyId::P0] {
            let len = if chooser == PartyId::P1 { 2 } else { 1 };
            for start in (0..n).step_by(EXTENSION * 64) {
                let end = (start + EXTENSION * 64).min(n);
                let mut out = |s: usize, l: usize, w: u64| {
                    let slot = if l == 0 { &mut ab[start + s] } else { &mut bb[start + s] };
                    *slot = slot.wrapping_add(w);
                };
                if me == chooser {
                    let mut k = VoleReceiver::make(&mut ots.recv, ch, peer, own[start..end].to_vec(), 1).await?;
                    k.receive(ch, peer, len, out).await?;
                } else {
                    let mut k = VoleSender::make(&mut ots.send, ch, peer, end - start, 1).await?;
                    let v = |s: usize, l: usize| if l == 0 { lane0(start + s) } else { own[start + s] };
                    k.send(ch, peer, len, v, &mut out).await?;
                }
            }
        }
        let mut bits = vec![0u64; n.div_ceil(64)];
        for (t, &v) in own.iter().enumerate() {
            bits[t / 64] |= v << (t % 64);
        }
        let b = own.iter().zip(&bb).map(|(&bi, &x)| bi.wrapping_sub(x << 1)).collect();
        let c = a.iter().zip(&own).zip(&ab).map(|((&ai, &bi), &x)| ai.wrapping_mul(bi).wrapping_add(x)).collect();
        Ok(MuxTriples { n, bits, b, a, c })
    }

    fn fixed_b(&mut self, op: Bilinear, y: &[usize]) -> Material {
        let b = RingTensor::random(y, &mut self.rng);
        self.fixed.push(Fixed { op, b: b.clone(), keys: None, enc: None });
        Material::FixedB(FixedBHandle(self.fixed.len() - 1), AShare::from_share(b))
    }

    async fn fixed_b_triple(&mut self, ch: &mut Channel, handle: FixedBHandle, xs: &[usize]) -> Result<FixedBTriple> {
        let Self { ots, rng, fixed, cached, he } = self;
        let Fixed { op, b, keys, enc } = fixed
            .get_mut(handle.0)
            .ok_or_else(|| Error::InvalidInput(format!("unknown fixed-B handle {}", handle.0)))?;
        op.output_shape(xs, b.shape())?;
        let a = RingTensor::random(xs, rng);
        // B's OTs are kept within the session's budget (the same decision on both sides: it
        // depends on public shapes only).
        let had = keys.is_some();
        let cache = (had || *cached + b.len() <= CACHED_SCALARS).then_some(&mut *keys);
        // The registered B is read in place (weights can be large): no copy per triple.
        let c = Self::product(ots, he, rng, ch, *op, &a, b, cache, Some(enc)).await?;
        if !had && keys.is_some() {
            *cached += b.len();
        }
        Ok(FixedBTriple { a: AShare::from_share(a), c: AShare::from_share(c) })
    }
}

impl Correlations for TwoPartyCorrelations {
    fn fetch<'a>(&'a mut self, ch: &'a mut Channel, req: &'a Request) -> BoxFuture<'a, Result<Material>> {
        Box::pin(async move {
            Ok(match req {
                Request::Triple { op, x, y } => Material::Triple(self.triple(ch, *op, x, y).await?),
                Request::MulTriple { shape } => {
                    Material::MulTriple(MulTriple::from_triple(self.triple(ch, Bilinear::Mul, shape, shape).await?)?)
                }
                Request::FixedB { op, y } => self.fixed_b(*op, y),
                Request::FixedBTriple { handle, x } => {
                    Material::FixedBTriple(self.fixed_b_triple(ch, *handle, x).await?)
                }
                Request::MuxTriples { n } => Material::MuxTriples(self.mux_triples(ch, *n).await?),
                Request::BitTriples { n } => Material::BitTriples(match self.ots.me {
                    PartyId::P0 => bit_triples_sender(&mut self.ots.send, ch, PartyId::P1, *n).await?,
                    _ => bit_triples_receiver(&mut self.ots.recv, ch, PartyId::P0, *n, &mut self.rng).await?,
                }),
                Request::Gate(_) | Request::Trunc { .. } => {
                    return Err(Error::Unsupported { correlations: "2pc-ot", what: req.name() });
                }
            })
        })
    }
}

/// Which operand of `f(X, Y)` holds P1's scalars in a cross term.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    /// Entries of `X` (a convolution's input through its taps); lanes from `Y`.
    X,
    /// Entries of `Y`; lanes from `X`.
    Y,
}

/// A matrix product or convolution laid out as scalar × vector products: scalar `s` (an entry of
/// P1's operand) times lanes `l < len` (entries of P0's operand) into output entries.
///
/// * `[m, k]·[k, n]`, side Y: scalar `Y[j, c]` times the column `X[·, j]` into `Z[·, c]`;
///   side X: scalar `X[i, j]` times the row `Y[j, ·]` into `Z[i, ·]`.
/// * A convolution, side Y: kernel tap `W[o, i, ky, kx]` times the input under it at every
///   output position (zero in the padding) into `Z[·, o, ·, ·]`; side X: the input under tap
///   `(ky, kx)` of output position `p` (an im2col entry; zero in the padding) times the tap for
///   every output channel of its group, into `Z[·, ·, p]`.
struct Lanes {
    side: Side,
    shape: LaneShape,
}

enum LaneShape {
    MatMul { m: usize, k: usize, n: usize },
    Conv { x: [usize; 4], w: [usize; 4], z: [usize; 4], p: Conv2dParams },
}

impl Lanes {
    fn new(op: Bilinear, xs: &[usize], ys: &[usize], side: Side) -> Result<Self> {
        let zs = op.output_shape(xs, ys)?;
        let shape = match op {
            Bilinear::MatMul => LaneShape::MatMul { m: xs[0], k: xs[1], n: ys[1] },
            Bilinear::Conv2d(p) => {
                let four = |s: &[usize]| -> [usize; 4] { s.try_into().expect("checked by output_shape") };
                LaneShape::Conv { x: four(xs), w: four(ys), z: four(&zs), p }
            }
            Bilinear::Mul => return Err(Error::InvalidInput("an elementwise product has no lanes".into())),
        };
        Ok(Self { side, shape })
    }

    /// Number of scalars.
    fn scalars(&self) -> usize {
        match (&self.shape, self.side) {
            (LaneShape::MatMul { k, n, .. }, Side::Y) => k * n,
            (LaneShape::MatMul { m, k, .. }, Side::X) => m * k,
            (LaneShape::Conv { w, .. }, Side::Y) => w.iter().product(),
            (LaneShape::Conv { x, w, z, .. }, Side::X) => x[0] * x[1] * w[2] * w[3] * z[2] * z[3],
        }
    }

    /// Lanes per scalar.
    fn len(&self) -> usize {
        match (&self.shape, self.side) {
            (LaneShape::MatMul { m, .. }, Side::Y) => *m,
            (LaneShape::MatMul { n, .. }, Side::X) => *n,
            (LaneShape::Conv { z, .. }, Side::Y) => z[0] * z[2] * z[3],
            (LaneShape::Conv { w, p, .. }, Side::X) => w[0] / p.groups,
        }
    }

    /// The input entry under tap `(ky, kx)` of output position `(oy, ox)`, if inside.
    fn tap(x: &[usize; 4], p: &Conv2dParams, [b, c, ky, kx, oy, ox]: [usize; 6]) -> Option<usize> {
        let [_, cs, h, w] = *x;
        let iy = (oy * p.stride.0 + ky * p.dilation.0).checked_sub(p.padding.0).filter(|&v| v < h)?;
        let ix = (ox * p.stride.1 + kx * p.dilation.1).checked_sub(p.padding.1).filter(|&v| v < w)?;
        Some(((b * cs + c) * h + iy) * w + ix)
    }

    /// Scalar `s` of side X of a convolution: `(b, c, ky, kx, oy, ox)`.
    fn conv_x(w: &[usize; 4], z: &[usize; 4], c: usize, s: usize) -> [usize; 6] {
        let (ox, r) = (s % z[3], s / z[3]);
        let (oy, r) = (r % z[2], r / z[2]);
        let (kx, r) = (r % w[3], r / w[3]);
        let (ky, r) = (r % w[2], r / w[2]);
        [r / c, r % c, ky, kx, oy, ox]
    }

    /// Where scalar `s` is in P1's operand (`None`: a padding zero).
    fn scalar(&self, s: usize) -> Option<usize> {
        match (&self.shape, self.side) {
            (LaneShape::MatMul { .. }, _) | (LaneShape::Conv { .. }, Side::Y) => Some(s),
            (LaneShape::Conv { x, w, z, p }, Side::X) => Self::tap(x, p, Self::conv_x(w, z, x[1], s)),
        }
    }

    /// Lane `l` of scalar `s`: where it is in P0's operand (`None`: a padding zero), and the
    /// output entry the product adds to.
    fn lane(&self, s: usize, l: usize) -> (Option<usize>, usize) {
        match (&self.shape, self.side) {
            (LaneShape::MatMul { k, n, .. }, Side::Y) => {
                let (j, c) = (s / n, s % n);
                (Some(l * k + j), l * n + c)
            }
            (LaneShape::MatMul { k, n, .. }, Side::X) => {
                let (i, j) = (s / k, s % k);
                (Some(j * n + l), i * n + l)
            }
            (LaneShape::Conv { x, w, z, p }, Side::Y) => {
                let [o, cg, kh, kw] = *w;
                let (kx, r) = (s % kw, s / kw);
                let (ky, r) = (r % kh, r / kh);
                let (ic, oc) = (r % cg, r / cg);
                let (ox, r) = (l % z[3], l / z[3]);
                let (oy, b) = (r % z[2], r / z[2]);
                let channel = (oc / (o / p.groups)) * cg + ic;
                (Self::tap(x, p, [b, channel, ky, kx, oy, ox]), ((b * o + oc) * z[2] + oy) * z[3] + ox)
            }
            (LaneShape::Conv { x, w, z, p }, Side::X) => {
                let [o, cg, kh, kw] = *w;
                let [b, c, ky, kx, oy, ox] = Self::conv_x(w, z, x[1], s);
                let per = o / p.groups;
                let oc = (c / cg) * per + l;
                let ic = c % cg;
                (Some(((oc * cg + ic) * kh + ky) * kw + kx), ((b * o + oc) * z[2] + oy) * z[3] + ox)
            }
        }
    }
}

/// A matrix product or convolution as [`he_mm`]'s `Z = L·R`: a matrix product is itself
/// (`L = X`, `R = Y`); a convolution per group is the kernel (`L`: output channels × taps)
/// times the im2col of the input (`R`: taps × batch·output positions).
struct HeView {
    dims: Dims,
    /// Which of `L`, `R` is the `B` (`Y`) operand.
    b_operand: Operand,
    shape: LaneShape,
}

impl HeView {
    fn new(op: Bilinear, xs: &[usize], ys: &[usize]) -> Result<Self> {
        let shape = Lanes::new(op, xs, ys, Side::Y)?.shape;
        Ok(match shape {
            LaneShape::MatMul { m, k, n } => Self { dims: Dims { groups: 1, m, k, n }, b_operand: Operand::R, shape },
            LaneShape::Conv { w, z, p, .. } => {
                let dims = Dims { groups: p.groups, m: w[0] / p.groups, k: w[1] * w[2] * w[3], n: z[0] * z[2] * z[3] };
                Self { dims, b_operand: Operand::L, shape }
            }
        })
    }

    /// Entry `(g, i, j)` of `L` for operands `x`, `y` (zero in a convolution's padding).
    fn l(&self, x: &[u64], y: &[u64], g: usize, i: usize, j: usize) -> u64 {
        match &self.shape {
            LaneShape::MatMul { k, .. } => x[i * k + j],
            LaneShape::Conv { .. } => y[(g * self.dims.m + i) * self.dims.k + j],
        }
    }

    /// Entry `(g, j, l)` of `R`.
    fn r(&self, x: &[u64], y: &[u64], g: usize, j: usize, l: usize) -> u64 {
        match &self.shape {
            LaneShape::MatMul { n, .. } => y[j * n + l],
            LaneShape::Conv { x: xs, w, z, p } => {
                let (kx, r) = (j % w[3], j / w[3]);
                let (ky, c) = (r % w[2], r / w[2]);
                let (ox, r) = (l % z[3], l / z[3]);
                let (oy, b) = (r % z[2], r / z[2]);
                Lanes::tap(xs, p, [b, g * w[1] + c, ky, kx, oy, ox]).map_or(0, |i| x[i])
            }
        }
    }

    /// Where `Z[g][i][l]` is in the output tensor.
    fn z(&self, g: usize, i: usize, l: usize) -> usize {
        match &self.shape {
            LaneShape::MatMul { n, .. } => i * n + l,
            LaneShape::Conv { z, .. } => {
                let (pos, b) = (l % (z[2] * z[3]), l / (z[2] * z[3]));
                (b * z[1] + g * self.dims.m + i) * z[2] * z[3] + pos
            }
        }
    }

    /// Adds this party's shares of the cross terms of `f(a, b)` to `c` by [`he_mm::cross_terms`];
    /// returns the bytes of ciphertexts `keep` holds afterwards.
    #[allow(clippy::too_many_arguments)]
    async fn cross_terms(
        &self,
        keys: &mut Keys,
        ch: &mut Channel,
        peer: PartyId,
        rng: &mut Prg,
        plan: &Plan,
        a: &RingTensor,
        b: &RingTensor,
        keep: Option<&mut Option<Encrypted>>,
        c: &mut RingTensor,
    ) -> Result<usize> {
        let (x, y) = (a.as_slice(), b.as_slice());
        let l = |g: usize, i: usize, j: usize| self.l(x, y, g, i, j);
        let r = |g: usize, j: usize, k: usize| self.r(x, y, g, j, k);
        let (enc, plain): (he_mm::Entries<'_>, he_mm::Entries<'_>) =
            if plan.enc == Operand::L { (&l, &r) } else { (&r, &l) };
        let out = c.as_mut_slice();
        let mut add = |g: usize, i: usize, k: usize, v: u64| {
            let z = &mut out[self.z(g, i, k)];
            *z = z.wrapping_add(v);
        };
        let mut keep = keep;
        he_mm::cross_terms(keys, ch, peer, rng, plan, enc, plain, keep.as_deref_mut(), &mut add).await?;
        Ok(keep.and_then(|e| e.as_ref()).map_or(0, Encrypted::bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlations::GateRequest;
    use crate::ids::SessionId;

    #[test]
    #[allow(clippy::disallowed_methods)] // two parties as threads, as in crate::testing
    fn what_the_source_cannot_make_is_refused_by_name() {
        let (c0, c1) = crate::testing::channel_pair(SessionId(9));
        let run = |me: PartyId, mut ch: Channel| {
            futures::executor::block_on(async move {
                let mut src: Box<dyn CorrelationSource> = Box::new(TwoPartySource::default());
                let mut g = Prg::from_u64(me.0.into());
                src.hello(me, &mut || Seed::random(&mut g));
                let mut corr = src.start(me, &mut ch, [None, None, None]).await.unwrap();
                let gate =
                    GateRequest { method: crate::compare::Method::Fss1, len: 4, bits: 20, points: 1, relu: false };
                let e1 = corr.fetch(&mut ch, &Request::Gate(gate)).await.unwrap_err().to_string();
                let e2 = corr.fetch(&mut ch, &Request::Trunc { n: 4, bits: 16 }).await.unwrap_err().to_string();
                (e1, e2)
            })
        };
        let (a, b) = std::thread::scope(|s| {
            let h0 = s.spawn(|| run(PartyId::P0, c0));
            let h1 = s.spawn(|| run(PartyId::P1, c1));
            (h0.join().unwrap(), h1.join().unwrap())
        });
        for (e1, e2) in [a, b] {
            assert_eq!(e1, "the 2pc-ot correlation source does not supply comparison material");
            assert_eq!(e2, "the 2pc-ot correlation source does not supply truncation material");
        }
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // two parties as threads, as in crate::testing
    fn mux_triples_share_one_bit_both_ways_and_its_product() {
        // Two batches (the OTs' tweaks move on), one of them over a word and an extension.
        let (c0, c1) = crate::testing::channel_pair(SessionId(10));
        let run = |me: PartyId, mut ch: Channel| {
            futures::executor::block_on(async move {
                let mut src: Box<dyn CorrelationSource> = Box::new(TwoPartySource::default());
                let mut g = Prg::from_u64(40 + u64::from(me.0));
                src.hello(me, &mut || Seed::random(&mut g));
                let mut corr = src.start(me, &mut ch, [None, None, None]).await.unwrap();
                let mut got = vec![];
                for n in [3usize, 1000] {
                    match corr.fetch(&mut ch, &Request::MuxTriples { n }).await.unwrap() {
                        Material::MuxTriples(t) => got.push(t),
                        _ => unreachable!(),
                    }
                }
                got
            })
        };
        let (t0, t1) = std::thread::scope(|s| {
            let h0 = s.spawn(|| run(PartyId::P0, c0));
            let h1 = s.spawn(|| run(PartyId::P1, c1));
            (h0.join().unwrap(), h1.join().unwrap())
        });
        for (m0, m1) in t0.iter().zip(&t1) {
            let mut ones = 0;
            for q in 0..m0.n {
                let bit = ((m0.bits[q / 64] ^ m1.bits[q / 64]) >> (q % 64)) & 1;
                ones += bit;
                assert_eq!(m0.b[q].wrapping_add(m1.b[q]), bit, "triple {q}: b");
                let a = m0.a[q].wrapping_add(m1.a[q]);
                assert_eq!(m0.c[q].wrapping_add(m1.c[q]), a.wrapping_mul(bit), "triple {q}: c");
            }
            if m0.n == 1000 {
                assert!((400..600).contains(&ones), "{ones} of 1000 bits set");
                // Each party's additive share of b is not the bit itself (it is masked).
                assert!(m0.b.iter().filter(|&&v| v > 1).count() > 900);
            }
        }
    }

    /// `f(X, Y)` from one side's vector products alone.
    fn by_lanes(op: Bilinear, side: Side, x: &RingTensor, y: &RingTensor) -> RingTensor {
        let lanes = Lanes::new(op, x.shape(), y.shape(), side).unwrap();
        let (scalars, others) = match side {
            Side::X => (x.as_slice(), y.as_slice()),
            Side::Y => (y.as_slice(), x.as_slice()),
        };
        let mut z = RingTensor::zeros(&op.output_shape(x.shape(), y.shape()).unwrap());
        for s in 0..lanes.scalars() {
            let v = lanes.scalar(s).map_or(0, |i| scalars[i]);
            for l in 0..lanes.len() {
                let (src, dst) = lanes.lane(s, l);
                let out = z.as_mut_slice();
                out[dst] = out[dst].wrapping_add(v.wrapping_mul(src.map_or(0, |i| others[i])));
            }
        }
        z
    }

    #[test]
    fn the_lanes_of_every_map_add_up_to_the_map() {
        let mut g = Prg::from_u64(5);
        let conv =
            |stride, padding, dilation, groups| Bilinear::Conv2d(Conv2dParams { stride, padding, dilation, groups });
        let cases: Vec<(Bilinear, Vec<usize>, Vec<usize>)> = vec![
            (Bilinear::MatMul, vec![4, 7], vec![7, 3]),
            (Bilinear::MatMul, vec![1, 1], vec![1, 9]),
            (conv((1, 1), (0, 0), (1, 1), 1), vec![2, 3, 6, 5], vec![4, 3, 3, 2]),
            (conv((2, 1), (1, 2), (1, 1), 1), vec![1, 2, 7, 7], vec![3, 2, 3, 3]),
            (conv((1, 2), (2, 1), (2, 1), 1), vec![2, 1, 8, 6], vec![2, 1, 3, 2]),
            (conv((1, 1), (1, 1), (1, 1), 2), vec![1, 4, 5, 5], vec![6, 2, 3, 3]),
            (conv((2, 2), (1, 1), (1, 1), 3), vec![2, 3, 6, 6], vec![3, 1, 3, 3]),
        ];
        for (op, xs, ys) in cases {
            let (x, y) = (RingTensor::random(&xs, &mut g), RingTensor::random(&ys, &mut g));
            let want = op.apply(&x, &y).unwrap();
            for side in [Side::X, Side::Y] {
                assert_eq!(by_lanes(op, side, &x, &y), want, "{side:?} {op:?} {xs:?} {ys:?}");
            }
            assert_eq!(by_he_view(op, &x, &y), want, "HE view of {op:?} {xs:?} {ys:?}");
        }
    }

    /// `f(X, Y)` as the HE route sees it: `Σ_j L[g][i][j]·R[g][j][l]` into `Z[g][i][l]`.
    fn by_he_view(op: Bilinear, x: &RingTensor, y: &RingTensor) -> RingTensor {
        let v = HeView::new(op, x.shape(), y.shape()).unwrap();
        let (xs, ys) = (x.as_slice(), y.as_slice());
        let mut z = RingTensor::zeros(&op.output_shape(x.shape(), y.shape()).unwrap());
        let Dims { groups, m, k, n } = v.dims;
        for g in 0..groups {
            for i in 0..m {
                for l in 0..n {
                    let s = (0..k)
                        .fold(0u64, |acc, j| acc.wrapping_add(v.l(xs, ys, g, i, j).wrapping_mul(v.r(xs, ys, g, j, l))));
                    let out = z.as_mut_slice();
                    let at = v.z(g, i, l);
                    out[at] = out[at].wrapping_add(s);
                }
            }
        }
        z
    }

    /// Products large enough for the HE route: triples multiply exactly, for a matrix product and
    /// a padded, grouped convolution; a fixed `B`'s second triple reuses the kept ciphertexts
    /// (it costs less than the first), and the route really is HE (fewer bytes than the OT
    /// route's corrections alone).
    #[test]
    #[allow(clippy::disallowed_methods)] // two parties as threads, as in crate::testing
    fn he_route_triples_multiply_and_keep_a_fixed_b() {
        let conv = Bilinear::Conv2d(Conv2dParams { stride: (1, 1), padding: (1, 1), dilation: (1, 1), groups: 2 });
        let cases =
            [(Bilinear::MatMul, vec![32usize, 300], vec![300usize, 40]), (conv, vec![2, 8, 12, 12], vec![16, 4, 3, 3])];
        for (op, xs, ys) in cases {
            let (c0, c1) = crate::testing::channel_pair(SessionId(11));
            let (xs2, ys2) = (xs.clone(), ys.clone());
            let run = move |me: PartyId, mut ch: Channel| {
                let (xs, ys) = (xs2.clone(), ys2.clone());
                futures::executor::block_on(async move {
                    let mut src: Box<dyn CorrelationSource> = Box::new(TwoPartySource::default());
                    let mut g = Prg::from_u64(60 + u64::from(me.0));
                    src.hello(me, &mut || Seed::random(&mut g));
                    let mut corr = src.start(me, &mut ch, [None, None, None]).await.unwrap();
                    let t =
                        match corr.fetch(&mut ch, &Request::Triple { op, x: xs.clone(), y: ys.clone() }).await.unwrap()
                        {
                            Material::Triple(t) => t,
                            _ => unreachable!(),
                        };
                    let Material::FixedB(h, b) = corr.fetch(&mut ch, &Request::FixedB { op, y: ys }).await.unwrap()
                    else {
                        unreachable!()
                    };
                    let mut fixed = vec![];
                    let mut bytes = vec![];
                    for _ in 0..2 {
                        let before = ch.traffic().sent_bytes.iter().sum::<u64>();
                        match corr.fetch(&mut ch, &Request::FixedBTriple { handle: h, x: xs.clone() }).await.unwrap() {
                            Material::FixedBTriple(t) => fixed.push(t),
                            _ => unreachable!(),
                        }
                        bytes.push(ch.traffic().sent_bytes.iter().sum::<u64>() - before);
                    }
                    (t, b, fixed, bytes)
                })
            };
            let (r0, r1) = std::thread::scope(|s| {
                let h0 = s.spawn(|| run(PartyId::P0, c0));
                let h1 = s.spawn(|| run(PartyId::P1, c1));
                (h0.join().unwrap(), h1.join().unwrap())
            });
            let open =
                |a: &AShare, b: &AShare| a.clone().into_share().unwrap().add(&b.clone().into_share().unwrap()).unwrap();
            let (a, b, c) = (open(&r0.0.a, &r1.0.a), open(&r0.0.b, &r1.0.b), open(&r0.0.c, &r1.0.c));
            assert_eq!(op.apply(&a, &b).unwrap(), c, "{op:?} triple");
            let fb = open(&r0.1, &r1.1);
            for (t0, t1) in r0.2.iter().zip(&r1.2) {
                assert_eq!(op.apply(&open(&t0.a, &t1.a), &fb).unwrap(), open(&t0.c, &t1.c), "{op:?} fixed-B triple");
            }
            let (first, second) = (r0.3[0], r0.3[1]);
            assert!(second < first, "{op:?}: kept ciphertexts, yet {second} bytes after {first}");
            let lanes = Lanes::new(op, &xs, &ys, Side::Y).unwrap();
            let ot_corrections = (lanes.scalars() * lanes.len() * 260) as u64;
            assert!(second < ot_corrections, "{op:?}: {second} bytes, the OT route's corrections {ot_corrections}");
        }
    }
}
