//! Vector products from correlated OT: additive shares of `x_s · v_s` for a scalar `x_s` the OT
//! receiver holds and a vector `v_s` of `L` words the sender holds — Gilboa's multiplication
//! with vector messages, the OT-made matrix triples of SecureML (§ 4.2). Below, "P1" is the
//! receiver and "P0" the sender; a session runs an extension each way, so either party can be
//! either.
//!
//! A bilinear layer `f(A, B)` is a sum of such products: a matrix product `A·B` is the sum over
//! the entries `B[j, l]` of the column `A[·, j]` times that scalar, or over the entries `A[i, j]`
//! of the row `B[j, ·]` times it. Where [`super::triples`] pays 64 OTs (1024 bytes of IKNP
//! columns) per *term* `a·b` of the layer and cross term, a vector product pays them per
//! *scalar*, and each of its `L` lanes costs only its correction: `Σ_{e<64} (64 − e)` bits,
//! **260 bytes per term**.
//!
//! The OTs behind a scalar are made once ([`VoleSender::make`], [`VoleReceiver::make`]: 64 per
//! scalar, the receiver choosing with the scalar's bits) and can be used any number of times with
//! a fresh vector each time ([`VoleSender::send`], [`VoleReceiver::receive`]). Use `u` of OT `j`
//! draws its pads as `H((u, w, j), q_j)` and `H((u, w, j), q_j ⊕ Δ)` for its 128-bit blocks `w`
//! (the tweakable correlation-robust hash of [`super::triples`]): every use has fresh pads, so a
//! fixed operand — a layer's weight mask — pays its OTs once per session, and every batch after
//! pays only the corrections, in one message from P0 to P1.
//!
//! Scalars have `bits` bits (64 for ring elements; 1 for a bit times a vector, one OT and 8
//! bytes a lane). For OT `j = bits·s + e` (bit `e` of scalar `s`), P0 takes the pads `x = H(·, q_j)` and
//! `x' = H(·, q_j ⊕ Δ)` and sends, per lane, `d = x' − x − v_s[l] mod 2^(64−e)`; P1 takes
//! `y = H(·, t_j) − c·d`, so `y − x ≡ c·v_s[l] mod 2^(64−e)` and the shares `−Σ_e 2^e·x`,
//! `Σ_e 2^e·y` add up to `x_s·v_s[l]`. Constant-time as [`super::triples`]: P1's choice bits
//! select by masks, nothing branches on P0's vectors.

use aes::cipher::{Array, BlockCipherEncrypt};

use crate::error::{Error, Result};
use crate::ids::PartyId;
use crate::transport::{Channel, FrameKind};

use super::iknp::{CotReceiver, CotSender, KAPPA};
use super::triples::{BitReader, BitWriter, Crh};

/// Corrections per message, in lanes of 64-bit scalars (≈ 2 MiB of packed words).
const LANES_PER_MESSAGE: usize = 8192;

/// Lanes of one scalar handled together: bounds the pads in memory (at most 64 × 2048 blocks,
/// 2 MiB) whatever the vector's length.
const LANE_CHUNK: usize = 4096;

/// The units of one use — `(scalar, first lane, end lane)`, at most [`LANE_CHUNK`] lanes each —
/// grouped into messages of about `LANES_PER_MESSAGE · 64 / bits` lanes. Both sides group them
/// alike, so each knows every message's length.
fn messages(scalars: usize, len: usize, bits: usize) -> impl Iterator<Item = Vec<(usize, usize, usize)>> {
    let cap = LANES_PER_MESSAGE * 64 / bits;
    let mut units =
        (0..scalars).flat_map(move |s| (0..len).step_by(LANE_CHUNK).map(move |l0| (s, l0, (l0 + LANE_CHUNK).min(len))));
    std::iter::from_fn(move || {
        let (mut batch, mut lanes) = (Vec::new(), 0);
        while lanes < cap {
            let Some(unit) = units.next() else { break };
            lanes += unit.2 - unit.1;
            batch.push(unit);
        }
        (!batch.is_empty()).then_some(batch)
    })
}

/// Packed words of the corrections of `scalars` scalars of `bits` bits and `len` lanes.
fn packed_words(scalars: usize, bits: usize, len: usize) -> usize {
    // Σ_{e<bits} (64 − e) bits per lane: 2080 for full words, 64 for single bits.
    (scalars * len * (bits * 64 - bits * (bits - 1) / 2)).div_ceil(64)
}

/// The receiver's choice bits: bit `e < bits` of scalar `s` is OT `bits·s + e`'s, padded to
/// whole extensions of 128 OTs.
fn choice_bits(x: &[u64], bits: usize) -> Vec<u64> {
    let ots = (bits * x.len()).next_multiple_of(KAPPA);
    if bits == 64 {
        let mut c = x.to_vec();
        c.resize(ots / 64, 0);
        return c;
    }
    let mut c = vec![0u64; ots / 64];
    for (s, &v) in x.iter().enumerate() {
        for e in 0..bits {
            let j = bits * s + e;
            c[j / 64] |= ((v >> e) & 1) << (j % 64);
        }
    }
    c
}

