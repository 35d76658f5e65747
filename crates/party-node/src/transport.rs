//! [`QuicTransport`]: one session's [`Transport`] over one QUIC bidirectional stream per peer.
//!
//! Frames are length-prefixed on the stream (`u32` little-endian, then the frame). The announced
//! length is checked against the limit before anything is allocated. A stream that ends, is
//! reset, or whose connection is lost (the QUIC idle timeout fires when a peer vanishes) is
//! [`TransportError::Closed`]; a peer silent for longer than the receive deadline is
//! [`TransportError::Timeout`].
//!
//! The futures work on any executor (the core's test harness polls them with
//! `futures::executor::block_on`): timers are created through the runtime handle captured at
//! construction, and quinn's connection drivers run on that runtime.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use mpc_proto::PartyId;
use mpc_proto::transport::{BoxFuture, Traffic, Transport, TransportError};
use quinn::{ReadError, ReadExactError, RecvStream, SendStream, WriteError};
use tokio::sync::Mutex;

/// Bound on one frame: the core's default payload limit plus room for the header.
pub const DEFAULT_MAX_FRAME: usize = mpc_proto::transport::DEFAULT_MAX_PAYLOAD + 1024;

/// The two halves of the stream to one peer.
pub(crate) struct Link {
    pub(crate) tx: Mutex<SendStream>,
    pub(crate) rx: Mutex<RecvStream>,
}

/// One party's transport for one session.
pub struct QuicTransport {
    me: PartyId,
    links: [Option<Link>; 3],
    traffic: Traffic,
    deadline: Duration,
    max_frame: usize,
    rt: tokio::runtime::Handle,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuicTransport({})", self.me)
    }
}

impl QuicTransport {
    pub(crate) fn new(
        me: PartyId,
        links: [Option<Link>; 3],
        deadline: Duration,
        max_frame: usize,
        rt: tokio::runtime::Handle,
    ) -> Self {
        QuicTransport { me, links, traffic: Traffic::default(), deadline, max_frame, rt }
    }

    fn link(&self, p: PartyId) -> Result<&Link, TransportError> {
        self.links.get(p.index()).and_then(Option::as_ref).ok_or(TransportError::UnknownPeer(p))
    }

    /// Runs `f` with this transport's deadline; `Timeout(peer)` when it expires.
    async fn bounded<T>(
        &self,
        peer: PartyId,
        f: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let sleep = {
            let _entered = self.rt.enter();
            tokio::time::sleep(self.deadline)
        };
        tokio::select! {
            r = f => r,
            () = sleep => Err(TransportError::Timeout(peer)),
        }
    }
}

fn read_error(peer: PartyId, e: ReadExactError) -> TransportError {
    match e {
        ReadExactError::FinishedEarly(_) => TransportError::Closed(peer),
        ReadExactError::ReadError(ReadError::ConnectionLost(_) | ReadError::Reset(_) | ReadError::ClosedStream) => {
            TransportError::Closed(peer)
        }
        ReadExactError::ReadError(e) => TransportError::Io(format!("reading from {peer}: {e}")),
    }
}

fn write_error(peer: PartyId, e: WriteError) -> TransportError {
    match e {
        WriteError::ConnectionLost(_) | WriteError::Stopped(_) | WriteError::ClosedStream => {
            TransportError::Closed(peer)
        }
        e => TransportError::Io(format!("writing to {peer}: {e}")),
    }
}

impl Transport for QuicTransport {
    fn local_id(&self) -> PartyId {
        self.me
    }

    fn send(&self, to: PartyId, frame: Vec<u8>) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            let link = self.link(to)?;
            let len = frame.len();
            if len > self.max_frame {
                return Err(TransportError::TooLarge { len: len as u64, max: self.max_frame as u64 });
            }
            let prefix = Bytes::copy_from_slice(&(len as u32).to_le_bytes());
            self.bounded(to, async {
                let mut tx = link.tx.lock().await;
                tx.write_all_chunks(&mut [prefix, Bytes::from(frame)]).await.map_err(|e| write_error(to, e))
            })
            .await?;
            self.traffic.record_send(to, len);
            Ok(())
        })
    }

    fn recv(&self, from: PartyId) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        Box::pin(async move {
            let link = self.link(from)?;
            let frame = self
                .bounded(from, async {
                    let mut rx = link.rx.lock().await;
                    let mut prefix = [0u8; 4];
                    rx.read_exact(&mut prefix).await.map_err(|e| read_error(from, e))?;
                    let len = u32::from_le_bytes(prefix) as usize;
                    if len > self.max_frame {
                        return Err(TransportError::TooLarge { len: len as u64, max: self.max_frame as u64 });
                    }
                    // Chunks as quinn holds them, appended: one copy, no zero-fill of the frame.
                    let mut frame = Vec::with_capacity(len);
                    while frame.len() < len {
                        match rx.read_chunk(len - frame.len(), true).await {
                            Ok(Some(chunk)) => frame.extend_from_slice(&chunk.bytes),
                            Ok(None) => return Err(read_error(from, ReadExactError::FinishedEarly(frame.len()))),
                            Err(e) => return Err(read_error(from, ReadExactError::ReadError(e))),
                        }
                    }
                    Ok(frame)
                })
                .await?;
            self.traffic.record_recv(from, frame.len());
            Ok(frame)
        })
    }

    fn traffic(&self) -> &Traffic {
        &self.traffic
    }
}
