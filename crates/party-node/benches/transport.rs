//! QuicTransport against plain tokio TCP on loopback: 64 MiB each way at once (1 MiB frames),
//! and the round trip of a 64-byte frame. QUIC runs with the node's defaults (MTU ceiling 6000 B, GSO
//! on), with quinn's 1452 B ceiling, and with a 16 KiB ceiling (GSO off). Results: BENCHMARKS.md.

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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pairs: Vec<(&str, Pair)> = vec![
        ("tcp", rt.block_on(tcp_pair())),
        ("quic", rt.block_on(quic_pair(MeshOptions::default().mtu_upper_bound))),
        ("quic-mtu1452", rt.block_on(quic_pair(1452))),
        ("quic-mtu16384-nogso", rt.block_on(quic_pair(16384))),
    ];

    let mut g = c.benchmark_group("transport_64MiB_each_way");
    g.sample_size(10).measurement_time(Duration::from_secs(15)).throughput(Throughput::Bytes(TOTAL as u64));
    for (name, pair) in &pairs {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| rt.block_on(exchange(pair, FRAME, TOTAL / FRAME)));
        });
    }
    g.finish();

    let mut g = c.benchmark_group("transport_rtt_64B");
    for (name, pair) in &pairs {
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
