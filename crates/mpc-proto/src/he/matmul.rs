//! Cross terms of a matrix product by homomorphic encryption (Cheetah's coefficient encoding).
//!
//! `Z = L·R` per group, `L` of `m×k`, `R` of `k×n`. One operand (the plan's [`Operand`]) is
//! *encrypted*: each party encrypts its share of it under its own key and sends it; the peer
//! multiplies it by its share of the other operand, in plaintext, and returns the result
//! re-randomised, masked and flooded ([`super::Response::finish`]); the owner decrypts the
//! product plus the mask, the evaluator keeps minus the mask. Both parties do both roles at
//! once, so each cross term `f(L0, R1)`, `f(L1, R0)` costs one party's encryptions and the
//! other's evaluation, and the two run side by side.
//!
//! A block of `mw×kw` of `L` is the polynomial `Σ L[i][j]·X^(i·kw + j)`, a block of `kw×nw` of
//! `R` is `Σ R[j][l]·X^(l·mw·kw + kw − 1 − j)`; when `mw·kw·nw ≤ N` their product holds
//! `Σ_j L[i][j]·R[j][l]` at `X^(l·mw·kw + i·kw + kw − 1)`, and sums over the `k` blocks add up
//! homomorphically. Costs per party: one ciphertext (256 KiB) per encrypted block, one
//! response (256 KiB + 32 bytes per needed coefficient) per output block; the block sizes are
//! chosen per product to minimise a time estimate ([`Plan::choose`]).
//!
//! An encrypted operand that is a fixed `B` (a layer's weights) is sent once: the peer keeps
//! its ciphertexts ([`Encrypted`]) and every later batch costs the responses only.

use crate::error::{Error, Result};
use crate::ids::PartyId;
use crate::prg::Prg;
use crate::transport::{Channel, FrameKind};

use super::{L as LIMBS, N, POLY_WORDS, Poly, PublicKey, Response, SecretKey, seed_from_words, seed_words};

/// Ciphertexts or responses per message (about 2 MiB).
const CHUNK: usize = 8;

/// Words of a public key on the wire (each party sends one, once a session).
pub const KEY_WORDS: usize = PublicKey::WORDS;

/// Most plaintext blocks held at once (64 MiB) and most ciphertexts of the peer's (256 MiB):
/// layouts beyond either are not chosen.
const MAX_PLAIN: usize = 256;
const MAX_ENCRYPTED: usize = 512;

/// Longest sum a product may have (bounds `|m·w|` for the noise budget: see [`super`]).
pub const MAX_K: usize = 1 << 13;

/// The sizes of `Z = L·R`: `groups` independent products of `m×k` by `k×n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Independent products (a grouped convolution's groups).
    pub groups: usize,
    /// Rows of `L` and `Z`.
    pub m: usize,
    /// Columns of `L`, rows of `R`: the length of each sum.
    pub k: usize,
    /// Columns of `R` and `Z`.
    pub n: usize,
}

/// Which operand is encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// The left operand, `L`.
    L,
    /// The right operand, `R`.
    R,
}

/// A product's layout: block sizes and the encrypted operand (public: both parties derive it
/// from the shapes alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The product's sizes.
    pub dims: Dims,
    /// Rows of `L` per block.
    pub mw: usize,
    /// Terms of the sum per block.
    pub kw: usize,
    /// Columns of `R` per block.
    pub nw: usize,
    /// The encrypted operand.
    pub enc: Operand,
}

/// Estimated costs, microseconds (calibrated on the 2-core bench host; only their ratios
/// matter, to pick a layout and a route).
const NTT_US: f64 = 420.0; // four-prime transform
const MUL_US: f64 = 200.0; // one ciphertext × plaintext product (two components)
const BYTE_US: f64 = 0.0025;

impl Plan {
    fn blocks(&self) -> (usize, usize, usize) {
        let d = self.dims;
        (d.m.div_ceil(self.mw), d.k.div_ceil(self.kw), d.n.div_ceil(self.nw))
    }

    /// Ciphertexts each party sends for its share of the encrypted operand.
    pub fn encrypted(&self) -> usize {
        let (bm, bk, bn) = self.blocks();
        self.dims.groups * bk * if self.enc == Operand::L { bm } else { bn }
    }

    /// Plaintext polynomials each party transforms.
    fn plain(&self) -> usize {
        let (bm, bk, bn) = self.blocks();
        self.dims.groups * bk * if self.enc == Operand::L { bn } else { bm }
    }

