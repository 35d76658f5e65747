//! The ring Z_2^64 and tensors over it.
//!
//! Every ring value is a `u64` and every operation on ring values wraps. Plain `+`/`*` on ring
//! values are bugs (they panic in debug builds on overflow); use the [`Ring`] methods or the
//! tensor operations here.

mod conv;
pub mod gemm;

pub use conv::{Conv2dParams, conv2d, im2col, pool_out_len};

use ndarray::{ArrayD, IxDyn};

use crate::error::{Error, Result};

/// A commutative ring with the operations the protocols need, shaped like swanky's
/// `FiniteRing`. Implemented for `u64` (Z_2^64); a future Z_2^k or Z_2 sharing slots in here.
pub trait Ring: Copy + Eq + std::fmt::Debug + Send + Sync + 'static {
    /// The additive identity.
    const ZERO: Self;
    /// The multiplicative identity.
    const ONE: Self;
    /// `self + rhs` in the ring.
    fn add(self, rhs: Self) -> Self;
    /// `self - rhs` in the ring.
    fn sub(self, rhs: Self) -> Self;
    /// `-self` in the ring.
    fn neg(self) -> Self;
    /// `self * rhs` in the ring.
    fn mul(self, rhs: Self) -> Self;
}

impl Ring for u64 {
    const ZERO: Self = 0;
    const ONE: Self = 1;
    #[inline(always)]
    fn add(self, rhs: Self) -> Self {
        self.wrapping_add(rhs)
    }
    #[inline(always)]
    fn sub(self, rhs: Self) -> Self {
        self.wrapping_sub(rhs)
    }
    #[inline(always)]
    fn neg(self) -> Self {
        self.wrapping_neg()
    }
    #[inline(always)]
    fn mul(self, rhs: Self) -> Self {
        self.wrapping_mul(rhs)
    }
}

/// An n-dimensional tensor over Z_2^64, stored row-major (standard layout, always).
///
/// `RingTensor` holds public values or one party's share values; it prints its values in
/// `Debug`, so secret-bearing code wraps it in [`AShare`](crate::AShare), which does not.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RingTensor(ArrayD<u64>);

fn same_shape(op: &'static str, a: &RingTensor, b: &RingTensor) -> Result<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(Error::ShapeMismatch { op, lhs: a.shape().to_vec(), rhs: b.shape().to_vec() })
    }
}

