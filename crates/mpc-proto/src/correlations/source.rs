//! Where a session's correlated randomness comes from: the caller of
//! [`Party::connect`](crate::Party::connect) chooses a [`CorrelationSource`]; the session hello
//! checks that every party chose the same one and carries the seeds the source needs.

use crate::error::{Error, Result};
use crate::ids::PartyId;
use crate::party::streams;
use crate::prg::{Prg, Seed};
use crate::transport::{BoxFuture, Channel};

use super::{Correlations, DealerCorrelations, TestDealer};

/// A kind of correlation source, before the session exists. [`Party::connect`](crate::Party::connect)
/// asks it for the seeds this party's hellos carry, checks that the peers named the same source,
/// and then [starts](CorrelationSource::start) it with the seeds they sent.
pub trait CorrelationSource: Send {
    /// The source's name; every party of a session must name the same one (a mismatch is a
    /// [`Error::ConfigMismatch`] before any share moves).
    fn name(&self) -> &'static str;

    /// The parties of a session with this source: all three by default (the dealer is P2).
    fn parties(&self) -> &'static [PartyId] {
        &PartyId::ALL
    }

    /// The seeds this party's hellos carry for the source, indexed by recipient (e.g. the
    /// dealer's `s0` for P0 and `s1` for P1); `fresh` draws a fresh seed from the caller's
    /// RNG. The source keeps what it needs for [`CorrelationSource::start`]. None by default.
    fn hello(&mut self, _me: PartyId, _fresh: &mut dyn FnMut() -> Seed) -> [Option<Seed>; 3] {
        [None, None, None]
    }

    /// This party's correlations, from the seeds the peers' hellos carried (indexed by sender).
    /// A source with an interactive setup (base OTs, key exchange) runs it here on `ch`.
    fn start<'a>(
        self: Box<Self>,
        me: PartyId,
        ch: &'a mut Channel,
        received: [Option<Seed>; 3],
    ) -> BoxFuture<'a, Result<Box<dyn Correlations>>>;
}

/// The seed-compressed dealer P2 ([`DealerCorrelations`]): the deployed three-party source.
/// The dealer draws `s0`, `s1` and a private seed; its hellos give `s0` to P0 and `s1` to P1.
#[derive(Default)]
pub struct DealerSource {
    /// The dealer's seeds `[s0, s1, private]` once drawn (P2 only).
    seeds: Option<[Seed; 3]>,
}

impl std::fmt::Debug for DealerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DealerSource(..)")
    }
}

impl CorrelationSource for DealerSource {
    fn name(&self) -> &'static str {
        "dealer"
    }

    fn hello(&mut self, me: PartyId, fresh: &mut dyn FnMut() -> Seed) -> [Option<Seed>; 3] {
        if !me.is_dealer() {
            return [None, None, None];
        }
        let seeds = [fresh(), fresh(), fresh()];
        // The third seed is the dealer's own (FSS key generation) and never sent.
        let out = [Some(seeds[0].clone()), Some(seeds[1].clone()), None];
        self.seeds = Some(seeds);
        out
    }

    fn start<'a>(
        self: Box<Self>,
        me: PartyId,
        _ch: &'a mut Channel,
        received: [Option<Seed>; 3],
    ) -> BoxFuture<'a, Result<Box<dyn Correlations>>> {
        Box::pin(async move {
            let material = |s: &Seed| Prg::new(s, streams::MATERIAL);
            let from_dealer = || {
                received[PartyId::P2.index()].clone().ok_or_else(|| Error::Desync {
                    peer: PartyId::P2,
                    detail: "the dealer's hello carries no seed".into(),
                })
            };
            let corr: Box<dyn Correlations> = match me {
                PartyId::P0 => Box::new(DealerCorrelations::for_p0(material(&from_dealer()?))),
                PartyId::P1 => Box::new(DealerCorrelations::for_p1(material(&from_dealer()?))),
                _ => {
                    let [s0, s1, private] = self.seeds.expect("the dealer drew its seeds in its hello");
                    Box::new(DealerCorrelations::for_dealer(material(&s0), material(&s1), material(&private)))
                }
            };
            Ok(corr)
        })
    }
}

/// The in-process ideal dealer ([`TestDealer`]) with a seed every party knows: for unit tests
/// of online phases (nothing is sent). Insecure.
#[derive(Clone, Copy, Debug)]
pub struct TestSource(pub u64);

impl CorrelationSource for TestSource {
    fn name(&self) -> &'static str {
        "test"
    }

    fn start<'a>(
        self: Box<Self>,
        me: PartyId,
        _ch: &'a mut Channel,
        _received: [Option<Seed>; 3],
    ) -> BoxFuture<'a, Result<Box<dyn Correlations>>> {
        Box::pin(async move { Ok(Box::new(TestDealer::new(me, self.0)) as Box<dyn Correlations>) })
    }
}
