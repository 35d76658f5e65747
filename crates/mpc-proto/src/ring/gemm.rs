//! Cache-blocked, register-tiled matrix multiplication over the ring Z_2^64.
//!
//! Every ring value is a `u64` and every operation on ring values is a wrapping
//! one, so results are exact modulo 2^64 and debug builds never trip overflow
//! checks.
//!
//! Structure (the usual Goto/BLIS decomposition):
//!
//! * `B` is packed one `kc × nc` block at a time into column panels `NR` wide,
//!   `A` one `mc × kc` block at a time into row panels `MR` tall. Panels are
//!   zero-padded to full tile size, so the micro-kernel never sees a ragged
//!   edge; only the final store into `C` is clipped.
//! * The micro-kernel keeps an `MR × NR` accumulator tile in registers and
//!   streams one `MR` column of `A` and one `NR` row of `B` per step of `k`.
//!   It is plain Rust over `u64` arrays; LLVM vectorises it according to the
//!   target features of the function it is inlined into.
//! * Runtime dispatch picks an AVX-512 (`vpmullq`), AVX2 or portable
//!   instantiation of that same code, so a default (`x86-64` baseline) build
//!   still uses the wide kernels where the CPU has them.

use std::cell::Cell;
use std::sync::OnceLock;

/// A micro-kernel instantiation. Exposed (hidden) so tests and benchmarks can
/// force a particular path; normal callers use [`gemm`] / [`gemm_threads`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// 512-bit lanes with the native 64-bit multiply (`avx512f` + `avx512dq`).
    Avx512,
    /// 256-bit lanes; the 64-bit multiply is built from 32×32→64 products.
    Avx2,
    /// Whatever the compilation target offers (SSE2 on baseline x86-64).
    Portable,
}

impl Kernel {
    /// Every kernel, widest first.
    pub const ALL: [Kernel; 3] = [Kernel::Avx512, Kernel::Avx2, Kernel::Portable];

    /// Name used in benchmark reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        match self {
            #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
            Kernel::Avx512 => std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq"),
            #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
            Kernel::Avx2 => std::is_x86_feature_detected!("avx2"),
            Kernel::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Default cache blocking for this kernel (see [`Blocking`]).
    ///
    /// Chosen by sweeping mc ∈ 48..512, kc ∈ 128..784, nc ∈ 256..4096 at
    /// 512³, 128×784×128 and 1536³ on a 2-core AVX-512 Xeon (48 KiB L1d,
    /// 2 MiB L2). The kernels are bound by multiplier throughput, not memory,
    /// so the surface is flat (±3%) at the small shapes; at 1536³ a deep kc
    /// (fewer read-modify-write passes over C) was worth ~5%.
    pub fn blocking(self) -> Blocking {
        match self {
            Kernel::Avx512 => Blocking { mc: 96, kc: 512, nc: 4096 },
            Kernel::Avx2 => Blocking { mc: 192, kc: 256, nc: 2048 },
            Kernel::Portable => Blocking { mc: 144, kc: 256, nc: 2048 },
        }
    }
}

/// Cache-blocking parameters.
///
/// `kc × NR` words of packed `B` (one micro-panel) should stay in L1 while the
/// kernel sweeps the `A` panels, `mc × kc` words of packed `A` should stay in
/// L2, and `kc × nc` of packed `B` in the outer cache. Values are rounded up
/// to tile multiples internally; zero is treated as one tile.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of `A` packed per block.
    pub mc: usize,
    /// Depth (shared dimension) per block.
    pub kc: usize,
    /// Columns of `B` packed per block.
    pub nc: usize,
}

/// C = A·B over Z_2^64. `a` is m×k row-major, `b` is k×n row-major, `c` is
/// m×n row-major and is overwritten (its previous contents are ignored).
///
/// Runs on the calling thread with the widest kernel this CPU supports
/// (see [`kernel_name`]).
///
/// # Panics
///
/// Only if a slice length does not equal the product of its stated dimensions
/// (`a.len() != m*k`, `b.len() != k*n` or `c.len() != m*n`), or such a product
/// overflows `usize`. Both are caller bugs.
pub fn gemm(m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) {
    gemm_threads(m, k, n, a, b, c, 1);
}

