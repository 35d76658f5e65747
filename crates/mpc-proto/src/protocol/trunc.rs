//! Truncation with dealer material and one round, without local truncation's rare large error.
//!
//! For `|x| < 2^62`, `x' = x + 2^62` lies in `[0, 2^63)`: its top bit is known to be 0. The
//! parties open `y = x' + r` for a uniform mask `r` from the dealer (`y` is uniform: it reveals
//! nothing). As integers `x' + r = y + w·2^64`, and because the top bit of `x'` is 0 the wrap is
//! `w = msb(r)·(1 − msb(y))`: a public factor times a shared bit, so no comparison is needed.
//! Writing `y = yh·2^f + yl` and `r = rh·2^f + rl`,
//! `⌊x'/2^f⌋ = yh − rh + w·2^(64−f) − [yl < rl]`: the parties compute everything but the last
//! term (a borrow: the result may be 1 ulp high, as local truncation's) from the opened `y` and their
//! shares of `rh` and `msb(r)`, then remove the offset `2^(62−f)`.

use crate::error::{Error, Result};
use crate::fixed::Truncation;
use crate::party::{Party, PartyId};
use crate::ring::RingTensor;
use crate::share::AShare;
use crate::transport::FrameKind;

impl Party {
    /// Truncation by `bits` that is never off by more than 1 ulp.
    ///
    /// * Secret input `x` with `|x| < 2^62` (as a signed ring value). Revealed: `x + 2^62 + r`
    ///   for a uniform `r` (uniform).
    /// * Rounds 1; online bytes 8 per value per computing party; correlations: one truncation
    ///   pair per value (the dealer sends P1 16 bytes per value).
    /// * Error: the result is `⌊x / 2^bits⌋` or one more. Outside `|x| < 2^62` it is wrong.
    /// * In a two-party session (no dealer) the wrap comes from the shares' known top bits
    ///   instead, with a mux triple: also 1 round, and the same error bound.
    pub async fn trunc_exact(&mut self, x: &AShare, bits: u32) -> Result<AShare> {
        let top = self.begin("trunc")?;
        let r = self.trunc_exact_many(&[x], bits).await.map(|mut v| v.remove(0));
        self.finish(top, r).await
    }

    /// [`Party::trunc_exact`] of several tensors in one round (building block).
    pub(crate) async fn trunc_exact_many(&mut self, xs: &[&AShare], bits: u32) -> Result<Vec<AShare>> {
        if !(1..=62).contains(&bits) {
            return Err(Error::InvalidInput(format!("exact truncation by {bits} bits: 1 to 62 are possible")));
        }
        if self.is_two_party() {
            return self.trunc_known_msb(xs, bits).await;
        }
        let n: usize = xs.iter().map(|x| x.len()).sum();
        let t = self.corr.trunc_pair(&mut self.ch, n, bits).await?;
        let placeholders = || xs.iter().map(|x| AShare::dealer(x.shape())).collect();
        let Some([r, hi, msb]) = t.parts.filter(|_| !self.placeholder()) else {
            return Ok(placeholders());
        };
        let p0 = self.id == PartyId::P0;
        let offset = if p0 { 1u64 << 62 } else { 0 };
        let mut masked = Vec::with_capacity(n);
        for x in xs {
            masked.extend(x.expose_share()?.as_slice().iter().map(|v| v.wrapping_add(offset)));
        }
        masked.iter_mut().zip(&r).for_each(|(m, r)| *m = m.wrapping_add(*r));
        let masked = AShare::from_share(RingTensor::from_vec(&[n], masked)?);
        let y = self.open_inner(&[&masked]).await?.expect("computing party").remove(0);
        let unoffset = if p0 { 1u64 << (62 - bits) } else { 0 };
        let mut out = Vec::with_capacity(xs.len());
        let mut at = 0;
        for x in xs {
            let len = x.len();
            let v: Vec<u64> = (at..at + len)
                .map(|i| {
                    let y = y.as_slice()[i];
                    let mine = if p0 { y >> bits } else { 0 };
                    let wrap = msb[i].wrapping_mul(1 - (y >> 63)) << (64 - bits);
                    mine.wrapping_sub(hi[i]).wrapping_add(wrap).wrapping_sub(unoffset)
                })
                .collect();
            out.push(AShare::from_share(RingTensor::from_vec(x.shape(), v)?));
            at += len;
        }
        Ok(out)
    }

