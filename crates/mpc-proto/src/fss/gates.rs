//! Sign and ReLU gates on masked inputs (BCG+21 §4–5 "signed comparison" /
//! "ReLU via one DCF", as used by AriaNN and LLAMA), one DCF on `n − 1` bits
//! each.
//!
//! # Setting
//!
//! `x ∈ Z_2^64` is additively shared, read as signed, with
//! `-2^(n-1) ≤ x < 2^(n-1)`, `2 ≤ n ≤ 64`. The dealer knows the mask `r_in`;
//! online both parties learn `y = (x + r_in) mod 2^n` (only the low `n` bits
//! of the `y` passed to `eval` are read). See [`super`] for what the host must
//! do around these calls.
//!
//! # Construction
//!
//! Write `y_n = y mod 2^n = y_h·2^(n-1) + y'` and likewise `r_n = r_in mod
//! 2^n = r_h·2^(n-1) + r'` with `y', r' < 2^(n-1)`. Since `x ≡ y_n − r_n`,
//!
//! ```text
//! MSB(x) = y_h ⊕ r_h ⊕ c,        c = [y' < r']   (borrow out of the low n−1 bits),
//! ```
//!
//! and `c` is one DCF on `n − 1` bits with `α = r'`. With `u = 1 − 2·r_h` (so
//! `r_h ⊕ c = r_h + u·c`) the dealer folds `r_h` into the payload:
//!
//! * **Sign**: payload `β = (u)`; key also holds a share of `r_h`.
//!   `[x<0] = r_h + u·c` if `y_h = 0`, else `1 − r_h − u·c`.
//! * **ReLU**: `d = [x ≥ 0] = 1 − MSB(x)`. When `d = 1`, `x = y_n − r_n`
//!   if `y_h = 1`, and `x = y_n − r_n + 2^n·r_h` if `y_h = 0` (the
//!   wrap-around of `y_n − r_n` back into Z_2^64); in the latter case
//!   `d·r_h = r_h·c`. Hence, with payload `β = (u, u·r_n, 2^n·r_h)` giving
//!   shares `A, B, D` of `β·c`, and key shares of `r_h, r_n, r_h·r_n`:
//!
//! ```text
//! y_h = 1:  d = r_h + A,       ReLU = d·y_n − r_h·r_n − B
//! y_h = 0:  d = 1 − r_h − A,   ReLU = d·y_n − r_n + r_h·r_n + B + D
//! ```
//!
//! all local and linear in the shares. The third payload word is what lets
//! the parties open only `n` bits while getting an exact Z_2^64 output; it
//! costs one extra AES block per level (3 instead of 2).
//!
//! # What a key reveals / size
//!
//! The DCF key is pseudorandom (reveals only `n`); the constant shares are
//! uniformly random. Together with `y` (uniform because `r_in` is) a party
//! learns nothing about `x`. Per party, at bit width `n`:
//! `SignKey::byte_len = 36 + 24·(n−1)` (780 B at n=32, 1548 B at n=64),
//! `ReluKey::byte_len = 68 + 40·(n−1)` (1308 B at n=32, 2588 B at n=64).

use rand_core::CryptoRng;

use super::dcf::{self, DcfKey, Reader};
use super::{FssError, check_party};

const SIGN_TAG: u8 = 0x53; // 'S'
const RELU_TAG: u8 = 0x52; // 'R'
const RELU64_TAG: u8 = 0x54; // 'T'

#[inline(always)]
fn low_mask(bits: u32) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

fn check_width(n: u32) -> Result<(), FssError> {
    if (2..=64).contains(&n) { Ok(()) } else { Err(FssError::InvalidBitWidth { got: n, min: 2, max: 64 }) }
}

/// Splits the public-to-the-dealer mask into `(r_h, r', r_n)`.
#[inline(always)]
fn split_mask(n: u32, r: u64) -> (u64, u64, u64) {
    let r_n = r & low_mask(n);
    ((r_n >> (n - 1)) & 1, r_n & low_mask(n - 1), r_n)
}

/// Splits the opened `y` into `(y_h, y', y_n)`.
#[inline(always)]
fn split_y(n: u32, y: u64) -> (u64, u64, u64) {
    split_mask(n, y)
}

fn check_batch(keys: usize, ys: usize, outs: &[usize]) -> Result<(), FssError> {
    for &o in outs {
        if keys != ys || keys != o {
            return Err(FssError::LengthMismatch { keys, inputs: ys, outputs: o });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Sign gate
// ---------------------------------------------------------------------------

/// One party's key for the sign gate `x ↦ [x < 0]`.
///
/// Contains a DCF key on `n − 1` bits with a 1-word payload and a share of
/// the top bit of the mask. Size: `36 + 24·(n − 1)` bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SignKey {
    n: u8,
    rh: u64,
    dcf: DcfKey<1>,
}

impl std::fmt::Debug for SignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignKey(n={}, ..)", self.n)
    }
}

/// Comparison with zero on an `n`-bit signed input: outputs additive Z_2^64
/// shares of `[x < 0]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SignGate;

impl SignGate {
    /// Dealer: key pair for bit width `n ∈ 2..=64` and input mask `r_in`.
    pub fn keygen<R: CryptoRng + ?Sized>(n: u32, r_in: u64, rng: &mut R) -> Result<(SignKey, SignKey), FssError> {
        check_width(n)?;
        let (rh, rl, _) = split_mask(n, r_in);
        let u = 1u64.wrapping_sub(rh << 1);
        let (d0, d1) = dcf::keygen::<1, R>(n - 1, rl, [u], rng)?;
        let a = rng.next_u64();
        Ok((SignKey { n: n as u8, rh: a, dcf: d0 }, SignKey { n: n as u8, rh: rh.wrapping_sub(a), dcf: d1 }))
    }

