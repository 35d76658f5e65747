//! Beaver multiplication for any public bilinear map (elementwise, matmul, conv2d).
//!
//! With a triple `(A, B, C = f(A, B))`, the parties open `D = X − A` and `E = Y − B` and each
//! computes `z_i = f(D, y_i) + f(a_i, E) + c_i`; summed, `f(D, Y) + f(A, E) + f(A, B) =
//! f(D + A, Y) = f(X, Y)`. The split into pure steps ([`mask`], [`combine`]) and a thin async
//! driver keeps the arithmetic testable without a transport.
//!
//! For model weights the right operand is *pre-opened*: a fixed `B` is registered once,
//! `E = W − B` is opened once per model, and each query only opens `D` against a fresh `A`.

use crate::correlations::{Bilinear, FixedBHandle};
use crate::error::Result;
use crate::party::Party;
use crate::ring::{Conv2dParams, RingTensor};
use crate::share::AShare;

/// Masks a share: `x_i − a_i` (this party's share of `X − A`).
pub fn mask(x: &RingTensor, a: &RingTensor) -> Result<RingTensor> {
    x.sub(a)
}

/// This party's share of `f(X, Y)` from the opened `D`, `E`, its share `y_i` of `Y` and its
/// triple shares `a_i`, `c_i`.
pub fn combine(
    op: Bilinear,
    d: &RingTensor,
    e: &RingTensor,
    y_i: &RingTensor,
    a_i: &RingTensor,
    c_i: &RingTensor,
) -> Result<RingTensor> {
    let mut z = op.apply(d, y_i)?;
    z.add_assign(&op.apply(a_i, e)?)?;
    z.add_assign(c_i)?;
    Ok(z)
}

/// A secret right operand (model weights) whose masked value `E = W − B` has been opened once;
/// queries against it open only the left operand. Holds this party's share of `W` (the dealer
/// holds a placeholder).
#[derive(Debug)]
pub struct PreopenedWeights {
    op: Bilinear,
    handle: FixedBHandle,
    /// `E = W − B`, public to P0 and P1 (`None` on the dealer).
    e: Option<RingTensor>,
    w: AShare,
}

impl PreopenedWeights {
    /// The weights' shape.
    pub fn shape(&self) -> &[usize] {
        self.w.shape()
    }
    /// The bilinear op these weights are pre-opened for.
    pub fn op(&self) -> Bilinear {
        self.op
    }
}

impl Party {
    /// Beaver product without statistics scope or truncation (building block).
    pub(crate) async fn beaver(&mut self, op: Bilinear, x: &AShare, y: &AShare) -> Result<AShare> {
        let zs = op.output_shape(x.shape(), y.shape())?;
        if op == Bilinear::Mul {
            return self.beaver_mul(x, y).await;
        }
        let t = self.corr.triple(&mut self.ch, op, x.shape(), y.shape()).await?;
        if self.placeholder() {
            return Ok(AShare::dealer(&zs));
        }
        let d_i = mask(x.expose_share()?, t.a.expose_share()?)?;
        let e_i = mask(y.expose_share()?, t.b.expose_share()?)?;
        let opened = self
            .open_inner(&[&AShare::from_share(d_i), &AShare::from_share(e_i)])
            .await?
            .expect("computing party gets the opened values");
        let (d, e) = (&opened[0], &opened[1]);
        Ok(AShare::from_share(combine(op, d, e, y.expose_share()?, t.a.expose_share()?, t.c.expose_share()?)?))
    }

