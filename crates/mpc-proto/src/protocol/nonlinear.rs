//! Comparison, ReLU, selection, max/argmax, pooling and smooth functions.
//!
//! Every comparison-based operation opens a masked value `y = x + r` and computes shares of
//! `[x ≥ 0]` (and of `ReLU(x)`) by one of the three methods of [`crate::compare`] — the online
//! helper, compact FSS or one-round FSS — chosen per operation by the party's
//! [`Comparisons`](crate::compare::Comparisons) settings (the session's, or a plan step's set
//! with [`Party::set_comparisons`]). Costs per method are in the table of [`crate::compare`];
//! each operation's documentation gives its rounds per comparison layer.
//!
//! Bits (outputs of comparisons) are shares of the *integers* 0 and 1, not fixed-point values.

use crate::approx::{self, Spline};
use crate::compare::cost::{self, OpShape};
use crate::compare::{self as cmp, Method, Policy, Window, helper};
use crate::correlations::{Bilinear, Gate, GateRequest, HelperState};
use crate::error::{Error, Result};
use crate::fixed::Truncation;
use crate::fss::{FssError, Relu64Gate, SignGate};
use crate::party::{Party, PartyId};
use crate::ring::RingTensor;
use crate::share::AShare;
use crate::transport::FrameKind;

fn low_mask(bits: u32) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

/// Dealer material that fails to evaluate after the opening: the transcript is lost, so this
/// poisons the party (unlike a caller's invalid input).
fn material_error(e: FssError) -> Error {
    Error::Desync { peer: PartyId::P2, detail: format!("comparison material does not evaluate: {e}") }
}

/// One comparison layer's outputs at a computing party, per element-point `q = e·points + j`.
pub(super) struct Compared {
    /// Shares of `[x_e − p_j ≥ 0]`.
    pub(super) ge: Vec<u64>,
    /// Shares of `ReLU(x_e − p_j)` when asked for.
    pub(super) relu: Option<Vec<u64>>,
}

impl Party {
    /// The comparison window `k` in force: comparisons are exact for `|x| < 2^(k−1)` ulps (see
    /// [`crate::compare`] for what happens outside).
    pub fn cmp_bits(&self) -> u32 {
        u32::from(self.cmp.bits)
    }

    /// The method the settings in force give an operation of this shape.
    fn method_for(&self, op: &OpShape) -> Method {
        match self.cmp.policy {
            Policy::Fixed(m) => m,
            Policy::Auto => cost::choose_one(&self.cmp.link, self.cmp.objective, op),
        }
    }

    /// Opens `x + r mod 2^bits` (⌈bits/8⌉ bytes per element each way); one round.
    async fn open_masked(&mut self, x: &RingTensor, r: &RingTensor, bits: u32) -> Result<Vec<u64>> {
        let bpe = bits.div_ceil(8) as usize;
        let mask = low_mask(bits);
        let mut mine = Vec::with_capacity(x.len() * bpe);
        for (a, b) in x.as_slice().iter().zip(r.as_slice()) {
            mine.extend_from_slice(&(a.wrapping_add(*b) & mask).to_le_bytes()[..bpe]);
        }
        let theirs = self.ch.exchange_bytes(self.id.peer(), FrameKind::Open, &mine).await?;
        let mut y = Vec::with_capacity(x.len());
        for (a, b) in mine.chunks_exact(bpe).zip(theirs.chunks_exact(bpe)) {
            let (mut wa, mut wb) = ([0u8; 8], [0u8; 8]);
            wa[..bpe].copy_from_slice(a);
            wb[..bpe].copy_from_slice(b);
            y.push(u64::from_le_bytes(wa).wrapping_add(u64::from_le_bytes(wb)) & mask);
        }
        Ok(y)
    }

