//! QuicTransport against plain tokio TCP on loopback: 64 MiB each way at once (1 MiB frames),
//! and the round trip of a 64-byte frame. QUIC runs with the node's defaults (path-MTU ceiling
//! 16 KiB, GSO batches capped at 64 KiB) and with other ceilings: quinn's 1452 B (a 1500-byte
//! LAN), 6000 B, 32 KiB and 65000 B (no batching). Results: BENCHMARKS.md.
//!
//! A LAN path as well, when run as root with `MEMBRANE_BENCH_LAN=1500,9000` (link MTUs): two
//! network namespaces joined by a veth pair (10.77.0.1 and .2, inside the namespaces only, removed
//! afterwards), TCP and QUIC between sockets created in each; the veth keeps its default offloads,
//! as a NIC would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mpc_proto::transport::Transport;
use mpc_proto::{PartyId, SessionId};
use party_node::config::Config;
use party_node::mesh::{Mesh, MeshOptions, bind_udp};
use party_node::testbed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const FRAME: usize = 1 << 20;
const TOTAL: usize = 64 << 20;

/// Two endpoints that move whole frames: QUIC (P0, P1 of a mesh) or TCP.
enum Pair {
    Quic(
        Arc<dyn Transport>,
        Arc<dyn Transport>,
        // Held so the endpoints and their configs outlive the transports.
        #[allow(dead_code, reason = "kept alive, never read")] Vec<Mesh>,
        #[allow(dead_code, reason = "kept alive, never read")] tempfile::TempDir,
    ),
    Tcp(Arc<tokio::sync::Mutex<TcpStream>>, Arc<tokio::sync::Mutex<TcpStream>>),
}

async fn quic_pair(mtu: u16) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_consortium(dir.path(), testbed::free_addrs().unwrap(), false).unwrap();
    let opts = MeshOptions { mtu_upper_bound: mtu, ..MeshOptions::default() };
    let meshes: Vec<Mesh> = paths
        .iter()
        .map(|p| {
            let cfg = Config::load(p).unwrap();
            Mesh::start(&cfg, bind_udp(cfg.listen).unwrap(), opts.clone()).unwrap()
        })
        .collect();
    let s = SessionId(1);
    let (a, b, _) = tokio::join!(meshes[0].open_session(s), meshes[1].open_session(s), meshes[2].open_session(s));
    // Let path-MTU discovery settle before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("quic (mtu bound {mtu}): path MTU now {:?}", meshes[0].peers().iter().map(|p| p.mtu).collect::<Vec<_>>());
    Pair::Quic(Arc::new(a.unwrap()), Arc::new(b.unwrap()), meshes, dir)
}

/// Two network namespaces joined by a veth pair with link MTU `mtu`; deleted on drop.
struct Lan {
    mtu: u32,
}

const LAN_NS: [&str; 2] = ["mbr-bench-a", "mbr-bench-b"];
const LAN_IP: [&str; 2] = ["10.77.0.1", "10.77.0.2"];

impl Lan {
    fn up(mtu: u32) -> Lan {
        let ip = |args: &str| {
            let out = std::process::Command::new("ip").args(args.split_whitespace()).output().expect("the ip tool");
            assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
        };
        Lan::down();
        for ns in LAN_NS {
            ip(&format!("netns add {ns}"));
            ip(&format!("-n {ns} link set lo up"));
        }
        ip(&format!("link add mbrb0 netns {} type veth peer name mbrb1 netns {}", LAN_NS[0], LAN_NS[1]));
        for (i, (ns, addr)) in LAN_NS.iter().zip(LAN_IP).enumerate() {
            ip(&format!("-n {ns} addr add {addr}/24 dev mbrb{i}"));
            ip(&format!("-n {ns} link set mbrb{i} mtu {mtu} up"));
        }
        Lan { mtu }
    }

    fn down() {
        for ns in LAN_NS {
            let _ = std::process::Command::new("ip").args(["netns", "del", ns]).output();
        }
    }

