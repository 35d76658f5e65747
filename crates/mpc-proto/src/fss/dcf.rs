//! Distributed comparison function (DCF) keys, following Boyle, Chandran,
//! Gilboa, Gupta, Ishai, Kumar, Nowak, "Function Secret Sharing for
//! Mixed-Mode and Fixed-Point Secure Computation" (Eurocrypt 2021), Fig. 1.
//!
//! [`keygen`] splits `f_{α,β}(x) = β if x < α else 0` (x, α unsigned on an
//! `n`-bit domain, `1 ≤ n ≤ 64`; β ∈ (Z_2^64)^L) into two keys `k0, k1` such
//! that `eval(0, k0, x) + eval(1, k1, x) = f_{α,β}(x)` (component-wise mod
//! 2^64) for every `x`. Bits of `x` above `n` are ignored.
//!
//! # Construction
//!
//! A GGM tree of depth `n` with one correction word (CW) per level: a
//! 126-bit seed CW whose two low bits carry the left/right control-bit CWs,
//! plus an `L`-word value CW; and an `L`-word leaf CW. Evaluation walks the
//! path of `x` (MSB first), hashing `1 + ⌈L/2⌉` AES blocks per level with the
//! fixed-key PRG of [`super::prg`]. No early termination: unlike a DPF, a DCF
//! leaf packing `2^ν` suffixes needs `2^ν · L` words of leaf CW, so for
//! `L ≥ 2` it saves less than 3% of the key and of the AES work; not worth
//! the complexity.
//!
//! The payload length `L` is a const generic: the hot loop keeps per-key
//! accumulators in `[u64; L]` arrays with no allocation, and the gates use
//! fixed `L` (1 for sign, 3 for ReLU). `1 ≤ L ≤ 8` is checked at compile
//! time.
//!
//! # What a key reveals / key size
//!
//! A single key is pseudorandom given the PRG (BCG+21, Thm. 3.3): its holder
//! learns `n` and `L` and nothing about α or β. Key size is
//! [`DcfKey::byte_len`] `= 18 + n·(16 + 8L) + 8L` bytes per party.
//!
//! # Batch evaluation
//!
//! [`eval_batch`] evaluates many keys (one point each) level by level in
//! chunks of [`CHUNK`] keys, so each `encrypt_blocks` call has
//! `CHUNK·(1+⌈L/2⌉)` independent AES blocks in flight, and it reads the
//! correction words a few levels ahead so that their cache misses overlap
//! with AES (keys are separate heap allocations; the evaluation is partly
//! memory-bound: a 100k-key ReLU batch at n = 32 reads 131 MB of keys). This
//! is the hot path; the scalar [`eval`] is about 2× slower per key.

use rand_core::CryptoRng;

use super::prg::{self, Block, Prg, SEED_MASK};
use super::{FssError, check_party};

/// Number of keys evaluated together by [`eval_batch`].
pub const CHUNK: usize = 16;

/// How many levels ahead batch evaluation touches correction words.
const AHEAD: usize = 6;

/// Largest supported payload length.
pub const MAX_L: usize = 8;
const MAX_VB: usize = MAX_L.div_ceil(2);

/// Per-level correction word. `s[0]` holds bits 0–63 of the seed CW (with the
/// left/right control-bit CWs in bits 0 and 1), `s[1]` bits 64–127.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cw<const L: usize> {
    s: [u64; 2],
    v: [u64; L],
}

impl<const L: usize> std::fmt::Debug for Cw<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cw(..)")
    }
}

impl<const L: usize> Cw<L> {
    #[inline(always)]
    fn s128(&self) -> u128 {
        (self.s[0] as u128) | ((self.s[1] as u128) << 64)
    }
}

/// One party's DCF key for `f_{α,β}(x) = β·[x < α]` on an `n`-bit domain with
/// payload β ∈ (Z_2^64)^L.
///
/// Reveals only `n` and `L` to its holder. Size: [`DcfKey::byte_len`] bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct DcfKey<const L: usize> {
    n: u8,
    seed: u128,
    cws: Vec<Cw<L>>,
    last: [u64; L],
}

impl<const L: usize> std::fmt::Debug for DcfKey<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DcfKey<{L}>(n={}, ..)", self.n)
    }
}

#[inline(always)]
fn mask128(m: u64) -> u128 {
    ((m as u128) << 64) | (m as u128)
}

#[inline(always)]
fn rand_seed<R: CryptoRng + ?Sized>(rng: &mut R) -> u128 {
    (((rng.next_u64() as u128) << 64) | (rng.next_u64() as u128)) & SEED_MASK
}

/// Writes the `L` words packed in `blocks` (two per block, little endian).
#[inline(always)]
fn words<const L: usize>(blocks: &[Block]) -> [u64; L] {
    let mut v = [0u64; L];
    for (k, w) in v.iter_mut().enumerate() {
        let b = &blocks[k / 2].0;
        let off = (k % 2) * 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[off..off + 8]);
        *w = u64::from_le_bytes(a);
    }
    v
}