    /// One comparison layer: shares of `[x − p_j ≥ 0]` (and `ReLU(x − p_j)` if `relu`) for every
    /// element of `x` and every public point `p_j` (ring values), by the method the settings in
    /// force choose. `None` on the dealer and in the offline pass.
    async fn compare_layer(&mut self, x: &AShare, points: &[u64], relu: bool) -> Result<Option<Compared>> {
        if self.is_two_party() {
            return self.compare_layer_2pc(x, points, relu).await;
        }
        let (n, pts) = (x.len(), points.len());
        let bits = self.cmp_bits();
        let method = self.method_for(&OpShape { elements: n, points: pts, relu, bits, sequential: 1 });
        let req = GateRequest { method, len: n, bits, points: pts, relu };
        let gate = self.corr.gate(&mut self.ch, req).await?;
        if self.in_offline_pass() {
            return Ok(None);
        }
        let me = self.id.0;
        match gate {
            Gate::HelperState(st) => {
                self.helper_respond(&req, st).await?;
                return Ok(None);
            }
            Gate::Placeholder if self.is_dealer() => return Ok(None),
            _ => {}
        }
        let xs = x.expose_share()?;
        // Full 64-bit opening where ReLU values or shifted points are needed, k bits otherwise.
        let wide = relu || pts > 1;
        let nq = n * pts;
        let shifted = |y: &[u64]| -> Vec<u64> { (0..nq).map(|q| y[q / pts].wrapping_sub(points[q % pts])).collect() };
        let p0 = self.id == PartyId::P0;
        match gate {
            Gate::Sign(m) if !wide => {
                let y = self.open_masked(xs, &m.r, bits).await?;
                let ys = shifted(&y);
                let mut lt = vec![0u64; nq];
                SignGate::eval_packed(me, &m.keys, &ys, &mut lt).map_err(material_error)?;
                let ge = lt.iter().map(|&v| u64::from(p0).wrapping_sub(v)).collect();
                Ok(Some(Compared { ge, relu: None }))
            }
            Gate::Relu64(m) => {
                let y = self.open_masked(xs, &m.r, 64).await?;
                let (mut ge, mut rl) = (vec![0u64; nq], vec![0u64; nq]);
                let (mut yj, mut oj, mut bj) = (vec![0u64; n], vec![0u64; n], vec![0u64; n]);
                for (j, &p) in points.iter().enumerate() {
                    yj.iter_mut().zip(&y).for_each(|(o, &v)| *o = v.wrapping_sub(p));
                    Relu64Gate::eval_packed(me, &m.keys, &yj, &mut oj, &mut bj).map_err(material_error)?;
                    for e in 0..n {
                        rl[e * pts + j] = oj[e];
                        ge[e * pts + j] = bj[e];
                    }
                }
                Ok(Some(Compared { ge, relu: relu.then_some(rl) }))
            }
            Gate::Compact(m) => {
                let y = self.open_masked(xs, &m.r, if wide { 64 } else { bits }).await?;
                let ys = shifted(&y);
                // Round 2: the select bits (one per element-point each way).
                let mut c = Vec::with_capacity(nq);
                m.keys.eval(me, &ys, pts, &mut c).map_err(material_error)?;
                let mut mine = Vec::with_capacity(nq.div_ceil(8));
                cmp::pack_bits(&c, &mut mine);
                let theirs = self.ch.exchange_bytes(self.id.peer(), FrameKind::Open, &mine).await?;
                let theirs = cmp::unpack_bits(&theirs, nq);
                let w = Window::new(bits);
                let e: Vec<u8> = (0..nq).map(|q| w.split_open(ys[q]).0 ^ c[q] ^ theirs[q]).collect();
                Ok(Some(finish(p0, &e, &ys, pts, m.r.as_slice(), &m.v, m.vr.as_deref())))
            }
            Gate::Helper(mut m) => {
                let y = self.open_masked(xs, &m.r, if wide { 64 } else { bits }).await?;
                m.resolve(&mut self.ch).await?;
                let ys = shifted(&y);
                let w = Window::new(bits);
                let mut f = self.ch.begin_frame(PartyId::P2, FrameKind::Helper, helper::term_bytes(w, nq));
                let common = self.common.as_mut().expect("computing parties hold the common stream");
                let mut terms = Vec::with_capacity(nq * w.bits() as usize);
                let e = helper::terms(p0, w, &ys, pts, m.bits()?, common, &mut terms);
                helper::pack7(&terms, f.payload());
                self.ch.send_frame(f).await?;
                self.ch.stats.record_round();
                let outs = nq * (1 + usize::from(relu));
                let (v, vr) = match (m.v, m.vr) {
                    (Some(v), vr) => (v, vr),
                    (None, _) => {
                        let words = self.ch.recv_u64(PartyId::P2, FrameKind::Helper, outs).await?;
                        self.ch.stats.record_round();
                        let vr = relu.then(|| words[nq..].to_vec());
                        (words[..nq].to_vec(), vr)
                    }
                };
                Ok(Some(finish(p0, &e, &ys, pts, m.r.as_slice(), &v, vr.as_deref())))
            }
            other => Err(Error::Desync {
                peer: PartyId::P2,
                detail: format!("a {method} comparison got material {other:?}"),
            }),
        }
    }

    /// P2's online step of a helper comparison: zero-test both parties' terms and send P1 its
    /// output shares.
    async fn helper_respond(&mut self, req: &GateRequest, st: HelperState) -> Result<()> {
        let w = Window::new(req.bits);
        let nq = req.len * req.points;
        let len = helper::term_bytes(w, nq);
        let (r0, s0) = self.ch.recv_frame(PartyId::P0, FrameKind::Helper, Some(len)).await?;
        let (r1, s1) = self.ch.recv_frame(PartyId::P1, FrameKind::Helper, Some(len)).await?;
        self.ch.stats.record_round();
        let terms = nq * w.bits() as usize;
        let mut z = Vec::with_capacity(nq);
        helper::zero_test(w, &helper::unpack7(&r0[s0..], terms), &helper::unpack7(&r1[s1..], terms), &mut z);
        let mut f = self.ch.begin_frame(PartyId::P1, FrameKind::Helper, 8 * nq * (1 + usize::from(req.relu)));
        helper::respond(w, req.points, &st.r, &z, &st.v0, st.vr0.as_deref(), f.payload());
        self.ch.send_frame(f).await?;
        self.ch.stats.record_round();
        Ok(())
    }