    #[inline(always)]
    fn finish(p1: bool, n: u32, rh: u64, y: u64, a: u64) -> u64 {
        let (yh, _, _) = split_y(n, y);
        let w = rh.wrapping_add(a);
        if yh == 0 { w } else { (!p1 as u64).wrapping_sub(w) }
    }

    /// Online: party `party` evaluates at the opened `y = x + r_in (mod 2^n)`;
    /// returns its share of `[x < 0]`.
    pub fn eval(party: u8, key: &SignKey, y: u64) -> Result<u64, FssError> {
        let p1 = check_party(party)?;
        let (_, yl, _) = split_y(key.n as u32, y);
        let [a] = dcf::eval_unchecked(p1, &key.dcf, yl);
        Ok(Self::finish(p1, key.n as u32, key.rh, y, a))
    }

    /// Online batch: `out[i] = eval(party, &keys[i], ys[i])`.
    pub fn eval_batch(party: u8, keys: &[SignKey], ys: &[u64], out: &mut [u64]) -> Result<(), FssError> {
        let p1 = check_party(party)?;
        check_batch(keys.len(), ys.len(), &[out.len()])?;
        dcf::eval_batch_by(
            p1,
            keys,
            |k| &k.dcf,
            |i| ys[i] & low_mask(keys[i].n as u32 - 1),
            |i, [a]| out[i] = Self::finish(p1, keys[i].n as u32, keys[i].rh, ys[i], a),
        );
        Ok(())
    }
}

impl SignGate {
    /// Dealer: key pairs for many masks at once (batched DCF key generation), serialised
    /// back to back into `out0` (P0's keys) and `out1` (P1's).
    pub fn keygen_into<R: CryptoRng + ?Sized>(
        n: u32,
        r_ins: &[u64],
        rng: &mut R,
        out0: &mut Vec<u8>,
        out1: &mut Vec<u8>,
    ) -> Result<(), FssError> {
        check_width(n)?;
        let mut alphas = Vec::with_capacity(r_ins.len());
        let mut betas = Vec::with_capacity(r_ins.len());
        for &r in r_ins {
            let (rh, rl, _) = split_mask(n, r);
            alphas.push(rl);
            betas.push([1u64.wrapping_sub(rh << 1)]);
        }
        let dcfs = dcf::keygen_batch::<1, R>(n - 1, &alphas, &betas, rng)?;
        for (&r, (d0, d1)) in r_ins.iter().zip(dcfs) {
            let (rh, _, _) = split_mask(n, r);
            let a = rng.next_u64();
            SignKey { n: n as u8, rh: a, dcf: d0 }.write_to(out0);
            SignKey { n: n as u8, rh: rh.wrapping_sub(a), dcf: d1 }.write_to(out1);
        }
        Ok(())
    }
}

impl SignKey {
    /// Gate bit width `n`.
    pub fn n(&self) -> u32 {
        self.n as u32
    }

    /// Serialised size: `36 + 24·(n − 1)` bytes.
    pub fn byte_len(&self) -> usize {
        Self::byte_len_for(self.n as u32)
    }

    /// Serialised size of a key of bit width `n`.
    pub const fn byte_len_for(n: u32) -> usize {
        10 + DcfKey::<1>::byte_len_for(n - 1)
    }

    /// Serialises: `b'S' | n: u8 | r_h share: u64 LE | DCF key`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.byte_len());
        self.write_to(&mut v);
        v
    }

    /// Appends [`SignKey::to_bytes`] to `v` (the dealer serialises a batch into one frame).
    pub fn write_to(&self, v: &mut Vec<u8>) {
        v.push(SIGN_TAG);
        v.push(self.n);
        v.extend_from_slice(&self.rh.to_le_bytes());
        self.dcf.write_to(v);
    }

    /// Parses [`SignKey::to_bytes`] output; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FssError> {
        let mut r = Reader(bytes);
        if r.u8()? != SIGN_TAG {
            return Err(FssError::Malformed("not a sign-gate key"));
        }
        let n = r.u8()?;
        check_width(n as u32).map_err(|_| FssError::Malformed("gate width not in 2..=64"))?;
        let rh = r.u64()?;
        let dcf = DcfKey::<1>::from_bytes(r.0)?;
        if dcf.n() != n as u32 - 1 {
            return Err(FssError::Malformed("DCF width does not match gate width"));
        }
        Ok(SignKey { n, rh, dcf })
    }
}

// ---------------------------------------------------------------------------
// ReLU gate
// ---------------------------------------------------------------------------

/// One party's key for the ReLU gate.
///
/// Contains a DCF key on `n − 1` bits with a 3-word payload and shares of
/// `r_h, r_n, r_h·r_n`. Size: `68 + 40·(n − 1)` bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ReluKey {
    n: u8,
    /// Shares of `r_h`, `r_n`, `r_h·r_n`.
    k: [u64; 3],
    dcf: DcfKey<3>,
}

impl std::fmt::Debug for ReluKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReluKey(n={}, ..)", self.n)
    }
}

/// One party's output of the ReLU gate: additive Z_2^64 shares.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct ReluShare {
    /// Share of `ReLU(x) = x·[x ≥ 0]`.
    pub relu: u64,
    /// Share of the bit `[x ≥ 0]` (ReLU derivative / select bit).
    pub drelu: u64,
}

impl std::fmt::Debug for ReluShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReluShare(..)")
    }
}

/// ReLU on an `n`-bit signed input in one round: outputs shares of
/// `ReLU(x)` and of `[x ≥ 0]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReluGate;