/// Expands a seed into both children: raw seed blocks (bit 0 = control bit)
/// and value words for left and right.
fn expand_both<const L: usize>(prg: &Prg, s: u128) -> ([u128; 2], [[u64; L]; 2]) {
    let vb = L.div_ceil(2);
    let mut inp = [Block::default(); 2 + 2 * MAX_VB];
    let mut out = [Block::default(); 2 + 2 * MAX_VB];
    let m = 2 + 2 * vb;
    for side in 0..2u64 {
        inp[side as usize] = prg::to_block(s ^ prg::seed_tweak(side));
        for k in 0..vb {
            inp[2 + side as usize * vb + k] = prg::to_block(s ^ prg::value_tweak(side, k));
        }
    }
    prg.hash_blocks(&inp[..m], &mut out[..m]);
    ([prg::from_block(&out[0]), prg::from_block(&out[1])], [words::<L>(&out[2..2 + vb]), words::<L>(&out[2 + vb..m])])
}

/// Leaf conversion `Convert(s) ∈ (Z_2^64)^L`.
fn convert<const L: usize>(prg: &Prg, s: u128) -> [u64; L] {
    let vb = L.div_ceil(2);
    let mut inp = [Block::default(); MAX_VB];
    let mut out = [Block::default(); MAX_VB];
    for (k, b) in inp.iter_mut().enumerate().take(vb) {
        *b = prg::to_block(s ^ prg::leaf_tweak(k));
    }
    prg.hash_blocks(&inp[..vb], &mut out[..vb]);
    words::<L>(&out[..vb])
}

/// Dealer: generates the two DCF keys for `f_{α,β}(x) = β·[x < α]` on the
/// `n`-bit domain (`1 ≤ n ≤ 64`, `α < 2^n`; `α = 0` gives the zero function).
///
/// Errors: [`FssError::InvalidBitWidth`], [`FssError::AlphaOutOfDomain`].
pub fn keygen<const L: usize, R: CryptoRng + ?Sized>(
    n: u32,
    alpha: u64,
    beta: [u64; L],
    rng: &mut R,
) -> Result<(DcfKey<L>, DcfKey<L>), FssError> {
    const { assert!(L >= 1 && L <= MAX_L, "payload length must be in 1..=8") };
    if !(1..=64).contains(&n) {
        return Err(FssError::InvalidBitWidth { got: n, min: 1, max: 64 });
    }
    if n < 64 && alpha >> n != 0 {
        return Err(FssError::AlphaOutOfDomain { alpha, n });
    }
    let prg = Prg::fixed();
    let seed0 = rand_seed(rng);
    let seed1 = rand_seed(rng);
    let (mut s0, mut s1) = (seed0, seed1);
    let (mut t0, mut t1) = (0u64, 1u64);
    let mut va = [0u64; L];
    let mut cws = Vec::with_capacity(n as usize);
    for i in 0..n {
        let a = (alpha >> (n - 1 - i)) & 1;
        let (keep, lose) = (a as usize, (1 - a) as usize);
        let (raw0, v0) = expand_both::<L>(prg, s0);
        let (raw1, v1) = expand_both::<L>(prg, s1);
        let s_cw = (raw0[lose] ^ raw1[lose]) & SEED_MASK;
        let neg = t1 == 1;
        let sgn = |z: u64| if neg { z.wrapping_neg() } else { z };
        let mut v_cw = [0u64; L];
        for k in 0..L {
            let mut z = v1[lose][k].wrapping_sub(v0[lose][k]).wrapping_sub(va[k]);
            if lose == 0 {
                z = z.wrapping_add(beta[k]);
            }
            v_cw[k] = sgn(z);
            va[k] = va[k].wrapping_sub(v1[keep][k]).wrapping_add(v0[keep][k]).wrapping_add(sgn(v_cw[k]));
        }
        let t_cw_l = ((raw0[0] ^ raw1[0]) as u64 & 1) ^ a ^ 1;
        let t_cw_r = ((raw0[1] ^ raw1[1]) as u64 & 1) ^ a;
        let t_cw_keep = if keep == 0 { t_cw_l } else { t_cw_r };
        let s_word = s_cw | t_cw_l as u128 | ((t_cw_r as u128) << 1);
        cws.push(Cw { s: [s_word as u64, (s_word >> 64) as u64], v: v_cw });
        let m0 = mask128(t0.wrapping_neg()) & s_cw;
        let m1 = mask128(t1.wrapping_neg()) & s_cw;
        let nt0 = (raw0[keep] as u64 & 1) ^ (t0 & t_cw_keep);
        let nt1 = (raw1[keep] as u64 & 1) ^ (t1 & t_cw_keep);
        s0 = (raw0[keep] & SEED_MASK) ^ m0;
        s1 = (raw1[keep] & SEED_MASK) ^ m1;
        t0 = nt0;
        t1 = nt1;
    }
    let c0 = convert::<L>(prg, s0);
    let c1 = convert::<L>(prg, s1);
    let mut last = [0u64; L];
    for k in 0..L {
        let z = c1[k].wrapping_sub(c0[k]).wrapping_sub(va[k]);
        last[k] = if t1 == 1 { z.wrapping_neg() } else { z };
    }
    let k0 = DcfKey { n: n as u8, seed: seed0, cws: cws.clone(), last };
    let k1 = DcfKey { n: n as u8, seed: seed1, cws, last };
    Ok((k0, k1))
}

