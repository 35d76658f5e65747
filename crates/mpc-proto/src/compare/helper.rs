//! The helper comparison: the dealer P2 takes part online as a non-colluding helper that learns
//! nothing (a SecureNN-style private compare, adapted to a dealer that knows the mask).
//!
//! # Protocol (per element and evaluation point; `k` the window, `p = 127`)
//!
//! *Material.* The dealer draws the mask `r` (P0's share from the seed it shares with P0, P1's
//! from the one it shares with P1: no traffic) and shares each of the `k − 1` bits of `R_l` in
//! Z_p: P0's shares come from its seed, P1 receives `k − 1` bytes of corrections — the only
//! dealer traffic. P0's shares of the outputs `v` (and `v·r`) come from the seed too.
//!
//! *Online.*
//! 1. P0 and P1 open `y = x + r` (one exchange) and split `y' = (y + 2^(k−1)) mod 2^k` into
//!    `Y_h`, `Y_l` ([`Window`]). With `Y* = 2·Y_l + 1` and `R* = 2·R_l` (never equal), they
//!    compute shares of the `k` terms, from the top position down,
//!
//!    ```text
//!    c_j = s·(Y*_j − R*_j) + 1 + Σ_{i>j} (Y*_i ⊕ R*_i)   (mod p),   s = 1 − 2β,
//!    ```
//!
//!    linear in the bit shares because `Y*` is public. `c_j = 0` exactly at the first
//!    differing position if there `Y*_j < R*_j` (β = 0) or `Y*_j > R*_j` (β = 1): a zero exists
//!    iff `z = [Y_l < R_l] ⊕ β`. Each term is blinded as `σ_j·c_j ± u_j` (P0 adds `u_j`, P1
//!    subtracts it; `σ_j` uniform in Z_p^*, `u_j` uniform in Z_p), the `k` terms are rotated
//!    by a uniform amount, and each party sends its `k` bytes to P2. `β`, `σ`, `u` and the
//!    rotation are drawn by P0 and P1 from their pairwise PRG: P2 never sees them.
//! 2. P2 adds the two messages position by position and sets `z = 1` iff some sum is 0 mod p;
//!    it then knows `v = R_h ⊕ z` and sends P1 its shares of `v` (and `v·r`): 8 (16) bytes.
//! 3. With the public `e = Y_h ⊕ β`, `[x ≥ 0] = e ⊕ v` ([`super::finish_bit`],
//!    [`super::finish_relu`]). P0 never waits for P2: its output shares come from its seed.
//!
//! # Why nobody learns anything
//!
//! * **P2** receives, per element, two `k`-byte messages. P0's is `σ_j·c0_j + u_j`: uniform
//!   and independent of everything else, because `u_j` is. Their sum is `σ_j·c_j` at a rotated
//!   position: uniform in Z_p^* where `c_j ≠ 0`, 0 where `c_j = 0` (at most one position), so
//!   the pair's distribution depends only on whether a zero exists — `z = [Y_l < R_l] ⊕ β` —
//!   and, given that, on nothing: the zero's position is uniform under the rotation. `β` is a
//!   fresh uniform bit P2 never sees, so `z` is uniform whatever `x`, `r` (which P2 knows) and
//!   everything P2 saw before. Note `c_j ≤ k + 1 < p`, so "0 mod p" is "0".
//! * **P0** sees `y` (uniform: `r` is) and nothing from P2.
//! * **P1** sees `y`, the bit-share corrections (uniform: P0's shares are uniform and unknown
//!   to P1) and P2's output corrections (uniform: P0's output shares are).
//!
//! The argument is checked by the view tests in `tests/nonlinear_views.rs`; the security model
//! in `docs/security.md` states it with the assumptions (P2 colludes with neither P0 nor P1).

use crate::prg::Prg;

use super::Window;

/// The prime of the comparison terms: a Mersenne prime (cheap reduction) above every term's
/// value (`k + 1 ≤ 65`).
pub const P: u8 = 127;

/// Elements per block of the term computation (the inner loops run over a block's lanes).
const LANES: usize = 64;

#[inline(always)]
fn mod_p16(x: u16) -> u8 {
    // x < 2^16: two folds of 2^7 ≡ 1 (the second leaves at most 127 + 3), then one
    // conditional subtraction.
    let t = (x & 127) + (x >> 7);
    let t = (t & 127) + (t >> 7);
    (if t >= 127 { t - 127 } else { t }) as u8
}