impl ReluGate {
    /// Dealer: key pair for bit width `n ∈ 2..=64` and input mask `r_in`.
    pub fn keygen<R: CryptoRng + ?Sized>(n: u32, r_in: u64, rng: &mut R) -> Result<(ReluKey, ReluKey), FssError> {
        check_width(n)?;
        let (rh, rl, rn) = split_mask(n, r_in);
        let u = 1u64.wrapping_sub(rh << 1);
        let two_n = if n == 64 { 0 } else { 1u64 << n };
        let beta = [u, u.wrapping_mul(rn), two_n.wrapping_mul(rh)];
        let (d0, d1) = dcf::keygen::<3, R>(n - 1, rl, beta, rng)?;
        let consts = [rh, rn, rh.wrapping_mul(rn)];
        let a: [u64; 3] = std::array::from_fn(|_| rng.next_u64());
        let b: [u64; 3] = std::array::from_fn(|i| consts[i].wrapping_sub(a[i]));
        Ok((ReluKey { n: n as u8, k: a, dcf: d0 }, ReluKey { n: n as u8, k: b, dcf: d1 }))
    }

    #[inline(always)]
    fn finish(p1: bool, n: u32, k: [u64; 3], y: u64, [a, b, d]: [u64; 3]) -> ReluShare {
        let (yh, _, yn) = split_y(n, y);
        let [kh, kn, khn] = k;
        if yh == 1 {
            let drelu = kh.wrapping_add(a);
            let relu = drelu.wrapping_mul(yn).wrapping_sub(khn).wrapping_sub(b);
            ReluShare { relu, drelu }
        } else {
            let drelu = (!p1 as u64).wrapping_sub(kh).wrapping_sub(a);
            let relu = drelu.wrapping_mul(yn).wrapping_sub(kn).wrapping_add(khn).wrapping_add(b).wrapping_add(d);
            ReluShare { relu, drelu }
        }
    }

    /// Online: party `party` evaluates at the opened `y = x + r_in (mod 2^n)`.
    pub fn eval(party: u8, key: &ReluKey, y: u64) -> Result<ReluShare, FssError> {
        let p1 = check_party(party)?;
        let (_, yl, _) = split_y(key.n as u32, y);
        let s = dcf::eval_unchecked(p1, &key.dcf, yl);
        Ok(Self::finish(p1, key.n as u32, key.k, y, s))
    }

    /// Online batch: `relu[i], drelu[i]` = shares for `keys[i]` at `ys[i]`.
    pub fn eval_batch(
        party: u8,
        keys: &[ReluKey],
        ys: &[u64],
        relu: &mut [u64],
        drelu: &mut [u64],
    ) -> Result<(), FssError> {
        let p1 = check_party(party)?;
        check_batch(keys.len(), ys.len(), &[relu.len(), drelu.len()])?;
        dcf::eval_batch_by(
            p1,
            keys,
            |k| &k.dcf,
            |i| ys[i] & low_mask(keys[i].n as u32 - 1),
            |i, s| {
                let o = Self::finish(p1, keys[i].n as u32, keys[i].k, ys[i], s);
                relu[i] = o.relu;
                drelu[i] = o.drelu;
            },
        );
        Ok(())
    }
}

impl ReluKey {
    /// Gate bit width `n`.
    pub fn n(&self) -> u32 {
        self.n as u32
    }

    /// Serialised size: `68 + 40·(n − 1)` bytes.
    pub fn byte_len(&self) -> usize {
        Self::byte_len_for(self.n as u32)
    }

    /// Serialised size of a key of bit width `n`.
    pub const fn byte_len_for(n: u32) -> usize {
        26 + DcfKey::<3>::byte_len_for(n - 1)
    }

