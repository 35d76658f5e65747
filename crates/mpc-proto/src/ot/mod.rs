//! Oblivious transfer: the correlations of the dealer-free two-party mode.
//!
//! Two parties, P0 and P1, make Beaver triples themselves, with no third node:
//!
//! * [`base`] — 128 base OTs (Masny–Rindal endemic OT on ristretto255), once per pair of
//!   parties: one round, 8 KiB;
//! * [`iknp`] — IKNP correlated OT extension: any number of OTs from the base OTs and AES;
//! * [`triples`] — Gilboa multiplication: elementwise Beaver triples over Z_2^64 from the
//!   correlated OTs, one round trip and 2568 bytes per triple;
//! * [`vole`] — vector products (a scalar of the OT receiver's times a vector of the sender's):
//!   the matrix and convolution triples, 64 OTs per scalar and 260 bytes per term, the OTs of
//!   a fixed operand made once and used again;
//! * [`bits`] — Boolean AND triples from the same OTs (the gates of a comparison circuit),
//!   one message and 32 bytes per triple.
//!
//! Security: semi-honest, in the random-oracle model (base OTs, CDH on ristretto255) with AES as
//! a correlation-robust permutation (the extension). Constant-time on secrets (choice bits
//! select by masks; dalek's scalar arithmetic). A session uses them through the
//! [`TwoPartySource`](crate::correlations::TwoPartySource): every kind of Beaver triple, and
//! the AND triples of the two-party comparison circuit.

pub mod base;
pub mod bits;
pub mod iknp;
pub mod triples;
pub mod vole;

