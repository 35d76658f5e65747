//! The mesh: one QUIC endpoint per node, one connection per pair of parties, one bidirectional
//! stream per session and peer.
//!
//! The lower party id dials the higher one (P0 dials P1 and P2, P1 dials P2), retrying with
//! exponential backoff, so nodes can start in any order and a restarted node is reconnected;
//! the acceptor keeps the newest connection from a peer. Only configured peers get through the
//! TLS handshake ([`crate::tls`]). A dialer whose certificate a peer refuses (or that refuses
//! the peer's) keeps backing off up to [`REFUSED_BACKOFF_MAX`]: retrying cannot help until
//! someone fixes a configuration.
//!
//! Each peer is `connected`, `connecting` (for [`MeshOptions::start_grace`] after this node
//! starts and [`MeshOptions::reconnect_grace`] after its connection drops) or `down`. A job
//! that needs a peer that is down fails at once with the peer, its address and the last
//! connection error ([`Mesh::check_peers`]); one that needs a connecting peer waits out the
//! grace at most.
//!
//! Sessions: the lower party opens a stream and writes a header (`MBR1` and the 16-byte session
//! id); the higher party's node parks it until its own job for that session asks for it
//! ([`Mesh::open_session`]), whichever happens first.
//!
//! Stop notices: a node whose job fails on its own (not because a peer ended it) tells the
//! peers why on a short stream of its own (`MBRN`, the session id, a [`StopNotice`]), so that
//! every party's error can name who failed first and why instead of the messenger
//! ([`Mesh::send_stop_notice`], [`Mesh::stop_notice`]). The core's abort frame carries only who
//! was lost, not why.
//!
//! Requests: a node asks a peer's node something on a stream of its own (`MBRC`, 16 bytes of
//! zeros, a length-prefixed body) and reads a length-prefixed answer — how models are offered
//! and jobs proposed and decided ([`crate::service`]). The mesh moves the bytes; the node's
//! [`ControlHandler`] answers them.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use mpc_proto::{PartyId, SessionId};
use quinn::{Connection, RecvStream, SendStream};
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, PeerAddr, Role};
use crate::tls::{self, PeerAuth};
use crate::transport::{DEFAULT_MAX_FRAME, Link, QuicTransport};

const STREAM_MAGIC: &[u8; 4] = b"MBR1";
const NOTICE_MAGIC: &[u8; 4] = b"MBRN";
const CONTROL_MAGIC: &[u8; 4] = b"MBRC";
/// Largest request or answer on a control stream (a published plan of a 1,000-layer network is
/// a few MiB).
pub const CONTROL_MAX: usize = 32 << 20;
/// How long a peer has to send a whole request, and a handler to answer it.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest stop notice accepted (its encoded length).
const NOTICE_MAX: usize = 4096;
/// At most this many stop notices are kept (older than [`PARK_TTL`] are dropped first).
const NOTICES_MAX: usize = 1024;
/// Parked inbound session streams older than this are dropped.
const PARK_TTL: Duration = Duration::from_secs(120);
/// At most this many parked inbound session streams.
const PARK_MAX: usize = 1024;

/// First wait between dial attempts; it doubles after each failure.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait between dial attempts to a peer that is unreachable (down, restarting).
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest wait between dial attempts after a certificate refusal (by either side).
pub const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Largest UDP send the kernel accepts (IPv4: 65,535 minus the IP and UDP headers), which with
/// segmentation offload (GSO) bounds a whole batch of datagrams, not one.
pub const MAX_UDP_SEND: usize = 65_507;

/// The default ceiling of path-MTU discovery: large datagrams cut the per-packet cost (header
/// protection, AEAD setup, syscalls, acknowledgements), which dominates QUIC's CPU time on
/// fast links. Loopback and jumbo-frame LANs carry them; PMTUD probes upwards from 1200 bytes
/// with black-hole fallback, so a 1500-byte path settles at its own MTU.
pub const DEFAULT_MTU_BOUND: u16 = 16_384;

/// A quinn socket whose GSO batches never exceed [`MAX_UDP_SEND`]. quinn batches up to 10
/// datagrams of the path MTU into one send; with datagrams over ~6.5 KB such a batch is an
/// invalid UDP send that the kernel drops whole (measured on loopback: a connection idle for
/// ~10 s and then saturated hit its idle timeout). Capping the segment count keeps GSO on for
/// any MTU: 10 segments at 1452 bytes, 3 at 16 KiB, 1 (no batching) from 32 KiB.
#[derive(Debug)]
struct GsoCapped {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    max_segments: usize,
}

impl GsoCapped {
    fn wrap(inner: Arc<dyn quinn::AsyncUdpSocket>, mtu_bound: u16) -> Arc<dyn quinn::AsyncUdpSocket> {
        let max_segments = (MAX_UDP_SEND / usize::from(mtu_bound.max(1200))).max(1);
        Arc::new(GsoCapped { inner, max_segments })
    }
}

impl quinn::AsyncUdpSocket for GsoCapped {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit<'_>) -> std::io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments().min(self.max_segments)
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Tunables of the mesh.
#[derive(Clone, Debug)]
pub struct MeshOptions {
    /// A frame not sent or received within this time fails the session with a timeout.
    pub frame_deadline: Duration,
    /// How long [`Mesh::open_session`] waits for the peers' connections and session streams.
    pub join_timeout: Duration,
    /// QUIC keep-alive interval.
    pub keep_alive: Duration,
    /// QUIC idle timeout: a peer silent this long (keep-alives included) is gone.
    pub idle_timeout: Duration,
    /// Upper bound for path-MTU discovery (bytes of UDP payload).
    pub mtu_upper_bound: u16,
    /// Per-stream receive window.
    pub stream_window: u32,
    /// Per-connection receive window (and send window).
    pub conn_window: u32,
    /// Largest frame accepted from a peer.
    pub max_frame: usize,
    /// How long a peer whose connection dropped counts as reconnecting: a job that needs it
    /// waits at most this long for it, then fails. Outside this grace a job needing a peer
    /// that is not connected fails at once.
    pub reconnect_grace: Duration,
    /// The same grace for a peer that has not connected since this node started.
    pub start_grace: Duration,
    /// A refused certificate is logged at WARN at most once per this interval.
    pub refusal_log_interval: Duration,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            frame_deadline: Duration::from_secs(300),
            join_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
            mtu_upper_bound: DEFAULT_MTU_BOUND,
            stream_window: 32 << 20,
            conn_window: 64 << 20,
            max_frame: DEFAULT_MAX_FRAME,
            reconnect_grace: Duration::from_secs(5),
            start_grace: Duration::from_secs(10),
            refusal_log_interval: crate::tls::REFUSAL_LOG_INTERVAL,
        }
    }
}