    /// Serialises: `b'R' | n: u8 | 3 × u64 LE constant shares | DCF key`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.byte_len());
        v.push(RELU_TAG);
        v.push(self.n);
        for w in &self.k {
            v.extend_from_slice(&w.to_le_bytes());
        }
        self.dcf.write_to(&mut v);
        v
    }

    /// Parses [`ReluKey::to_bytes`] output; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FssError> {
        let mut r = Reader(bytes);
        if r.u8()? != RELU_TAG {
            return Err(FssError::Malformed("not a ReLU-gate key"));
        }
        let n = r.u8()?;
        check_width(n as u32).map_err(|_| FssError::Malformed("gate width not in 2..=64"))?;
        let k = [r.u64()?, r.u64()?, r.u64()?];
        let dcf = DcfKey::<3>::from_bytes(r.0)?;
        if dcf.n() != n as u32 - 1 {
            return Err(FssError::Malformed("DCF width does not match gate width"));
        }
        Ok(ReluKey { n, k, dcf })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    /// Test inputs for width `n`: sweep across 0, the extremes, and random.
    fn inputs(n: u32, rng: &mut ChaCha20Rng) -> Vec<i64> {
        let half = if n == 64 { i64::MAX } else { (1i64 << (n - 1)) - 1 };
        let min = if n == 64 { i64::MIN } else { -(1i64 << (n - 1)) };
        let mut v: Vec<i64> = (-1000..=1000).filter(|x| *x >= min && *x <= half).collect();
        v.extend([half, -half, min, 0, 1, -1, half - 1, min + 1]);
        for _ in 0..300 {
            let r = rng.random::<u64>() >> (64 - n);
            v.push(((r << (64 - n)) as i64) >> (64 - n)); // sign-extend n bits
        }
        v
    }

    /// Host-side simulation: shares of x and r_in, opening of n bits.
    fn open(n: u32, x: i64, r_in: u64, rng: &mut ChaCha20Rng) -> u64 {
        let x0: u64 = rng.random();
        let x1 = (x as u64).wrapping_sub(x0);
        let r0: u64 = rng.random();
        let r1 = r_in.wrapping_sub(r0);
        let m = low_mask(n);
        let z0 = x0.wrapping_add(r0) & m;
        let z1 = x1.wrapping_add(r1) & m;
        z0.wrapping_add(z1) & m
    }

    fn masks(rng: &mut ChaCha20Rng) -> Vec<u64> {
        let mut v = vec![0, u64::MAX, 1 << 31, (1 << 31) - 1, 1 << 63, (1 << 63) - 1];
        v.extend((0..6).map(|_| rng.random::<u64>()));
        v
    }

    #[test]
    fn sign_gate_sweeps() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for &n in &[2u32, 3, 8, 16, 32, 64] {
            for r_in in masks(&mut rng) {
                let (k0, k1) = SignGate::keygen(n, r_in, &mut rng).unwrap();
                let xs = inputs(n, &mut rng);
                let ys: Vec<u64> = xs.iter().map(|&x| open(n, x, r_in, &mut rng)).collect();
                let mut o0 = vec![0; xs.len()];
                let mut o1 = vec![0; xs.len()];
                let ks0 = vec![k0.clone(); xs.len()];
                let ks1 = vec![k1.clone(); xs.len()];
                SignGate::eval_batch(0, &ks0, &ys, &mut o0).unwrap();
                SignGate::eval_batch(1, &ks1, &ys, &mut o1).unwrap();
                for (i, &x) in xs.iter().enumerate() {
                    let want = (x < 0) as u64;
                    assert_eq!(o0[i].wrapping_add(o1[i]), want, "n={n} r={r_in:#x} x={x}");
                    assert_eq!(SignGate::eval(0, &k0, ys[i]).unwrap(), o0[i]);
                    // Upper bits of y must not matter.
                    let yh = ys[i] | (rng.random::<u64>() & !low_mask(n));
                    assert_eq!(SignGate::eval(1, &k1, yh).unwrap(), o1[i]);
                }
            }
        }
    }

    #[test]
    fn relu_gate_sweeps() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for &n in &[2u32, 3, 8, 16, 32, 64] {
            for r_in in masks(&mut rng) {
                let (k0, k1) = ReluGate::keygen(n, r_in, &mut rng).unwrap();
                let xs = inputs(n, &mut rng);
                let ys: Vec<u64> = xs.iter().map(|&x| open(n, x, r_in, &mut rng)).collect();
                let len = xs.len();
                let (mut a0, mut b0, mut a1, mut b1) = (vec![0; len], vec![0; len], vec![0; len], vec![0; len]);
                let ks0 = vec![k0.clone(); len];
                let ks1 = vec![k1.clone(); len];
                ReluGate::eval_batch(0, &ks0, &ys, &mut a0, &mut b0).unwrap();
                ReluGate::eval_batch(1, &ks1, &ys, &mut a1, &mut b1).unwrap();
                for (i, &x) in xs.iter().enumerate() {
                    let relu = if x >= 0 { x as u64 } else { 0 };
                    assert_eq!(a0[i].wrapping_add(a1[i]), relu, "n={n} r={r_in:#x} x={x}");
                    assert_eq!(b0[i].wrapping_add(b1[i]), (x >= 0) as u64);
                    let s = ReluGate::eval(0, &k0, ys[i]).unwrap();
                    assert_eq!((s.relu, s.drelu), (a0[i], b0[i]));
                    let yh = ys[i] | (rng.random::<u64>() & !low_mask(n));
                    let s = ReluGate::eval(1, &k1, yh).unwrap();
                    assert_eq!((s.relu, s.drelu), (a1[i], b1[i]));
                }
            }
        }
    }

    /// Exhaustive over all x and all masks for tiny widths.
    #[test]
    fn gates_exhaustive_small() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        for n in 2..=5u32 {
            for rn in 0..(1u64 << n) {
                let r_in = rn | (rng.random::<u64>() << n);
                let (s0, s1) = SignGate::keygen(n, r_in, &mut rng).unwrap();
                let (q0, q1) = ReluGate::keygen(n, r_in, &mut rng).unwrap();
                let lo = -(1i64 << (n - 1));
                for x in lo..-lo {
                    let y = (x as u64).wrapping_add(r_in);
                    let s = SignGate::eval(0, &s0, y).unwrap().wrapping_add(SignGate::eval(1, &s1, y).unwrap());
                    assert_eq!(s, (x < 0) as u64);
                    let (a, b) = (ReluGate::eval(0, &q0, y).unwrap(), ReluGate::eval(1, &q1, y).unwrap());
                    assert_eq!(a.relu.wrapping_add(b.relu), x.max(0) as u64);
                    assert_eq!(a.drelu.wrapping_add(b.drelu), (x >= 0) as u64);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn prop_relu_and_sign(n in 2u32..=64, r_in: u64, xr: u64, seed: u64) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let x = ((xr << (64 - n)) as i64) >> (64 - n);
            let y = open(n, x, r_in, &mut rng);
            let (k0, k1) = ReluGate::keygen(n, r_in, &mut rng).unwrap();
            let (a, b) = (ReluGate::eval(0, &k0, y).unwrap(), ReluGate::eval(1, &k1, y).unwrap());
            prop_assert_eq!(a.relu.wrapping_add(b.relu), x.max(0) as u64);
            prop_assert_eq!(a.drelu.wrapping_add(b.drelu), (x >= 0) as u64);
            let (s0, s1) = SignGate::keygen(n, r_in, &mut rng).unwrap();
            let s = SignGate::eval(0, &s0, y).unwrap().wrapping_add(SignGate::eval(1, &s1, y).unwrap());
            prop_assert_eq!(s, (x < 0) as u64);
        }

        #[test]
        fn prop_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = SignKey::from_bytes(&bytes);
            let _ = ReluKey::from_bytes(&bytes);
            let _ = DcfKey::<3>::from_bytes(&bytes);
        }
    }

    #[test]
    fn gate_serialisation() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        for &n in &[2u32, 8, 16, 32, 64] {
            let r_in = rng.random::<u64>();
            let (s0, s1) = SignGate::keygen(n, r_in, &mut rng).unwrap();
            let (q0, q1) = ReluGate::keygen(n, r_in, &mut rng).unwrap();
            for k in [&s0, &s1] {
                let b = k.to_bytes();
                assert_eq!(b.len(), k.byte_len());
                assert_eq!(b.len(), 36 + 24 * (n as usize - 1));
                assert_eq!(&SignKey::from_bytes(&b).unwrap(), k);
                for cut in 0..b.len() {
                    assert!(SignKey::from_bytes(&b[..cut]).is_err());
                }
                assert!(ReluKey::from_bytes(&b).is_err());
                let mut bad = b.clone();
                bad[1] = bad[1].wrapping_add(1); // width disagrees with DCF
                assert!(SignKey::from_bytes(&bad).is_err());
                bad[1] = 1;
                assert!(SignKey::from_bytes(&bad).is_err());
            }
            for k in [&q0, &q1] {
                let b = k.to_bytes();
                assert_eq!(b.len(), k.byte_len());
                assert_eq!(b.len(), 68 + 40 * (n as usize - 1));
                assert_eq!(&ReluKey::from_bytes(&b).unwrap(), k);
                for cut in 0..b.len() {
                    assert!(ReluKey::from_bytes(&b[..cut]).is_err());
                }
                let mut long = b.clone();
                long.push(0);
                assert!(ReluKey::from_bytes(&long).is_err());
                assert!(SignKey::from_bytes(&b).is_err());
            }
        }
    }

    #[test]
    fn gate_param_errors() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        assert!(SignGate::keygen(1, 0, &mut rng).is_err());
        assert!(ReluGate::keygen(65, 0, &mut rng).is_err());
        let (k0, _) = ReluGate::keygen(8, 0, &mut rng).unwrap();
        assert_eq!(ReluGate::eval(2, &k0, 0), Err(FssError::InvalidParty(2)));
        let mut o = [0u64; 1];
        assert!(ReluGate::eval_batch(0, &[k0], &[1, 2], &mut o, &mut [0; 1]).is_err());
    }
}

