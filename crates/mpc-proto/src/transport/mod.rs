//! Moving bytes between parties.
//!
//! [`Transport`] is the seam between the protocols and the network: ordered, reliable,
//! message-oriented delivery of frames to and from each peer. This crate ships the in-memory
//! [`MemoryTransport`]; `party-node` implements the trait over QUIC streams with mutual TLS.
//! Every transport counts frames and bytes per peer in a [`Traffic`].
//!
//! On top of it, [`Channel`] frames messages (session id, sequence number, kind, length; see
//! [`frame`]), checks every incoming frame against what the protocol expects next (so a
//! dropped, duplicated, reordered, foreign or altered frame is an [`Error::Desync`], never silent
//! corruption) and attributes payload bytes and rounds to the operation in progress.

pub mod frame;
mod memory;

pub use frame::{FrameKind, Header};
pub use memory::MemoryTransport;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::party::{PartyId, SessionId};
use crate::stats::Stats;

/// A boxed, `Send` future (object-safe async trait methods).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Transport failures. Whose fault: the network or the peer (closed, timed out), or a local
/// limit.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// The channel to the peer is closed (the peer ended or crashed).
    #[error("connection to {0} closed")]
    Closed(PartyId),
    /// No frame from the peer within the transport's deadline.
    #[error("timed out waiting for {0}")]
    Timeout(PartyId),
    /// A frame larger than the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced or actual size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The peer is not part of this transport's mesh.
    #[error("unknown peer {0}")]
    UnknownPeer(PartyId),
    /// Any other I/O failure, described.
    #[error("transport I/O: {0}")]
    Io(String),
}

/// Ordered, reliable, message-oriented delivery between the three parties.
///
/// Requirements on implementations: frames to one peer arrive in the order sent; `send` may
/// return before the peer reads; `send` and `recv` on different peers (and a `send` and a
/// `recv` on the same peer) may run concurrently. Implementations count traffic in a
/// [`Traffic`].
pub trait Transport: Send + Sync {
    /// This endpoint's party.
    fn local_id(&self) -> PartyId;
    /// Sends one frame to `to`.
    fn send(&self, to: PartyId, frame: Vec<u8>) -> BoxFuture<'_, Result<(), TransportError>>;
    /// Receives the next frame from `from`.
    fn recv(&self, from: PartyId) -> BoxFuture<'_, Result<Vec<u8>, TransportError>>;
    /// Frames and bytes moved so far, per peer.
    fn traffic(&self) -> &Traffic;
}

/// Frame and byte counters per peer, shared by all transports.
#[derive(Debug, Default)]
pub struct Traffic {
    sent_bytes: [AtomicU64; 3],
    recv_bytes: [AtomicU64; 3],
    sent_frames: [AtomicU64; 3],
    recv_frames: [AtomicU64; 3],
}

/// A copy of [`Traffic`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficSnapshot {
    /// Bytes sent to each party (index = party id), framing included.
    pub sent_bytes: [u64; 3],
    /// Bytes received from each party.
    pub recv_bytes: [u64; 3],
    /// Frames sent to each party.
    pub sent_frames: [u64; 3],
    /// Frames received from each party.
    pub recv_frames: [u64; 3],
}