    /// Responses each party sends.
    pub fn outputs(&self) -> usize {
        let (bm, _, bn) = self.blocks();
        self.dims.groups * bm * bn
    }

    /// Bytes each party sends (without its public key: 256 KiB once a session).
    pub fn bytes(&self, cached: bool) -> u64 {
        let d = self.dims;
        let enc = if cached { 0 } else { self.encrypted() * POLY_WORDS + 4 };
        (8 * (enc + self.outputs() * POLY_WORDS + LIMBS * d.groups * d.m * d.n)) as u64
    }

    /// Estimated time of the product, µs.
    pub fn cost(&self, cached: bool) -> f64 {
        let (bm, bk, bn) = self.blocks();
        let g = self.dims.groups as f64;
        let enc = if cached { 0.0 } else { self.encrypted() as f64 * 2.0 * NTT_US };
        enc + self.plain() as f64 * NTT_US
            + g * (bm * bk * bn) as f64 * MUL_US
            + self.outputs() as f64 * 5.0 * NTT_US
            + self.bytes(cached) as f64 * BYTE_US
    }

    /// The cheapest layout for `dims` (`None` if a sum is longer than [`MAX_K`] or a
    /// dimension is empty), encrypting `only` that operand if given (a fixed operand, whose
    /// ciphertexts serve every later product). `kept`: a layout whose encrypted operand the
    /// peer already holds, costed without its encryptions.
    pub fn choose(dims: Dims, kept: Option<Plan>, only: Option<Operand>) -> Option<Plan> {
        if dims.k > MAX_K || dims.m == 0 || dims.n == 0 || dims.k == 0 || dims.groups == 0 {
            return None;
        }
        let sizes = |d: usize| {
            let mut v: Vec<usize> =
                std::iter::successors(Some(1usize), |&x| (x < d).then_some(x * 2)).map(|x| x.min(d)).collect();
            v.dedup();
            v
        };
        let mut best: Option<(f64, Plan)> = kept.filter(|p| p.dims == dims).map(|p| (p.cost(true), p));
        for &mw in &sizes(dims.m) {
            for &kw in &sizes(dims.k) {
                for &nw in &sizes(dims.n) {
                    if mw * kw * nw > N {
                        continue;
                    }
                    // Memory: the plaintext blocks of one row or column of output blocks
                    // (256 KiB each) and the peer's ciphertexts (512 KiB each) held at once.
                    if dims.k.div_ceil(kw) > MAX_PLAIN {
                        continue;
                    }
                    for enc in [Operand::L, Operand::R].into_iter().filter(|&e| only.is_none_or(|o| o == e)) {
                        let p = Plan { dims, mw, kw, nw, enc };
                        if p.encrypted() > MAX_ENCRYPTED {
                            continue;
                        }
                        let c = p.cost(false);
                        if best.is_none_or(|(b, _)| c < b) {
                            best = Some((c, p));
                        }
                    }
                }
            }
        }
        best.map(|(_, p)| p)
    }

    /// Encrypted blocks, in order: `(g, bi, bj)` of `L` or `(g, bj, bl)` of `R`.
    fn encrypted_blocks(&self) -> Vec<(usize, usize, usize)> {
        let (bm, bk, bn) = self.blocks();
        let outer = if self.enc == Operand::L { bm } else { bn };
        let mut v = Vec::with_capacity(self.encrypted());
        for g in 0..self.dims.groups {
            for o in 0..outer {
                for bj in 0..bk {
                    v.push(if self.enc == Operand::L { (g, o, bj) } else { (g, bj, o) });
                }
            }
        }
        v
    }

    /// The polynomial of `L`'s block `(bi, bj)` of group `g`.
    fn l_poly(&self, g: usize, bi: usize, bj: usize, l: Entries<'_>) -> Vec<u64> {
        let (d, mut p) = (self.dims, vec![0u64; self.mw * self.kw]);
        for i in 0..self.mw.min(d.m - bi * self.mw) {
            for j in 0..self.kw.min(d.k - bj * self.kw) {
                p[i * self.kw + j] = l(g, bi * self.mw + i, bj * self.kw + j);
            }
        }
        p
    }

    /// The polynomial of `R`'s block `(bj, bl)` of group `g`.
    fn r_poly(&self, g: usize, bj: usize, bl: usize, r: Entries<'_>) -> Vec<u64> {
        let (d, (mw, kw)) = (self.dims, (self.mw, self.kw));
        let mut p = vec![0u64; (self.nw - 1) * mw * kw + kw];
        for l in 0..self.nw.min(d.n - bl * self.nw) {
            for j in 0..kw.min(d.k - bj * kw) {
                p[l * mw * kw + kw - 1 - j] = r(g, bj * kw + j, bl * self.nw + l);
            }
        }
        p
    }