/// Binds a UDP socket with large kernel buffers (the defaults drop packets under load).
pub fn bind_udp(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).context("UDP socket")?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.bind(&addr.into()).with_context(|| format!("cannot bind UDP {addr} (is another node running?)"))?;
    Ok(s.into())
}

/// Where a peer's connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// A connection is up.
    Connected,
    /// Not connected, within the grace after this node started or after the connection
    /// dropped ([`MeshOptions::reconnect_grace`]): jobs that need it wait that long at most.
    Connecting,
    /// Not connected, and not within a grace: jobs that need it fail at once.
    Down,
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerState::Connected => "connected",
            PeerState::Connecting => "connecting",
            PeerState::Down => "down",
        })
    }
}

/// What the node knows about one peer.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct PeerStatus {
    /// Party id (0..=2).
    pub party: u8,
    /// Role.
    pub role: Role,
    /// Organisation name.
    pub name: String,
    /// Configured UDP address (`ip:port` or `host:port`).
    #[schemars(with = "String")]
    pub address: PeerAddr,
    /// Whether a connection is up.
    pub connected: bool,
    /// Connected, connecting (within a grace) or down.
    pub state: PeerState,
    /// When the peer was last known alive (now, while connected), Unix milliseconds.
    pub last_seen_unix_ms: Option<u64>,
    /// Smoothed RTT of the connection, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Current path MTU (UDP payload bytes) of the connection.
    pub mtu: Option<u16>,
    /// Why the peer is not connected: the last failed attempt or why the last connection
    /// ended. Cleared once it connects.
    pub last_error: Option<String>,
    /// When a connection to the peer last failed (an attempt, or a connection that ended),
    /// Unix milliseconds; kept after it reconnects.
    pub last_failed_unix_ms: Option<u64>,
}

/// Why a party stopped a job, as its node tells the other two: public words only (a category
/// and the job's step, never a value, a path or a share), the details staying in that node's
/// job record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StopNotice {
    /// The party that failed first (`0..=2`).
    pub origin: u8,
    /// Why, in words its peers may read.
    pub reason: String,
}

#[derive(Default)]
struct PeerInfo {
    last_seen: Option<SystemTime>,
    /// The last connection error; cleared when a connection comes up.
    last_error: Option<String>,
    /// When the last failure happened (kept across reconnects).
    last_failed: Option<SystemTime>,
    /// When the last connection was lost (the reconnect grace runs from it), and why.
    lost_at: Option<Instant>,
    lost_why: Option<String>,
    /// The last failure was a certificate refusal (by either side): waiting will not help.
    refused: bool,
    /// Connections installed since this node started.
    connections: u64,
}

impl PeerInfo {
    fn failed(&mut self, why: String, refused: bool) {
        self.last_error = Some(why);
        self.last_failed = Some(SystemTime::now());
        self.refused = refused;
    }
}

/// Why a connection ended or an attempt failed, and whether it was a certificate refusal.
struct Failure {
    why: String,
    refused: bool,
}

struct PeerSlot {
    conn: watch::Sender<Option<Connection>>,
    info: Mutex<PeerInfo>,
}

type Streams = (SendStream, RecvStream);

enum Parked {
    Arrived(Streams, Instant),
    Waiting(oneshot::Sender<Streams>),
}

struct Inner {
    me: PartyId,
    /// Per party of the consortium (two or three), indexed by party id.
    names: Vec<String>,
    addrs: Vec<PeerAddr>,
    endpoint: quinn::Endpoint,
    peers: Vec<PeerSlot>,
    parked: Mutex<HashMap<(SessionId, PartyId), Parked>>,
    /// Stop notices received, per session (the first one wins), and a counter bumped on each.
    notices: Mutex<HashMap<SessionId, (StopNotice, Instant)>>,
    notice_seq: watch::Sender<u64>,
    opts: MeshOptions,
    auth: Arc<PeerAuth>,
    rt: tokio::runtime::Handle,
    started: Instant,
    control: std::sync::OnceLock<Arc<dyn ControlHandler>>,
    /// Set when the mesh is dropped or shut down: tasks that wait stop holding the endpoint
    /// (its UDP port is free again only once every task has let go of it).
    closing: std::sync::atomic::AtomicBool,
}

/// What answers the requests peers send this node ([`Mesh::request`]): the node's service.
pub trait ControlHandler: Send + Sync + 'static {
    /// The answer to `body` from the authenticated peer `from`.
    fn handle(&self, from: PartyId, body: Vec<u8>) -> futures::future::BoxFuture<'static, Vec<u8>>;
}

/// A node's endpoint and its connections to the other two parties.
pub struct Mesh {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mesh({})", self.inner.me)
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A duration for people: `0.4 s`, `12 s`, `5 min`, `3 h`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.0} h", s / 3600.0)
    }
}

/// `12 s ago (2026-03-01 12:00:00 UTC)`.
fn when(t: SystemTime) -> String {
    let ago = SystemTime::now().duration_since(t).unwrap_or_default();
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    format!("{} ago ({})", human(ago), crate::certs::format_time(secs))
}