/// Dealer: [`keygen`] for many `(alpha, beta)` pairs at once (all on the same `n`-bit domain),
/// level by level across chunks of keys so the PRG runs on many blocks per AES call (the
/// per-key [`keygen`] issues four-block calls and is several times slower).
#[allow(clippy::needless_range_loop)] // several parallel per-key state arrays indexed together
pub fn keygen_batch<const L: usize, R: CryptoRng + ?Sized>(
    n: u32,
    alphas: &[u64],
    betas: &[[u64; L]],
    rng: &mut R,
) -> Result<Vec<(DcfKey<L>, DcfKey<L>)>, FssError> {
    const { assert!(L >= 1 && L <= MAX_L, "payload length must be in 1..=8") };
    if !(1..=64).contains(&n) {
        return Err(FssError::InvalidBitWidth { got: n, min: 1, max: 64 });
    }
    if alphas.len() != betas.len() {
        return Err(FssError::LengthMismatch { keys: alphas.len(), inputs: betas.len(), outputs: alphas.len() });
    }
    if let Some(&alpha) = alphas.iter().find(|&&a| n < 64 && a >> n != 0) {
        return Err(FssError::AlphaOutOfDomain { alpha, n });
    }
    let prg = Prg::fixed();
    let vb = L.div_ceil(2);
    let bps = 2 + 2 * vb; // blocks per seed expansion (both sides)
    let mut out = Vec::with_capacity(alphas.len());
    let mut inp = vec![Block::default(); CHUNK * 2 * bps];
    let mut hashed = vec![Block::default(); CHUNK * 2 * bps];
    for (alpha_c, beta_c) in alphas.chunks(CHUNK).zip(betas.chunks(CHUNK)) {
        let m = alpha_c.len();
        let seeds: Vec<(u128, u128)> = (0..m).map(|_| (rand_seed(rng), rand_seed(rng))).collect();
        let mut s: Vec<[u128; 2]> = seeds.iter().map(|&(a, b)| [a, b]).collect();
        let mut t: Vec<[u64; 2]> = vec![[0, 1]; m];
        let mut va = vec![[0u64; L]; m];
        let mut cws: Vec<Vec<Cw<L>>> = (0..m).map(|_| Vec::with_capacity(n as usize)).collect();
        for i in 0..n {
            for j in 0..m {
                for p in 0..2 {
                    let o = (j * 2 + p) * bps;
                    for side in 0..2u64 {
                        inp[o + side as usize] = prg::to_block(s[j][p] ^ prg::seed_tweak(side));
                        for k in 0..vb {
                            inp[o + 2 + side as usize * vb + k] = prg::to_block(s[j][p] ^ prg::value_tweak(side, k));
                        }
                    }
                }
            }
            prg.hash_blocks(&inp[..m * 2 * bps], &mut hashed[..m * 2 * bps]);
            for j in 0..m {
                let expand = |p: usize| {
                    let o = (j * 2 + p) * bps;
                    let raw = [prg::from_block(&hashed[o]), prg::from_block(&hashed[o + 1])];
                    let v = [words::<L>(&hashed[o + 2..o + 2 + vb]), words::<L>(&hashed[o + 2 + vb..o + bps])];
                    (raw, v)
                };
                let ((raw0, v0), (raw1, v1)) = (expand(0), expand(1));
                let a = (alpha_c[j] >> (n - 1 - i)) & 1;
                let (keep, lose) = (a as usize, (1 - a) as usize);
                let s_cw = (raw0[lose] ^ raw1[lose]) & SEED_MASK;
                let neg = t[j][1] == 1;
                let sgn = |z: u64| if neg { z.wrapping_neg() } else { z };
                let mut v_cw = [0u64; L];
                for k in 0..L {
                    let mut z = v1[lose][k].wrapping_sub(v0[lose][k]).wrapping_sub(va[j][k]);
                    if lose == 0 {
                        z = z.wrapping_add(beta_c[j][k]);
                    }
                    v_cw[k] = sgn(z);
                    va[j][k] = va[j][k].wrapping_sub(v1[keep][k]).wrapping_add(v0[keep][k]).wrapping_add(sgn(v_cw[k]));
                }
                let t_cw_l = ((raw0[0] ^ raw1[0]) as u64 & 1) ^ a ^ 1;
                let t_cw_r = ((raw0[1] ^ raw1[1]) as u64 & 1) ^ a;
                let t_cw_keep = if keep == 0 { t_cw_l } else { t_cw_r };
                let s_word = s_cw | t_cw_l as u128 | ((t_cw_r as u128) << 1);
                cws[j].push(Cw { s: [s_word as u64, (s_word >> 64) as u64], v: v_cw });
                let [t0, t1] = t[j];
                let m0 = mask128(t0.wrapping_neg()) & s_cw;
                let m1 = mask128(t1.wrapping_neg()) & s_cw;
                t[j] = [(raw0[keep] as u64 & 1) ^ (t0 & t_cw_keep), (raw1[keep] as u64 & 1) ^ (t1 & t_cw_keep)];
                s[j] = [(raw0[keep] & SEED_MASK) ^ m0, (raw1[keep] & SEED_MASK) ^ m1];
            }
        }
        // Leaf conversion for both parties' final seeds of every key in one call.
        for j in 0..m {
            for p in 0..2 {
                for k in 0..vb {
                    inp[(j * 2 + p) * vb + k] = prg::to_block(s[j][p] ^ prg::leaf_tweak(k));
                }
            }
        }
        prg.hash_blocks(&inp[..m * 2 * vb], &mut hashed[..m * 2 * vb]);
        for (j, cw) in cws.into_iter().enumerate() {
            let c0 = words::<L>(&hashed[(j * 2) * vb..(j * 2 + 1) * vb]);
            let c1 = words::<L>(&hashed[(j * 2 + 1) * vb..(j * 2 + 2) * vb]);
            let mut last = [0u64; L];
            for k in 0..L {
                let z = c1[k].wrapping_sub(c0[k]).wrapping_sub(va[j][k]);
                last[k] = if t[j][1] == 1 { z.wrapping_neg() } else { z };
            }
            let k0 = DcfKey { n: n as u8, seed: seeds[j].0, cws: cw.clone(), last };
            let k1 = DcfKey { n: n as u8, seed: seeds[j].1, cws: cw, last };
            out.push((k0, k1));
        }
    }
    Ok(out)
}

