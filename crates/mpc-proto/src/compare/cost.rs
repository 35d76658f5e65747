//! The cost model behind [`Policy::Auto`](super::Policy::Auto): which [`Method`] to use for
//! each comparison-based operation, from its size and the link.
//!
//! For every method and operation it estimates two times:
//!
//! * **online** — `rounds × RTT/2` (in an exchange both parties send at once, so a round costs
//!   one one-way delay), plus the online bytes on the critical path at the link rate, plus the
//!   computing parties' (and, for the helper, P2's) local work;
//! * **offline** — the dealer's material at the link rate (the dealer's uplink carries both
//!   parties' material) plus key generation.
//!
//! What a job costs depends on when the dealer's material is made ([`Objective`]):
//!
//! * [`Objective::Wall`] (the default): on demand, inside the job, so the job takes about
//!   `Σ online + Σ offline`, and each operation takes the method with the least
//!   `online + offline`;
//! * [`Objective::Latency`]: ahead of the job (a preprocessing pool), so the online phase and the
//!   material for the next job overlap: a job's cost is `max(Σ online, Σ offline)` — the online
//!   sum is the latency, and material matters only where it cannot keep up. [`choose`] starts
//!   from the lowest-latency method for every operation and, while material is the bottleneck,
//!   moves operations to cheaper-material methods, best improvement first, until the cost stops
//!   falling.
//!
//! Either way, where latency dominates (small operations, long RTT) FSS wins, and where bytes
//! dominate the helper does; [`crossover`] reports the sizes where the choice flips.
//!
//! The compute constants were measured on the project machine (2 vCPU, AES-NI + VAES; `cargo
//! bench --bench fss -- compare`); they shift the crossover, never correctness: every method is
//! exact, and the choice is a public function of public sizes and the agreed [`Link`].

use serde::{Deserialize, Serialize};

use super::{Method, Window, compact};
use crate::fss::{Relu64Key, SignKey};

/// What the cost model assumes about the network between the parties. Part of the session
/// configuration (and of plans), so every party resolves [`Policy::Auto`](super::Policy::Auto)
/// the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Link {
    /// Round-trip time in microseconds.
    pub rtt_us: u32,
    /// Bandwidth per party in megabits per second.
    pub mbit_s: u32,
}

impl Default for Link {
    /// A LAN: 0.2 ms, 4 Gbit/s (what QUIC on a loopback or 10 GbE path gives one party).
    fn default() -> Self {
        Link { rtt_us: 200, mbit_s: 4000 }
    }
}

impl Link {
    /// Seconds per byte.
    fn byte_s(&self) -> f64 {
        8.0 / (f64::from(self.mbit_s.max(1)) * 1e6)
    }

    /// What one sequential round costs: a one-way delay, but at least [`ROUND_FLOOR_S`].
    fn round_s(&self) -> f64 {
        (f64::from(self.rtt_us) * 0.5e-6).max(ROUND_FLOOR_S)
    }
}

/// The least a sequential round costs, whatever the RTT: waking the receiving party's job
/// thread and QUIC driver, scheduling three processes on the machine's cores. Measured end to
/// end on the project machine (2 vCPU, three processes over QUIC on loopback): 100 more
/// helper rounds of a small layer cost a logistic-regression training about 50 ms, i.e. 0.5 ms
/// per round against a 0.13 ms ping; the floor is set below that, at 0.3 ms.
pub const ROUND_FLOOR_S: f64 = 300e-6;