/// Whether a QUIC error code is a TLS alert (the crypto range 0x100–0x1ff).
fn is_tls_alert(code: quinn::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

/// What an inbound handshake that failed was.
#[derive(Debug, PartialEq, Eq)]
enum InboundFailure {
    /// A datagram of an earlier exchange (a retransmitted handshake packet) taken for a new
    /// connection, or a stale one: nobody tried to connect. Routine when peers reconnect.
    Stray,
    /// This node's certificate check refused the client (logged, rate-limited, by
    /// [`crate::tls::Refusals`]).
    Refused,
    /// Anything else (a handshake that timed out, a client that refused this node's
    /// certificate).
    Other,
}

fn classify_inbound(code: Option<quinn::TransportErrorCode>, reason: &str, timed_out: bool) -> InboundFailure {
    match code {
        // quinn cannot decrypt the packet it took for a new connection's first (see quinn
        // issue 1974): no client behind it.
        Some(c) if c == quinn::TransportErrorCode::PROTOCOL_VIOLATION && reason == "authentication failed" => {
            InboundFailure::Stray
        }
        Some(c) if is_tls_alert(c) => InboundFailure::Refused,
        // An initial packet older than the idle timeout: abandoned before any handshake.
        None if timed_out => InboundFailure::Stray,
        _ => InboundFailure::Other,
    }
}

fn inbound_failure(e: &quinn::ConnectionError) -> InboundFailure {
    match e {
        quinn::ConnectionError::TransportError(t) => classify_inbound(Some(t.code), &t.reason, false),
        quinn::ConnectionError::TimedOut => classify_inbound(None, "", true),
        _ => InboundFailure::Other,
    }
}

/// A TLS alert's name, for the alerts a certificate problem produces.
fn alert_name(code: quinn::TransportErrorCode) -> &'static str {
    match u64::from(code) & 0xff {
        42 => "bad certificate",
        43 => "unsupported certificate",
        44 => "certificate revoked",
        45 => "certificate expired",
        46 => "certificate unknown",
        48 => "unknown CA",
        49 => "access denied",
        116 => "certificate required",
        120 => "no application protocol",
        _ => "handshake failure",
    }
}

fn transport_config(opts: &MeshOptions) -> anyhow::Result<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(opts.keep_alive));
    t.max_idle_timeout(Some(opts.idle_timeout.try_into().context("idle timeout")?));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(opts.mtu_upper_bound);
    t.mtu_discovery_config(Some(mtu));
    t.stream_receive_window(opts.stream_window.into());
    t.receive_window(opts.conn_window.into());
    t.send_window(u64::from(opts.conn_window));
    t.max_concurrent_bidi_streams(256u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    Ok(t)
}

impl Mesh {
    /// Binds the node's configured address ([`Config::listen`]) and starts the mesh.
    pub fn bind(cfg: &Config, opts: MeshOptions) -> anyhow::Result<Mesh> {
        let socket = bind_udp(cfg.listen)
            .with_context(|| format!("{} node, address {}", cfg.role(), cfg.parties[cfg.me.index()].address))?;
        Self::start(cfg, socket, opts)
    }