/// Online: party `party ∈ {0, 1}` evaluates its key at `x` (only the low `n`
/// bits of `x` are used) and returns its additive share of `f_{α,β}(x)`.
pub fn eval<const L: usize>(party: u8, key: &DcfKey<L>, x: u64) -> Result<[u64; L], FssError> {
    let p1 = check_party(party)?;
    Ok(eval_unchecked(p1, key, x))
}

pub(crate) fn eval_unchecked<const L: usize>(p1: bool, key: &DcfKey<L>, x: u64) -> [u64; L] {
    eval_view(p1, &key, x)
}

/// [`eval_unchecked`] for any key view.
pub(crate) fn eval_view<const L: usize, V: DcfView<L>>(p1: bool, key: &V, x: u64) -> [u64; L] {
    let prg = Prg::fixed();
    let vb = L.div_ceil(2);
    let n = key.n() as u32;
    let mut s = key.seed();
    let mut t = p1 as u64;
    let mut acc = [0u64; L];
    let mut inp = [Block::default(); 1 + MAX_VB];
    let mut out = [Block::default(); 1 + MAX_VB];
    for i in 0..n as usize {
        let cw = key.cw(i);
        let bit = (x >> (n - 1 - i as u32)) & 1;
        inp[0] = prg::to_block(s ^ prg::seed_tweak(bit));
        for k in 0..vb {
            inp[1 + k] = prg::to_block(s ^ prg::value_tweak(bit, k));
        }
        prg.hash_blocks(&inp[..1 + vb], &mut out[..1 + vb]);
        let tm = t.wrapping_neg();
        let v = words::<L>(&out[1..1 + vb]);
        for k in 0..L {
            acc[k] = acc[k].wrapping_add(v[k]).wrapping_add(cw.v[k] & tm);
        }
        let raw = prg::from_block(&out[0]);
        let scw = cw.s128();
        s = (raw ^ (scw & mask128(tm))) & SEED_MASK;
        t = (raw as u64 & 1) ^ (t & (cw.s[0] >> bit) & 1);
    }
    let c = convert::<L>(prg, s);
    let tm = t.wrapping_neg();
    let last = key.last();
    for k in 0..L {
        acc[k] = acc[k].wrapping_add(c[k]).wrapping_add(last[k] & tm);
        if p1 {
            acc[k] = acc[k].wrapping_neg();
        }
    }
    acc
}

/// Online hot path: party `party` evaluates `keys[i]` at `xs[i]` into
/// `out[i]` for all `i`. All three slices must have the same length.
pub fn eval_batch<const L: usize>(
    party: u8,
    keys: &[DcfKey<L>],
    xs: &[u64],
    out: &mut [[u64; L]],
) -> Result<(), FssError> {
    let p1 = check_party(party)?;
    if keys.len() != xs.len() || keys.len() != out.len() {
        return Err(FssError::LengthMismatch { keys: keys.len(), inputs: xs.len(), outputs: out.len() });
    }
    eval_batch_by(p1, keys, |k| k, |i| xs[i], |i, v| out[i] = v);
    Ok(())
}

