//! `party-node`: the daemon each organisation runs, and its CLI.
//!
//! * [`config`] — the node's TOML config and its validation; [`identity`] — keys, certificates,
//!   requests and the consortium CA; [`certs`] — what a certificate says, expiry checks at start;
//! * [`tls`] — mutual TLS (rustls, ring) that admits only the configured peers, pinned or CA;
//! * [`mesh`] — the QUIC endpoint, one connection per peer with retry, one stream per session;
//! * [`transport`] — [`QuicTransport`](transport::QuicTransport), the core's `Transport` over QUIC;
//! * [`jobs`] — jobs (sessions) with progress and per-operation counters; [`store`] — atomic
//!   items at rest; [`api`] and [`client`] — the control API; [`node`] — `party-node run`;
//! * [`service`] — the prediction service: models offered under a policy, jobs proposed over
//!   the mesh and decided by each node's rules; [`audit`] — the log of those decisions;
//! * [`testbed`] — a three-node consortium on loopback for tests, benchmarks and trying it out;
//! * [`bench`](mod@bench) — `party-node bench`, the end-to-end benchmark runner with WAN emulation.
//!
//! What it does not do: protocol logic (that is `mpc-proto`, driven unchanged over QUIC).
//!
//! ## Example: one party of a session over the mesh
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use mpc_proto::{DealerSource, Party, PartyId, SessionConfig, SessionId};
//! use party_node::{config::Config, mesh::{Mesh, MeshOptions}};
//! use rand_core::SeedableRng;
//!
//! let cfg = Config::load("alice/node.toml".as_ref())?;
//! let mesh = Mesh::bind(&cfg, MeshOptions::default())?; // dials/accepts the peers
//! mesh.wait_ready(std::time::Duration::from_secs(30)).await?;
//! let session = SessionId(0x1234); // a random 128-bit id, agreed out of band
//! let transport = mesh.open_session(session).await?;
//! let mut rng = rand_chacha::ChaCha12Rng::from_seed([7; 32]); // use OS randomness in practice
//! let config = SessionConfig::new(session, [0; 32]); // the plan hash all parties must share
//! let mut party = Party::connect(Arc::new(transport), config, Box::new(DealerSource::default()), &mut rng).await?;
//! let x = party.share_input(PartyId::P1, &[2, 2], None)?; // Bob's input, shared
//! let y = party.mul(&x, &x).await?;
//! party.reveal_to(PartyId::P1, &y).await?;
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]
pub mod api;
pub mod audit;
pub mod bench;
pub mod certs;
pub mod client;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod jobs;
pub mod mesh;
pub mod ml;
pub mod node;
pub mod pool;
pub mod rows;
pub mod service;
pub mod store;
pub mod testbed;
pub mod tls;
pub mod transport;
