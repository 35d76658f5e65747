//! Dealer-free correlations for a two-party session (P0 and P1 only): the parties make their
//! triples themselves with oblivious transfer ([`crate::ot`]), so no third node exists.
//!
//! Every triple for a bilinear map `f` is made the same way. Each party draws its own shares
//! `a_i`, `b_i` uniformly; `f(a, b) = f(a0, b0) + f(a1, b1) + [f(a0, b1) + f(a1, b0)]`, the
//! first two local, the bracket — a sum of scalar products `a0[x]·b1[y] + a1[x]·b0[y]` over the
//! *terms* `(x, y, z)` of `f` — from Gilboa's OT multiplication
//! ([`crate::ot::cross_products_sender`]), summed into `z`. P0 is the OT
//! sender, P1 the receiver; the base OTs run once, in [`CorrelationSource::start`].
//!
//! | request | supplied | cost per term (each way, both parties) |
//! |---|---|---|
//! | elementwise / matrix / convolution triple | yes | one round trip per 8192 terms, 2568 bytes |
//! | fixed `B` and its triples | yes (`B`'s shares drawn locally, once) | as above |
//! | AND triples (the two-party comparison's gates) | yes | one message per 2^19, 32 bytes |
//! | the dealer's comparison keys, exact truncation | no ([`Error::Unsupported`]) | — |
//!
//! A matrix triple costs `m·k·n` terms: fine for small layers and tests, too much for a large
//! layer (the homomorphic-encryption route of Cheetah/SecureML is the planned fix). Security:
//! semi-honest, as [`crate::ot`].

use crate::error::{Error, Result};
use crate::ids::PartyId;
use crate::ot::{
    CotReceiver, CotSender, bit_triples_receiver, bit_triples_sender, cross_products_receiver, cross_products_sender,
};
use crate::prg::{Prg, Seed};
use crate::ring::{Conv2dParams, RingTensor};
use crate::share::AShare;
use crate::transport::{BoxFuture, Channel};

use super::{
    Bilinear, CorrelationSource, Correlations, FixedBHandle, FixedBTriple, Material, MulTriple, Request, Triple,
};

/// Terms per batch of OT multiplications: bounds the index and operand buffers (≈ 1.5 MiB).
const BATCH: usize = 1 << 16;

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
            let ot = match me {
                PartyId::P0 => Ot::Sender(CotSender::setup(ch, PartyId::P1, &mut rng).await?),
                PartyId::P1 => Ot::Receiver(CotReceiver::setup(ch, PartyId::P0, &mut rng).await?),
                other => {
                    return Err(Error::InvalidInput(format!("{other} is not a party of a two-party session")));
                }
            };
            Ok(Box::new(TwoPartyCorrelations { ot, rng, fixed: vec![] }) as Box<dyn Correlations>)
        })
    }
}

enum Ot {
    Sender(CotSender),
    Receiver(CotReceiver),
}

/// One party's dealer-free correlations (made by [`TwoPartySource`]).
struct TwoPartyCorrelations {
    ot: Ot,
    /// This party's private randomness (its shares of every mask).
    rng: Prg,
    /// Registered fixed `B`s: the op, and this party's share.
    fixed: Vec<(Bilinear, RingTensor)>,
}

impl TwoPartyCorrelations {
    /// This party's share of `f(a, b)` for its shares `a`, `b`.
    async fn product(
        ot: &mut Ot,
        ch: &mut Channel,
        op: Bilinear,
        a: &RingTensor,
        b: &RingTensor,
    ) -> Result<RingTensor> {
        let mut c = op.apply(a, b)?;
        let (xs, ys) = (a.shape(), b.shape());
        let mut terms = Terms::new(op, xs, ys)?;
        let (mut idx, mut u, mut v) = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
        loop {
            idx.clear();
            u.clear();
            v.clear();
            while idx.len() < BATCH {
                let Some((x, y, z)) = terms.next() else { break };
                idx.push(z);
                u.push(a.as_slice()[x]);
                v.push(b.as_slice()[y]);
            }
            if idx.is_empty() {
                break;
            }
            let cross = match ot {
                Ot::Sender(s) => cross_products_sender(s, ch, PartyId::P1, &u, &v).await?,
                Ot::Receiver(r) => cross_products_receiver(r, ch, PartyId::P0, &u, &v).await?,
            };
            let out = c.as_mut_slice();
            for (&z, w) in idx.iter().zip(cross) {
                out[z] = out[z].wrapping_add(w);
            }
        }
        Ok(c)
    }

