//! 2-D convolution over Z_2^64 by im2col + GEMM.

use serde::{Deserialize, Serialize};

use super::{RingTensor, gemm};
use crate::error::{Error, Result};

/// Public parameters of a 2-D convolution (NCHW input, OIHW weights `[o, c/groups, kh, kw]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conv2dParams {
    /// Stride (vertical, horizontal).
    pub stride: (usize, usize),
    /// Zero padding added on each side (vertical, horizontal).
    pub padding: (usize, usize),
    /// Spacing of the kernel taps (vertical, horizontal); 1 is a dense kernel.
    #[serde(default = "one_one")]
    pub dilation: (usize, usize),
    /// Channel groups: input and output channels split into `groups` blocks, block `g` of the
    /// output seeing only block `g` of the input (`groups = c` is a depthwise convolution).
    #[serde(default = "one")]
    pub groups: usize,
}

fn one_one() -> (usize, usize) {
    (1, 1)
}

fn one() -> usize {
    1
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self { stride: (1, 1), padding: (0, 0), dilation: (1, 1), groups: 1 }
    }
}

impl Conv2dParams {
    /// Dense, undilated parameters with this stride and padding.
    pub fn new(stride: (usize, usize), padding: (usize, usize)) -> Self {
        Self { stride, padding, ..Self::default() }
    }

    /// Output shape `[n, o, oh, ow]` of convolving `input` `[n, c, h, w]` with `weight`
    /// `[o, c/groups, kh, kw]`.
    pub fn output_shape(&self, input: &[usize], weight: &[usize]) -> Result<[usize; 4]> {
        let bad = || Error::ShapeMismatch { op: "conv2d", lhs: input.to_vec(), rhs: weight.to_vec() };
        let (&[n, c, h, w], &[o, c2, kh, kw]) = (input, weight) else { return Err(bad()) };
        let (sh, sw) = self.stride;
        let (ph, pw) = self.padding;
        let (dh, dw) = self.dilation;
        let g = self.groups;
        if g == 0 || dh == 0 || dw == 0 || c != c2 * g || o % g != 0 || sh == 0 || sw == 0 || kh == 0 || kw == 0 {
            return Err(bad());
        }
        // Checked: the sizes come from model files.
        let span = |len: usize, p: usize, d: usize, k: usize| -> Option<usize> {
            let eff = d.checked_mul(k - 1)?.checked_add(1)?;
            len.checked_add(p.checked_mul(2)?)?.checked_sub(eff)
        };
        let (Some(sh_span), Some(sw_span)) = (span(h, ph, dh, kh), span(w, pw, dw, kw)) else { return Err(bad()) };
        Ok([n, o, sh_span / sh + 1, sw_span / sw + 1])
    }
}