impl RingTensor {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self(ArrayD::zeros(IxDyn(shape)))
    }

    /// A tensor from row-major data; errors if `data.len()` is not the product of `shape`.
    pub fn from_vec(shape: &[usize], data: Vec<u64>) -> Result<Self> {
        let expect: usize = shape.iter().product();
        if data.len() != expect {
            return Err(Error::ShapeMismatch { op: "from_vec", lhs: vec![data.len()], rhs: shape.to_vec() });
        }
        Ok(Self(ArrayD::from_shape_vec(IxDyn(shape), data).expect("length checked above")))
    }

    /// Wraps an ndarray (copied into standard layout if it is not already).
    pub fn from_array(a: ArrayD<u64>) -> Self {
        if a.is_standard_layout() { Self(a) } else { Self(a.as_standard_layout().into_owned()) }
    }

    /// A tensor filled with one value.
    pub fn filled(shape: &[usize], v: u64) -> Self {
        Self(ArrayD::from_elem(IxDyn(shape), v))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.0.shape()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The elements, row-major.
    pub fn as_slice(&self) -> &[u64] {
        self.0.as_slice().expect("RingTensor invariant: standard layout")
    }

    /// The elements, row-major, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u64] {
        self.0.as_slice_mut().expect("RingTensor invariant: standard layout")
    }

    /// The underlying ndarray.
    pub fn as_array(&self) -> &ArrayD<u64> {
        &self.0
    }

    /// Consumes the tensor, returning the row-major elements.
    pub fn into_vec(self) -> Vec<u64> {
        let (v, offset) = self.0.into_raw_vec_and_offset();
        debug_assert!(offset.unwrap_or(0) == 0);
        v
    }

    /// Same elements, new shape (same number of elements).
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        let old = self.shape().to_vec();
        let n: usize = shape.iter().product();
        if n != self.len() {
            return Err(Error::ShapeMismatch { op: "reshape", lhs: old, rhs: shape.to_vec() });
        }
        Self::from_vec(shape, self.into_vec())
    }

    /// Elementwise `self + rhs`.
    pub fn add(&self, rhs: &Self) -> Result<Self> {
        same_shape("add", self, rhs)?;
        Ok(self.zip_map(rhs, u64::wrapping_add))
    }

    /// Elementwise `self - rhs`.
    pub fn sub(&self, rhs: &Self) -> Result<Self> {
        same_shape("sub", self, rhs)?;
        Ok(self.zip_map(rhs, u64::wrapping_sub))
    }

    /// Elementwise `self * rhs` (Hadamard product).
    pub fn mul(&self, rhs: &Self) -> Result<Self> {
        same_shape("mul", self, rhs)?;
        Ok(self.zip_map(rhs, u64::wrapping_mul))
    }

    /// In place `self += rhs`.
    pub fn add_assign(&mut self, rhs: &Self) -> Result<()> {
        same_shape("add", self, rhs)?;
        for (a, b) in self.as_mut_slice().iter_mut().zip(rhs.as_slice()) {
            *a = a.wrapping_add(*b);
        }
        Ok(())
    }

    /// In place `self -= rhs`.
    pub fn sub_assign(&mut self, rhs: &Self) -> Result<()> {
        same_shape("sub", self, rhs)?;
        for (a, b) in self.as_mut_slice().iter_mut().zip(rhs.as_slice()) {
            *a = a.wrapping_sub(*b);
        }
        Ok(())
    }

    /// Elementwise `-self`.
    pub fn neg(&self) -> Self {
        self.map(u64::wrapping_neg)
    }

    /// Every element times a ring scalar.
    pub fn mul_scalar(&self, k: u64) -> Self {
        self.map(|v| v.wrapping_mul(k))
    }

    /// Every element plus a ring scalar.
    pub fn add_scalar(&self, k: u64) -> Self {
        self.map(|v| v.wrapping_add(k))
    }

    /// Arithmetic (sign-extending) right shift of every element, reading it as two's complement.
    pub fn shr_arith(&self, bits: u32) -> Self {
        self.map(|v| ((v as i64) >> bits) as u64)
    }

    /// Applies `f` to every element.
    pub fn map(&self, f: impl Fn(u64) -> u64) -> Self {
        Self(self.0.mapv(f))
    }

    fn zip_map(&self, rhs: &Self, f: impl Fn(u64, u64) -> u64) -> Self {
        let data = self.as_slice().iter().zip(rhs.as_slice()).map(|(&a, &b)| f(a, b)).collect();
        Self::from_vec(self.shape(), data).expect("same shape checked by caller")
    }

    /// Matrix product of two 2-D tensors, `[m, k] · [k, n] → [m, n]`, with the wrapping GEMM.
    pub fn matmul(&self, rhs: &Self) -> Result<Self> {
        let (m, k, n) = matmul_dims(self.shape(), rhs.shape())?;
        let mut out = vec![0u64; m * n];
        gemm::gemm(m, k, n, self.as_slice(), rhs.as_slice(), &mut out);
        Self::from_vec(&[m, n], out)
    }

    /// Transpose of a 2-D tensor.
    pub fn transpose(&self) -> Result<Self> {
        if self.0.ndim() != 2 {
            return Err(Error::ShapeMismatch { op: "transpose", lhs: self.shape().to_vec(), rhs: vec![0, 0] });
        }
        Ok(Self::from_array(self.0.t().to_owned()))
    }

    /// Sum along `axis`, removing it.
    pub fn sum_axis(&self, axis: usize) -> Result<Self> {
        if axis >= self.0.ndim() {
            return Err(Error::ShapeMismatch { op: "sum_axis", lhs: self.shape().to_vec(), rhs: vec![axis] });
        }
        let out = self.0.fold_axis(ndarray::Axis(axis), 0u64, |acc, &v| acc.wrapping_add(v));
        Ok(Self::from_array(out))
    }

    /// Adds a `[n]` row vector to every row of a `[.., n]` tensor (bias add).
    pub fn add_row_broadcast(&self, row: &Self) -> Result<Self> {
        let n = *self.shape().last().unwrap_or(&0);
        if row.shape() != [n] {
            return Err(Error::ShapeMismatch {
                op: "add_row_broadcast",
                lhs: self.shape().to_vec(),
                rhs: row.shape().to_vec(),
            });
        }
        let mut out = self.clone();
        if n > 0 {
            for chunk in out.as_mut_slice().chunks_exact_mut(n) {
                for (a, b) in chunk.iter_mut().zip(row.as_slice()) {
                    *a = a.wrapping_add(*b);
                }
            }
        }
        Ok(out)
    }

    /// A tensor of uniformly random ring elements from `rng`.
    pub fn random(shape: &[usize], rng: &mut crate::prg::Prg) -> Self {
        let mut data = vec![0u64; shape.iter().product()];
        rng.fill(&mut data);
        Self::from_vec(shape, data).expect("length matches shape")
    }
}