    /// The elementwise case of [`Party::beaver`] in two passes over the operands, a chunk at a
    /// time: the masked shares go straight into the outgoing frame, the peer's are read in place
    /// from its frame, and the triple is read as it is drawn ([`MulTriple`]: seed material is
    /// generated chunk by chunk, never stored whole). The same arithmetic as [`mask`] and
    /// [`combine`].
    async fn beaver_mul(&mut self, x: &AShare, y: &AShare) -> Result<AShare> {
        const CHUNK: usize = 512;
        let zs = Bilinear::Mul.output_shape(x.shape(), y.shape())?;
        let mut t = self.corr.mul_triple(&mut self.ch, &zs).await?;
        if self.placeholder() || !t.has_parts() {
            return Ok(AShare::dealer(&zs));
        }
        let (xs, ys) = (x.expose_share()?.as_slice(), y.expose_share()?.as_slice());
        let n = xs.len();
        let mut bufs = [[0u64; CHUNK]; 3];
        let mut frame = self.ch.begin_frame(self.id.peer(), crate::transport::FrameKind::Open, 16 * n);
        {
            let (mut ra, mut rb) = (t.reader(0), t.reader(1));
            let [wb, ob, _] = &mut bufs;
            // D's share, then E's: x − a, y − b.
            for (v, r) in [(xs, &mut ra), (ys, &mut rb)] {
                for vc in v.chunks(CHUNK) {
                    let m = vc.len();
                    let w = r.next(&mut wb[..m]);
                    let o = &mut ob[..m];
                    o.iter_mut().zip(vc.iter().zip(w)).for_each(|(o, (v, w))| *o = v.wrapping_sub(*w));
                    crate::transport::frame::extend_u64(frame.payload(), o);
                }
            }
        }
        let (raw, start) = self.ch.exchange_frame(frame).await?;
        t.resolve(&mut self.ch).await?;
        let (td, te) = raw[start..].split_at(8 * n);
        let (td, te) = (td.as_chunks::<8>().0, te.as_chunks::<8>().0);
        // Our own masked shares are recomputed (x − a, y − b) rather than kept.
        let (mut ra, mut rb, mut rc) = (t.reader(0), t.reader(1), t.reader(2));
        let mut z = Vec::with_capacity(n);
        let [ba, bb, bc] = &mut bufs;
        for (i, (xc, yc)) in xs.chunks(CHUNK).zip(ys.chunks(CHUNK)).enumerate() {
            let m = xc.len();
            let (a, b, c) = (ra.next(&mut ba[..m]), rb.next(&mut bb[..m]), rc.next(&mut bc[..m]));
            let (tdc, tec) = (&td[i * CHUNK..i * CHUNK + m], &te[i * CHUNK..i * CHUNK + m]);
            z.extend((0..m).map(|j| {
                let d = xc[j].wrapping_sub(a[j]).wrapping_add(u64::from_le_bytes(tdc[j]));
                let e = yc[j].wrapping_sub(b[j]).wrapping_add(u64::from_le_bytes(tec[j]));
                d.wrapping_mul(yc[j]).wrapping_add(a[j].wrapping_mul(e)).wrapping_add(c[j])
            }));
        }
        Ok(AShare::from_share(RingTensor::from_vec(&zs, z)?))
    }

    /// Beaver product then truncation by the fraction bits (building block).
    /// Always local: it serves the bounded intermediate values of the reciprocal and softmax
    /// (below 2^15), where local truncation's wrap is negligible.
    pub(crate) async fn beaver_fixed(&mut self, op: Bilinear, x: &AShare, y: &AShare) -> Result<AShare> {
        let z = self.beaver(op, x, y).await?;
        Ok(self.trunc(&z, self.fixed().frac_bits))
    }

    async fn run_beaver(&mut self, op: Bilinear, x: &AShare, y: &AShare, trunc: bool) -> Result<AShare> {
        let top = self.begin(op.name())?;
        let r = async {
            let z = self.beaver(op, x, y).await?;
            if trunc { Ok(self.truncate_products(vec![z]).await?.remove(0)) } else { Ok(z) }
        }
        .await;
        self.finish(top, r).await
    }

    /// Elementwise product of two secrets over Z_2^64 (no truncation).
    ///
    /// * Secret inputs: `x`, `y` (same shape). Revealed: nothing (`X − A`, `Y − B` are uniform).
    /// * Rounds 1; online bytes 16 per element per computing party; one elementwise triple
    ///   (dealer sends P1 8 bytes per element). Exact.
    pub async fn mul(&mut self, x: &AShare, y: &AShare) -> Result<AShare> {
        self.run_beaver(Bilinear::Mul, x, y, false).await
    }

    /// [`Party::mul`] followed by truncation by the fixed-point fraction bits as the session's
    /// [`Party::set_truncation`] says: the fixed-point product. Error ≤ 1 ulp (plus, with local
    /// truncation, its rare failure; exact truncation adds one round).
    pub async fn mul_fixed(&mut self, x: &AShare, y: &AShare) -> Result<AShare> {
        self.run_beaver(Bilinear::Mul, x, y, true).await
    }

    /// Matrix product `[m, k] · [k, n]` of two secrets (no truncation).
    ///
    /// * Rounds 1; online bytes 8·(m·k + k·n) per computing party; one matrix triple (dealer
    ///   sends P1 8·m·n bytes). Exact.
    pub async fn matmul(&mut self, x: &AShare, y: &AShare) -> Result<AShare> {
        self.run_beaver(Bilinear::MatMul, x, y, false).await
    }