    /// Shares of `[x < 0]` (integer bits).
    ///
    /// * Secret input `x`; revealed: `x + r` for a uniform one-time mask `r` (nothing), and
    ///   by the methods' second messages only uniform values ([`crate::compare`]).
    /// * Rounds: 1 (`fss1`), 2 (`fss`), 3 (`helper`, P1's critical path). Online bytes per
    ///   element per party: ⌈k/8⌉ to the peer, plus 1/8 (`fss`) or `k` to P2 and 8 back to P1
    ///   (`helper`). Material per element: `36 + 24·(k−1)` (`fss1`), `16·(k−7) + 58`
    ///   (`fss`, P1), `k − 1` bytes (`helper`, P1 only).
    /// * Exact for `|x| < 2^(k−1)` ([`Party::cmp_bits`]).
    pub async fn ltz(&mut self, x: &AShare) -> Result<AShare> {
        let top = self.begin("cmp")?;
        let r = self.ltz_inner(x).await;
        self.finish(top, r).await
    }

    async fn ltz_inner(&mut self, x: &AShare) -> Result<AShare> {
        match self.compare_layer(x, &[0], false).await? {
            None => Ok(AShare::dealer(x.shape())),
            Some(c) => self.one_minus(&AShare::from_share(RingTensor::from_vec(x.shape(), c.ge)?)),
        }
    }

    /// Shares of `[x < y]`. See [`Party::ltz`] for costs.
    pub async fn lt(&mut self, x: &AShare, y: &AShare) -> Result<AShare> {
        self.ltz(&x.sub(y)?).await
    }

    /// Shares of `[x > y]`. See [`Party::ltz`] for costs.
    pub async fn gt(&mut self, x: &AShare, y: &AShare) -> Result<AShare> {
        self.ltz(&y.sub(x)?).await
    }

    /// Shares of `[x ≥ y]` (= `1 − [x < y]`). See [`Party::ltz`] for costs.
    pub async fn ge(&mut self, x: &AShare, y: &AShare) -> Result<AShare> {
        let b = self.lt(x, y).await?;
        self.one_minus(&b)
    }

    /// Shares of `[x ≤ y]` (= `1 − [x > y]`). See [`Party::ltz`] for costs.
    pub async fn le(&mut self, x: &AShare, y: &AShare) -> Result<AShare> {
        let b = self.gt(x, y).await?;
        self.one_minus(&b)
    }

    /// Shares of `[x < c]` for a public tensor `c` (ring values, e.g. encoded reals).
    pub async fn lt_public(&mut self, x: &AShare, c: &RingTensor) -> Result<AShare> {
        let d = self.add_public(x, &c.neg())?;
        self.ltz(&d).await
    }

    /// `1 − b` for integer bit shares (local).
    pub fn one_minus(&self, b: &AShare) -> Result<AShare> {
        self.add_public(&b.neg(), &RingTensor::filled(b.shape(), 1))
    }

    /// `ReLU(x) = max(x, 0)`.
    ///
    /// * Rounds: 1 (`fss1`), 2 (`fss`), 3 (`helper`). Online bytes per element per party: 8
    ///   (the full 64-bit masked value, so `x = y − r` exactly), plus 1/8 (`fss`) or `k` to P2
    ///   and 16 back to P1 (`helper`). Material per element: `60 + 32·(k−1)` (`fss1`),
    ///   `16·(k−7) + 66` (`fss`, P1), `k − 1` (`helper`, P1 only). Exact for `|x| < 2^(k−1)`.
    pub async fn relu(&mut self, x: &AShare) -> Result<AShare> {
        Ok(self.relu_with_bit(x).await?.0)
    }

    /// `(ReLU(x), [x ≥ 0])` from one comparison: the bit is what training needs for the
    /// backward pass and what max/argmax need for selection. Costs as [`Party::relu`].
    pub async fn relu_with_bit(&mut self, x: &AShare) -> Result<(AShare, AShare)> {
        let top = self.begin("relu")?;
        let r = self.relu_inner(x).await;
        self.finish(top, r).await
    }

    async fn relu_inner(&mut self, x: &AShare) -> Result<(AShare, AShare)> {
        match self.compare_layer(x, &[0], true).await? {
            None => Ok((AShare::dealer(x.shape()), AShare::dealer(x.shape()))),
            Some(c) => Ok((
                AShare::from_share(RingTensor::from_vec(x.shape(), c.relu.expect("asked for ReLU"))?),
                AShare::from_share(RingTensor::from_vec(x.shape(), c.ge)?),
            )),
        }
    }

    /// `b ? x : y` elementwise for integer bit shares `b`: `y + b·(x − y)`.
    ///
    /// * Rounds 1; online 16 bytes per element per party; one elementwise triple. Exact.
    pub async fn select(&mut self, b: &AShare, x: &AShare, y: &AShare) -> Result<AShare> {
        let d = x.sub(y)?;
        let bd = self.mul(b, &d).await?;
        bd.add(y)
    }

