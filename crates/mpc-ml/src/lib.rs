//! # mpc-ml — neural networks over Membrane's MPC core
//!
//! This crate will hold the layers, the public `Plan`, ONNX import and private training. Today it
//! holds [`plain`]: the plaintext `f64` reference of every operation, which the tests of
//! `mpc-proto` and of this crate compare the secure protocols against.
#![deny(unsafe_code)]

pub mod plain;
