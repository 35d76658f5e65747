//! 2-D convolution over Z_2^64 by im2col + GEMM.

use serde::{Deserialize, Serialize};

use super::{RingTensor, gemm};
use crate::error::{Error, Result};

/// Public parameters of a 2-D convolution (NCHW input, OIHW weights, groups = 1, dilation = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conv2dParams {
    /// Stride (vertical, horizontal).
    pub stride: (usize, usize),
    /// Zero padding added on each side (vertical, horizontal).
    pub padding: (usize, usize),
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self { stride: (1, 1), padding: (0, 0) }
    }
}

impl Conv2dParams {
    /// Output shape `[n, o, oh, ow]` of convolving `input` `[n, c, h, w]` with `weight`
    /// `[o, c, kh, kw]`.
    pub fn output_shape(&self, input: &[usize], weight: &[usize]) -> Result<[usize; 4]> {
        let bad = || Error::ShapeMismatch { op: "conv2d", lhs: input.to_vec(), rhs: weight.to_vec() };
        let (&[n, c, h, w], &[o, c2, kh, kw]) = (input, weight) else { return Err(bad()) };
        let (sh, sw) = self.stride;
        let (ph, pw) = self.padding;
        if c != c2 || sh == 0 || sw == 0 || kh == 0 || kw == 0 || h + 2 * ph < kh || w + 2 * pw < kw {
            return Err(bad());
        }
        Ok([n, o, (h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1])
    }
}

/// Unfolds `input` `[n, c, h, w]` into columns `[c·kh·kw, n·oh·ow]`: row `(ci, dy, dx)` holds,
/// for every output position, the input element under kernel offset `(dy, dx)` of channel `ci`
/// (zero in the padding). Linear, so it maps shares to shares.
pub fn im2col(input: &RingTensor, kernel: (usize, usize), p: &Conv2dParams) -> Result<RingTensor> {
    let &[n, c, h, w] = input.shape() else {
        return Err(Error::ShapeMismatch { op: "im2col", lhs: input.shape().to_vec(), rhs: vec![0; 4] });
    };
    let (kh, kw) = kernel;
    let [_, _, oh, ow] = p.output_shape(input.shape(), &[1, c, kh, kw])?;
    let (sh, sw) = p.stride;
    let (ph, pw) = p.padding;
    let cols = n * oh * ow;
    let mut out = vec![0u64; c * kh * kw * cols];
    let x = input.as_slice();
    for ci in 0..c {
        for dy in 0..kh {
            for dx in 0..kw {
                let row = (ci * kh + dy) * kw + dx;
                let dst = &mut out[row * cols..(row + 1) * cols];
                for b in 0..n {
                    let src = &x[(b * c + ci) * h * w..(b * c + ci + 1) * h * w];
                    for oy in 0..oh {
                        // Input row for this output row; outside [0, h) is padding.
                        let iy = (oy * sh + dy).wrapping_sub(ph);
                        let d = &mut dst[(b * oh + oy) * ow..(b * oh + oy + 1) * ow];
                        if iy >= h {
                            continue; // already zero
                        }
                        let srow = &src[iy * w..(iy + 1) * w];
                        for (ox, dv) in d.iter_mut().enumerate() {
                            let ix = (ox * sw + dx).wrapping_sub(pw);
                            if ix < w {
                                *dv = srow[ix];
                            }
                        }
                    }
                }
            }
        }
    }
    RingTensor::from_vec(&[c * kh * kw, cols], out)
}

/// Convolution `[n, c, h, w] ⊛ [o, c, kh, kw] → [n, o, oh, ow]` over Z_2^64 (no bias).
pub fn conv2d(input: &RingTensor, weight: &RingTensor, p: &Conv2dParams) -> Result<RingTensor> {
    let [n, o, oh, ow] = p.output_shape(input.shape(), weight.shape())?;
    let &[_, c, kh, kw] = weight.shape() else { unreachable!("checked by output_shape") };
    let cols = im2col(input, (kh, kw), p)?;
    let k = c * kh * kw;
    let positions = n * oh * ow;
    let mut prod = vec![0u64; o * positions];
    gemm::gemm(o, k, positions, weight.as_slice(), cols.as_slice(), &mut prod);
    // prod is [o, n, oh·ow]; reorder to [n, o, oh·ow].
    let hw = oh * ow;
    let mut out = vec![0u64; n * o * hw];
    for oc in 0..o {
        for b in 0..n {
            out[(b * o + oc) * hw..(b * o + oc + 1) * hw]
                .copy_from_slice(&prod[(oc * n + b) * hw..(oc * n + b + 1) * hw]);
        }
    }
    RingTensor::from_vec(&[n, o, oh, ow], out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prg::Prg;

    fn naive(x: &RingTensor, w: &RingTensor, p: &Conv2dParams) -> RingTensor {
        let [n, o, oh, ow] = p.output_shape(x.shape(), w.shape()).unwrap();
        let (c, h, wd) = (x.shape()[1], x.shape()[2], x.shape()[3]);
        let (kh, kw) = (w.shape()[2], w.shape()[3]);
        let mut out = RingTensor::zeros(&[n, o, oh, ow]);
        let xa = x.as_array();
        let wa = w.as_array();
        for b in 0..n {
            for oc in 0..o {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0u64;
                        for ci in 0..c {
                            for dy in 0..kh {
                                for dx in 0..kw {
                                    let iy = (oy * p.stride.0 + dy) as isize - p.padding.0 as isize;
                                    let ix = (ox * p.stride.1 + dx) as isize - p.padding.1 as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv = xa[[b, ci, iy as usize, ix as usize]];
                                    acc = acc.wrapping_add(xv.wrapping_mul(wa[[oc, ci, dy, dx]]));
                                }
                            }
                        }
                        out.as_mut_slice()[((b * o + oc) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn conv_matches_naive() {
        let mut prg = Prg::from_u64(3);
        for (xs, ws, stride, padding) in [
            ([2, 3, 7, 6], [4, 3, 3, 3], (1, 1), (0, 0)),
            ([1, 1, 5, 5], [2, 1, 3, 3], (2, 2), (1, 1)),
            ([3, 2, 8, 9], [5, 2, 2, 4], (2, 1), (1, 2)),
            ([1, 1, 28, 28], [6, 1, 5, 5], (1, 1), (0, 0)),
            ([1, 2, 1, 1], [1, 2, 1, 1], (1, 1), (0, 0)),
        ] {
            let p = Conv2dParams { stride, padding };
            let x = RingTensor::random(&xs, &mut prg);
            let w = RingTensor::random(&ws, &mut prg);
            assert_eq!(conv2d(&x, &w, &p).unwrap(), naive(&x, &w, &p), "{xs:?} {ws:?} {p:?}");
        }
    }

    #[test]
    fn conv_rejects_bad_shapes() {
        let p = Conv2dParams::default();
        let x = RingTensor::zeros(&[1, 2, 4, 4]);
        assert!(conv2d(&x, &RingTensor::zeros(&[1, 3, 3, 3]), &p).is_err());
        assert!(conv2d(&x, &RingTensor::zeros(&[1, 2, 5, 5]), &p).is_err());
        assert!(conv2d(&RingTensor::zeros(&[2, 4, 4]), &RingTensor::zeros(&[1, 2, 3, 3]), &p).is_err());
        let zero_stride = Conv2dParams { stride: (0, 1), padding: (0, 0) };
        assert!(conv2d(&x, &RingTensor::zeros(&[1, 2, 3, 3]), &zero_stride).is_err());
    }
}