/// Same as [`gemm`], splitting the rows of `C` over up to `threads` OS threads
/// (`std::thread::scope`). `threads <= 1` runs on the calling thread without
/// spawning; the calling thread always takes one share of the work. Small
/// products may use fewer threads than requested.
///
/// # Panics
///
/// As [`gemm`]; also if spawning a thread fails.
pub fn gemm_threads(m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64], threads: usize) {
    let kernel = selected_kernel();
    gemm_with(kernel, kernel.blocking(), m, k, n, a, b, c, threads);
}

/// Which kernel runtime dispatch picked (`"avx512"`, `"avx2"` or
/// `"portable"`), for benchmark reports.
pub fn kernel_name() -> &'static str {
    selected_kernel().name()
}

/// The widest available kernel; detected once per process.
fn selected_kernel() -> Kernel {
    static SELECTED: OnceLock<Kernel> = OnceLock::new();
    *SELECTED.get_or_init(|| Kernel::ALL.into_iter().find(|k| k.available()).unwrap_or(Kernel::Portable))
}

/// Fewer multiply-adds than this run on one thread: spawning costs more than
/// it saves.
const MIN_WORK_PER_THREAD: usize = 1 << 18;

/// Row shares given to threads are multiples of this, so only the last share
/// has a partial `MR` tile (it is a multiple of every kernel's `MR`).
const ROW_GRAIN: usize = 8;

/// [`gemm_threads`] with an explicit kernel and blocking; for tests, tuning
/// and benchmarks.
///
/// # Panics
///
/// As [`gemm`]; also if `kernel` is not [`Kernel::available`] on this CPU.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
// The one place the protocols start threads (clippy.toml): one product across cores.
#[allow(clippy::disallowed_methods)]
pub fn gemm_with(
    kernel: Kernel,
    blocking: Blocking,
    m: usize,
    k: usize,
    n: usize,
    a: &[u64],
    b: &[u64],
    c: &mut [u64],
    threads: usize,
) {
    check_len("a", a.len(), m, k);
    check_len("b", b.len(), k, n);
    check_len("c", c.len(), m, n);
    assert!(kernel.available(), "kernel {} is not supported by this CPU", kernel.name());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0);
        return;
    }

    // Work is at most a*b*c where each factor fits usize; saturate rather
    // than overflow for the heuristic.
    let work = m.saturating_mul(k).saturating_mul(n);
    let by_work = (work / MIN_WORK_PER_THREAD).max(1);
    let by_rows = m.div_ceil(ROW_GRAIN);
    let threads = threads.min(by_work).min(by_rows).max(1);
    if threads == 1 {
        run(kernel, blocking, m, k, n, a, b, c);
        return;
    }
    let rows_per = m.div_ceil(threads).next_multiple_of(ROW_GRAIN);
    // k, n > 0 here, so the chunk sizes are non-zero.
    let mut shares = c.chunks_mut(rows_per * n).zip(a.chunks(rows_per * k)).map(|(cs, as_)| (cs.len() / n, as_, cs));
    let (own_rows, own_a, own_c) = shares.next().expect("m > 0 gives a first share");
    std::thread::scope(|s| {
        for (rows, as_, cs) in shares {
            s.spawn(move || run(kernel, blocking, rows, k, n, as_, b, cs));
        }
        run(kernel, blocking, own_rows, k, n, own_a, b, own_c);
    });
}

fn check_len(name: &str, len: usize, rows: usize, cols: usize) {
    let want = rows.checked_mul(cols).unwrap_or_else(|| panic!("gemm: {name} shape {rows}x{cols} overflows usize"));
    assert_eq!(len, want, "gemm: {name}.len() = {len} does not match shape {rows}x{cols}");
}

