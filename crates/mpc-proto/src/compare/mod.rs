//! How comparisons are computed: three methods, a policy that picks one per operation, and the
//! arithmetic they share.
//!
//! Every comparison-based operation (`ltz` and the comparisons built on it, `relu`, max and
//! max pooling, argmax, the spline activations) opens a masked value `y = x + r` (the dealer knows
//! the mask `r`) and then needs shares of `[x ≥ 0]`, computed by one of three [`Method`]s:
//!
//! | method | how | online rounds | online bytes / element / party | dealer material / element / party |
//! |---|---|---|---|---|
//! | [`Method::Helper`] | P2 zero-tests blinded, permuted comparison terms ([`helper`]) | 3 | ≈ 8 + k (to P0/P1 and P2) | P1: k − 1; P0: 0 |
//! | [`Method::Fss`] | compact 1-bit DCF key ([`crate::fss::bitdcf`]), then a 1-bit masked select | 2 | 8 + 1/8 | ≈ 16·(k − 7) + 50 |
//! | [`Method::Fss1`] | 2-word DCF ReLU gate ([`crate::fss::Relu64Gate`]) | 1 | 8 | 60 + 32·(k − 1) |
//!
//! (`k` is the comparison window, see below; at k = 32 that is 31 B, ≈ 440 B and 1,052 B of
//! material.) The byte and round counts per operation are in each protocol's documentation and
//! asserted by the tests.
//!
//! A [`Policy`] says which to use: one method everywhere, or [`Policy::Auto`] (the default),
//! which asks the cost model in [`cost`] for each operation, from the operation's size and a
//! [`Link`] (RTT and bandwidth). The choice is a public function of public data, recorded in
//! the session configuration or the plan, so all three parties agree on it.
//!
//! # The comparison window
//!
//! Comparisons read only the low `k` bits of the masked value: for `−2^(k−1) ≤ x < 2^(k−1)`,
//! `x + 2^(k−1)` is a `k`-bit number `x'`, and `[x ≥ 0]` is its top bit. With
//! `y' = (y + 2^(k−1)) mod 2^k = Y_h·2^(k−1) + Y_l` and `r mod 2^k = R_h·2^(k−1) + R_l`,
//!
//! ```text
//! [x ≥ 0] = Y_h ⊕ R_h ⊕ [Y_l < R_l]          (the borrow out of the low k − 1 bits)
//! ```
//!
//! so every method reduces to a `(k − 1)`-bit comparison of the public `Y_l` with the dealer's
//! `R_l`. Shares reduced mod 2^k stay additive, so a smaller `k` costs nothing but is exact only
//! for `|x| < 2^(k−1)` (ulps): **outside the window, the result is the sign of `x mod 2^k` read
//! as a `k`-bit signed number** — wrong exactly when bit `k − 1` of `x` differs from its sign.
//! The default `k` ([`Comparisons::default_bits`]) covers every encodable value and every
//! difference of two; plans narrow it per layer from value bounds (`mpc-ml`).
//!
//! # Finishing
//!
//! [`Method::Helper`] and [`Method::Fss`] both end with a public bit `e` (known to P0 and P1) and
//! arithmetic shares of a secret bit `v` (and of `v·r` for ReLU) such that `[x ≥ 0] = e ⊕ v`;
//! [`finish_bit`] and [`finish_relu`] turn them into shares of `[x ≥ 0]` and `ReLU(x) = [x ≥ 0]·x`
//! with `x = y − r`, locally:
//!
//! ```text
//! e = 0:  [x ≥ 0] = v,       ReLU(x) = v·y − v·r
//! e = 1:  [x ≥ 0] = 1 − v,   ReLU(x) = (y − r) − v·y + v·r
//! ```

pub mod compact;
pub mod cost;
pub mod helper;

use serde::{Deserialize, Serialize};

pub use cost::{Link, Objective};

/// How one comparison-based operation computes its comparisons. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Method {
    /// The dealer takes part online as a non-colluding helper that learns nothing: three
    /// messages, tens of bytes per element in all, k − 1 bytes of material (bulk work, LAN).
    Helper,
    /// A compact 1-bit FSS key (≈ 440 bytes at k = 32) and a 1-bit select: two rounds.
    Fss,
    /// The one-round FSS gate with a 2-word payload (1,052 bytes at k = 32): latency over bytes.
    Fss1,
}

