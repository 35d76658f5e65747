//! Comparisons in a two-party session (no dealer): the sign of a shared value from a Boolean
//! circuit on the parties' share bits, with AND gates from OT-made triples
//! ([`crate::ot::bits`]), then converted to an arithmetic share — and, for a ReLU, multiplied
//! into the value — with one mux triple ([`crate::ot::MuxTriples`]) and one opening.
//!
//! For `y = y0 + y1` in the `k`-bit window, `[y < 0] = msb_k(y) = y0_{k−1} ⊕ y1_{k−1} ⊕ c`,
//! where `c` is the carry out of adding the low `k − 1` bits of the two shares. The carry is a
//! tree over bit positions of (generate, propagate) pairs: `g_i = y0_i ∧ y1_i`,
//! `p_i = y0_i ⊕ y1_i`, and `(G, P)_hi ∘ (G, P)_lo = (G_hi ⊕ P_hi ∧ G_lo, P_hi ∧ P_lo)`.
//! Each AND layer is one round (both parties open `u ⊕ x`, `v ⊕ y` of their triple). With a
//! mux triple (a random bit `b`, XOR- and additively shared, and `c = a·b`), the parties open
//! `e = m ⊕ b` and, for a ReLU, `d = y − a`: then `[m] = e + (1 − 2e)·[b]` and
//! `y·m = e·y + (1 − 2e)·(d·[b] + [c])`, both local.
//!
//! * Rounds: `1 + ⌈log2(k − 1)⌉` AND layers and 1 opening (7 for `k = 64`), a ReLU the same.
//! * Online bytes per comparison per party: `2 · ANDs / 8` (≈ 47 for `k = 64`) plus 1/8 for
//!   `e`, and 8 for `d` in a ReLU. Material: `ANDs` ≈ `3(k − 1)` AND triples (32 bytes of OT
//!   each), one mux triple (56 bytes of OT).
//! * Exact for `|y| < 2^(k−1)`, as every method.

use crate::error::{Error, Result};
use crate::ids::PartyId;
use crate::ot::BitTriples;
use crate::party::Party;
use crate::share::AShare;
use crate::transport::FrameKind;

use super::nonlinear::Compared;

/// AND gates in the carry tree over `l` bit positions: `l` generates, then 2 per merged pair
/// per level.
pub(crate) fn and_gates(l: usize) -> usize {
    let (mut gates, mut groups) = (l, l);
    while groups > 1 {
        gates += 2 * (groups / 2);
        groups = groups.div_ceil(2);
    }
    gates
}

/// Packed bit planes: `planes[i]` holds bit `i` of every comparison, `words` words each.
type Plane = Vec<u64>;

/// This party's side of a batch of AND gates on XOR-shared packed planes.
struct Gates<'a> {
    triples: &'a BitTriples,
    /// Words of triples used so far.
    used: usize,
    p0: bool,
}