/// Read access to one DCF key: an owned [`DcfKey`] or a [`DcfRef`] into a packed buffer of
/// serialised keys (zero-copy: no parsing on the online path).
pub(crate) trait DcfView<const L: usize> {
    /// Domain bit width.
    fn n(&self) -> u8;
    /// Root seed.
    fn seed(&self) -> u128;
    /// Correction word of level `i`.
    fn cw(&self, i: usize) -> Cw<L>;
    /// Leaf correction.
    fn last(&self) -> [u64; L];
}

impl<const L: usize> DcfView<L> for &DcfKey<L> {
    #[inline(always)]
    fn n(&self) -> u8 {
        self.n
    }
    #[inline(always)]
    fn seed(&self) -> u128 {
        self.seed
    }
    #[inline(always)]
    fn cw(&self, i: usize) -> Cw<L> {
        self.cws[i]
    }
    #[inline(always)]
    fn last(&self) -> [u64; L] {
        self.last
    }
}

/// A serialised DCF key (layout of [`DcfKey::to_bytes`]) whose header was validated by
/// [`DcfRef::check`]; accessors read the little-endian words in place.
#[derive(Clone, Copy)]
pub(crate) struct DcfRef<'a, const L: usize>(&'a [u8]);

#[inline(always)]
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl<'a, const L: usize> DcfRef<'a, L> {
    /// Validates a key of bit width `n` at the front of `b` (exactly `byte_len_for(n)` bytes):
    /// width, payload length and a canonical seed. The correction words need no checking: any
    /// value is a valid (if useless) key.
    pub(crate) fn check(b: &'a [u8], n: u32) -> Result<Self, FssError> {
        const { assert!(L >= 1 && L <= MAX_L, "payload length must be in 1..=8") };
        if b.len() != DcfKey::<L>::byte_len_for(n) {
            return Err(FssError::Malformed("DCF key of the wrong length"));
        }
        if u32::from(b[0]) != n || usize::from(b[1]) != L {
            return Err(FssError::Malformed("DCF key width or payload length mismatch"));
        }
        let seed = u128::from_le_bytes(b[2..18].try_into().expect("16 bytes"));
        if seed & !SEED_MASK != 0 {
            return Err(FssError::Malformed("non-canonical DCF seed"));
        }
        Ok(Self(b))
    }

    /// Wraps bytes already validated by [`DcfRef::check`] (the hot path re-wraps a key many
    /// times; a wrong buffer here can only give wrong shares or a bounds panic, never UB).
    #[inline(always)]
    pub(crate) fn trusted(b: &'a [u8]) -> Self {
        Self(b)
    }
}

impl<const L: usize> DcfView<L> for DcfRef<'_, L> {
    #[inline(always)]
    fn n(&self) -> u8 {
        self.0[0]
    }
    #[inline(always)]
    fn seed(&self) -> u128 {
        u128::from_le_bytes(self.0[2..18].try_into().expect("16 bytes"))
    }
    #[inline(always)]
    fn cw(&self, i: usize) -> Cw<L> {
        let o = 18 + i * (16 + 8 * L);
        Cw { s: [le64(self.0, o), le64(self.0, o + 8)], v: std::array::from_fn(|q| le64(self.0, o + 16 + 8 * q)) }
    }
    #[inline(always)]
    fn last(&self) -> [u64; L] {
        let o = 18 + self.n() as usize * (16 + 8 * L);
        std::array::from_fn(|q| le64(self.0, o + 8 * q))
    }
}

/// Batch evaluation over any container of keys: `key_of` extracts the DCF key,
/// `x_of(i)` gives the input of key `i`, `sink(i, share)` receives its share.
pub(crate) fn eval_batch_by<const L: usize, K>(
    p1: bool,
    keys: &[K],
    key_of: impl Fn(&K) -> &DcfKey<L>,
    x_of: impl Fn(usize) -> u64,
    sink: impl FnMut(usize, [u64; L]),
) {
    eval_batch_idx(p1, keys.len(), |i| key_of(&keys[i]), x_of, sink)
}

