//! The warm pool: prediction jobs preprocessed ahead of time.
//!
//! After a prediction of `n` rows (at most `[limits] pool_rows`) of a published model, the three
//! nodes run the offline pass of the next such job in idle time: a fresh session (fresh seeds)
//! in which the dealer generates and delivers all the material — Beaver triples, comparison keys,
//! helper material — that loading the model and predicting `n` rows needs, and every node
//! parks its side of that session here, keyed by the model and the job's plan hash. The next
//! job of the same model and size takes an entry and runs only the online pass: its latency is
//! the online phase.
//!
//! Rules:
//! * **Never reused.** [`WarmPool::take`] removes the entry; a party's session is consumed by
//!   the one job that takes it (its correlations are replayed once, in order, then gone).
//! * **All three or none.** A job always opens its own session first; over it the three
//!   parties check that each took the same entry ([`mpc_proto::Party::agree_equal`] on the job
//!   and the entry's id). Only then do they switch to the entry's session; otherwise every party
//!   gives its entry back and the job runs on demand in its own session. (Deciding over the
//!   entry's session instead left a node that held no entry yet — its offline pass still
//!   running — in the job's session while the others waited in the entry's.)
//! * **Discarded on plan change or restart.** Entries live in memory only; publishing or
//!   registering a model again drops its entries whose plan differs, and a restart drops them
//!   all (the peers' halves then fail the agreement until capacity evicts them).
//! * **Bounded.** At most `[limits] pool_jobs` entries across all models; adding one beyond
//!   that evicts the oldest.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use mpc_proto::Party;
use serde::Serialize;

/// What an entry serves: a model (by name) and the hash of the job it pre-plays (plan and rows).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Model name.
    pub model: String,
    /// Rows of the job.
    pub rows: usize,
    /// The predict job's session hash ([`crate::ml::Prepared::session_hash`]): plan and rows.
    pub job_hash: [u8; 32],
}

/// One preprocessed job: this node's party of a session whose offline pass is complete.
pub struct Entry {
    /// The session's id (equal at the three nodes).
    pub id: u128,
    /// Rows it serves.
    pub rows: usize,
    /// This node's side of the session, ready for `begin_online`.
    pub party: Party,
    created: Instant,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Entry({:032x}, {} rows)", self.id, self.rows)
    }
}

impl Entry {
    /// An entry for a party whose offline pass just finished.
    pub fn new(id: u128, rows: usize, party: Party) -> Entry {
        Entry { id, rows, party, created: Instant::now() }
    }
}

/// Counters, for the API and the tests.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct PoolCounters {
    /// Entries added.
    pub created: u64,
    /// Entries taken by a job.
    pub served: u64,
    /// Entries dropped unused (plan change, eviction, a failed agreement).
    pub discarded: u64,
}

/// `GET /v1/pool`.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct PoolStatus {
    /// `[limits] pool_jobs`.
    pub capacity: usize,
    /// `[limits] pool_rows`.
    pub max_rows: usize,
    /// Entries held, per model.
    pub entries: Vec<PoolEntryStatus>,
    /// Counters since the node started.
    pub counters: PoolCounters,
}

/// One held entry.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct PoolEntryStatus {
    /// Model name.
    pub model: String,
    /// Rows of the job it serves.
    pub rows: usize,
    /// Session id (hex).
    pub id: String,
    /// Seconds since its offline pass finished.
    pub age_s: f64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<PoolKey, VecDeque<Entry>>,
    counters: PoolCounters,
    /// Ids of every entry ever added or taken: an id is never served twice.
    seen: std::collections::HashSet<u128>,
}

/// This node's warm pool (see the module docs).
pub struct WarmPool {
    capacity: usize,
    max_rows: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WarmPool({} of {})", self.len(), self.capacity)
    }
}