    /// Starts the mesh on an already bound socket (must be called inside a tokio runtime).
    pub fn start(cfg: &Config, socket: UdpSocket, opts: MeshOptions) -> anyhow::Result<Mesh> {
        // Wrapping registers the socket with the runtime's reactor (a panic outside a runtime).
        tokio::runtime::Handle::try_current().context("the mesh needs a tokio runtime")?;
        let socket = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket).context("QUIC socket")?;
        Self::start_with_socket(cfg, socket, opts)
    }

    /// [`Mesh::start`] on any quinn socket, e.g. the benchmark's emulated WAN link
    /// (`bench::wan::DelayedUdpSocket`).
    pub fn start_with_socket(
        cfg: &Config,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        opts: MeshOptions,
    ) -> anyhow::Result<Mesh> {
        let rt = tokio::runtime::Handle::try_current().context("the mesh needs a tokio runtime")?;
        let socket = GsoCapped::wrap(socket, opts.mtu_upper_bound);
        let auth = Arc::new(PeerAuth::new(cfg).log_refusals_every(opts.refusal_log_interval));
        let transport = Arc::new(transport_config(&opts)?);
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_config(cfg, auth.clone())?)
            .context("QUIC server TLS")?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(transport.clone());
        let mut endpoint_cfg = quinn::EndpointConfig::default();
        // Peers cap our path-MTU discovery at what we advertise here (quinn's default: 1472).
        endpoint_cfg.max_udp_payload_size(opts.mtu_upper_bound.max(1200)).context("max UDP payload size")?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_cfg,
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .context("QUIC endpoint")?;
        let inner = Arc::new(Inner {
            me: cfg.me,
            names: cfg.parties.iter().map(|p| p.name.clone()).collect(),
            addrs: cfg.parties.iter().map(|p| p.address.clone()).collect(),
            endpoint,
            peers: cfg
                .parties
                .iter()
                .map(|_| PeerSlot { conn: watch::channel(None).0, info: Mutex::new(PeerInfo::default()) })
                .collect(),
            parked: Mutex::new(HashMap::new()),
            notices: Mutex::new(HashMap::new()),
            notice_seq: watch::channel(0).0,
            opts,
            auth: auth.clone(),
            rt,
            started: Instant::now(),
            control: std::sync::OnceLock::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
        });
        let mut tasks = vec![tokio::spawn(inner.clone().accept_loop())];
        for p in cfg.parties.iter().map(|p| p.id).filter(|&p| p > cfg.me) {
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls::client_config(cfg, &auth, p)?)
                .context("QUIC client TLS")?;
            let mut client = quinn::ClientConfig::new(Arc::new(crypto));
            client.transport_config(transport.clone());
            tasks.push(tokio::spawn(inner.clone().dial_loop(p, client)));
        }
        tracing::info!(party = %cfg.me, addr = %inner.endpoint.local_addr()?, "mesh endpoint up");
        Ok(Mesh { inner, tasks })
    }

    /// This node's party.
    pub fn me(&self) -> PartyId {
        self.inner.me
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// How long joining a session may take.
    pub fn join_timeout(&self) -> Duration {
        self.inner.opts.join_timeout
    }

    /// Whether a connection to `p` is up.
    pub fn is_connected(&self, p: PartyId) -> bool {
        self.inner.current(p).is_some()
    }

    /// Waits until every peer is connected, or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for p in self.others() {
            self.inner.wait_conn(p, deadline).await?;
        }
        Ok(())
    }

    /// The consortium's other parties (one in mode "2pc", two with a dealer).
    pub fn others(&self) -> impl Iterator<Item = PartyId> + use<> {
        let (me, n) = (self.inner.me, self.inner.peers.len());
        PartyId::ALL.into_iter().take(n).filter(move |&p| p != me)
    }

    /// Status of each peer.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.others()
            .map(|p| {
                let state = self.state(p);
                let conn = self.inner.current(p);
                let info = self.inner.peers[p.index()].info.lock().expect("peer info lock");
                PeerStatus {
                    party: p.0,
                    role: Role::of(p),
                    name: self.inner.names[p.index()].clone(),
                    address: self.inner.addrs[p.index()].clone(),
                    connected: conn.is_some(),
                    state,
                    last_seen_unix_ms: if conn.is_some() {
                        Some(unix_ms(SystemTime::now()))
                    } else {
                        info.last_seen.map(unix_ms)
                    },
                    rtt_ms: conn.as_ref().map(|c| c.rtt().as_secs_f64() * 1e3),
                    mtu: conn.as_ref().map(|c| c.stats().path.current_mtu),
                    last_error: if conn.is_some() { None } else { info.last_error.clone() },
                    last_failed_unix_ms: info.last_failed.map(unix_ms),
                }
            })
            .collect()
    }

    /// Where `p`'s connection stands.
    pub fn state(&self, p: PartyId) -> PeerState {
        match self.inner.availability(p) {
            Availability::Up(_) => PeerState::Connected,
            Availability::Grace(_) => PeerState::Connecting,
            Availability::Down => PeerState::Down,
        }
    }

    /// Fails at once if a peer is down (not connected, and not within the grace after this
    /// node started or after its connection dropped), naming each such peer with its address,
    /// its last connection error and when it happened, and what to check. Every job needs
    /// both peers (the dealer too): a job submitted now would only wait for the join timeout.
    pub fn check_peers(&self) -> anyhow::Result<()> {
        let down: Vec<String> = self
            .others()
            .filter(|&p| matches!(self.inner.availability(p), Availability::Down))
            .map(|p| self.inner.not_connected(p, false))
            .collect();
        anyhow::ensure!(down.is_empty(), "{}", down.join("; and "));
        Ok(())
    }

    /// Tells the connected peers, best effort and within a couple of seconds, why this node
    /// stopped job `session` ([`StopNotice`]).
    pub async fn send_stop_notice(&self, session: SessionId, notice: &StopNotice) {
        let Ok(body) = serde_json::to_vec(notice) else { return };
        if body.len() > NOTICE_MAX {
            return;
        }
        let sends = self.others().filter_map(|p| self.inner.current(p).map(|c| (p, c))).map(|(p, conn)| {
            let body = body.clone();
            async move {
                let send = async {
                    let (mut tx, _rx) = conn.open_bi().await?;
                    let mut msg = NOTICE_MAGIC.to_vec();
                    msg.extend_from_slice(&session.0.to_le_bytes());
                    msg.extend_from_slice(&(body.len() as u16).to_le_bytes());
                    msg.extend_from_slice(&body);
                    tx.write_all(&msg).await?;
                    tx.finish()?;
                    // Closing at once could discard the bytes in flight: wait for the peer to
                    // read them (it closes its side) or for the timeout.
                    let _ = tx.stopped().await;
                    anyhow::Ok(())
                };
                match tokio::time::timeout(Duration::from_secs(2), send).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(peer = %p, error = %e, "could not send a stop notice"),
                    Err(_) => tracing::debug!(peer = %p, "sending a stop notice timed out"),
                }
            }
        });
        futures::future::join_all(sends).await;
    }

    /// The stop notice a peer sent for `session`, waiting up to `within` for one.
    pub async fn stop_notice(&self, session: SessionId, within: Duration) -> Option<StopNotice> {
        let mut rx = self.inner.notice_seq.subscribe();
        let deadline = Instant::now() + within;
        loop {
            rx.borrow_and_update();
            if let Some((n, _)) = self.inner.notices.lock().expect("notices lock").get(&session) {
                return Some(n.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !matches!(tokio::time::timeout(left, rx.changed()).await, Ok(Ok(()))) {
                return None;
            }
        }
    }

    /// Which connection to `p` is up, counted from 1 since this node started; `None` while
    /// none is. A new number means `p` (re)connected.
    pub fn connection_epoch(&self, p: PartyId) -> Option<u64> {
        self.inner.current(p)?;
        Some(self.inner.peers[p.index()].info.lock().expect("peer info lock").connections)
    }

    /// Installs what answers the peers' requests (once; later calls are ignored). Until then a
    /// request is answered with nothing, which the requester reports as "not ready".
    pub fn set_control_handler(&self, handler: Arc<dyn ControlHandler>) {
        let _ = self.inner.control.set(handler);
    }

    /// Sends `body` to `p`'s node and returns its answer. Fails at once if `p` is down (naming
    /// it, its address and its last error), after its grace if it is (re)connecting, and after
    /// `timeout` if the answer does not come.
    pub async fn request(&self, p: PartyId, body: &[u8], timeout: Duration) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(p != self.inner.me, "a request to this node itself");
        anyhow::ensure!(body.len() <= CONTROL_MAX, "a request of {} bytes (at most {CONTROL_MAX})", body.len());
        let deadline = Instant::now() + timeout;
        let conn = self.inner.wait_conn(p, deadline).await?;
        let exchange = async {
            let (mut tx, mut rx) = conn.open_bi().await?;
            let mut msg = CONTROL_MAGIC.to_vec();
            msg.extend_from_slice(&[0u8; 16]);
            msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
            tx.write_all(&msg).await?;
            tx.write_all(body).await?;
            tx.finish()?;
            let mut len = [0u8; 4];
            rx.read_exact(&mut len).await.map_err(|_| {
                anyhow::anyhow!("{}'s node gave no answer (it is starting or shutting down; retry)", Role::of(p))
            })?;
            let len = u32::from_le_bytes(len) as usize;
            anyhow::ensure!(len <= CONTROL_MAX, "an answer of {len} bytes from {p}");
            let mut answer = vec![0u8; len];
            rx.read_exact(&mut answer).await?;
            anyhow::Ok(answer)
        };
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("{} ({p}) did not answer within {}", Role::of(p), human(timeout)))?
    }

    /// The certificates this node refused in handshakes, most recent first.
    pub fn refused_certificates(&self) -> Vec<crate::tls::RefusedCert> {
        self.inner.auth.refusals().list()
    }

    /// Why the connection to `p` is down, if it is.
    pub fn down_reason(&self, p: PartyId) -> Option<String> {
        if self.is_connected(p) {
            return None;
        }
        // A connection that just closed is still in its slot until its serve loop records why:
        // its own close reason is the freshest answer (else a job failing at that instant would
        // read "never connected").
        let slot = &self.inner.peers[p.index()];
        let closing = slot.conn.borrow().as_ref().and_then(|c| c.close_reason()).map(|e| e.to_string());
        let info = slot.info.lock().expect("peer info lock");
        Some(closing.or_else(|| info.last_error.clone()).unwrap_or_else(|| "never connected".into()))
    }

    /// Joins session `session`: one stream per peer, opened towards higher ids and awaited from
    /// lower ids. Fails if a peer is unreachable or does not join within the join timeout.
    pub async fn open_session(&self, session: SessionId) -> anyhow::Result<QuicTransport> {
        let deadline = Instant::now() + self.inner.opts.join_timeout;
        let mut links: [Option<Link>; 3] = [None, None, None];
        let joins = self.others().map(|p| {
            let inner = self.inner.clone();
            async move {
                // Fails at once if the peer is down, after its grace if it is (re)connecting.
                let conn = inner.wait_conn(p, deadline).await?;
                let (tx, rx) = if inner.me < p {
                    let (mut tx, rx) = conn.open_bi().await.with_context(|| format!("opening a stream to {p}"))?;
                    let mut header = STREAM_MAGIC.to_vec();
                    header.extend_from_slice(&session.0.to_le_bytes());
                    tx.write_all(&header).await.with_context(|| format!("writing the session header to {p}"))?;
                    (tx, rx)
                } else {
                    inner.wait_stream(session, p, deadline).await?
                };
                anyhow::Ok((p, Link { tx: tokio::sync::Mutex::new(tx), rx: tokio::sync::Mutex::new(rx) }))
            }
        });
        for r in futures::future::join_all(joins).await {
            let (p, link) = r?;
            links[p.index()] = Some(link);
        }
        Ok(QuicTransport::new(
            self.inner.me,
            links,
            self.inner.opts.frame_deadline,
            self.inner.opts.max_frame,
            self.inner.rt.clone(),
        ))
    }
}

