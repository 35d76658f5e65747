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

/// A gate key type the dealer can generate around a mask and ship as bytes.
pub trait GateKey: Sized + Send {
    /// Name for errors.
    const NAME: &'static str;
    /// Serialised size of one key at bit width `n`.
    fn byte_len_for(n: u32) -> usize;
    /// Dealer: a key pair for mask `r_in` at bit width `n`.
    fn keygen_pair<R: rand_core::CryptoRng + ?Sized>(n: u32, r_in: u64, rng: &mut R) -> Result<(Self, Self), FssError>;
    /// Appends the serialised key to `out`.
    fn write_to(&self, out: &mut Vec<u8>);
    /// Parses one key.
    fn parse(bytes: &[u8]) -> Result<Self, FssError>;
    /// Wraps `count` serialised keys at `buf[start..]` for in-place evaluation.
    fn packed(buf: Vec<u8>, start: usize, count: usize, n: u32) -> Result<PackedKeys<Self>, FssError>;
    /// Dealer: key pairs for all `r_ins`, serialised into `out0` / `out1` (batched where the
    /// gate supports it).
    fn keygen_into<R: rand_core::CryptoRng + ?Sized>(
        n: u32,
        r_ins: &[u64],
        rng: &mut R,
        out0: &mut Vec<u8>,
        out1: &mut Vec<u8>,
    ) -> Result<(), FssError> {
        for &r in r_ins {
            let (k0, k1) = Self::keygen_pair(n, r, rng)?;
            k0.write_to(out0);
            k1.write_to(out1);
        }
        Ok(())
    }
}

impl GateKey for SignKey {
    const NAME: &'static str = "sign";
    fn byte_len_for(n: u32) -> usize {
        SignKey::byte_len_for(n)
    }
    fn keygen_pair<R: rand_core::CryptoRng + ?Sized>(n: u32, r_in: u64, rng: &mut R) -> Result<(Self, Self), FssError> {
        SignGate::keygen(n, r_in, rng)
    }
    fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
    fn parse(bytes: &[u8]) -> Result<Self, FssError> {
        SignKey::from_bytes(bytes)
    }
    fn packed(buf: Vec<u8>, start: usize, count: usize, n: u32) -> Result<PackedKeys<Self>, FssError> {
        PackedKeys::sign(buf, start, count, n)
    }
    fn keygen_into<R: rand_core::CryptoRng + ?Sized>(
        n: u32,
        r_ins: &[u64],
        rng: &mut R,
        out0: &mut Vec<u8>,
        out1: &mut Vec<u8>,
    ) -> Result<(), FssError> {
        SignGate::keygen_into(n, r_ins, rng, out0, out1)
    }
}

impl GateKey for Relu64Key {
    const NAME: &'static str = "relu";
    fn byte_len_for(n: u32) -> usize {
        Relu64Key::byte_len_for(n)
    }
    fn keygen_pair<R: rand_core::CryptoRng + ?Sized>(n: u32, r_in: u64, rng: &mut R) -> Result<(Self, Self), FssError> {
        Relu64Gate::keygen(n, r_in, rng)
    }
    fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
    fn parse(bytes: &[u8]) -> Result<Self, FssError> {
        Relu64Key::from_bytes(bytes)
    }
    fn packed(buf: Vec<u8>, start: usize, count: usize, n: u32) -> Result<PackedKeys<Self>, FssError> {
        PackedKeys::relu64(buf, start, count, n)
    }
    fn keygen_into<R: rand_core::CryptoRng + ?Sized>(
        n: u32,
        r_ins: &[u64],
        rng: &mut R,
        out0: &mut Vec<u8>,
        out1: &mut Vec<u8>,
    ) -> Result<(), FssError> {
        Relu64Gate::keygen_into(n, r_ins, rng, out0, out1)
    }
}

impl GateKey for ReluKey {
    const NAME: &'static str = "relu";
    fn byte_len_for(n: u32) -> usize {
        ReluKey::byte_len_for(n)
    }
    fn keygen_pair<R: rand_core::CryptoRng + ?Sized>(n: u32, r_in: u64, rng: &mut R) -> Result<(Self, Self), FssError> {
        ReluGate::keygen(n, r_in, rng)
    }
    fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
    fn parse(bytes: &[u8]) -> Result<Self, FssError> {
        ReluKey::from_bytes(bytes)
    }
    fn packed(buf: Vec<u8>, start: usize, count: usize, n: u32) -> Result<PackedKeys<Self>, FssError> {
        PackedKeys::relu(buf, start, count, n)
    }
}
