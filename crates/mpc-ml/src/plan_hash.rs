//! The one way a public plan is hashed: what the parties compare at session setup.
//!
//! `SHA-256("membrane/plan/v1" ‖ 0 ‖ domain ‖ 0 ‖ postcard(plan))`: a fixed prefix, a domain
//! tag naming the kind of plan (so two kinds of plan never share a hash even if they encoded to
//! the same bytes), and the plan's canonical postcard encoding (field order fixed by the type,
//! no map-ordering or float-formatting ambiguity as with JSON). Every plan hash in the
//! workspace — inference, training, analytics, the daemon's matrix-product jobs, the benchmark
//! workloads — goes through [`plan_hash()`].

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The hash of `plan` under `domain` (see the module docs).
pub fn plan_hash<T: Serialize + ?Sized>(domain: &str, plan: &T) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"membrane/plan/v1\0");
    h.update(domain.as_bytes());
    h.update([0u8]);
    h.update(postcard::to_allocvec(plan).expect("plans serialise"));
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate_equal_encodings() {
        assert_ne!(plan_hash("a", &1u32), plan_hash("b", &1u32));
        assert_ne!(plan_hash("a", &1u32), plan_hash("a", &2u32));
        assert_eq!(plan_hash("a", &(1u8, "x")), plan_hash("a", &(1u8, "x")));
        // The tag is delimited: "ab" + [] differs from "a" + ["b"-like bytes].
        assert_ne!(plan_hash("ab", &()), plan_hash("a", &b'b'));
    }
}