impl Party {
    /// [`Compared`] for a two-party session (see the [module docs](self)): for every element
    /// `x_e` and point `p_j`, shares of `[x_e − p_j ≥ 0]` and, with `relu`, of
    /// `ReLU(x_e − p_j)`. In the offline pass it fetches the same material and returns `None`.
    pub(super) async fn compare_layer_2pc(
        &mut self,
        x: &AShare,
        points: &[u64],
        relu: bool,
    ) -> Result<Option<Compared>> {
        let (n, pts) = (x.len(), points.len());
        let nq = n * pts;
        let bits = self.cmp_bits();
        let l = bits as usize - 1;
        let words = nq.div_ceil(64);
        let triples = self.corr.bit_triples(&mut self.ch, and_gates(l) * words * 64).await?;
        let offline = self.in_offline_pass();
        // y_q = x_e − p_j, q = e·pts + j.
        let y: Option<Vec<u64>> = if offline {
            None
        } else {
            let xs = x.expose_share()?.as_slice().to_vec();
            let p0 = self.id == PartyId::P0;
            // The public shift is P0's to subtract.
            Some((0..nq).map(|q| if p0 { xs[q / pts].wrapping_sub(points[q % pts]) } else { xs[q / pts] }).collect())
        };
        let mux = self.corr.mux_triples(&mut self.ch, nq).await?;
        let Some(y) = y else { return Ok(None) };
        // XOR shares of the sign bit m, then one opening: e = m ⊕ b and, for a ReLU, d = y − a.
        let m = self.msb(&y, l, words, &triples).await?;
        let p0 = self.id == PartyId::P0;
        let mut mine = Vec::with_capacity(8 * words + if relu { 8 * nq } else { 0 });
        for (&mw, &bw) in m.iter().zip(&mux.bits) {
            mine.extend_from_slice(&(mw ^ bw).to_le_bytes());
        }
        if relu {
            for (yq, aq) in y.iter().zip(&mux.a) {
                mine.extend_from_slice(&yq.wrapping_sub(*aq).to_le_bytes());
            }
        }
        // The transport refuses a frame of another length (a desync naming the peer).
        let theirs = self.ch.exchange_bytes(self.id.peer(), FrameKind::Open, &mine).await?;
        let word = |b: &[u8], j: usize| u64::from_le_bytes(b[8 * j..8 * j + 8].try_into().expect("8 bytes"));
        // m = e ⊕ b = e + (1 − 2e)·b, so [ge] = 1 − [m] = 1 − e − (1 − 2e)·[b] (public terms on P0).
        let one = u64::from(p0);
        let mut ge = Vec::with_capacity(nq);
        let mut rl = Vec::with_capacity(if relu { nq } else { 0 });
        for (q, &yq) in y.iter().enumerate() {
            let e = ((word(&mine, q / 64) ^ word(&theirs, q / 64)) >> (q % 64)) & 1;
            let flip = 1u64.wrapping_sub(e << 1); // 1 − 2e
            let m_share = (e & one).wrapping_add(flip.wrapping_mul(mux.b[q]));
            ge.push(one.wrapping_sub(m_share));
            if relu {
                // y·m = e·y + (1 − 2e)·(d·[b] + [c]), d = y − a public; ReLU = y − y·m.
                let j = words + q;
                let d = word(&mine, j).wrapping_add(word(&theirs, j));
                let ym =
                    e.wrapping_mul(yq).wrapping_add(flip.wrapping_mul(d.wrapping_mul(mux.b[q]).wrapping_add(mux.c[q])));
                rl.push(yq.wrapping_sub(ym));
            }
        }
        Ok(Some(Compared { ge, relu: relu.then_some(rl) }))
    }