    /// Runs `f` on a thread moved into namespace `side` (sockets it creates stay there).
    fn within<T: Send>(side: usize, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(format!("/var/run/netns/{}", LAN_NS[side])).unwrap();
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&ns),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// QUIC between P0 (side 0) and P1 (side 1); P2, which a mesh needs, on side 0.
    async fn quic_pair(&self, mtu: u16) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let at = |side: usize, port: u16| std::net::SocketAddr::new(LAN_IP[side].parse().unwrap(), port);
        let mut addrs = testbed::free_addrs().unwrap();
        addrs.udp = [at(0, 7401), at(1, 7402), at(0, 7403)];
        let paths = testbed::write_consortium(dir.path(), addrs, false).unwrap();
        let opts = MeshOptions { mtu_upper_bound: mtu, ..MeshOptions::default() };
        let meshes: Vec<Mesh> = paths
            .iter()
            .zip([0, 1, 0])
            .map(|(p, side)| {
                let cfg = Config::load(p).unwrap();
                let socket = Lan::within(side, || bind_udp(cfg.listen).unwrap());
                Mesh::start(&cfg, socket, opts.clone()).unwrap()
            })
            .collect();
        let s = SessionId(1);
        let (a, b, _) = tokio::join!(meshes[0].open_session(s), meshes[1].open_session(s), meshes[2].open_session(s));
        tokio::time::sleep(Duration::from_millis(500)).await;
        eprintln!(
            "lan (link mtu {}) quic (mtu bound {mtu}): path MTU {:?}",
            self.mtu,
            meshes[0].peers().iter().map(|p| p.mtu).collect::<Vec<_>>()
        );
        Pair::Quic(Arc::new(a.unwrap()), Arc::new(b.unwrap()), meshes, dir)
    }

    async fn tcp_pair(&self) -> Pair {
        let addr = std::net::SocketAddr::new(LAN_IP[1].parse().unwrap(), 7410);
        let l = Lan::within(1, || std::net::TcpListener::bind(addr).unwrap());
        let a = Lan::within(0, || std::net::TcpStream::connect(addr).unwrap());
        let b = l.accept().unwrap().0;
        let tokio_stream = |s: std::net::TcpStream| {
            s.set_nonblocking(true).unwrap();
            s.set_nodelay(true).unwrap();
            TcpStream::from_std(s).unwrap()
        };
        Pair::Tcp(
            Arc::new(tokio::sync::Mutex::new(tokio_stream(a))),
            Arc::new(tokio::sync::Mutex::new(tokio_stream(b))),
        )
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        Lan::down();
    }
}

async fn tcp_pair() -> Pair {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
    let (a, b) = (a.unwrap(), b.unwrap().0);
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    Pair::Tcp(Arc::new(tokio::sync::Mutex::new(a)), Arc::new(tokio::sync::Mutex::new(b)))
}

async fn tcp_send(w: &mut tokio::net::tcp::WriteHalf<'_>, frame: usize, count: usize) {
    let payload = vec![7u8; frame];
    for _ in 0..count {
        w.write_all(&(payload.len() as u32).to_le_bytes()).await.unwrap();
        w.write_all(&payload).await.unwrap();
    }
}

async fn tcp_recv(r: &mut tokio::net::tcp::ReadHalf<'_>, count: usize) {
    for _ in 0..count {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        r.read_exact(&mut buf).await.unwrap();
    }
}

/// TCP: `count` frames each way, both directions at once, on split halves.
async fn tcp_exchange(a: &mut TcpStream, b: &mut TcpStream, frame: usize, count: usize) {
    let (mut ar, mut aw) = a.split();
    let (mut br, mut bw) = b.split();
    tokio::join!(
        tcp_send(&mut aw, frame, count),
        tcp_send(&mut bw, frame, count),
        tcp_recv(&mut ar, count),
        tcp_recv(&mut br, count)
    );
}

async fn quic_exchange(a: &Arc<dyn Transport>, b: &Arc<dyn Transport>, frame: usize, count: usize) {
    let send = |t: &Arc<dyn Transport>, to: PartyId| {
        let t = t.clone();
        async move {
            for _ in 0..count {
                t.send(to, vec![7u8; frame]).await.unwrap();
            }
        }
    };
    let recv = |t: &Arc<dyn Transport>, from: PartyId| {
        let t = t.clone();
        async move {
            for _ in 0..count {
                t.recv(from).await.unwrap();
            }
        }
    };
    tokio::join!(send(a, PartyId::P1), send(b, PartyId::P0), recv(a, PartyId::P1), recv(b, PartyId::P0));
}