    /// The coefficients of output block `(bi, bl)` that hold `Z` entries, and those entries'
    /// `(i, l)`.
    fn outputs_of(&self, bi: usize, bl: usize) -> (Vec<usize>, Vec<(usize, usize)>) {
        let (d, (mw, kw)) = (self.dims, (self.mw, self.kw));
        let (mut at, mut il) = (vec![], vec![]);
        for l in 0..self.nw.min(d.n - bl * self.nw) {
            for i in 0..mw.min(d.m - bi * mw) {
                at.push(l * mw * kw + i * kw + kw - 1);
                il.push((bi * mw + i, bl * self.nw + l));
            }
        }
        (at, il)
    }
}

/// The peer's ciphertexts of its share of an encrypted operand, in the NTT domain, for one
/// plan; kept for a fixed `B`. `Debug` prints the count only.
pub struct Encrypted {
    plan: Plan,
    c: Vec<(Poly, Poly)>,
}

impl Encrypted {
    /// The plan they were made for.
    pub fn plan(&self) -> Plan {
        self.plan
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.c.len() * 2 * POLY_WORDS * 8
    }
}

impl std::fmt::Debug for Encrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encrypted({} ciphertexts)", self.c.len())
    }
}

/// One party's keys and the peer's public key (exchanged on first use).
pub struct Keys {
    sk: SecretKey,
    pk: PublicKey,
    peer: Option<PublicKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("he::Keys(..)")
    }
}

impl Keys {
    /// A fresh key pair.
    pub fn generate(rng: &mut Prg) -> Self {
        let (sk, pk) = SecretKey::generate(rng);
        Self { sk, pk, peer: None }
    }
}

/// One party's share of an operand: entry `(group, row, column)`.
pub type Entries<'a> = &'a (dyn Fn(usize, usize, usize) -> u64 + Sync);

/// Where the cross terms' shares go: `(group, i, l, value)`, added to `Z[group][i][l]`.
pub type Sink<'a> = &'a mut (dyn FnMut(usize, usize, usize, u64) + Send);

/// An output block awaiting the peer's response: its group, its coefficients, their `(i, l)`.
type Pending = (usize, Vec<usize>, Vec<(usize, usize)>);

fn malformed(peer: PartyId, what: &str) -> Error {
    Error::Desync { peer, detail: format!("HE: malformed {what}") }
}

/// This party's shares' side of the cross terms of `Z = L·R` under `plan`: `enc(g, ·, ·)` is
/// its share of the encrypted operand, `plain(g, ·, ·)` of the other; the cross terms' shares
/// are handed to `out(g, i, l, v)` (to be added to `Z[g][i][l]`). With `kept`, the peer's
/// ciphertexts are taken from it if made for this plan, and stored there otherwise.
#[allow(clippy::too_many_arguments)]
pub async fn cross_terms(
    keys: &mut Keys,
    ch: &mut Channel,
    peer: PartyId,
    rng: &mut Prg,
    plan: &Plan,
    enc: Entries<'_>,
    plain: Entries<'_>,
    kept: Option<&mut Option<Encrypted>>,
    out: Sink<'_>,
) -> Result<()> {
    if plan.dims.k > MAX_K || plan.mw * plan.kw * plan.nw > N {
        return Err(Error::InvalidInput(format!("HE matrix product: layout {plan:?} out of bounds")));
    }
    if keys.peer.is_none() {
        let w = ch.exchange_u64(peer, FrameKind::Material, &keys.pk.to_words()).await?;
        keys.peer = Some(PublicKey::from_words(&w).ok_or_else(|| malformed(peer, "public key"))?);
    }
    let mut fresh = None;
    let theirs = match kept {
        Some(slot) if slot.as_ref().is_some_and(|e| e.plan == *plan) => slot.as_ref().expect("checked"),
        slot => {
            let e = exchange_encryptions(keys, ch, peer, rng, plan, enc).await?;
            match slot {
                Some(slot) => &*slot.insert(e),
                None => &*fresh.insert(e),
            }
        }
    };
    let (bm, bk, bn) = plan.blocks();
    let index = |g: usize, bi: usize, bj: usize, bl: usize| {
        g * bk * if plan.enc == Operand::L { bm } else { bn } + bk * if plan.enc == Operand::L { bi } else { bl } + bj
    };
    let pk = keys.peer.as_ref().expect("exchanged above");
    // Output blocks in order, grouped by the plaintext blocks they share.
    let mut pending: Vec<Pending> = vec![];
    let mut wire = Vec::new();
    let mut plains: Vec<Poly> = Vec::with_capacity(bk);
    let (outer, inner) = if plan.enc == Operand::L { (bn, bm) } else { (bm, bn) };
    for g in 0..plan.dims.groups {
        for o in 0..outer {
            plains.clear();
            for bj in 0..bk {
                let coeffs =
                    if plan.enc == Operand::L { plan.r_poly(g, bj, o, plain) } else { plan.l_poly(g, o, bj, plain) };
                let mut p = Poly::lift(&coeffs);
                p.ntt();
                plains.push(p);
            }
            for x in 0..inner {
                let (bi, bl) = if plan.enc == Operand::L { (x, o) } else { (o, x) };
                let (mut acc0, mut acc1) = (Poly::zero(), Poly::zero());
                for (bj, p) in plains.iter().enumerate() {
                    let (c0, c1) = &theirs.c[index(g, bi, bj, bl)];
                    acc0.mul_add(c0, p);
                    acc1.mul_add(c1, p);
                }
                let (at, il) = plan.outputs_of(bi, bl);
                let mut mask = vec![0u64; at.len()];
                rng.fill(&mut mask);
                for (&(i, l), &r) in il.iter().zip(&mask) {
                    out(g, i, l, r.wrapping_neg());
                }
                Response::finish(acc0, acc1, pk, &at, &mask, rng).to_words(&mut wire);
                pending.push((g, at, il));
                if pending.len() == CHUNK {
                    swap_responses(keys, ch, peer, &mut pending, &mut wire, out).await?;
                }
            }
        }
    }
    swap_responses(keys, ch, peer, &mut pending, &mut wire, out).await
}