/// Batch evaluation of keys `0..count` given by index.
pub(crate) fn eval_batch_idx<const L: usize, V: DcfView<L>>(
    p1: bool,
    count: usize,
    key_of: impl Fn(usize) -> V,
    x_of: impl Fn(usize) -> u64,
    mut sink: impl FnMut(usize, [u64; L]),
) {
    let prg = Prg::fixed();
    let vb = L.div_ceil(2);
    let bpk = 1 + vb; // blocks per key per level
    let st = [prg::seed_tweak(0), prg::seed_tweak(1)];
    let vt: [[u128; MAX_VB]; 2] = std::array::from_fn(|side| std::array::from_fn(|k| prg::value_tweak(side as u64, k)));
    let mut inp = vec![Block::default(); CHUNK * bpk];
    let mut out = vec![Block::default(); CHUNK * bpk];
    let mut s = [0u128; CHUNK];
    let mut t = [0u64; CHUNK];
    let mut x = [0u64; CHUNK];
    let mut acc = [[0u64; L]; CHUNK];
    let mut touch = 0u64;

    let mut base = 0;
    while base < count {
        let m = CHUNK.min(count - base);
        let n = key_of(base).n();
        if (base..base + m).any(|i| key_of(i).n() != n) {
            for i in base..base + m {
                sink(i, eval_view(p1, &key_of(i), x_of(i)));
            }
            base += m;
            continue;
        }
        let n = n as u32;
        for j in 0..m {
            s[j] = key_of(base + j).seed();
            t[j] = p1 as u64;
            x[j] = x_of(base + j);
            acc[j] = [0u64; L];
        }
        for i in 0..n {
            let shift = n - 1 - i;
            // Touch the correction words a few levels ahead so their cache
            // misses overlap with this level's AES work (software prefetch
            // without `unsafe`).
            let ahead = i as usize + AHEAD;
            if ahead < n as usize {
                for j in 0..m {
                    touch ^= key_of(base + j).cw(ahead).s[0];
                }
            }
            for j in 0..m {
                let bit = ((x[j] >> shift) & 1) as usize;
                let o = j * bpk;
                inp[o] = prg::to_block(s[j] ^ st[bit]);
                for k in 0..vb {
                    inp[o + 1 + k] = prg::to_block(s[j] ^ vt[bit][k]);
                }
            }
            prg.hash_blocks(&inp[..m * bpk], &mut out[..m * bpk]);
            for j in 0..m {
                let cw = key_of(base + j).cw(i as usize);
                let bit = (x[j] >> shift) & 1;
                let o = j * bpk;
                let tm = t[j].wrapping_neg();
                let v = words::<L>(&out[o + 1..o + bpk]);
                for q in 0..L {
                    acc[j][q] = acc[j][q].wrapping_add(v[q]).wrapping_add(cw.v[q] & tm);
                }
                let raw = prg::from_block(&out[o]);
                s[j] = (raw ^ (cw.s128() & mask128(tm))) & SEED_MASK;
                t[j] = (raw as u64 & 1) ^ (t[j] & (cw.s[0] >> bit) & 1);
            }
        }
        // Leaf conversion.
        for j in 0..m {
            for k in 0..vb {
                inp[j * vb + k] = prg::to_block(s[j] ^ prg::leaf_tweak(k));
            }
        }
        prg.hash_blocks(&inp[..m * vb], &mut out[..m * vb]);
        for j in 0..m {
            let last = key_of(base + j).last();
            let cv = words::<L>(&out[j * vb..(j + 1) * vb]);
            let tm = t[j].wrapping_neg();
            let mut r = acc[j];
            for q in 0..L {
                r[q] = r[q].wrapping_add(cv[q]).wrapping_add(last[q] & tm);
                if p1 {
                    r[q] = r[q].wrapping_neg();
                }
            }
            sink(base + j, r);
        }
        base += m;
    }
    std::hint::black_box(touch);
}

impl<const L: usize> DcfKey<L> {
    /// Domain bit width `n`.
    pub fn n(&self) -> u32 {
        self.n as u32
    }

    /// Serialised size in bytes: `18 + n·(16 + 8L) + 8L`.
    pub fn byte_len(&self) -> usize {
        Self::byte_len_for(self.n as u32)
    }

    /// Serialised size of a key on an `n`-bit domain.
    pub const fn byte_len_for(n: u32) -> usize {
        18 + n as usize * (16 + 8 * L) + 8 * L
    }