/// Single-threaded product on a validated, non-degenerate shape.
#[allow(clippy::too_many_arguments)]
fn run(kernel: Kernel, bl: Blocking, m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) {
    match kernel {
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        Kernel::Avx512 if Kernel::Avx512.available() => {
            #[allow(unsafe_code)]
            // SAFETY: the match guard has just verified at runtime that this
            // CPU supports avx512f and avx512dq, the features `x86::avx512`
            // is compiled for; it has no other preconditions.
            unsafe {
                x86::avx512(bl, m, k, n, a, b, c)
            }
        }
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        Kernel::Avx2 if Kernel::Avx2.available() => {
            #[allow(unsafe_code)]
            // SAFETY: the match guard has just verified at runtime that this
            // CPU supports avx2, the feature `x86::avx2` is compiled for; it
            // has no other preconditions.
            unsafe {
                x86::avx2(bl, m, k, n, a, b, c)
            }
        }
        Kernel::Portable => driver::<PORTABLE_MR, PORTABLE_NR, false>(bl, m, k, n, a, b, c),
        // `gemm_with` asserted availability; detection results do not change.
        _ => unreachable!("kernel {} not available", kernel.name()),
    }
}

/// Portable tile: 4×4 = 16 accumulators. On baseline x86-64 (SSE2, no 64-bit
/// vector multiply) LLVM keeps this scalar `imul` (~3.9 G mul-add/s here);
/// the split kernel was slower there (1.4), so it is not used.
const PORTABLE_MR: usize = 4;
const PORTABLE_NR: usize = 4;

#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
mod x86 {
    use super::{Blocking, driver};

    /// AVX-512 tile 4×32: 16 zmm accumulators + 4 `B` vectors + 1 broadcast
    /// of the 32 registers. Measured (G mul-add/s at 512³): 4×32 13.9,
    /// 4×16 13.4, 5×16 13.5, 2×32 13.1, 4×8 8.5, 8×8 4.2, 8×16 3.9, 6×16 2.1.
    /// The plateau near 13–14 is `vpmullq` throughput (3 uops, 1.5 cycles
    /// per 8 lanes). The collapses are LLVM's SLP vectoriser giving up (8×16
    /// compiled to scalar `imul`), so re-measure after changing the tile or
    /// the kernel body.
    pub(super) const AVX512_MR: usize = 4;
    pub(super) const AVX512_NR: usize = 32;
    /// AVX2 tile 2×12 with the split kernel: 2×3 ymm cells × (low + cross
    /// accumulator) = 12 of the 16 registers. Measured at 512³: 2×12 5.4–5.8,
    /// 1×24 5.7, 2×16 5.35, 4×8 4.6; the best tile with LLVM's own 64-bit
    /// multiply expansion (8×4) reached 5.0.
    pub(super) const AVX2_MR: usize = 2;
    pub(super) const AVX2_NR: usize = 12;

    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) fn avx512(bl: Blocking, m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) {
        driver::<AVX512_MR, AVX512_NR, false>(bl, m, k, n, a, b, c);
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn avx2(bl: Blocking, m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) {
        driver::<AVX2_MR, AVX2_NR, true>(bl, m, k, n, a, b, c);
    }
}

