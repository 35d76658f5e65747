//! Ring-LWE encryption of polynomials over `Z_2^64`, for the two-party mode's linear layers
//! (the Cheetah / SecureML "HE of one party's input" route, [`matmul`]).
//!
//! The scheme is BGV-style with plaintext modulus `t = 2^64` (the ring of shares) and the message
//! in the low bits: a ciphertext `(c0, c1)` of `m` under the secret key `s` satisfies
//! `c0 + c1·s = m + t·e (mod Q)` for a small `e`. Polynomials live in `Z_Q[X]/(X^N + 1)` with
//! `N = 8192` and `Q` the product of four 54-bit NTT primes (216 bits), kept as residues (RNS).
//!
//! What the two-party protocol needs, and only that:
//!
//! * [`SecretKey::encrypt`]: symmetric encryption by the key's owner; `c1` is drawn from a
//!   public seed (so only `c0` crosses the wire: `N·4` words, 256 KiB).
//! * The evaluator's plaintext × ciphertext products in the NTT domain, sums of them, and
//!   [`Response::finish`]: re-randomisation with a fresh encryption of zero under the owner's
//!   [`PublicKey`], an additive mask (the evaluator's share), and **noise flooding**: `t·f` with
//!   `f` uniform in `±2^147`, which hides the product's carries and noise (at most about
//!   `2^81·t` at the sizes the protocol allows) up to a statistical distance of about `2^-66`
//!   per coefficient. Only the coefficients the owner needs are sent with `c0`.
//! * [`SecretKey::decrypt`]: the centred value of `c0 + c1·s` modulo `t`. Correctness needs
//!   `|m·w| + t·|noise| + t·|f| < Q/4`: with `|m·w| ≤ 2^141` (sums of at most 2^14 products of
//!   64-bit shares) and `t·|f| ≤ 2^211` this holds with room to spare.
//!
//! Security: RLWE with `N = 8192`, `log2 Q = 216 ≤ 218` (the HomomorphicEncryption.org
//! standard's bound for 128-bit classical security with a ternary secret), secret and the
//! zero-encryption's `u` ternary (centred binomial, η = 1), errors centred binomial η = 21
//! (σ ≈ 3.2). Semi-honest parties. No branch or memory access depends on a secret: reductions
//! select with masks, sampling is arithmetic on random words (rejection only on the public `c1`).

pub mod matmul;

use std::sync::OnceLock;

use crate::prg::{Prg, Seed};

/// Ring degree.
pub const N: usize = 8192;
/// RNS primes (each ≡ 1 mod 2N, below 2^54).
pub const PRIMES: [u64; 4] = [18014398508400641, 18014398508138497, 18014398507892737, 18014398507794433];
/// Number of RNS primes.
pub const L: usize = PRIMES.len();
/// Words of one polynomial in RNS form.
pub const POLY_WORDS: usize = N * L;
/// Flooding bound: `f` uniform in `[−2^FLOOD_BITS, 2^FLOOD_BITS)`.
const FLOOD_BITS: u32 = 147;
/// Stream of the public-key polynomial `p1` under its seed (ciphertexts use their index).
const PK_STREAM: u64 = u64::MAX;

/// One prime's constants and NTT tables.
struct Prime {
    p: u64,
    /// `floor(2^108 / p)`, for Barrett reduction of products.
    barrett: u64,
    /// `2^64 mod p` (the plaintext modulus).
    t: u64,
    /// Bit-reversed powers of a primitive 2N-th root `ψ`, and of `ψ^-1`, with Shoup factors.
    psi: Vec<(u64, u64)>,
    ipsi: Vec<(u64, u64)>,
    n_inv: (u64, u64),
    /// `t^2`, `t^3` and `2^FLOOD_BITS·t` mod p (flooding).
    t2: u64,
    t3: u64,
    flood_top: u64,
}

