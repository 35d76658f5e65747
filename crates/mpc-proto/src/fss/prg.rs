//! Length-doubling PRG for the GGM tree of the DCF: fixed-key AES-128 in
//! Matyas–Meyer–Oseas (MMO) mode with additive tweaks.
//!
//! For a seed `s` (a `u128` whose two low bits are zero) and a tweak index
//! `j`, the PRG output block is
//!
//! ```text
//! H_j(s) = π(s ⊕ C_j) ⊕ s ⊕ C_j,       π = AES-128 under a fixed public key,
//! ```
//!
//! with distinct public constants `C_j`. Tweak `j = 0/1` gives the left/right
//! child seed block (bit 0 of the output is the control bit `t`, bits 0–1 are
//! then cleared to form the 126-bit child seed); `j = 2 + 2k + side` gives the
//! `k`-th 128-bit block of the left/right value word; `j = 64 + k` gives the
//! `k`-th block of the leaf conversion. This is the (tweakable)
//! correlation-robust hash of Guo–Katz–Wang–Yu (S&P 2020) instantiated with
//! fixed-key AES, the same style as LLAMA/EzPC and Google's DPF library.
//! Because every output block is an independent call, an evaluator computes
//! only the side of the tree it descends into (1 + ⌈L/2⌉ blocks per level),
//! and all blocks of a level for many keys go through one batched call so
//! that VAES has many blocks in flight (the kernel in `crate::vaes`, with the
//! `aes` crate as the fallback where the CPU lacks VAES).
//!
//! # Why AES and not ChaCha (measured on the build machine, 1 core, AES-NI +
//! VAES-512 present; `cargo bench --bench fss -- prg`)
//!
//! | PRG call producing one 128-bit block per seed             | ns / block |
//! |------------------------------------------------------------|-----------:|
//! | fixed-key AES-MMO, batched, VAES kernel (4096 blocks)       |  0.7 |
//! | fixed-key AES-MMO, batched, `aes` crate `encrypt_blocks`     |  1.7 |
//! | fixed-key AES-MMO, one block at a time                      | 14.0 |
//! | ChaCha8 keyed by the seed (`ChaCha8Rng::from_seed`, 64 bytes) | 64 |
//!
//! (Intel Xeon @ 2.6 GHz VM, shared; AES via the `aes` crate's runtime
//! dispatch.) ChaCha needs a fresh key schedule/state per seed and its smallest output
//! is 64 bytes, so it cannot be batched across keys; fixed-key AES is an
//! order of magnitude cheaper per block here.

use std::sync::OnceLock;

use aes::Aes128;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};

/// One AES block as used by the `aes` crate.
pub type Block = aes::Block;

/// Mask clearing the two low bits of a seed (they carry control bits in
/// correction words).
pub const SEED_MASK: u128 = !3u128;

/// Fixed, public AES-128 key (nothing-up-my-sleeve: first hex digits of π).
const FIXED_KEY: [u8; 16] =
    [0x24, 0x3f, 0x6a, 0x88, 0x85, 0xa3, 0x08, 0xd3, 0x13, 0x19, 0x8a, 0x2e, 0x03, 0x70, 0x73, 0x44];

/// Odd multiplier used to derive the tweak constants `C_j`.
const TWEAK_MUL: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835;

/// Tweak constant `C_j` (distinct for distinct `j` since the multiplier is odd).
#[inline(always)]
pub const fn tweak(j: u32) -> u128 {
    ((j as u128) + 1).wrapping_mul(TWEAK_MUL)
}

/// Tweak index of the child-seed block on `side` (0 = left, 1 = right).
#[inline(always)]
pub const fn seed_tweak(side: u64) -> u128 {
    tweak(side as u32)
}

/// Tweak index of the `k`-th value block on `side`.
#[inline(always)]
pub const fn value_tweak(side: u64, k: usize) -> u128 {
    tweak(2 + 2 * k as u32 + side as u32)
}

/// Tweak index of the `k`-th leaf-conversion block.
#[inline(always)]
pub const fn leaf_tweak(k: usize) -> u128 {
    tweak(64 + k as u32)
}

/// Converts a `u128` to an AES block (little endian).
#[inline(always)]
pub fn to_block(x: u128) -> Block {
    Array(x.to_le_bytes())
}