    /// Maximum along `axis` (removed from the shape).
    ///
    /// A tree of `max(a, b) = b + ReLU(a − b)`: ⌈log2 L⌉ rounds for an axis of length L, one
    /// ReLU gate per comparison (L − 1 per reduced row). Exact.
    pub async fn max(&mut self, x: &AShare, axis: usize) -> Result<AShare> {
        let top = self.begin("max")?;
        let r = async {
            let (moved, outer, len) = move_axis_last(x, axis)?;
            let m = self.max_last(&moved, outer, len).await?;
            let mut shape = x.shape().to_vec();
            shape.remove(axis);
            m.reshape(&shape)
        }
        .await;
        self.finish(top, r).await
    }

    /// Max over the last axis of a `[outer, len]` share → `[outer]`.
    async fn max_last(&mut self, x: &AShare, outer: usize, mut len: usize) -> Result<AShare> {
        if len == 0 {
            return Err(Error::InvalidInput("max over an empty axis".into()));
        }
        let mut cur = x.clone();
        while len > 1 {
            let pairs = len / 2;
            let (a, b, rest) = split_pairs(&cur, outer, len)?;
            let (r, _) = self.relu_inner(&a.sub(&b)?).await?;
            let m = b.add(&r)?;
            cur = concat_last(&m, rest.as_ref(), outer, pairs)?;
            len = pairs + usize::from(rest.is_some());
        }
        cur.reshape(&[outer])
    }

    /// One-hot argmax over the last axis: shares of integer bits, shape unchanged, a single 1 per
    /// row at the **first** maximal position (ties go to the lower index).
    ///
    /// Per tree level: one ReLU gate (compare and max, 1 round) and one select of the one-hot
    /// vectors (1 round): 2·⌈log2 L⌉ rounds. Exact.
    pub async fn argmax(&mut self, x: &AShare) -> Result<AShare> {
        let top = self.begin("argmax")?;
        let r = self.argmax_inner(x).await;
        self.finish(top, r).await
    }

    async fn argmax_inner(&mut self, x: &AShare) -> Result<AShare> {
        let shape = x.shape().to_vec();
        let Some(&len) = shape.last() else { return Err(Error::InvalidInput("argmax of a scalar".into())) };
        if len == 0 {
            return Err(Error::InvalidInput("argmax over an empty axis".into()));
        }
        let outer = x.len() / len;
        // Candidates: values [outer, c] and one-hot rows [outer, c, len].
        let mut vals = x.reshape(&[outer, len])?;
        let eye: Vec<u64> =
            (0..outer).flat_map(|_| (0..len).flat_map(move |i| (0..len).map(move |j| u64::from(i == j)))).collect();
        let mut hot = self.add_public(
            &AShare::dealer_or_zero(self.placeholder(), &[outer, len * len]),
            &RingTensor::from_vec(&[outer, len * len], eye)?,
        )?;
        let mut c = len;
        while c > 1 {
            let pairs = c / 2;
            let (a, b, rest) = split_pairs(&vals, outer, c)?;
            let (ha, hb, hrest) = split_pairs_blocks(&hot, outer, c, len)?;
            let (r, bit) = self.relu_inner(&a.sub(&b)?).await?; // bit = [a ≥ b]: left wins ties
            let m = b.add(&r)?;
            // hot = hb + bit·(ha − hb), with bit repeated over each one-hot block.
            let bit_rep = repeat_inner(&bit, len)?.reshape(ha.shape())?;
            let sel = self.beaver(Bilinear::Mul, &bit_rep, &ha.sub(&hb)?).await?;
            let h = hb.add(&sel)?;
            vals = concat_last(&m, rest.as_ref(), outer, pairs)?;
            hot = concat_last(&h, hrest.as_ref(), outer, pairs * len)?;
            c = pairs + usize::from(rest.is_some());
        }
        hot.reshape(&shape)
    }