/// Per-element compute, in nanoseconds, measured with `cargo bench --bench fss -- compare` at
/// k = 32 on the project machine (AMD EPYC, 2 vCPU, VAES): 100k one-round ReLU keys in 270 ms,
/// 100k compact keys in 23.8 ms and evaluated in 9.5 ms, helper terms for 100k elements in 6.7
/// ms and their zero test in 0.17 ms.
mod ns {
    /// One-round FSS: key generation per tree level (two parties, 2-word payload).
    pub(super) const FSS1_KEYGEN_LEVEL: f64 = 87.0;
    /// One-round FSS: evaluation per level and point.
    pub(super) const FSS1_EVAL_LEVEL: f64 = 7.0;
    /// Compact FSS: key generation per level (four AES blocks, both parties' keys written).
    pub(super) const FSS_KEYGEN_LEVEL: f64 = 10.0;
    /// Compact FSS: evaluation per level and point.
    pub(super) const FSS_EVAL_LEVEL: f64 = 4.0;
    /// Helper: a computing party's work per comparison term (sampling, blinding, rotation).
    pub(super) const HELPER_TERM: f64 = 2.1;
    /// Helper: P2's zero test per term.
    pub(super) const HELPER_TEST_TERM: f64 = 0.1;
    /// Any method: per element-point bookkeeping (opening, finishing).
    pub(super) const PER_POINT: f64 = 4.0;
}

/// What the cost model minimises (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Objective {
    /// The whole job with material made on demand: `Σ (online + offline)`.
    #[default]
    Wall,
    /// Online latency with the dealer running ahead: `max(Σ online, Σ offline)`.
    Latency,
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wall" => Ok(Objective::Wall),
            "latency" => Ok(Objective::Latency),
            o => Err(format!("unknown objective {o:?}: use wall (material made on demand) or latency (dealer ahead)")),
        }
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Objective::Wall => "wall",
            Objective::Latency => "latency",
        })
    }
}

/// What the cost model needs to know about one comparison-based operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpShape {
    /// Comparisons (masked elements) in all.
    pub elements: usize,
    /// Evaluation points per element (1; a spline's breakpoints).
    pub points: usize,
    /// Whether the operation needs `ReLU(x)` (a 64-bit opening and `v·r` shares), not only the bit.
    pub relu: bool,
    /// The comparison window `k`.
    pub bits: u32,
    /// Comparison layers in sequence (a max tree's levels): multiplies the rounds.
    pub sequential: usize,
}

/// Estimated seconds of one operation by one method.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Estimate {
    /// Online latency.
    pub online: f64,
    /// Dealer material and key generation.
    pub offline: f64,
}

/// Online rounds of one comparison layer by `method` (P1's critical path, as counted in the
/// party's statistics).
pub fn rounds(method: Method) -> usize {
    match method {
        Method::Fss1 => 1,
        Method::Fss => 2,
        Method::Helper => 3,
    }
}

/// Dealer material bytes per element (both parties together) and online bytes per element on
/// the critical path.
fn bytes(method: Method, op: &OpShape) -> (f64, f64) {
    let w = Window::new(op.bits.clamp(2, 64));
    let k = f64::from(w.bits());
    let pts = op.points as f64;
    let open = if op.relu || op.points > 1 { 8.0 } else { w.open_bytes() as f64 };
    let outs = if op.relu { 16.0 } else { 8.0 };
    match method {
        Method::Fss1 => {
            let key = if op.relu || op.points > 1 {
                Relu64Key::byte_len_for(w.bits())
            } else {
                SignKey::byte_len_for(w.bits())
            };
            (2.0 * key as f64, open)
        }
        Method::Fss => {
            let m = (compact::material_len(w, 1, op.points, op.relu, false)
                + compact::material_len(w, 1, op.points, op.relu, true)) as f64;
            (m, open + pts / 8.0)
        }
        Method::Helper => (7.0 * (k - 1.0) / 8.0, open + pts * (7.0 * k / 8.0 + outs)),
    }
}