// ---------------------------------------------------------------------------
// Packed key batches (zero-copy evaluation of keys as received)
// ---------------------------------------------------------------------------

/// A gate whose serialised keys can be evaluated in place from a [`PackedKeys`] buffer.
pub trait PackedGate {
    /// Serialisation tag (first byte of every key).
    const TAG: u8;
    /// Bytes before the embedded DCF key: tag, width and the constant shares.
    const HEADER: usize;
    /// Serialised size of one key at bit width `n`.
    fn key_len(n: u32) -> usize;
}

impl PackedGate for SignKey {
    const TAG: u8 = SIGN_TAG;
    const HEADER: usize = 10;
    fn key_len(n: u32) -> usize {
        SignKey::byte_len_for(n)
    }
}

/// `count` serialised keys of one gate type and width, back to back in one buffer (as the
/// dealer sends them), validated once and evaluated without parsing: the online phase does no
/// per-key allocation or copying.
pub struct PackedKeys<K> {
    buf: Vec<u8>,
    start: usize,
    count: usize,
    n: u32,
    _gate: std::marker::PhantomData<K>,
}

impl<K> std::fmt::Debug for PackedKeys<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedKeys[{} × n={}](..)", self.count, self.n)
    }
}

impl<K: PackedGate> PackedKeys<K> {
    /// Takes `buf[start..]`, which must hold exactly `count` keys of width `n`; checks every
    /// key's tag, widths and seed (cheap header checks; malformed bytes are an error, never a
    /// panic later).
    pub fn new(buf: Vec<u8>, start: usize, count: usize, n: u32) -> Result<Self, FssError> {
        check_width(n)?;
        let klen = K::key_len(n);
        if buf.len() < start || buf.len() - start != count * klen {
            return Err(FssError::Malformed("packed keys: wrong total length"));
        }
        let keys = Self { buf, start, count, n, _gate: std::marker::PhantomData };
        for i in 0..count {
            let k = keys.key(i);
            if k[0] != K::TAG || u32::from(k[1]) != n {
                return Err(FssError::Malformed("packed keys: wrong tag or width"));
            }
        }
        Ok(keys)
    }

    /// Serialises owned keys into a packed batch (for tests and the in-process dealer).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Gate bit width.
    pub fn n(&self) -> u32 {
        self.n
    }

    /// The serialised keys, back to back.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    #[inline(always)]
    fn key(&self, i: usize) -> &[u8] {
        let klen = K::key_len(self.n);
        &self.buf[self.start + i * klen..self.start + (i + 1) * klen]
    }

    #[inline(always)]
    fn consts<const C: usize>(&self, i: usize) -> [u64; C] {
        let k = self.key(i);
        std::array::from_fn(|q| u64::from_le_bytes(k[2 + 8 * q..10 + 8 * q].try_into().expect("8 bytes")))
    }

    #[inline(always)]
    fn dcf<const L: usize>(&self, i: usize) -> dcf::DcfRef<'_, L> {
        // Validated by the typed constructors (`sign`, `relu`).
        dcf::DcfRef::trusted(&self.key(i)[K::HEADER..])
    }

    /// Validates the embedded DCF keys (run once, at construction, by the typed constructors).
    fn check_dcf<const L: usize>(&self) -> Result<(), FssError> {
        for i in 0..self.count {
            dcf::DcfRef::<L>::check(&self.key(i)[K::HEADER..], self.n - 1)?;
        }
        Ok(())
    }
}