    /// [`Party::trunc_exact_many`] in a two-party session (no dealer to deal a mask's top bits),
    /// by the known top bit (Cheetah, SIRNN): `x' = x + 2^62` has top bit 0, so writing its
    /// shares `x0' + x1' = x' + w·2^64` as integers, the wrap is `w = m0 ∨ m1 = m0 + m1 − m0·m1`
    /// for the shares' top bits `m0`, `m1` — one product of two bits each party holds alone.
    /// With a mux triple (a bit `b` XOR- and additively shared, `a`, `c = a·b`) both parties
    /// open, in one round, `e = m1 ⊕ b` (P1 sends `m1 ⊕ b1`, P0 `b0`) and `d = m0 − a`: then
    /// `m1 = e + (1 − 2e)·b` and `m0·m1 = e·m0 + (1 − 2e)·(d·[b] + [c])`, and
    /// `⌊x'/2^f⌋ = x0' >> f + x1' >> f − w·2^(64−f)`, or one less (the low bits' carry); P0 adds
    /// one ulp, so the result is `⌊x/2^f⌋` or one more, as the dealer method's. Revealed: `e` (a uniform bit) and `d` (a uniform ring element).
    /// Rounds 1; online bytes 8⅛ per value per party; one mux triple (56 bytes of OT) a value.
    async fn trunc_known_msb(&mut self, xs: &[&AShare], bits: u32) -> Result<Vec<AShare>> {
        let n: usize = xs.iter().map(|x| x.len()).sum();
        let mux = self.corr.mux_triples(&mut self.ch, n).await?;
        if self.placeholder() {
            return Ok(xs.iter().map(|x| AShare::dealer(x.shape())).collect());
        }
        let p0 = self.id == PartyId::P0;
        let offset = if p0 { 1u64 << 62 } else { 0 };
        let mut v = Vec::with_capacity(n);
        for x in xs {
            v.extend(x.expose_share()?.as_slice().iter().map(|s| s.wrapping_add(offset)));
        }
        let words = n.div_ceil(64);
        let mut mine = Vec::with_capacity(8 * (words + n));
        for (w, &bw) in mux.bits.iter().enumerate().take(words) {
            let m = v[64 * w..(64 * w + 64).min(n)].iter().enumerate().fold(0u64, |m, (i, &x)| m | ((x >> 63) << i));
            mine.extend_from_slice(&(if p0 { bw } else { m ^ bw }).to_le_bytes());
        }
        for (&x, &a) in v.iter().zip(&mux.a) {
            let d = if p0 { (x >> 63).wrapping_sub(a) } else { a.wrapping_neg() };
            mine.extend_from_slice(&d.to_le_bytes());
        }
        // The transport refuses a frame of another length (a desync naming the peer).
        let theirs = self.ch.exchange_bytes(self.id.peer(), FrameKind::Open, &mine).await?;
        let word = |b: &[u8], j: usize| u64::from_le_bytes(b[8 * j..8 * j + 8].try_into().expect("8 bytes"));
        let one = u64::from(p0);
        // The offset's, less one ulp: the sum of the shares' floors is ⌊x'/2^f⌋ or one less, so
        // adding one makes it ⌊x'/2^f⌋ or one more — the dealer method's error, unbiased where
        // the floor alone would lose one ulp on average and drift through deep networks.
        let unoffset = if p0 { (1u64 << (62 - bits)) - 1 } else { 0 };
        let shares: Vec<u64> = (0..n)
            .map(|t| {
                let e = ((word(&mine, t / 64) ^ word(&theirs, t / 64)) >> (t % 64)) & 1;
                let d = word(&mine, words + t).wrapping_add(word(&theirs, words + t));
                let flip = 1u64.wrapping_sub(e << 1);
                let m1 = (e & one).wrapping_add(flip.wrapping_mul(mux.b[t]));
                let m0 = (v[t] >> 63) & one;
                let m0b = d.wrapping_mul(mux.b[t]).wrapping_add(mux.c[t]);
                let m0m1 = e.wrapping_mul(m0).wrapping_add(flip.wrapping_mul(m0b));
                let wrap = m0.wrapping_add(m1).wrapping_sub(m0m1);
                (v[t] >> bits).wrapping_sub(wrap << (64 - bits)).wrapping_sub(unoffset)
            })
            .collect();
        let mut out = Vec::with_capacity(xs.len());
        let mut at = 0;
        for x in xs {
            out.push(AShare::from_share(RingTensor::from_vec(x.shape(), shares[at..at + x.len()].to_vec())?));
            at += x.len();
        }
        Ok(out)
    }

