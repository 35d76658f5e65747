//! A distributed comparison function with a **1-bit output** and **early termination**: the
//! compact key behind the `fss` comparison method.
//!
//! [`keygen_into`] splits `f_α(x) = [x < α]` (x, α unsigned on an `m`-bit domain, `1 ≤ m ≤ 63`)
//! into two keys whose evaluations are **XOR shares** of the bit: `eval(k0, x) ⊕ eval(k1, x) =
//! [x < α]` for every `x`. Bits of `x` above `m` are ignored.
//!
//! # Construction
//!
//! The DCF of Boyle, Chandran, Gilboa, Gupta, Ishai, Kumar and Nowak (Eurocrypt 2021, Fig. 1)
//! over the group Z_2, with the early termination of their DPF (Boyle–Gilboa–Ishai, CCS 2016):
//!
//! * The GGM tree covers only the top `m − ν` bits of `x` (`ν = min(m, 7)`). Each level expands
//!   a 126-bit seed with **one** fixed-key AES-MMO block per child ([`super::prg`]): bits 2–127
//!   are the child seed, bit 0 its control bit `t`, bit 1 its value bit `v`. A correction word
//!   per level is the 126-bit seed CW with the two control-bit CWs in its low bits, plus one
//!   value-CW bit.
//! * The last `ν` bits are resolved by the leaf: one AES block of the final seed is a vector of
//!   `2^ν ≤ 128` output bits, and one 128-bit leaf CW makes the two parties' vectors differ by
//!   `[x_lo < α_lo]` (plus the tree's running value) exactly on α's path. Off α's path the
//!   parties' seeds and control bits are equal, so the leaf contributes nothing, and the running
//!   value already holds `[x_hi < α_hi]`.
//!
//! # Size and cost
//!
//! A key is [`key_len`]`(m) = 16 + 16·L + ⌈L/8⌉ + 16` bytes with `L = m − ν` levels: **419 bytes
//! at m = 31** (a comparison on a 32-bit window), against 1,052 for the 2-word 64-bit DCF of the
//! one-round ReLU gate at the same width. Evaluation hashes `L + 1` AES blocks per key; key
//! generation `4·L + 2` (both parties' trees, both children). Both run level by level over
//! chunks of keys so every AES call has many independent blocks ([`CHUNK`]).
//!
//! # What a key reveals
//!
//! One key is pseudorandom (BCG+21 Thm. 3.3, with the PRG a correlation-robust hash): its
//! holder learns `m` and nothing about α.

use rand_core::CryptoRng;

use super::FssError;
use super::prg::{self, Block, Prg, SEED_MASK};

/// Bits of the input resolved at the leaf: `2^LEAF_BITS = 128` outputs in one AES block.
pub const LEAF_BITS: u32 = 7;

/// Widest supported domain.
pub const MAX_BITS: u32 = 63;

/// Keys generated or evaluated together (AES blocks in flight per call: 4× this in key
/// generation, 1× in evaluation).
pub const CHUNK: usize = 64;

/// Tree levels of a key on an `m`-bit domain.
pub const fn levels(m: u32) -> usize {
    m.saturating_sub(LEAF_BITS) as usize
}

/// Serialised size of one key on an `m`-bit domain (see the module docs).
pub const fn key_len(m: u32) -> usize {
    let l = levels(m);
    16 + 16 * l + l.div_ceil(8) + 16
}

fn check_bits(m: u32) -> Result<(), FssError> {
    if (1..=MAX_BITS).contains(&m) { Ok(()) } else { Err(FssError::InvalidBitWidth { got: m, min: 1, max: MAX_BITS }) }
}

#[inline(always)]
fn leaf_mask(m: u32) -> u64 {
    (1u64 << m.min(LEAF_BITS)) - 1
}

#[inline(always)]
fn le128(b: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(b[at..at + 16].try_into().expect("16 bytes"))
}

#[inline(always)]
fn mask_of(bit: u64) -> u128 {
    (bit as u128).wrapping_neg()
}

