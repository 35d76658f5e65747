//! Additive secret shares.
//!
//! A secret tensor `x` over Z_2^64 is held as `x = x0 + x1` with `x0` at P0 and `x1` at P1.
//! The dealer P2 takes part in every protocol (it produces the correlated randomness in step
//! with the program) but holds no share values: its [`AShare`]s carry only the public shape.
//!
//! `AShare` deliberately implements neither `Serialize` nor `Display`, and its `Debug` prints
//! the shape only, so a share cannot reach a log line or a file by accident. Getting at the
//! values takes an explicit [`AShare::expose_share`].

use crate::error::{Error, Result};
use crate::ids::PartyId;
use crate::ring::RingTensor;

/// One party's additive share of a secret tensor.
#[derive(Clone)]
pub struct AShare(Repr);

#[derive(Clone)]
enum Repr {
    /// P0's or P1's share values.
    Held(RingTensor),
    /// The dealer's placeholder: shape only.
    Dealer(Vec<usize>),
}

impl std::fmt::Debug for AShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Repr::Held(t) => write!(f, "AShare{:?}(..)", t.shape()),
            Repr::Dealer(s) => write!(f, "AShare{s:?}(dealer)"),
        }
    }
}

impl AShare {
    /// Wraps share values held by a computing party.
    pub fn from_share(values: RingTensor) -> Self {
        Self(Repr::Held(values))
    }

    /// The dealer's shape-only placeholder.
    pub fn dealer(shape: &[usize]) -> Self {
        Self(Repr::Dealer(shape.to_vec()))
    }

    /// The public shape.
    pub fn shape(&self) -> &[usize] {
        match &self.0 {
            Repr::Held(t) => t.shape(),
            Repr::Dealer(s) => s,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// Whether the share has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is the dealer's placeholder.
    pub fn is_dealer(&self) -> bool {
        matches!(self.0, Repr::Dealer(_))
    }

    /// This party's share values. Explicit on purpose: the values are one half of a secret and
    /// must not be sent anywhere except through a protocol.
    pub fn expose_share(&self) -> Result<&RingTensor> {
        match &self.0 {
            Repr::Held(t) => Ok(t),
            Repr::Dealer(_) => Err(Error::WrongParty { op: "expose_share", party: PartyId::P2 }),
        }
    }

    /// Consumes the share, returning its values (see [`AShare::expose_share`]).
    pub fn into_share(self) -> Result<RingTensor> {
        match self.0 {
            Repr::Held(t) => Ok(t),
            Repr::Dealer(_) => Err(Error::WrongParty { op: "into_share", party: PartyId::P2 }),
        }
    }

    /// Applies a local, shape-determined linear map to the share values (the dealer computes
    /// only the output shape with `shape_fn`).
    pub fn map_linear(
        &self,
        shape_fn: impl FnOnce(&[usize]) -> Result<Vec<usize>>,
        f: impl FnOnce(&RingTensor) -> Result<RingTensor>,
    ) -> Result<AShare> {
        match &self.0 {
            Repr::Held(t) => {
                let out = f(t)?;
                debug_assert_eq!(out.shape(), shape_fn(t.shape())?.as_slice());
                Ok(Self::from_share(out))
            }
            Repr::Dealer(s) => Ok(Self::dealer(&shape_fn(s)?)),
        }
    }

    fn zip(
        &self,
        rhs: &AShare,
        op: &'static str,
        f: impl FnOnce(&RingTensor, &RingTensor) -> Result<RingTensor>,
    ) -> Result<AShare> {
        match (&self.0, &rhs.0) {
            (Repr::Held(a), Repr::Held(b)) => Ok(Self::from_share(f(a, b)?)),
            (Repr::Dealer(a), Repr::Dealer(b)) if a == b => Ok(Self::dealer(a)),
            _ => Err(Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: rhs.shape().to_vec() }),
        }
    }

    /// `self + rhs` (local).
    pub fn add(&self, rhs: &AShare) -> Result<AShare> {
        self.zip(rhs, "add", RingTensor::add)
    }

    /// `self - rhs` (local).
    pub fn sub(&self, rhs: &AShare) -> Result<AShare> {
        self.zip(rhs, "sub", RingTensor::sub)
    }

    /// `-self` (local).
    pub fn neg(&self) -> AShare {
        self.map_linear(|s| Ok(s.to_vec()), |t| Ok(t.neg())).expect("shape preserved")
    }

    /// `self * k` for a public ring scalar (local).
    pub fn mul_scalar(&self, k: u64) -> AShare {
        self.map_linear(|s| Ok(s.to_vec()), |t| Ok(t.mul_scalar(k))).expect("shape preserved")
    }

    /// Elementwise `self * c` for a public tensor `c` (local).
    pub fn mul_public(&self, c: &RingTensor) -> Result<AShare> {
        if self.shape() != c.shape() {
            return Err(Error::ShapeMismatch { op: "mul_public", lhs: self.shape().to_vec(), rhs: c.shape().to_vec() });
        }
        self.map_linear(|s| Ok(s.to_vec()), |t| t.mul(c))
    }

    /// `self · c` for a public matrix `c` (local): `[m, k] · [k, n]`.
    pub fn matmul_public(&self, c: &RingTensor) -> Result<AShare> {
        let cs = c.shape().to_vec();
        self.map_linear(|s| crate::ring::matmul_dims(s, &cs).map(|(m, _, n)| vec![m, n]), |t| t.matmul(c))
    }

    /// Same elements, new shape (local).
    pub fn reshape(&self, shape: &[usize]) -> Result<AShare> {
        let n: usize = shape.iter().product();
        if n != self.len() {
            return Err(Error::ShapeMismatch { op: "reshape", lhs: self.shape().to_vec(), rhs: shape.to_vec() });
        }
        self.map_linear(|_| Ok(shape.to_vec()), |t| t.clone().reshape(shape))
    }

    /// Sum along `axis`, removing it (local).
    pub fn sum_axis(&self, axis: usize) -> Result<AShare> {
        let shape = self.shape().to_vec();
        if axis >= shape.len() {
            return Err(Error::ShapeMismatch { op: "sum_axis", lhs: shape, rhs: vec![axis] });
        }
        self.map_linear(
            |s| {
                let mut s = s.to_vec();
                s.remove(axis);
                Ok(s)
            },
            |t| t.sum_axis(axis),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_values() {
        let s = AShare::from_share(RingTensor::from_vec(&[2], vec![123456789, 987654321]).unwrap());
        let d = format!("{s:?}");
        assert_eq!(d, "AShare[2](..)");
        assert!(!d.contains("123456789"));
        assert_eq!(format!("{:?}", AShare::dealer(&[3, 4])), "AShare[3, 4](dealer)");
    }

    #[test]
    fn dealer_placeholders_track_shapes() {
        let a = AShare::dealer(&[2, 3]);
        let b = AShare::dealer(&[3, 4]);
        assert_eq!(a.matmul_public(&RingTensor::zeros(&[3, 4])).unwrap().shape(), &[2, 4]);
        assert!(a.add(&b).is_err());
        assert_eq!(a.sum_axis(1).unwrap().shape(), &[2]);
        assert!(a.expose_share().is_err());
    }
}