async fn ping(pair: &Pair) {
    match pair {
        Pair::Quic(a, b, ..) => {
            a.send(PartyId::P1, vec![1; 64]).await.unwrap();
            let f = b.recv(PartyId::P0).await.unwrap();
            b.send(PartyId::P0, f).await.unwrap();
            a.recv(PartyId::P1).await.unwrap();
        }
        Pair::Tcp(a, b) => {
            let (mut a, mut b) = (a.lock().await, b.lock().await);
            let mut buf = [0u8; 68];
            a.write_all(&[64, 0, 0, 0]).await.unwrap();
            a.write_all(&[1; 64]).await.unwrap();
            b.read_exact(&mut buf).await.unwrap();
            b.write_all(&buf).await.unwrap();
            a.read_exact(&mut buf).await.unwrap();
        }
    }
}

async fn exchange(pair: &Pair, frame: usize, count: usize) {
    match pair {
        Pair::Quic(a, b, ..) => quic_exchange(a, b, frame, count).await,
        Pair::Tcp(a, b) => tcp_exchange(&mut *a.lock().await, &mut *b.lock().await, frame, count).await,
    }
}

/// The two measurements of every pair: 64 MiB each way, then the 64-byte round trip (its
/// group is returned open, for more round-trip variants).
fn bulk_and_rtt<'c>(
    c: &'c mut Criterion,
    rt: &tokio::runtime::Runtime,
    pairs: &[(String, Pair)],
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group("transport_64MiB_each_way");
    g.sample_size(10).measurement_time(Duration::from_secs(15)).throughput(Throughput::Bytes(TOTAL as u64));
    for (name, pair) in pairs {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| rt.block_on(exchange(pair, FRAME, TOTAL / FRAME)));
        });
    }
    g.finish();
    let mut g = c.benchmark_group("transport_rtt_64B");
    for (name, pair) in pairs {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        ping(pair).await;
                    }
                    t0.elapsed()
                })
            });
        });
    }
    g
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pairs: Vec<(String, Pair)> = vec![
        ("tcp", rt.block_on(tcp_pair())),
        ("quic", rt.block_on(quic_pair(MeshOptions::default().mtu_upper_bound))),
        ("quic-mtu1452", rt.block_on(quic_pair(1452))),
        ("quic-mtu6000", rt.block_on(quic_pair(6000))),
        ("quic-mtu32768", rt.block_on(quic_pair(32768))),
        ("quic-mtu65000", rt.block_on(quic_pair(65000))),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_string(), p))
    .collect();
    // The LAN paths, one pair of namespaces at a time, so each keeps its own (fixed) addresses.
    let lans: Vec<u32> = std::env::var("MEMBRANE_BENCH_LAN")
        .unwrap_or_default()
        .split(',')
        .filter(|m| !m.is_empty())
        .map(|m| m.trim().parse().expect("MEMBRANE_BENCH_LAN: link MTUs, e.g. 1500,9000"))
        .collect();
    for &mtu in &lans {
        let lan = Lan::up(mtu);
        let lan_pairs = [
            (format!("lan{mtu}-tcp"), rt.block_on(lan.tcp_pair())),
            (format!("lan{mtu}-quic"), rt.block_on(lan.quic_pair(MeshOptions::default().mtu_upper_bound))),
        ];
        bulk_and_rtt(c, &rt, &lan_pairs).finish();
        for (_, pair) in lan_pairs {
            if let Pair::Quic(.., meshes, _) = pair {
                rt.block_on(async {
                    for m in meshes {
                        m.shutdown().await;
                    }
                });
            }
        }
        drop(lan);
    }

    let mut g = bulk_and_rtt(c, &rt, &pairs);
    // The same round trip driven from a task on the runtime (no hop from the caller's thread).
    for (name, pair) in &pairs {
        let Pair::Quic(a, b, ..) = pair else { continue };
        g.bench_function(BenchmarkId::from_parameter(format!("{name}-in-runtime")), |bench| {
            bench.iter_custom(|iters| {
                let (a, b) = (a.clone(), b.clone());
                rt.block_on(rt.spawn(async move {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        a.send(PartyId::P1, vec![1; 64]).await.unwrap();
                        let f = b.recv(PartyId::P0).await.unwrap();
                        b.send(PartyId::P0, f).await.unwrap();
                        a.recv(PartyId::P1).await.unwrap();
                    }
                    t0.elapsed()
                }))
                .unwrap()
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