/// Sends this party's encryptions of its share of the encrypted operand and receives the
/// peer's (NTT domain).
async fn exchange_encryptions(
    keys: &Keys,
    ch: &mut Channel,
    peer: PartyId,
    rng: &mut Prg,
    plan: &Plan,
    enc: Entries<'_>,
) -> Result<Encrypted> {
    let seed = rng.next_seed();
    let theirs = ch.exchange_u64(peer, FrameKind::Material, &seed_words(&seed)).await?;
    let their_seed = seed_from_words(&theirs);
    let blocks = plan.encrypted_blocks();
    let mut c = Vec::with_capacity(blocks.len());
    for (chunk_no, chunk) in blocks.chunks(CHUNK).enumerate() {
        let mut wire = Vec::with_capacity(chunk.len() * POLY_WORDS);
        for (k, &(g, x, y)) in chunk.iter().enumerate() {
            let coeffs = if plan.enc == Operand::L { plan.l_poly(g, x, y, enc) } else { plan.r_poly(g, x, y, enc) };
            let index = (chunk_no * CHUNK + k) as u64;
            wire.extend_from_slice(keys.sk.encrypt(&coeffs, &seed, index, rng).words());
        }
        let got = ch.exchange_u64(peer, FrameKind::Material, &wire).await?;
        for (k, w) in got.chunks_exact(POLY_WORDS).enumerate() {
            let mut c0 = Poly::from_words(w.to_vec()).ok_or_else(|| malformed(peer, "ciphertext"))?;
            c0.ntt();
            c.push((c0, Poly::uniform(&their_seed, (chunk_no * CHUNK + k) as u64)));
        }
    }
    Ok(Encrypted { plan: *plan, c })
}

