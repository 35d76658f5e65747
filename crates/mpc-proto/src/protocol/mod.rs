//! The protocols, as `impl Party` blocks. See [`Party`](crate::Party) for the doc template.

pub mod beaver;
mod io;
mod local;
mod nonlinear;

pub use beaver::PreopenedWeights;