impl WarmPool {
    /// A pool of at most `capacity` entries for jobs of at most `max_rows` rows (0: disabled).
    pub fn new(capacity: usize, max_rows: usize) -> WarmPool {
        WarmPool { capacity, max_rows, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().entries.values().map(VecDeque::len).sum()
    }

    /// Whether the pool holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many entries this node would add for `key` after a job of `rows` rows: up to two
    /// (one to replace the one just used and one ahead), within capacity; none for jobs over
    /// `pool_rows`.
    pub fn wanted(&self, key: &PoolKey, rows: usize) -> usize {
        if self.capacity == 0 || rows == 0 || rows > self.max_rows {
            return 0;
        }
        let held = self.lock().entries.get(key).map_or(0, VecDeque::len);
        self.capacity.min(2).saturating_sub(held)
    }

    /// Takes the oldest entry for `key`, if any. The caller must use it, give it back with
    /// [`WarmPool::restore`], or drop it: it is never handed out twice.
    pub fn take(&self, key: &PoolKey) -> Option<Entry> {
        let mut g = self.lock();
        let q = g.entries.get_mut(key)?;
        let e = q.pop_front()?;
        if q.is_empty() {
            g.entries.remove(key);
        }
        g.counters.served += 1;
        Some(e)
    }

    /// Gives back an entry [`WarmPool::take`] handed out and the job did not use (the peers
    /// held another, or none yet): it is the oldest for its key again.
    pub fn restore(&self, key: PoolKey, entry: Entry) {
        let mut g = self.lock();
        g.counters.served -= 1.min(g.counters.served);
        g.entries.entry(key).or_default().push_front(entry);
    }

    /// Counts an entry taken by [`WarmPool::take`] that could not be used.
    pub fn count_discarded(&self, n: u64) {
        let mut g = self.lock();
        g.counters.served -= n.min(g.counters.served);
        g.counters.discarded += n;
    }

    /// Adds an entry, evicting the oldest entries beyond capacity. An id already seen is
    /// refused (the material would be served twice).
    pub fn put(&self, key: PoolKey, entry: Entry) -> bool {
        let mut g = self.lock();
        if self.capacity == 0 || !g.seen.insert(entry.id) {
            return false;
        }
        g.counters.created += 1;
        g.entries.entry(key).or_default().push_back(entry);
        while g.entries.values().map(VecDeque::len).sum::<usize>() > self.capacity {
            let oldest = g
                .entries
                .iter()
                .filter_map(|(k, q)| q.front().map(|e| (k.clone(), e.created)))
                .min_by_key(|(_, t)| *t)
                .map(|(k, _)| k)
                .expect("over capacity, so not empty");
            let q = g.entries.get_mut(&oldest).expect("found above");
            q.pop_front();
            if q.is_empty() {
                g.entries.remove(&oldest);
            }
            g.counters.discarded += 1;
        }
        true
    }

    /// Drops every entry of `model` whose plan is not `keep` (all of them with `None`).
    pub fn discard_model(&self, model: &str, keep: Option<&dyn Fn(&PoolKey) -> bool>) {
        let mut g = self.lock();
        let drop: Vec<PoolKey> =
            g.entries.keys().filter(|k| k.model == model && !keep.is_some_and(|f| f(k))).cloned().collect();
        for k in drop {
            let n = g.entries.remove(&k).map_or(0, |q| q.len());
            g.counters.discarded += n as u64;
        }
    }

    /// The counters.
    pub fn counters(&self) -> PoolCounters {
        self.lock().counters
    }

    /// What the pool holds.
    pub fn status(&self) -> PoolStatus {
        let g = self.lock();
        let mut entries: Vec<PoolEntryStatus> = g
            .entries
            .iter()
            .flat_map(|(k, q)| {
                q.iter().map(|e| PoolEntryStatus {
                    model: k.model.clone(),
                    rows: e.rows,
                    id: format!("{:032x}", e.id),
                    age_s: e.created.elapsed().as_secs_f64(),
                })
            })
            .collect();
        entries.sort_by(|a, b| (&a.model, a.rows, &a.id).cmp(&(&b.model, b.rows, &b.id)));
        PoolStatus { capacity: self.capacity, max_rows: self.max_rows, entries, counters: g.counters }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpc_proto::testing::run_parties;

    /// Three real parties (the in-memory mesh), so entries hold what the pool holds in a node.
    fn parties(n: usize) -> Vec<Party> {
        let mut out = Vec::new();
        for i in 0..n {
            let [p, _, _] = run_parties(i as u64 + 1, |p| async move { Ok(p) }).unwrap();
            out.push(p);
        }
        out
    }

    fn key(model: &str, h: u8) -> PoolKey {
        PoolKey { model: model.into(), rows: 1, job_hash: [h; 32] }
    }

    #[test]
    fn entries_are_handed_out_once_in_order_and_evicted_beyond_capacity() {
        let pool = WarmPool::new(3, 16);
        let mut ps = parties(5).into_iter();
        assert_eq!(pool.wanted(&key("m", 1), 4), 2);
        assert_eq!(pool.wanted(&key("m", 1), 17), 0, "jobs over pool_rows are not pre-played");
        for id in 1..=2 {
            assert!(pool.put(key("m", 1), Entry::new(id, 4, ps.next().unwrap())));
        }
        assert_eq!(pool.wanted(&key("m", 1), 4), 0);
        assert!(!pool.put(key("m", 1), Entry::new(2, 4, ps.next().unwrap())), "an id is never added twice");
        assert!(pool.put(key("other", 2), Entry::new(3, 1, ps.next().unwrap())));
        // A fourth entry evicts the oldest (id 1).
        assert!(pool.put(key("other", 2), Entry::new(4, 1, ps.next().unwrap())));
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.take(&key("m", 1)).map(|e| e.id), Some(2));
        assert!(pool.take(&key("m", 1)).is_none(), "taken entries are gone");
        assert_eq!(pool.counters(), PoolCounters { created: 4, served: 1, discarded: 1 });
        // A plan change drops the model's other entries.
        pool.discard_model("other", Some(&|k: &PoolKey| k.job_hash == [9; 32]));
        assert!(pool.is_empty());
        assert_eq!(pool.counters().discarded, 3);
        let e = Entry::new(9, 1, parties(1).pop().unwrap());
        assert!(format!("{e:?}").starts_with("Entry(0000"), "Debug shows the id, no material");
    }

    #[test]
    fn an_entry_the_peers_did_not_hold_goes_back_first_in_line() {
        let pool = WarmPool::new(4, 16);
        let mut ps = parties(2).into_iter();
        for id in 1..=2 {
            assert!(pool.put(key("m", 1), Entry::new(id, 4, ps.next().unwrap())));
        }
        let e = pool.take(&key("m", 1)).unwrap();
        assert_eq!(e.id, 1);
        pool.restore(key("m", 1), e);
        assert_eq!(pool.counters(), PoolCounters { created: 2, served: 0, discarded: 0 });
        assert_eq!(pool.take(&key("m", 1)).map(|e| e.id), Some(1), "the oldest again");
        assert_eq!(pool.take(&key("m", 1)).map(|e| e.id), Some(2));
    }

    #[test]
    fn a_disabled_pool_keeps_nothing() {
        let pool = WarmPool::new(0, 16);
        assert_eq!(pool.wanted(&key("m", 1), 1), 0);
        assert!(!pool.put(key("m", 1), Entry::new(1, 1, parties(1).pop().unwrap())));
        assert!(pool.is_empty());
    }
}
