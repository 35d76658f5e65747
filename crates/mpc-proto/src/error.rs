//! Errors of the MPC core.

use crate::ids::PartyId;
use crate::transport::TransportError;

/// Result alias for the MPC core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and whose fault it is.
///
/// A party that returns any error other than [`Error::ShapeMismatch`], [`Error::EncodeOverflow`]
/// or [`Error::InvalidInput`] is *poisoned*: every later operation fails with
/// [`Error::Poisoned`], because its transcript can no longer be trusted to be in step with the
/// other parties.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Operands have incompatible shapes. The caller's fault (or a plan that does not match
    /// the data).
    #[error("{op}: shape mismatch, {lhs:?} vs {rhs:?}")]
    ShapeMismatch {
        /// The operation that rejected the shapes.
        op: &'static str,
        /// Shape of the first operand.
        lhs: Vec<usize>,
        /// Shape of the second operand (or the expected shape).
        rhs: Vec<usize>,
    },
    /// A real value does not fit the fixed-point format. The caller's fault: scale the data or
    /// raise `int_bits`.
    #[error("value {value} does not fit fixed point with {int_bits} integer and {frac_bits} fractional bits")]
    EncodeOverflow {
        /// The offending value.
        value: f64,
        /// Integer bits of the format.
        int_bits: u32,
        /// Fractional bits of the format.
        frac_bits: u32,
    },
    /// Input the caller supplied is unusable (for example, the owner passed no value).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A peer sent a frame that is not the one the protocol expects next (wrong session,
    /// sequence number, kind or length). The peer's fault, or a transport that lost/reordered data.
    #[error("desync with {peer}: {detail}")]
    Desync {
        /// The peer whose frame was wrong.
        peer: PartyId,
        /// What was expected and what arrived.
        detail: String,
    },
    /// The parties do not agree on the session configuration (plan hash, fixed-point format).
    #[error("session configuration mismatch with {peer}: {detail}")]
    ConfigMismatch {
        /// The peer that disagrees.
        peer: PartyId,
        /// What differs.
        detail: String,
    },
    /// A peer aborted the session (it sent an abort frame or closed its channel).
    #[error("{0} aborted the session")]
    PeerAborted(PartyId),
    /// A peer ended the session because it lost another: `reporter`'s abort frame named
    /// `lost` (e.g. the dealer saw P0's connection drop before P1 did).
    #[error("{reporter} ended the session after losing {lost}")]
    PeerLost {
        /// The peer that sent the abort.
        reporter: PartyId,
        /// The peer it lost.
        lost: PartyId,
    },
    /// The operation needs a computing party (P0 or P1) but runs on the dealer, or vice versa.
    #[error("{op} is not available to {party}")]
    WrongParty {
        /// The operation.
        op: &'static str,
        /// The party it was called on.
        party: PartyId,
    },
    /// The session's correlation source cannot supply a kind of material (every party's source
    /// refuses the same request, before any traffic for it).
    #[error("the {correlations} correlation source does not supply {what}")]
    Unsupported {
        /// The source's name.
        correlations: &'static str,
        /// The material asked for.
        what: &'static str,
    },
    /// An earlier error poisoned this party; the session must be restarted.
    #[error("party is poisoned by an earlier error")]
    Poisoned,
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl Error {
    /// Whether this error leaves the party's transcript out of step with its peers.
    pub(crate) fn poisons(&self) -> bool {
        !matches!(self, Error::ShapeMismatch { .. } | Error::EncodeOverflow { .. } | Error::InvalidInput(_))
    }
}
