//! Beaver triples over Z_2^64 from correlated OT (Gilboa's multiplication), with no dealer.
//!
//! For a triple, P0 draws `a0, b0` and P1 draws `a1, b1`; `c = (a0 + a1)(b0 + b1)` needs the
//! cross products `a0·b1` and `b0·a1` shared. `a0·b1 = Σ_e 2^e · b1_e · a0`: one correlated
//! OT per bit `e` of `b1`, P1 choosing with `b1_e`, P0's correlation `a0`. From the IKNP rows
//! ([`super::iknp`]) P0 takes `x = H(j, q_j)` and sends `H(j, q_j ⊕ Δ) − x − a0`; P1 takes
//! `y = H(j, t_j) − b1_e·(that)`, so that `y − x = b1_e·a0`. Only `64 − e` bits of bit `e`'s
//! word matter (the term is multiplied by `2^e`), so the corrections are packed: 2·2080 bits
//! per triple. `H(j, x) = π(π(x) ⊕ j) ⊕ π(x)` with `π` fixed-key AES-128 is the tweakable
//! correlation-robust hash of Guo–Katz–Wang–Yu (ePrint 2019/074); `j` is the OT's global index.
//!
//! Both cross products use OTs in the same direction (P1 chooses with `b1` and `a1`), so a
//! batch is one IKNP extension of 128 OTs per triple and one message back: **one round trip,
//! 2048 + 520 = 2568 bytes per triple** (the dealer sends 8). P1's choices are never branched
//! on (`r·c` is a mask), nor are P0's values.

use aes::Aes128;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};

use crate::error::Result;
use crate::ids::PartyId;
use crate::prg::{Prg, Seed};
use crate::transport::{Channel, FrameKind};

use super::iknp::{CotReceiver, CotSender};

/// Triples per extension: 2^20 OTs, 16 MiB of rows on each side.
pub const CHUNK: usize = 8192;

/// Packed correction words per triple: `2 · Σ_{e<64} (64 − e)` bits.
const WORDS_PER_TRIPLE: usize = 65;

/// The public key of the fixed-key permutation `π` (any fixed value; this is `"membrane ot crh "`).
const CRH_KEY: [u8; 16] = *b"membrane ot crh ";

/// One party's shares of `n` elementwise Beaver triples: `(a0 + a1)(b0 + b1) = c0 + c1`.
/// `Debug` prints the count only.
pub struct TripleShares {
    /// Shares of the left masks.
    pub a: Vec<u64>,
    /// Shares of the right masks.
    pub b: Vec<u64>,
    /// Shares of the products.
    pub c: Vec<u64>,
}

impl std::fmt::Debug for TripleShares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TripleShares({} triples)", self.a.len())
    }
}

/// The tweakable correlation-robust hash, low 64 bits: `out[i] = H(first + i, xs[i])`.
struct Crh(Aes128);

impl Crh {
    fn new() -> Self {
        Crh(Aes128::new(&Array(CRH_KEY)))
    }

    fn hash(&self, first: u64, xs: &[u128], out: &mut [u64]) {
        const B: usize = 64;
        let mut p = [Array([0u8; 16]); B];
        let mut pp = [Array([0u8; 16]); B];
        for (c, (xs, out)) in xs.chunks(B).zip(out.chunks_mut(B)).enumerate() {
            let n = xs.len();
            for (b, x) in p.iter_mut().zip(xs) {
                b.0 = x.to_le_bytes();
            }
            self.0.encrypt_blocks(&mut p[..n]);
            for (i, (q, b)) in pp.iter_mut().zip(&p).take(n).enumerate() {
                let tweak = u128::from(first + (c * B + i) as u64);
                q.0 = (u128::from_le_bytes(b.0) ^ tweak).to_le_bytes();
            }
            self.0.encrypt_blocks(&mut pp[..n]);
            for (o, (q, b)) in out.iter_mut().zip(pp.iter().zip(&p)) {
                *o = (u128::from_le_bytes(q.0) ^ u128::from_le_bytes(b.0)) as u64;
            }
        }
    }
}

fn low_bits(bits: u32) -> u64 {
    if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

/// Packs values of 1..=64 bits into words, least significant first.
struct BitWriter {
    words: Vec<u64>,
    acc: u64,
    used: u32,
}

impl BitWriter {
    fn with_capacity(words: usize) -> Self {
        Self { words: Vec::with_capacity(words), acc: 0, used: 0 }
    }

    fn push(&mut self, v: u64, bits: u32) {
        let v = v & low_bits(bits);
        self.acc |= v << self.used;
        let total = self.used + bits;
        if total >= 64 {
            self.words.push(self.acc);
            self.acc = if self.used == 0 { 0 } else { v >> (64 - self.used) };
            self.used = total - 64;
        } else {
            self.used = total;
        }
    }

    fn finish(mut self) -> Vec<u64> {
        if self.used > 0 {
            self.words.push(self.acc);
        }
        self.words
    }
}

/// Reads what a [`BitWriter`] packed.
struct BitReader<'a> {
    words: &'a [u64],
    idx: usize,
    used: u32,
}