/// Fills `out` from `prg` with exactly uniform 7-bit values that `accept` keeps, mapped by
/// `map`: every byte is drawn once and masked to 7 bits; a rejected position (rare: 1 or 2 in
/// 128) is replaced by the next accepted value of the stream after the block (rejection
/// sampling per position). The bytes consumed depend only on the stream, so two parties on one
/// stream stay in step; the common case is a vectorised pass with no per-byte branch.
#[inline(always)]
fn fill_rejecting(prg: &mut Prg, out: &mut [u8], accept: impl Fn(u8) -> bool + Copy, map: impl Fn(u8) -> u8) {
    prg.fill_bytes(out);
    let mut reserve = [0u8; 32];
    let mut next = reserve.len();
    let mut draw = |prg: &mut Prg| loop {
        if next == reserve.len() {
            prg.fill_bytes(&mut reserve);
            next = 0;
        }
        let v = reserve[next] & 127;
        next += 1;
        if accept(v) {
            return v;
        }
    };
    let (words, tail) = out.as_chunks_mut::<8>();
    for w in words {
        let v = u64::from_le_bytes(*w) & 0x7f7f_7f7f_7f7f_7f7f;
        *w = v.to_le_bytes();
        // One branch per eight bytes (a rejected byte is rare): a SWAR test first.
        if swar_suspect(v) {
            for b in w.iter_mut().filter(|b| !accept(**b)) {
                *b = draw(prg);
            }
        }
    }
    for b in tail.iter_mut() {
        *b &= 127;
        if !accept(*b) {
            *b = draw(prg);
        }
    }
    out.iter_mut().for_each(|b| *b = map(*b));
}

/// Whether a word of eight 7-bit values may hold a value the samplers reject: 0x7f (`P`) or
/// 0x00 (rejected by `fill_zp_star`). Exact for 0x7f and 0x00 bytes (no false negatives); a few
/// false positives only cost a scan.
#[inline(always)]
fn swar_suspect(v: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    has_zero(v) || has_zero(v ^ 0x7f7f_7f7f_7f7f_7f7f)
}

/// Uniform elements of Z_p.
pub fn fill_zp(prg: &mut Prg, out: &mut [u8]) {
    fill_rejecting(prg, out, |v| v != P, |v| v);
}

/// Uniform elements of Z_p^* (the blinding multipliers).
fn fill_zp_star(prg: &mut Prg, out: &mut [u8]) {
    fill_rejecting(prg, out, |v| v != 0 && v != P, |v| v);
}

/// Uniform values in `0..k` for `1 ≤ k ≤ 64` (the rotations).
fn fill_below(prg: &mut Prg, k: u8, out: &mut [u8]) {
    let lim = 128 - 128 % k;
    fill_rejecting(prg, out, move |v| v < lim, move |v| v % k);
}

/// Where the Z_p share of bit `i` of element `e`'s `R_l` sits among `n` elements' `m` bits each:
/// blocks of `LANES` (64) elements, bit-major inside a block (`i·width + e mod LANES`), so the
/// term computation reads one bit position of a block's elements contiguously.
pub fn bit_index(n: usize, m: usize, e: usize, i: usize) -> usize {
    let block = e / LANES * LANES;
    let width = LANES.min(n - block);
    block * m + i * width + (e - block)
}

/// Dealer: P1's corrections for the Z_p shares of the bits of every `R_l`: for element `e` and
/// bit `i`, `bit_i(R_l) − bits0[j] mod p` at `j = bit_index(e, i)`, appended to `out` in the
/// same layout.
pub fn bit_corrections(w: Window, r: &[u64], bits0: &[u8], out: &mut Vec<u8>) {
    let m = w.low_bits() as usize;
    let n = r.len();
    debug_assert_eq!(bits0.len(), n * m);
    let base = out.len();
    out.resize(base + n * m, 0);
    let dst = &mut out[base..];
    let mut rl = [0u64; LANES];
    for block in (0..n).step_by(LANES) {
        let width = LANES.min(n - block);
        for (o, &re) in rl.iter_mut().zip(&r[block..block + width]) {
            *o = w.split_mask(re).1;
        }
        for i in 0..m {
            let at = block * m + i * width; // = bit_index(n, m, block, i)
            let (d, s0) = (&mut dst[at..at + width], &bits0[at..at + width]);
            for ((o, &s), &v) in d.iter_mut().zip(s0).zip(&rl[..width]) {
                // bit − s mod p, with bit ∈ {0, 1} and s < p.
                let x = ((v >> i) & 1) as u8 + (P - s);
                *o = if x >= P { x - P } else { x };
            }
        }
    }
}

