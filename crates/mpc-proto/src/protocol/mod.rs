//! The protocols, as `impl Party` blocks. See [`Party`](crate::Party) for the doc template.

pub mod beaver;
mod gmw;
mod io;
mod local;
mod nonlinear;
mod trunc;

pub use beaver::PreopenedWeights;
pub(crate) use gmw::and_gates as gmw_and_gates;
pub use nonlinear::{SPLINE_CHUNK_POINTS, spline_chunk_len, spline_chunks};