fn check_bits(bits: usize) -> Result<()> {
    if (1..=64).contains(&bits) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("vector OT: scalars of {bits} bits (1 to 64)")))
    }
}

/// The 128-bit tweak of block `w` of use `u` of OT `j`.
fn tweak(u: u32, w: usize, j: u64) -> u128 {
    u128::from(j) | ((w as u128) << 64) | (u128::from(u) << 96)
}

impl Crh {
    /// `out[e·blocks + w] = H(tweak(u, block0 + w, first + e), xs[e] ⊕ mask)` for `w < blocks`.
    #[allow(clippy::too_many_arguments)]
    fn expand(&self, first: u64, u: u32, xs: &[u128], mask: u128, block0: usize, blocks: usize, out: &mut Vec<u128>) {
        out.clear();
        let mut p: Vec<Array<u8, _>> = xs.iter().map(|x| Array((x ^ mask).to_le_bytes())).collect();
        self.0.encrypt_blocks(&mut p);
        let pi: Vec<u128> = p.iter().map(|b| u128::from_le_bytes(b.0)).collect();
        let mut buf: Vec<Array<u8, _>> = Vec::with_capacity(xs.len() * blocks);
        for (e, &pe) in pi.iter().enumerate() {
            for w in 0..blocks {
                buf.push(Array((pe ^ tweak(u, block0 + w, first + e as u64)).to_le_bytes()));
            }
        }
        self.0.encrypt_blocks(&mut buf);
        for (i, b) in buf.iter().enumerate() {
            out.push(u128::from_le_bytes(b.0) ^ pi[i / blocks]);
        }
    }
}

/// Word `l` of an OT's pad: the 128-bit blocks read as pairs of little-endian words.
#[inline]
fn lane(blocks: &[u128], l: usize) -> u64 {
    (blocks[l / 2] >> (64 * (l % 2))) as u64
}

/// The sender's side of the OTs behind `scalars` scalars of the peer (see the [module docs](self)). `Debug`
/// prints the counts only.
pub struct VoleSender {
    q: Vec<u128>,
    delta: u128,
    first: u64,
    scalars: usize,
    bits: usize,
    uses: u32,
}

impl std::fmt::Debug for VoleSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VoleSender({} scalars, {} uses)", self.scalars, self.uses)
    }
}

/// The receiver's side: its scalars and the OTs it chose with their bits. `Debug` prints the counts only.
pub struct VoleReceiver {
    t: Vec<u128>,
    x: Vec<u64>,
    first: u64,
    bits: usize,
    uses: u32,
}

impl std::fmt::Debug for VoleReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VoleReceiver({} scalars, {} uses)", self.x.len(), self.uses)
    }
}

impl VoleSender {
    /// The OTs for `scalars` scalars of `bits` bits (1 to 64; the low bits of the peer's
    /// values, which must be below `2^bits`) of the peer: one IKNP extension (the peer sends
    /// `16·bits` bytes a scalar). Kept in memory: as much again.
    pub async fn make(
        cot: &mut CotSender,
        ch: &mut Channel,
        peer: PartyId,
        scalars: usize,
        bits: usize,
    ) -> Result<Self> {
        check_bits(bits)?;
        let m = (bits * scalars).next_multiple_of(KAPPA);
        let (q, first) = if m == 0 { (vec![], 0) } else { cot.extend(ch, peer, m).await? };
        Ok(Self { q, delta: cot.delta(), first, scalars, bits, uses: 0 })
    }

    /// Number of scalars.
    pub fn scalars(&self) -> usize {
        self.scalars
    }

