//! Errors of the ML layer.

/// A model or plan that cannot be used. The model owner's (or the caller's) fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A layer does not fit the shape flowing into it.
    #[error("layer {layer} on input {input:?}: {detail}")]
    Shape {
        /// The layer's kind.
        layer: String,
        /// The input shape it received.
        input: Vec<usize>,
        /// What is wrong.
        detail: String,
    },
    /// Anything else about the model or the request.
    #[error("{0}")]
    Invalid(String),
    /// The secure computation failed.
    #[error(transparent)]
    Mpc(#[from] mpc_proto::Error),
}

impl From<ModelError> for mpc_proto::Error {
    /// Lets ML errors flow through code that speaks the core's error type (e.g. the closures of
    /// `run_parties`), keeping MPC errors as they are.
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Mpc(e) => e,
            other => mpc_proto::Error::InvalidInput(other.to_string()),
        }
    }
}