/// Swaps the pending responses with the peer's (the same blocks, of the same public sizes),
/// decrypts the peer's and hands the values to `out`.
async fn swap_responses(
    keys: &Keys,
    ch: &mut Channel,
    peer: PartyId,
    pending: &mut Vec<Pending>,
    wire: &mut Vec<u64>,
    out: Sink<'_>,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let got = ch.exchange_u64(peer, FrameKind::Material, wire).await?;
    wire.clear();
    let mut pos = 0;
    for (g, at, il) in pending.drain(..) {
        let len = Response::words(at.len());
        let r = Response::from_words(&got[pos..pos + len], at.len()).ok_or_else(|| malformed(peer, "response"))?;
        pos += len;
        for (&(i, l), v) in il.iter().zip(keys.sk.decrypt(&r, &at)) {
            out(g, i, l, v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matmul(d: Dims, l: &[u64], r: &[u64]) -> Vec<u64> {
        let mut z = vec![0u64; d.groups * d.m * d.n];
        for g in 0..d.groups {
            for i in 0..d.m {
                for j in 0..d.k {
                    for c in 0..d.n {
                        let v = l[(g * d.m + i) * d.k + j].wrapping_mul(r[(g * d.k + j) * d.n + c]);
                        z[(g * d.m + i) * d.n + c] = z[(g * d.m + i) * d.n + c].wrapping_add(v);
                    }
                }
            }
        }
        z
    }

    fn shares(n: usize, rng: &mut Prg) -> [Vec<u64>; 2] {
        let a: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
        let b: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
        [a, b]
    }

    /// Both parties' cross terms add up to `L0·R1 + L1·R0` exactly, for every layout (uneven
    /// edge blocks, both encrypted operands, groups), and a kept encryption serves again.
    #[test]
    fn cross_terms_add_up_to_the_cross_products() {
        let dims = [
            Dims { groups: 1, m: 3, k: 70, n: 5 },
            Dims { groups: 2, m: 9, k: 4, n: 33 },
            Dims { groups: 1, m: 40, k: 17, n: 13 },
        ];
        for d in dims {
            for (mw, kw, nw, enc) in [(2, 16, 4, Operand::L), (4, 4, 16, Operand::R), (1, 64, 1, Operand::R)] {
                let plan = Plan { dims: d, mw, kw, nw, enc };
                let mut rng = Prg::from_u64(d.m as u64 * 31 + kw as u64);
                let ls = shares(d.groups * d.m * d.k, &mut rng);
                let rs = shares(d.groups * d.k * d.n, &mut rng);
                let want: Vec<u64> = matmul(d, &ls[0], &rs[1])
                    .iter()
                    .zip(matmul(d, &ls[1], &rs[0]))
                    .map(|(x, y)| x.wrapping_add(y))
                    .collect();
                let run = |me: usize, mut ch: Channel| {
                    let (ls, rs) = (ls[me].clone(), rs[me].clone());
                    futures::executor::block_on(async move {
                        let mut rng = Prg::from_u64(100 + me as u64);
                        let mut keys = Keys::generate(&mut rng);
                        let peer = PartyId(1 - me as u8);
                        let lf = move |g: usize, i: usize, j: usize| ls[(g * d.m + i) * d.k + j];
                        let rf = move |g: usize, j: usize, c: usize| rs[(g * d.k + j) * d.n + c];
                        let (e, p): (Entries<'_>, Entries<'_>) =
                            if enc == Operand::L { (&lf, &rf) } else { (&rf, &lf) };
                        let mut kept = None;
                        let mut zs = vec![];
                        for _ in 0..2 {
                            let mut z = vec![0u64; d.groups * d.m * d.n];
                            let mut out = |g: usize, i: usize, l: usize, v: u64| {
                                let s = &mut z[(g * d.m + i) * d.n + l];
                                *s = s.wrapping_add(v);
                            };
                            cross_terms(&mut keys, &mut ch, peer, &mut rng, &plan, e, p, Some(&mut kept), &mut out)
                                .await
                                .unwrap();
                            zs.push(z);
                        }
                        zs
                    })
                };
                let (c0, c1) = crate::testing::channel_pair(crate::ids::SessionId(7));
                #[allow(clippy::disallowed_methods)] // parties as threads, as in crate::testing
                let (z0, z1) = std::thread::scope(|s| {
                    let h0 = s.spawn(|| run(0, c0));
                    let h1 = s.spawn(|| run(1, c1));
                    (h0.join().unwrap(), h1.join().unwrap())
                });
                for u in 0..2 {
                    let got: Vec<u64> = z0[u].iter().zip(&z1[u]).map(|(x, y)| x.wrapping_add(*y)).collect();
                    assert_eq!(got, want, "{plan:?}, use {u}");
                }
            }
        }
    }

    #[test]
    fn the_chosen_layout_fits_and_prefers_kept_encryptions() {
        let d = Dims { groups: 1, m: 128, k: 784, n: 128 };
        let p = Plan::choose(d, None, None).unwrap();
        assert!(p.mw * p.kw * p.nw <= N);
        // A kept layout costs no encryptions, so it wins over the fresh optimum.
        let kept = Plan { dims: d, mw: 128, kw: 1, nw: 64, enc: Operand::R };
        assert!(kept.cost(true) < p.cost(false));
        assert_eq!(Plan::choose(d, Some(kept), None), Some(kept));
        assert_eq!(Plan::choose(d, None, Some(Operand::L)).unwrap().enc, Operand::L);
        assert_eq!(Plan::choose(Dims { k: MAX_K + 1, ..d }, None, None), None);
    }
}