impl Mesh {
    /// Closes every connection (peers see a clean close, not a timeout) and waits until the
    /// endpoint has told them, so the UDP port can be bound again.
    pub async fn shutdown(self) {
        self.inner.closing.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
        self.inner.endpoint.close(0u32.into(), b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.endpoint.wait_idle()).await;
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.inner.closing.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
        self.inner.endpoint.close(0u32.into(), b"node shutting down");
    }
}

/// Whether a peer can be used now.
enum Availability {
    /// Connected.
    Up(Connection),
    /// Not connected, within its grace until then.
    Grace(Instant),
    /// Not connected, no grace left (or a certificate refusal, which waiting does not fix).
    Down,
}

impl Inner {
    fn current(&self, p: PartyId) -> Option<Connection> {
        self.peers[p.index()].conn.borrow().clone().filter(|c| c.close_reason().is_none())
    }

    fn availability(&self, p: PartyId) -> Availability {
        if let Some(c) = self.current(p) {
            return Availability::Up(c);
        }
        let info = self.peers[p.index()].info.lock().expect("peer info lock");
        if info.refused {
            return Availability::Down;
        }
        let until = match info.lost_at {
            Some(t) => t + self.opts.reconnect_grace,
            None if info.connections == 0 => self.started + self.opts.start_grace,
            // Closed a moment ago, its serve loop not done yet: it has just dropped.
            None => Instant::now() + self.opts.reconnect_grace,
        };
        if Instant::now() < until { Availability::Grace(until) } else { Availability::Down }
    }

