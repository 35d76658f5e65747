//! AES-128 kernels on VAES with 512-bit registers (four blocks per instruction, 32 blocks in
//! flight), for CPUs with AES-NI, AVX-512F and VAES, selected at run time: counter mode for the
//! share-mask PRG ([`crate::prg::Prg`]) and fixed-key Matyas–Meyer–Oseas hashing for the FSS
//! PRG ([`crate::fss::prg::Prg`]). The `aes` crate's VAES backend spends about half its time
//! assembling block arrays around the rounds; these keep the state in registers and run about
//! 2× faster (`cargo bench --bench fss -- prg`). Both are checked against the `aes` crate block
//! for block (tests in `prg` and `fss::prg`), and every caller falls back to the `aes` crate
//! where [`RoundKeys::new`] returns `None`.

use std::arch::x86_64::*;

/// Round keys of one AES-128 key. Only built where the CPU has AES-NI, AVX-512F and VAES.
#[derive(Clone)]
pub(crate) struct RoundKeys([__m128i; 11]);

impl RoundKeys {
    /// Expands `key`, or `None` where this CPU lacks the kernel's features.
    pub(crate) fn new(key: [u8; 16]) -> Option<Self> {
        if !(is_x86_feature_detected!("aes") && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("vaes"))
        {
            return None;
        }
        #[allow(unsafe_code)]
        // SAFETY: `expand` is compiled for `aes` (and SSE2, part of x86-64), which was
        // detected on this CPU just above; it has no other preconditions.
        Some(Self(unsafe { expand(key) }))
    }

    /// Writes counter blocks `counter, counter + 1, …` encrypted into `out` (four blocks per
    /// 64-byte chunk); returns the next counter.
    pub(crate) fn ctr(&self, counter: u128, out: &mut [[u8; 64]]) -> u128 {
        #[allow(unsafe_code)]
        // SAFETY: a `RoundKeys` exists only where `new` detected AES-NI, AVX-512F and VAES,
        // the features `ctr` is compiled for; it has no other preconditions.
        unsafe {
            ctr(&self.0, counter, out)
        }
    }
}

impl RoundKeys {
    /// `out[i] = AES(inp[i]) ⊕ inp[i]` for each 16-byte block (Matyas–Meyer–Oseas under this
    /// fixed key); `inp` and `out` have equal lengths, a whole number of blocks.
    pub(crate) fn mmo(&self, inp: &[u8], out: &mut [u8]) {
        assert!(inp.len() == out.len() && inp.len().is_multiple_of(16), "mmo: lengths differ or split a block");
        let (iq, ir) = inp.as_chunks::<64>();
        let (oq, or) = out.as_chunks_mut::<64>();
        #[allow(unsafe_code)]
        // SAFETY: as for `ctr`: `mmo` is compiled for the features `new` detected.
        unsafe {
            mmo(&self.0, iq, oq)
        };
        if !ir.is_empty() {
            // The last one to three blocks, padded to a register.
            let (mut pi, mut po) = ([0u8; 64], [[0u8; 64]]);
            pi[..ir.len()].copy_from_slice(ir);
            #[allow(unsafe_code)]
            // SAFETY: as above.
            unsafe {
                mmo(&self.0, &[pi], &mut po)
            };
            or.copy_from_slice(&po[0][..or.len()]);
        }
    }
}

/// One step of the AES-128 key schedule: `assist` is `aeskeygenassist(prev, rcon)`.
#[target_feature(enable = "aes")]
fn schedule_step(prev: __m128i, assist: __m128i) -> __m128i {
    let t = _mm_shuffle_epi32::<0xff>(assist);
    let mut k = prev;
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    _mm_xor_si128(k, t)
}