impl Method {
    /// All methods, in the order the cost model breaks ties (fewest dealer bytes first).
    pub const ALL: [Method; 3] = [Method::Helper, Method::Fss, Method::Fss1];

    /// The name used on command lines and in plans.
    pub fn name(self) -> &'static str {
        match self {
            Method::Helper => "helper",
            Method::Fss => "fss",
            Method::Fss1 => "fss1",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which [`Method`] comparison-based operations use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Policy {
    /// Per operation, from the cost model ([`cost::choose`]) and the session's [`Link`].
    #[default]
    Auto,
    /// This method everywhere.
    Fixed(Method),
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Policy::Auto,
            "helper" => Policy::Fixed(Method::Helper),
            "fss" => Policy::Fixed(Method::Fss),
            "fss1" => Policy::Fixed(Method::Fss1),
            other => return Err(format!("unknown comparison method {other:?}: use auto, helper, fss or fss1")),
        })
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Auto => f.write_str("auto"),
            Policy::Fixed(m) => f.write_str(m.name()),
        }
    }
}

/// The comparison settings of a session (agreed at session setup with the rest of
/// [`SessionConfig`](crate::SessionConfig)) or of one plan step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Comparisons {
    /// Method choice.
    pub policy: Policy,
    /// The link the cost model assumes.
    pub link: Link,
    /// What the cost model minimises: the whole job with material made on demand (default),
    /// or the online latency with the dealer running ahead.
    pub objective: Objective,
    /// Comparison window `k` in bits (2..=64): exact for `|x| < 2^(k−1)` ulps.
    pub bits: u8,
}

impl Comparisons {
    /// The widest useful window for a fixed-point format: `int_bits + frac_bits + 2` (capped at
    /// 64), exact for every encodable value and every difference of two.
    pub fn default_bits(fixed: crate::FixedPoint) -> u8 {
        (fixed.int_bits + fixed.frac_bits + 2).min(64) as u8
    }

    /// Auto policy on the default link with the widest window for `fixed`.
    pub fn for_fixed(fixed: crate::FixedPoint) -> Self {
        Comparisons {
            policy: Policy::Auto,
            link: Link::default(),
            objective: Objective::default(),
            bits: Self::default_bits(fixed),
        }
    }

    /// Checks the window width.
    pub fn validate(&self) -> crate::Result<()> {
        if (2..=64).contains(&self.bits) {
            Ok(())
        } else {
            Err(crate::Error::InvalidInput(format!("comparison window of {} bits: use 2 to 64", self.bits)))
        }
    }
}

impl Default for Comparisons {
    fn default() -> Self {
        Self::for_fixed(crate::FixedPoint::default())
    }
}

/// A `k`-bit comparison window (`2 ≤ k ≤ 64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window(u32);

impl Window {
    /// The window of `bits` bits. Panics outside 2..=64 (callers validate first).
    pub fn new(bits: u32) -> Self {
        assert!((2..=64).contains(&bits), "comparison window of {bits} bits");
        Window(bits)
    }

    /// `k`.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Bits of the low part `Y_l`, `R_l`: `k − 1`.
    pub fn low_bits(self) -> u32 {
        self.0 - 1
    }

    fn low_mask(self) -> u64 {
        (1u64 << (self.0 - 1)) - 1
    }

    /// Bytes that carry the low `k` bits of an opened value.
    pub fn open_bytes(self) -> usize {
        self.0.div_ceil(8) as usize
    }

    /// `(Y_h, Y_l)` of an opened `y = x + r` (only its low `k` bits are read).
    #[inline(always)]
    pub fn split_open(self, y: u64) -> (u8, u64) {
        let shifted = y.wrapping_add(1u64 << (self.0 - 1));
        (((shifted >> (self.0 - 1)) & 1) as u8, shifted & self.low_mask())
    }

    /// `(R_h, R_l)` of a mask `r`.
    #[inline(always)]
    pub fn split_mask(self, r: u64) -> (u8, u64) {
        (((r >> (self.0 - 1)) & 1) as u8, r & self.low_mask())
    }
}

/// Shares of `[x ≥ 0] = e ⊕ v` from the public bit `e` and this party's share of `v`
/// (`p0`: whether this party adds public constants).
#[inline(always)]
pub fn finish_bit(p0: bool, e: u8, v: u64) -> u64 {
    if e == 0 { v } else { u64::from(p0).wrapping_sub(v) }
}

