//! `party-node`: the daemon each organisation runs, and its CLI.
//!
//! * [`config`] — the node's TOML config and its validation; [`identity`] — keys and certificates;
//! * [`tls`] — mutual TLS that admits only the configured peers;
//! * [`mesh`] — the QUIC endpoint, connections with retry, per-session streams;
//! * [`transport`] — [`QuicTransport`](transport::QuicTransport), the core's `Transport` over QUIC.
//!
//! What it does not do: any protocol logic (that is `mpc-proto`).
#![deny(unsafe_code)]

pub mod api;
pub mod client;
pub mod config;
pub mod identity;
pub mod jobs;
pub mod mesh;
pub mod node;
pub mod store;
pub mod testbed;
pub mod tls;
pub mod transport;