    /// Why `p` cannot take part in a job: who and where it is, its last connection error and
    /// when, and what to check. `waited`: the job waited out the peer's grace.
    fn not_connected(&self, p: PartyId, waited: bool) -> String {
        let role = Role::of(p);
        let (name, addr) = (&self.names[p.index()], &self.addrs[p.index()]);
        let info = self.peers[p.index()].info.lock().expect("peer info lock");
        let mut m = if waited {
            let (since, grace) = match info.lost_at {
                Some(t) => (
                    format!(
                        "its connection dropped {} ago: {}",
                        human(t.elapsed()),
                        info.lost_why.as_deref().unwrap_or("closed")
                    ),
                    self.opts.reconnect_grace,
                ),
                None => (format!("this node started {} ago", human(self.started.elapsed())), self.opts.start_grace),
            };
            format!(
                "{role} ({p}, {name:?}) at {addr} was connecting ({since}) and did not connect within the {} grace",
                human(grace)
            )
        } else {
            format!("{role} ({p}, {name:?}) at {addr} is not connected")
        };
        match (&info.last_error, info.last_failed) {
            (Some(e), Some(t)) => m += &format!(": last connection error {}: {e}", when(t)),
            _ if info.connections == 0 => {
                m += &format!(": it has not connected since this node started {} ago", human(self.started.elapsed()))
            }
            _ => {}
        }
        // A certificate for its name that this node refused (a peer with a new key, say) is
        // the likeliest explanation when it dials this node.
        let refused = self.auth.refusals().list().into_iter().find(|r| r.names.iter().any(|n| n == name));
        if let Some(r) = &refused
            && !info.last_error.as_ref().is_some_and(|e| e.contains(&r.fingerprint))
        {
            let ago = Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(r.last_unix_ms));
            m += &format!(
                "; this node refused a certificate for {name:?} {} ago ({} times, fingerprint {}): {}",
                human(ago),
                r.count,
                r.fingerprint,
                r.reason
            );
        }
        let fix = if info.refused || refused.is_some() {
            "fix the certificates (`party-node cert show --config <node.toml>` on both machines; docs/deploy.md \
             section 1), then submit the job again"
                .to_string()
        } else if self.me < p {
            format!(
                "this node dials it: check that {role}'s node is running and that UDP {addr} is reachable from here, \
                 then submit the job again (`party-node status` shows the peers)"
            )
        } else {
            format!(
                "{role}'s node dials this one: check that it is running and that it can reach this node's UDP \
                 address {}, then submit the job again (`party-node status` shows the peers)",
                self.addrs[self.me.index()]
            )
        };
        format!("{m} — {fix}")
    }

    /// The connection to `p`: at once if it is up, failing at once if `p` is down, and waiting
    /// at most until the end of its grace (or `deadline`) if it is (re)connecting.
    async fn wait_conn(&self, p: PartyId, deadline: Instant) -> anyhow::Result<Connection> {
        let mut rx = self.peers[p.index()].conn.subscribe();
        loop {
            if let Some(c) = rx.borrow_and_update().clone().filter(|c| c.close_reason().is_none()) {
                return Ok(c);
            }
            let until = match self.availability(p) {
                Availability::Up(c) => return Ok(c),
                Availability::Down => anyhow::bail!("{}", self.not_connected(p, false)),
                Availability::Grace(until) => until.min(deadline),
            };
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    if let Some(c) = self.current(p) {
                        return Ok(c);
                    }
                    anyhow::bail!("{}", self.not_connected(p, true))
                }
            }
        }
    }

    async fn wait_stream(&self, session: SessionId, p: PartyId, deadline: Instant) -> anyhow::Result<Streams> {
        let rx = {
            let mut parked = self.parked.lock().expect("parked lock");
            match parked.remove(&(session, p)) {
                Some(Parked::Arrived(s, _)) => return Ok(s),
                _ => {
                    let (tx, rx) = oneshot::channel();
                    parked.insert((session, p), Parked::Waiting(tx));
                    rx
                }
            }
        };
        // A peer that was connected and drops while we wait will not join: fail now rather
        // than at the deadline (it may be back later, but not for this session).
        let mut conn_rx = self.peers[p.index()].conn.subscribe();
        let lost = async move {
            let mut seen = conn_rx.borrow_and_update().is_some();
            loop {
                if conn_rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                let up = conn_rx.borrow_and_update().is_some();
                if seen && !up {
                    return;
                }
                seen |= up;
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = tokio::select! {
            r = tokio::time::timeout(left, rx) => Some(r),
            () = lost => None,
        };
        match outcome {
            Some(Ok(Ok(s))) => Ok(s),
            None => {
                self.parked.lock().expect("parked lock").remove(&(session, p));
                let why = self.peers[p.index()].info.lock().expect("peer info lock").last_error.clone();
                anyhow::bail!(
                    "lost the connection to {} ({p}) while waiting for it to join job {session}: {}",
                    Role::of(p),
                    why.unwrap_or_else(|| "closed".into())
                )
            }
            Some(_) => {
                self.parked.lock().expect("parked lock").remove(&(session, p));
                let state =
                    if self.current(p).is_some() { "connected, but its node has not started" } else { "not connected" };
                anyhow::bail!(
                    "{} ({p}) did not join job {session} within {:?} ({state} this job)",
                    Role::of(p),
                    self.opts.join_timeout
                )
            }
        }
    }

    /// Reads a stop notice from `p` (after its header) and keeps it for its session.
    async fn receive_notice(&self, session: SessionId, p: PartyId, mut rx: RecvStream) {
        let read = async {
            let mut len = [0u8; 2];
            rx.read_exact(&mut len).await?;
            let len = usize::from(u16::from_le_bytes(len));
            anyhow::ensure!(len <= NOTICE_MAX, "a stop notice of {len} bytes");
            let mut body = vec![0u8; len];
            rx.read_exact(&mut body).await?;
            anyhow::Ok(serde_json::from_slice::<StopNotice>(&body)?)
        };
        let notice = match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(Ok(n)) if n.origin < 3 && n.origin != self.me.0 => n,
            Ok(Ok(_)) => return,
            Ok(Err(e)) => return tracing::warn!(peer = %p, error = %e, "dropped a malformed stop notice"),
            Err(_) => return tracing::warn!(peer = %p, "dropped a stop notice that did not arrive in time"),
        };
        tracing::debug!(peer = %p, job = %session, origin = notice.origin, reason = %notice.reason, "stop notice");
        let mut notices = self.notices.lock().expect("notices lock");
        notices.retain(|_, (_, t)| t.elapsed() < PARK_TTL);
        if notices.len() < NOTICES_MAX {
            notices.entry(session).or_insert((notice, Instant::now()));
        }
        drop(notices);
        self.notice_seq.send_modify(|n| *n += 1);
    }

    /// Reads a request from `p` (after its header), has the control handler answer it, and
    /// writes the answer.
    async fn answer(&self, p: PartyId, mut tx: SendStream, mut rx: RecvStream) {
        let read = async {
            let mut len = [0u8; 4];
            rx.read_exact(&mut len).await?;
            let len = u32::from_le_bytes(len) as usize;
            anyhow::ensure!(len <= CONTROL_MAX, "a request of {len} bytes (at most {CONTROL_MAX})");
            let mut body = vec![0u8; len];
            rx.read_exact(&mut body).await?;
            anyhow::Ok(body)
        };
        let body = match tokio::time::timeout(CONTROL_TIMEOUT, read).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return tracing::warn!(peer = %p, error = %e, "dropped a malformed request"),
            Err(_) => return tracing::warn!(peer = %p, "dropped a request that did not arrive in time"),
        };
        // The mesh comes up a moment before the node's service: a request in that window waits.
        let mut handler = self.control.get().cloned();
        let t0 = Instant::now();
        while handler.is_none()
            && t0.elapsed() < Duration::from_secs(5)
            && !self.closing.load(std::sync::atomic::Ordering::Relaxed)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
            handler = self.control.get().cloned();
        }
        let Some(handler) = handler else {
            return tracing::debug!(peer = %p, "a request before the node serves them");
        };
        let answer = match tokio::time::timeout(CONTROL_TIMEOUT, handler.handle(p, body)).await {
            Ok(a) => a,
            Err(_) => return tracing::warn!(peer = %p, "a request took too long to answer"),
        };
        let write = async {
            tx.write_all(&(answer.len() as u32).to_le_bytes()).await?;
            tx.write_all(&answer).await?;
            tx.finish()?;
            let _ = tx.stopped().await;
            anyhow::Ok(())
        };
        if let Err(e) =
            tokio::time::timeout(CONTROL_TIMEOUT, write).await.unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")))
        {
            tracing::debug!(peer = %p, error = %e, "could not send an answer");
        }
    }

    fn park(&self, session: SessionId, p: PartyId, s: Streams) {
        let mut parked = self.parked.lock().expect("parked lock");
        let s = match parked.remove(&(session, p)) {
            Some(Parked::Waiting(tx)) => match tx.send(s) {
                Ok(()) => return,
                Err(s) => s,
            },
            _ => s,
        };
        parked.retain(|_, v| !matches!(v, Parked::Arrived(_, t) if t.elapsed() > PARK_TTL));
        if parked.len() >= PARK_MAX {
            tracing::warn!(peer = %p, "too many parked session streams; refusing one");
            return;
        }
        parked.insert((session, p), Parked::Arrived(s, Instant::now()));
    }

    fn install(&self, p: PartyId, conn: Connection) {
        let old = self.peers[p.index()].conn.send_replace(Some(conn.clone()));
        if let Some(old) = old {
            old.close(1u32.into(), b"replaced by a newer connection");
        }
        let mut info = self.peers[p.index()].info.lock().expect("peer info lock");
        info.connections += 1;
        let down_for = info.lost_at.map(|t| human(t.elapsed()));
        info.last_seen = Some(SystemTime::now());
        info.last_error = None;
        info.refused = false;
        info.lost_at = None;
        let (role, name, remote) = (Role::of(p), &self.names[p.index()], conn.remote_address());
        match down_for {
            Some(d) => tracing::info!(peer = %p, %role, %name, %remote, down_for = %d, "peer reconnected"),
            None => tracing::info!(peer = %p, %role, %name, %remote, "peer connected"),
        }
    }

    fn uninstall(&self, p: PartyId, conn: &Connection, e: &quinn::ConnectionError) {
        let slot = &self.peers[p.index()];
        let was_current = slot.conn.send_if_modified(|c| {
            if c.as_ref().is_some_and(|c| c.stable_id() == conn.stable_id()) {
                *c = None;
                true
            } else {
                false
            }
        });
        if was_current {
            let why = e.to_string();
            // A peer that closes its side (a restart, an upgrade) is routine; a silent one is not.
            if matches!(e, quinn::ConnectionError::ApplicationClosed(_)) {
                tracing::info!(peer = %p, role = %Role::of(p), reason = %why, "peer closed the connection");
            } else {
                tracing::warn!(peer = %p, role = %Role::of(p), reason = %why, "peer connection lost");
            }
            let mut info = slot.info.lock().expect("peer info lock");
            info.last_seen = Some(SystemTime::now());
            info.lost_at = Some(Instant::now());
            info.lost_why = Some(why.clone());
            info.failed(why, false);
        }
    }

    /// Accepts session streams on `conn` until it closes; returns why it closed.
    async fn serve(self: &Arc<Self>, p: PartyId, conn: Connection) -> quinn::ConnectionError {
        loop {
            match conn.accept_bi().await {
                Ok((tx, mut rx)) => {
                    let inner = self.clone();
                    tokio::spawn(async move {
                        let mut header = [0u8; 20];
                        match tokio::time::timeout(Duration::from_secs(10), rx.read_exact(&mut header)).await {
                            Ok(Ok(())) if &header[..4] == STREAM_MAGIC => {
                                let id = u128::from_le_bytes(header[4..].try_into().expect("16 bytes"));
                                inner.park(SessionId(id), p, (tx, rx));
                            }
                            Ok(Ok(())) if &header[..4] == CONTROL_MAGIC => inner.answer(p, tx, rx).await,
                            Ok(Ok(())) if &header[..4] == NOTICE_MAGIC => {
                                let id = u128::from_le_bytes(header[4..].try_into().expect("16 bytes"));
                                drop(tx);
                                inner.receive_notice(SessionId(id), p, rx).await;
                            }
                            _ => tracing::warn!(peer = %p, "dropped a stream without a valid session header"),
                        }
                    });
                }
                Err(e) => return e,
            }
        }
    }

    /// Waits until the server side of a dialled connection has accepted this node's
    /// certificate. In TLS 1.3 the client finishes its handshake before the server has checked
    /// the client's certificate, so a connection the peer is about to refuse looks established
    /// here; the server's HANDSHAKE_DONE frame is what says it was accepted.
    async fn confirmed(&self, p: PartyId, conn: Connection) -> Result<Connection, Failure> {
        loop {
            if conn.stats().frame_rx.handshake_done > 0 {
                return Ok(conn);
            }
            tokio::select! {
                e = conn.closed() => return Err(self.dial_failure(p, &e)),
                () = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
    }

    /// A failed dial to `p`, told as a refusal when the TLS handshake failed on either side.
    fn dial_failure(&self, p: PartyId, e: &quinn::ConnectionError) -> Failure {
        let (role, me) = (Role::of(p), Role::of(self.me));
        let name = &self.names[p.index()];
        match e {
            // The peer's TLS stack refused this node (an alert in the crypto range).
            quinn::ConnectionError::ConnectionClosed(c) if is_tls_alert(c.error_code) => Failure {
                refused: true,
                why: format!(
                    "{role} ({p}) refused this node's certificate (TLS alert: {}): its config does not accept this \
                     node as {me} — with pinned certificates its [[party]] {me} entry must pin this node's certificate, \
                     with a consortium CA this node's certificate must be issued by that CA for the name in that entry",
                    alert_name(c.error_code)
                ),
            },
            // This node's certificate check refused the peer's certificate.
            quinn::ConnectionError::TransportError(t) if is_tls_alert(t.code) => Failure {
                refused: true,
                why: format!(
                    "{}: not what this node's [[party]] {role} entry accepts for {name:?}",
                    self.auth.refusals().take_dialled(p).unwrap_or_else(|| e.to_string())
                ),
            },
            _ => Failure { why: e.to_string(), refused: false },
        }
    }

    async fn dial_loop(self: Arc<Self>, p: PartyId, client: quinn::ClientConfig) {
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
        // Refusals are logged at WARN once per interval, with how many there were since.
        let mut warned: Option<Instant> = None;
        let mut refused_since_warn = 0u64;
        let ipv4 = self.endpoint.local_addr().map(|a| a.is_ipv4()).unwrap_or(true);
        let role = Role::of(p);
        loop {
            // Resolved on every attempt: a peer's name may not exist yet (its container is not
            // up) or may point elsewhere after a restart.
            let addr = &self.addrs[p.index()];
            let attempt = match addr.resolve(ipv4).await {
                Ok(sa) => match self.endpoint.connect_with(client.clone(), sa, &self.names[p.index()]) {
                    Ok(connecting) => match connecting.await {
                        Ok(conn) => self.confirmed(p, conn).await,
                        Err(e) => Err(self.dial_failure(p, &e)),
                    },
                    Err(e) => Err(Failure { why: e.to_string(), refused: false }),
                },
                Err(e) => Err(Failure { why: format!("cannot resolve {role}'s address {addr}: {e}"), refused: false }),
            };
            let refused = match attempt {
                Ok(conn) => {
                    backoff = BACKOFF_MIN;
                    failures = 0;
                    warned = None;
                    refused_since_warn = 0;
                    self.install(p, conn.clone());
                    let e = self.serve(p, conn.clone()).await;
                    self.uninstall(p, &conn, &e);
                    false
                }
                Err(f) => {
                    failures += 1;
                    if f.refused {
                        refused_since_warn += 1;
                        if warned.is_none_or(|t| t.elapsed() >= self.opts.refusal_log_interval) {
                            tracing::warn!(
                                peer = %p, %role, addr = %addr, error = %f.why, refused_since_last_warning = refused_since_warn,
                                retry_in = %human(backoff),
                                "the TLS handshake with the peer failed; retrying with backoff (logged once every {})",
                                human(self.opts.refusal_log_interval)
                            );
                            warned = Some(Instant::now());
                            refused_since_warn = 0;
                        } else {
                            tracing::debug!(peer = %p, error = %f.why, "the TLS handshake with the peer failed again");
                        }
                    } else if failures % 20 == 1 {
                        // The first failure and then every 20th: a peer that is down is normal at start.
                        tracing::info!(peer = %p, %role, addr = %addr, error = %f.why, "cannot reach peer yet; retrying");
                    }
                    let refused = f.refused;
                    self.peers[p.index()].info.lock().expect("peer info lock").failed(f.why, f.refused);
                    refused
                }
            };
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(if refused { REFUSED_BACKOFF_MAX } else { BACKOFF_MAX });
        }
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let inner = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        match inbound_failure(&e) {
                            InboundFailure::Stray => {
                                tracing::debug!(%remote, error = %e, "dropped a stray handshake packet")
                            }
                            InboundFailure::Refused => {
                                tracing::debug!(%remote, error = %e, "refused an inbound connection (certificate logged)")
                            }
                            InboundFailure::Other => {
                                tracing::info!(%remote, error = %e, "an inbound handshake failed")
                            }
                        }
                        return;
                    }
                };
                let Some(p) = inner.identify(&conn) else {
                    conn.close(2u32.into(), b"unknown peer");
                    return;
                };
                if p > inner.me {
                    // By convention the lower id dials; accept anyway (the newest connection wins).
                    tracing::debug!(peer = %p, "inbound connection from a higher party id");
                }
                inner.install(p, conn.clone());
                let e = inner.serve(p, conn.clone()).await;
                inner.uninstall(p, &conn, &e);
            });
        }
    }

    fn identify(&self, conn: &Connection) -> Option<PartyId> {
        let certs = conn.peer_identity()?.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
        let (ee, rest) = certs.split_first()?;
        self.auth.identify(ee, rest, rustls::pki_types::UnixTime::now()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_packets_are_not_refusals() {
        use quinn::TransportErrorCode as Code;
        // What quinn reports when it takes a retransmitted handshake datagram of an earlier
        // connection for a new one: no client, nothing refused (logged at DEBUG).
        assert_eq!(
            classify_inbound(Some(Code::PROTOCOL_VIOLATION), "authentication failed", false),
            InboundFailure::Stray
        );
        assert_eq!(classify_inbound(None, "", true), InboundFailure::Stray);
        // This node's certificate check refused the client: already logged, rate-limited.
        assert_eq!(
            classify_inbound(Some(Code::crypto(49)), "invalid peer certificate", false),
            InboundFailure::Refused
        );
        assert_eq!(classify_inbound(Some(Code::PROTOCOL_VIOLATION), "something else", false), InboundFailure::Other);
        assert_eq!(alert_name(Code::crypto(49)), "access denied");
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human(Duration::from_millis(400)), "0.4 s");
        assert_eq!(human(Duration::from_secs(42)), "42 s");
        assert_eq!(human(Duration::from_secs(300)), "5 min");
        assert_eq!(human(Duration::from_secs(3 * 3600)), "3 h");
    }
}