impl PackedKeys<SignKey> {
    /// [`PackedKeys::new`] for sign keys, with the DCF keys validated too.
    pub fn sign(buf: Vec<u8>, start: usize, count: usize, n: u32) -> Result<Self, FssError> {
        let k = Self::new(buf, start, count, n)?;
        k.check_dcf::<1>()?;
        Ok(k)
    }
}

impl SignGate {
    /// Online batch over packed keys: `out[i]` = share of `[x_i < 0]` from `ys[i]`.
    pub fn eval_packed(party: u8, keys: &PackedKeys<SignKey>, ys: &[u64], out: &mut [u64]) -> Result<(), FssError> {
        let p1 = check_party(party)?;
        check_batch(keys.len(), ys.len(), &[out.len()])?;
        let n = keys.n();
        dcf::eval_batch_idx::<1, _>(
            p1,
            keys.len(),
            |i| keys.dcf::<1>(i),
            |i| ys[i] & low_mask(n - 1),
            |i, [a]| out[i] = Self::finish(p1, n, keys.consts::<1>(i)[0], ys[i], a),
        );
        Ok(())
    }
}

#[cfg(test)]
mod packed_tests {
    use super::*;
    use rand::SeedableRng;

    /// Packed evaluation equals per-key evaluation, and malformed buffers are rejected.
    #[test]
    fn packed_matches_owned_keys() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let n = 20;
        let xs: Vec<u64> = (0..100u64).map(|i| (i.wrapping_mul(7919) as i64 % 400_000 - 200_000) as u64).collect();
        let (mut k0s, mut b0, mut b1, mut ys) = (vec![], vec![0u8; 3], vec![], vec![]);
        for (i, &x) in xs.iter().enumerate() {
            let r = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let (k0, k1) = Relu64Gate::keygen(n, r, &mut rng).unwrap();
            b0.extend_from_slice(&k0.to_bytes());
            b1.extend_from_slice(&k1.to_bytes());
            k0s.push(k0);
            ys.push(x.wrapping_add(r));
        }
        let p0 = PackedKeys::relu64(b0.clone(), 3, xs.len(), n).unwrap();
        let p1 = PackedKeys::relu64(b1.clone(), 0, xs.len(), n).unwrap();
        let m = xs.len();
        let (mut r0, mut d0, mut r1, mut d1) = (vec![0; m], vec![0; m], vec![0; m], vec![0; m]);
        Relu64Gate::eval_packed(0, &p0, &ys, &mut r0, &mut d0).unwrap();
        Relu64Gate::eval_packed(1, &p1, &ys, &mut r1, &mut d1).unwrap();
        for i in 0..m {
            let owned = Relu64Gate::eval(0, &k0s[i], ys[i]).unwrap();
            assert_eq!((owned.relu, owned.drelu), (r0[i], d0[i]), "packed and owned keys agree");
            let x = xs[i] as i64;
            assert_eq!(r0[i].wrapping_add(r1[i]), x.max(0) as u64);
            assert_eq!(d0[i].wrapping_add(d1[i]), u64::from(x >= 0));
        }
        assert!(PackedKeys::<Relu64Key>::relu64(b1.clone(), 1, m, n).is_err());
        assert!(PackedKeys::<Relu64Key>::relu64(b1.clone(), 0, m, n + 1).is_err());
        let mut bad = b1.clone();
        bad[0] = b'S';
        assert!(PackedKeys::<Relu64Key>::relu64(bad, 0, m, n).is_err());
        let mut bad_seed = b1;
        bad_seed[26 + 2] |= 3; // low seed bits must be zero
        assert!(PackedKeys::<Relu64Key>::relu64(bad_seed, 0, m, n).is_err());
    }
}

// ---------------------------------------------------------------------------
// ReLU with a full 64-bit opening (2-word payload)
// ---------------------------------------------------------------------------

/// One party's key for [`Relu64Gate`]: a DCF on `n − 1` bits with the 2-word payload
/// `(u, u·r_in)`, `u = 1 − 2·r_h`, and shares of `r_h`, `r_in`, `r_h·r_in`.
/// Size: `60 + 32·(n − 1)` bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Relu64Key {
    n: u8,
    /// Shares of `r_h`, `r_in`, `r_h·r_in`.
    k: [u64; 3],
    dcf: DcfKey<2>,
}

impl std::fmt::Debug for Relu64Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Relu64Key(n={}, ..)", self.n)
    }
}

/// ReLU when the parties open all 64 bits of `y = x + r_in` (8 bytes per element instead of
/// ⌈n/8⌉): then `x = y − r_in` exactly, `ReLU(x) = d·y − d·r_in` with `d = [x ≥ 0]`, and the
/// payload needs only `(u, u·r_in)` — two AES blocks per tree level instead of three, and a
/// 20% smaller key than [`ReluGate`]. Same exactness: `|x| < 2^(n−1)`.
///
/// Writing `MSB_n(x) = y_h ⊕ r_h ⊕ c` with `c = [y' < r']` (one DCF on `n − 1` bits) and
/// `r_h ⊕ c = r_h + u·c`:
///
/// ```text
/// y_h = 1:  d = r_h + A,       d·r = r_h·r + B
/// y_h = 0:  d = 1 − r_h − A,   d·r = r − r_h·r − B          (A, B: shares of u·c, u·r·c)
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Relu64Gate;