/// Shares of `ReLU(x) = [x ≥ 0]·x` for `x = y − r`, from `e`, the public `y`, and this party's
/// shares of `r`, `v` and `v·r` (see the [module docs](self)).
#[inline(always)]
pub fn finish_relu(p0: bool, e: u8, y: u64, r: u64, v: u64, vr: u64) -> u64 {
    let vy = v.wrapping_mul(y);
    if e == 0 {
        vy.wrapping_sub(vr)
    } else {
        let own = if p0 { y } else { 0 };
        own.wrapping_sub(r).wrapping_sub(vy).wrapping_add(vr)
    }
}

/// Packs bits (one per byte, 0 or 1) eight to a byte, little-endian within each byte.
pub(crate) fn pack_bits(bits: &[u8], out: &mut Vec<u8>) {
    out.extend(bits.chunks(8).map(|c| c.iter().enumerate().fold(0u8, |acc, (i, &b)| acc | ((b & 1) << i))));
}

/// The `n` bits of [`pack_bits`]'s output, one per byte.
pub(crate) fn unpack_bits(packed: &[u8], n: usize) -> Vec<u8> {
    (0..n).map(|i| (packed[i / 8] >> (i % 8)) & 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_identity_holds_in_and_only_in_the_window() {
        // [x ≥ 0] = Y_h ⊕ R_h ⊕ [Y_l < R_l] for every x in the window, every mask.
        let mut g = crate::prg::Prg::from_u64(5);
        for k in [2u32, 3, 8, 17, 32, 49, 63, 64] {
            let w = Window::new(k);
            let half = if k == 64 { i64::MAX } else { (1i64 << (k - 1)) - 1 };
            for i in 0..2000 {
                let r = g.next_u64();
                let x: i64 = match i % 4 {
                    0 => -half - 1,
                    1 => half,
                    _ => (g.next_u64() as i64) >> (65 - k).min(63),
                };
                let y = (x as u64).wrapping_add(r);
                let ((yh, yl), (rh, rl)) = (w.split_open(y), w.split_mask(r));
                assert_eq!(yh ^ rh ^ u8::from(yl < rl), u8::from(x >= 0), "k={k} x={x}");
            }
        }
        // Outside the window the result is the sign of x mod 2^k: x = 2^(k−1) reads negative.
        let w = Window::new(16);
        let (x, r) = (1u64 << 15, 12345u64);
        let ((yh, yl), (rh, rl)) = (w.split_open(x.wrapping_add(r)), w.split_mask(r));
        assert_eq!(yh ^ rh ^ u8::from(yl < rl), 0);
    }

    #[test]
    fn finishing_covers_both_public_bits() {
        // Shares of v, v·r, r split arbitrarily; the sum of the two parties' outputs is exact.
        for (x, r) in [(5i64, 99u64), (-7, u64::MAX - 3), (0, 1), (-1, 0)] {
            let y = (x as u64).wrapping_add(r);
            let g = u8::from(x >= 0);
            for e in [0u8, 1] {
                let v = u64::from(g ^ e);
                let (v0, r0, vr0) = (0x1234u64, 0x9876u64, 0x5555u64);
                let (v1, r1, vr1) = (v.wrapping_sub(v0), r.wrapping_sub(r0), v.wrapping_mul(r).wrapping_sub(vr0));
                let bit = finish_bit(true, e, v0).wrapping_add(finish_bit(false, e, v1));
                assert_eq!(bit, u64::from(g));
                let relu = finish_relu(true, e, y, r0, v0, vr0).wrapping_add(finish_relu(false, e, y, r1, v1, vr1));
                assert_eq!(relu, x.max(0) as u64, "x={x} e={e}");
            }
        }
    }

    #[test]
    fn bits_pack_and_unpack() {
        let bits: Vec<u8> = (0..19).map(|i| ((i * 7) % 3 == 0) as u8).collect();
        let mut p = vec![];
        pack_bits(&bits, &mut p);
        assert_eq!(p.len(), 3);
        assert_eq!(unpack_bits(&p, 19), bits);
    }

    #[test]
    fn policies_parse_and_print() {
        for s in ["auto", "helper", "fss", "fss1"] {
            assert_eq!(s.parse::<Policy>().unwrap().to_string(), s);
        }
        assert!("gc".parse::<Policy>().unwrap_err().contains("auto, helper, fss or fss1"));
        assert_eq!(Comparisons::default().bits, 49);
    }
}
