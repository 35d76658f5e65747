//! The identifiers every module shares: who a party is and which session a frame belongs to.
//!
//! A leaf module (it imports nothing from this crate), so that errors, transports, rings and
//! correlations can name parties without depending on [`crate::party`], which depends on them.

use serde::{Deserialize, Serialize};

/// A party of the 2pc-dealer model: `P0` (model owner), `P1` (data owner), `P2` (dealer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartyId(pub u8);

impl PartyId {
    /// The model owner.
    pub const P0: PartyId = PartyId(0);
    /// The data owner, who reconstructs outputs.
    pub const P1: PartyId = PartyId(1);
    /// The dealer.
    pub const P2: PartyId = PartyId(2);
    /// All three, in order.
    pub const ALL: [PartyId; 3] = [Self::P0, Self::P1, Self::P2];

    /// Index 0..=2.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Whether this is the dealer.
    pub fn is_dealer(self) -> bool {
        self == Self::P2
    }

    /// The other computing party (P0 ↔ P1). Meaningless for the dealer.
    pub fn peer(self) -> PartyId {
        if self == Self::P0 { Self::P1 } else { Self::P0 }
    }
}

impl std::fmt::Display for PartyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P{}", self.0)
    }
}

/// A session's random 128-bit identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u128);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}
