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
use crate::ids::{PartyId, SessionId};
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

/// Sends a message's frames in order.
async fn send_all(transport: &dyn Transport, to: PartyId, frames: Vec<Vec<u8>>) -> Result<()> {
    for f in frames {
        transport.send(to, f).await.map_err(peer_error)?;
    }
    Ok(())
}

/// A frame being filled in place ([`Channel::begin_frame`]).
pub struct OutFrame {
    to: PartyId,
    kind: FrameKind,
    len: usize,
    start: usize,
    header: Header,
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
        Header { session: self.session, seq, kind, len: len as u64, total: len as u64 }
    }

    /// The physical frames of a message of `payload` to `to` (one, or several of at most
    /// [`frame::FRAGMENT`] bytes each, with consecutive sequence numbers). `first` is the
    /// header the message was begun with.
    fn fragments(&mut self, to: PartyId, first: Header, payload: &[u8]) -> Vec<Vec<u8>> {
        let total = payload.len() as u64;
        payload
            .chunks(frame::FRAGMENT)
            .enumerate()
            .map(|(i, chunk)| {
                let seq = if i == 0 {
                    first.seq
                } else {
                    let s = self.send_seq[to.index()];
                    self.send_seq[to.index()] += 1;
                    s
                };
                let h = Header { session: self.session, seq, kind: first.kind, len: chunk.len() as u64, total };
                frame::encode(&h, chunk)
            })
            .collect()
    }

    /// Starts a frame of `len` payload bytes to `to`: the header is written and the capacity
    /// reserved; append exactly `len` bytes to [`OutFrame::payload`], then
    /// [`Channel::send_frame`] it. Lets a producer serialise large material straight into the
    /// frame (the dealer's FSS keys) instead of into a buffer that is then copied.
    ///
    /// A message longer than [`frame::FRAGMENT`] is sent as several frames; begin at most one
    /// frame per peer at a time (its fragments take the sequence numbers after its own).
    pub fn begin_frame(&mut self, to: PartyId, kind: FrameKind, len: usize) -> OutFrame {
        let h = self.next_header(to, kind, len);
        let buf = if len <= frame::FRAGMENT { frame::encode_header(&h, len) } else { Vec::with_capacity(len) };
        OutFrame { to, kind, len, start: buf.len(), header: h, buf }
    }

    /// Sends a frame begun with [`Channel::begin_frame`].
    ///
    /// # Panics
    /// If the payload appended is not the announced length (a bug in the producer).
    pub async fn send_frame(&mut self, f: OutFrame) -> Result<()> {
        let (to, frames) = self.sealed(f);
        send_all(&*self.transport, to, frames).await
    }

    /// Checks a filled frame's length, counts it as sent, and splits it into the frames that go
    /// on the wire; its peer and those frames.
    fn sealed(&mut self, f: OutFrame) -> (PartyId, Vec<Vec<u8>>) {
        assert_eq!(f.buf.len() - f.start, f.len, "frame payload is not the announced length");
        self.stats.record_send(f.kind, f.len as u64);
        if f.len <= frame::FRAGMENT {
            (f.to, vec![f.buf])
        } else {
            let frames = self.fragments(f.to, f.header, &f.buf[f.start..]);
            (f.to, frames)
        }
    }

    /// Sends raw bytes as one message.
    pub async fn send_bytes(&mut self, to: PartyId, kind: FrameKind, payload: &[u8]) -> Result<()> {
        let h = self.next_header(to, kind, payload.len());
        let frames = self.fragments(to, h, payload);
        self.stats.record_send(kind, payload.len() as u64);
        send_all(&*self.transport, to, frames).await
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
        let (h, start) = self.check_frame(from, kind, &raw)?;
        let desync = |detail: String| Err(Error::Desync { peer: from, detail });
        let limit = expect_len.unwrap_or(self.max_payload);
        if h.total > limit as u64 || expect_len.is_some_and(|n| h.total != n as u64) {
            return desync(format!("{:?} message of {} bytes where {} were expected", kind, h.total, limit));
        }
        if h.len == h.total {
            self.stats.record_recv(kind, h.total);
            return Ok((raw, start));
        }
        if h.len != frame::FRAGMENT as u64 {
            return desync(format!("the first frame of a {}-byte message carries {} bytes", h.total, h.len));
        }
        // A split message: its frames follow in order; the total was checked before this
        // allocation.
        let total = h.total;
        let mut msg = Vec::with_capacity(total as usize);
        msg.extend_from_slice(&raw[start..]);
        drop(raw);
        while (msg.len() as u64) < total {
            let raw = self.transport.recv(from).await.map_err(peer_error)?;
            let (h, start) = self.check_frame(from, kind, &raw)?;
            let end = msg.len() as u64 + h.len;
            if h.total != total || end > total || (end < total && h.len != frame::FRAGMENT as u64) {
                return desync(format!(
                    "a fragment of a {total}-byte {kind:?} message announces {} of {}",
                    h.len, h.total
                ));
            }
            msg.extend_from_slice(&raw[start..]);
        }
        self.stats.record_recv(kind, total);
        Ok((msg, 0))
    }

    /// Decodes one frame from `from` and checks its session, sequence number and kind;
    /// returns its header and where its payload starts.
    fn check_frame(&mut self, from: PartyId, kind: FrameKind, raw: &[u8]) -> Result<(Header, usize)> {
        let (h, payload) =
            frame::decode(raw, self.max_payload).map_err(|detail| Error::Desync { peer: from, detail })?;
        let want_seq = self.recv_seq[from.index()];
        if h.kind == FrameKind::Abort {
            return Err(match payload.first() {
                Some(&b) if b < 3 && b != self.me().0 && b != from.0 => {
                    Error::PeerLost { reporter: from, lost: PartyId(b) }
                }
                _ => Error::PeerAborted(from),
            });
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
        if h.len > h.total || h.len > frame::FRAGMENT.max(h.total as usize) as u64 {
            return desync(format!("a {}-byte frame of a {}-byte message", h.len, h.total));
        }
        self.recv_seq[from.index()] += 1;
        Ok((h, raw.len() - payload.len()))
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
        let (_, frames) = self.sealed(f);
        self.stats.record_round();
        let transport = self.transport.clone();
        let send = async move { send_all(&*transport, peer, frames).await };
        let (sent, received) = futures::join!(send, self.recv_frame(peer, kind, Some(len)));
        sent?;
        received
    }

    /// Sends `payload` bytes to `peer` and receives as many, concurrently. One round.
    pub async fn exchange_bytes(&mut self, peer: PartyId, kind: FrameKind, payload: &[u8]) -> Result<Vec<u8>> {
        let n = payload.len();
        let h = self.next_header(peer, kind, n);
        let frames = self.fragments(peer, h, payload);
        self.stats.record_send(kind, n as u64);
        self.stats.record_round();
        let transport = self.transport.clone();
        let send = async move { send_all(&*transport, peer, frames).await };
        let (sent, received) = futures::join!(send, self.recv_bytes(peer, kind, Some(n)));
        sent?;
        received
    }

    /// Tells every peer, best effort, that this party aborts the session.
    pub async fn send_abort(&mut self) {
        self.send_abort_for(None).await;
    }

    /// Tells the peers this party ends the session after `e`: an abort frame to every peer,
    /// naming the peer whose loss caused it when `e` is one ([`Error::PeerAborted`]), so the
    /// third party can tell who is gone rather than blame the messenger. Nothing is sent
    /// after [`Error::PeerLost`]: its reporter told everyone already.
    pub async fn abort_after(&mut self, e: &Error) {
        match e {
            Error::PeerLost { .. } => {}
            Error::PeerAborted(lost) => self.send_abort_for(Some(*lost)).await,
            _ => self.send_abort_for(None).await,
        }
    }

    async fn send_abort_for(&mut self, lost: Option<PartyId>) {
        let cause = [lost.map_or(NO_CAUSE, |p| p.0)];
        for p in PartyId::ALL {
            if p != self.me() && Some(p) != lost {
                let h = self.next_header(p, FrameKind::Abort, 1);
                let _ = self.transport.send(p, frame::encode(&h, &cause)).await;
            }
        }
    }
}

