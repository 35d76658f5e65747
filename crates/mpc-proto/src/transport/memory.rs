//! In-memory transport: unbounded channels between the parties of one process.

use futures::StreamExt;
use futures::channel::mpsc;
use futures::lock::Mutex;

use super::{BoxFuture, Traffic, Transport, TransportError};

type Tx = mpsc::UnboundedSender<Vec<u8>>;
type Rx = Mutex<mpsc::UnboundedReceiver<Vec<u8>>>;
use crate::ids::PartyId;

/// One party's endpoint of an in-memory mesh (tests, simulation, prototyping).
pub struct MemoryTransport {
    id: PartyId,
    to: Vec<Option<Tx>>,
    from: Vec<Option<Rx>>,
    traffic: Traffic,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryTransport({})", self.id)
    }
}

impl MemoryTransport {
    /// A fully connected mesh of `n` endpoints (n ≤ 3: parties P0, P1, P2).
    pub fn mesh(n: usize) -> Vec<MemoryTransport> {
        assert!(n <= 3, "MemoryTransport::mesh: at most three parties");
        let mut to: Vec<Vec<Option<Tx>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut from: Vec<Vec<Option<Rx>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let (tx, rx) = mpsc::unbounded();
                    to[i][j] = Some(tx);
                    from[j][i] = Some(Mutex::new(rx));
                }
            }
        }
        to.into_iter()
            .zip(from)
            .enumerate()
            .map(|(i, (to, from))| MemoryTransport { id: PartyId(i as u8), to, from, traffic: Traffic::default() })
            .collect()
    }
}

impl Transport for MemoryTransport {
    fn local_id(&self) -> PartyId {
        self.id
    }

    fn send(&self, to: PartyId, frame: Vec<u8>) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            let tx = self.to.get(to.index()).and_then(Option::as_ref).ok_or(TransportError::UnknownPeer(to))?;
            let len = frame.len();
            tx.unbounded_send(frame).map_err(|_| TransportError::Closed(to))?;
            self.traffic.record_send(to, len);
            Ok(())
        })
    }

    fn recv(&self, from: PartyId) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        Box::pin(async move {
            let rx = self.from.get(from.index()).and_then(Option::as_ref).ok_or(TransportError::UnknownPeer(from))?;
            let frame = rx.lock().await.next().await.ok_or(TransportError::Closed(from))?;
            self.traffic.record_recv(from, frame.len());
            Ok(frame)
        })
    }

    fn traffic(&self) -> &Traffic {
        &self.traffic
    }
}