    /// Max pooling `[n, c, h, w] → [n, c, oh, ow]` (ONNX MaxPool: padding never wins).
    ///
    /// Local gather of the windows, then the [`Party::max`] tree: ⌈log2(kh·kw)⌉ rounds, one ReLU
    /// gate per comparison. Exact.
    pub async fn maxpool2d(
        &mut self,
        x: &AShare,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<AShare> {
        self.maxpool2d_ceil(x, kernel, stride, padding, false).await
    }

    /// [`Party::maxpool2d`] with ONNX/PyTorch `ceil_mode`: with `ceil_mode` the output size
    /// rounds up ([`crate::ring::pool_out_len`]) and the last windows may overhang the input
    /// (their overhang, like padding, never wins). Same cost per window.
    pub async fn maxpool2d_ceil(
        &mut self,
        x: &AShare,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        ceil_mode: bool,
    ) -> Result<AShare> {
        let top = self.begin("maxpool")?;
        let r = async {
            let (out_shape, idx) = window_indices(x.shape(), kernel, stride, padding, ceil_mode)?;
            let k = kernel.0 * kernel.1;
            let outer: usize = out_shape.iter().product();
            let g = x.map_linear(
                |_| Ok(vec![outer, k]),
                |t| RingTensor::from_vec(&[outer, k], idx.iter().map(|&i| t.as_slice()[i]).collect()),
            )?;
            self.max_last(&g, outer, k).await?.reshape(&out_shape)
        }
        .await;
        self.finish(top, r).await
    }

    /// Evaluates a public piecewise-linear [`Spline`] on fixed-point `x`.
    ///
    /// One comparison layer with the spline's `m` breakpoints as evaluation points (one mask
    /// per element, so one `fss1` key serves all of them) gives shares of `[x ≥ p_j]` and
    /// `ReLU(x − p_j)`; from them the active piece's `a + b·x` follows by exact ring identities
    /// (only the active piece contributes), then one truncation as the session's
    /// [`Party::set_truncation`] says — none when every slope is an integer (Clip, ReLU6).
    ///
    /// * Rounds as one comparison layer (1, 2 or 3 by method) per chunk of at most
    ///   [`SPLINE_CHUNK_POINTS`] element-points ([`spline_chunks`]), plus 1 with exact
    ///   truncation of a spline with fractional slopes (and 8 more bytes per element). Online bytes per element per
    ///   party: 8, plus `m/8` (`fss`) or `m·k` to P2 and `16·m` back to P1 (`helper`); material
    ///   per element: one ReLU key (`fss1`), one compact key plus `16·m` (`fss`), `k − 1`
    ///   (`helper`). Error: the spline's own error plus 2^-16 (coefficient rounding over a
    ///   piece at most 2 wide) plus 1 ulp (truncation), valid for `|x − p_j| < 2^(k−1)`.
    pub async fn spline(&mut self, x: &AShare, s: &Spline) -> Result<AShare> {
        let top = self.begin("spline")?;
        let t = self.truncation;
        let r = async {
            let n = x.len();
            let per = spline_chunk_len(s.len());
            if n <= per {
                return self.spline_inner(x, s, t).await;
            }
            // Bounded memory: at most SPLINE_CHUNK_POINTS element-points of material at once,
            // one comparison layer per chunk, then one truncation for all.
            let flat = x.reshape(&[n])?;
            let mut parts = Vec::with_capacity(n.div_ceil(per));
            for a in (0..n).step_by(per) {
                let b = (a + per).min(n);
                let chunk = flat
                    .map_linear(|_| Ok(vec![b - a]), |v| RingTensor::from_vec(&[b - a], v.as_slice()[a..b].to_vec()))?;
                parts.push(self.spline_raw(&chunk, s).await?);
            }
            let z = if self.placeholder() || parts.iter().any(AShare::is_dealer) {
                AShare::dealer(x.shape())
            } else {
                let mut v = Vec::with_capacity(n);
                for p in &parts {
                    v.extend_from_slice(p.expose_share()?.as_slice());
                }
                AShare::from_share(RingTensor::from_vec(x.shape(), v)?)
            };
            if s.integral_slopes() { Ok(z) } else { Ok(self.truncate_as(t, vec![z]).await?.remove(0)) }
        }
        .await;
        self.finish(top, r).await
    }

    /// [`Party::spline`] with truncation `t`: the session's for a network's activations, local
    /// for the bounded internal splines of sigmoid, exp, reciprocal and softmax (few values, in
    /// `[0, 2^14]`).
    async fn spline_inner(&mut self, x: &AShare, s: &Spline, t: Truncation) -> Result<AShare> {
        let z = self.spline_raw(x, s).await?;
        if s.integral_slopes() { Ok(z) } else { Ok(self.truncate_as(t, vec![z]).await?.remove(0)) }
    }

    /// The spline before its truncation: values at scale `2^(2f)`, or `2^f` with integer
    /// slopes (a placeholder on the dealer and in an offline pass).
    async fn spline_raw(&mut self, x: &AShare, s: &Spline) -> Result<AShare> {
        let fx = self.fixed();
        let f = fx.frac_bits;
        // Piece j is c_j + b_j·(x − p_j): as a ring polynomial A_j + B_j·x at scale 2^(2f) with
        // B_j = enc(b_j) and A_j = enc2(c_j) − B_j·enc(p_j), exact in the ring. With integer
        // slopes, B_j = b_j and A_j = enc(c_j) − b_j·enc(p_j) at scale 2^f: nothing to truncate.
        let integral = s.integral_slopes();
        let enc = |v: f64| ((v * (1u64 << f) as f64).round() as i64) as u64;
        let enc_a = |v: f64| {
            let scale = if integral { 1u64 << f } else { 1u64 << (2 * f) };
            ((v * scale as f64).round() as i64) as u64
        };
        let enc_b = |v: f64| if integral { (v as i64) as u64 } else { enc(v) };
        let coef = |j: usize| {
            let b = enc_b(s.b[j]);
            (enc_a(s.a[j]).wrapping_sub(b.wrapping_mul(enc(s.anchor(j)))), b)
        };
        let points: Vec<u64> = s.breaks.iter().map(|&p| enc(p)).collect();
        let Some(c) = self.compare_layer(x, &points, true).await? else {
            return Ok(AShare::dealer(x.shape()));
        };
        let relu = c.relu.expect("asked for ReLU");
        let xs = x.expose_share()?;
        let m = points.len();
        // acc = B_0·x (+ A_0 on P0).
        let (a0, b0) = coef(0);
        let mut acc: Vec<u64> = xs.as_slice().iter().map(|v| v.wrapping_mul(b0)).collect();
        if self.id == PartyId::P0 {
            acc.iter_mut().for_each(|v| *v = v.wrapping_add(a0));
        }
        let mut prev = (a0, b0);
        for (j, &pj) in points.iter().enumerate() {
            // x·[x ≥ p] = ReLU(x − p) + p·[x ≥ p]; the pieces' deltas telescope.
            let cur = coef(j + 1);
            let (da, db) = (cur.0.wrapping_sub(prev.0), cur.1.wrapping_sub(prev.1));
            prev = cur;
            let bit_coef = da.wrapping_add(db.wrapping_mul(pj));
            for (e, acc) in acc.iter_mut().enumerate() {
                let q = e * m + j;
                *acc = acc.wrapping_add(db.wrapping_mul(relu[q])).wrapping_add(bit_coef.wrapping_mul(c.ge[q]));
            }
        }
        Ok(AShare::from_share(RingTensor::from_vec(x.shape(), acc)?))
    }

    /// Logistic sigmoid on fixed-point `x`: |error| ≤ 10^-3 on [−16, 16] (spline 5·10^-4 plus
    /// fixed-point rounding), saturating to 0 / 1 outside. One comparison layer of 28 points;
    /// see [`Party::spline`] (its truncation is always local: the outputs lie in [0, 1]).
    pub async fn sigmoid(&mut self, x: &AShare) -> Result<AShare> {
        let top = self.begin("spline")?;
        let r = self.spline_inner(x, approx::sigmoid(), Truncation::Local).await;
        self.finish(top, r).await
    }

    /// `e^x` on fixed-point `x`: error ≤ max(10^-3·e^x, 2^-15) on [−16, 4], 0 below −16,
    /// `e^4` above 4. One comparison layer; see [`Party::spline`].
    pub async fn exp(&mut self, x: &AShare) -> Result<AShare> {
        let top = self.begin("spline")?;
        let r = self.spline_inner(x, approx::exp(), Truncation::Local).await;
        self.finish(top, r).await
    }

    /// `1/x` for fixed-point `x` in [2^-6, 2^14].
    ///
    /// Normalise with a step spline `s = 2^-k` so that `z = x·s ∈ [1, 2)` (exact powers of two),
    /// approximate `1/z` with a spline (relative error 2.5·10^-4), and scale back: `s · (1/z)`.
    /// Rounds 4 (two splines, two products); online 48 bytes per element per party;
    /// offline two ReLU keys per element per party. Error ≤ 3·10^-4 relative plus 1 ulp absolute
    /// (so relative 10^-3 wherever `1/x ≥ 2^-6`; below that, fixed point's 2^-16 dominates).
    pub async fn reciprocal(&mut self, x: &AShare) -> Result<AShare> {
        let top = self.begin("reciprocal")?;
        let r = self.reciprocal_inner(x).await;
        self.finish(top, r).await
    }

    async fn reciprocal_inner(&mut self, x: &AShare) -> Result<AShare> {
        let s = self.spline_inner(x, approx::pow2_normalizer(), Truncation::Local).await?;
        let z = self.beaver_fixed(Bilinear::Mul, x, &s).await?;
        let u = self.spline_inner(&z, approx::reciprocal_unit(), Truncation::Local).await?;
        self.beaver_fixed(Bilinear::Mul, &s, &u).await
    }

    /// `x / d` for a secret positive `d` in [2^-6, 2^14] (elementwise): `x · reciprocal(d)`.
    /// Rounds 5. Error: `|x|·ε(1/d)` plus 1 ulp.
    pub async fn div(&mut self, x: &AShare, d: &AShare) -> Result<AShare> {
        let inv = self.reciprocal(d).await?;
        self.mul_fixed(x, &inv).await
    }

    /// Softmax over the last axis: `e^(x − max) / Σ e^(x − max)`.
    ///
    /// Max tree (⌈log2 L⌉ rounds), one spline for the exponentials (1 round), a local sum, the
    /// reciprocal of the sum in [1, L] (4 rounds) and one product (1 round). |error| ≤ 10^-3 per
    /// probability for logits in [−32, 32].
    pub async fn softmax(&mut self, x: &AShare) -> Result<AShare> {
        let top = self.begin("softmax")?;
        let r = async {
            let shape = x.shape().to_vec();
            let Some(&len) = shape.last() else { return Err(Error::InvalidInput("softmax of a scalar".into())) };
            let outer = x.len() / len.max(1);
            let x2 = x.reshape(&[outer, len])?;
            let m = self.max_last(&x2, outer, len).await?;
            let d = x2.sub(&repeat_inner(&m, len)?)?;
            let e = self.spline_inner(&d, approx::exp_nonpositive(), Truncation::Local).await?;
            let sum = e.sum_axis(1)?;
            let inv = self.reciprocal_inner(&sum).await?;
            let p = self.beaver_fixed(Bilinear::Mul, &e, &repeat_inner(&inv, len)?).await?;
            p.reshape(&shape)
        }
        .await;
        self.finish(top, r).await
    }
}

/// Most element-points (elements × breakpoints) of one comparison layer of [`Party::spline`]:
/// a larger spline runs in chunks of elements, one comparison layer each, so its material at
/// once stays bounded (a 300-point GELU over a 16×32×32 activation would otherwise hold
/// gigabytes of keys).
pub const SPLINE_CHUNK_POINTS: usize = 1 << 18;

/// Elements per chunk of a spline with `points` breakpoints.
pub fn spline_chunk_len(points: usize) -> usize {
    (SPLINE_CHUNK_POINTS / points.max(1)).max(1)
}

/// Comparison layers [`Party::spline`] runs for `elements` values and `points` breakpoints.
pub fn spline_chunks(elements: usize, points: usize) -> usize {
    elements.div_ceil(spline_chunk_len(points)).max(1)
}

/// Shares of the bits (and ReLUs) of element-points from the public bits `e`, the opened
/// shifted values `ys`, and this party's shares of the masks `r` (one per element) and of `v`,
/// `v·r` (one per element-point): [`cmp::finish_bit`], [`cmp::finish_relu`].
fn finish(p0: bool, e: &[u8], ys: &[u64], points: usize, r: &[u64], v: &[u64], vr: Option<&[u64]>) -> Compared {
    let ge = e.iter().zip(v).map(|(&e, &v)| cmp::finish_bit(p0, e, v)).collect();
    let relu =
        vr.map(|vr| (0..e.len()).map(|q| cmp::finish_relu(p0, e[q], ys[q], r[q / points], v[q], vr[q])).collect());
    Compared { ge, relu }
}

impl AShare {
    /// Zeros for computing parties, a placeholder on the dealer.
    pub(crate) fn dealer_or_zero(placeholder: bool, shape: &[usize]) -> AShare {
        if placeholder { AShare::dealer(shape) } else { AShare::from_share(RingTensor::zeros(shape)) }
    }
}

/// Moves `axis` to the end: returns the share as `[outer, len]`.
fn move_axis_last(x: &AShare, axis: usize) -> Result<(AShare, usize, usize)> {
    let shape = x.shape().to_vec();
    if axis >= shape.len() {
        return Err(Error::ShapeMismatch { op: "max", lhs: shape, rhs: vec![axis] });
    }
    let len = shape[axis];
    let outer = x.len() / len.max(1);
    let moved = x.map_linear(
        |_| Ok(vec![outer, len]),
        |t| {
            let mut perm: Vec<usize> = (0..shape.len()).filter(|&i| i != axis).collect();
            perm.push(axis);
            let p = t.as_array().clone().permuted_axes(perm);
            RingTensor::from_array(p).reshape(&[outer, len])
        },
    )?;
    Ok((moved, outer, len))
}

/// Splits `[outer, c]` into the even columns `a`, odd columns `b` (each `[outer, c/2]`) and the
/// leftover last column when `c` is odd.
fn split_pairs(x: &AShare, outer: usize, c: usize) -> Result<(AShare, AShare, Option<AShare>)> {
    split_pairs_blocks(x, outer, c, 1)
}

/// As [`split_pairs`] for rows of `c` blocks of `w` elements each.
fn split_pairs_blocks(x: &AShare, outer: usize, c: usize, w: usize) -> Result<(AShare, AShare, Option<AShare>)> {
    let pairs = c / 2;
    let pick = |which: usize, count: usize, start: usize| {
        x.map_linear(
            |_| Ok(vec![outer, count * w]),
            |t| {
                let s = t.as_slice();
                let mut out = Vec::with_capacity(outer * count * w);
                for o in 0..outer {
                    for i in 0..count {
                        let col = start + i * which;
                        out.extend_from_slice(&s[(o * c + col) * w..(o * c + col + 1) * w]);
                    }
                }
                RingTensor::from_vec(&[outer, count * w], out)
            },
        )
    };
    let a = pick(2, pairs, 0)?;
    let b = pick(2, pairs, 1)?;
    let rest = if c % 2 == 1 { Some(pick(1, 1, c - 1)?) } else { None };
    Ok((a, b, rest))
}

/// Concatenates `[outer, n]` and an optional `[outer, k]` along the last axis.
fn concat_last(m: &AShare, rest: Option<&AShare>, outer: usize, n: usize) -> Result<AShare> {
    let Some(rest) = rest else { return Ok(m.clone()) };
    let k = rest.len() / outer.max(1);
    match (m.expose_share(), rest.expose_share()) {
        (Ok(a), Ok(b)) => {
            let mut out = Vec::with_capacity(outer * (n + k));
            for o in 0..outer {
                out.extend_from_slice(&a.as_slice()[o * n..(o + 1) * n]);
                out.extend_from_slice(&b.as_slice()[o * k..(o + 1) * k]);
            }
            Ok(AShare::from_share(RingTensor::from_vec(&[outer, n + k], out)?))
        }
        _ => Ok(AShare::dealer(&[outer, n + k])),
    }
}

/// Repeats each element of `[..]` `w` times consecutively → `[outer, w]`-shaped rows.
fn repeat_inner(x: &AShare, w: usize) -> Result<AShare> {
    let outer = x.len();
    x.map_linear(
        |_| Ok(vec![outer, w]),
        |t| RingTensor::from_vec(&[outer, w], t.as_slice().iter().flat_map(|&v| std::iter::repeat_n(v, w)).collect()),
    )
}

/// Output shape and, for every (output position, window offset), the flat input index; padded
/// offsets reuse the window's first valid element (so padding never wins a max).
fn window_indices(
    s: &[usize],
    k: (usize, usize),
    st: (usize, usize),
    p: (usize, usize),
    ceil: bool,
) -> Result<([usize; 4], Vec<usize>)> {
    let bad = || Error::ShapeMismatch { op: "maxpool2d", lhs: s.to_vec(), rhs: vec![k.0, k.1, st.0, st.1, p.0, p.1] };
    let &[n, c, h, w] = s else { return Err(bad()) };
    if p.0 >= k.0 || p.1 >= k.1 {
        return Err(bad());
    }
    let (Some(oh), Some(ow)) =
        (crate::ring::pool_out_len(h, k.0, st.0, p.0, ceil), crate::ring::pool_out_len(w, k.1, st.1, p.1, ceil))
    else {
        return Err(bad());
    };
    let mut idx = Vec::with_capacity(n * c * oh * ow * k.0 * k.1);
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let start = idx.len();
                let mut first = None;
                for dy in 0..k.0 {
                    for dx in 0..k.1 {
                        let (iy, ix) = ((oy * st.0 + dy).wrapping_sub(p.0), (ox * st.1 + dx).wrapping_sub(p.1));
                        if iy < h && ix < w {
                            let i = plane * h * w + iy * w + ix;
                            first.get_or_insert(i);
                            idx.push(i);
                        } else {
                            idx.push(usize::MAX);
                        }
                    }
                }
                let f = first.ok_or_else(bad)?;
                for v in &mut idx[start..] {
                    if *v == usize::MAX {
                        *v = f;
                    }
                }
            }
        }
    }
    Ok(([n, c, oh, ow], idx))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::compare::Comparisons;
    use crate::correlations::{Correlations, GateMaterial, Material, Request, TestDealer};
    use crate::fss::PackedKeys;
    use crate::party::{CorrelationMode, SessionConfig, SessionId};
    use crate::transport::{BoxFuture, Channel, MemoryTransport, Transport};

    /// The test dealer, except that one-round sign material comes with one key too few: it
    /// passes every check when received and fails only when evaluated, after the opening.
    struct ShortKeys(TestDealer);

    impl Correlations for ShortKeys {
        fn fetch<'a>(&'a mut self, ch: &'a mut Channel, req: &'a Request) -> BoxFuture<'a, Result<Material>> {
            Box::pin(async move {
                let Request::Gate(req) = req else { return self.0.fetch(ch, req).await };
                let Material::Gate(gate) = self.0.fetch(ch, &Request::Gate(*req)).await? else {
                    unreachable!("the test dealer answers in kind")
                };
                match gate {
                    Gate::Sign(m) => {
                        let klen = crate::fss::SignKey::byte_len_for(req.bits);
                        let mut buf = m.keys_bytes();
                        buf.truncate(buf.len() - klen);
                        let keys = PackedKeys::sign(buf, 0, req.len - 1, req.bits).expect("well-formed keys");
                        Ok(Material::Gate(Gate::Sign(GateMaterial { r: m.r, keys })))
                    }
                    other => Ok(Material::Gate(other)),
                }
            })
        }
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // parties as threads, as in crate::testing
    fn material_that_fails_after_the_opening_poisons_the_party() {
        let transports: Vec<Arc<dyn Transport>> =
            MemoryTransport::mesh(3).into_iter().map(|t| Arc::new(t) as Arc<dyn Transport>).collect();
        let cfg = SessionConfig {
            comparisons: Comparisons { policy: Policy::Fixed(Method::Fss1), ..Comparisons::default() },
            ..SessionConfig::new(SessionId(5), [0; 32])
        };
        let out: Vec<Result<(bool, bool)>> = std::thread::scope(|s| {
            let hs: Vec<_> = transports
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    s.spawn(move || {
                        futures::executor::block_on(async move {
                            let mut rng = crate::prg::Prg::from_u64(i as u64);
                            let mut p = Party::connect(t, cfg, CorrelationMode::Test(9).source(), &mut rng).await?;
                            p.corr = Box::new(ShortKeys(TestDealer::new(p.id(), 9)));
                            let x = p.share_input(
                                PartyId::P0,
                                &[16],
                                (i == 0).then(|| RingTensor::filled(&[16], 5)).as_ref(),
                            )?;
                            let first = p.ltz(&x).await;
                            let second = p.ltz(&x).await;
                            Ok((
                                matches!(first, Err(Error::Desync { .. })) || p.is_dealer(),
                                matches!(second, Err(Error::Poisoned)) || p.is_dealer(),
                            ))
                        })
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("party thread")).collect()
        });
        for (i, r) in out.into_iter().enumerate() {
            let (first, second) = r.unwrap();
            assert!(first, "P{i}: evaluating the bad material is a desync with the dealer");
            assert!(second, "P{i}: the party is poisoned afterwards");
        }
    }
}
