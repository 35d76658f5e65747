//! Rounds and bytes, counted per operation.
//!
//! Every frame a [`Channel`](crate::transport::Channel) sends or receives is attributed to the
//! top-level protocol operation in progress (`"mul"`, `"matmul"`, …): online payload bytes for
//! openings and reveals, offline bytes for dealer material, and one round per sequential
//! exchange on the critical path. Framing overhead is not included here; the transport's
//! [`Traffic`](crate::transport::Traffic) counts whole frames.

use std::collections::BTreeMap;

use crate::transport::FrameKind;

/// Counters for one operation (or for a whole session).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Number of top-level calls.
    pub calls: u64,
    /// Sequential communication rounds of the online phase.
    pub rounds: u64,
    /// Online payload bytes sent (openings, reveals).
    pub online_sent: u64,
    /// Online payload bytes received.
    pub online_recv: u64,
    /// Dealer-material payload bytes sent (nonzero on the dealer only).
    pub offline_sent: u64,
    /// Dealer-material payload bytes received.
    pub offline_recv: u64,
    /// Session-setup payload bytes sent.
    pub setup_sent: u64,
    /// Frames sent.
    pub frames_sent: u64,
}

impl OpStats {
    /// Field-wise difference `self - earlier` (for measuring one span of a session).
    pub fn since(&self, earlier: &OpStats) -> OpStats {
        OpStats {
            calls: self.calls - earlier.calls,
            rounds: self.rounds - earlier.rounds,
            online_sent: self.online_sent - earlier.online_sent,
            online_recv: self.online_recv - earlier.online_recv,
            offline_sent: self.offline_sent - earlier.offline_sent,
            offline_recv: self.offline_recv - earlier.offline_recv,
            setup_sent: self.setup_sent - earlier.setup_sent,
            frames_sent: self.frames_sent - earlier.frames_sent,
        }
    }
}

/// A party's statistics: totals and a breakdown by operation name.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Totals over the session.
    pub total: OpStats,
    /// Per top-level operation.
    pub per_op: BTreeMap<&'static str, OpStats>,
    current: Option<&'static str>,
}

impl Stats {
    /// Marks the start of operation `name`; returns whether it is top-level (nested calls, such
    /// as the `mul` inside a `relu`, are attributed to the outer operation).
    pub(crate) fn enter(&mut self, name: &'static str) -> bool {
        if self.current.is_some() {
            return false;
        }
        self.current = Some(name);
        self.per_op.entry(name).or_default().calls += 1;
        self.total.calls += 1;
        true
    }

    /// Marks the end of the operation entered with `top = true`.
    pub(crate) fn exit(&mut self, top: bool) {
        if top {
            self.current = None;
        }
    }

    fn apply(&mut self, f: impl Fn(&mut OpStats)) {
        f(&mut self.total);
        f(self.per_op.entry(self.current.unwrap_or("other")).or_default());
    }

    pub(crate) fn record_send(&mut self, kind: FrameKind, bytes: u64) {
        self.apply(|s| {
            s.frames_sent += 1;
            match kind {
                FrameKind::Material => s.offline_sent += bytes,
                FrameKind::Hello => s.setup_sent += bytes,
                _ => s.online_sent += bytes,
            }
        });
    }

    pub(crate) fn record_recv(&mut self, kind: FrameKind, bytes: u64) {
        self.apply(|s| match kind {
            FrameKind::Material => s.offline_recv += bytes,
            FrameKind::Hello => {}
            _ => s.online_recv += bytes,
        });
    }

    pub(crate) fn record_round(&mut self) {
        self.apply(|s| s.rounds += 1);
    }

    /// Counters of one operation (zero if it never ran).
    pub fn op(&self, name: &str) -> OpStats {
        self.per_op.get(name).copied().unwrap_or_default()
    }
}
