//! Benchmarks: PRG choice, key generation / batch evaluation of 100,000 ReLU and sign gates at
//! n = 32 and n = 64, and the per-element work of the three comparison methods at a 32-bit
//! window (`compare/`: compact keys against the AES bound, helper terms and zero test, one-round
//! keys) — the figures behind the cost model's constants (`mpc_proto::compare::cost`).
//!
//! Run: `cargo bench --bench fss` (filter with e.g. `-- eval` or `-- compare`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use mpc_proto::fss::prg::{self, Block, Prg};
use mpc_proto::fss::{ReluGate, ReluKey, SignGate, SignKey};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};

const N_ELEMS: usize = 100_000;

fn prg_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("prg");
    let p = Prg::fixed();
    let nb = 4096;
    let inp: Vec<Block> = (0..nb as u128).map(|i| prg::to_block(i * 0x1234567)).collect();
    let mut out = vec![Block::default(); nb];
    g.throughput(criterion::Throughput::Elements(nb as u64));
    g.bench_function("aes_mmo_batch_4096_blocks", |b| b.iter(|| p.hash_blocks(black_box(&inp), &mut out)));
    g.bench_function("aes_mmo_single_x4096", |b| {
        b.iter(|| {
            let mut acc = 0u128;
            for i in 0..nb as u128 {
                acc ^= p.hash_one(black_box(i));
            }
            acc
        })
    });
    g.bench_function("chacha8_per_seed_16B_x4096", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for i in 0..nb as u64 {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&black_box(i).to_le_bytes());
                let mut r = ChaCha8Rng::from_seed(seed);
                let mut o = [0u8; 16];
                r.fill_bytes(&mut o);
                acc ^= u64::from_le_bytes(o[..8].try_into().unwrap());
            }
            acc
        })
    });
    g.finish();
}

fn gates_bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    for n in [32u32, 64] {
        println!(
            "key bytes per element per party at n={n}: ReluKey {} B, SignKey {} B",
            ReluKey::byte_len_for(n),
            SignKey::byte_len_for(n)
        );
        let masks: Vec<u64> = (0..N_ELEMS).map(|_| rng.random()).collect();
        let xs: Vec<i64> = (0..N_ELEMS).map(|_| rng.random::<i64>() >> (64 - n + 1)).collect();
        let ys: Vec<u64> = xs.iter().zip(&masks).map(|(&x, &r)| (x as u64).wrapping_add(r)).collect();

        let mut g = c.benchmark_group(format!("n{n}"));
        g.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(8));

        g.bench_function("relu_keygen_100k", |b| {
            let mut r = ChaCha20Rng::seed_from_u64(1);
            b.iter(|| masks.iter().map(|&m| ReluGate::keygen(n, m, &mut r).unwrap()).collect::<Vec<_>>())
        });
        g.bench_function("sign_keygen_100k", |b| {
            let mut r = ChaCha20Rng::seed_from_u64(2);
            b.iter(|| masks.iter().map(|&m| SignGate::keygen(n, m, &mut r).unwrap()).collect::<Vec<_>>())
        });

        let (rk0, _rk1): (Vec<_>, Vec<_>) = masks.iter().map(|&m| ReluGate::keygen(n, m, &mut rng).unwrap()).unzip();
        let mut relu = vec![0u64; N_ELEMS];
        let mut drelu = vec![0u64; N_ELEMS];
        g.bench_function("relu_eval_batch_100k_p0", |b| {
            b.iter(|| ReluGate::eval_batch(0, &rk0, &ys, &mut relu, &mut drelu).unwrap())
        });
        g.bench_function("relu_deserialise_100k", |b| {
            b.iter_batched(
                || rk0.iter().map(|k| k.to_bytes()).collect::<Vec<_>>(),
                |bytes| bytes.iter().map(|b| ReluKey::from_bytes(b).unwrap()).collect::<Vec<_>>(),
                BatchSize::PerIteration,
            )
        });
        drop(rk0);
        drop(_rk1);

        let (sk0, _sk1): (Vec<_>, Vec<_>) = masks.iter().map(|&m| SignGate::keygen(n, m, &mut rng).unwrap()).unzip();
        let mut out = vec![0u64; N_ELEMS];
        g.bench_function("sign_eval_batch_100k_p0", |b| {
            b.iter(|| SignGate::eval_batch(0, &sk0, &ys, &mut out).unwrap())
        });
        g.bench_function("sign_eval_scalar_100k_p0", |b| {
            b.iter(|| {
                for i in 0..N_ELEMS {
                    out[i] = SignGate::eval(0, &sk0[i], ys[i]).unwrap();
                }
            })
        });
        g.finish();
    }
}