thread_local! {
    /// Packing buffers (A, B) reused across calls on the same thread, which
    /// saves an allocation and first-touch page faults per call (~5% at
    /// 128×784×128). Taken out for the duration of a call, so never aliased.
    static PACK_BUFFERS: Cell<(Vec<u64>, Vec<u64>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// Larger packing buffers (words; 8 MiB) are freed after the call rather than
/// kept per thread.
const RETAIN_MAX_WORDS: usize = 1 << 20;

/// Blocked product for one tile shape; `SPLIT` selects [`micro_kernel_split`]
/// over [`micro_kernel`]. `#[inline(always)]` so that the whole
/// loop nest, packing included, is compiled with the caller's target features.
///
/// Preconditions (checked by `gemm_with`): lengths match, `m, n, k > 0`.
#[inline(always)]
fn driver<const MR: usize, const NR: usize, const SPLIT: bool>(
    bl: Blocking,
    m: usize,
    k: usize,
    n: usize,
    a: &[u64],
    b: &[u64],
    c: &mut [u64],
) {
    let kc_max = bl.kc.max(1).min(k);
    let mc_max = bl.mc.max(1).next_multiple_of(MR).min(m.next_multiple_of(MR));
    let nc_max = bl.nc.max(1).next_multiple_of(NR).min(n.next_multiple_of(NR));
    let mut bufs = PACK_BUFFERS.take();
    let (pa, pb) = &mut bufs;
    // Every word that the kernels read is written by packing first, so stale
    // contents from an earlier call are harmless.
    pa.resize(mc_max * kc_max, 0);
    pb.resize(kc_max * nc_max, 0);

    for jc in (0..n).step_by(nc_max) {
        let nc = nc_max.min(n - jc);
        for pc in (0..k).step_by(kc_max) {
            let kc = kc_max.min(k - pc);
            // The first depth block overwrites C, later ones accumulate.
            let overwrite = pc == 0;
            let pb = &mut pb[..kc * nc.next_multiple_of(NR)];
            pack_b::<NR>(b, n, pc, kc, jc, nc, pb);
            for ic in (0..m).step_by(mc_max) {
                let mc = mc_max.min(m - ic);
                let pa = &mut pa[..kc * mc.next_multiple_of(MR)];
                pack_a::<MR>(a, k, ic, mc, pc, kc, pa);
                macro_block::<MR, NR, SPLIT>(kc, pa, pb, c, n, ic, mc, jc, nc, overwrite);
            }
        }
    }
    if pa.capacity() + pb.capacity() <= RETAIN_MAX_WORDS {
        PACK_BUFFERS.set(bufs);
    }
}

/// Packs `B[pc..pc+kc, jc..jc+nc]` into `dst` as consecutive `kc × NR` panels
/// (row `p` of a panel = `NR` consecutive words), zero-padding the last panel.
#[inline(always)]
fn pack_b<const NR: usize>(b: &[u64], n: usize, pc: usize, kc: usize, jc: usize, nc: usize, dst: &mut [u64]) {
    for (jp, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
        let j0 = jc + jp * NR;
        let w = NR.min(jc + nc - j0);
        for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
            let src = (pc + p) * n + j0;
            row[..w].copy_from_slice(&b[src..src + w]);
            row[w..].fill(0);
        }
    }
}

/// Packs `A[ic..ic+mc, pc..pc+kc]` into `dst` as consecutive `kc × MR` panels
/// (step `p` of a panel = column `p` of `MR` rows), zero-padding the last panel.
#[inline(always)]
fn pack_a<const MR: usize>(a: &[u64], k: usize, ic: usize, mc: usize, pc: usize, kc: usize, dst: &mut [u64]) {
    for (ip, panel) in dst.chunks_exact_mut(kc * MR).enumerate() {
        let i0 = ic + ip * MR;
        let h = MR.min(ic + mc - i0);
        let (steps, rest) = panel.as_chunks_mut::<MR>();
        debug_assert!(rest.is_empty());
        for i in 0..MR {
            if i < h {
                let src = &a[(i0 + i) * k + pc..][..kc];
                for (step, &v) in steps.iter_mut().zip(src) {
                    step[i] = v;
                }
            } else {
                for step in steps.iter_mut() {
                    step[i] = 0;
                }
            }
        }
    }
}

/// Multiplies a packed `mc × kc` block of `A` by a packed `kc × nc` block of
/// `B` into `C[ic.., jc..]`, one `MR × NR` tile at a time.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn macro_block<const MR: usize, const NR: usize, const SPLIT: bool>(
    kc: usize,
    pa: &[u64],
    pb: &[u64],
    c: &mut [u64],
    n: usize,
    ic: usize,
    mc: usize,
    jc: usize,
    nc: usize,
    overwrite: bool,
) {
    for (jp, bpanel) in pb.chunks_exact(kc * NR).enumerate() {
        let j0 = jc + jp * NR;
        let w = NR.min(jc + nc - j0);
        let (bsteps, _) = bpanel.as_chunks::<NR>();
        for (ip, apanel) in pa.chunks_exact(kc * MR).enumerate() {
            let i0 = ic + ip * MR;
            let h = MR.min(ic + mc - i0);
            let (asteps, _) = apanel.as_chunks::<MR>();
            let acc = if SPLIT {
                micro_kernel_split::<MR, NR>(asteps, bsteps)
            } else {
                micro_kernel::<MR, NR>(asteps, bsteps)
            };
            for (i, acc_row) in acc.iter().enumerate().take(h) {
                let dst = &mut c[(i0 + i) * n + j0..][..w];
                if overwrite {
                    dst.copy_from_slice(&acc_row[..w]);
                } else {
                    for (d, &v) in dst.iter_mut().zip(acc_row) {
                        *d = d.wrapping_add(v);
                    }
                }
            }
        }
    }
}