/// Converts an AES block to a `u128` (little endian).
#[inline(always)]
pub fn from_block(b: &Block) -> u128 {
    u128::from_le_bytes(b.0)
}

/// Fixed-key AES-MMO hash, shared by all keys.
pub struct Prg {
    aes: Aes128,
    /// The same key for the VAES kernel, where the CPU has it.
    #[cfg(target_arch = "x86_64")]
    fast: Option<crate::vaes::RoundKeys>,
}

impl std::fmt::Debug for Prg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prg(fixed-key AES-128 MMO)")
    }
}

impl Prg {
    /// The process-wide PRG instance (key schedule computed once).
    pub fn fixed() -> &'static Prg {
        static PRG: OnceLock<Prg> = OnceLock::new();
        PRG.get_or_init(|| Prg {
            aes: Aes128::new(&Array(FIXED_KEY)),
            #[cfg(target_arch = "x86_64")]
            fast: crate::vaes::RoundKeys::new(FIXED_KEY),
        })
    }

    /// `out[i] = π(inp[i]) ⊕ inp[i]` for all `i` (the caller has already
    /// XORed the tweak into `inp`). Lengths must match; extra elements of the
    /// longer slice are left untouched.
    #[inline]
    pub fn hash_blocks(&self, inp: &[Block], out: &mut [Block]) {
        let m = inp.len().min(out.len());
        let (inp, out) = (&inp[..m], &mut out[..m]);
        #[cfg(target_arch = "x86_64")]
        if let Some(rk) = &self.fast {
            rk.mmo(Block::slice_as_flattened(inp), Block::slice_as_flattened_mut(out));
            return;
        }
        // Lengths are equal by construction, so this cannot fail.
        if self.aes.encrypt_blocks_b2b(inp, out).is_ok() {
            for (o, i) in out.iter_mut().zip(inp) {
                *o = to_block(from_block(o) ^ from_block(i));
            }
        }
    }

    /// `H(x) = π(x) ⊕ x` for one tweaked input `x = s ⊕ C_j`.
    #[inline]
    pub fn hash_one(&self, x: u128) -> u128 {
        let mut b = to_block(x);
        self.aes.encrypt_block(&mut b);
        from_block(&b) ^ x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_matches_single() {
        let prg = Prg::fixed();
        let xs: Vec<u128> = (0..37u128).map(|i| i.wrapping_mul(TWEAK_MUL) ^ 0xabc).collect();
        let inp: Vec<Block> = xs.iter().map(|&x| to_block(x)).collect();
        let mut out = vec![Block::default(); xs.len()];
        prg.hash_blocks(&inp, &mut out);
        for (x, o) in xs.iter().zip(&out) {
            assert_eq!(prg.hash_one(*x), from_block(o));
        }
    }

    #[test]
    fn batch_kernel_matches_the_aes_crate() {
        // Lengths around the kernel's 4-block and 32-block steps, against π(x) ⊕ x computed one
        // block at a time with the `aes` crate; the portable path (no VAES) likewise.
        let portable = Prg {
            aes: Aes128::new(&Array(FIXED_KEY)),
            #[cfg(target_arch = "x86_64")]
            fast: None,
        };
        for (prg, n) in
            [Prg::fixed(), &portable].into_iter().flat_map(|p| [1usize, 3, 4, 5, 31, 32, 33, 130].map(|n| (p, n)))
        {
            let xs: Vec<u128> = (0..n as u128).map(|i| (i + 7).wrapping_mul(TWEAK_MUL)).collect();
            let inp: Vec<Block> = xs.iter().map(|&x| to_block(x)).collect();
            let mut out = vec![Block::default(); n];
            prg.hash_blocks(&inp, &mut out);
            for (x, o) in xs.iter().zip(&out) {
                let mut b = to_block(*x);
                prg.aes.encrypt_block(&mut b);
                assert_eq!(from_block(o), from_block(&b) ^ x, "n = {n}");
            }
        }
    }

    #[test]
    fn tweaks_distinct() {
        let mut t: Vec<u128> = (0..80).map(tweak).collect();
        t.sort_unstable();
        t.dedup();
        assert_eq!(t.len(), 80);
    }
}
