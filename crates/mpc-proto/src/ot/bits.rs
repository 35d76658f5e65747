//! Boolean AND triples from random OT: the AND gates of a two-party comparison circuit.
//!
//! A triple is XOR-shared bits `(x, y, z = x ∧ y)`. `z = x0y0 ⊕ x1y1 ⊕ x0y1 ⊕ x1y0`; each cross
//! term is one random OT, both in the IKNP direction (P1 chooses): from the rows P0 takes
//! `m0 = H(j, q_j)` and `m1 = H(j, q_j ⊕ Δ)` (low bits), P1 `m_r = H(j, t_j)`. Then
//! `m0 ⊕ m_r = r·(m0 ⊕ m1)`: XOR shares of the product of P1's choice `r` and a bit P0 gets
//! from the OT, `m0 ⊕ m1`, uniform to P1. For `x0·y1`, P0's `x0` is that bit of OT `2t` and P1
//! chooses with `y1`; for `x1·y0`, P0's `y0` is that bit of OT `2t+1`, P1 chooses with `x1`.
//! Nothing is sent beyond the extension itself: **one message, 32 bytes per triple** (two OT
//! columns of 128 bits).
//!
//! Bits are packed: bit `t % 64` of word `t / 64` is triple `t`'s.

use crate::error::Result;
use crate::ids::PartyId;
use crate::prg::{Prg, Seed};
use crate::transport::Channel;

use super::iknp::{CotReceiver, CotSender};
use super::triples::Crh;

/// OTs per extension (two per triple): 2^20, 16 MiB of rows.
const OTS_PER_BATCH: usize = 1 << 20;

/// One party's shares of `n` AND triples, packed (see the [module docs](self)). `Debug`
/// prints the count only.
#[derive(Clone)]
pub struct BitTriples {
    /// Number of triples.
    pub n: usize,
    /// Shares of `x`.
    pub x: Vec<u64>,
    /// Shares of `y`.
    pub y: Vec<u64>,
    /// Shares of `z = x ∧ y`.
    pub z: Vec<u64>,
}

impl std::fmt::Debug for BitTriples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BitTriples({} triples)", self.n)
    }
}

/// One party's shares of `n` mux triples: a random bit `b`, shared both ways — XOR (`bits`,
/// packed as [`BitTriples`]) and additively (`b`) — and `c = a·b` for a random ring element
/// `a`. One triple turns a XOR-shared bit `m` into an additive share and multiplies a shared
/// `y` by it with one opening (`m ⊕ b`, `y − a`). Made by OT in the two-party mode: two OTs
/// and 24 bytes of corrections, 56 bytes in all. `Debug` prints the count only.
#[derive(Clone)]
pub struct MuxTriples {
    /// Number of triples.
    pub n: usize,
    /// XOR shares of the bits `b`, packed.
    pub bits: Vec<u64>,
    /// Additive shares of `b`.
    pub b: Vec<u64>,
    /// Additive shares of `a`.
    pub a: Vec<u64>,
    /// Additive shares of `c = a·b`.
    pub c: Vec<u64>,
}

impl std::fmt::Debug for MuxTriples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MuxTriples({} triples)", self.n)
    }
}

impl BitTriples {
    fn zeros(n: usize) -> Self {
        let w = n.div_ceil(64);
        Self { n, x: vec![0; w], y: vec![0; w], z: vec![0; w] }
    }

    /// Sets triple `t`'s bits.
    fn set(&mut self, t: usize, x: u64, y: u64, z: u64) {
        let (w, s) = (t / 64, t % 64);
        self.x[w] |= (x & 1) << s;
        self.y[w] |= (y & 1) << s;
        self.z[w] |= (z & 1) << s;
    }
}

/// P0's side (the OT sender) of `n` AND triples with `peer`: one message from the peer per
/// 2^19 triples.
pub async fn bit_triples_sender(cot: &mut CotSender, ch: &mut Channel, peer: PartyId, n: usize) -> Result<BitTriples> {
    let mut out = BitTriples::zeros(n);
    let crh = Crh::new();
    let delta = cot.delta();
    for start in (0..n).step_by(OTS_PER_BATCH / 2) {
        let len = (OTS_PER_BATCH / 2).min(n - start);
        let (q, first) = cot.extend(ch, peer, (2 * len).next_multiple_of(128)).await?;
        let (mut h0, mut h1) = (vec![0u64; q.len()], vec![0u64; q.len()]);
        crh.hash(first, &q, 0, &mut h0);
        crh.hash(first, &q, delta, &mut h1);
        for t in 0..len {
            let (j, k) = (2 * t, 2 * t + 1);
            // x0 = the bit OT j gives P0, u0 its share of x0·y1; likewise y0, v0 from OT k.
            let (x0, u0) = (h0[j] ^ h1[j], h0[j]);
            let (y0, v0) = (h0[k] ^ h1[k], h0[k]);
            out.set(start + t, x0, y0, (x0 & y0) ^ u0 ^ v0);
        }
    }
    Ok(out)
}

/// P1's side (the OT receiver) of `n` AND triples with `peer`; `rng` draws its `x1`, `y1`.
pub async fn bit_triples_receiver(
    cot: &mut CotReceiver,
    ch: &mut Channel,
    peer: PartyId,
    n: usize,
    rng: &mut impl rand_core::CryptoRng,
) -> Result<BitTriples> {
    let mut out = BitTriples::zeros(n);
    let mut prg = Prg::new(&Seed::random(rng), 0);
    let crh = Crh::new();
    for start in (0..n).step_by(OTS_PER_BATCH / 2) {
        let len = (OTS_PER_BATCH / 2).min(n - start);
        let m = (2 * len).next_multiple_of(128);
        let (mut x1, mut y1) = (vec![0u64; len.div_ceil(64)], vec![0u64; len.div_ceil(64)]);
        prg.fill(&mut x1);
        prg.fill(&mut y1);
        let bit = |v: &[u64], t: usize| (v[t / 64] >> (t % 64)) & 1;
        // OT 2t chooses with y1[t] (for x0·y1), OT 2t+1 with x1[t] (for x1·y0).
        let mut choices = vec![0u64; m / 64];
        for t in 0..len {
            choices[(2 * t) / 64] |= bit(&y1, t) << ((2 * t) % 64);
            choices[(2 * t + 1) / 64] |= bit(&x1, t) << ((2 * t + 1) % 64);
        }
        let (rows, first) = cot.extend(ch, peer, &choices).await?;
        let mut h = vec![0u64; rows.len()];
        crh.hash(first, &rows, 0, &mut h);
        for t in 0..len {
            let (x, y) = (bit(&x1, t), bit(&y1, t));
            out.set(start + t, x, y, (x & y) ^ h[2 * t] ^ h[2 * t + 1]);
        }
    }
    Ok(out)
}
