//! Z_2^64 GEMM against f64 GEMM (matrixmultiply via ndarray) and ndarray's
//! generic `Wrapping<u64>` dot. Throughput is m·k·n elements, i.e. the
//! reports read as multiply-adds per second.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mpc_proto::ring::gemm::{gemm, gemm_threads, kernel_name};
use ndarray::Array2;
use std::hint::black_box;
use std::num::Wrapping;

fn random_vec(len: usize, seed: u64) -> Vec<u64> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (s ^ (s >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
        .collect()
}

fn bench_shape(cr: &mut Criterion, m: usize, k: usize, n: usize) {
    let a = random_vec(m * k, 1);
    let b = random_vec(k * n, 2);
    let mut c = vec![0u64; m * n];
    let mut g = cr.benchmark_group(format!("gemm_{m}x{k}x{n}"));
    g.throughput(Throughput::Elements((m * k * n) as u64));

    let kernel = kernel_name();
    g.bench_function(BenchmarkId::new("u64_gemm_1t", kernel), |bn| {
        bn.iter(|| gemm(m, k, n, black_box(&a), black_box(&b), black_box(&mut c)))
    });
    g.bench_function(BenchmarkId::new("u64_gemm_2t", kernel), |bn| {
        bn.iter(|| gemm_threads(m, k, n, black_box(&a), black_box(&b), black_box(&mut c), 2))
    });

    let af = Array2::from_shape_fn((m, k), |(i, j)| (a[i * k + j] % 1000) as f64);
    let bf = Array2::from_shape_fn((k, n), |(i, j)| (b[i * n + j] % 1000) as f64);
    g.bench_function(BenchmarkId::new("f64_ndarray_dot", "matrixmultiply"), |bn| {
        bn.iter(|| black_box(&af).dot(black_box(&bf)))
    });

    let aw = Array2::from_shape_fn((m, k), |(i, j)| Wrapping(a[i * k + j]));
    let bw = Array2::from_shape_fn((k, n), |(i, j)| Wrapping(b[i * n + j]));
    // Check once that we and ndarray agree, so the comparison is like for like.
    gemm(m, k, n, &a, &b, &mut c);
    assert!(aw.dot(&bw).iter().zip(&c).all(|(x, y)| x.0 == *y));
    // The generic dot is a naive loop (~0.5 G/s): keep its sample count low.
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("wrapping_u64_ndarray_dot", "generic"), |bn| {
        bn.iter(|| black_box(&aw).dot(black_box(&bw)))
    });
    g.finish();
}

fn benches(cr: &mut Criterion) {
    bench_shape(cr, 512, 512, 512);
    bench_shape(cr, 128, 784, 128);
}

criterion_group!(gemm_benches, benches);
criterion_main!(gemm_benches);