/// `r mod p` for `r < 2p < 2^63`, by mask (no branch: the values are secret).
#[inline]
fn csub(r: u64, p: u64) -> u64 {
    let d = r.wrapping_sub(p);
    d.wrapping_add(p & 0u64.wrapping_sub(d >> 63))
}

impl Prime {
    fn new(p: u64) -> Self {
        let barrett = ((1u128 << 108) / u128::from(p)) as u64;
        let t = ((1u128 << 64) % u128::from(p)) as u64;
        let mut me = Self { p, barrett, t, psi: vec![], ipsi: vec![], n_inv: (0, 0), t2: 0, t3: 0, flood_top: 0 };
        me.t2 = me.mul(t, t);
        me.t3 = me.mul(me.t2, t);
        me.flood_top = me.mul(me.pow(2, u64::from(FLOOD_BITS)), t);
        // A primitive 2N-th root: g^((p−1)/2N) with ψ^N = −1.
        let psi = (2u64..)
            .map(|g| me.pow(g, (p - 1) / (2 * N as u64)))
            .find(|&c| me.pow(c, N as u64) == p - 1)
            .expect("p ≡ 1 mod 2N has a primitive 2N-th root");
        let ipsi = me.pow(psi, 2 * N as u64 - 1);
        let bits = N.trailing_zeros();
        let table = |me: &Self, root: u64| -> Vec<(u64, u64)> {
            (0..N)
                .map(|k| {
                    let e = (k as u32).reverse_bits() >> (32 - bits);
                    me.shoup(me.pow(root, u64::from(e)))
                })
                .collect()
        };
        me.psi = table(&me, psi);
        me.ipsi = table(&me, ipsi);
        me.n_inv = me.shoup(me.pow(N as u64, p - 2));
        me
    }

    /// `x mod p` for `x < 2^108` (Barrett: the estimate is at most 2 short).
    #[inline]
    fn reduce(&self, x: u128) -> u64 {
        let q = ((((x >> 53) as u64) as u128 * u128::from(self.barrett)) >> 55) as u64;
        let r = (x as u64).wrapping_sub(q.wrapping_mul(self.p));
        csub(csub(r, self.p), self.p)
    }

    #[inline]
    fn mul(&self, a: u64, b: u64) -> u64 {
        self.reduce(u128::from(a) * u128::from(b))
    }

    #[inline]
    fn add(&self, a: u64, b: u64) -> u64 {
        csub(a + b, self.p)
    }

    #[inline]
    fn sub(&self, a: u64, b: u64) -> u64 {
        csub(a + self.p - b, self.p)
    }

    fn pow(&self, mut b: u64, mut e: u64) -> u64 {
        let mut r = 1;
        while e > 0 {
            if e & 1 == 1 {
                r = self.mul(r, b);
            }
            b = self.mul(b, b);
            e >>= 1;
        }
        r
    }

    fn shoup(&self, w: u64) -> (u64, u64) {
        (w, ((u128::from(w) << 64) / u128::from(self.p)) as u64)
    }

    /// `x·w mod p` for any `x < 2^64`, `w < p` with its Shoup factor.
    #[inline]
    fn mul_shoup(&self, x: u64, (w, ws): (u64, u64)) -> u64 {
        let q = ((u128::from(x) * u128::from(ws)) >> 64) as u64;
        csub(x.wrapping_mul(w).wrapping_sub(q.wrapping_mul(self.p)), self.p)
    }

    /// A ring element (centred: `w` read as an `i64`) modulo `p`.
    #[inline]
    fn lift(&self, w: u64) -> u64 {
        let r = self.reduce(u128::from(w));
        let neg = 0u64.wrapping_sub(w >> 63);
        self.sub(r, self.t & neg)
    }

    /// A small signed value modulo `p`.
    #[inline]
    fn small(&self, v: i64) -> u64 {
        (v as u64).wrapping_add(self.p & ((v >> 63) as u64))
    }

