//! Correlated OT extension (Ishai–Kilian–Nissim–Petrank, semi-honest): after 128 base OTs, any
//! number of correlated OTs for 128 bits each sent by the receiver, and symmetric crypto only.
//!
//! The extension sender holds a secret `Δ ∈ {0,1}^128` and plays the base OTs' *receiver* with
//! the bits of `Δ` as choices; the extension receiver plays their sender, keeping both keys
//! `k_i^0, k_i^1` per column `i`. For `m` OTs with choice bits `r`, the receiver expands
//! `t^i = G(k_i^0)` and sends `u^i = t^i ⊕ G(k_i^1) ⊕ r` (column by column, `128·m` bits); the
//! sender forms `q^i = G(k_i^{Δ_i}) ⊕ Δ_i·u^i = t^i ⊕ Δ_i·r`. Transposed, row `j` reads
//! `q_j = t_j ⊕ r_j·Δ`: a correlated OT per row, which [`super::triples`] turns into additive
//! correlations over Z_2^64. `G` is this crate's AES-CTR [`Prg`]; the streams continue from
//! one extension to the next, so every batch uses fresh pseudorandomness.

use subtle::Choice;

use crate::error::{Error, Result};
use crate::ids::PartyId;
use crate::prg::Prg;
use crate::transport::{Channel, FrameKind};

use super::base;

/// Number of base OTs (the computational security parameter).
pub const KAPPA: usize = 128;

/// The PRG stream of a base-OT key.
const STREAM: u64 = 0x6f74_6578; // "otex"

/// Transposes a 128×128 bit matrix in place: bit `c` of `m[r]` becomes bit `r` of `m[c]`.
/// Seven passes of masked swaps (each exchanges the off-diagonal blocks of a size), no branch on
/// the data.
pub(crate) fn transpose128(m: &mut [u128]) {
    assert_eq!(m.len(), 128, "transpose128: 128 rows");
    let mut j = 64;
    // Bits whose index has bit `j` clear, i.e. the low half of every 2j-bit group.
    let mut mask: u128 = u128::MAX >> 64;
    while j != 0 {
        let mut k = 0;
        while k < 128 {
            if k & j == 0 {
                let t = ((m[k] >> j) ^ m[k + j]) & mask;
                m[k] ^= t << j;
                m[k + j] ^= t;
            }
            k += 1;
        }
        j >>= 1;
        mask ^= mask << j;
    }
}

/// The extension sender's state (P0 in the two-party mode).
pub struct CotSender {
    delta: u128,
    cols: Vec<Prg>,
    /// OTs made so far (the tweak of the next one).
    made: u64,
    /// An extension failed part-way: the column streams may be out of step with the peer's.
    poisoned: bool,
}

impl std::fmt::Debug for CotSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CotSender").field("made", &self.made).finish_non_exhaustive()
    }
}

/// The extension receiver's state (P1 in the two-party mode).
pub struct CotReceiver {
    cols: Vec<[Prg; 2]>,
    made: u64,
    poisoned: bool,
}

impl std::fmt::Debug for CotReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CotReceiver").field("made", &self.made).finish_non_exhaustive()
    }
}

impl CotSender {
    /// Runs the 128 base OTs with `peer` (as their receiver). One round.
    pub async fn setup(ch: &mut Channel, peer: PartyId, rng: &mut impl rand_core::CryptoRng) -> Result<Self> {
        let mut d = [0u8; 16];
        rng.fill_bytes(&mut d);
        let delta = u128::from_le_bytes(d);
        let choices: Vec<Choice> = (0..KAPPA).map(|i| Choice::from(((delta >> i) & 1) as u8)).collect();
        let keys = base::receive(ch, peer, &choices, rng).await?;
        Ok(Self { delta, cols: keys.iter().map(|k| Prg::new(k, STREAM)).collect(), made: 0, poisoned: false })
    }

    /// The correlation `Δ`.
    pub(crate) fn delta(&self) -> u128 {
        self.delta
    }

    /// Marks the state unusable: what used the last rows failed before the peer got its part.
    pub(crate) fn poison(&mut self) {
        self.poisoned = true;
    }

