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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignKey {
    n: u8,
    rh: u64,
    dcf: DcfKey<1>,
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
    fn finish(p1: bool, key: &SignKey, y: u64, a: u64) -> u64 {
        let (yh, _, _) = split_y(key.n as u32, y);
        let w = key.rh.wrapping_add(a);
        if yh == 0 { w } else { (!p1 as u64).wrapping_sub(w) }
    }

    /// Online: party `party` evaluates at the opened `y = x + r_in (mod 2^n)`;
    /// returns its share of `[x < 0]`.
    pub fn eval(party: u8, key: &SignKey, y: u64) -> Result<u64, FssError> {
        let p1 = check_party(party)?;
        let (_, yl, _) = split_y(key.n as u32, y);
        let [a] = dcf::eval_unchecked(p1, &key.dcf, yl);
        Ok(Self::finish(p1, key, y, a))
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
            |i, [a]| out[i] = Self::finish(p1, &keys[i], ys[i], a),
        );
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
        v.push(SIGN_TAG);
        v.push(self.n);
        v.extend_from_slice(&self.rh.to_le_bytes());
        self.dcf.write_to(&mut v);
        v
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReluKey {
    n: u8,
    /// Shares of `r_h`, `r_n`, `r_h·r_n`.
    k: [u64; 3],
    dcf: DcfKey<3>,
}

/// One party's output of the ReLU gate: additive Z_2^64 shares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReluShare {
    /// Share of `ReLU(x) = x·[x ≥ 0]`.
    pub relu: u64,
    /// Share of the bit `[x ≥ 0]` (ReLU derivative / select bit).
    pub drelu: u64,
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
    fn finish(p1: bool, key: &ReluKey, y: u64, [a, b, d]: [u64; 3]) -> ReluShare {
        let (yh, _, yn) = split_y(key.n as u32, y);
        let [kh, kn, khn] = key.k;
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
        Ok(Self::finish(p1, key, y, s))
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
                let o = Self::finish(p1, &keys[i], ys[i], s);
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
