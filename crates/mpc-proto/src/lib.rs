//! # mpc-proto — Membrane's secure-computation core
//!
//! Additive 2-of-2 secret sharing over the ring Z_2^64 with a third, non-colluding dealer that
//! supplies correlated randomness (the *2pc-dealer* model: P0 = model owner, P1 = data owner,
//! P2 = dealer). This crate holds the arithmetic and the protocols and nothing else:
//!
//! * [`ring`] — [`RingTensor`], n-dimensional `u64` tensors with wrapping arithmetic, a
//!   cache-blocked wrapping GEMM and im2col for convolution;
//! * [`fixed`] — fixed-point encoding ([`FixedPoint`]) with overflow checks;
//! * [`prg`] — ChaCha-based seeded PRGs;
//! * [`share`] — [`AShare`], one party's additive share (its `Debug` never prints values);
//! * [`transport`] — the [`Transport`] trait, the in-memory mesh, framing and byte counters;
//! * [`correlations`] — the [`Correlations`] trait (one `fetch(Request) -> Material` method)
//!   with [`DealerCorrelations`] (seed-compressed dealer over the transport) and the in-process
//!   [`TestDealer`], a generic preprocessing pool, and the [`CorrelationSource`]s a caller
//!   chooses for [`Party::connect`] ([`DealerSource`], [`TestSource`]);
//! * [`party`] — the [`Party`] context and every protocol as an async method on it;
//! * [`testing`] — [`run_parties`]: three parties as threads over the in-memory mesh.
//!
//! What it does **not** do: sockets, files, clocks, threads pools or async runtimes. It depends on
//! `futures` only; `party-node` implements [`Transport`] over QUIC and drives the same code.
//!
//! ## Example: Bob's private vector against Alice's private weights
//!
//! ```
//! use mpc_proto::{run_parties, FixedPoint, PartyId, RingTensor};
//!
//! let fx = FixedPoint::default();
//! let [_, bob, _] = run_parties(7, |mut party| async move {
//!     // Alice (P0) holds the weights, Bob (P1) the input; everyone knows the shapes.
//!     let w = (party.id() == PartyId::P0).then(|| fx.encode_slice(&[0.5, -2.0, 1.0], &[3, 1]).unwrap());
//!     let x = (party.id() == PartyId::P1).then(|| fx.encode_slice(&[4.0, 1.0, 3.0], &[1, 3]).unwrap());
//!     let w = party.share_input(PartyId::P0, &[3, 1], w.as_ref())?;
//!     let x = party.share_input(PartyId::P1, &[1, 3], x.as_ref())?;
//!     let y = party.matmul_fixed(&x, &w).await?;      // one round, one matrix triple
//!     party.reveal_to(PartyId::P1, &y).await          // only Bob learns the result
//! })
//! .unwrap();
//! let y = fx.decode_tensor(&bob.unwrap());
//! assert!((y[[0, 0]] - 3.0).abs() < 1e-3); // 0.5·4 − 2·1 + 1·3
//! ```
#![deny(unsafe_code)]

pub mod approx;
pub mod compare;
pub mod correlations;
mod error;
pub mod fixed;
pub mod fss;
pub mod he;
pub mod ids;
pub mod ot;
pub mod party;
pub mod prg;
pub mod protocol;
pub mod ring;
pub mod share;
pub mod stats;
pub mod testing;
pub mod transport;
#[cfg(target_arch = "x86_64")]
mod vaes;

pub use correlations::{
    CorrelationSource, Correlations, DealerCorrelations, DealerSource, Material, Request, TestDealer, TestSource,
    TwoPartySource,
};
pub use error::{Error, Result};
pub use fixed::{FixedPoint, Truncation};
pub use party::{CorrelationMode, Party, PartyId, SessionConfig, SessionId};
pub use protocol::PreopenedWeights;
pub use ring::{Ring, RingTensor};
pub use share::AShare;
pub use stats::{OpStats, Stats};
pub use testing::{LocalConfig, run_in, run_parties, run_parties_with, run_two_parties};
pub use transport::{MemoryTransport, Transport, TransportError};