/// Dealer: key pairs for `[x < α_i]` on the `m`-bit domain for every `α_i` in `alphas` (each
/// `< 2^m`). Key `i` of party `b` is written to `out_b[i·stride .. i·stride + key_len(m)]`;
/// the bytes in between (a caller's per-key header) are left alone.
///
/// Errors: [`FssError::InvalidBitWidth`], [`FssError::AlphaOutOfDomain`],
/// [`FssError::LengthMismatch`] if an output is too short for `alphas.len()` keys at `stride`.
pub fn keygen_into<R: CryptoRng + ?Sized>(
    m: u32,
    alphas: &[u64],
    rng: &mut R,
    out0: &mut [u8],
    out1: &mut [u8],
    stride: usize,
) -> Result<(), FssError> {
    check_bits(m)?;
    let klen = key_len(m);
    let n = alphas.len();
    let need = if n == 0 { 0 } else { (n - 1) * stride + klen };
    if stride < klen || out0.len() < need || out1.len() < need {
        return Err(FssError::LengthMismatch { keys: n, inputs: out0.len().min(out1.len()), outputs: need });
    }
    if let Some(&alpha) = alphas.iter().find(|&&a| a >> m != 0) {
        return Err(FssError::AlphaOutOfDomain { alpha, n: m });
    }
    let lv = levels(m);
    let vbytes = lv.div_ceil(8);
    let prg = Prg::fixed();
    let (tw0, tw1) = (prg::seed_tweak(0), prg::seed_tweak(1));
    let leaf_tw = prg::leaf_tweak(0);
    let mut inp = vec![Block::default(); 4 * CHUNK];
    let mut out = vec![Block::default(); 4 * CHUNK];
    // Per key of the chunk: both parties' seeds and control bits, the running value, the
    // correction words (written out contiguously once the chunk is done).
    let mut s = [[0u128; 2]; CHUNK];
    let mut t = [[0u64; 2]; CHUNK];
    let mut va = [0u64; CHUNK];
    let mut vbits = [0u64; CHUNK];
    let mut fresh = [0u8; 32 * CHUNK];
    let mut cws = vec![0u128; CHUNK * lv];
    let mut leaf = [0u128; CHUNK];
    let mut roots = [[0u128; 2]; CHUNK];
    for (c, chunk) in alphas.chunks(CHUNK).enumerate() {
        let cm = chunk.len();
        rng.fill_bytes(&mut fresh[..32 * cm]);
        for j in 0..cm {
            let seed = |at: usize| u128::from_le_bytes(fresh[at..at + 16].try_into().expect("16 bytes")) & SEED_MASK;
            roots[j] = [seed(32 * j), seed(32 * j + 16)];
            s[j] = roots[j];
            t[j] = [0, 1];
            va[j] = 0;
            vbits[j] = 0;
        }
        for i in 0..lv {
            for (blocks, sj) in inp.chunks_exact_mut(4).zip(&s[..cm]) {
                blocks[0] = prg::to_block(sj[0] ^ tw0);
                blocks[1] = prg::to_block(sj[0] ^ tw1);
                blocks[2] = prg::to_block(sj[1] ^ tw0);
                blocks[3] = prg::to_block(sj[1] ^ tw1);
            }
            prg.hash_blocks(&inp[..4 * cm], &mut out[..4 * cm]);
            let shift = m - 1 - i as u32;
            let level = &mut cws[i * CHUNK..i * CHUNK + cm];
            let lanes = out
                .chunks_exact(4)
                .zip(chunk)
                .zip(s.iter_mut().zip(t.iter_mut()))
                .zip(va.iter_mut().zip(vbits.iter_mut()));
            for ((((o, alpha), (sj, tj)), (vaj, vbj)), cw) in lanes.zip(level.iter_mut()) {
                // o[2p + side]: party p's child on `side`. α's bit picks the side kept (right
                // iff a = 1); the other is lost. Indexing, not branching, on a secret bit.
                let a = ((alpha >> shift) & 1) as usize;
                let (keep0, lose0) = (prg::from_block(&o[a]), prg::from_block(&o[1 - a]));
                let (keep1, lose1) = (prg::from_block(&o[2 + a]), prg::from_block(&o[3 - a]));
                let (d, e) = (lose0 ^ lose1, keep0 ^ keep1);
                let (dl, el, a) = (d as u64, e as u64, a as u64);
                let s_cw = d & SEED_MASK;
                // Going to `lose` = left (a = 1) means x < α on this level: the output is 1 there.
                let v_cw = ((dl >> 1) & 1) ^ *vaj ^ a;
                *vaj ^= ((el >> 1) & 1) ^ v_cw;
                // Control-bit CWs: the kept child's makes t0 ⊕ t1 = 1, the lost one's 0.
                let (t_keep, t_lose) = ((el & 1) ^ 1, dl & 1);
                *cw = s_cw | u128::from((t_keep << a) | (t_lose << (1 - a)));
                *vbj |= v_cw << i;
                let [t0, t1] = *tj;
                let m0 = u128::from(t0).wrapping_neg() & s_cw;
                let m1 = u128::from(t1).wrapping_neg() & s_cw;
                *sj = [(keep0 & SEED_MASK) ^ m0, (keep1 & SEED_MASK) ^ m1];
                *tj = [(keep0 as u64 & 1) ^ (t0 & t_keep), (keep1 as u64 & 1) ^ (t1 & t_keep)];
            }
        }
        for j in 0..cm {
            inp[2 * j] = prg::to_block(s[j][0] ^ leaf_tw);
            inp[2 * j + 1] = prg::to_block(s[j][1] ^ leaf_tw);
        }
        prg.hash_blocks(&inp[..2 * cm], &mut out[..2 * cm]);
        for j in 0..cm {
            let lo = chunk[j] & leaf_mask(m);
            let below = if lo == 0 { 0 } else { u128::MAX >> (128 - lo) }; // bits i < α_lo
            let all = u128::from(va[j]).wrapping_neg();
            leaf[j] = prg::from_block(&out[2 * j]) ^ prg::from_block(&out[2 * j + 1]) ^ all ^ below;
        }
        // Serialise the chunk's keys, each contiguous: seed | CWs | value bits | leaf CW.
        for j in 0..cm {
            let o = (c * CHUNK + j) * stride;
            for (b, out) in [(0, &mut *out0), (1, &mut *out1)] {
                let k = &mut out[o..o + klen];
                k[..16].copy_from_slice(&roots[j][b].to_le_bytes());
                let (words, _) = k[16..16 + 16 * lv].as_chunks_mut::<16>();
                for (i, dst) in words.iter_mut().enumerate() {
                    *dst = cws[i * CHUNK + j].to_le_bytes();
                }
                k[16 + 16 * lv..16 + 16 * lv + vbytes].copy_from_slice(&vbits[j].to_le_bytes()[..vbytes]);
                k[16 + 16 * lv + vbytes..].copy_from_slice(&leaf[j].to_le_bytes());
            }
        }
    }
    Ok(())
}