/// The estimate for `op` by `method` over `link`.
pub fn estimate(method: Method, op: &OpShape, link: &Link) -> Estimate {
    let n = op.elements as f64;
    let pts = op.points as f64;
    let k = op.bits.clamp(2, 64) as f64;
    let levels = (k - 1.0 - f64::from(crate::fss::bitdcf::LEAF_BITS)).max(0.0);
    let (material, online_bytes) = bytes(method, op);
    let (keygen_ns, eval_ns) = match method {
        Method::Fss1 => (ns::FSS1_KEYGEN_LEVEL * (k - 1.0), ns::FSS1_EVAL_LEVEL * (k - 1.0) * pts),
        Method::Fss => (ns::FSS_KEYGEN_LEVEL * levels, ns::FSS_EVAL_LEVEL * (levels + 1.0) * pts),
        Method::Helper => (0.0, (ns::HELPER_TERM + ns::HELPER_TEST_TERM) * k * pts),
    };
    let compute = n * (eval_ns + ns::PER_POINT * pts) * 1e-9;
    Estimate {
        online: (rounds(method) * op.sequential) as f64 * link.round_s() + n * online_bytes * link.byte_s() + compute,
        offline: n * material * link.byte_s() + n * keygen_ns * 1e-9,
    }
}

fn job_cost(t: (f64, f64)) -> f64 {
    t.0.max(t.1)
}

/// The methods for a job's comparison-based operations, in order, minimising the objective's
/// cost (ties: the lower online sum). See the module docs.
pub fn choose(link: &Link, objective: Objective, ops: &[OpShape]) -> Vec<Method> {
    let est: Vec<[Estimate; 3]> = ops.iter().map(|op| Method::ALL.map(|m| estimate(m, op, link))).collect();
    let idx = |m: Method| Method::ALL.iter().position(|&x| x == m).expect("a method");
    if objective == Objective::Wall {
        // The sum decomposes: each operation on its own.
        return est
            .iter()
            .map(|e| {
                *Method::ALL
                    .iter()
                    .min_by(|&&a, &&b| {
                        let (ea, eb) = (e[idx(a)], e[idx(b)]);
                        (ea.online + ea.offline)
                            .total_cmp(&(eb.online + eb.offline))
                            .then(ea.online.total_cmp(&eb.online))
                    })
                    .expect("three methods")
            })
            .collect();
    }
    // Start from each operation's lowest latency (ties: less material).
    let mut pick: Vec<Method> = est
        .iter()
        .map(|e| {
            *Method::ALL
                .iter()
                .min_by(|&&a, &&b| {
                    let (ea, eb) = (e[idx(a)], e[idx(b)]);
                    ea.online.total_cmp(&eb.online).then(ea.offline.total_cmp(&eb.offline))
                })
                .expect("three methods")
        })
        .collect();
    let sums = |pick: &[Method]| {
        pick.iter().zip(&est).fold((0.0, 0.0), |(on, off), (&m, e)| (on + e[idx(m)].online, off + e[idx(m)].offline))
    };
    loop {
        let cur = sums(&pick);
        if cur.1 <= cur.0 {
            break;
        }
        let mut best: Option<(usize, Method, (f64, f64))> = None;
        for (i, e) in est.iter().enumerate() {
            let now = e[idx(pick[i])];
            for &m in &Method::ALL {
                let alt = e[idx(m)];
                if alt.offline >= now.offline {
                    continue;
                }
                let next = (cur.0 - now.online + alt.online, cur.1 - now.offline + alt.offline);
                let better = match best {
                    None => true,
                    Some((_, _, b)) => job_cost(next) < job_cost(b) || (job_cost(next) == job_cost(b) && next.0 < b.0),
                };
                if better {
                    best = Some((i, m, next));
                }
            }
        }
        match best {
            Some((i, m, next)) if job_cost(next) < job_cost(cur) => pick[i] = m,
            _ => break,
        }
    }
    pick
}

/// The method for a single operation (a job of one).
pub fn choose_one(link: &Link, objective: Objective, op: &OpShape) -> Method {
    choose(link, objective, std::slice::from_ref(op))[0]
}