    /// Negacyclic NTT in place (Cooley–Tukey, bit-reversed output).
    fn forward(&self, a: &mut [u64]) {
        let (mut m, mut len) = (1, N / 2);
        while m < N {
            for i in 0..m {
                let w = self.psi[m + i];
                let (lo, hi) = a[2 * i * len..2 * (i + 1) * len].split_at_mut(len);
                for (x, y) in lo.iter_mut().zip(hi) {
                    let (u, v) = (*x, self.mul_shoup(*y, w));
                    *x = self.add(u, v);
                    *y = self.sub(u, v);
                }
            }
            m *= 2;
            len /= 2;
        }
    }

    /// Inverse of [`Prime::forward`] (Gentleman–Sande), including the `1/N`.
    fn inverse(&self, a: &mut [u64]) {
        let (mut m, mut len) = (N, 1);
        while m > 1 {
            let h = m / 2;
            for i in 0..h {
                let w = self.ipsi[h + i];
                let (lo, hi) = a[2 * i * len..2 * (i + 1) * len].split_at_mut(len);
                for (x, y) in lo.iter_mut().zip(hi) {
                    let (u, v) = (*x, *y);
                    *x = self.add(u, v);
                    *y = self.mul_shoup(self.sub(u, v), w);
                }
            }
            len *= 2;
            m = h;
        }
        a.iter_mut().for_each(|x| *x = self.mul_shoup(*x, self.n_inv));
    }
}

fn primes() -> &'static [Prime; L] {
    static P: OnceLock<[Prime; L]> = OnceLock::new();
    P.get_or_init(|| PRIMES.map(Prime::new))
}

/// CRT constants: `y_i = x_i·(Q/q_i)^-1 mod q_i`; `x = Σ y_i·(Q/q_i) − v·Q`.
struct Crt {
    inv: [(u64, u64); L],
    /// `Q/q_i mod 2^64`, `Q mod 2^64`.
    q_over: [u64; L],
    q: u64,
}

fn crt() -> &'static Crt {
    static C: OnceLock<Crt> = OnceLock::new();
    C.get_or_init(|| {
        let ps = primes();
        let inv = std::array::from_fn(|i| {
            let pr = &ps[i];
            let rest = (0..L).filter(|&j| j != i).fold(1, |acc, j| pr.mul(acc, PRIMES[j] % pr.p));
            pr.shoup(pr.pow(rest, pr.p - 2))
        });
        let q_over = std::array::from_fn(|i| (0..L).filter(|&j| j != i).fold(1u64, |a, j| a.wrapping_mul(PRIMES[j])));
        Crt { inv, q_over, q: PRIMES.iter().fold(1u64, |a, &p| a.wrapping_mul(p)) }
    })
}

/// The centred value modulo `2^64` of the residues `x[i]` (valid for `|x| < Q/4`).
fn decode(x: [u64; L]) -> u64 {
    let c = crt();
    let ps = primes();
    let (mut acc, mut frac) = (0u64, 0f64);
    for i in 0..L {
        let y = ps[i].mul_shoup(x[i], c.inv[i]);
        acc = acc.wrapping_add(y.wrapping_mul(c.q_over[i]));
        frac += y as f64 / PRIMES[i] as f64;
    }
    acc.wrapping_sub((frac.round() as u64).wrapping_mul(c.q))
}

/// A polynomial in RNS form: `L` blocks of `N` residues (coefficients, or NTT values).
#[derive(Clone)]
pub struct Poly(Vec<u64>);

impl Poly {
    fn zero() -> Self {
        Self(vec![0; POLY_WORDS])
    }

    /// The ring elements `m` (at most `N`; centred lift) as a polynomial.
    pub fn lift(m: &[u64]) -> Self {
        assert!(m.len() <= N, "at most N coefficients");
        let mut out = Self::zero();
        for (pr, block) in primes().iter().zip(out.0.chunks_exact_mut(N)) {
            block.iter_mut().zip(m).for_each(|(o, &w)| *o = pr.lift(w));
        }
        out
    }

    /// The residues as words (`N·L`).
    pub fn words(&self) -> &[u64] {
        &self.0
    }

