//! Wrapping u64 GEMM (placeholder reference loop; replaced by the blocked kernel).

/// C = A·B over Z_2^64. `a` is m×k row-major, `b` is k×n row-major, `c` is m×n row-major and is
/// overwritten.
///
/// # Panics
/// If a slice length does not match its stated shape (a caller bug).
pub fn gemm(m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) {
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n, "gemm: slice lengths do not match shapes");
    c.fill(0);
    for i in 0..m {
        let crow = &mut c[i * n..(i + 1) * n];
        for p in 0..k {
            let av = a[i * k + p];
            for (cv, bv) in crow.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *cv = cv.wrapping_add(av.wrapping_mul(*bv));
            }
        }
    }
}