    /// One use: shares of `x_s · v(s, l)` for every scalar `s` and lane `l < len`, handed to
    /// `out(s, l, share)` (the peer's [`VoleReceiver::receive`] gets the other shares). Sends the
    /// corrections to `peer`, 260 bytes per lane, in messages of about 8192 lanes (2 MiB).
    pub async fn send(
        &mut self,
        ch: &mut Channel,
        peer: PartyId,
        len: usize,
        v: impl Fn(usize, usize) -> u64,
        mut out: impl FnMut(usize, usize, u64),
    ) -> Result<()> {
        let u = self.next_use()?;
        if len == 0 || self.scalars == 0 {
            return Ok(());
        }
        let crh = Crh::new();
        let bits = self.bits;
        let (mut x, mut x1) = (Vec::new(), Vec::new());
        let mut share = vec![0u64; len.min(LANE_CHUNK)];
        let mut vals = Vec::with_capacity(len.min(LANE_CHUNK));
        for batch in messages(self.scalars, len, bits) {
            let lanes = batch.iter().map(|&(_, l0, l1)| l1 - l0).sum();
            let mut corr = BitWriter::with_capacity(packed_words(lanes, bits, 1));
            for (s, l0, l1) in batch {
                let (n, blocks) = (l1 - l0, (l1 - l0).div_ceil(2));
                let rows = &self.q[bits * s..bits * (s + 1)];
                let first = self.first + (bits * s) as u64;
                crh.expand(first, u, rows, 0, l0 / 2, blocks, &mut x);
                crh.expand(first, u, rows, self.delta, l0 / 2, blocks, &mut x1);
                let share = &mut share[..n];
                share.fill(0);
                // The vector once per scalar (the caller's gather may be costly), not per bit.
                vals.clear();
                vals.extend((l0..l1).map(|l| v(s, l)));
                for e in 0..bits {
                    let (p0, p1) = (&x[e * blocks..(e + 1) * blocks], &x1[e * blocks..(e + 1) * blocks]);
                    for (i, sh) in share.iter_mut().enumerate() {
                        let pad = lane(p0, i);
                        corr.push(lane(p1, i).wrapping_sub(pad).wrapping_sub(vals[i]), 64 - e as u32);
                        *sh = sh.wrapping_sub(pad << e);
                    }
                }
                for (i, &sh) in share.iter().enumerate() {
                    out(s, l0 + i, sh);
                }
            }
            ch.send_u64(peer, FrameKind::Material, &corr.finish()).await?;
        }
        Ok(())
    }

    fn next_use(&mut self) -> Result<u32> {
        let u = self.uses;
        self.uses = u.checked_add(1).ok_or_else(|| Error::InvalidInput("vector OT: 2^32 uses of one set".into()))?;
        Ok(u)
    }
}

impl VoleReceiver {
    /// The OTs for the scalars `x` of `bits` bits (1 to 64; higher bits are ignored: the
    /// products are of `x mod 2^bits`), this party choosing with their bits: one IKNP
    /// extension, sending `16·bits` bytes a scalar. Kept in memory: as much again.
    pub async fn make(
        cot: &mut CotReceiver,
        ch: &mut Channel,
        peer: PartyId,
        mut x: Vec<u64>,
        bits: usize,
    ) -> Result<Self> {
        check_bits(bits)?;
        if bits < 64 {
            x.iter_mut().for_each(|v| *v &= (1u64 << bits) - 1);
        }
        let (t, first) = if x.is_empty() { (vec![], 0) } else { cot.extend(ch, peer, &choice_bits(&x, bits)).await? };
        Ok(Self { t, x, first, bits, uses: 0 })
    }

    /// Number of scalars.
    pub fn scalars(&self) -> usize {
        self.x.len()
    }

    /// One use: this party's shares of `x_s · v_s[l]`, handed to `out(s, l, share)`, from the
    /// corrections [`VoleSender::send`] sends.
    pub async fn receive(
        &mut self,
        ch: &mut Channel,
        peer: PartyId,
        len: usize,
        mut out: impl FnMut(usize, usize, u64),
    ) -> Result<()> {
        let u = self.uses;
        self.uses = u.checked_add(1).ok_or_else(|| Error::InvalidInput("vector OT: 2^32 uses of one set".into()))?;
        let scalars = self.x.len();
        if len == 0 || scalars == 0 {
            return Ok(());
        }
        let crh = Crh::new();
        let bits = self.bits;
        let mut y = Vec::new();
        let mut share = vec![0u64; len.min(LANE_CHUNK)];
        for batch in messages(scalars, len, bits) {
            let lanes = batch.iter().map(|&(_, l0, l1)| l1 - l0).sum();
            let packed = ch.recv_u64(peer, FrameKind::Material, packed_words(lanes, bits, 1)).await?;
            let mut corr = BitReader::new(&packed);
            for (s, l0, l1) in batch {
                let (n, blocks) = (l1 - l0, (l1 - l0).div_ceil(2));
                let rows = &self.t[bits * s..bits * (s + 1)];
                crh.expand(self.first + (bits * s) as u64, u, rows, 0, l0 / 2, blocks, &mut y);
                let share = &mut share[..n];
                share.fill(0);
                for e in 0..bits {
                    // c·d as a mask: no branch on the choice bit.
                    let chose = 0u64.wrapping_sub((self.x[s] >> e) & 1);
                    let pads = &y[e * blocks..(e + 1) * blocks];
                    for (i, sh) in share.iter_mut().enumerate() {
                        let v = lane(pads, i).wrapping_sub(chose & corr.pull(64 - e as u32));
                        *sh = sh.wrapping_add(v << e);
                    }
                }
                for (i, &sh) in share.iter().enumerate() {
                    out(s, l0 + i, sh);
                }
            }
        }
        Ok(())
    }
}