impl Relu64Gate {
    /// Dealer: key pair for bit width `n ∈ 2..=64` and input mask `r_in`.
    pub fn keygen<R: CryptoRng + ?Sized>(n: u32, r_in: u64, rng: &mut R) -> Result<(Relu64Key, Relu64Key), FssError> {
        check_width(n)?;
        let (rh, rl, _) = split_mask(n, r_in);
        let u = 1u64.wrapping_sub(rh << 1);
        let (d0, d1) = dcf::keygen::<2, R>(n - 1, rl, [u, u.wrapping_mul(r_in)], rng)?;
        let consts = [rh, r_in, rh.wrapping_mul(r_in)];
        let a: [u64; 3] = std::array::from_fn(|_| rng.next_u64());
        let b: [u64; 3] = std::array::from_fn(|i| consts[i].wrapping_sub(a[i]));
        Ok((Relu64Key { n: n as u8, k: a, dcf: d0 }, Relu64Key { n: n as u8, k: b, dcf: d1 }))
    }

    #[inline(always)]
    fn finish(p1: bool, n: u32, k: [u64; 3], y: u64, [a, b]: [u64; 2]) -> ReluShare {
        let (yh, _, _) = split_y(n, y);
        let [kh, kr, khr] = k;
        let (drelu, dr) = if yh == 1 {
            (kh.wrapping_add(a), khr.wrapping_add(b))
        } else {
            ((!p1 as u64).wrapping_sub(kh).wrapping_sub(a), kr.wrapping_sub(khr).wrapping_sub(b))
        };
        ReluShare { relu: drelu.wrapping_mul(y).wrapping_sub(dr), drelu }
    }

    /// Online: party `party` evaluates at the opened `y = x + r_in (mod 2^64)`.
    pub fn eval(party: u8, key: &Relu64Key, y: u64) -> Result<ReluShare, FssError> {
        let p1 = check_party(party)?;
        let (_, yl, _) = split_y(key.n as u32, y);
        let s = dcf::eval_unchecked(p1, &key.dcf, yl);
        Ok(Self::finish(p1, key.n as u32, key.k, y, s))
    }

    /// Online batch over packed keys: shares of `ReLU(x_i)` and `[x_i ≥ 0]` from the full
    /// 64-bit `ys[i]`.
    pub fn eval_packed(
        party: u8,
        keys: &PackedKeys<Relu64Key>,
        ys: &[u64],
        relu: &mut [u64],
        drelu: &mut [u64],
    ) -> Result<(), FssError> {
        let p1 = check_party(party)?;
        check_batch(keys.len(), ys.len(), &[relu.len(), drelu.len()])?;
        let n = keys.n();
        dcf::eval_batch_idx::<2, _>(
            p1,
            keys.len(),
            |i| keys.dcf::<2>(i),
            |i| ys[i] & low_mask(n - 1),
            |i, s| {
                let o = Self::finish(p1, n, keys.consts::<3>(i), ys[i], s);
                relu[i] = o.relu;
                drelu[i] = o.drelu;
            },
        );
        Ok(())
    }
}

impl Relu64Gate {
    /// Dealer: key pairs for many masks at once (batched DCF key generation), serialised
    /// back to back into `out0` (P0's keys) and `out1` (P1's).
    pub fn keygen_into<R: CryptoRng + ?Sized>(
        n: u32,
        r_ins: &[u64],
        rng: &mut R,
        out0: &mut Vec<u8>,
        out1: &mut Vec<u8>,
    ) -> Result<(), FssError> {
        check_width(n)?;
        let mut alphas = Vec::with_capacity(r_ins.len());
        let mut betas = Vec::with_capacity(r_ins.len());
        for &r in r_ins {
            let (rh, rl, _) = split_mask(n, r);
            let u = 1u64.wrapping_sub(rh << 1);
            alphas.push(rl);
            betas.push([u, u.wrapping_mul(r)]);
        }
        let dcfs = dcf::keygen_batch::<2, R>(n - 1, &alphas, &betas, rng)?;
        for (&r, (d0, d1)) in r_ins.iter().zip(dcfs) {
            let (rh, _, _) = split_mask(n, r);
            let consts = [rh, r, rh.wrapping_mul(r)];
            let a: [u64; 3] = std::array::from_fn(|_| rng.next_u64());
            let b: [u64; 3] = std::array::from_fn(|i| consts[i].wrapping_sub(a[i]));
            Relu64Key { n: n as u8, k: a, dcf: d0 }.write_to(out0);
            Relu64Key { n: n as u8, k: b, dcf: d1 }.write_to(out1);
        }
        Ok(())
    }
}

impl Relu64Key {
    /// Gate bit width `n`.
    pub fn n(&self) -> u32 {
        self.n as u32
    }

    /// Serialised size of a key of bit width `n`: `60 + 32·(n − 1)`.
    pub const fn byte_len_for(n: u32) -> usize {
        26 + DcfKey::<2>::byte_len_for(n - 1)
    }

    /// Serialises: `b'T' | n: u8 | 3 × u64 LE constant shares | DCF key`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::byte_len_for(self.n as u32));
        self.write_to(&mut v);
        v
    }

    /// Appends [`Relu64Key::to_bytes`] to `v` (the dealer serialises a batch into one frame).
    pub fn write_to(&self, v: &mut Vec<u8>) {
        v.push(RELU64_TAG);
        v.push(self.n);
        for w in self.k {
            v.extend_from_slice(&w.to_le_bytes());
        }
        self.dcf.write_to(v);
    }

    /// Parses [`Relu64Key::to_bytes`] output; malformed bytes are an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FssError> {
        let mut r = Reader(bytes);
        if r.u8()? != RELU64_TAG {
            return Err(FssError::Malformed("not a 64-bit ReLU key"));
        }
        let n = r.u8()?;
        check_width(n as u32).map_err(|_| FssError::Malformed("ReLU key width out of range"))?;
        let k = [r.u64()?, r.u64()?, r.u64()?];
        let dcf = DcfKey::<2>::from_bytes(r.0)?;
        if dcf.n() != n as u32 - 1 {
            return Err(FssError::Malformed("ReLU key width mismatch"));
        }
        Ok(Self { n, k, dcf })
    }
}