impl BitReader<'_> {
    fn pull(&mut self, bits: u32) -> u64 {
        let cur = self.words.get(self.idx).copied().unwrap_or(0);
        let mut v = cur >> self.used;
        let have = 64 - self.used;
        if bits >= have {
            self.idx += 1;
            if bits > have {
                v |= self.words.get(self.idx).copied().unwrap_or(0) << have;
            }
            self.used = bits - have;
        } else {
            self.used += bits;
        }
        v & low_bits(bits)
    }
}

fn random_words(rng: &mut impl rand_core::CryptoRng, n: usize) -> (Vec<u64>, Vec<u64>) {
    let mut prg = Prg::new(&Seed::random(rng), 0);
    let (mut a, mut b) = (vec![0u64; n], vec![0u64; n]);
    prg.fill(&mut a);
    prg.fill(&mut b);
    (a, b)
}

/// P0's side (the OT sender) of `n` triples with `peer`. One round trip per [`CHUNK`].
pub async fn triples_sender(
    cot: &mut CotSender,
    ch: &mut Channel,
    peer: PartyId,
    n: usize,
    rng: &mut impl rand_core::CryptoRng,
) -> Result<TripleShares> {
    let (a, b) = random_words(rng, n);
    let mut c = Vec::with_capacity(n);
    let crh = Crh::new();
    let delta = cot.delta();
    for start in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - start);
        let (q, first) = cot.extend(ch, peer, 128 * len).await?;
        let mut x = vec![0u64; q.len()];
        let mut x1 = vec![0u64; q.len()];
        crh.hash(first, &q, &mut x);
        let q1: Vec<u128> = q.iter().map(|q| q ^ delta).collect();
        crh.hash(first, &q1, &mut x1);
        let mut out = BitWriter::with_capacity(WORDS_PER_TRIPLE * len);
        for t in 0..len {
            let (at, bt) = (a[start + t], b[start + t]);
            let mut cross = 0u64;
            for (k, corr) in [at, bt].into_iter().enumerate() {
                for e in 0..64u32 {
                    let j = 128 * t + 64 * k + e as usize;
                    out.push(x1[j].wrapping_sub(x[j]).wrapping_sub(corr), 64 - e);
                    cross = cross.wrapping_sub(x[j] << e);
                }
            }
            c.push(at.wrapping_mul(bt).wrapping_add(cross));
        }
        ch.send_u64(peer, FrameKind::Material, &out.finish()).await?;
    }
    Ok(TripleShares { a, b, c })
}

/// P1's side (the OT receiver) of `n` triples with `peer`. One round trip per [`CHUNK`].
pub async fn triples_receiver(
    cot: &mut CotReceiver,
    ch: &mut Channel,
    peer: PartyId,
    n: usize,
    rng: &mut impl rand_core::CryptoRng,
) -> Result<TripleShares> {
    let (a, b) = random_words(rng, n);
    let mut c = Vec::with_capacity(n);
    let crh = Crh::new();
    for start in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - start);
        // Choice words: b1 then a1 of each triple (the OTs for a0·b1, then b0·a1).
        let choices: Vec<u64> = (start..start + len).flat_map(|t| [b[t], a[t]]).collect();
        let (rows, first) = cot.extend(ch, peer, &choices).await?;
        let mut y = vec![0u64; rows.len()];
        crh.hash(first, &rows, &mut y);
        let packed = ch.recv_u64(peer, FrameKind::Material, WORDS_PER_TRIPLE * len).await?;
        let mut corr = BitReader { words: &packed, idx: 0, used: 0 };
        for t in 0..len {
            let mut cross = 0u64;
            for (k, &bits) in choices[2 * t..2 * t + 2].iter().enumerate() {
                for e in 0..64u32 {
                    let j = 128 * t + 64 * k + e as usize;
                    let chose = 0u64.wrapping_sub((bits >> e) & 1);
                    let v = y[j].wrapping_sub(chose & corr.pull(64 - e));
                    cross = cross.wrapping_add(v << e);
                }
            }
            c.push(a[start + t].wrapping_mul(b[start + t]).wrapping_add(cross));
        }
    }
    Ok(TripleShares { a, b, c })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_packing_round_trips() {
        let mut w = BitWriter::with_capacity(0);
        let mut prg = Prg::from_u64(9);
        let vals: Vec<(u64, u32)> = (0..1000).map(|i| (prg.next_u64(), 1 + (i * 37 % 64) as u32)).collect();
        for &(v, b) in &vals {
            w.push(v, b);
        }
        let words = w.finish();
        assert_eq!(words.len(), vals.iter().map(|&(_, b)| b as usize).sum::<usize>().div_ceil(64));
        let mut r = BitReader { words: &words, idx: 0, used: 0 };
        for &(v, b) in &vals {
            assert_eq!(r.pull(b), v & low_bits(b));
        }
    }
}