pub use bits::{BitTriples, MuxTriples, bit_triples_receiver, bit_triples_sender};
pub use iknp::{CotReceiver, CotSender};
pub use triples::{
    TripleShares, cross_products_receiver, cross_products_sender, products_both_ways, triples_receiver, triples_sender,
};
pub use vole::{VoleReceiver, VoleSender};

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha12Rng;
    use rand_core::SeedableRng;
    use subtle::Choice;

    use super::*;
    use crate::ids::{PartyId, SessionId};
    use crate::transport::Channel;

    /// Runs `p0` and `p1` on two threads over an in-memory pair of channels.
    #[allow(clippy::disallowed_methods)] // parties as threads, as in crate::testing
    fn two<A: Send, B: Send>(p0: impl FnOnce(Channel) -> A + Send, p1: impl FnOnce(Channel) -> B + Send) -> (A, B) {
        let (c0, c1) = crate::testing::channel_pair(SessionId(42));
        std::thread::scope(|s| {
            let h0 = s.spawn(move || p0(c0));
            let h1 = s.spawn(move || p1(c1));
            (h0.join().unwrap(), h1.join().unwrap())
        })
    }

    fn rng(seed: u64) -> ChaCha12Rng {
        ChaCha12Rng::seed_from_u64(seed)
    }

    #[test]
    fn transpose_is_the_naive_transpose() {
        let mut prg = crate::prg::Prg::from_u64(3);
        let mut m = [0u128; 128];
        for r in m.iter_mut() {
            *r = u128::from(prg.next_u64()) | (u128::from(prg.next_u64()) << 64);
        }
        let mut t = m;
        iknp::transpose128(&mut t);
        for (r, row) in m.iter().enumerate() {
            for (c, col) in t.iter().enumerate() {
                assert_eq!((row >> c) & 1, (col >> r) & 1, "bit ({r}, {c})");
            }
        }
    }

    #[test]
    fn and_triples_multiply_and_p0s_bits_are_balanced() {
        // Sizes below, at and across a 64-bit word and an extension of 128 OTs.
        for n in [1usize, 63, 64, 65, 1000] {
            let (t0, t1) = two(
                move |mut c| {
                    futures::executor::block_on(async {
                        let mut cot = CotSender::setup(&mut c, PartyId::P1, &mut rng(1)).await.unwrap();
                        bit_triples_sender(&mut cot, &mut c, PartyId::P1, n).await.unwrap()
                    })
                },
                move |mut c| {
                    futures::executor::block_on(async {
                        let mut cot = CotReceiver::setup(&mut c, PartyId::P0, &mut rng(2)).await.unwrap();
                        bit_triples_receiver(&mut cot, &mut c, PartyId::P0, n, &mut rng(3)).await.unwrap()
                    })
                },
            );
            let bit = |v: &[u64], t: usize| (v[t / 64] >> (t % 64)) & 1;
            for t in 0..n {
                let (x, y) = (bit(&t0.x, t) ^ bit(&t1.x, t), bit(&t0.y, t) ^ bit(&t1.y, t));
                assert_eq!(bit(&t0.z, t) ^ bit(&t1.z, t), x & y, "n = {n}, triple {t}");
            }
            // Nothing beyond bit n is set (the words are exact packings).
            for v in [&t0.x, &t0.y, &t0.z, &t1.x, &t1.y, &t1.z] {
                assert_eq!(v.len(), n.div_ceil(64));
                if n % 64 != 0 {
                    assert_eq!(v[n / 64] >> (n % 64), 0, "n = {n}");
                }
            }
            if n == 1000 {
                // P0's bits come from the OTs: uniform (here: between 40% and 60% ones).
                for (name, v) in [("x0", &t0.x), ("y0", &t0.y), ("z0", &t0.z)] {
                    let ones: u32 = v.iter().map(|w| w.count_ones()).sum();
                    assert!((400..600).contains(&ones), "{name}: {ones} ones in 1000");
                }
            }
        }
    }

    #[test]
    fn base_ots_give_the_chosen_key_and_hide_the_other() {
        let n = 128;
        let choices: Vec<u8> = (0..n).map(|i| ((i * 7 + i / 3) % 2) as u8).collect();
        let ch = choices.clone();
        let (keys, got) = two(
            |mut c| futures::executor::block_on(base::send(&mut c, PartyId::P1, n, &mut rng(1))).unwrap(),
            move |mut c| {
                let cs: Vec<Choice> = ch.iter().map(|&b| Choice::from(b)).collect();
                futures::executor::block_on(base::receive(&mut c, PartyId::P0, &cs, &mut rng(2))).unwrap()
            },
        );
        for i in 0..n {
            let c = choices[i] as usize;
            assert_eq!(got[i], keys[i][c], "OT {i}: the chosen key");
            assert_ne!(got[i], keys[i][1 - c], "OT {i}: not the other");
            assert_ne!(keys[i][0], keys[i][1]);
        }
    }

    #[test]
    fn a_point_that_does_not_decode_is_refused() {
        // A receiver that sends garbage instead of (r0, r1): the sender fails with a desync.
        let (sent, _) = two(
            |mut c| futures::executor::block_on(base::send(&mut c, PartyId::P1, 1, &mut rng(1))),
            |mut c| {
                futures::executor::block_on(async {
                    c.send_bytes(PartyId::P0, crate::transport::FrameKind::Material, &[0xff; 64]).await.unwrap();
                    c.recv_bytes(PartyId::P0, crate::transport::FrameKind::Material, Some(32)).await.unwrap()
                })
            },
        );
        let e = sent.unwrap_err().to_string();
        assert!(e.contains("not a point"), "{e}");
    }

    #[test]
    fn extended_ots_are_correlated_by_delta() {
        let m = 3 * 128;
        let mut prg = crate::prg::Prg::from_u64(5);
        let mut r = vec![0u64; m / 64];
        prg.fill(&mut r);
        let rr = r.clone();
        let ((q, delta, f0), (t, f1)) = two(
            |mut c| {
                futures::executor::block_on(async {
                    let mut s = CotSender::setup(&mut c, PartyId::P1, &mut rng(1)).await.unwrap();
                    let _ = s.extend(&mut c, PartyId::P1, 128).await.unwrap();
                    let (q, first) = s.extend(&mut c, PartyId::P1, m).await.unwrap();
                    (q, s.delta(), first)
                })
            },
            move |mut c| {
                futures::executor::block_on(async {
                    let mut s = CotReceiver::setup(&mut c, PartyId::P0, &mut rng(2)).await.unwrap();
                    let _ = s.extend(&mut c, PartyId::P0, &[0, 0]).await.unwrap();
                    s.extend(&mut c, PartyId::P0, &rr).await.unwrap()
                })
            },
        );
        assert_eq!((f0, f1), (128, 128), "the second batch's tweaks follow the first's");
        for j in 0..m {
            let rj = (r[j / 64] >> (j % 64)) & 1;
            assert_eq!(q[j] ^ t[j], if rj == 1 { delta } else { 0 }, "OT {j}");
        }
        assert!(delta != 0 && delta != u128::MAX);
    }

    #[test]
    fn a_failed_extension_poisons_the_state() {
        let ((err, again, odd), ()) = two(
            |mut c| {
                futures::executor::block_on(async {
                    let mut s = CotSender::setup(&mut c, PartyId::P1, &mut rng(1)).await.unwrap();
                    let odd = s.extend(&mut c, PartyId::P1, 100).await.unwrap_err();
                    let err = s.extend(&mut c, PartyId::P1, 128).await.unwrap_err();
                    let again = s.extend(&mut c, PartyId::P1, 128).await.unwrap_err();
                    (err, again, odd)
                })
            },
            |mut c| {
                futures::executor::block_on(async {
                    let _ = CotReceiver::setup(&mut c, PartyId::P0, &mut rng(2)).await.unwrap();
                    // Not the 128·2 words an extension of 128 OTs sends.
                    c.send_u64(PartyId::P0, crate::transport::FrameKind::Material, &[0; 5]).await.unwrap();
                })
            },
        );
        assert!(matches!(odd, crate::Error::InvalidInput(_)), "{odd}");
        assert!(matches!(err, crate::Error::Desync { .. }), "{err}");
        assert!(matches!(again, crate::Error::Poisoned), "{again}");
    }

    #[test]
    fn vector_products_multiply_on_every_use() {
        // An odd count of scalars (a padded extension), lanes odd and even, one lane, and a
        // message boundary (8192 lanes); the same OTs used three times with fresh vectors.
        // Single-bit scalars (one OT each; a 200-scalar set spans two extensions of 128); vectors
        // longer than a lane chunk (4096) and than a message, odd-length.
        for (scalars, len, bits) in [
            (1usize, 1usize, 64usize),
            (3, 5, 64),
            (7, 2, 64),
            (5, 3000, 64),
            (200, 3, 1),
            (9, 2, 5),
            (3, 9001, 64),
            (2, 4097, 1),
        ] {
            let mut g = crate::prg::Prg::from_u64(scalars as u64 * 1000 + len as u64);
            let mut x = vec![0u64; scalars];
            g.fill(&mut x);
            x[0] = u64::MAX; // every bit chosen
            if scalars > 1 {
                x[1] = 0; // none
            }
            let vs: Vec<Vec<u64>> = (0..3)
                .map(|_| {
                    let mut v = vec![0u64; scalars * len];
                    g.fill(&mut v);
                    v
                })
                .collect();
            let xr = x.clone();
            let vv = vs.clone();
            let (s0, s1) = two(
                move |mut c| {
                    futures::executor::block_on(async {
                        let mut cot = CotSender::setup(&mut c, PartyId::P1, &mut rng(1)).await.unwrap();
                        let mut k = VoleSender::make(&mut cot, &mut c, PartyId::P1, scalars, bits).await.unwrap();
                        let mut all = vec![];
                        for v in &vv {
                            let mut out = vec![0u64; scalars * len];
                            k.send(&mut c, PartyId::P1, len, |s, l| v[s * len + l], |s, l, w| out[s * len + l] = w)
                                .await
                                .unwrap();
                            all.push(out);
                        }
                        all
                    })
                },
                move |mut c| {
                    futures::executor::block_on(async {
                        let mut cot = CotReceiver::setup(&mut c, PartyId::P0, &mut rng(2)).await.unwrap();
                        let mut k = VoleReceiver::make(&mut cot, &mut c, PartyId::P0, xr, bits).await.unwrap();
                        let mut all = vec![];
                        for _ in 0..3 {
                            let mut out = vec![0u64; scalars * len];
                            k.receive(&mut c, PartyId::P0, len, |s, l, w| out[s * len + l] = w).await.unwrap();
                            all.push(out);
                        }
                        all
                    })
                },
            );
            for u in 0..3 {
                for (s, &xv) in x.iter().enumerate() {
                    for l in 0..len {
                        let i = s * len + l;
                        let xs = if bits == 64 { xv } else { xv & ((1 << bits) - 1) };
                        let want = xs.wrapping_mul(vs[u][i]);
                        assert_eq!(s0[u][i].wrapping_add(s1[u][i]), want, "use {u}, scalar {s}, lane {l}");
                    }
                }
            }
            // Fresh pads per use: P1's shares of two uses differ even where the products agree.
            if scalars > 1 {
                assert_ne!(s1[0][len..2 * len], s1[1][len..2 * len], "scalar 0 (product 0) in uses 0 and 1");
            }
        }
    }

    /// P1's view of a vector product: with a scalar of 0 (no OT chosen) P1 cannot unmask any
    /// correction, and they are uniform — the same chi-square bound as the Gilboa triples' — for
    /// a vector of zeros and of ones, on the first use of the OTs and on a later one. Pads that
    /// repeated across uses would show: a later use's corrections would equal the first's
    /// shifted by the vectors' difference, which the equality check below refuses.
    #[test]
    fn the_receivers_view_of_vector_corrections_is_uniform_on_every_use() {
        let (scalars, len) = (16usize, 64usize);
        let words = packed_vole_words(scalars, len);
        let (_, seen) = two(
            move |mut c| {
                futures::executor::block_on(async {
                    let mut cot = CotSender::setup(&mut c, PartyId::P1, &mut rng(1)).await.unwrap();
                    let mut k = VoleSender::make(&mut cot, &mut c, PartyId::P1, scalars, 64).await.unwrap();
                    for fill in [0u64, u64::MAX, 0, u64::MAX] {
                        k.send(&mut c, PartyId::P1, len, |_, _| fill, |_, _, _| ()).await.unwrap();
                    }
                })
            },
            move |mut c| {
                futures::executor::block_on(async {
                    let mut cot = CotReceiver::setup(&mut c, PartyId::P0, &mut rng(2)).await.unwrap();
                    let _ = VoleReceiver::make(&mut cot, &mut c, PartyId::P0, vec![0; scalars], 64).await.unwrap();
                    let mut seen = vec![];
                    for _ in 0..4 {
                        seen.push(c.recv_u64(PartyId::P0, crate::transport::FrameKind::Material, words).await.unwrap());
                    }
                    seen
                })
            },
        );
        for (u, w) in seen.iter().enumerate() {
            let mut hist = [0usize; 256];
            for b in w.iter().flat_map(|v| v.to_le_bytes()) {
                hist[b as usize] += 1;
            }
            let total: usize = hist.iter().sum();
            let expect = total as f64 / 256.0;
            let chi2: f64 = hist.iter().map(|&h| (h as f64 - expect).powi(2) / expect).sum();
            assert!(chi2 < 400.0, "use {u}: chi-square {chi2} over {total} bytes");
        }
        assert_ne!(seen[0], seen[2], "uses 0 and 2 (same vectors) sent the same corrections");
    }

    /// A vector longer than a lane chunk: its second chunk's pads are not the first's (the
    /// block index goes into the tweak). With a constant vector and a scalar of 0, equal pads
    /// would show as equal corrections.
    #[test]
    fn lane_chunks_draw_distinct_pads() {
        let len = 2 * 4096;
        let words = packed_vole_words(1, len);
        let (_, seen) = two(
            move |mut c| {
                futures::executor::block_on(async {
                    let mut cot = CotSender::setup(&mut c, PartyId::P1, &mut rng(5)).await.unwrap();
                    let mut k = VoleSender::make(&mut cot, &mut c, PartyId::P1, 1, 64).await.unwrap();
                    k.send(&mut c, PartyId::P1, len, |_, _| 7, |_, _, _| ()).await.unwrap();
                })
            },
            move |mut c| {
                futures::executor::block_on(async {
                    let mut cot = CotReceiver::setup(&mut c, PartyId::P0, &mut rng(6)).await.unwrap();
                    let _ = VoleReceiver::make(&mut cot, &mut c, PartyId::P0, vec![0], 64).await.unwrap();
                    c.recv_u64(PartyId::P0, crate::transport::FrameKind::Material, words).await.unwrap()
                })
            },
        );
        // Bit 0's corrections are the first 4096 full words of each chunk's 4096 · 2080 bits.
        let second = 4096 * 2080 / 64;
        let same = (0..4096).filter(|&i| seen[i] == seen[second + i]).count();
        assert_eq!(same, 0, "{same} of 4096 corrections repeat across the two lane chunks");
    }

    fn packed_vole_words(scalars: usize, len: usize) -> usize {
        (scalars * len * 2080).div_ceil(64)
    }

    /// `n` triples from the two sides, over a pair of channels; also P1's received words.
    fn make_triples(n: usize) -> (TripleShares, TripleShares) {
        two(
            |mut c| {
                futures::executor::block_on(async {
                    let mut s = CotSender::setup(&mut c, PartyId::P1, &mut rng(11)).await.unwrap();
                    triples_sender(&mut s, &mut c, PartyId::P1, n, &mut rng(12)).await.unwrap()
                })
            },
            |mut c| {
                futures::executor::block_on(async {
                    let mut s = CotReceiver::setup(&mut c, PartyId::P0, &mut rng(13)).await.unwrap();
                    triples_receiver(&mut s, &mut c, PartyId::P0, n, &mut rng(14)).await.unwrap()
                })
            },
        )
    }

    /// Both parties' shares add up to `a1·b0 + a0·b1` exactly: one element, an odd count (a
    /// padded extension), and more than a chunk (two extensions each way).
    #[test]
    fn products_both_ways_add_up_to_both_cross_products() {
        for n in [1usize, 3, triples::CHUNK + 5] {
            let mut g = crate::prg::Prg::from_u64(n as u64 + 77);
            let mut v = || (0..n).map(|_| g.next_u64()).collect::<Vec<u64>>();
            let (a0, b0, a1, b1) = (v(), v(), v(), v());
            let want: Vec<u64> =
                (0..n).map(|i| a1[i].wrapping_mul(b0[i]).wrapping_add(a0[i].wrapping_mul(b1[i]))).collect();
            let (x0, y0, x1, y1) = (a0.clone(), b0.clone(), a1.clone(), b1.clone());
            let (s0, s1) = two(
                move |mut c| {
                    futures::executor::block_on(async {
                        let mut send = CotSender::setup(&mut c, PartyId::P1, &mut rng(1)).await.unwrap();
                        let mut recv = CotReceiver::setup(&mut c, PartyId::P1, &mut rng(2)).await.unwrap();
                        products_both_ways(&mut send, &mut recv, &mut c, PartyId::P1, &x0, &y0).await.unwrap()
                    })
                },
                move |mut c| {
                    futures::executor::block_on(async {
                        let mut recv = CotReceiver::setup(&mut c, PartyId::P0, &mut rng(3)).await.unwrap();
                        let mut send = CotSender::setup(&mut c, PartyId::P0, &mut rng(4)).await.unwrap();
                        products_both_ways(&mut send, &mut recv, &mut c, PartyId::P0, &x1, &y1).await.unwrap()
                    })
                },
            );
            let got: Vec<u64> = s0.iter().zip(&s1).map(|(x, y)| x.wrapping_add(*y)).collect();
            assert_eq!(got, want, "n = {n}");
        }
    }

    #[test]
    fn gilboa_triples_multiply() {
        // More than one chunk, and a partial last one.
        let n = triples::CHUNK + 1000;
        let (t0, t1) = make_triples(n);
        for i in 0..n {
            let a = t0.a[i].wrapping_add(t1.a[i]);
            let b = t0.b[i].wrapping_add(t1.b[i]);
            assert_eq!(t0.c[i].wrapping_add(t1.c[i]), a.wrapping_mul(b), "triple {i}");
        }
        // The masks are the parties' own fresh randomness, not constants.
        assert_ne!(t0.a, t1.a);
        assert!(t0.a.iter().chain(&t1.b).filter(|&&v| v == 0).count() < 3);
    }
}