    /// `m` more correlated OTs (`m` a multiple of 128): the rows `q_j`, where the receiver holds
    /// `t_j = q_j ⊕ r_j·Δ`; and the tweak (global index) of the first. Receives `128·m` bits.
    /// After a failed extension (here or in what used its rows) every later call fails with
    /// [`Error::Poisoned`]: the streams may be out of step with the peer's, and OTs made from
    /// them would neither be correct nor secure. Run the base OTs again.
    pub async fn extend(&mut self, ch: &mut Channel, peer: PartyId, m: usize) -> Result<(Vec<u128>, u64)> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if !m.is_multiple_of(KAPPA) {
            return Err(Error::InvalidInput(format!("OT extension: {m} OTs, not a multiple of {KAPPA}")));
        }
        let words = m / 64;
        self.poisoned = true;
        let u = ch.recv_u64(peer, FrameKind::Material, KAPPA * words).await?;
        let mut q = vec![0u128; m];
        let mut col = vec![0u64; words];
        for (i, prg) in self.cols.iter_mut().enumerate() {
            prg.fill(&mut col);
            let mask = 0u64.wrapping_sub(((self.delta >> i) & 1) as u64);
            let u = &u[i * words..(i + 1) * words];
            for b in 0..m / KAPPA {
                let lo = col[2 * b] ^ (u[2 * b] & mask);
                let hi = col[2 * b + 1] ^ (u[2 * b + 1] & mask);
                q[b * KAPPA + i] = u128::from(lo) | (u128::from(hi) << 64);
            }
        }
        for block in q.chunks_exact_mut(KAPPA) {
            transpose128(block);
        }
        let first = self.made;
        self.made += m as u64;
        self.poisoned = false;
        Ok((q, first))
    }
}

impl CotReceiver {
    /// Marks the state unusable, as [`CotSender::poison`].
    pub(crate) fn poison(&mut self) {
        self.poisoned = true;
    }

    /// Runs the 128 base OTs with `peer` (as their sender). One round.
    pub async fn setup(ch: &mut Channel, peer: PartyId, rng: &mut impl rand_core::CryptoRng) -> Result<Self> {
        let keys = base::send(ch, peer, KAPPA, rng).await?;
        Ok(Self {
            cols: keys.iter().map(|[k0, k1]| [Prg::new(k0, STREAM), Prg::new(k1, STREAM)]).collect(),
            made: 0,
            poisoned: false,
        })
    }

    /// Correlated OTs with the choice bits `choices` (bit `j % 64` of word `j / 64` is OT `j`'s;
    /// a multiple of 128 bits): the rows `t_j`, and the tweak of the first. Sends `128·m` bits.
    /// Poisoned after a failure, as [`CotSender::extend`].
    pub async fn extend(&mut self, ch: &mut Channel, peer: PartyId, choices: &[u64]) -> Result<(Vec<u128>, u64)> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let words = choices.len();
        let m = 64 * words;
        if !m.is_multiple_of(KAPPA) {
            return Err(Error::InvalidInput(format!("OT extension: {m} choice bits, not a multiple of {KAPPA}")));
        }
        self.poisoned = true;
        let mut u = vec![0u64; KAPPA * words];
        let mut t = vec![0u128; m];
        let mut col = vec![0u64; words];
        for (i, [g0, g1]) in self.cols.iter_mut().enumerate() {
            g0.fill(&mut col);
            let ui = &mut u[i * words..(i + 1) * words];
            g1.fill(ui);
            for ((u, &t), &r) in ui.iter_mut().zip(&col).zip(choices) {
                *u ^= t ^ r;
            }
            for b in 0..m / KAPPA {
                t[b * KAPPA + i] = u128::from(col[2 * b]) | (u128::from(col[2 * b + 1]) << 64);
            }
        }
        ch.send_u64(peer, FrameKind::Material, &u).await?;
        for block in t.chunks_exact_mut(KAPPA) {
            transpose128(block);
        }
        let first = self.made;
        self.made += m as u64;
        self.poisoned = false;
        Ok((t, first))
    }
}