/// Checks that `key` is a well-formed key on an `m`-bit domain (length and canonical seed;
/// any correction words make a valid, if useless, key).
pub fn check_key(key: &[u8], m: u32) -> Result<(), FssError> {
    check_bits(m)?;
    if key.len() != key_len(m) {
        return Err(FssError::Malformed("compact DCF key of the wrong length"));
    }
    if le128(key, 0) & !SEED_MASK != 0 {
        return Err(FssError::Malformed("non-canonical compact DCF seed"));
    }
    Ok(())
}

/// Online: party `party ∈ {0, 1}` evaluates keys `0..count` (key `i` is `key_of(i)`, validated
/// by [`check_key`] for width `m`) at `x_of(i)` and passes its XOR share of `[x_i < α_i]` to
/// `sink(i, bit)`. Level by level over chunks of [`CHUNK`] keys (one AES block per key per level).
pub fn eval_batch<'k>(
    party: u8,
    m: u32,
    count: usize,
    key_of: impl Fn(usize) -> &'k [u8],
    x_of: impl Fn(usize) -> u64,
    mut sink: impl FnMut(usize, u8),
) -> Result<(), FssError> {
    let t0 = u128::from(super::check_party(party)?);
    check_bits(m)?;
    let lv = levels(m);
    let vbits = 16 + 16 * lv;
    let leaf_at = vbits + lv.div_ceil(8);
    let klen = key_len(m);
    let prg = Prg::fixed();
    let (tw0, tw1) = (prg::seed_tweak(0), prg::seed_tweak(1));
    let leaf_tw = prg::leaf_tweak(0);
    let mut inp = [Block::default(); CHUNK];
    let mut out = [Block::default(); CHUNK];
    let mut s = [0u128; CHUNK];
    let mut t = [0u128; CHUNK];
    let mut v = [0u128; CHUNK];
    let mut x = [0u64; CHUNK];
    let mut vcw = [0u64; CHUNK];
    let mut keys: [&[u8]; CHUNK] = [&[]; CHUNK];
    let mut base = 0;
    while base < count {
        let cm = CHUNK.min(count - base);
        for j in 0..cm {
            let k = key_of(base + j);
            keys[j] = &k[..klen];
            s[j] = le128(k, 0);
            t[j] = t0;
            v[j] = 0;
            x[j] = x_of(base + j);
            let mut vb = [0u8; 8];
            vb[..leaf_at - vbits].copy_from_slice(&k[vbits..leaf_at]);
            vcw[j] = u64::from_le_bytes(vb);
        }
        for i in 0..lv {
            let shift = m - 1 - i as u32;
            for j in 0..cm {
                let bm = mask_of((x[j] >> shift) & 1);
                inp[j] = prg::to_block(s[j] ^ tw0 ^ ((tw0 ^ tw1) & bm));
            }
            prg.hash_blocks(&inp[..cm], &mut out[..cm]);
            for j in 0..cm {
                let o = prg::from_block(&out[j]);
                let cw = le128(keys[j], 16 + 16 * i);
                let bit = (x[j] >> shift) & 1;
                let tm = t[j].wrapping_neg();
                v[j] ^= ((o >> 1) & 1) ^ (t[j] & u128::from((vcw[j] >> i) & 1));
                let nt = (o & 1) ^ (t[j] & ((cw >> bit) & 1));
                s[j] = (o & SEED_MASK) ^ (cw & SEED_MASK & tm);
                t[j] = nt;
            }
        }
        for j in 0..cm {
            inp[j] = prg::to_block(s[j] ^ leaf_tw);
        }
        prg.hash_blocks(&inp[..cm], &mut out[..cm]);
        for j in 0..cm {
            let idx = (x[j] & leaf_mask(m)) as u32;
            let conv = (prg::from_block(&out[j]) >> idx) & 1;
            let cw = (le128(keys[j], leaf_at) >> idx) & 1;
            sink(base + j, (v[j] ^ conv ^ (t[j] & cw)) as u8);
        }
        base += cm;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn keys(m: u32, alphas: &[u64], seed: u64) -> (Vec<u8>, Vec<u8>) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let klen = key_len(m);
        let (mut a, mut b) = (vec![0u8; alphas.len() * klen], vec![0u8; alphas.len() * klen]);
        keygen_into(m, alphas, &mut rng, &mut a, &mut b, klen).unwrap();
        (a, b)
    }

    fn eval_all(m: u32, buf: &[u8], party: u8, xs: &[u64]) -> Vec<u8> {
        let klen = key_len(m);
        let mut out = vec![0u8; xs.len()];
        eval_batch(party, m, xs.len(), |i| &buf[i * klen..(i + 1) * klen], |i| xs[i], |i, b| out[i] = b).unwrap();
        out
    }

    #[test]
    fn exhaustive_on_small_domains() {
        // Every α and every x for widths below, at and just above the leaf width.
        for m in [1u32, 2, 3, 6, 7, 8, 9, 10] {
            let dom = 1u64 << m;
            let alphas: Vec<u64> = (0..dom).flat_map(|a| std::iter::repeat_n(a, dom as usize)).collect();
            let xs: Vec<u64> = (0..dom).cycle().take(alphas.len()).collect();
            let (k0, k1) = keys(m, &alphas, u64::from(m));
            for k in [&k0, &k1] {
                for i in 0..alphas.len() {
                    check_key(&k[i * key_len(m)..(i + 1) * key_len(m)], m).unwrap();
                }
            }
            let (e0, e1) = (eval_all(m, &k0, 0, &xs), eval_all(m, &k1, 1, &xs));
            for i in 0..xs.len() {
                assert_eq!(e0[i] ^ e1[i], u8::from(xs[i] < alphas[i]), "m={m} x={} α={}", xs[i], alphas[i]);
            }
        }
    }

    #[test]
    fn random_and_boundary_points_at_every_width() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        for m in [11u32, 16, 20, 31, 32, 47, 48, 63] {
            let top = (1u64 << m) - 1;
            let mut alphas = vec![];
            let mut xs = vec![];
            for _ in 0..300 {
                let a = rng.random::<u64>() & top;
                // x = α − 1, α, α + 1, a random point, and the domain ends.
                for x in [a.wrapping_sub(1) & top, a, (a + 1) & top, rng.random::<u64>() & top, 0, top] {
                    alphas.push(a);
                    xs.push(x);
                }
            }
            alphas.extend([0, 0, top, top]);
            xs.extend([0, top, 0, top]);
            // Bits above m are ignored.
            let xs_dirty: Vec<u64> = xs.iter().map(|&x| x | (rng.random::<u64>() << m.min(63) << 1)).collect();
            let (k0, k1) = keys(m, &alphas, u64::from(m) + 100);
            let (e0, e1) = (eval_all(m, &k0, 0, &xs_dirty), eval_all(m, &k1, 1, &xs_dirty));
            for i in 0..xs.len() {
                assert_eq!(e0[i] ^ e1[i], u8::from(xs[i] < alphas[i]), "m={m} x={} α={}", xs[i], alphas[i]);
            }
        }
    }

    #[test]
    fn key_size_at_a_32_bit_window() {
        assert_eq!(key_len(31), 419);
        assert_eq!(key_len(7), 32);
        assert_eq!(key_len(1), 32);
        assert_eq!(key_len(63), 16 + 16 * 56 + 7 + 16);
    }

    #[test]
    fn shares_are_balanced_and_keys_differ_only_in_the_seed() {
        // One party's output bits look uniform (about half ones), whatever the function value.
        let m = 20;
        let alphas = vec![1u64 << 19; 4000];
        let xs: Vec<u64> = (0..4000u64).map(|i| i * 97 % (1 << 20)).collect();
        let (k0, k1) = keys(m, &alphas, 3);
        let e0 = eval_all(m, &k0, 0, &xs);
        let ones = e0.iter().filter(|&&b| b == 1).count();
        assert!((1700..2300).contains(&ones), "{ones} ones of 4000");
        let klen = key_len(m);
        for i in 0..alphas.len() {
            assert_eq!(k0[i * klen + 16..(i + 1) * klen], k1[i * klen + 16..(i + 1) * klen]);
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let mut a = vec![0u8; 1000];
        let mut b = vec![0u8; 1000];
        assert!(keygen_into(0, &[0], &mut rng, &mut a, &mut b, 32).is_err());
        assert!(keygen_into(64, &[0], &mut rng, &mut a, &mut b, 2000).is_err());
        assert!(keygen_into(8, &[256], &mut rng, &mut a, &mut b, key_len(8)).is_err());
        assert!(keygen_into(8, &[1, 2], &mut rng, &mut a[..10], &mut b, key_len(8)).is_err());
        assert!(check_key(&[0u8; 31], 7).is_err());
        let mut k = vec![0u8; 32];
        k[0] = 1;
        assert!(check_key(&k, 7).is_err());
        assert!(eval_batch(2, 7, 0, |_| &k[..], |_| 0, |_, _| {}).is_err());
    }
}
