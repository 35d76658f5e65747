//! Hostile peers: Alice's and the dealer's nodes run as processes with short `[limits]`; Bob is
//! a test double that holds Bob's identity and speaks the wire protocol, but sends garbage,
//! frames of another job, replays, wrong shapes, another plan, or nothing at all. Each time the
//! honest nodes fail that job with a clear error within their configured timeouts, without a
//! panic or memory growth, and afterwards serve a normal job with the real Bob.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpc_proto::transport::{BoxFuture, Traffic, Transport, TransportError};
use mpc_proto::{DealerSource, Party, PartyId, SessionConfig, SessionId};
use party_node::client::call;
use party_node::config::Config;
use party_node::jobs::{JobId, Plan, seeded_matrix};
use party_node::mesh::Mesh;
use party_node::testbed;
use rand_core::SeedableRng;
use serde_json::json;

mod common;
use common::Node;

const LIMITS: &str = "\n[limits]\nframe_timeout_s = 3\njoin_timeout_s = 4\nmax_job_s = 60\n";

/// Frames a party sent, in order.
type FrameLog = Arc<Mutex<Vec<(PartyId, Vec<u8>)>>>;

/// Records every frame sent (for the replay case) and forwards to the real transport.
struct Recorder {
    inner: Arc<dyn Transport>,
    sent: FrameLog,
}

impl Transport for Recorder {
    fn local_id(&self) -> PartyId {
        self.inner.local_id()
    }
    fn send(&self, to: PartyId, frame: Vec<u8>) -> BoxFuture<'_, Result<(), TransportError>> {
        self.sent.lock().unwrap().push((to, frame.clone()));
        self.inner.send(to, frame)
    }
    fn recv(&self, from: PartyId) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        self.inner.recv(from)
    }
    fn traffic(&self) -> &Traffic {
        self.inner.traffic()
    }
}

/// Appends one matrix row (`k` ring elements) to every opening it sends: shares of the wrong
/// shape in otherwise well-formed frames.
struct Widen {
    inner: Arc<dyn Transport>,
}

impl Transport for Widen {
    fn local_id(&self) -> PartyId {
        self.inner.local_id()
    }
    fn send(&self, to: PartyId, frame: Vec<u8>) -> BoxFuture<'_, Result<(), TransportError>> {
        use mpc_proto::transport::frame::{FrameKind, Header, decode, encode};
        let out = match decode(&frame, usize::MAX) {
            Ok((h, payload)) if h.kind == FrameKind::Open => {
                let mut wider = payload.to_vec();
                wider.extend(std::iter::repeat_n(7u8, 8 * PLAN.k));
                encode(&Header { len: wider.len() as u64, total: wider.len() as u64, ..h }, &wider)
            }
            _ => frame,
        };
        self.inner.send(to, out)
    }
    fn recv(&self, from: PartyId) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        self.inner.recv(from)
    }
    fn traffic(&self) -> &Traffic {
        self.inner.traffic()
    }
}

const PLAN: Plan = Plan { m: 8, k: 16, n: 4 };

/// Submits a matmul job to Alice and the dealer; returns its id.
async fn submit(alice: &Node, dealer: &Node) -> String {
    let id = JobId::random().to_string();
    let (m, k, n) = (PLAN.m, PLAN.k, PLAN.n);
    alice
        .call("POST", "/v1/jobs", Some(json!({"id": id, "kind": "matmul", "m": m, "k": k, "n": n, "seed": 1})))
        .await
        .unwrap();
    dealer.call("POST", "/v1/jobs", Some(json!({"id": id, "kind": "matmul", "m": m, "k": k, "n": n}))).await.unwrap();
    id
}