    /// [`Party::matmul`] then truncation: the fixed-point matrix product. Error ≤ 1 ulp plus
    /// the inputs' rounding carried through the `k` products (≤ k·2^-f·(|x|+|y|) in the worst
    /// case).
    pub async fn matmul_fixed(&mut self, x: &AShare, y: &AShare) -> Result<AShare> {
        self.run_beaver(Bilinear::MatMul, x, y, true).await
    }

    /// 2-D convolution `[n, c, h, w] ⊛ [o, c, kh, kw]` of two secrets (no truncation, no bias),
    /// with a convolution triple: online bytes 8·(|x| + |w|) per computing party — the input
    /// is opened once, not its k²-times larger im2col matrix. Rounds 1. Exact.
    pub async fn conv2d(&mut self, x: &AShare, w: &AShare, p: Conv2dParams) -> Result<AShare> {
        self.run_beaver(Bilinear::Conv2d(p), x, w, false).await
    }

    /// [`Party::conv2d`] then truncation.
    pub async fn conv2d_fixed(&mut self, x: &AShare, w: &AShare, p: Conv2dParams) -> Result<AShare> {
        self.run_beaver(Bilinear::Conv2d(p), x, w, true).await
    }

    /// Pre-opens secret weights `w` for repeated use as the right operand of `op`
    /// ([`Bilinear::MatMul`] or [`Bilinear::Conv2d`]).
    ///
    /// * Revealed: `W − B` for a fixed random `B` that is used for nothing else.
    /// * Rounds 1; online bytes 8·|w| per computing party, once per model; correlations: one
    ///   fixed `B` (from the seeds: no dealer traffic).
    pub async fn preopen(&mut self, op: Bilinear, w: &AShare) -> Result<PreopenedWeights> {
        let top = self.begin("preopen")?;
        let r = async {
            let (handle, b) = self.corr.register_fixed_b(&mut self.ch, op, w.shape()).await?;
            let e = if self.placeholder() {
                None
            } else {
                let e_i = mask(w.expose_share()?, b.expose_share()?)?;
                self.open_inner(&[&AShare::from_share(e_i)]).await?.map(|mut v| v.pop().expect("one tensor"))
            };
            Ok(PreopenedWeights { op, handle, e, w: w.clone() })
        }
        .await;
        self.finish(top, r).await
    }

    /// [`Party::preopen`] for several weight tensors in one round (one message each way): how
    /// a model's layers are pre-opened together.
    pub async fn preopen_many(&mut self, items: &[(Bilinear, &AShare)]) -> Result<Vec<PreopenedWeights>> {
        let top = self.begin("preopen")?;
        let r = async {
            let mut handles = Vec::with_capacity(items.len());
            let mut masked = Vec::with_capacity(items.len());
            for (op, w) in items {
                let (handle, b) = self.corr.register_fixed_b(&mut self.ch, *op, w.shape()).await?;
                if !self.placeholder() {
                    masked.push(AShare::from_share(mask(w.expose_share()?, b.expose_share()?)?));
                }
                handles.push(handle);
            }
            let opened = if self.placeholder() || items.is_empty() {
                None
            } else {
                self.open_inner(&masked.iter().collect::<Vec<_>>()).await?
            };
            let mut opened = opened.map(|v| v.into_iter());
            Ok(items
                .iter()
                .zip(handles)
                .map(|((op, w), handle)| PreopenedWeights {
                    op: *op,
                    handle,
                    e: opened.as_mut().and_then(|o| o.next()),
                    w: (*w).clone(),
                })
                .collect())
        }
        .await;
        self.finish(top, r).await
    }

    /// `f(x, W)` for pre-opened weights (`op` as given to [`Party::preopen`]), optionally
    /// truncated.
    ///
    /// * Secret input `x`. Revealed: `X − A` (uniform).
    /// * Rounds 1; online bytes 8·|x| per computing party; one fixed-B triple (dealer sends P1
    ///   8·|output| bytes, P0 nothing).
    pub async fn apply_preopened(&mut self, x: &AShare, w: &PreopenedWeights, trunc: bool) -> Result<AShare> {
        let top = self.begin(w.op.name())?;
        let r = async {
            let zs = w.op.output_shape(x.shape(), w.shape())?;
            let t = self.corr.fixed_b_triple(&mut self.ch, w.handle, x.shape()).await?;
            if self.placeholder() {
                return Ok(AShare::dealer(&zs));
            }
            let d_i = mask(x.expose_share()?, t.a.expose_share()?)?;
            let d = self
                .open_inner(&[&AShare::from_share(d_i)])
                .await?
                .expect("computing party")
                .pop()
                .expect("one tensor");
            let e = w.e.as_ref().expect("computing party holds E");
            let z = combine(w.op, &d, e, w.w.expose_share()?, t.a.expose_share()?, t.c.expose_share()?)?;
            Ok(AShare::from_share(z))
        }
        .await;
        let r = match r {
            Ok(z) if trunc => self.truncate_products(vec![z]).await.map(|mut v| v.remove(0)),
            r => r,
        };
        self.finish(top, r).await
    }

