//! Benchmarks of the two-party mode's HE kernels (`mpc_proto::he`): a four-prime negacyclic NTT
//! of degree 8192 and a ciphertext-component × plaintext product-accumulate — the figures behind
//! the layout cost model's constants (`mpc_proto::he::matmul`, `NTT_US`, `MUL_US`).
//!
//! Run: `cargo bench --bench he`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mpc_proto::he::{N, Poly};
use mpc_proto::prg::Prg;

fn kernels(c: &mut Criterion) {
    let mut g = Prg::from_u64(9);
    let m: Vec<u64> = (0..N).map(|_| g.next_u64()).collect();
    let mut group = c.benchmark_group("he");
    group.bench_function("ntt_4_primes_n8192", |b| {
        let mut p = Poly::lift(&m);
        b.iter(|| p.ntt());
    });
    let (mut x, mut y) = (Poly::lift(&m), Poly::lift(&m));
    x.ntt();
    y.ntt();
    group.bench_function("product_accumulate_n8192", |b| {
        let mut acc = Poly::lift(&[]);
        b.iter(|| acc.mul_add(black_box(&x), black_box(&y)));
    });
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