    /// Truncation of products by the fraction bits as the session's setting says
    /// ([`Party::set_truncation`]): local, or exact (one round for all of `zs`).
    pub(crate) async fn truncate_products(&mut self, zs: Vec<AShare>) -> Result<Vec<AShare>> {
        self.truncate_as(self.truncation, zs).await
    }

    /// Truncation of products by the fraction bits, local or exact as `t` says.
    pub(crate) async fn truncate_as(&mut self, t: Truncation, zs: Vec<AShare>) -> Result<Vec<AShare>> {
        let f = self.fixed().frac_bits;
        match t {
            Truncation::Local => Ok(zs.iter().map(|z| self.trunc(z, f)).collect()),
            Truncation::Exact => {
                let refs: Vec<&AShare> = zs.iter().collect();
                self.trunc_exact_many(&refs, f).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::fixed::Truncation;
    use crate::testing::run_parties;
    use crate::{PartyId, RingTensor};

    /// Values right at the wrap-prone edges (large magnitudes, both signs, zero, ±1 ulp): the
    /// exact truncation is ⌊x/2^f⌋ or one more, always; local truncation at these magnitudes
    /// fails on some.
    #[test]
    fn exact_truncation_is_within_one_ulp_where_local_fails() {
        let bits = 20u32;
        let mut vals: Vec<i64> = vec![0, 1, -1, (1 << 20) - 1, -(1 << 20), 123_456_789, -987_654_321];
        for k in [40u32, 50, 58, 61] {
            for s in [1i64, -1] {
                vals.push(s * ((1i64 << k) - 17));
                vals.push(s * (1i64 << k) / 3);
            }
        }
        // A spread of large values: local truncation wraps on about |x|/2^63 of them.
        let mut g = crate::prg::Prg::from_u64(5);
        for _ in 0..4000 {
            vals.push(((g.next_u64() >> 2) as i64) >> 1); // |x| < 2^61
        }
        let n = vals.len();
        let x = RingTensor::from_vec(&[n], vals.iter().map(|&v| v as u64).collect()).unwrap();
        let (exact, local) = {
            let x = x.clone();
            let outs = run_parties(7, move |mut p| {
                let x = x.clone();
                async move {
                    let s = p.share_input(PartyId::P1, &[n], (p.id() == PartyId::P1).then_some(&x))?;
                    p.set_truncation(Truncation::Exact);
                    let e = p.trunc_exact(&s, bits).await?;
                    let l = p.trunc(&s, bits);
                    let e = p.reveal_to(PartyId::P1, &e).await?;
                    let l = p.reveal_to(PartyId::P1, &l).await?;
                    Ok((e, l))
                }
            })
            .unwrap();
            let (e, l) = outs.into_iter().nth(1).unwrap();
            (e.unwrap(), l.unwrap())
        };
        let mut local_bad = 0;
        for (i, &v) in vals.iter().enumerate() {
            let want = v >> bits;
            let got = exact.as_slice()[i] as i64;
            assert!(got == want || got == want + 1, "x = {v}: exact gives {got}, want {want}");
            let l = local.as_slice()[i] as i64;
            if !(l == want || l == want + 1 || l == want - 1) {
                local_bad += 1;
            }
        }
        // The comparison that makes the test meaningful: at these magnitudes local truncation
        // does fail (expected ~|x|/2^63 ≈ 1/8 of the random values).
        assert!(local_bad > 0, "local truncation never failed: the test values are too small");
    }
}
