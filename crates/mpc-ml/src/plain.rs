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

/// 2-D convolution without bias, zero padding, groups = 1.
///
/// # Panics
/// On shapes that do not fit (this is a test reference).
pub fn conv2d(x: &ArrayD<f64>, w: &ArrayD<f64>, stride: (usize, usize), padding: (usize, usize)) -> ArrayD<f64> {
    let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (o, c2, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    assert_eq!(c, c2, "conv2d: channel mismatch");
    let oh = (h + 2 * padding.0 - kh) / stride.0 + 1;
    let ow = (wd + 2 * padding.1 - kw) / stride.1 + 1;
    let mut out = ArrayD::zeros(IxDyn(&[n, o, oh, ow]));
    for b in 0..n {
        for oc in 0..o {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0.0;
                    for ci in 0..c {
                        for dy in 0..kh {
                            for dx in 0..kw {
                                let iy = (oy * stride.0 + dy) as isize - padding.0 as isize;
                                let ix = (ox * stride.1 + dx) as isize - padding.1 as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    acc += x[[b, ci, iy as usize, ix as usize]] * w[[oc, ci, dy, dx]];
                                }
                            }
                        }
                    }
                    out[[b, oc, oy, ox]] = acc;
                }
            }
        }
    }
    out
}

/// Average pooling, zero padding counted in the divisor.
pub fn avg_pool2d(x: &ArrayD<f64>, k: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> ArrayD<f64> {
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let oh = (h + 2 * padding.0 - k.0) / stride.0 + 1;
    let ow = (w + 2 * padding.1 - k.1) / stride.1 + 1;
    let mut out = ArrayD::zeros(IxDyn(&[n, c, oh, ow]));
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0.0;
                    for dy in 0..k.0 {
                        for dx in 0..k.1 {
                            let iy = (oy * stride.0 + dy) as isize - padding.0 as isize;
                            let ix = (ox * stride.1 + dx) as isize - padding.1 as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                acc += x[[b, ch, iy as usize, ix as usize]];
                            }
                        }
                    }
                    out[[b, ch, oy, ox]] = acc / (k.0 * k.1) as f64;
                }
            }
        }
    }
    out
}

/// Max pooling (ONNX semantics: padding never wins).
pub fn max_pool2d(x: &ArrayD<f64>, k: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> ArrayD<f64> {
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let oh = (h + 2 * padding.0 - k.0) / stride.0 + 1;
    let ow = (w + 2 * padding.1 - k.1) / stride.1 + 1;
    let mut out = ArrayD::zeros(IxDyn(&[n, c, oh, ow]));
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut m = f64::NEG_INFINITY;
                    for dy in 0..k.0 {
                        for dx in 0..k.1 {
                            let iy = (oy * stride.0 + dy) as isize - padding.0 as isize;
                            let ix = (ox * stride.1 + dx) as isize - padding.1 as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                m = m.max(x[[b, ch, iy as usize, ix as usize]]);
                            }
                        }
                    }
                    out[[b, ch, oy, ox]] = m;
                }
            }
        }
    }
    out
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