    /// Several independent [`Party::apply_preopened`] in one round: every input's masked
    /// difference is opened in one message (the layers of a graph that read only tensors
    /// computed before any of them — a residual block's shortcut and main convolutions,
    /// SqueezeNet's parallel expand convolutions). Same material and bytes as one at a time.
    pub async fn apply_preopened_many(
        &mut self,
        items: &[(&AShare, &PreopenedWeights)],
        trunc: bool,
    ) -> Result<Vec<AShare>> {
        if items.len() == 1 {
            return Ok(vec![self.apply_preopened(items[0].0, items[0].1, trunc).await?]);
        }
        let top = self.begin(items.first().map_or("bilinear", |(_, w)| w.op.name()))?;
        let r = async {
            let mut triples = Vec::with_capacity(items.len());
            let mut shapes = Vec::with_capacity(items.len());
            for (x, w) in items {
                shapes.push(w.op.output_shape(x.shape(), w.shape())?);
                triples.push(self.corr.fixed_b_triple(&mut self.ch, w.handle, x.shape()).await?);
            }
            if self.placeholder() {
                return Ok(shapes.iter().map(|s| AShare::dealer(s)).collect());
            }
            let masked: Vec<AShare> = items
                .iter()
                .zip(&triples)
                .map(|((x, _), t)| Ok(AShare::from_share(mask(x.expose_share()?, t.a.expose_share()?)?)))
                .collect::<Result<_>>()?;
            let refs: Vec<&AShare> = masked.iter().collect();
            let opened = self.open_inner(&refs).await?.expect("computing party");
            let mut out = Vec::with_capacity(items.len());
            for (((_, w), t), d) in items.iter().zip(&triples).zip(&opened) {
                let e = w.e.as_ref().expect("computing party holds E");
                let z = combine(w.op, d, e, w.w.expose_share()?, t.a.expose_share()?, t.c.expose_share()?)?;
                out.push(AShare::from_share(z));
            }
            Ok(out)
        }
        .await;
        let r = match r {
            Ok(zs) if trunc => self.truncate_products(zs).await,
            r => r,
        };
        self.finish(top, r).await
    }

    /// `x · W` with pre-opened weights, truncated: the fixed-point linear layer without bias.
    pub async fn matmul_preopened(&mut self, x: &AShare, w: &PreopenedWeights) -> Result<AShare> {
        self.apply_preopened(x, w, true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prg::Prg;

    /// The pure steps reproduce f(X, Y) from two parties' halves, for every op.
    #[test]
    fn mask_and_combine_reconstruct() {
        let mut g = Prg::from_u64(11);
        let p = Conv2dParams::new((1, 1), (1, 1));
        for (op, xs, ys) in [
            (Bilinear::Mul, vec![3, 4], vec![3, 4]),
            (Bilinear::MatMul, vec![5, 7], vec![7, 2]),
            (Bilinear::Conv2d(p), vec![2, 3, 5, 5], vec![4, 3, 3, 3]),
        ] {
            let r = |s: &[usize], g: &mut Prg| RingTensor::random(s, g);
            let (x, y) = (r(&xs, &mut g), r(&ys, &mut g));
            let (a0, a1, b0, b1) = (r(&xs, &mut g), r(&xs, &mut g), r(&ys, &mut g), r(&ys, &mut g));
            let c = op.apply(&a0.add(&a1).unwrap(), &b0.add(&b1).unwrap()).unwrap();
            let c0 = r(c.shape(), &mut g);
            let c1 = c.sub(&c0).unwrap();
            let (x0, y0) = (r(&xs, &mut g), r(&ys, &mut g));
            let (x1, y1) = (x.sub(&x0).unwrap(), y.sub(&y0).unwrap());
            let d = mask(&x0, &a0).unwrap().add(&mask(&x1, &a1).unwrap()).unwrap();
            let e = mask(&y0, &b0).unwrap().add(&mask(&y1, &b1).unwrap()).unwrap();
            let z0 = combine(op, &d, &e, &y0, &a0, &c0).unwrap();
            let z1 = combine(op, &d, &e, &y1, &a1, &c1).unwrap();
            assert_eq!(z0.add(&z1).unwrap(), op.apply(&x, &y).unwrap(), "{op:?}");
        }
    }
}