/// For a single ReLU layer of `k`-bit comparisons over `link`: the smallest element count
/// (searched up to 2^24) from which [`choose_one`] picks each method, in the order the choice
/// changes with growing size — what BENCHMARKS.md reports as the crossover.
pub fn crossover(link: &Link, objective: Objective, bits: u32) -> Vec<(usize, Method)> {
    let choose_one = |l: &Link, op: &OpShape| choose_one(l, objective, op);
    let op = |n| OpShape { elements: n, points: 1, relu: true, bits, sequential: 1 };
    let mut out = vec![(1, choose_one(link, &op(1)))];
    let mut n = 1usize;
    while n < 1 << 24 {
        let next = (n * 5 / 4).max(n + 1);
        let m = choose_one(link, &op(next));
        if m != out.last().expect("non-empty").1 {
            // Bisect between n and next for the first size with the new method.
            let (mut lo, mut hi) = (n, next);
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                if choose_one(link, &op(mid)) == m { hi = mid } else { lo = mid }
            }
            out.push((hi, m));
        }
        n = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relu(n: usize) -> OpShape {
        OpShape { elements: n, points: 1, relu: true, bits: 32, sequential: 1 }
    }

    #[test]
    fn bulk_on_a_lan_goes_to_the_helper_and_small_wan_layers_to_fss() {
        let lan = Link::default();
        for o in [Objective::Wall, Objective::Latency] {
            assert_eq!(choose_one(&lan, o, &relu(100_000)), Method::Helper);
            assert_eq!(choose_one(&Link { rtt_us: 20_000, mbit_s: 1000 }, o, &relu(100)), Method::Fss1);
        }
        // A mid-size layer on a LAN: its one-round keys are not worth their bytes when the
        // dealer works on demand.
        assert_eq!(choose_one(&lan, Objective::Wall, &relu(12_800)), Method::Helper);
        let wan = Link { rtt_us: 20_000, mbit_s: 1000 };
        let choose = |link: &Link, ops: &[OpShape]| choose(link, Objective::Latency, ops);
        // A job of many small layers over a WAN stays latency-bound: FSS throughout, one round
        // for all but (at most) the largest layer.
        let job: Vec<OpShape> = [1728, 864, 864, 512, 256, 256, 120, 84].iter().map(|&n| relu(n)).collect();
        let picks = choose(&wan, &job);
        assert!(!picks.contains(&Method::Helper), "{picks:?}");
        assert!(picks[1..].iter().all(|&m| m == Method::Fss1), "{picks:?}");
        // The same layers at batch 64 are material-bound: the big ones move off FSS.
        let big: Vec<OpShape> = job.iter().map(|o| relu(o.elements * 64)).collect();
        assert!(choose(&wan, &big).contains(&Method::Helper));
    }

    #[test]
    fn estimates_grow_with_size_and_rtt() {
        let lan = Link::default();
        for m in Method::ALL {
            let (a, b) = (estimate(m, &relu(1000), &lan), estimate(m, &relu(100_000), &lan));
            assert!(b.online > a.online && b.offline >= a.offline);
            let far = estimate(m, &relu(1000), &Link { rtt_us: 40_000, ..lan });
            assert!(far.online > a.online);
        }
        // Fewer rounds, more material: the three methods are ordered both ways.
        let e = Method::ALL.map(|m| estimate(m, &relu(10_000), &Link { rtt_us: 20_000, mbit_s: 1000 }));
        assert!(e[0].offline < e[1].offline && e[1].offline < e[2].offline);
        assert!(e[0].online > e[1].online && e[1].online > e[2].online);
    }

    #[test]
    fn crossover_is_monotone_in_size() {
        for o in [Objective::Wall, Objective::Latency] {
            let c = crossover(&Link { rtt_us: 20_000, mbit_s: 1000 }, o, 32);
            assert!(c.len() >= 2, "{c:?}");
            assert!(c.windows(2).all(|w| w[0].0 < w[1].0));
            assert_eq!(c.last().unwrap().1, Method::Helper);
        }
    }
}