impl PackedGate for Relu64Key {
    const TAG: u8 = RELU64_TAG;
    const HEADER: usize = 26;
    fn key_len(n: u32) -> usize {
        Relu64Key::byte_len_for(n)
    }
}

impl PackedKeys<Relu64Key> {
    /// [`PackedKeys::new`] for 64-bit-opening ReLU keys, with the DCF keys validated too.
    pub fn relu64(buf: Vec<u8>, start: usize, count: usize, n: u32) -> Result<Self, FssError> {
        let k = Self::new(buf, start, count, n)?;
        k.check_dcf::<2>()?;
        Ok(k)
    }
}

#[cfg(test)]
mod relu64_tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn relu64_is_exact_across_widths_and_the_sign_boundary() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(64);
        for n in [2u32, 8, 16, 33, 49, 64] {
            let half = if n == 64 { i64::MAX } else { (1i64 << (n - 1)) - 1 };
            let mut xs: Vec<i64> = (-300..=300).map(|v: i64| v.clamp(-half - 1, half)).collect();
            xs.extend([half, -half - 1, 0, 1, -1]);
            xs.extend((0..200).map(|_| rng.random::<i64>() >> (65 - n.max(2)).min(63)));
            let (mut b0, mut b1, mut ys) = (vec![], vec![], vec![]);
            for &x in &xs {
                let r: u64 = rng.random();
                let (k0, k1) = Relu64Gate::keygen(n, r, &mut rng).unwrap();
                assert_eq!(Relu64Key::from_bytes(&k0.to_bytes()).unwrap(), k0);
                let y = (x as u64).wrapping_add(r);
                let (s0, s1) = (Relu64Gate::eval(0, &k0, y).unwrap(), Relu64Gate::eval(1, &k1, y).unwrap());
                assert_eq!(s0.relu.wrapping_add(s1.relu), x.max(0) as u64, "n={n} x={x}");
                assert_eq!(s0.drelu.wrapping_add(s1.drelu), u64::from(x >= 0), "n={n} x={x}");
                b0.extend_from_slice(&k0.to_bytes());
                b1.extend_from_slice(&k1.to_bytes());
                ys.push(y);
            }
            let m = xs.len();
            let p0 = PackedKeys::relu64(b0, 0, m, n).unwrap();
            let p1 = PackedKeys::relu64(b1, 0, m, n).unwrap();
            let (mut r0, mut d0, mut r1, mut d1) = (vec![0; m], vec![0; m], vec![0; m], vec![0; m]);
            Relu64Gate::eval_packed(0, &p0, &ys, &mut r0, &mut d0).unwrap();
            Relu64Gate::eval_packed(1, &p1, &ys, &mut r1, &mut d1).unwrap();
            for i in 0..m {
                assert_eq!(r0[i].wrapping_add(r1[i]), xs[i].max(0) as u64, "packed n={n} x={}", xs[i]);
                assert_eq!(d0[i].wrapping_add(d1[i]), u64::from(xs[i] >= 0));
            }
        }
        assert!(Relu64Key::from_bytes(&[RELU64_TAG, 200]).is_err());
    }

    #[test]
    fn batched_keygen_gives_working_keys() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(65);
        for n in [2u32, 17, 49, 64] {
            let half = if n == 64 { i64::MAX } else { (1i64 << (n - 1)) - 1 };
            let xs: Vec<i64> = (-40..40).map(|v: i64| v.clamp(-half - 1, half)).chain([half, -half - 1]).collect();
            let rs: Vec<u64> = xs.iter().map(|_| rng.random()).collect();
            let ys: Vec<u64> = xs.iter().zip(&rs).map(|(&x, &r)| (x as u64).wrapping_add(r)).collect();
            let m = xs.len();
            let (mut a0, mut a1) = (vec![], vec![]);
            Relu64Gate::keygen_into(n, &rs, &mut rng, &mut a0, &mut a1).unwrap();
            let (p0, p1) = (PackedKeys::relu64(a0, 0, m, n).unwrap(), PackedKeys::relu64(a1, 0, m, n).unwrap());
            let (mut r0, mut d0, mut r1, mut d1) = (vec![0; m], vec![0; m], vec![0; m], vec![0; m]);
            Relu64Gate::eval_packed(0, &p0, &ys, &mut r0, &mut d0).unwrap();
            Relu64Gate::eval_packed(1, &p1, &ys, &mut r1, &mut d1).unwrap();
            let (mut s0, mut s1) = (vec![], vec![]);
            SignGate::keygen_into(n, &rs, &mut rng, &mut s0, &mut s1).unwrap();
            let (q0, q1) = (PackedKeys::sign(s0, 0, m, n).unwrap(), PackedKeys::sign(s1, 0, m, n).unwrap());
            let (mut b0, mut b1) = (vec![0; m], vec![0; m]);
            SignGate::eval_packed(0, &q0, &ys, &mut b0).unwrap();
            SignGate::eval_packed(1, &q1, &ys, &mut b1).unwrap();
            for i in 0..m {
                assert_eq!(r0[i].wrapping_add(r1[i]), xs[i].max(0) as u64, "relu n={n} x={}", xs[i]);
                assert_eq!(d0[i].wrapping_add(d1[i]), u64::from(xs[i] >= 0));
                assert_eq!(b0[i].wrapping_add(b1[i]), u64::from(xs[i] < 0), "sign n={n} x={}", xs[i]);
            }
        }
        assert!(Relu64Key::from_bytes(&[]).is_err());
    }
}