/// Bytes each computing party sends the helper for `nq` element-points: `k` terms of 7 bits
/// each ([`pack7`]).
pub fn term_bytes(w: Window, nq: usize) -> usize {
    packed_len(nq * w.bits() as usize)
}

/// Bytes of `n` values of 7 bits packed by [`pack7`]: `⌈7n/8⌉`.
pub fn packed_len(n: usize) -> usize {
    (7 * n).div_ceil(8)
}

/// Appends `vals` (each below 128: elements of Z_p) to `out` at 7 bits each, eight values to
/// seven bytes, little-endian.
pub fn pack7(vals: &[u8], out: &mut Vec<u8>) {
    let base = out.len();
    out.resize(base + packed_len(vals.len()), 0);
    let dst = &mut out[base..];
    let (groups, tail) = vals.as_chunks::<8>();
    for (g, o) in groups.iter().zip(dst.chunks_exact_mut(7)) {
        let w = g.iter().enumerate().fold(0u64, |w, (i, &v)| w | (u64::from(v & 127) << (7 * i)));
        o.copy_from_slice(&w.to_le_bytes()[..7]);
    }
    if !tail.is_empty() {
        let w = tail.iter().enumerate().fold(0u64, |w, (i, &v)| w | (u64::from(v & 127) << (7 * i)));
        let o = &mut dst[7 * groups.len()..];
        let len = o.len();
        o.copy_from_slice(&w.to_le_bytes()[..len]);
    }
}

/// The `n` values [`pack7`] packed into `bytes` (which must hold [`packed_len`]`(n)` bytes).
pub fn unpack7(bytes: &[u8], n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let (groups, tail) = out.as_chunks_mut::<8>();
    for (g, b) in groups.iter_mut().zip(bytes.chunks_exact(7)) {
        let mut w = [0u8; 8];
        w[..7].copy_from_slice(b);
        let w = u64::from_le_bytes(w);
        for (i, v) in g.iter_mut().enumerate() {
            *v = ((w >> (7 * i)) & 127) as u8;
        }
    }
    if !tail.is_empty() {
        let rest = &bytes[7 * (n / 8)..packed_len(n)];
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        let w = u64::from_le_bytes(w);
        for (i, v) in tail.iter_mut().enumerate() {
            *v = ((w >> (7 * i)) & 127) as u8;
        }
    }
    out
}

