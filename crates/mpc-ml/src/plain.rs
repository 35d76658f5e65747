//! Plaintext `f64` reference implementations (NCHW tensors, OIHW weights).
//!
//! Straightforward loops, written for obviousness rather than speed: they are the ground truth
//! the secure protocols are tested against.

use ndarray::{Array2, ArrayD, Axis, Ix2, IxDyn};

/// `x · w` for 2-D arrays.
///
/// # Panics
/// If the arrays are not 2-D with matching inner dimensions.
pub fn matmul(x: &ArrayD<f64>, w: &ArrayD<f64>) -> ArrayD<f64> {
    let x: Array2<f64> = x.clone().into_dimensionality::<Ix2>().expect("matmul: x must be 2-D");
    let w: Array2<f64> = w.clone().into_dimensionality::<Ix2>().expect("matmul: w must be 2-D");
    x.dot(&w).into_dyn()
}

/// Elementwise product.
pub fn mul(x: &ArrayD<f64>, y: &ArrayD<f64>) -> ArrayD<f64> {
    x * y
}

/// 2-D convolution without bias, zero padding, groups = 1: [`conv2d_ext`] with dilation 1.
///
/// # Panics
/// On shapes that do not fit (this is a test reference).
pub fn conv2d(x: &ArrayD<f64>, w: &ArrayD<f64>, stride: (usize, usize), padding: (usize, usize)) -> ArrayD<f64> {
    conv2d_ext(x, w, stride, padding, (1, 1), 1)
}

