//! # Membrane
//!
//! Machine learning on data and models that their owners will not show each other: a model
//! owner (P0) and a data owner (P1) evaluate neural networks on additive secret shares over
//! Z_2^64, with a non-colluding dealer (P2) supplying correlated randomness.
//!
//! This facade re-exports the workspace crates:
//! * [`proto`] — `mpc-proto`, the MPC core (ring, fixed point, shares, transports,
//!   correlations, protocols, the in-process runner);
//! * [`ml`] — `mpc-ml`, networks on top of it (today: the plaintext reference).
#![deny(unsafe_code)]

pub use mpc_ml as ml;
pub use mpc_proto as proto;