/// `Σ_p a[p] ⊗ b[p]` over Z_2^64: an `MR × NR` tile of rank-1 updates. The
/// constant trip counts let LLVM fully unroll the inner loops and keep `acc`
/// in vector registers.
#[inline(always)]
fn micro_kernel<const MR: usize, const NR: usize>(a: &[[u64; MR]], b: &[[u64; NR]]) -> [[u64; NR]; MR] {
    let mut acc = [[0u64; NR]; MR];
    for (ap, bp) in a.iter().zip(b) {
        for (acc_row, &ai) in acc.iter_mut().zip(ap) {
            for (x, &bj) in acc_row.iter_mut().zip(bp) {
                *x = x.wrapping_add(ai.wrapping_mul(bj));
            }
        }
    }
    acc
}

/// [`micro_kernel`] for targets without a 64-bit vector multiply. With
/// `x = xh·2^32 + xl`, `a·b ≡ al·bl + ((al·bh + ah·bl) << 32) (mod 2^64)`;
/// each product of two 32-bit halves is one `pmuludq` lane, and the shift is
/// deferred to the end by keeping the low and cross sums in separate
/// accumulators (the shift is linear mod 2^64). Costs 3 multiplies + 3 adds
/// per lane and step instead of LLVM's generic expansion, which also shifts
/// and recombines every product.
#[inline(always)]
fn micro_kernel_split<const MR: usize, const NR: usize>(a: &[[u64; MR]], b: &[[u64; NR]]) -> [[u64; NR]; MR] {
    const LO: u64 = 0xFFFF_FFFF;
    let mut lo = [[0u64; NR]; MR];
    let mut cross = [[0u64; NR]; MR];
    for (ap, bp) in a.iter().zip(b) {
        for ((lo_row, x_row), &ai) in lo.iter_mut().zip(cross.iter_mut()).zip(ap) {
            let (al, ah) = (ai & LO, ai >> 32);
            for ((l, x), &bj) in lo_row.iter_mut().zip(x_row.iter_mut()).zip(bp) {
                let (bl, bh) = (bj & LO, bj >> 32);
                *l = l.wrapping_add(al.wrapping_mul(bl));
                *x = x.wrapping_add(al.wrapping_mul(bh)).wrapping_add(ah.wrapping_mul(bl));
            }
        }
    }
    for (lo_row, x_row) in lo.iter_mut().zip(&cross) {
        for (l, &x) in lo_row.iter_mut().zip(x_row) {
            *l = l.wrapping_add(x << 32);
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic full-range u64 stream (splitmix64).
    fn random_vec(len: usize, seed: u64) -> Vec<u64> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            })
            .collect()
    }

    fn naive(m: usize, k: usize, n: usize, a: &[u64], b: &[u64]) -> Vec<u64> {
        let mut c = vec![0u64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0u64;
                for p in 0..k {
                    s = s.wrapping_add(a[i * k + p].wrapping_mul(b[p * n + j]));
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    fn check(kernel: Kernel, bl: Blocking, m: usize, k: usize, n: usize, threads: usize) {
        let seed = (m * 1_000_003 + k * 1009 + n) as u64;
        let a = random_vec(m * k, seed);
        let b = random_vec(k * n, !seed);
        let want = naive(m, k, n, &a, &b);
        // Garbage in C must be overwritten, not accumulated into.
        let mut c = random_vec(m * n, seed ^ 0x55);
        gemm_with(kernel, bl, m, k, n, &a, &b, &mut c, threads);
        assert!(c == want, "{} {bl:?} m={m} k={k} n={n} threads={threads}", kernel.name());
    }

    fn kernels() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.available()).collect()
    }

    const DIMS: [usize; 12] = [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31];

    #[test]
    fn small_shapes_all_kernels() {
        for kernel in kernels() {
            for &m in &DIMS {
                for &k in &DIMS {
                    for &n in &DIMS {
                        check(kernel, kernel.blocking(), m, k, n, 1);
                    }
                }
            }
        }
    }

    /// Tiny blocks force many partial macro/micro tiles and multiple depth
    /// blocks (accumulate path) on small inputs.
    #[test]
    fn tiny_blocking_all_kernels() {
        let bl = Blocking { mc: 9, kc: 5, nc: 11 };
        for kernel in kernels() {
            for &(m, k, n) in &[(1, 1, 1), (13, 17, 19), (33, 23, 41), (8, 16, 16), (2, 40, 3)] {
                check(kernel, bl, m, k, n, 1);
                check(kernel, Blocking { mc: 0, kc: 0, nc: 0 }, m, k, n, 1);
            }
        }
    }

    /// Shapes straddling each default block size (kc, mc, nc) and the
    /// benchmark shape.
    #[test]
    fn straddle_block_sizes_all_kernels() {
        for kernel in kernels() {
            let bl = kernel.blocking();
            let mut shapes = vec![(128, 784, 128), (97, 101, 103)];
            for d in [bl.kc, bl.mc] {
                for x in [d - 1, d, d + 1] {
                    shapes.push((x, 37, 29));
                    shapes.push((23, x, 41));
                }
            }
            for x in [bl.nc - 1, bl.nc, bl.nc + 1] {
                shapes.push((9, 19, x));
            }
            shapes.push((bl.mc + 3, bl.kc + 5, 67));
            for (m, k, n) in shapes {
                check(kernel, bl, m, k, n, 1);
            }
        }
    }

    #[test]
    fn threads_1_2_3() {
        for kernel in kernels() {
            for &(m, k, n) in
                &[(128, 784, 128), (257, 300, 65), (64, 64, 64), (9, 1, 1000), (1, 3, 5), (0, 4, 4), (20, 0, 20)]
            {
                for t in [1, 2, 3] {
                    check(kernel, kernel.blocking(), m, k, n, t);
                }
            }
        }
    }

    #[test]
    fn public_entry_points() {
        let (m, k, n) = (67, 131, 45);
        let a = random_vec(m * k, 1);
        let b = random_vec(k * n, 2);
        let want = naive(m, k, n, &a, &b);
        let mut c = vec![7; m * n];
        gemm(m, k, n, &a, &b, &mut c);
        assert_eq!(c, want);
        for t in [0, 1, 2, 3] {
            let mut c = vec![7; m * n];
            gemm_threads(m, k, n, &a, &b, &mut c, t);
            assert_eq!(c, want);
        }
        assert!(["avx512", "avx2", "portable"].contains(&kernel_name()));
        assert!(Kernel::ALL.iter().any(|k| k.name() == kernel_name()));
    }

    /// Values chosen so every product and sum wraps.
    #[test]
    fn wraps_modulo_2_64() {
        let a = [u64::MAX, 1 << 63];
        let b = [u64::MAX, 3];
        let mut c = [0u64; 1];
        gemm(1, 2, 1, &a, &b, &mut c);
        // (-1)(-1) + 2^63 * 3 = 1 + 2^63 (mod 2^64)
        assert_eq!(c[0], 1u64.wrapping_add(1 << 63));
    }

    #[test]
    #[should_panic(expected = "does not match shape")]
    fn wrong_length_panics() {
        let mut c = [0u64; 4];
        gemm(2, 2, 2, &[0; 3], &[0; 4], &mut c);
    }

    proptest! {
        #[test]
        fn matches_naive(
            m in 0usize..40, k in 0usize..40, n in 0usize..40,
            seed: u64, threads in 1usize..4,
            mc in 1usize..24, kc in 1usize..24, nc in 1usize..40,
        ) {
            let a = random_vec(m * k, seed);
            let b = random_vec(k * n, seed ^ 0xABCD);
            let want = naive(m, k, n, &a, &b);
            for kernel in kernels() {
                for bl in [kernel.blocking(), Blocking { mc, kc, nc }] {
                    let mut c = vec![u64::MAX; m * n];
                    gemm_with(kernel, bl, m, k, n, &a, &b, &mut c, threads);
                    prop_assert_eq!(&c, &want);
                }
            }
        }
    }
}
