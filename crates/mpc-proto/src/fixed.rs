//! Fixed-point encoding of reals into Z_2^64.
//!
//! A real `x` is encoded as the two's-complement integer `round(x · 2^f)`. Encoding checks that
//! `|x| < 2^int_bits`; a value outside is an [`Error::EncodeOverflow`], never a silent wrap.
//!
//! After a product of two encoded values the result carries `2f` fractional bits and is brought
//! back with a truncation by `f` bits ([`Party::trunc`](crate::Party::trunc)). Keep every
//! intermediate value, *including products before truncation*, below `2^(63 − ℓ)` in magnitude
//! for ℓ a few bits of margin: local truncation fails (a large error) with probability about
//! `2^(ℓ_x + 1 − 64)` for a value of ℓ_x bits.

use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ring::RingTensor;

/// How the parties truncate a fixed-point product (`2f` fraction bits back to `f`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Truncation {
    /// SecureML's local truncation: no communication, off by at most 1 ulp — except with
    /// probability about `2^(ℓ+1−64)` per value of `ℓ` bits, when a share's wrap makes it off
    /// by about `2^(64−f)` ([`crate::Party::trunc`]).
    #[default]
    Local,
    /// One round with dealer material: off by at most 1 ulp, never more, for every value below
    /// `2^62` in magnitude ([`crate::Party::trunc_exact`]).
    Exact,
}

/// A fixed-point format: `frac_bits` fractional bits and values of magnitude below
/// `2^int_bits`. Public: every party of a session must use the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FixedPoint {
    /// Fractional bits `f` (scale `2^f`).
    pub frac_bits: u32,
    /// Encodable magnitude: `|x| < 2^int_bits`.
    pub int_bits: u32,
}

impl Default for FixedPoint {
    /// `f = 16`, `|x| < 2^31`: 48 significant bits, leaving 16 bits of headroom in the ring for
    /// products of moderately sized values before truncation.
    fn default() -> Self {
        Self { frac_bits: 16, int_bits: 31 }
    }
}

impl FixedPoint {
    /// A format with `frac_bits` fractional and `int_bits` integer bits.
    ///
    /// Errors unless `frac_bits + int_bits ≤ 62` (one sign bit and one bit of headroom).
    pub fn new(frac_bits: u32, int_bits: u32) -> Result<Self> {
        if frac_bits + int_bits > 62 || frac_bits > 40 {
            return Err(Error::InvalidInput(format!(
                "fixed point with {frac_bits} fractional and {int_bits} integer bits does not fit 64 bits"
            )));
        }
        Ok(Self { frac_bits, int_bits })
    }

    /// The scale `2^f` as a float.
    pub fn scale(&self) -> f64 {
        (1u64 << self.frac_bits) as f64
    }

    /// The smallest positive value, `2^-f` (one *ulp*).
    pub fn ulp(&self) -> f64 {
        1.0 / self.scale()
    }

    /// The largest encodable magnitude, `2^int_bits − ulp`.
    pub fn max_value(&self) -> f64 {
        (1u64 << self.int_bits) as f64 - self.ulp()
    }

    /// The ring value of `1.0`.
    pub fn one(&self) -> u64 {
        1u64 << self.frac_bits
    }

    /// Encodes one value.
    pub fn encode(&self, x: f64) -> Result<u64> {
        let overflow = || Error::EncodeOverflow { value: x, int_bits: self.int_bits, frac_bits: self.frac_bits };
        if !x.is_finite() {
            return Err(overflow());
        }
        let scaled = (x * self.scale()).round();
        let limit = (1u64 << (self.int_bits + self.frac_bits)) as f64;
        if scaled.abs() >= limit {
            return Err(overflow());
        }
        Ok((scaled as i64) as u64)
    }

    /// Decodes one ring value (read as two's complement).
    pub fn decode(&self, v: u64) -> f64 {
        (v as i64) as f64 / self.scale()
    }

    /// Encodes a slice into a tensor of the given shape.
    pub fn encode_slice(&self, xs: &[f64], shape: &[usize]) -> Result<RingTensor> {
        let data = xs.iter().map(|&x| self.encode(x)).collect::<Result<Vec<_>>>()?;
        RingTensor::from_vec(shape, data)
    }

    /// Encodes an ndarray of reals.
    pub fn encode_array(&self, xs: &ArrayD<f64>) -> Result<RingTensor> {
        let data = xs.iter().map(|&x| self.encode(x)).collect::<Result<Vec<_>>>()?;
        RingTensor::from_vec(xs.shape(), data)
    }

    /// Decodes a tensor into reals.
    pub fn decode_tensor(&self, t: &RingTensor) -> ArrayD<f64> {
        t.as_array().mapv(|v| self.decode(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edges() {
        let fx = FixedPoint::default();
        assert_eq!(fx.encode(0.0).unwrap(), 0);
        assert_eq!(fx.encode(fx.ulp()).unwrap(), 1);
        assert_eq!(fx.encode(-fx.ulp()).unwrap(), u64::MAX);
        assert_eq!(fx.decode(fx.encode(fx.max_value()).unwrap()), fx.max_value());
        assert_eq!(fx.decode(fx.encode(-fx.max_value()).unwrap()), -fx.max_value());
        for bad in [2f64.powi(31), -(2f64.powi(31)), f64::NAN, f64::INFINITY, 1e300] {
            assert!(matches!(fx.encode(bad), Err(Error::EncodeOverflow { .. })), "{bad}");
        }
        assert!(FixedPoint::new(20, 43).is_err());
        assert!(FixedPoint::new(20, 42).is_ok());
    }

    proptest! {
        #[test]
        fn roundtrip_within_half_ulp(x in -2.0e9f64..2.0e9) {
            let fx = FixedPoint::default();
            let back = fx.decode(fx.encode(x).unwrap());
            prop_assert!((back - x).abs() <= fx.ulp() / 2.0 + 1e-9);
        }
    }
}