    /// Serialises the key: `n: u8 | L: u8 | seed: 16 | n × (seed CW 16 | value
    /// CW 8L) | leaf CW 8L`, integers little endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.byte_len());
        self.write_to(&mut v);
        v
    }

    pub(crate) fn write_to(&self, v: &mut Vec<u8>) {
        v.push(self.n);
        v.push(L as u8);
        v.extend_from_slice(&self.seed.to_le_bytes());
        for cw in &self.cws {
            v.extend_from_slice(&cw.s[0].to_le_bytes());
            v.extend_from_slice(&cw.s[1].to_le_bytes());
            for w in &cw.v {
                v.extend_from_slice(&w.to_le_bytes());
            }
        }
        for w in &self.last {
            v.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// Parses a key serialised by [`DcfKey::to_bytes`]. Never panics; returns
    /// [`FssError::Malformed`] on a wrong length, width, payload length or a
    /// non-canonical seed.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FssError> {
        let (k, used) = Self::read_from(bytes)?;
        if used != bytes.len() {
            return Err(FssError::Malformed("trailing bytes after DCF key"));
        }
        Ok(k)
    }

    /// Parses a key from the front of `bytes`, returning it and the number of
    /// bytes consumed.
    pub(crate) fn read_from(bytes: &[u8]) -> Result<(Self, usize), FssError> {
        const { assert!(L >= 1 && L <= MAX_L, "payload length must be in 1..=8") };
        let mut r = Reader(bytes);
        let n = r.u8()?;
        if !(1..=64).contains(&n) {
            return Err(FssError::Malformed("DCF bit width not in 1..=64"));
        }
        if r.u8()? as usize != L {
            return Err(FssError::Malformed("DCF payload length mismatch"));
        }
        let need = Self::byte_len_for(n as u32);
        if bytes.len() < need {
            return Err(FssError::Malformed("DCF key truncated"));
        }
        let seed = r.u128()?;
        if seed & !SEED_MASK != 0 {
            return Err(FssError::Malformed("non-canonical DCF seed"));
        }
        let mut cws = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let s = [r.u64()?, r.u64()?];
            let mut v = [0u64; L];
            for w in &mut v {
                *w = r.u64()?;
            }
            cws.push(Cw { s, v });
        }
        let mut last = [0u64; L];
        for w in &mut last {
            *w = r.u64()?;
        }
        Ok((DcfKey { n, seed, cws, last }, need))
    }
}