/// P0 (`p0`) or P1: the messages to the helper for the opened values `ys` (element-point
/// `q = e·points + j` of element `e`), given this party's Z_p shares of the bits of each `R_l`
/// (bit `i` of element `e` at [`bit_index`]). Appends the `k` terms of every element-point to
/// `out` (one byte each; [`pack7`] packs them for the wire) and returns the public bit
/// `e_q = Y_h ⊕ β` of every element-point. `common` is the stream P0 and P1 share
/// (β, multipliers, masks and rotations are drawn from it in the same order by both).
pub fn terms(
    p0: bool,
    w: Window,
    ys: &[u64],
    points: usize,
    bits: &[u8],
    common: &mut Prg,
    out: &mut Vec<u8>,
) -> Vec<u8> {
    let k = w.bits() as usize;
    let m = k - 1;
    let nq = ys.len();
    debug_assert!(points >= 1 && bits.len() * points == nq * m);
    let mut e_bits = Vec::with_capacity(nq);
    out.reserve(nq * k);
    let mut beta = [0u8; LANES];
    let mut rot = [0u8; LANES];
    let mut sigma = vec![0u8; k * LANES];
    let mut u = vec![0u8; k * LANES];
    let mut d = vec![0u8; k * LANES];
    // Per lane: β as a mask, the running share of Σ (Y*_i ⊕ R*_i); per position and lane (all
    // u16, so the inner loops run eight or more lanes per vector instruction): Y*'s bit and
    // this party's share of R*'s bit.
    let mut bm = [0u16; LANES];
    let mut acc = [0u16; LANES];
    let mut ybit = vec![0u16; k * LANES];
    let mut rsh = vec![0u16; k * LANES];
    for start in (0..nq).step_by(LANES) {
        let bn = LANES.min(nq - start);
        common.fill_bytes(&mut beta[..bn]);
        beta[..bn].iter_mut().for_each(|b| *b &= 1);
        fill_below(common, k as u8, &mut rot[..bn]);
        fill_zp_star(common, &mut sigma[..k * bn]);
        fill_zp(common, &mut u[..k * bn]);
        // P1 subtracts the masks.
        if !p0 {
            u[..k * bn].iter_mut().for_each(|v| *v = P - *v);
        }
        let mut yl = [0u64; LANES];
        for lane in 0..bn {
            let (yh, low) = w.split_open(ys[start + lane]);
            e_bits.push(yh ^ beta[lane]);
            bm[lane] = u16::from(beta[lane]).wrapping_neg();
            acc[lane] = 0;
            yl[lane] = low;
        }
        // Position 0 is the tie-break: Y*_0 = 1, R*_0 = 0 (public).
        ybit[..bn].fill(1);
        rsh[..bn].fill(0);
        for i in 0..m {
            let row = &mut ybit[(i + 1) * LANES..(i + 1) * LANES + bn];
            for (o, &y) in row.iter_mut().zip(&yl[..bn]) {
                *o = ((y >> i) & 1) as u16;
            }
        }
        if points == 1 {
            // A block of lanes is a block of elements: its bits are contiguous per position.
            let n = ys.len();
            for i in 0..m {
                let src = &bits[bit_index(n, m, start, i)..][..bn];
                for (o, &b) in rsh[(i + 1) * LANES..(i + 1) * LANES + bn].iter_mut().zip(src) {
                    *o = u16::from(b);
                }
            }
        } else {
            let n = ys.len() / points;
            for lane in 0..bn {
                let e = (start + lane) / points;
                for i in 0..m {
                    rsh[(i + 1) * LANES + lane] = u16::from(bits[bit_index(n, m, e, i)]);
                }
            }
        }
        // Positions from the top (pos ≥ 1 is bit pos − 1 of Y_l, R_l).
        for pos in (0..k).rev() {
            let (sig, msk) = (&sigma[pos * bn..(pos + 1) * bn], &u[pos * bn..(pos + 1) * bn]);
            let (yb, rb) = (&ybit[pos * LANES..pos * LANES + bn], &rsh[pos * LANES..pos * LANES + bn]);
            let dp = &mut d[pos * LANES..pos * LANES + bn];
            term_lanes(p0, dp, &mut acc[..bn], &bm[..bn], yb, rb, sig, msk);
        }
        let base = out.len();
        out.resize(base + bn * k, 0);
        let mut col = [0u8; 64];
        for (lane, o) in out[base..].chunks_exact_mut(k).enumerate() {
            for (pos, c) in col[..k].iter_mut().enumerate() {
                *c = d[pos * LANES + lane];
            }
            // Rotation by `rl`: position `pos` goes to slot `(pos + rl) mod k`.
            let rl = rot[lane] as usize;
            o[rl..].copy_from_slice(&col[..k - rl]);
            o[..rl].copy_from_slice(&col[k - rl..k]);
        }
    }
    e_bits
}

/// One position of the terms for a block's lanes (equal-length slices, so the loop has no
/// bounds checks and vectorises): the blinded share `σ·c + u` of every lane's term into `d`,
/// and the running share of `Σ (Y*_i ⊕ R*_i)` in `acc` advanced past this position.
#[inline(never)]
#[allow(clippy::too_many_arguments)] // the lanes' seven streams
fn term_lanes(p0: bool, d: &mut [u8], acc: &mut [u16], bm: &[u16], yb: &[u16], rb: &[u16], sig: &[u8], msk: &[u8]) {
    let n = d.len();
    let (acc, bm, yb, rb, sig, msk) = (&mut acc[..n], &bm[..n], &yb[..n], &rb[..n], &sig[..n], &msk[..n]);
    let delta = u16::from(p0);
    let p = u16::from(P);
    for i in 0..n {
        let (y, r) = (yb[i], rb[i]);
        // s·(δ·y − r) with s = 1 − 2β, as a value in [1, 253].
        let a = delta * y + p - r;
        let a = a ^ ((a ^ (2 * p - a)) & bm[i]);
        let c = a + delta + acc[i];
        d[i] = mod_p16(u16::from(sig[i]) * c + u16::from(msk[i]));
        // Share of Y*_pos ⊕ R*_pos: y ? δ − r : r.
        let x = r ^ ((r ^ (delta + p - r)) & y.wrapping_neg());
        acc[i] = u16::from(mod_p16(acc[i] + x));
    }
}