    /// From `N·L` words, each below its prime (`None` otherwise: a peer's malformed message).
    pub fn from_words(w: Vec<u64>) -> Option<Self> {
        (w.len() == POLY_WORDS && w.chunks_exact(N).zip(PRIMES).all(|(b, p)| b.iter().all(|&x| x < p)))
            .then_some(Self(w))
    }

    /// To the NTT domain.
    pub fn ntt(&mut self) {
        for (pr, block) in primes().iter().zip(self.0.chunks_exact_mut(N)) {
            pr.forward(block);
        }
    }

    /// Back from the NTT domain.
    pub fn intt(&mut self) {
        for (pr, block) in primes().iter().zip(self.0.chunks_exact_mut(N)) {
            pr.inverse(block);
        }
    }

    /// `self += a ⊙ b` (NTT domain).
    pub fn mul_add(&mut self, a: &Poly, b: &Poly) {
        for (i, pr) in primes().iter().enumerate() {
            let r = i * N..(i + 1) * N;
            for ((o, &x), &y) in self.0[r.clone()].iter_mut().zip(&a.0[r.clone()]).zip(&b.0[r]) {
                *o = pr.add(*o, pr.mul(x, y));
            }
        }
    }

    /// `a ⊙ b` (NTT domain).
    fn mul(a: &Poly, b: &Poly) -> Poly {
        let mut out = Poly::zero();
        out.mul_add(a, b);
        out
    }

    fn neg(&mut self) {
        for (pr, block) in primes().iter().zip(self.0.chunks_exact_mut(N)) {
            block.iter_mut().for_each(|x| *x = pr.sub(0, *x));
        }
    }

    fn add_assign(&mut self, o: &Poly) {
        for (i, pr) in primes().iter().enumerate() {
            let r = i * N..(i + 1) * N;
            self.0[r.clone()].iter_mut().zip(&o.0[r]).for_each(|(x, &y)| *x = pr.add(*x, y));
        }
    }

    /// A uniform polynomial in the NTT domain from a public seed (rejection sampling).
    fn uniform(seed: &Seed, stream: u64) -> Poly {
        let mut prg = Prg::new(seed, stream);
        let mut out = Poly::zero();
        let mut buf = vec![0u64; N];
        for (block, &p) in out.0.chunks_exact_mut(N).zip(&PRIMES) {
            let mut filled = 0;
            while filled < N {
                prg.fill(&mut buf);
                for &w in &buf {
                    let x = w >> 10;
                    if x < p && filled < N {
                        block[filled] = x;
                        filled += 1;
                    }
                }
            }
        }
        out
    }

    /// Small signed coefficients (coefficient domain).
    fn small(v: &[i64]) -> Poly {
        let mut out = Poly::zero();
        for (pr, block) in primes().iter().zip(out.0.chunks_exact_mut(N)) {
            block.iter_mut().zip(v).for_each(|(o, &x)| *o = pr.small(x));
        }
        out
    }

    /// `t·self`.
    fn times_t(&mut self) {
        for (pr, block) in primes().iter().zip(self.0.chunks_exact_mut(N)) {
            let t = pr.shoup(pr.t);
            block.iter_mut().for_each(|x| *x = pr.mul_shoup(*x, t));
        }
    }
}

impl std::fmt::Debug for Poly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Poly(..)")
    }
}

/// `n` samples of the centred binomial distribution with parameter `eta` (≤ 32).
fn cbd(rng: &mut Prg, n: usize, eta: u32) -> Vec<i64> {
    let mut w = vec![0u64; n];
    rng.fill(&mut w);
    let mask = (1u64 << eta) - 1;
    w.iter().map(|&x| i64::from((x & mask).count_ones()) - i64::from(((x >> 32) & mask).count_ones())).collect()
}

/// Error distribution: centred binomial, η = 21.
fn error(rng: &mut Prg) -> Vec<i64> {
    cbd(rng, N, 21)
}