/// Average pooling, zero padding counted in the divisor.
pub fn avg_pool2d(x: &ArrayD<f64>, k: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> ArrayD<f64> {
    avg_pool2d_ext(x, k, stride, padding, true, false)
}

/// Max pooling (ONNX semantics: padding never wins).
pub fn max_pool2d(x: &ArrayD<f64>, k: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> ArrayD<f64> {
    max_pool2d_ext(x, k, stride, padding, false)
}

/// 2-D convolution without bias, zero padding, with dilation and channel groups (weights
/// `[o, c/groups, kh, kw]`).
///
/// # Panics
/// On shapes that do not fit (this is a test reference).
pub fn conv2d_ext(
    x: &ArrayD<f64>,
    w: &ArrayD<f64>,
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> ArrayD<f64> {
    let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (o, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    assert_eq!(c, cg * groups, "conv2d: channel mismatch");
    let og = o / groups;
    let oh = (h + 2 * padding.0 - dilation.0 * (kh - 1) - 1) / stride.0 + 1;
    let ow = (wd + 2 * padding.1 - dilation.1 * (kw - 1) - 1) / stride.1 + 1;
    // Plain index arithmetic over contiguous copies: the same sums as the textbook loop.
    let xs: Vec<f64> = x.iter().copied().collect();
    let ws: Vec<f64> = w.iter().copied().collect();
    let mut out = vec![0.0; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            let g = oc / og;
            let acc = &mut out[(b * o + oc) * oh * ow..(b * o + oc + 1) * oh * ow];
            for ci in 0..cg {
                let plane = &xs[(b * c + g * cg + ci) * h * wd..(b * c + g * cg + ci + 1) * h * wd];
                for dy in 0..kh {
                    for dx in 0..kw {
                        let wv = ws[((oc * cg + ci) * kh + dy) * kw + dx];
                        for oy in 0..oh {
                            let iy = (oy * stride.0 + dy * dilation.0) as isize - padding.0 as isize;
                            if iy < 0 || iy as usize >= h {
                                continue;
                            }
                            let row = &plane[iy as usize * wd..(iy as usize + 1) * wd];
                            for ox in 0..ow {
                                let ix = (ox * stride.1 + dx * dilation.1) as isize - padding.1 as isize;
                                if ix >= 0 && (ix as usize) < wd {
                                    acc[oy * ow + ox] += row[ix as usize] * wv;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(&[n, o, oh, ow]), out).expect("shape")
}

fn out_len(len: usize, k: usize, s: usize, p: usize, ceil: bool) -> usize {
    mpc_proto::ring::pool_out_len(len, k, s, p, ceil).expect("the window fits the padded input")
}

/// Max pooling with ONNX `ceil_mode` (padding and overhang never win).
pub fn max_pool2d_ext(
    x: &ArrayD<f64>,
    k: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    ceil: bool,
) -> ArrayD<f64> {
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (oh, ow) = (out_len(h, k.0, stride.0, padding.0, ceil), out_len(w, k.1, stride.1, padding.1, ceil));
    ArrayD::from_shape_fn(IxDyn(&[n, c, oh, ow]), |ix| {
        let mut m = f64::NEG_INFINITY;
        for dy in 0..k.0 {
            for dx in 0..k.1 {
                let iy = (ix[2] * stride.0 + dy) as isize - padding.0 as isize;
                let jx = (ix[3] * stride.1 + dx) as isize - padding.1 as isize;
                if iy >= 0 && jx >= 0 && (iy as usize) < h && (jx as usize) < w {
                    m = m.max(x[[ix[0], ix[1], iy as usize, jx as usize]]);
                }
            }
        }
        m
    })
}

/// Average pooling with ONNX semantics: `count_include_pad` counts the padding (but not a
/// `ceil_mode` overhang beyond it) in the divisor; otherwise only real elements count.
pub fn avg_pool2d_ext(
    x: &ArrayD<f64>,
    k: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    count_include_pad: bool,
    ceil: bool,
) -> ArrayD<f64> {
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (oh, ow) = (out_len(h, k.0, stride.0, padding.0, ceil), out_len(w, k.1, stride.1, padding.1, ceil));
    ArrayD::from_shape_fn(IxDyn(&[n, c, oh, ow]), |ix| {
        let (y0, x0) =
            ((ix[2] * stride.0) as isize - padding.0 as isize, (ix[3] * stride.1) as isize - padding.1 as isize);
        let (y1, x1) = (y0 + k.0 as isize, x0 + k.1 as isize);
        let (mut sum, mut real) = (0.0, 0usize);
        for iy in y0.max(0)..y1.min(h as isize) {
            for jx in x0.max(0)..x1.min(w as isize) {
                sum += x[[ix[0], ix[1], iy as usize, jx as usize]];
                real += 1;
            }
        }
        let padded =
            (y1.min((h + padding.0) as isize) - y0) as usize * (x1.min((w + padding.1) as isize) - x0) as usize;
        sum / if count_include_pad { padded } else { real } as f64
    })
}

/// Logistic sigmoid elementwise.
pub fn sigmoid(x: &ArrayD<f64>) -> ArrayD<f64> {
    x.mapv(|v| 1.0 / (1.0 + (-v).exp()))
}

/// Softmax over the last axis.
pub fn softmax(x: &ArrayD<f64>) -> ArrayD<f64> {
    let last = Axis(x.ndim() - 1);
    let mut out = x.clone();
    for mut row in out.lanes_mut(last) {
        let m = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
    }
    out
}

/// `max(x, 0)` elementwise.
pub fn relu(x: &ArrayD<f64>) -> ArrayD<f64> {
    x.mapv(|v| v.max(0.0))
}

/// Mean over the first axis.
pub fn mean_axis0(x: &ArrayD<f64>) -> ArrayD<f64> {
    x.mean_axis(Axis(0)).expect("mean of an empty axis")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_identity_kernel_copies_input() {
        let x = ArrayD::from_shape_fn(IxDyn(&[1, 1, 3, 3]), |i| (i[2] * 3 + i[3]) as f64);
        let w = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 1.0);
        assert_eq!(conv2d(&x, &w, (1, 1), (0, 0)), x);
        let p = avg_pool2d(&x, (3, 3), (1, 1), (0, 0));
        assert_eq!(p[[0, 0, 0, 0]], 4.0);
    }
}