    /// XOR shares (packed) of `msb_{l+1}(y0 + y1)` for this party's shares `y`.
    async fn msb(&mut self, y: &[u64], l: usize, words: usize, triples: &BitTriples) -> Result<Plane> {
        let p0 = self.id == PartyId::P0;
        let plane = |bit: usize| -> Plane {
            let mut p = vec![0u64; words];
            for (q, v) in y.iter().enumerate() {
                p[q / 64] |= ((v >> bit) & 1) << (q % 64);
            }
            p
        };
        let zero = vec![0u64; words];
        let mut gates = Gates { triples, used: 0, p0 };
        // Generate g_i = y0_i ∧ y1_i, with [y0_i] = (y0_i, 0) and [y1_i] = (0, y1_i); propagate
        // p_i = y0_i ⊕ y1_i is each party's own bit.
        let own: Vec<Plane> = (0..l).map(plane).collect();
        let (lhs, rhs): (Vec<&Plane>, Vec<&Plane>) =
            own.iter().map(|b| if p0 { (b, &zero) } else { (&zero, b) }).unzip();
        let mut g = self.and_layer(&mut gates, &lhs, &rhs).await?;
        let mut p = own;
        // Merge adjacent groups (lo = 2i, hi = 2i + 1) until one is left.
        while g.len() > 1 {
            let pairs = g.len() / 2;
            let mut lhs: Vec<&Plane> = Vec::with_capacity(2 * pairs);
            let mut rhs: Vec<&Plane> = Vec::with_capacity(2 * pairs);
            for i in 0..pairs {
                let (lo, hi) = (2 * i, 2 * i + 1);
                lhs.extend([&p[hi], &p[hi]]);
                rhs.extend([&g[lo], &p[lo]]);
            }
            let out = self.and_layer(&mut gates, &lhs, &rhs).await?;
            let (mut ng, mut np) = (Vec::with_capacity(g.len().div_ceil(2)), Vec::with_capacity(g.len().div_ceil(2)));
            for i in 0..pairs {
                let hi = 2 * i + 1;
                ng.push(xor(&g[hi], &out[2 * i]));
                np.push(out[2 * i + 1].clone());
            }
            if g.len() % 2 == 1 {
                ng.push(g.last().expect("odd, so not empty").clone());
                np.push(p.last().expect("as many as g").clone());
            }
            (g, p) = (ng, np);
        }
        if gates.used * 64 != triples.n {
            return Err(Error::Desync {
                peer: self.id.peer(),
                detail: format!("the carry circuit used {} of {} AND triples", gates.used * 64, triples.n),
            });
        }
        // msb = y0_l ⊕ y1_l ⊕ carry: each party adds its own top bit to its carry share.
        Ok(xor(&plane(l), &g[0]))
    }

    /// One round of AND gates `lhs[i] ∧ rhs[i]` on XOR-shared planes.
    async fn and_layer(&mut self, gates: &mut Gates<'_>, lhs: &[&Plane], rhs: &[&Plane]) -> Result<Vec<Plane>> {
        let words = lhs.first().map_or(0, |p| p.len());
        let t = gates.triples;
        let start = gates.used;
        let count = lhs.len() * words;
        if start + count > t.x.len() {
            return Err(Error::Desync {
                peer: self.id.peer(),
                detail: "the carry circuit ran out of AND triples".into(),
            });
        }
        gates.used += count;
        // d = u ⊕ x, e = v ⊕ y for every gate, opened together.
        let mut mine = Vec::with_capacity(16 * count);
        for (i, (u, v)) in lhs.iter().zip(rhs).enumerate() {
            for w in 0..words {
                let k = start + i * words + w;
                mine.extend_from_slice(&(u[w] ^ t.x[k]).to_le_bytes());
                mine.extend_from_slice(&(v[w] ^ t.y[k]).to_le_bytes());
            }
        }
        let theirs = self.ch.exchange_bytes(self.id.peer(), FrameKind::Open, &mine).await?;
        let word = |b: &[u8], j: usize| u64::from_le_bytes(b[8 * j..8 * j + 8].try_into().expect("8 bytes"));
        let mut out = Vec::with_capacity(lhs.len());
        for i in 0..lhs.len() {
            let mut plane = Vec::with_capacity(words);
            for w in 0..words {
                let j = i * words + w;
                let k = start + j;
                let d = word(&mine, 2 * j) ^ word(&theirs, 2 * j);
                let e = word(&mine, 2 * j + 1) ^ word(&theirs, 2 * j + 1);
                let mut z = t.z[k] ^ (d & t.y[k]) ^ (e & t.x[k]);
                if gates.p0 {
                    z ^= d & e;
                }
                plane.push(z);
            }
            out.push(plane);
        }
        Ok(out)
    }
}

fn xor(a: &[u64], b: &[u64]) -> Plane {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_count_follows_the_tree() {
        // l generates, then 2 per pair per level: 63 → 31, 16, 8, 4, 2, 1 pairs.
        assert_eq!(and_gates(1), 1);
        assert_eq!(and_gates(2), 2 + 2);
        assert_eq!(and_gates(3), 3 + 2 + 2);
        assert_eq!(and_gates(63), 63 + 2 * (31 + 16 + 8 + 4 + 2 + 1));
    }
}