/// Waits for the job to end on `node`; returns (state, error, seconds waited).
async fn outcome(node: &Node, id: &str) -> (String, String, f64) {
    let t0 = Instant::now();
    loop {
        let r = node.get(&format!("/v1/jobs/{id}")).await;
        let state = r["state"].as_str().unwrap().to_string();
        if state != "joining" && state != "running" {
            return (state, r["error"].as_str().unwrap_or("").to_string(), t0.elapsed().as_secs_f64());
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "job {id} never ended: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rng() -> rand_chacha::ChaCha12Rng {
    rand_chacha::ChaCha12Rng::seed_from_u64(7)
}

/// Bob's honest program for a matmul job (what `jobs::execute` does), over any transport.
async fn honest_bob(t: Arc<dyn Transport>, id: &str) -> mpc_proto::Result<()> {
    let session = SessionId(u128::from_str_radix(id, 16).unwrap());
    let mut p =
        Party::connect(t, SessionConfig::new(session, PLAN.hash()), Box::new(DealerSource::default()), &mut rng())
            .await?;
    let x = seeded_matrix(2, PLAN.m, PLAN.k);
    let xs = p.share_input(PartyId::P1, &[PLAN.m, PLAN.k], Some(&x))?;
    let ws = p.share_input(PartyId::P0, &[PLAN.k, PLAN.n], None)?;
    let y = p.matmul(&xs, &ws).await?;
    p.reveal_to(PartyId::P1, &y).await?;
    Ok(())
}

#[test]
fn hostile_bob_fails_only_his_jobs_and_the_nodes_serve_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_consortium(dir.path(), testbed::free_addrs().unwrap(), false).unwrap();
    for p in &paths {
        let mut text = std::fs::read_to_string(p).unwrap();
        text.push_str(LIMITS);
        std::fs::write(p, text).unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (alice, dealer) = (Node::spawn(&paths[0]), Node::spawn(&paths[2]));
    let bob_cfg = Config::load(&paths[1]).unwrap();
    assert_eq!(bob_cfg.limits.frame_timeout_s, 3, "the [limits] section is read");
    let mut report = vec![];
    rt.block_on(async {
        let mesh = Mesh::bind(&bob_cfg, bob_cfg.limits.mesh_options()).unwrap();
        mesh.wait_ready(Duration::from_secs(30)).await.unwrap();
        let rss0 = alice.rss_kib();
        let session = |id: &str| SessionId(u128::from_str_radix(id, 16).unwrap());

        // 0. An honest job, recorded for the replay below.
        let id0 = submit(&alice, &dealer).await;
        let sent = Arc::new(Mutex::new(vec![]));
        let t: Arc<dyn Transport> =
            Arc::new(Recorder { inner: Arc::new(mesh.open_session(session(&id0)).await.unwrap()), sent: sent.clone() });
        honest_bob(t, &id0).await.unwrap();
        assert_eq!(outcome(&alice, &id0).await.0, "done");

        // 1. Garbage bytes instead of frames.
        let id = submit(&alice, &dealer).await;
        let t = mesh.open_session(session(&id)).await.unwrap();
        for p in [PartyId::P0, PartyId::P2] {
            t.send(p, vec![0xff; 100]).await.unwrap();
        }
        report.push(("garbage", id));

        // 2. A replay of job 0's frames in a new job.
        let id = submit(&alice, &dealer).await;
        let t = mesh.open_session(session(&id)).await.unwrap();
        let frames = sent.lock().unwrap().clone();
        for (to, f) in frames {
            let _ = t.send(to, f).await;
        }
        report.push(("replay", id));

        // 3. Another plan (Bob claims other shapes): refused at session setup.
        let id = submit(&alice, &dealer).await;
        let t: Arc<dyn Transport> = Arc::new(mesh.open_session(session(&id)).await.unwrap());
        let other = Plan { m: 9, ..PLAN };
        let _ = Party::connect(
            t,
            SessionConfig::new(session(&id), other.hash()),
            Box::new(DealerSource::default()),
            &mut rng(),
        )
        .await;
        report.push(("other plan", id));

        // 4. The right plan, then shares of the wrong shape: every opening Bob sends carries
        //    9 rows' worth of values in an 8-row job (a well-formed frame, wrong length).
        let id = submit(&alice, &dealer).await;
        let t: Arc<dyn Transport> = Arc::new(Widen { inner: Arc::new(mesh.open_session(session(&id)).await.unwrap()) });
        assert!(honest_bob(t, &id).await.is_err(), "the honest parties refuse the wrong shape");
        report.push(("wrong shape", id));

        // 5. A frame for another job on this job's stream (the session id inside differs).
        let id = submit(&alice, &dealer).await;
        let t = mesh.open_session(session(&id)).await.unwrap();
        let first = sent.lock().unwrap()[0].clone();
        let (to, f) = first;
        t.send(to, f).await.unwrap();
        report.push(("other job's frame", id));

        // 6. Joins, then stalls forever.
        let id = submit(&alice, &dealer).await;
        let _held = mesh.open_session(session(&id)).await.unwrap();
        report.push(("stall", id.clone()));
        let mut results = vec![];
        for (case, id) in &report {
            let (state, error, waited) = outcome(&alice, id).await;
            let (dstate, derror, _) = outcome(&dealer, id).await;
            eprintln!("{case:>18}: alice {state} after {waited:.1} s: {error}\n{:>18}  dealer {dstate}: {derror}", "");
            results.push((case, state, error, dstate, waited));
        }
        for (case, state, error, dstate, waited) in &results {
            assert_eq!(state, "failed", "{case}: alice's job must fail");
            // The dealer's part of a matmul ends once its material is sent: a failure after that
            // point (the wrong shape is caught when Alice receives Bob's opening) leaves its
            // record `done`. Every earlier failure reaches it as an abort.
            let dealer_ok = dstate == "failed" || (**case == "wrong shape" && dstate == "done");
            assert!(dealer_ok, "{case}: the dealer's job is {dstate}");
            assert!(!error.is_empty(), "{case}: a reason is recorded");
            // Within the frame timeout (3 s) or join timeout (4 s), plus scheduling slack.
            assert!(*waited < 12.0, "{case}: took {waited} s");
        }
        let by_case = |c: &str| &results.iter().find(|r| *r.0 == c).unwrap().2;
        assert!(
            by_case("other plan").contains("plan") || by_case("other plan").contains("differ"),
            "{}",
            by_case("other plan")
        );
        assert!(by_case("stall").contains("timed out") || by_case("stall").contains("timeout"), "{}", by_case("stall"));
        drop(_held);
        mesh.shutdown().await;
        let rss1 = alice.rss_kib();
        eprintln!("alice RSS {rss0} KiB before the hostile jobs, {rss1} KiB after");
        assert!(rss1 < rss0 + 64 * 1024, "alice's memory grew from {rss0} to {rss1} KiB");
    });
    assert!(!std::fs::read_to_string(&alice.log).unwrap().contains("panicked"), "a node panicked");
    assert!(!std::fs::read_to_string(&dealer.log).unwrap().contains("panicked"), "a node panicked");

    // The real Bob comes up: the next job succeeds.
    let bob = Node::spawn(&paths[1]);
    rt.block_on(async {
        let t0 = Instant::now();
        let ready = || async {
            let r = call(bob.cfg.api_listen, Some(&bob.cfg.api_token.0), "GET", "/v1/health", None).await;
            r.map(|r| r.body["mesh_ready"] == json!(true)).unwrap_or(false)
        };
        while !ready().await {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the mesh did not re-form; bob's log:\n{}\nalice's log (end):\n{}",
                bob.log_text(),
                alice
                    .log_text()
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let id = submit(&alice, &dealer).await;
        let (m, k, n) = (PLAN.m, PLAN.k, PLAN.n);
        bob.call("POST", "/v1/jobs", Some(json!({"id": id, "kind": "matmul", "m": m, "k": k, "n": n, "seed": 2})))
            .await
            .unwrap();
        for node in [&alice, &bob, &dealer] {
            let (state, error, _) = outcome(node, &id).await;
            assert_eq!(state, "done", "{error}");
        }
        let res = bob.get(&format!("/v1/jobs/{id}/result")).await;
        let want = seeded_matrix(2, m, k).matmul(&seeded_matrix(1, k, n)).unwrap();
        let want: Vec<i64> = want.as_slice().iter().map(|&v| v as i64).collect();
        assert_eq!(res["values"], json!(want));
    });
}