/// Checks `[m, k] · [k, n]` and returns `(m, k, n)`.
pub(crate) fn matmul_dims(a: &[usize], b: &[usize]) -> Result<(usize, usize, usize)> {
    match (a, b) {
        ([m, k], [k2, n]) if k == k2 => Ok((*m, *k, *n)),
        _ => Err(Error::ShapeMismatch { op: "matmul", lhs: a.to_vec(), rhs: b.to_vec() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Ring laws for any `Ring` implementation, checked on random elements.
    macro_rules! ring_laws {
        ($name:ident, $t:ty) => {
            proptest! {
                #[test]
                fn $name(a: $t, b: $t, c: $t) {
                    prop_assert_eq!(a.add(b), b.add(a));
                    prop_assert_eq!(a.mul(b), b.mul(a));
                    prop_assert_eq!(a.add(b).add(c), a.add(b.add(c)));
                    prop_assert_eq!(a.mul(b).mul(c), a.mul(b.mul(c)));
                    prop_assert_eq!(a.mul(b.add(c)), a.mul(b).add(a.mul(c)));
                    prop_assert_eq!(a.add(<$t>::ZERO), a);
                    prop_assert_eq!(a.mul(<$t>::ONE), a);
                    prop_assert_eq!(a.add(a.neg()), <$t>::ZERO);
                    prop_assert_eq!(a.sub(b), a.add(b.neg()));
                }
            }
        };
    }
    ring_laws!(u64_ring_laws, u64);

    proptest! {
        #[test]
        fn tensor_ops_match_elementwise(v in proptest::collection::vec(any::<(u64, u64)>(), 1..64)) {
            let (a, b): (Vec<u64>, Vec<u64>) = v.into_iter().unzip();
            let n = a.len();
            let ta = RingTensor::from_vec(&[n], a.clone()).unwrap();
            let tb = RingTensor::from_vec(&[n], b.clone()).unwrap();
            let s = ta.add(&tb).unwrap();
            let d = ta.sub(&tb).unwrap();
            let p = ta.mul(&tb).unwrap();
            for i in 0..n {
                prop_assert_eq!(s.as_slice()[i], a[i].wrapping_add(b[i]));
                prop_assert_eq!(d.as_slice()[i], a[i].wrapping_sub(b[i]));
                prop_assert_eq!(p.as_slice()[i], a[i].wrapping_mul(b[i]));
            }
            prop_assert_eq!(d.add(&tb).unwrap(), ta);
        }

        #[test]
        fn matmul_matches_naive(m in 0usize..9, k in 0usize..9, n in 0usize..9, seed: u64) {
            let mut prg = crate::prg::Prg::from_u64(seed);
            let a = RingTensor::random(&[m, k], &mut prg);
            let b = RingTensor::random(&[k, n], &mut prg);
            let c = a.matmul(&b).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0u64;
                    for p in 0..k {
                        acc = acc.wrapping_add(a.as_slice()[i * k + p].wrapping_mul(b.as_slice()[p * n + j]));
                    }
                    prop_assert_eq!(c.as_slice()[i * n + j], acc);
                }
            }
        }
    }

    #[test]
    fn shape_errors() {
        let a = RingTensor::zeros(&[2, 3]);
        let b = RingTensor::zeros(&[3, 2]);
        assert!(matches!(a.add(&b), Err(Error::ShapeMismatch { op: "add", .. })));
        assert!(matches!(a.matmul(&a), Err(Error::ShapeMismatch { op: "matmul", .. })));
        assert!(RingTensor::from_vec(&[2, 2], vec![1, 2, 3]).is_err());
        assert!(a.clone().reshape(&[5]).is_err());
        assert_eq!(a.reshape(&[6]).unwrap().shape(), &[6]);
    }

    #[test]
    fn shr_arith_sign_extends() {
        let t = RingTensor::from_vec(&[2], vec![(-8i64) as u64, 8]).unwrap();
        assert_eq!(t.shr_arith(2).as_slice(), &[(-2i64) as u64, 2]);
    }
}