/// P2: `out[q] = 1` iff the two parties' terms of element-point `q` (`k` values each, one per
/// byte: [`unpack7`] of what they sent) sum to 0 mod p at some position.
pub fn zero_test(w: Window, d0: &[u8], d1: &[u8], out: &mut Vec<u8>) {
    let k = w.bits() as usize;
    out.extend(d0.chunks_exact(k).zip(d1.chunks_exact(k)).map(|(a, b)| {
        let mut hit = 0u8;
        for (x, y) in a.iter().zip(b) {
            let s = x.wrapping_add(*y);
            hit |= u8::from(s == 0) | u8::from(s == P);
        }
        hit
    }));
}

/// P2: P1's output shares. For element-point `q` of element `e = q / points`, `v = R_h ⊕ z[q]`;
/// appends `v − v0[q]` for every `q`, then (for ReLU, `vr0` given) `v·r_e − vr0[q]`, as
/// little-endian words.
pub fn respond(w: Window, points: usize, r: &[u64], z: &[u8], v0: &[u64], vr0: Option<&[u64]>, out: &mut Vec<u8>) {
    let v = |q: usize| u64::from(w.split_mask(r[q / points]).0 ^ z[q]);
    out.reserve(8 * z.len() * (1 + usize::from(vr0.is_some())));
    for (q, &s0) in v0.iter().enumerate() {
        out.extend_from_slice(&v(q).wrapping_sub(s0).to_le_bytes());
    }
    if let Some(vr0) = vr0 {
        for (q, &s0) in vr0.iter().enumerate() {
            out.extend_from_slice(&v(q).wrapping_mul(r[q / points]).wrapping_sub(s0).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{finish_bit, finish_relu};

    #[test]
    fn reduction_and_sampling_are_exact() {
        for x in 0..(1u32 << 16) {
            assert_eq!(u32::from(mod_p16(x as u16)), x % 127);
        }
        for v in [0u64, 0x7f, 0x7f00, 0x0101_0101_0101_0101, 0x7e7e_7e7e_7e7e_7e7e] {
            let bytes = v.to_le_bytes();
            assert_eq!(swar_suspect(v), bytes.iter().any(|&b| b == 0 || b == 0x7f), "{v:#x}");
        }
        let mut g = Prg::from_u64(1);
        let mut v = vec![0u8; 127 * 400];
        fill_zp(&mut g, &mut v);
        let mut counts = [0usize; 128];
        v.iter().for_each(|&x| counts[x as usize] += 1);
        assert_eq!(counts[127], 0);
        assert!(counts[..127].iter().all(|&c| (300..500).contains(&c)), "{counts:?}");
        fill_zp_star(&mut g, &mut v);
        assert!(v.iter().all(|&x| (1..127).contains(&x)));
        let mut rots = vec![0u8; 5000];
        fill_below(&mut g, 49, &mut rots);
        assert!(rots.iter().all(|&x| x < 49) && rots.contains(&48) && rots.contains(&0));
    }

    /// Runs the whole protocol in one place (dealer, both parties, helper) for signed `xs`.
    fn run(k: u32, xs: &[i64], points: &[i64], seed: u64) -> (Vec<u64>, Vec<u64>) {
        let w = Window::new(k);
        let m = (k - 1) as usize;
        let (mut g, mut s0, pair) = (Prg::from_u64(seed), Prg::from_u64(seed + 1), Prg::from_u64(seed + 2));
        let n = xs.len();
        let np = points.len();
        let r: Vec<u64> = (0..n).map(|_| g.next_u64()).collect();
        let r0: Vec<u64> = (0..n).map(|_| g.next_u64()).collect();
        let r1: Vec<u64> = r.iter().zip(&r0).map(|(a, b)| a.wrapping_sub(*b)).collect();
        let mut bits0 = vec![0u8; n * m];
        fill_zp(&mut s0, &mut bits0);
        let mut bits1 = vec![];
        bit_corrections(w, &r, &bits0, &mut bits1);
        let v0: Vec<u64> = (0..n * np).map(|_| g.next_u64()).collect();
        let vr0: Vec<u64> = (0..n * np).map(|_| g.next_u64()).collect();
        // Opened values per element-point: y − p_j.
        let ys: Vec<u64> = (0..n * np)
            .map(|q| (xs[q / np] as u64).wrapping_add(r[q / np]).wrapping_sub(points[q % np] as u64))
            .collect();
        let (mut pair0, mut pair1) = (pair.reader_at(0), pair.reader_at(0));
        let (mut d0, mut d1) = (vec![], vec![]);
        let e0 = terms(true, w, &ys, np, &bits0, &mut pair0, &mut d0);
        let e1 = terms(false, w, &ys, np, &bits1, &mut pair1, &mut d1);
        assert_eq!(e0, e1);
        assert_eq!(d0.len(), n * np * k as usize);
        let mut z = vec![];
        zero_test(w, &d0, &d1, &mut z);
        let mut resp = vec![];
        respond(w, np, &r, &z, &v0, Some(&vr0), &mut resp);
        let words = crate::transport::frame::bytes_to_u64(&resp);
        let (v1, vr1) = words.split_at(n * np);
        let (mut bit, mut relu) = (vec![], vec![]);
        for q in 0..n * np {
            let e = q / np;
            bit.push(finish_bit(true, e0[q], v0[q]).wrapping_add(finish_bit(false, e0[q], v1[q])));
            relu.push(
                finish_relu(true, e0[q], ys[q], r0[e], v0[q], vr0[q])
                    .wrapping_add(finish_relu(false, e0[q], ys[q], r1[e], v1[q], vr1[q])),
            );
        }
        (bit, relu)
    }

    #[test]
    fn comparison_and_relu_are_exact_in_the_window() {
        let mut g = Prg::from_u64(77);
        for k in [2u32, 3, 8, 16, 31, 32, 33, 49, 64] {
            let half = if k == 64 { i64::MAX } else { (1i64 << (k - 1)) - 1 };
            let mut xs: Vec<i64> = (-70i64..=70).map(|v| v.clamp(-half - 1, half)).collect();
            xs.extend([half, -half - 1, half - 1, -half, 0, 1, -1]);
            xs.extend((0..300).map(|_| (g.next_u64() as i64) >> (65 - k).min(63)));
            let (bit, relu) = run(k, &xs, &[0], u64::from(k));
            for (i, &x) in xs.iter().enumerate() {
                assert_eq!(bit[i], u64::from(x >= 0), "k={k} x={x}");
                assert_eq!(relu[i], x.max(0) as u64, "k={k} x={x}");
            }
        }
    }

    #[test]
    fn several_points_share_one_mask() {
        let xs: Vec<i64> = (-40..40).map(|v| v * 1000 + 7).collect();
        let pts = [-20_000i64, -1, 0, 5, 30_000];
        let (bit, relu) = run(24, &xs, &pts, 5);
        for (e, &x) in xs.iter().enumerate() {
            for (j, &p) in pts.iter().enumerate() {
                let q = e * pts.len() + j;
                assert_eq!(bit[q], u64::from(x >= p), "x={x} p={p}");
                assert_eq!(relu[q], (x - p).max(0) as u64, "x={x} p={p}");
            }
        }
    }

    #[test]
    fn seven_bit_packing_round_trips() {
        let mut g = Prg::from_u64(2);
        for n in [0usize, 1, 7, 8, 9, 15, 16, 17, 1000] {
            let mut v = vec![0u8; n];
            fill_zp(&mut g, &mut v);
            let mut p = vec![0xaa];
            pack7(&v, &mut p);
            assert_eq!(p.len(), 1 + packed_len(n));
            assert_eq!(unpack7(&p[1..], n), v, "n = {n}");
        }
    }

    #[test]
    fn outside_the_window_the_sign_of_x_mod_2k_is_computed() {
        let k = 12;
        let xs: Vec<i64> = vec![2048, 4095, 4096, -2049, -4096, 1 << 20, (1 << 20) + 2047];
        let (bit, _) = run(k, &xs, &[0], 3);
        for (i, &x) in xs.iter().enumerate() {
            let wrapped = ((x as u64) << (64 - k)) as i64 >> (64 - k);
            assert_eq!(bit[i], u64::from(wrapped >= 0), "x={x}");
        }
    }
}