    async fn triple(&mut self, ch: &mut Channel, op: Bilinear, xs: &[usize], ys: &[usize]) -> Result<Triple> {
        op.output_shape(xs, ys)?;
        let a = RingTensor::random(xs, &mut self.rng);
        let b = RingTensor::random(ys, &mut self.rng);
        let c = Self::product(&mut self.ot, ch, op, &a, &b).await?;
        Ok(Triple { a: AShare::from_share(a), b: AShare::from_share(b), c: AShare::from_share(c) })
    }

    async fn fixed_b_triple(&mut self, ch: &mut Channel, handle: FixedBHandle, xs: &[usize]) -> Result<FixedBTriple> {
        let (op, b) = self
            .fixed
            .get(handle.0)
            .ok_or_else(|| Error::InvalidInput(format!("unknown fixed-B handle {}", handle.0)))?;
        op.output_shape(xs, b.shape())?;
        let a = RingTensor::random(xs, &mut self.rng);
        // The registered B is read in place (weights can be large): no copy per triple.
        let c = Self::product(&mut self.ot, ch, *op, &a, b).await?;
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
                Request::FixedB { op, y } => {
                    let b = RingTensor::random(y, &mut self.rng);
                    self.fixed.push((*op, b.clone()));
                    Material::FixedB(FixedBHandle(self.fixed.len() - 1), AShare::from_share(b))
                }
                Request::FixedBTriple { handle, x } => {
                    Material::FixedBTriple(self.fixed_b_triple(ch, *handle, x).await?)
                }
                Request::BitTriples { n } => Material::BitTriples(match &mut self.ot {
                    Ot::Sender(s) => bit_triples_sender(s, ch, PartyId::P1, *n).await?,
                    Ot::Receiver(r) => bit_triples_receiver(r, ch, PartyId::P0, *n, &mut self.rng).await?,
                }),
                Request::Gate(_) | Request::Trunc { .. } => {
                    return Err(Error::Unsupported { correlations: "2pc-ot", what: req.name() });
                }
            })
        })
    }
}

/// The terms `(x, y, z)` of a bilinear map — `f(X, Y)[z] = Σ X[x]·Y[y]` over its terms — in a
/// fixed order both parties share.
enum Terms {
    /// `z = x = y`.
    Mul { len: usize, at: usize },
    /// `[m, k] · [k, n]`, in `(i, j, l)` order.
    MatMul { k: usize, n: usize, total: usize, at: usize },
    /// Every (output position, input channel, kernel tap) inside the input.
    Conv(Box<ConvTerms>),
}

struct ConvTerms {
    x: [usize; 4],
    w: [usize; 4],
    z: [usize; 4],
    p: Conv2dParams,
    /// The next `(b, oc, oy, ox, ic, ky, kx)`; `None` when done.
    at: Option<[usize; 7]>,
}

impl Terms {
    fn new(op: Bilinear, xs: &[usize], ys: &[usize]) -> Result<Self> {
        let zs = op.output_shape(xs, ys)?;
        Ok(match op {
            Bilinear::Mul => Terms::Mul { len: zs.iter().product(), at: 0 },
            Bilinear::MatMul => Terms::MatMul { k: xs[1], n: ys[1], total: xs[0] * xs[1] * ys[1], at: 0 },
            Bilinear::Conv2d(p) => {
                let four = |s: &[usize]| -> [usize; 4] { s.try_into().expect("checked by output_shape") };
                let (x, w, z) = (four(xs), four(ys), four(&zs));
                let empty = z.contains(&0) || w.contains(&0);
                Terms::Conv(Box::new(ConvTerms { x, w, z, p, at: (!empty).then_some([0; 7]) }))
            }
        })
    }
}