#[target_feature(enable = "aes")]
fn expand(key: [u8; 16]) -> [__m128i; 11] {
    let mut rk = [bytemuck::cast::<[u8; 16], __m128i>(key); 11];
    macro_rules! step {
        ($i:literal, $rcon:literal) => {
            rk[$i] = schedule_step(rk[$i - 1], _mm_aeskeygenassist_si128::<$rcon>(rk[$i - 1]));
        };
    }
    step!(1, 0x01);
    step!(2, 0x02);
    step!(3, 0x04);
    step!(4, 0x08);
    step!(5, 0x10);
    step!(6, 0x20);
    step!(7, 0x40);
    step!(8, 0x80);
    step!(9, 0x1b);
    step!(10, 0x36);
    rk
}

/// Registers of four blocks in flight per pass (32 blocks: enough to cover VAES latency).
const LANES: usize = 8;

/// The rounds of AES-128 on `N` registers of four blocks each, with the whitening key already
/// applied (`v = state ⊕ k[0]`).
#[target_feature(enable = "avx512f,vaes")]
fn rounds<const N: usize>(k: &[__m512i; 11], mut v: [__m512i; N]) -> [__m512i; N] {
    for kr in &k[1..10] {
        for vj in v.iter_mut() {
            *vj = _mm512_aesenc_epi128(*vj, *kr);
        }
    }
    v.map(|vj| _mm512_aesenclast_epi128(vj, k[10]))
}

#[target_feature(enable = "avx512f")]
fn broadcast(rk: &[__m128i; 11]) -> [__m512i; 11] {
    std::array::from_fn(|i| _mm512_broadcast_i32x4(rk[i]))
}

/// Counter blocks `c, c + 1, c + 2, c + 3` (little-endian u128s) in one register, whitened.
#[target_feature(enable = "avx512f")]
fn counters(c: u128, k0: __m512i) -> __m512i {
    let b = |i: u128| c.wrapping_add(i);
    let (b0, b1, b2, b3) = (b(0), b(1), b(2), b(3));
    let ctrs = _mm512_set_epi64(
        (b3 >> 64) as i64,
        b3 as i64,
        (b2 >> 64) as i64,
        b2 as i64,
        (b1 >> 64) as i64,
        b1 as i64,
        (b0 >> 64) as i64,
        b0 as i64,
    );
    _mm512_xor_si512(ctrs, k0)
}

#[target_feature(enable = "avx512f,vaes")]
fn ctr(rk: &[__m128i; 11], counter: u128, out: &mut [[u8; 64]]) -> u128 {
    let k = broadcast(rk);
    let mut c = counter;
    // Full passes of LANES registers, then the remaining chunks one register at a time (a
    // short read does not pay for a whole pass).
    let mut chunks = out.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        let v: [__m512i; LANES] = std::array::from_fn(|j| counters(c.wrapping_add(4 * j as u128), k[0]));
        for (o, vj) in chunk.iter_mut().zip(rounds(&k, v)) {
            *o = bytemuck::cast(vj);
        }
        c = c.wrapping_add(4 * LANES as u128);
    }
    for o in chunks.into_remainder() {
        let [v] = rounds(&k, [counters(c, k[0])]);
        *o = bytemuck::cast(v);
        c = c.wrapping_add(4);
    }
    c
}

#[target_feature(enable = "avx512f,vaes")]
fn mmo(rk: &[__m128i; 11], inp: &[[u8; 64]], out: &mut [[u8; 64]]) {
    let k = broadcast(rk);
    let mut ic = inp.chunks_exact(LANES);
    let mut oc = out.chunks_exact_mut(LANES);
    for (i, o) in (&mut ic).zip(&mut oc) {
        let x: [__m512i; LANES] = std::array::from_fn(|j| bytemuck::cast(i[j]));
        let v = rounds(&k, x.map(|xj| _mm512_xor_si512(xj, k[0])));
        for ((o, vj), xj) in o.iter_mut().zip(v).zip(x) {
            *o = bytemuck::cast(_mm512_xor_si512(vj, xj));
        }
    }
    for (i, o) in ic.remainder().iter().zip(oc.into_remainder()) {
        let x: __m512i = bytemuck::cast(*i);
        let [v] = rounds(&k, [_mm512_xor_si512(x, k[0])]);
        *o = bytemuck::cast(_mm512_xor_si512(v, x));
    }
}