/// Minimal bounds-checked little-endian reader.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], FssError> {
        let (h, rest) = self.0.split_first_chunk::<N>().ok_or(FssError::Malformed("truncated key bytes"))?;
        self.0 = rest;
        Ok(*h)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, FssError> {
        Ok(self.take::<1>()?[0])
    }
    pub(crate) fn u64(&mut self) -> Result<u64, FssError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn u128(&mut self) -> Result<u128, FssError> {
        Ok(u128::from_le_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn rec<const L: usize>(a: [u64; L], b: [u64; L]) -> [u64; L] {
        let mut r = [0u64; L];
        for k in 0..L {
            r[k] = a[k].wrapping_add(b[k]);
        }
        r
    }

    fn expect<const L: usize>(x: u64, alpha: u64, beta: [u64; L]) -> [u64; L] {
        if x < alpha { beta } else { [0; L] }
    }

    fn exhaustive<const L: usize>() {
        let mut rng = ChaCha20Rng::seed_from_u64(L as u64);
        for n in 1..=8u32 {
            for alpha in 0..(1u64 << n) {
                let beta: [u64; L] = std::array::from_fn(|_| rng.random());
                let (k0, k1) = keygen(n, alpha, beta, &mut rng).unwrap();
                let xs: Vec<u64> = (0..(1u64 << n)).collect();
                let mut o0 = vec![[0u64; L]; xs.len()];
                let mut o1 = vec![[0u64; L]; xs.len()];
                let ks0 = vec![k0.clone(); xs.len()];
                let ks1 = vec![k1.clone(); xs.len()];
                eval_batch(0, &ks0, &xs, &mut o0).unwrap();
                eval_batch(1, &ks1, &xs, &mut o1).unwrap();
                for &x in &xs {
                    let a = eval(0, &k0, x).unwrap();
                    let b = eval(1, &k1, x).unwrap();
                    assert_eq!(a, o0[x as usize]);
                    assert_eq!(b, o1[x as usize]);
                    assert_eq!(rec(a, b), expect(x, alpha, beta), "n={n} a={alpha} x={x}");
                }
            }
        }
    }

    #[test]
    fn exhaustive_l1() {
        exhaustive::<1>();
    }

    #[test]
    fn exhaustive_l2() {
        exhaustive::<2>();
    }

    #[test]
    fn exhaustive_l3() {
        exhaustive::<3>();
    }

    fn random_wide<const L: usize>(seed: u64) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        for &n in &[16u32, 32, 48, 63, 64] {
            let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            for _ in 0..20 {
                let alpha = rng.random::<u64>() & mask;
                let beta: [u64; L] = std::array::from_fn(|_| rng.random());
                let (k0, k1) = keygen(n, alpha, beta, &mut rng).unwrap();
                let mut xs = vec![alpha.wrapping_sub(1) & mask, alpha, alpha.wrapping_add(1) & mask, 0, mask];
                for _ in 0..20 {
                    xs.push(rng.random::<u64>() & mask);
                }
                for &x in &xs {
                    let r = rec(eval(0, &k0, x).unwrap(), eval(1, &k1, x).unwrap());
                    assert_eq!(r, expect(x, alpha, beta), "n={n} a={alpha} x={x}");
                    // High bits beyond n are ignored.
                    if n < 64 {
                        let xh = x | (rng.random::<u64>() << n);
                        let r2 = rec(eval(0, &k0, xh).unwrap(), eval(1, &k1, xh).unwrap());
                        assert_eq!(r2, r);
                    }
                }
            }
        }
    }

    #[test]
    fn random_wide_l1() {
        random_wide::<1>(11);
    }

    #[test]
    fn random_wide_l2() {
        random_wide::<2>(12);
    }

    #[test]
    fn random_wide_l3() {
        random_wide::<3>(13);
    }

    #[test]
    fn batch_mixed_widths_and_lengths() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut k0s = Vec::new();
        let mut k1s = Vec::new();
        let mut want = Vec::new();
        let mut xs = Vec::new();
        for i in 0..300u32 {
            let n = if i % 7 == 0 { 20 } else { 32 };
            let mask = (1u64 << n) - 1;
            let alpha = rng.random::<u64>() & mask;
            let x = rng.random::<u64>() & mask;
            let beta = [rng.random::<u64>(), rng.random::<u64>()];
            let (a, b) = keygen(n, alpha, beta, &mut rng).unwrap();
            k0s.push(a);
            k1s.push(b);
            xs.push(x);
            want.push(expect(x, alpha, beta));
        }
        let mut o0 = vec![[0u64; 2]; xs.len()];
        let mut o1 = vec![[0u64; 2]; xs.len()];
        eval_batch(0, &k0s, &xs, &mut o0).unwrap();
        eval_batch(1, &k1s, &xs, &mut o1).unwrap();
        for i in 0..xs.len() {
            assert_eq!(rec(o0[i], o1[i]), want[i]);
        }
        assert!(matches!(eval_batch(0, &k0s, &xs[1..], &mut o0), Err(FssError::LengthMismatch { .. })));
        assert_eq!(eval_batch(2, &k0s, &xs, &mut o0), Err(FssError::InvalidParty(2)));
        assert_eq!(eval(7, &k0s[0], 0), Err(FssError::InvalidParty(7)));
    }

    #[test]
    fn gen_rejects_bad_params() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        assert!(keygen::<1, _>(0, 0, [1], &mut rng).is_err());
        assert!(keygen::<1, _>(65, 0, [1], &mut rng).is_err());
        assert!(keygen::<1, _>(8, 256, [1], &mut rng).is_err());
        assert!(keygen::<1, _>(64, u64::MAX, [1], &mut rng).is_ok());
    }

    #[test]
    fn serialisation_round_trip_and_malformed() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        for &n in &[1u32, 13, 32, 64] {
            let (k0, k1) = keygen::<2, _>(n, 1, [3, 4], &mut rng).unwrap();
            for k in [&k0, &k1] {
                let b = k.to_bytes();
                assert_eq!(b.len(), k.byte_len());
                assert_eq!(b.len(), DcfKey::<2>::byte_len_for(n));
                assert_eq!(&DcfKey::<2>::from_bytes(&b).unwrap(), k);
                for cut in 0..b.len() {
                    assert!(DcfKey::<2>::from_bytes(&b[..cut]).is_err());
                }
                let mut long = b.clone();
                long.push(0);
                assert!(DcfKey::<2>::from_bytes(&long).is_err());
                assert!(DcfKey::<1>::from_bytes(&b).is_err());
                assert!(DcfKey::<3>::from_bytes(&b).is_err());
                let mut bad = b.clone();
                bad[0] = 0;
                assert!(DcfKey::<2>::from_bytes(&bad).is_err());
                bad[0] = 65;
                assert!(DcfKey::<2>::from_bytes(&bad).is_err());
                let mut bad = b.clone();
                bad[2] |= 1;
                assert!(DcfKey::<2>::from_bytes(&bad).is_err());
            }
        }
        // Arbitrary garbage never panics.
        for len in 0..200 {
            let g: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = DcfKey::<1>::from_bytes(&g);
        }
    }

    /// One party's view is independent of α: the bits of the serialised key
    /// have the same empirical distribution for two very different α.
    #[test]
    fn key_looks_independent_of_alpha() {
        let mut rng = ChaCha20Rng::seed_from_u64(77);
        let trials = 2000;
        let n = 16u32;
        for party in 0..2 {
            let mut counts =
                [vec![0u32; DcfKey::<1>::byte_len_for(n) * 8], vec![0u32; DcfKey::<1>::byte_len_for(n) * 8]];
            for (ai, &alpha) in [0u64, 0xffff].iter().enumerate() {
                for _ in 0..trials {
                    let (k0, k1) = keygen::<1, _>(n, alpha, [1], &mut rng).unwrap();
                    let b = if party == 0 { k0 } else { k1 }.to_bytes();
                    for (i, byte) in b.iter().enumerate() {
                        for bit in 0..8 {
                            counts[ai][i * 8 + bit] += ((byte >> bit) & 1) as u32;
                        }
                    }
                }
            }
            // Skip the header (n, L) which is public and constant.
            for (i, (&a, &b)) in counts[0].iter().zip(&counts[1]).enumerate().skip(16) {
                let (a, b) = (a as f64, b as f64);
                // Both ~ Bin(2000, p) with the same p: difference well within 6σ.
                assert!((a - b).abs() < 6.0 * (trials as f64 / 2.0).sqrt(), "bit {i}: {a} vs {b}");
            }
        }
    }
}
