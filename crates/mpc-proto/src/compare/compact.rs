//! The compact FSS comparison (method `fss`): one 1-bit DCF key per element on the low `k − 1`
//! bits of the masked value, then a select opened as one masked bit.
//!
//! # Protocol (per element; `points` evaluation points share the element's mask and key)
//!
//! *Material.* The dealer draws the mask `r` (shares from the seeds, no traffic) and a
//! [bit-DCF](crate::fss::bitdcf) key pair for `[· < R_l]` on `k − 1` bits. For each point `q`
//! it draws a fresh bit `ρ_q`; P0's key carries the flip bit `f_q = R_h ⊕ ρ_q`, and both
//! parties hold arithmetic shares of `ρ_q` (and of `ρ_q·r` for ReLU): P0's from its seed, P1's
//! sent by the dealer. Per element and party that is [`bitdcf::key_len`]`(k − 1)` bytes of key
//! (419 at k = 32) plus ⌈points/8⌉ (P0) or 8·points, 16·points for ReLU (P1).
//!
//! *Online.* After `y = x + r` is opened (round 1), each party evaluates its key at each
//! point's `Y_l` ([`Window::split_open`]): XOR shares `w_0 ⊕ w_1 = [Y_l < R_l]`. P0 XORs in
//! `f_q`, and the parties exchange their bits (round 2: one bit per point each way), which
//! opens `c = [Y_l < R_l] ⊕ R_h ⊕ ρ_q` — uniform, because `ρ_q` is. Then `[x ≥ 0] = e ⊕ ρ_q`
//! with the public `e = Y_h ⊕ c`, finished by [`super::finish_bit`] / [`super::finish_relu`]
//! with `v = ρ_q`.
//!
//! Each party's view is its key (pseudorandom), `y` (uniform) and `c` (uniform): independent
//! of `x`. The dealer sees nothing online.

use crate::fss::{FssError, bitdcf};
use crate::prg::Prg;

use super::{Window, pack_bits, unpack_bits};

/// Material bytes party `p1 ∈ {false, true}` receives for `n` elements with `points` points
/// each (ReLU: `relu`).
pub fn material_len(w: Window, n: usize, points: usize, relu: bool, p1: bool) -> usize {
    let keys = n * bitdcf::key_len(w.low_bits());
    if p1 { keys + 8 * n * points * (1 + usize::from(relu)) } else { keys + (n * points).div_ceil(8) }
}

/// Dealer: keys and select material for the masks `r` (full 64-bit values). `v0`, `vr0` are
/// P0's seed shares of `ρ_q` and `ρ_q·r` (`n·points` each; `vr0` for ReLU only), `private` the
/// dealer's own randomness. Appends P0's material to `out[0]` and P1's to `out[1]` (the layouts
/// of [`material_len`]: keys, then P0's packed flip bits or P1's words).
pub fn keygen(
    w: Window,
    r: &[u64],
    points: usize,
    (v0, vr0): (&[u64], Option<&[u64]>),
    private: &mut Prg,
    [out0, out1]: [&mut Vec<u8>; 2],
) -> Result<(), FssError> {
    let n = r.len();
    let m = w.low_bits();
    let klen = bitdcf::key_len(m);
    let alphas: Vec<u64> = r.iter().map(|&re| w.split_mask(re).1).collect();
    let (b0, b1) = (out0.len(), out1.len());
    out0.resize(b0 + n * klen, 0);
    out1.resize(b1 + n * klen, 0);
    bitdcf::keygen_into(m, &alphas, private, &mut out0[b0..], &mut out1[b1..], klen)?;
    let mut rho = vec![0u8; n * points];
    private.fill_bytes(&mut rho);
    rho.iter_mut().for_each(|b| *b &= 1);
    let flips: Vec<u8> = rho.iter().enumerate().map(|(q, &b)| b ^ w.split_mask(r[q / points]).0).collect();
    pack_bits(&flips, out0);
    out1.reserve(8 * n * points * (1 + usize::from(vr0.is_some())));
    for (&b, &s0) in rho.iter().zip(v0) {
        out1.extend_from_slice(&u64::from(b).wrapping_sub(s0).to_le_bytes());
    }
    if let Some(vr0) = vr0 {
        for (q, (&b, &s0)) in rho.iter().zip(vr0).enumerate() {
            out1.extend_from_slice(&(u64::from(b).wrapping_mul(r[q / points])).wrapping_sub(s0).to_le_bytes());
        }
    }
    Ok(())
}

/// One party's compact keys for `n` elements, as received (keys used in place), with P0's flip
/// bits unpacked.
pub struct CompactKeys {
    buf: Vec<u8>,
    start: usize,
    n: usize,
    w: Window,
    /// P0: `f_q` per element-point; P1: empty.
    flips: Vec<u8>,
}

impl std::fmt::Debug for CompactKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CompactKeys[{} × k={}](..)", self.n, self.w.bits())
    }
}