/// Ternary secret distribution (centred binomial, η = 1).
fn ternary(rng: &mut Prg) -> Vec<i64> {
    cbd(rng, N, 1)
}

/// A party's secret key (NTT domain). `Debug` prints nothing of it.
pub struct SecretKey {
    s: Poly,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// The public key `(p0, p1) = (−p1·s + t·e, p1)`, NTT domain; `p1` from `seed`.
#[derive(Clone, Debug)]
pub struct PublicKey {
    seed: Seed,
    p0: Poly,
    p1: Poly,
}

impl PublicKey {
    /// Its wire form: the seed's 4 words, then `p0`.
    pub fn to_words(&self) -> Vec<u64> {
        let mut w: Vec<u64> = self.seed.0.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        w.extend_from_slice(self.p0.words());
        w
    }

    /// Words of the wire form.
    pub const WORDS: usize = 4 + POLY_WORDS;

    /// From [`PublicKey::to_words`] (`None`: malformed).
    pub fn from_words(w: &[u64]) -> Option<Self> {
        if w.len() != Self::WORDS {
            return None;
        }
        let seed = seed_from_words(&w[..4]);
        let p0 = Poly::from_words(w[4..].to_vec())?;
        Some(Self { p1: Poly::uniform(&seed, PK_STREAM), seed, p0 })
    }
}

/// A seed from its 4 little-endian words.
pub fn seed_from_words(w: &[u64]) -> Seed {
    let mut b = [0u8; 32];
    for (c, x) in b.chunks_exact_mut(8).zip(w) {
        c.copy_from_slice(&x.to_le_bytes());
    }
    Seed::from_bytes(b)
}

/// A seed as 4 little-endian words.
pub fn seed_words(s: &Seed) -> [u64; 4] {
    std::array::from_fn(|i| u64::from_le_bytes(s.0[8 * i..8 * i + 8].try_into().unwrap()))
}

impl SecretKey {
    /// A fresh key pair.
    pub fn generate(rng: &mut Prg) -> (Self, PublicKey) {
        let mut s = Poly::small(&ternary(rng));
        s.ntt();
        let seed = rng.next_seed();
        let p1 = Poly::uniform(&seed, PK_STREAM);
        let mut e = Poly::small(&error(rng));
        e.ntt();
        e.times_t();
        let mut p0 = Poly::mul(&p1, &s);
        p0.neg();
        p0.add_assign(&e);
        (Self { s }, PublicKey { seed, p0, p1 })
    }

    /// `c0` of a symmetric encryption of the ring elements `m` (coefficients `0..m.len()`),
    /// whose `c1` is drawn uniformly (NTT domain) from `seed` on stream `index`: `c0 = −c1·s + t·e + m`,
    /// coefficients.
    pub fn encrypt(&self, m: &[u64], seed: &Seed, index: u64, rng: &mut Prg) -> Poly {
        let mut c = Poly::mul(&Poly::uniform(seed, index), &self.s);
        c.intt();
        c.neg();
        let mut e = Poly::small(&error(rng));
        e.times_t();
        c.add_assign(&e);
        c.add_assign(&Poly::lift(m));
        c
    }

    /// The plaintext at coefficients `at` of a [`Response`]: `c0[k] + (c1·s)[at[k]]` mod `t`.
    pub fn decrypt(&self, r: &Response, at: &[usize]) -> Vec<u64> {
        let mut cs = r.c1.clone();
        cs.ntt();
        let mut cs = Poly::mul(&cs, &self.s);
        cs.intt();
        let ps = primes();
        at.iter()
            .enumerate()
            .map(|(k, &i)| decode(std::array::from_fn(|j| ps[j].add(r.c0[j * at.len() + k], cs.0[j * N + i]))))
            .collect()
    }
}

/// An evaluated ciphertext on its way back to the key's owner: all of `c1`, and `c0` at the
/// coefficients the owner needs only (prime-major: `L` blocks of `at.len()`).
pub struct Response {
    c1: Poly,
    c0: Vec<u64>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Response({} coefficients)", self.c0.len() / L)
    }
}