/// The share-mask PRG (AES-128-CTR) filling 1M ring elements, as a large multiplication's
/// masks and triples do: into a reused buffer, and into a fresh tensor.
fn share_prg_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("share_prg");
    let n = 1_000_000;
    g.throughput(criterion::Throughput::Bytes(8 * n as u64));
    let mut p = mpc_proto::prg::Prg::from_u64(1);
    let mut buf = vec![0u64; n];
    g.bench_function("fill_1m_reused", |b| b.iter(|| p.fill(black_box(&mut buf))));
    g.bench_function("random_tensor_1m", |b| b.iter(|| mpc_proto::RingTensor::random(&[n], &mut p)));
    g.finish();
}

/// The comparison methods' local work per 100,000 elements at k = 32.
fn compare_bench(c: &mut Criterion) {
    use mpc_proto::compare::{Window, helper};
    use mpc_proto::fss::{Relu64Gate, bitdcf};
    let k = 32u32;
    let w = Window::new(k);
    let m = k - 1;
    let klen = bitdcf::key_len(m);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let alphas: Vec<u64> = (0..N_ELEMS).map(|_| rng.random::<u64>() >> (64 - m)).collect();
    let ys: Vec<u64> = (0..N_ELEMS).map(|_| rng.random()).collect();
    let mut g = c.benchmark_group("compare");
    g.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(6));
    g.throughput(criterion::Throughput::Elements(N_ELEMS as u64));
    // The AES work key generation cannot avoid: 4 blocks per level (two parties, two
    // children) and 2 leaf blocks per key, batched as keygen batches them.
    let blocks = 4 * bitdcf::levels(m) + 2;
    let p = Prg::fixed();
    let inp: Vec<Block> = (0..(blocks * bitdcf::CHUNK) as u128).map(|i| prg::to_block(i * 0x9e37)).collect();
    let mut out = vec![Block::default(); inp.len()];
    g.bench_function("fss_keygen_aes_bound_100k", |b| {
        b.iter(|| {
            for _ in 0..N_ELEMS.div_ceil(bitdcf::CHUNK) {
                p.hash_blocks(black_box(&inp), &mut out);
            }
        })
    });
    let (mut k0, mut k1) = (vec![0u8; N_ELEMS * klen], vec![0u8; N_ELEMS * klen]);
    // The other cost key generation cannot avoid: writing both parties' keys (2 × 41.9 MB).
    g.bench_function("fss_keygen_write_bound_100k", |b| {
        let mut v = 0u8;
        b.iter(|| {
            v = v.wrapping_add(1);
            k0.fill(v);
            k1.fill(v);
        })
    });
    g.bench_function("fss_keygen_100k", |b| {
        // The dealer's private randomness is the AES-CTR PRG.
        let mut r = mpc_proto::prg::Prg::from_u64(8);
        b.iter(|| bitdcf::keygen_into(m, &alphas, &mut r, &mut k0, &mut k1, klen).unwrap())
    });
    g.bench_function("fss_eval_100k_p0", |b| {
        b.iter(|| {
            let mut acc = 0u8;
            bitdcf::eval_batch(0, m, N_ELEMS, |i| &k0[i * klen..(i + 1) * klen], |i| ys[i], |_, v| acc ^= v).unwrap();
            acc
        })
    });
    let rs: Vec<u64> = (0..N_ELEMS).map(|_| rng.random()).collect();
    g.bench_function("fss1_relu_keygen_100k", |b| {
        let mut r = ChaCha20Rng::seed_from_u64(9);
        b.iter(|| {
            let (mut a, mut b2) = (Vec::new(), Vec::new());
            Relu64Gate::keygen_into(k, &rs, &mut r, &mut a, &mut b2).unwrap();
            (a.len(), b2.len())
        })
    });
    let mut bits = vec![0u8; N_ELEMS * m as usize];
    helper::fill_zp(&mut mpc_proto::prg::Prg::from_u64(3), &mut bits);
    let mut common = mpc_proto::prg::Prg::from_u64(4);
    let mut d0 = Vec::with_capacity(N_ELEMS * k as usize);
    g.bench_function("helper_terms_100k_p0", |b| {
        b.iter(|| {
            d0.clear();
            helper::terms(true, w, &ys, 1, &bits, &mut common, &mut d0)
        })
    });
    let d1 = d0.clone();
    let mut z = Vec::with_capacity(N_ELEMS);
    g.bench_function("helper_zero_test_100k", |b| {
        b.iter(|| {
            z.clear();
            helper::zero_test(w, &d0, &d1, &mut z);
        })
    });
    g.finish();
}

criterion_group!(benches, prg_bench, share_prg_bench, gates_bench, compare_bench);
criterion_main!(benches);
