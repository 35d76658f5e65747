//! WAN emulation inside the process: a UDP socket under quinn that holds every outgoing datagram
//! for a fixed one-way delay, optionally paced to a link rate, before sending it on the real
//! socket. No root, no `tc netem` (this kernel lacks it), nothing outside the binary.
//!
//! Every party delays its own sends by `rtt / 2`, so a round trip between any two parties sees
//! `rtt`. With a rate, datagrams leave the emulated link at most at that rate (serialisation
//! delay, then the propagation delay); a datagram that would wait more than
//! [`WanLink::queue_limit`] in the link's queue is dropped, as a router's tail drop would, so
//! the congestion controller sees loss instead of an unbounded queue.
//!
//! Sends are timed by one thread per socket sleeping on a condition variable (tens of
//! microseconds of slack, where tokio's timer wheel rounds to whole milliseconds).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// The emulated link out of one party.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WanLink {
    /// Delay added to every outgoing datagram (half the round-trip time).
    pub one_way: Duration,
    /// Link rate in bits per second (`None`: unlimited).
    pub rate_bps: Option<u64>,
    /// Longest time a datagram may wait in the link's queue before it is dropped.
    pub queue_limit: Duration,
}

impl WanLink {
    /// A link giving round-trip time `rtt` between two parties that both use it.
    pub fn with_rtt(rtt: Duration, rate_bps: Option<u64>) -> Self {
        WanLink { one_way: rtt / 2, rate_bps, queue_limit: Duration::from_millis(100) }
    }
}

struct Pending {
    due: Instant,
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    contents: Vec<u8>,
    segment_size: Option<usize>,
    src_ip: Option<IpAddr>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Pending>,
    /// When the emulated link finishes serialising what it holds.
    link_free: Option<Instant>,
    closed: bool,
}

struct Shared {
    inner: Arc<dyn AsyncUdpSocket>,
    queue: Mutex<Queue>,
    wake: Condvar,
    dropped: AtomicU64,
}

/// A quinn socket that delays (and optionally paces) what it sends; receiving is unchanged.
pub struct DelayedUdpSocket {
    shared: Arc<Shared>,
    link: WanLink,
}

impl fmt::Debug for DelayedUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedUdpSocket").field("link", &self.link).finish_non_exhaustive()
    }
}

impl DelayedUdpSocket {
    /// Wraps `inner` (e.g. from `quinn::TokioRuntime.wrap_udp_socket`) and starts the thread
    /// that sends the held datagrams. `rt` is the runtime whose reactor drives `inner`.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, link: WanLink, rt: tokio::runtime::Handle) -> io::Result<Arc<Self>> {
        let shared = Arc::new(Shared {
            inner,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::Builder::new().name("wan-link".into()).spawn(move || {
            let _rt = rt.enter();
            s.run();
        })?;
        Ok(Arc::new(DelayedUdpSocket { shared, link }))
    }

    /// Datagrams dropped because the link's queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for DelayedUdpSocket {
    fn drop(&mut self) {
        self.shared.queue.lock().expect("wan queue lock").closed = true;
        self.shared.wake.notify_all();
    }
}

impl Shared {
    fn run(&self) {
        loop {
            let p = {
                let mut q = self.queue.lock().expect("wan queue lock");
                loop {
                    if q.closed {
                        return;
                    }
                    let now = Instant::now();
                    match q.items.front() {
                        None => q = self.wake.wait(q).expect("wan queue lock"),
                        Some(p) if p.due > now => {
                            let wait = p.due - now;
                            q = self.wake.wait_timeout(q, wait).expect("wan queue lock").0;
                        }
                        Some(_) => break q.items.pop_front().expect("front exists"),
                    }
                }
            };
            let t = Transmit {
                destination: p.destination,
                ecn: p.ecn,
                contents: &p.contents,
                segment_size: p.segment_size,
                src_ip: p.src_ip,
            };
            // The real socket's buffer is large; when it is full, retry shortly (the reactor
            // marks it writable again).
            for _ in 0..20_000 {
                match self.inner.try_send(&t) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_micros(50)),
                    Err(e) => {
                        tracing::debug!(error = %e, "emulated WAN link: send failed");
                        break;
                    }
                    Ok(()) => break,
                }
            }
        }
    }
}

#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for DelayedUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        // The emulated link takes every datagram (or drops it, as a full router queue would).
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let now = Instant::now();
        let mut q = self.shared.queue.lock().expect("wan queue lock");
        let start = q.link_free.map_or(now, |t| t.max(now));
        if start - now > self.link.queue_limit {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let done = match self.link.rate_bps {
            Some(r) => {
                start + Duration::from_nanos((transmit.contents.len() as u64 * 8).saturating_mul(1_000_000_000) / r)
            }
            None => start,
        };
        q.link_free = Some(done);
        q.items.push_back(Pending {
            due: done + self.link.one_way,
            destination: transmit.destination,
            ecn: transmit.ecn,
            contents: transmit.contents.to_vec(),
            segment_size: transmit.segment_size,
            src_ip: transmit.src_ip,
        });
        drop(q);
        self.shared.wake.notify_one();
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.shared.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.shared.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.shared.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        // quinn disables path-MTU discovery on sockets that may fragment: pass the truth on.
        self.shared.inner.may_fragment()
    }
}

/// Parses a duration such as `20ms`, `1.5ms`, `0`, `2s`, `500us`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic() || c == 'µ').unwrap_or(s.len()));
    let v: f64 = num.trim().parse().map_err(|_| format!("bad duration {s:?} (e.g. 20ms, 1.5ms, 0)"))?;
    let scale = match unit {
        "" if v == 0.0 => 1.0,
        "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        _ => return Err(format!("bad duration {s:?}: give a unit (s, ms, us), e.g. 20ms")),
    };
    if v.is_nan() || v.is_infinite() || v < 0.0 {
        return Err(format!("bad duration {s:?}: must be ≥ 0"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Parses a link rate such as `1gbit`, `100mbit`, `500kbit`, `1e9` (bits per second).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic() && c != 'e').unwrap_or(t.len()));
    let v: f64 = num.parse().map_err(|_| format!("bad rate {s:?} (e.g. 1gbit, 100mbit)"))?;
    let scale = match unit {
        "" | "bit" | "bps" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return Err(format!("bad rate {s:?}: units bit, kbit, mbit, gbit")),
    };
    let bps = v * scale;
    if bps.is_nan() || bps.is_infinite() || bps < 1000.0 {
        return Err(format!("bad rate {s:?}: at least 1kbit"));
    }
    Ok(bps as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates_parse() {
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("20").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert!(parse_rate("1gb").is_err());
        assert!(parse_rate("10").is_err());
    }

    #[test]
    fn delayed_socket_delivers_in_order() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async {
            let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let dest = rx.local_addr().unwrap();
            let raw = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, raw).unwrap();
            let link = WanLink::with_rtt(Duration::from_millis(4), Some(100_000_000));
            let s = DelayedUdpSocket::new(inner, link, tokio::runtime::Handle::current()).unwrap();
            for i in 0..20u8 {
                let contents = [i; 100];
                let t =
                    Transmit { destination: dest, ecn: None, contents: &contents, segment_size: None, src_ip: None };
                s.try_send(&t).unwrap();
            }
            let mut buf = [0u8; 200];
            for i in 0..20u8 {
                let n = rx.recv(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], &[i; 100][..]);
            }
            assert_eq!(s.dropped(), 0);
        });
    }
}