impl Response {
    /// Words on the wire for `k` coefficients.
    pub fn words(k: usize) -> usize {
        POLY_WORDS + L * k
    }

    /// The evaluator's last step on an accumulated product `(acc0, acc1)` (NTT domain) under
    /// the owner's key `pk`: adds an encryption of zero under `pk`, the ring elements `mask`
    /// at coefficients `at` (the owner then decrypts `product + mask` there), and flooding
    /// noise at those coefficients; keeps `c0` there only.
    pub fn finish(mut acc0: Poly, mut acc1: Poly, pk: &PublicKey, at: &[usize], mask: &[u64], rng: &mut Prg) -> Self {
        let mut u = Poly::small(&ternary(rng));
        u.ntt();
        acc0.mul_add(&pk.p0, &u);
        acc1.mul_add(&pk.p1, &u);
        acc0.intt();
        acc1.intt();
        let mut e2 = Poly::small(&error(rng));
        e2.times_t();
        acc1.add_assign(&e2);
        let e1 = cbd(rng, at.len(), 21);
        let ps = primes();
        let k = at.len();
        let mut c0 = vec![0u64; L * k];
        let mut words = [0u64; 3];
        for (idx, (&i, &m)) in at.iter().zip(mask).enumerate() {
            // f = lo + mid·2^64 + hi·2^128 − 2^147, hi < 2^20: t·f = lo·2^64 + mid·2^128 + hi·2^192 − 2^211.
            rng.fill(&mut words);
            words[2] &= (1 << (FLOOD_BITS - 127)) - 1;
            for (j, pr) in ps.iter().enumerate() {
                let lo = pr
                    .add(pr.mul(pr.reduce(u128::from(words[0])), pr.t), pr.mul(pr.reduce(u128::from(words[1])), pr.t2));
                let f = pr.sub(pr.add(lo, pr.mul(words[2], pr.t3)), pr.flood_top);
                let noise = pr.mul(pr.small(e1[idx]), pr.t);
                c0[j * k + idx] = pr.add(pr.add(acc0.0[j * N + i], pr.add(noise, f)), pr.lift(m));
            }
        }
        Self { c1: acc1, c0 }
    }

    /// Wire form: `c1` then `c0`.
    pub fn to_words(&self, out: &mut Vec<u64>) {
        out.extend_from_slice(self.c1.words());
        out.extend_from_slice(&self.c0);
    }