/// The abort frame's payload when no peer's loss caused it.
const NO_CAUSE: u8 = 0xFF;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn pair() -> (Channel, Channel, Arc<MemoryTransport>) {
        let mut t = MemoryTransport::mesh(2);
        let b = Arc::new(t.pop().expect("two"));
        let a: Arc<dyn Transport> = Arc::new(t.pop().expect("two"));
        let session = SessionId(3);
        (Channel::new(a, session), Channel::new(b.clone(), session), b)
    }

    #[test]
    fn an_abort_after_losing_a_peer_names_the_lost_peer() {
        futures::executor::block_on(async {
            // P0 lost P2: P1 hears who is gone, not just that P0 stopped.
            let (mut a, mut b, _) = pair();
            a.abort_after(&Error::PeerAborted(PartyId::P2)).await;
            let e = b.recv_bytes(PartyId::P0, FrameKind::Open, None).await.unwrap_err();
            assert!(matches!(e, Error::PeerLost { reporter: PartyId::P0, lost: PartyId::P2 }), "{e}");
            // Any other failure: a plain abort.
            let (mut a, mut b, _) = pair();
            a.abort_after(&Error::InvalidInput("x".into())).await;
            let e = b.recv_bytes(PartyId::P0, FrameKind::Open, None).await.unwrap_err();
            assert!(matches!(e, Error::PeerAborted(PartyId::P0)), "{e}");
        });
    }

    #[test]
    fn long_messages_travel_as_bounded_frames_and_come_back_whole() {
        let (mut a, mut b, tb) = pair();
        let big: Vec<u8> = (0..2 * frame::FRAGMENT + 12345).map(|i| (i * 31 % 251) as u8).collect();
        let small = vec![7u8; 100];
        futures::executor::block_on(async {
            a.send_bytes(PartyId::P1, FrameKind::Open, &big).await.unwrap();
            let mut f = a.begin_frame(PartyId::P1, FrameKind::Material, big.len());
            f.payload().extend_from_slice(&big);
            a.send_frame(f).await.unwrap();
            a.send_bytes(PartyId::P1, FrameKind::Open, &small).await.unwrap();
            assert_eq!(b.recv_bytes(PartyId::P0, FrameKind::Open, Some(big.len())).await.unwrap(), big);
            let (raw, start) = b.recv_frame(PartyId::P0, FrameKind::Material, Some(big.len())).await.unwrap();
            assert_eq!(&raw[start..], &big[..]);
            assert_eq!(b.recv_bytes(PartyId::P0, FrameKind::Open, None).await.unwrap(), small);
        });
        // Three frames per long message, one for the short one; none above the fragment size.
        let t = tb.traffic().snapshot();
        assert_eq!(t.recv_frames[0], 3 + 3 + 1);
        assert!(t.recv_bytes[0] < 2 * big.len() as u64 + 100 + 7 * 64);
        assert_eq!(b.stats.total.online_recv, big.len() as u64 + 100);
    }

    #[test]
    fn a_long_message_of_the_wrong_length_is_refused_before_it_is_gathered() {
        let (mut a, mut b, _) = pair();
        let big = vec![1u8; frame::FRAGMENT + 1];
        futures::executor::block_on(async {
            a.send_bytes(PartyId::P1, FrameKind::Open, &big).await.unwrap();
            let e = b.recv_bytes(PartyId::P0, FrameKind::Open, Some(16)).await.unwrap_err();
            assert!(matches!(e, Error::Desync { .. }), "{e}");
        });
        // A forged first fragment that is not full, and a fragment of another total.
        let (a, mut b, _) = pair();
        futures::executor::block_on(async {
            let h = Header { session: SessionId(3), seq: 0, kind: FrameKind::Open, len: 10, total: 1 << 30 };
            a.transport.send(PartyId::P1, frame::encode(&h, &[0; 10])).await.unwrap();
            let e = b.recv_bytes(PartyId::P0, FrameKind::Open, None).await.unwrap_err();
            assert!(e.to_string().contains("first frame"), "{e}");
        });
        let (a, mut b, _) = pair();
        futures::executor::block_on(async {
            let chunk = vec![0u8; frame::FRAGMENT];
            let total = 2 * frame::FRAGMENT as u64;
            let h = Header { session: SessionId(3), seq: 0, kind: FrameKind::Open, len: chunk.len() as u64, total };
            a.transport.send(PartyId::P1, frame::encode(&h, &chunk)).await.unwrap();
            let h2 = Header { seq: 1, total: total + 1, ..h };
            a.transport.send(PartyId::P1, frame::encode(&h2, &chunk)).await.unwrap();
            let e = b.recv_bytes(PartyId::P0, FrameKind::Open, Some(total as usize)).await.unwrap_err();
            assert!(e.to_string().contains("fragment"), "{e}");
        });
    }
}
