//! Function secret sharing (FSS) for 2-party computation with a trusted
//! dealer over the ring Z_2^64.
//!
//! * [`prg`] — fixed-key AES-MMO length-doubling PRG for the GGM tree.
//! * [`dcf`] — distributed comparison function (Boyle, Chandran, Gilboa,
//!   Gupta, Ishai, Kumar, Nowak, Eurocrypt 2021, Fig. 1), `f_{α,β}(x) = β·[x < α]`
//!   with a vector payload β ∈ (Z_2^64)^L.
//! * [`gates`] — [`gates::SignGate`] (shares of `[x < 0]`) and
//!   [`gates::ReluGate`] (shares of `ReLU(x)` and of `[x ≥ 0]`), each using a
//!   single DCF on `n − 1` bits and one opening of the masked input.
//!
//! # Protocol the host must run (per gate instance, keys are one-time)
//!
//! 1. **Dealer (P2)** picks a uniformly random mask `r_in ∈ Z_2^64`, splits it
//!    into additive shares `r_in = r0 + r1 (mod 2^64)`, runs
//!    `Gate::gen(n, r_in, rng)` and sends `(r_b, key_b)` to party `P_b`.
//!    Never reuse `r_in` or a key for a second input.
//! 2. **Online**, `P_b` holds `x_b` with `x = x0 + x1 (mod 2^64)`, sends
//!    `z_b = (x_b + r_b) mod 2^n` (n bits suffice) to the other party, and both
//!    compute the public `y = (z0 + z1) mod 2^n`. Passing the full 64-bit
//!    `x + r_in` is also fine: only `y mod 2^n` is read.
//! 3. `P_b` calls `Gate::eval(b, &key_b, y)`; the outputs of the two parties
//!    are fresh additive shares mod 2^64 of the gate output.
//!
//! Correctness requires `-2^(n-1) ≤ x < 2^(n-1)` (x read as signed).

pub mod bitdcf;
pub mod dcf;
pub mod gates;
pub mod prg;

pub use dcf::DcfKey;
pub use gates::{PackedGate, PackedKeys, Relu64Gate, Relu64Key, ReluGate, ReluKey, ReluShare, SignGate, SignKey};

/// Errors returned by key generation, evaluation and deserialisation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FssError {
    /// The bit width is outside the supported range.
    #[error("bit width {got} outside the supported range {min}..={max}")]
    InvalidBitWidth {
        /// The requested width.
        got: u32,
        /// Smallest supported width.
        min: u32,
        /// Largest supported width.
        max: u32,
    },
    /// The comparison point does not fit in the domain.
    #[error("alpha {alpha} does not fit in {n} bits")]
    AlphaOutOfDomain {
        /// The comparison point.
        alpha: u64,
        /// The domain width.
        n: u32,
    },
    /// The party index is neither 0 nor 1.
    #[error("party must be 0 or 1, got {0}")]
    InvalidParty(u8),
    /// Input/output slice lengths of a batch call disagree.
    #[error("batch length mismatch: {keys} keys, {inputs} inputs, {outputs} outputs")]
    LengthMismatch {
        /// Number of keys.
        keys: usize,
        /// Number of inputs.
        inputs: usize,
        /// Number of output slots.
        outputs: usize,
    },
    /// Serialised key bytes are malformed.
    #[error("malformed key bytes: {0}")]
    Malformed(&'static str),
}

#[inline]
pub(crate) fn check_party(party: u8) -> Result<bool, FssError> {
    match party {
        0 => Ok(false),
        1 => Ok(true),
        p => Err(FssError::InvalidParty(p)),
    }
}

/// What the dealer and the parties need of a gate's keys: generate many around their masks,
/// ship them as bytes, evaluate them in place.
pub trait GateKey: PackedGate + Sized + Send {
    /// Name for errors.
    const NAME: &'static str;
    /// Serialised size of one key at bit width `n`.
    fn byte_len_for(n: u32) -> usize {
        Self::key_len(n)
    }
    /// Wraps `count` serialised keys at `buf[start..]` for in-place evaluation (validating them).
    fn packed(buf: Vec<u8>, start: usize, count: usize, n: u32) -> Result<PackedKeys<Self>, FssError>;
    /// Dealer: key pairs for all `r_ins`, serialised into `out0` (P0's) and `out1` (P1's).
    fn keygen_into<R: rand_core::CryptoRng + ?Sized>(
        n: u32,
        r_ins: &[u64],
        rng: &mut R,
        out0: &mut Vec<u8>,
        out1: &mut Vec<u8>,
    ) -> Result<(), FssError>;
}

/// Implements [`GateKey`] for a key type from its gate's batched key generation and packed
/// constructor.
macro_rules! gate_key {
    ($key:ty, $gate:ty, $name:literal, $packed:ident) => {
        impl GateKey for $key {
            const NAME: &'static str = $name;
            fn packed(buf: Vec<u8>, start: usize, count: usize, n: u32) -> Result<PackedKeys<Self>, FssError> {
                PackedKeys::$packed(buf, start, count, n)
            }
            fn keygen_into<R: rand_core::CryptoRng + ?Sized>(
                n: u32,
                r_ins: &[u64],
                rng: &mut R,
                out0: &mut Vec<u8>,
                out1: &mut Vec<u8>,
            ) -> Result<(), FssError> {
                <$gate>::keygen_into(n, r_ins, rng, out0, out1)
            }
        }
    };
}

gate_key!(SignKey, SignGate, "sign", sign);
gate_key!(Relu64Key, Relu64Gate, "relu", relu64);