    /// From [`Response::to_words`] for `k` coefficients (`None`: malformed).
    pub fn from_words(w: &[u64], k: usize) -> Option<Self> {
        if w.len() != Self::words(k) {
            return None;
        }
        let c1 = Poly::from_words(w[..POLY_WORDS].to_vec())?;
        let c0 = w[POLY_WORDS..].to_vec();
        c0.chunks_exact(k.max(1)).zip(PRIMES).all(|(b, p)| b.iter().all(|&x| x < p)).then_some(Self { c1, c0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Negacyclic product of integer polynomials mod 2^64, `a` sparse.
    fn negacyclic(a: &[(usize, u64)], b: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; N];
        for &(i, x) in a {
            for (j, &y) in b.iter().enumerate() {
                let k = i + j;
                let v = x.wrapping_mul(y);
                if k < N {
                    out[k] = out[k].wrapping_add(v);
                } else {
                    out[k - N] = out[k - N].wrapping_sub(v);
                }
            }
        }
        out
    }

    #[test]
    fn the_primes_are_ntt_primes_and_the_transform_inverts() {
        for pr in primes() {
            assert_eq!(pr.p % (2 * N as u64), 1);
            assert!(pr.p < 1 << 54);
            // Fermat tests to several bases (the constants are primes; this catches a typo).
            for a in [2u64, 3, 5, 7, 11, 13] {
                assert_eq!(pr.pow(a, pr.p - 1), 1);
            }
        }
        let mut rng = Prg::from_u64(1);
        let m: Vec<u64> = (0..N).map(|_| rng.next_u64()).collect();
        let mut a = Poly::lift(&m);
        let orig = a.clone();
        a.ntt();
        assert_ne!(a.0, orig.0);
        a.intt();
        assert_eq!(a.0, orig.0);
    }

    #[test]
    fn ntt_products_are_negacyclic_and_decode_centred() {
        let mut rng = Prg::from_u64(2);
        // Small values so that the integer product is below Q/4 and decodes exactly.
        let b: Vec<u64> = (0..N).map(|_| rng.next_u64() >> 20).collect();
        let a: Vec<(usize, u64)> = (0..12).map(|k| (k * 683 + 5, (rng.next_u64() >> 1).wrapping_neg())).collect();
        let mut dense = vec![0u64; N];
        a.iter().for_each(|&(i, x)| dense[i] = x);
        let (mut pa, mut pb) = (Poly::lift(&dense), Poly::lift(&b));
        pa.ntt();
        pb.ntt();
        let mut c = Poly::mul(&pa, &pb);
        c.intt();
        let want = negacyclic(&a, &b);
        for (k, &w) in want.iter().enumerate() {
            assert_eq!(decode(std::array::from_fn(|j| c.0[j * N + k])), w, "coefficient {k}");
        }
    }

    #[test]
    fn an_evaluated_product_decrypts_to_product_plus_mask() {
        let mut rng = Prg::from_u64(3);
        let (sk, pk) = SecretKey::generate(&mut rng);
        let pk = PublicKey::from_words(&pk.to_words()).unwrap();
        // Full 64-bit values on both sides: the worst case for the noise budget.
        let m: Vec<u64> = (0..N).map(|_| rng.next_u64()).collect();
        let w: Vec<(usize, u64)> = (0..16).map(|k| (k * 511 + 3, rng.next_u64())).collect();
        let seed = rng.next_seed();
        let c0 = sk.encrypt(&m, &seed, 7, &mut rng);
        let mut c0 = Poly::from_words(c0.words().to_vec()).unwrap();
        c0.ntt();
        let c1 = Poly::uniform(&seed, 7);
        let mut dense = vec![0u64; N];
        w.iter().for_each(|&(i, x)| dense[i] = x);
        let mut pw = Poly::lift(&dense);
        pw.ntt();
        let (mut acc0, mut acc1) = (Poly::zero(), Poly::zero());
        // Twice: sums of products accumulate.
        for _ in 0..2 {
            acc0.mul_add(&c0, &pw);
            acc1.mul_add(&c1, &pw);
        }
        let at: Vec<usize> = (0..N).step_by(97).collect();
        let mask: Vec<u64> = at.iter().map(|_| rng.next_u64()).collect();
        let r = Response::finish(acc0, acc1, &pk, &at, &mask, &mut rng);
        let mut wire = vec![];
        r.to_words(&mut wire);
        let r = Response::from_words(&wire, at.len()).unwrap();
        let got = sk.decrypt(&r, &at);
        let want = negacyclic(&w, &m);
        for (k, &i) in at.iter().enumerate() {
            assert_eq!(got[k], want[i].wrapping_mul(2).wrapping_add(mask[k]), "coefficient {i}");
        }
        // A different key does not decrypt it.
        let (other, _) = SecretKey::generate(&mut rng);
        let wrong = other.decrypt(&r, &at);
        let hits =
            at.iter().enumerate().filter(|&(k, &i)| wrong[k] == want[i].wrapping_mul(2).wrapping_add(mask[k])).count();
        assert!(hits <= 1, "{hits} coefficients decrypted under the wrong key");
    }

    /// `x/Q ∈ [−1/2, 1/2)` of the decrypted integer at each coefficient: what the owner sees above
    /// the plaintext's 64 bits (about 50 bits of it in an `f64`).
    fn high_parts(sk: &SecretKey, r: &Response, at: &[usize]) -> Vec<f64> {
        let mut cs = r.c1.clone();
        cs.ntt();
        let mut cs = Poly::mul(&cs, &sk.s);
        cs.intt();
        let (ps, c) = (primes(), crt());
        at.iter()
            .enumerate()
            .map(|(k, &i)| {
                let frac: f64 = (0..L)
                    .map(|j| {
                        let x = ps[j].add(r.c0[j * at.len() + k], cs.0[j * N + i]);
                        ps[j].mul_shoup(x, c.inv[j]) as f64 / PRIMES[j] as f64
                    })
                    .sum();
                frac - frac.round()
            })
            .collect()
    }

    /// Chi-square statistic of `xs` (in `[−w, w)`) against the uniform, in 64 buckets.
    fn chi_square(xs: &[f64], w: f64) -> f64 {
        let mut h = [0f64; 64];
        for &x in xs {
            h[(((x / w + 1.0) / 2.0 * 64.0) as usize).min(63)] += 1.0;
        }
        let e = xs.len() as f64 / 64.0;
        h.iter().map(|&o| (o - e) * (o - e) / e).sum()
    }

    /// The owner's view of a response: above the plaintext, the decrypted integer is the flood
    /// (uniform in `±2^211/Q`) whatever the evaluator's operand — zero, or full 64-bit values
    /// summed over 64 products (the largest carries and noise). Without the flood the two views
    /// differ by far (checked by hand: chi-square about 500,000). And the
    /// evaluator's view of a ciphertext: `c0`'s residues are uniform for an all-zero message
    /// and an all-ones one.
    #[test]
    fn the_owners_view_of_a_response_is_the_flood_and_the_evaluators_is_uniform() {
        let mut rng = Prg::from_u64(11);
        let (sk, pk) = SecretKey::generate(&mut rng);
        let m: Vec<u64> = (0..N).map(|_| rng.next_u64()).collect();
        let seed = rng.next_seed();
        let mut c0 = sk.encrypt(&m, &seed, 0, &mut rng);
        c0.ntt();
        let c1 = Poly::uniform(&seed, 0);
        let at: Vec<usize> = (0..N).collect();
        let width = (2f64).powi(211) / PRIMES.iter().map(|&p| p as f64).product::<f64>();
        for big in [false, true] {
            let mut w = vec![0u64; N];
            if big {
                (0..64).for_each(|k| w[k * 127] = rng.next_u64());
            }
            let mut pw = Poly::lift(&w);
            pw.ntt();
            let (mut acc0, mut acc1) = (Poly::zero(), Poly::zero());
            acc0.mul_add(&c0, &pw);
            acc1.mul_add(&c1, &pw);
            let r = Response::finish(acc0, acc1, &pk, &at, &vec![0; N], &mut rng);
            let chi = chi_square(&high_parts(&sk, &r, &at), width);
            // 63 degrees of freedom: 110 is beyond the 0.9999 quantile.
            assert!(chi < 110.0, "operand {}: chi-square {chi}", if big { "large" } else { "zero" });
        }
        for fill in [0u64, u64::MAX] {
            let c = sk.encrypt(&vec![fill; N], &seed, 1, &mut rng);
            for (j, &p) in PRIMES.iter().enumerate() {
                let xs: Vec<f64> = c.0[j * N..(j + 1) * N].iter().map(|&x| x as f64 / p as f64 * 2.0 - 1.0).collect();
                let chi = chi_square(&xs, 1.0);
                assert!(chi < 110.0, "message {fill:#x}, prime {j}: chi-square {chi}");
            }
        }
    }

    #[test]
    fn out_of_range_residues_are_refused() {
        let mut w = vec![0u64; POLY_WORDS];
        assert!(Poly::from_words(w.clone()).is_some());
        w[N + 5] = PRIMES[1];
        assert!(Poly::from_words(w).is_none());
        assert!(Response::from_words(&[0; 10], 2).is_none());
    }
}