impl CompactKeys {
    /// Takes the keys at `buf[start..start + n·key_len]` (validating each) and, for P0, the
    /// packed flip bits of `n·points` element-points that follow them.
    pub fn new(buf: Vec<u8>, start: usize, n: usize, points: usize, w: Window, p0: bool) -> Result<Self, FssError> {
        let m = w.low_bits();
        let klen = bitdcf::key_len(m);
        let end = start + n * klen;
        if buf.len() < end {
            return Err(FssError::Malformed("compact keys: frame too short"));
        }
        for i in 0..n {
            bitdcf::check_key(&buf[start + i * klen..start + (i + 1) * klen], m)?;
        }
        let flips = if p0 {
            let nb = (n * points).div_ceil(8);
            if buf.len() < end + nb {
                return Err(FssError::Malformed("compact keys: flip bits missing"));
            }
            unpack_bits(&buf[end..end + nb], n * points)
        } else {
            Vec::new()
        };
        Ok(CompactKeys { buf, start, n, w, flips })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// This party's bit for the select opening at every element-point `q = e·points + j` of
    /// the opened values `ys`: its XOR share of `[Y_l < R_l]`, with the flip folded in at P0.
    /// Appends one byte (0 or 1) per element-point to `out`.
    pub fn eval(&self, party: u8, ys: &[u64], points: usize, out: &mut Vec<u8>) -> Result<(), FssError> {
        if ys.len() != self.n * points {
            return Err(FssError::LengthMismatch { keys: self.n, inputs: ys.len(), outputs: self.n * points });
        }
        let m = self.w.low_bits();
        let klen = bitdcf::key_len(m);
        let base = out.len();
        out.resize(base + ys.len(), 0);
        let (w, buf, start) = (self.w, &self.buf, self.start);
        bitdcf::eval_batch(
            party,
            m,
            ys.len(),
            |q| {
                let e = q / points;
                &buf[start + e * klen..start + (e + 1) * klen]
            },
            |q| w.split_open(ys[q]).1,
            |q, bit| out[base + q] = bit,
        )?;
        if !self.flips.is_empty() {
            out[base..].iter_mut().zip(&self.flips).for_each(|(b, f)| *b ^= f);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{finish_bit, finish_relu};

    #[test]
    fn comparison_and_relu_are_exact_in_the_window() {
        let mut g = Prg::from_u64(8);
        for k in [2u32, 5, 8, 9, 20, 32, 49, 64] {
            let w = Window::new(k);
            let half = if k == 64 { i64::MAX } else { (1i64 << (k - 1)) - 1 };
            let mut xs: Vec<i64> = (-130i64..=130).map(|v| v.clamp(-half - 1, half)).collect();
            xs.extend([half, -half - 1, half - 1, -half]);
            xs.extend((0..300).map(|_| (g.next_u64() as i64) >> (65 - k).min(63)));
            let pts = [0i64, 3, -3];
            let (n, np) = (xs.len(), pts.len());
            let r: Vec<u64> = (0..n).map(|_| g.next_u64()).collect();
            let r0: Vec<u64> = (0..n).map(|_| g.next_u64()).collect();
            let v0: Vec<u64> = (0..n * np).map(|_| g.next_u64()).collect();
            let vr0: Vec<u64> = (0..n * np).map(|_| g.next_u64()).collect();
            let (mut m0, mut m1) = (vec![], vec![]);
            let mut private = Prg::from_u64(u64::from(k));
            keygen(w, &r, np, (&v0, Some(&vr0)), &mut private, [&mut m0, &mut m1]).unwrap();
            assert_eq!(m0.len(), material_len(w, n, np, true, false));
            assert_eq!(m1.len(), material_len(w, n, np, true, true));
            let k0 = CompactKeys::new(m0, 0, n, np, w, true).unwrap();
            let keys_len = n * bitdcf::key_len(k - 1);
            let words = crate::transport::frame::bytes_to_u64(&m1[keys_len..]);
            let (v1, vr1) = words.split_at(n * np);
            let k1 = CompactKeys::new(m1, 0, n, np, w, false).unwrap();
            let ys: Vec<u64> = (0..n * np)
                .map(|q| (xs[q / np] as u64).wrapping_add(r[q / np]).wrapping_sub(pts[q % np] as u64))
                .collect();
            let (mut c0, mut c1) = (vec![], vec![]);
            k0.eval(0, &ys, np, &mut c0).unwrap();
            k1.eval(1, &ys, np, &mut c1).unwrap();
            for q in 0..n * np {
                let (x, p) = (xs[q / np], pts[q % np]);
                let e = w.split_open(ys[q]).0 ^ c0[q] ^ c1[q];
                let r1 = r[q / np].wrapping_sub(r0[q / np]);
                let bit = finish_bit(true, e, v0[q]).wrapping_add(finish_bit(false, e, v1[q]));
                let relu = finish_relu(true, e, ys[q], r0[q / np], v0[q], vr0[q])
                    .wrapping_add(finish_relu(false, e, ys[q], r1, v1[q], vr1[q]));
                // In the window for every point only when x − p fits too.
                if (x as i128 - p as i128).abs() <= half as i128 {
                    assert_eq!(bit, u64::from(x >= p), "k={k} x={x} p={p}");
                    assert_eq!(relu, (x.wrapping_sub(p)).max(0) as u64, "k={k} x={x} p={p}");
                }
            }
        }
    }

    #[test]
    fn key_and_material_sizes() {
        let w = Window::new(32);
        assert_eq!(material_len(w, 1, 1, true, false), 419 + 1);
        assert_eq!(material_len(w, 1, 1, true, true), 419 + 16);
        assert_eq!(material_len(w, 1, 1, false, true), 419 + 8);
        assert!(CompactKeys::new(vec![0; 10], 0, 1, 1, w, false).is_err());
    }
}
