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
//! 2048 + 520 = 2568 bytes per triple** (the dealer sends 8). [`products_both_ways`] runs the
//! two cross products in opposite directions instead (each party sends half), for a session
//! with an extension each way. P1's choices are never branched
//! on (`r·c` is a mask), nor are P0's values.

use aes::Aes128;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};

use crate::error::{Error, Result};
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

impl TripleShares {
    /// This party's triple shares from its masks and its share of the cross products:
    /// `c = a·b + cross`.
    fn assemble(a: Vec<u64>, b: Vec<u64>, cross: Vec<u64>) -> Self {
        let c = a.iter().zip(&b).zip(cross).map(|((&a, &b), x)| a.wrapping_mul(b).wrapping_add(x)).collect();
        Self { a, b, c }
    }
}

impl std::fmt::Debug for TripleShares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TripleShares({} triples)", self.a.len())
    }
}

/// The tweakable correlation-robust hash, low 64 bits.
pub(super) struct Crh(pub(super) Aes128);

impl Crh {
    pub(super) fn new() -> Self {
        Crh(Aes128::new(&Array(CRH_KEY)))
    }

    /// `out[i] = H(first + i, xs[i] ⊕ mask)`.
    pub(super) fn hash(&self, first: u64, xs: &[u128], mask: u128, out: &mut [u64]) {
        const B: usize = 64;
        let mut p = [Array([0u8; 16]); B];
        let mut pp = [Array([0u8; 16]); B];
        for (c, (xs, out)) in xs.chunks(B).zip(out.chunks_mut(B)).enumerate() {
            let n = xs.len();
            for (b, x) in p.iter_mut().zip(xs) {
                b.0 = (x ^ mask).to_le_bytes();
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
pub(super) struct BitWriter {
    words: Vec<u64>,
    acc: u64,
    used: u32,
}

impl BitWriter {
    pub(super) fn with_capacity(words: usize) -> Self {
        Self { words: Vec::with_capacity(words), acc: 0, used: 0 }
    }

    pub(super) fn push(&mut self, v: u64, bits: u32) {
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

    pub(super) fn finish(mut self) -> Vec<u64> {
        if self.used > 0 {
            self.words.push(self.acc);
        }
        self.words
    }
}

/// Reads what a [`BitWriter`] packed.
pub(super) struct BitReader<'a> {
    words: &'a [u64],
    idx: usize,
    used: u32,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(words: &'a [u64]) -> Self {
        Self { words, idx: 0, used: 0 }
    }

    pub(super) fn pull(&mut self, bits: u32) -> u64 {
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
    let cross = cross_products_sender(cot, ch, peer, &a, &b).await?;
    Ok(TripleShares::assemble(a, b, cross))
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
    let cross = cross_products_receiver(cot, ch, peer, &a, &b).await?;
    Ok(TripleShares::assemble(a, b, cross))
}

/// The sender's side of one Gilboa product `v·c` (the peer's `c` chose the 64 OTs whose
/// hashed pads are `x`, `x1`): pushes bit `e`'s correction `x1 − x − v` on `64 − e` bits and
/// returns this party's share `−Σ_e 2^e·x_e`.
fn correct(x: &[u64], x1: &[u64], v: u64, corrections: &mut BitWriter) -> u64 {
    let mut share = 0u64;
    for (e, (&p, &p1)) in x.iter().zip(x1).enumerate() {
        corrections.push(p1.wrapping_sub(p).wrapping_sub(v), 64 - e as u32);
        share = share.wrapping_sub(p << e);
    }
    share
}

/// The receiver's side of [`correct`]: its pads `y` for the OTs it chose with the bits of `c`;
/// returns its share `Σ_e 2^e·(y_e − c_e·d_e)`. The choice bit selects by mask, no branch.
fn unmask(y: &[u64], c: u64, corrections: &mut BitReader<'_>) -> u64 {
    let mut share = 0u64;
    for (e, &p) in y.iter().enumerate() {
        let chose = 0u64.wrapping_sub((c >> e) & 1);
        share = share.wrapping_add(p.wrapping_sub(chose & corrections.pull(64 - e as u32)) << e);
    }
    share
}

/// P0's share of `a0[i]·b1[i] + b0[i]·a1[i]` for each `i`, where P1 holds `a1, b1`
/// ([`cross_products_receiver`]): the two shares add up to it. The building block of triples,
/// and of a product of two shared vectors without a triple. One round trip per [`CHUNK`].
pub async fn cross_products_sender(
    cot: &mut CotSender,
    ch: &mut Channel,
    peer: PartyId,
    a0: &[u64],
    b0: &[u64],
) -> Result<Vec<u64>> {
    if a0.len() != b0.len() {
        return Err(Error::InvalidInput(format!("cross products: {} vs {} operands", a0.len(), b0.len())));
    }
    let n = a0.len();
    let mut out = Vec::with_capacity(n);
    let crh = Crh::new();
    let delta = cot.delta();
    for start in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - start);
        let (q, first) = cot.extend(ch, peer, 128 * len).await?;
        let mut x = vec![0u64; q.len()];
        let mut x1 = vec![0u64; q.len()];
        crh.hash(first, &q, 0, &mut x);
        crh.hash(first, &q, delta, &mut x1);
        let mut corrections = BitWriter::with_capacity(WORDS_PER_TRIPLE * len);
        for t in 0..len {
            // The OTs for a0·b1 (P1 chooses with b1's bits), then for b0·a1.
            let j = 128 * t;
            let cross = correct(&x[j..j + 64], &x1[j..j + 64], a0[start + t], &mut corrections).wrapping_add(correct(
                &x[j + 64..j + 128],
                &x1[j + 64..j + 128],
                b0[start + t],
                &mut corrections,
            ));
            out.push(cross);
        }
        if let Err(e) = ch.send_u64(peer, FrameKind::Material, &corrections.finish()).await {
            cot.poison();
            return Err(e);
        }
    }
    Ok(out)
}

/// P1's share of `a0[i]·b1[i] + b0[i]·a1[i]` ([`cross_products_sender`]).
pub async fn cross_products_receiver(
    cot: &mut CotReceiver,
    ch: &mut Channel,
    peer: PartyId,
    a1: &[u64],
    b1: &[u64],
) -> Result<Vec<u64>> {
    if a1.len() != b1.len() {
        return Err(Error::InvalidInput(format!("cross products: {} vs {} operands", a1.len(), b1.len())));
    }
    let n = a1.len();
    let mut out = Vec::with_capacity(n);
    let crh = Crh::new();
    let choices = |start: usize| -> Vec<u64> { (start..(start + CHUNK).min(n)).flat_map(|t| [b1[t], a1[t]]).collect() };
    // One extension ahead: P1 extends chunk i + 1 while P0 makes chunk i's corrections (both
    // fit the transport's windows: 16 MiB of columns, 1 MiB of corrections).
    let mut next = None;
    if n > 0 {
        let c = choices(0);
        let ext = cot.extend(ch, peer, &c).await?;
        next = Some((0, c, ext));
    }
    while let Some((start, mine, (rows, first))) = next.take() {
        let len = CHUNK.min(n - start);
        if start + len < n {
            let c = choices(start + len);
            let ext = cot.extend(ch, peer, &c).await?;
            next = Some((start + len, c, ext));
        }
        let mut y = vec![0u64; rows.len()];
        crh.hash(first, &rows, 0, &mut y);
        let packed = match ch.recv_u64(peer, FrameKind::Material, WORDS_PER_TRIPLE * len).await {
            Ok(p) => p,
            Err(e) => {
                cot.poison();
                return Err(e);
            }
        };
        let mut corrections = BitReader { words: &packed, idx: 0, used: 0 };
        for t in 0..len {
            let j = 128 * t;
            let cross = unmask(&y[j..j + 64], mine[2 * t], &mut corrections).wrapping_add(unmask(
                &y[j + 64..j + 128],
                mine[2 * t + 1],
                &mut corrections,
            ));
            out.push(cross);
        }
    }
    Ok(out)
}

/// Packed correction words of `n` single cross products (`Σ_{e<64} (64 − e)` bits each).
fn single_words(n: usize) -> usize {
    (2080 * n).div_ceil(64)
}

/// This party's share of `a_peer[i]·b[i] + a[i]·b_peer[i]` for each `i`, each party calling it
/// with its own `a`, `b` (and its two extensions): the two cross products run in opposite
/// directions — this party chooses with `b`'s bits on its receiver extension while the peer
/// sends corrections of `a_peer`, and sends corrections of `a` on its sender extension — so
/// both parties extend, hash and send alike, each sending 1284 bytes per element (its
/// columns and its corrections) where [`cross_products_sender`] has P1 send 2048 and P0 520.
/// Per [`CHUNK`] elements each party sends before it receives, so both directions run at once.
pub async fn products_both_ways(
    send: &mut CotSender,
    recv: &mut CotReceiver,
    ch: &mut Channel,
    peer: PartyId,
    a: &[u64],
    b: &[u64],
) -> Result<Vec<u64>> {
    if a.len() != b.len() {
        return Err(Error::InvalidInput(format!("cross products: {} vs {} operands", a.len(), b.len())));
    }
    let n = a.len();
    let mut out = vec![0u64; n];
    let crh = Crh::new();
    let delta = send.delta();
    let (mut x, mut x1, mut y) = (Vec::new(), Vec::new(), Vec::new());
    for start in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - start);
        // 64 choices per element (the bits of b), padded to whole extensions of 128 OTs.
        let mut choices = b[start..start + len].to_vec();
        choices.resize(len.next_multiple_of(2), 0);
        let (rows, first_r) = recv.extend(ch, peer, &choices).await?;
        let (q, first_s) = send.extend(ch, peer, 64 * choices.len()).await?;
        x.resize(q.len(), 0);
        x1.resize(q.len(), 0);
        crh.hash(first_s, &q, 0, &mut x);
        crh.hash(first_s, &q, delta, &mut x1);
        let mut corrections = BitWriter::with_capacity(single_words(len));
        for (t, o) in out[start..start + len].iter_mut().enumerate() {
            let j = 64 * t;
            *o = correct(&x[j..j + 64], &x1[j..j + 64], a[start + t], &mut corrections);
        }
        if let Err(e) = ch.send_u64(peer, FrameKind::Material, &corrections.finish()).await {
            send.poison();
            return Err(e);
        }
        y.resize(rows.len(), 0);
        crh.hash(first_r, &rows, 0, &mut y);
        let packed = match ch.recv_u64(peer, FrameKind::Material, single_words(len)).await {
            Ok(p) => p,
            Err(e) => {
                recv.poison();
                return Err(e);
            }
        };
        let mut corrections = BitReader { words: &packed, idx: 0, used: 0 };
        for (t, o) in out[start..start + len].iter_mut().enumerate() {
            let j = 64 * t;
            *o = o.wrapping_add(unmask(&y[j..j + 64], b[start + t], &mut corrections));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// P1's view of the corrections: with P0's operands all zero or all ones, the corrections
    /// of the OTs P1 did *not* choose (choice bit 0: it cannot unmask them) are uniform — a
    /// byte histogram within a chi-square bound — whatever P0's operands. A correction made
    /// without the hash of `q ⊕ Δ` fails (chi-square in the millions).
    #[test]
    #[allow(clippy::disallowed_methods)] // parties as threads, as in crate::testing
    fn the_receivers_view_of_the_corrections_is_uniform() {
        use crate::ids::SessionId;
        use rand_chacha::ChaCha12Rng;
        use rand_core::SeedableRng;
        let n = 2048;
        for fill in [0u64, u64::MAX] {
            let (mut c0, mut c1) = crate::testing::channel_pair(SessionId(3));
            let words = std::thread::scope(|s| {
                s.spawn(move || {
                    futures::executor::block_on(async {
                        let mut rng = ChaCha12Rng::seed_from_u64(1);
                        let mut cot = CotSender::setup(&mut c0, PartyId::P1, &mut rng).await.unwrap();
                        let ops = vec![fill; n];
                        cross_products_sender(&mut cot, &mut c0, PartyId::P1, &ops, &ops).await.unwrap()
                    })
                });
                futures::executor::block_on(async {
                    let mut rng = ChaCha12Rng::seed_from_u64(2);
                    let mut cot = CotReceiver::setup(&mut c1, PartyId::P0, &mut rng).await.unwrap();
                    // P1 chooses nothing (all-zero a1, b1): every correction is one it cannot open.
                    let _ = cot.extend(&mut c1, PartyId::P0, &vec![0u64; 2 * n]).await.unwrap();
                    c1.recv_u64(PartyId::P0, FrameKind::Material, WORDS_PER_TRIPLE * n).await.unwrap()
                })
            });
            // The full-width corrections (bit 0 of each operand: 64 bits) as bytes.
            let mut r = BitReader { words: &words, idx: 0, used: 0 };
            let mut hist = [0usize; 256];
            for _ in 0..2 * n {
                for e in 0..64u32 {
                    let v = r.pull(64 - e);
                    if e == 0 {
                        for b in v.to_le_bytes() {
                            hist[b as usize] += 1;
                        }
                    }
                }
            }
            let total: usize = hist.iter().sum();
            let expect = total as f64 / 256.0;
            let chi2: f64 = hist.iter().map(|&h| (h as f64 - expect).powi(2) / expect).sum();
            // 255 degrees of freedom: mean 255, sd 22.6; 400 is beyond 6 sd.
            assert!(chi2 < 400.0, "operands {fill:#x}: chi-square {chi2} over {total} bytes");
        }
    }

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
