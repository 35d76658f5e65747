//! Local (communication-free) operations that need to know which party runs them.

use crate::error::{Error, Result};
use crate::party::{Party, PartyId};
use crate::ring::RingTensor;
use crate::share::AShare;

impl Party {
    /// `x + c` for a public tensor `c` (P0 adds it to its share). Local.
    pub fn add_public(&self, x: &AShare, c: &RingTensor) -> Result<AShare> {
        if x.shape() != c.shape() {
            return Err(Error::ShapeMismatch { op: "add_public", lhs: x.shape().to_vec(), rhs: c.shape().to_vec() });
        }
        if self.id == PartyId::P0 { x.map_linear(|s| Ok(s.to_vec()), |t| t.add(c)) } else { Ok(x.clone()) }
    }

    /// `x + c` for a public `[n]` row vector broadcast over the last axis (bias add). Local.
    pub fn add_public_row(&self, x: &AShare, row: &RingTensor) -> Result<AShare> {
        let n = *x.shape().last().unwrap_or(&0);
        if row.shape() != [n] {
            return Err(Error::ShapeMismatch {
                op: "add_public_row",
                lhs: x.shape().to_vec(),
                rhs: row.shape().to_vec(),
            });
        }
        if self.id == PartyId::P0 {
            x.map_linear(|s| Ok(s.to_vec()), |t| t.add_row_broadcast(row))
        } else {
            Ok(x.clone())
        }
    }

    /// Truncation by `bits` after a fixed-point product (SecureML local truncation).
    ///
    /// * Revealed: nothing. Rounds 0, bytes 0, correlations none.
    /// * Error: for a value `v` with `|v| < 2^ℓ`, the result is `⌊v / 2^bits⌋` or that plus one
    ///   (1 ulp), except with probability about `2^(ℓ + 1 − 64)` per element, when it is off by
    ///   about `2^(64 − bits)` (a share wraps). P0 shifts its share; P1 negates, shifts, negates.
    pub fn trunc(&self, x: &AShare, bits: u32) -> AShare {
        let id = self.id;
        x.map_linear(|s| Ok(s.to_vec()), |t| Ok(trunc_share(id, t, bits))).expect("shape preserved")
    }

    /// Multiplies by a public real constant `k` in fixed point and truncates. Local.
    ///
    /// Error: that of [`Party::trunc`] plus `|x|·|k − enc(k)|` from encoding `k`.
    pub fn mul_const(&self, x: &AShare, k: f64) -> Result<AShare> {
        let f = self.fixed();
        let kk = f.encode(k)?;
        Ok(self.trunc(&x.mul_scalar(kk), f.frac_bits))
    }

    /// Sum pooling `[n, c, h, w] → [n, c, oh, ow]` over `kernel` windows with `stride` and zero
    /// `padding`. Local (a public linear map of the shares).
    pub fn sum_pool2d(
        &self,
        x: &AShare,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<AShare> {
        let shape = pool_shape(x.shape(), kernel, stride, padding)?;
        x.map_linear(|_| Ok(shape.to_vec()), |t| Ok(sum_pool(t, &shape, kernel, stride, padding)))
    }

    /// Average pooling with zero padding counted in the divisor (ONNX
    /// `count_include_pad = 1`): sum pooling, then a public multiplication by `1/(kh·kw)` in
    /// fixed point and a truncation. Local; error ≤ 1 ulp plus the encoding error of the
    /// divisor (relative 2^-(f+1)·kh·kw) and the truncation failure of [`Party::trunc`].
    pub fn avg_pool2d(
        &self,
        x: &AShare,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<AShare> {
        let s = self.sum_pool2d(x, kernel, stride, padding)?;
        self.mul_const(&s, 1.0 / (kernel.0 * kernel.1) as f64)
    }
}

/// One party's share of `x / 2^bits` (see [`Party::trunc`]).
pub(crate) fn trunc_share(id: PartyId, t: &RingTensor, bits: u32) -> RingTensor {
    if id == PartyId::P0 { t.shr_arith(bits) } else { t.neg().shr_arith(bits).neg() }
}

fn pool_shape(s: &[usize], k: (usize, usize), st: (usize, usize), p: (usize, usize)) -> Result<[usize; 4]> {
    let bad = || Error::ShapeMismatch { op: "pool2d", lhs: s.to_vec(), rhs: vec![k.0, k.1, st.0, st.1, p.0, p.1] };
    let &[n, c, h, w] = s else { return Err(bad()) };
    if k.0 == 0 || k.1 == 0 || st.0 == 0 || st.1 == 0 || h + 2 * p.0 < k.0 || w + 2 * p.1 < k.1 {
        return Err(bad());
    }
    Ok([n, c, (h + 2 * p.0 - k.0) / st.0 + 1, (w + 2 * p.1 - k.1) / st.1 + 1])
}

fn sum_pool(t: &RingTensor, out: &[usize; 4], k: (usize, usize), st: (usize, usize), p: (usize, usize)) -> RingTensor {
    let &[n, c, h, w] = t.shape() else { unreachable!("checked by pool_shape") };
    let [_, _, oh, ow] = *out;
    let x = t.as_slice();
    let mut o = vec![0u64; n * c * oh * ow];
    for plane in 0..n * c {
        let src = &x[plane * h * w..(plane + 1) * h * w];
        let dst = &mut o[plane * oh * ow..(plane + 1) * oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = 0u64;
                for dy in 0..k.0 {
                    let iy = (oy * st.0 + dy).wrapping_sub(p.0);
                    if iy >= h {
                        continue;
                    }
                    for dx in 0..k.1 {
                        let ix = (ox * st.1 + dx).wrapping_sub(p.1);
                        if ix < w {
                            acc = acc.wrapping_add(src[iy * w + ix]);
                        }
                    }
                }
                dst[oy * ow + ox] = acc;
            }
        }
    }
    RingTensor::from_vec(out, o).expect("shape computed by pool_shape")
}