impl Iterator for Terms {
    type Item = (usize, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Terms::Mul { len, at } => {
                let i = *at;
                (i < *len).then(|| {
                    *at += 1;
                    (i, i, i)
                })
            }
            Terms::MatMul { k, n, total, at } => {
                let t = *at;
                (t < *total).then(|| {
                    *at += 1;
                    let (i, rest) = (t / (*k * *n), t % (*k * *n));
                    let (j, l) = (rest / *n, rest % *n);
                    (i * *k + j, j * *n + l, i * *n + l)
                })
            }
            Terms::Conv(c) => c.next(),
        }
    }
}

impl ConvTerms {
    /// The next term whose tap lands inside the input (padding taps multiply zero).
    fn next(&mut self) -> Option<(usize, usize, usize)> {
        loop {
            let cur = self.at?;
            self.advance();
            if let Some(t) = self.term(cur) {
                return Some(t);
            }
        }
    }

    fn term(&self, [b, oc, oy, ox, ic, ky, kx]: [usize; 7]) -> Option<(usize, usize, usize)> {
        let [_, c, h, w] = self.x;
        let [o, cg, kh, kw] = self.w;
        let [_, _, oh, ow] = self.z;
        let p = &self.p;
        let iy = (oy * p.stride.0 + ky * p.dilation.0).checked_sub(p.padding.0).filter(|&v| v < h)?;
        let ix = (ox * p.stride.1 + kx * p.dilation.1).checked_sub(p.padding.1).filter(|&v| v < w)?;
        // Output channel oc sees input channels g·cg .. (g+1)·cg of its group g.
        let channel = (oc / (o / p.groups)) * cg + ic;
        Some((
            ((b * c + channel) * h + iy) * w + ix,
            ((oc * cg + ic) * kh + ky) * kw + kx,
            ((b * o + oc) * oh + oy) * ow + ox,
        ))
    }

    fn advance(&mut self) {
        let [n, _, _, _] = self.x;
        let [o, cg, kh, kw] = self.w;
        let [_, _, oh, ow] = self.z;
        let limits = [n, o, oh, ow, cg, kh, kw];
        let Some(at) = self.at.as_mut() else { return };
        for d in (0..7).rev() {
            at[d] += 1;
            if at[d] < limits[d] {
                return;
            }
            at[d] = 0;
        }
        self.at = None;
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

    /// `f(X, Y)` from the terms alone, for comparison with the ring's own kernels.
    fn by_terms(op: Bilinear, x: &RingTensor, y: &RingTensor) -> RingTensor {
        let zs = op.output_shape(x.shape(), y.shape()).unwrap();
        let mut z = RingTensor::zeros(&zs);
        for (i, j, l) in Terms::new(op, x.shape(), y.shape()).unwrap() {
            let out = z.as_mut_slice();
            out[l] = out[l].wrapping_add(x.as_slice()[i].wrapping_mul(y.as_slice()[j]));
        }
        z
    }

    #[test]
    fn the_terms_of_every_map_add_up_to_the_map() {
        let mut g = Prg::from_u64(5);
        let conv =
            |stride, padding, dilation, groups| Bilinear::Conv2d(Conv2dParams { stride, padding, dilation, groups });
        let cases: Vec<(Bilinear, Vec<usize>, Vec<usize>)> = vec![
            (Bilinear::Mul, vec![3, 5], vec![3, 5]),
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
            assert_eq!(by_terms(op, &x, &y), op.apply(&x, &y).unwrap(), "{op:?} {xs:?} {ys:?}");
        }
    }
}