impl Traffic {
    /// Records a frame of `len` bytes sent to `to`.
    pub fn record_send(&self, to: PartyId, len: usize) {
        self.sent_bytes[to.index()].fetch_add(len as u64, Ordering::Relaxed);
        self.sent_frames[to.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a frame of `len` bytes received from `from`.
    pub fn record_recv(&self, from: PartyId, len: usize) {
        self.recv_bytes[from.index()].fetch_add(len as u64, Ordering::Relaxed);
        self.recv_frames[from.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> TrafficSnapshot {
        let load = |a: &[AtomicU64; 3]| [0, 1, 2].map(|i| a[i].load(Ordering::Relaxed));
        TrafficSnapshot {
            sent_bytes: load(&self.sent_bytes),
            recv_bytes: load(&self.recv_bytes),
            sent_frames: load(&self.sent_frames),
            recv_frames: load(&self.recv_frames),
        }
    }
}

/// A closed connection means the peer ended the session; anything else is a transport failure.
fn peer_error(e: TransportError) -> Error {
    match e {
        TransportError::Closed(p) => Error::PeerAborted(p),
        e => Error::Transport(e),
    }
}

/// A frame being filled in place ([`Channel::begin_frame`]).
pub struct OutFrame {
    to: PartyId,
    kind: FrameKind,
    len: usize,
    start: usize,
    buf: Vec<u8>,
}

impl std::fmt::Debug for OutFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutFrame({:?} to {}, {} of {} bytes)", self.kind, self.to, self.buf.len() - self.start, self.len)
    }
}

impl OutFrame {
    /// The frame so far: append the payload here (nothing else).
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

/// A session's framed, sequence-checked view of a [`Transport`], with statistics.
pub struct Channel {
    transport: std::sync::Arc<dyn Transport>,
    session: SessionId,
    send_seq: [u64; 3],
    recv_seq: [u64; 3],
    max_payload: usize,
    pub(crate) stats: Stats,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("session", &self.session).field("party", &self.me()).finish_non_exhaustive()
    }
}

/// Default bound on one frame's payload: 1 GiB. A peer announcing more is refused before
/// anything is allocated for it.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 30;

impl Channel {
    pub(crate) fn new(transport: std::sync::Arc<dyn Transport>, session: SessionId) -> Self {
        Self {
            transport,
            session,
            send_seq: [0; 3],
            recv_seq: [0; 3],
            max_payload: DEFAULT_MAX_PAYLOAD,
            stats: Stats::default(),
        }
    }

    /// This endpoint's party.
    pub fn me(&self) -> PartyId {
        self.transport.local_id()
    }

    /// The session this channel frames for.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The underlying transport's counters.
    pub fn traffic(&self) -> TrafficSnapshot {
        self.transport.traffic().snapshot()
    }

    /// Sets the largest payload accepted from a peer.
    pub fn set_max_payload(&mut self, max: usize) {
        self.max_payload = max;
    }

    fn next_header(&mut self, to: PartyId, kind: FrameKind, len: usize) -> Header {
        let seq = self.send_seq[to.index()];
        self.send_seq[to.index()] += 1;
        Header { session: self.session, seq, kind, len: len as u64 }
    }

    /// Starts a frame of `len` payload bytes to `to`: the header is written and the capacity
    /// reserved; append exactly `len` bytes to [`OutFrame::payload`], then
    /// [`Channel::send_frame`] it. Lets a producer serialise large material straight into the
    /// frame (the dealer's FSS keys) instead of into a buffer that is then copied.
    pub fn begin_frame(&mut self, to: PartyId, kind: FrameKind, len: usize) -> OutFrame {
        let h = self.next_header(to, kind, len);
        let buf = frame::encode_header(&h, len);
        OutFrame { to, kind, len, start: buf.len(), buf }
    }

    /// Sends a frame begun with [`Channel::begin_frame`].
    ///
    /// # Panics
    /// If the payload appended is not the announced length (a bug in the producer).
    pub async fn send_frame(&mut self, f: OutFrame) -> Result<()> {
        let (to, frame) = self.sealed(f);
        self.transport.send(to, frame).await.map_err(peer_error)?;
        Ok(())
    }

    /// Checks a filled frame's length and counts it as sent; its peer and bytes.
    fn sealed(&mut self, f: OutFrame) -> (PartyId, Vec<u8>) {
        assert_eq!(f.buf.len() - f.start, f.len, "frame payload is not the announced length");
        self.stats.record_send(f.kind, f.len as u64);
        (f.to, f.buf)
    }

    /// Sends raw bytes as one frame.
    pub async fn send_bytes(&mut self, to: PartyId, kind: FrameKind, payload: &[u8]) -> Result<()> {
        let h = self.next_header(to, kind, payload.len());
        let frame = frame::encode(&h, payload);
        self.stats.record_send(kind, payload.len() as u64);
        self.transport.send(to, frame).await.map_err(peer_error)?;
        Ok(())
    }

    /// Sends ring elements as one frame (raw little-endian u64).
    pub async fn send_u64(&mut self, to: PartyId, kind: FrameKind, payload: &[u64]) -> Result<()> {
        let mut f = self.begin_frame(to, kind, payload.len() * 8);
        frame::extend_u64(f.payload(), payload);
        self.send_frame(f).await
    }

    /// Receives the next frame from `from`, which must be of `kind` and have `expect_len`
    /// payload bytes if given; returns the payload.
    pub async fn recv_bytes(&mut self, from: PartyId, kind: FrameKind, expect_len: Option<usize>) -> Result<Vec<u8>> {
        let (raw, start) = self.recv_frame(from, kind, expect_len).await?;
        Ok(raw[start..].to_vec())
    }

    /// [`Channel::recv_bytes`] without copying: returns the whole frame and where its payload
    /// starts (large dealer material is used in place).
    pub async fn recv_frame(
        &mut self,
        from: PartyId,
        kind: FrameKind,
        expect_len: Option<usize>,
    ) -> Result<(Vec<u8>, usize)> {
        let raw = self.transport.recv(from).await.map_err(peer_error)?;
        let (h, payload) =
            frame::decode(&raw, self.max_payload).map_err(|detail| Error::Desync { peer: from, detail })?;
        let want_seq = self.recv_seq[from.index()];
        if h.kind == FrameKind::Abort {
            return Err(Error::PeerAborted(from));
        }
        let desync = |detail: String| Err(Error::Desync { peer: from, detail });
        if h.session != self.session {
            return desync(format!("frame for session {} in session {}", h.session, self.session));
        }
        if h.seq != want_seq {
            return desync(format!("sequence number {} where {} was expected", h.seq, want_seq));
        }
        if h.kind != kind {
            return desync(format!("{:?} frame where {:?} was expected", h.kind, kind));
        }
        if let Some(n) = expect_len
            && payload.len() != n
        {
            return desync(format!("{:?} payload of {} bytes where {} were expected", kind, payload.len(), n));
        }
        self.recv_seq[from.index()] += 1;
        self.stats.record_recv(kind, payload.len() as u64);
        let start = raw.len() - payload.len();
        Ok((raw, start))
    }

    /// Receives `n` ring elements from `from` in one frame of `kind`.
    pub async fn recv_u64(&mut self, from: PartyId, kind: FrameKind, n: usize) -> Result<Vec<u64>> {
        let (raw, start) = self.recv_frame(from, kind, Some(n * 8)).await?;
        Ok(frame::bytes_to_u64(&raw[start..]))
    }

    /// Sends `payload` to `peer` and receives as many elements from it, concurrently (so two
    /// parties exchanging large messages cannot deadlock on flow control). One round.
    pub async fn exchange_u64(&mut self, peer: PartyId, kind: FrameKind, payload: &[u64]) -> Result<Vec<u64>> {
        let (raw, start) = self.exchange_u64_raw(peer, kind, payload).await?;
        Ok(frame::bytes_to_u64(&raw[start..]))
    }

    /// As [`Channel::exchange_u64`], but returns the received frame as is, with the offset of
    /// its payload (`n` little-endian words): callers that consume the words once read them in
    /// place instead of copying 8·n bytes.
    pub async fn exchange_u64_raw(
        &mut self,
        peer: PartyId,
        kind: FrameKind,
        payload: &[u64],
    ) -> Result<(Vec<u8>, usize)> {
        let mut f = self.begin_frame(peer, kind, payload.len() * 8);
        frame::extend_u64(f.payload(), payload);
        self.exchange_frame(f).await
    }

    /// Sends a frame begun with [`Channel::begin_frame`] (to a computing peer, of `n` words)
    /// and receives the peer's frame of the same kind and length, concurrently; returns it with
    /// the offset of its payload. One round. How a caller that computes its message word by
    /// word writes it straight into the frame and reads the peer's words in place.
    pub async fn exchange_frame(&mut self, f: OutFrame) -> Result<(Vec<u8>, usize)> {
        let (peer, kind, len) = (f.to, f.kind, f.len);
        let (_, frame) = self.sealed(f);
        self.stats.record_round();
        let transport = self.transport.clone();
        let send = async move { transport.send(peer, frame).await.map_err(peer_error) };
        let (sent, received) = futures::join!(send, self.recv_frame(peer, kind, Some(len)));
        sent?;
        received
    }

    /// Sends `payload` bytes to `peer` and receives as many, concurrently. One round.
    pub async fn exchange_bytes(&mut self, peer: PartyId, kind: FrameKind, payload: &[u8]) -> Result<Vec<u8>> {
        let n = payload.len();
        let h = self.next_header(peer, kind, n);
        let frame = frame::encode(&h, payload);
        self.stats.record_send(kind, n as u64);
        self.stats.record_round();
        let transport = self.transport.clone();
        let send = async move { transport.send(peer, frame).await.map_err(peer_error) };
        let (sent, received) = futures::join!(send, self.recv_bytes(peer, kind, Some(n)));
        sent?;
        received
    }

    /// Tells every peer, best effort, that this party aborts the session.
    pub async fn send_abort(&mut self) {
        for p in PartyId::ALL {
            if p != self.me() {
                let h = self.next_header(p, FrameKind::Abort, 0);
                let _ = self.transport.send(p, frame::encode(&h, &[])).await;
            }
        }
    }
}