/// Unfolds `input` `[n, c, h, w]` into columns `[c·kh·kw, n·oh·ow]`: row `(ci, dy, dx)` holds,
/// for every output position, the input element under kernel offset `(dy, dx)` of channel `ci`
/// (zero in the padding). Linear, so it maps shares to shares. Groups are ignored here (the
/// caller unfolds one group's channels at a time); dilation spaces the offsets.
pub fn im2col(input: &RingTensor, kernel: (usize, usize), p: &Conv2dParams) -> Result<RingTensor> {
    let &[n, c, h, w] = input.shape() else {
        return Err(Error::ShapeMismatch { op: "im2col", lhs: input.shape().to_vec(), rhs: vec![0; 4] });
    };
    let (kh, kw) = kernel;
    let p = &Conv2dParams { groups: 1, ..*p };
    let [_, _, oh, ow] = p.output_shape(input.shape(), &[1, c, kh, kw])?;
    let (dh, dw) = p.dilation;
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
                        let iy = (oy * sh + dy * dh).wrapping_sub(ph);
                        let d = &mut dst[(b * oh + oy) * ow..(b * oh + oy + 1) * ow];
                        if iy >= h {
                            continue; // already zero
                        }
                        let srow = &src[iy * w..(iy + 1) * w];
                        for (ox, dv) in d.iter_mut().enumerate() {
                            let ix = (ox * sw + dx * dw).wrapping_sub(pw);
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

/// Convolution `[n, c, h, w] ⊛ [o, c/groups, kh, kw] → [n, o, oh, ow]` over Z_2^64 (no bias).
pub fn conv2d(input: &RingTensor, weight: &RingTensor, p: &Conv2dParams) -> Result<RingTensor> {
    let [n, o, oh, ow] = p.output_shape(input.shape(), weight.shape())?;
    if p.groups > 1 {
        return grouped(input, weight, p, [n, o, oh, ow]);
    }
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

/// Output length of a pooling window `k` with stride `s` and padding `p` on both ends over an
/// axis of length `len` (ONNX MaxPool/AveragePool): `⌊(len + 2p − k)/s⌋ + 1`, or with
/// `ceil_mode` `⌈(len + 2p − k)/s⌉ + 1` less one if the last window would start in the end
/// padding. `None` when the window does not fit or a parameter is zero.
pub fn pool_out_len(len: usize, k: usize, s: usize, p: usize, ceil: bool) -> Option<usize> {
    let padded = p.checked_mul(2).and_then(|p2| len.checked_add(p2))?;
    if k == 0 || s == 0 || padded < k {
        return None;
    }
    let span = padded - k;
    let mut out = if ceil { span.div_ceil(s) + 1 } else { span / s + 1 };
    if ceil && (out - 1) * s >= len + p {
        out -= 1;
    }
    Some(out)
}

/// A grouped convolution as one dense convolution per group of channels.
fn grouped(input: &RingTensor, weight: &RingTensor, p: &Conv2dParams, out: [usize; 4]) -> Result<RingTensor> {
    let [n, o, oh, ow] = out;
    let &[_, c, h, w] = input.shape() else { unreachable!("checked by output_shape") };
    let (g, cg, og) = (p.groups, c / p.groups, o / p.groups);
    let per_w = weight.len() / o;
    let dense = Conv2dParams { groups: 1, ..*p };
    let x = input.as_slice();
    let mut y = vec![0u64; n * o * oh * ow];
    let hw = oh * ow;
    for gi in 0..g {
        let mut xs = Vec::with_capacity(n * cg * h * w);
        for b in 0..n {
            xs.extend_from_slice(&x[(b * c + gi * cg) * h * w..(b * c + (gi + 1) * cg) * h * w]);
        }
        let xs = RingTensor::from_vec(&[n, cg, h, w], xs)?;
        let ws = weight.as_slice()[gi * og * per_w..(gi + 1) * og * per_w].to_vec();
        let ws = RingTensor::from_vec(&[og, cg, weight.shape()[2], weight.shape()[3]], ws)?;
        let part = conv2d(&xs, &ws, &dense)?;
        for b in 0..n {
            y[(b * o + gi * og) * hw..(b * o + (gi + 1) * og) * hw]
                .copy_from_slice(&part.as_slice()[b * og * hw..(b + 1) * og * hw]);
        }
    }
    RingTensor::from_vec(&[n, o, oh, ow], y)
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
                        let cg = c / p.groups;
                        let g = oc / (o / p.groups);
                        for ci in g * cg..(g + 1) * cg {
                            for dy in 0..kh {
                                for dx in 0..kw {
                                    let iy = (oy * p.stride.0 + dy * p.dilation.0) as isize - p.padding.0 as isize;
                                    let ix = (ox * p.stride.1 + dx * p.dilation.1) as isize - p.padding.1 as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv = xa[[b, ci, iy as usize, ix as usize]];
                                    acc = acc.wrapping_add(xv.wrapping_mul(wa[[oc, ci - g * cg, dy, dx]]));
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
            let p = Conv2dParams::new(stride, padding);
            let x = RingTensor::random(&xs, &mut prg);
            let w = RingTensor::random(&ws, &mut prg);
            assert_eq!(conv2d(&x, &w, &p).unwrap(), naive(&x, &w, &p), "{xs:?} {ws:?} {p:?}");
        }
    }

    #[test]
    fn grouped_and_dilated_conv_match_naive() {
        let mut prg = Prg::from_u64(4);
        for (xs, ws, stride, padding, dilation, groups) in [
            ([2, 4, 7, 6], [4, 1, 3, 3], (1, 1), (1, 1), (1, 1), 4), // depthwise
            ([1, 6, 9, 9], [4, 3, 3, 3], (2, 2), (1, 1), (1, 1), 2),
            ([1, 2, 9, 8], [3, 2, 3, 3], (1, 1), (2, 2), (2, 2), 1),
            ([2, 4, 10, 10], [8, 2, 3, 2], (2, 1), (2, 1), (2, 3), 2),
        ] {
            let p = Conv2dParams { stride, padding, dilation, groups };
            let x = RingTensor::random(&xs, &mut prg);
            let w = RingTensor::random(&ws, &mut prg);
            assert_eq!(conv2d(&x, &w, &p).unwrap(), naive(&x, &w, &p), "{xs:?} {ws:?} {p:?}");
        }
        let p = Conv2dParams { groups: 3, ..Conv2dParams::default() };
        assert!(conv2d(&RingTensor::zeros(&[1, 4, 4, 4]), &RingTensor::zeros(&[3, 1, 1, 1]), &p).is_err());
    }

    #[test]
    fn conv_rejects_bad_shapes() {
        let p = Conv2dParams::default();
        let x = RingTensor::zeros(&[1, 2, 4, 4]);
        assert!(conv2d(&x, &RingTensor::zeros(&[1, 3, 3, 3]), &p).is_err());
        assert!(conv2d(&x, &RingTensor::zeros(&[1, 2, 5, 5]), &p).is_err());
        assert!(conv2d(&RingTensor::zeros(&[2, 4, 4]), &RingTensor::zeros(&[1, 2, 3, 3]), &p).is_err());
        let zero_stride = Conv2dParams::new((0, 1), (0, 0));
        assert!(conv2d(&x, &RingTensor::zeros(&[1, 2, 3, 3]), &zero_stride).is_err());
    }
}
