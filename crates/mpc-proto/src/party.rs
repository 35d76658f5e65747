//! The party context: who I am, my channel to the others, my correlations, my statistics.
//!
//! A [`Party`] is created by [`Party::connect`], which runs session setup over the transport
//! with the [`CorrelationSource`] the caller chose: every party of the session sends a hello
//! with the [`SessionConfig`] and the source's name to the others (one round) and checks that
//! theirs is identical — a mismatch in plan hash, fixed-point format or source aborts the
//! session on every side before any share moves. The hellos also carry the fresh per-session
//! seeds: P0 → P1 the pairwise seed (zero-communication input sharing) and whatever the source
//! sends (with the [`DealerSource`], P2 → P0 `s0` and P2 → P1 `s1`: seed-compressed dealer
//! material).
//!
//! Every party then runs the same program: the protocol methods are in
//! [`protocol`](crate::party#protocols) `impl` blocks on `Party`. An error that leaves the
//! transcript out of step *poisons* the party (every later call fails with
//! [`Error::Poisoned`]) and tells the peers, best effort, that the session is aborted.
//!
//! # Protocols
//! Each protocol method documents: secret inputs, what is revealed, online rounds, online bytes
//! per element per computing party, correlations consumed, and error.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::compare::Comparisons;
use crate::correlations::{CorrelationSource, Correlations, DealerSource, TestSource, TwoPartySource};
use crate::error::{Error, Result};
use crate::fixed::FixedPoint;
use crate::prg::{Prg, Seed};
use crate::stats::Stats;
use crate::transport::{Channel, FrameKind, TrafficSnapshot, Transport};

pub use crate::ids::{PartyId, SessionId};

/// What all parties of a session must agree on before any share moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionConfig {
    /// The session id (frames of other sessions are rejected).
    pub session: SessionId,
    /// Hash of the public plan (the op sequence with shapes) the parties will run.
    pub plan_hash: [u8; 32],
    /// The fixed-point format.
    pub fixed: FixedPoint,
    /// How comparison-based operations run by default: method policy, the link the cost model
    /// assumes, and the comparison window ([`Party::set_comparisons`] changes them for a span
    /// of the program, e.g. one plan step).
    pub comparisons: Comparisons,
}

impl SessionConfig {
    /// A configuration with the default fixed-point format and comparison settings.
    pub fn new(session: SessionId, plan_hash: [u8; 32]) -> Self {
        Self::with_fixed(session, plan_hash, FixedPoint::default())
    }

    /// A configuration for `fixed`, with the widest comparison window for it and the
    /// [`Policy::Auto`](crate::compare::Policy::Auto) method choice on the default link.
    pub fn with_fixed(session: SessionId, plan_hash: [u8; 32], fixed: FixedPoint) -> Self {
        Self { session, plan_hash, fixed, comparisons: Comparisons::for_fixed(fixed) }
    }
}

/// The built-in correlation sources by name (for configurations and tests that pick one);
/// [`CorrelationMode::source`] makes the [`CorrelationSource`] to pass to [`Party::connect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorrelationMode {
    /// The seed-compressed dealer P2 over the transport ([`DealerSource`]; deployment, benchmarks).
    Dealer,
    /// The in-process ideal dealer with this seed ([`TestSource`]; unit tests of online phases). Insecure.
    Test(u64),
    /// No dealer: P0 and P1 make their correlations with oblivious transfer
    /// ([`TwoPartySource`]; a two-party session).
    TwoParty,
}

impl CorrelationMode {
    /// A fresh source of this kind for one party of one session.
    pub fn source(self) -> Box<dyn CorrelationSource> {
        match self {
            CorrelationMode::Dealer => Box::new(DealerSource::default()),
            CorrelationMode::Test(seed) => Box::new(TestSource(seed)),
            CorrelationMode::TwoParty => Box::new(TwoPartySource::default()),
        }
    }

    /// How many parties a session with this source has.
    pub fn parties(self) -> usize {
        self.source().parties().len()
    }
}

#[derive(Serialize, Deserialize)]
struct Hello {
    config: SessionConfig,
    /// The correlation source's name ([`CorrelationSource::name`]).
    correlations: String,
    /// P0 → P1: the pairwise seed (input masks, the helper's common randomness).
    pair: Option<[u8; 32]>,
    /// The seed the source sends this recipient ([`CorrelationSource::hello`]).
    source: Option<[u8; 32]>,
}

/// Decodes a session hello as [`Party::connect`] does (for fuzzing the decoder).
#[doc(hidden)]
pub fn decode_hello(bytes: &[u8]) -> bool {
    postcard::from_bytes::<Hello>(bytes).is_ok()
}

/// Stream ids inside one seed, so that a seed's uses never overlap.
pub(crate) mod streams {
    /// Dealer material.
    pub(crate) const MATERIAL: u64 = 1;
    /// P0–P1 input masks.
    pub(crate) const INPUT: u64 = 2;
    /// P0–P1 common randomness of the helper comparison (blinding, masks, rotations).
    pub(crate) const HELPER: u64 = 3;
}

/// One party's context in a session. Not `Clone`: a session has one transcript per party.
pub struct Party {
    pub(crate) id: PartyId,
    /// The parties of the session (the correlation source's).
    parties: &'static [PartyId],
    pub(crate) config: SessionConfig,
    pub(crate) ch: Channel,
    pub(crate) corr: Box<dyn Correlations>,
    /// P0–P1 pairwise PRG for input masks (`None` on the dealer).
    pub(crate) pair: Option<Prg>,
    /// P0–P1 common randomness for the helper comparison (`None` on the dealer).
    pub(crate) common: Option<Prg>,
    /// The comparison settings in force.
    pub(crate) cmp: Comparisons,
    /// How products are truncated.
    pub(crate) truncation: crate::fixed::Truncation,
    poisoned: bool,
    /// Running the offline (preprocessing) pass: shares are placeholders, nothing is opened.
    offline: bool,
}

impl std::fmt::Debug for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Party")
            .field("id", &self.id)
            .field("session", &self.config.session)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Party {
    /// Runs session setup over `transport` and returns the ready party, with its correlations
    /// from `source` (e.g. [`DealerSource`], or [`CorrelationMode::source`]).
    ///
    /// `rng` supplies this party's fresh seeds (the OS RNG in deployment). One round (plus the
    /// source's own setup, if it has one); fails with [`Error::ConfigMismatch`] if a peer's
    /// configuration or correlation source differs.
    pub async fn connect<R: rand_core::CryptoRng + Send>(
        transport: Arc<dyn Transport>,
        config: SessionConfig,
        mut source: Box<dyn CorrelationSource>,
        rng: &mut R,
    ) -> Result<Party> {
        let id = transport.local_id();
        config.comparisons.validate()?;
        let parties = source.parties();
        if !parties.contains(&id) {
            return Err(Error::InvalidInput(format!(
                "{id} is not a party of a session with the {} correlation source",
                source.name()
            )));
        }
        let mut ch = Channel::new(transport, config.session);
        // P0 makes the pairwise seed for P1; the source adds its own (the dealer's s0, s1).
        let pair = (id == PartyId::P0).then(|| Seed::random(rng));
        let source_seeds = source.hello(id, &mut || Seed::random(rng));
        let name = source.name();
        let others: Vec<PartyId> = parties.iter().copied().filter(|&p| p != id).collect();
        let result = async {
            for &p in &others {
                let hello = Hello {
                    config,
                    correlations: name.to_string(),
                    pair: pair.as_ref().filter(|_| p == PartyId::P1).map(|s| *s.as_bytes()),
                    source: source_seeds[p.index()].as_ref().map(|s| *s.as_bytes()),
                };
                let bytes = postcard::to_allocvec(&hello).expect("hello serialisation cannot fail");
                ch.send_bytes(p, FrameKind::Hello, &bytes).await?;
            }
            let mut pair_from_p0 = None;
            let mut received: [Option<Seed>; 3] = [None, None, None];
            for &p in &others {
                let bytes = ch.recv_bytes(p, FrameKind::Hello, None).await?;
                let hello: Hello = postcard::from_bytes(&bytes)
                    .map_err(|e| Error::Desync { peer: p, detail: format!("bad hello: {e}") })?;
                if hello.config != config {
                    return Err(Error::ConfigMismatch { peer: p, detail: describe_mismatch(&config, &hello.config) });
                }
                if hello.correlations != name {
                    return Err(Error::ConfigMismatch {
                        peer: p,
                        detail: format!("correlation source {name} vs {}", hello.correlations),
                    });
                }
                if p == PartyId::P0 {
                    pair_from_p0 = hello.pair.map(Seed::from_bytes);
                }
                received[p.index()] = hello.source.map(Seed::from_bytes);
            }
            ch.stats.record_round();
            let pair = match id {
                PartyId::P0 => pair.clone(),
                PartyId::P1 => Some(pair_from_p0.ok_or_else(|| Error::Desync {
                    peer: PartyId::P0,
                    detail: "hello without the pairwise seed".into(),
                })?),
                _ => None,
            };
            let corr = source.start(id, &mut ch, received).await?;
            Ok((pair, corr))
        }
        .await;
        let (pair, corr) = match result {
            Ok(r) => r,
            Err(e) => {
                ch.abort_after(&e).await;
                return Err(e);
            }
        };
        let common = pair.as_ref().map(|s| Prg::new(s, streams::HELPER));
        let pair = pair.map(|s| Prg::new(&s, streams::INPUT));
        Ok(Party {
            id,
            parties,
            config,
            ch,
            corr,
            pair,
            common,
            cmp: config.comparisons,
            truncation: Default::default(),
            poisoned: false,
            offline: false,
        })
    }

    /// This party's id.
    pub fn id(&self) -> PartyId {
        self.id
    }

    /// Whether the session has two parties only (no dealer).
    pub fn is_two_party(&self) -> bool {
        self.parties.len() == 2
    }

    /// Whether this party is the dealer.
    pub fn is_dealer(&self) -> bool {
        self.id.is_dealer()
    }

    /// The comparison settings in force (method policy, link model, window).
    pub fn comparisons(&self) -> Comparisons {
        self.cmp
    }

    /// How fixed-point products are truncated now.
    pub fn truncation(&self) -> crate::fixed::Truncation {
        self.truncation
    }

    /// Sets how the fixed-point products that follow are truncated (until set again). Part of
    /// the program, like [`Party::set_comparisons`]: every party makes the same call at the same
    /// point.
    pub fn set_truncation(&mut self, t: crate::fixed::Truncation) {
        self.truncation = t;
    }

    /// Sets the comparison settings for the operations that follow (until set again). Part of
    /// the program: every party must make the same call at the same point, as with any
    /// operation. A plan step that recorded its method and window sets them this way.
    pub fn set_comparisons(&mut self, c: Comparisons) -> Result<()> {
        c.validate()?;
        self.cmp = c;
        Ok(())
    }

    /// Agrees with the other two parties on the smallest of the three parties' `value`s —
    /// public numbers each brings, e.g. the largest micro-batch its memory allows. One round,
    /// 8 bytes to each peer (session-setup traffic).
    pub async fn agree_min(&mut self, value: u64) -> Result<u64> {
        let theirs = self.exchange_public(&value.to_le_bytes()).await?;
        Ok(theirs.iter().map(|b| u64::from_le_bytes(b[..].try_into().expect("8 bytes, checked"))).fold(value, u64::min))
    }

    /// Whether all three parties bring the same `value` (e.g. the hash of the job a
    /// preprocessed session is about to serve). One round, 32 bytes to each peer; every party
    /// sees all three values, so all three get the same answer.
    pub async fn agree_equal(&mut self, value: [u8; 32]) -> Result<bool> {
        Ok(self.exchange_public(&value).await?.iter().all(|b| b[..] == value))
    }

    /// Sends the same public bytes to both peers and receives theirs (of the same length),
    /// in one round; poisons the party and aborts the session on failure.
    async fn exchange_public(&mut self, value: &[u8]) -> Result<Vec<Vec<u8>>> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let r = async {
            let others: Vec<PartyId> = self.parties.iter().copied().filter(|&p| p != self.id).collect();
            for &p in &others {
                self.ch.send_bytes(p, FrameKind::Hello, value).await?;
            }
            let mut theirs = Vec::with_capacity(2);
            for &p in &others {
                theirs.push(self.ch.recv_bytes(p, FrameKind::Hello, Some(value.len())).await?);
            }
            self.ch.stats.record_round();
            Ok(theirs)
        }
        .await;
        if let Err(e) = &r {
            self.poisoned = true;
            self.ch.abort_after(e).await;
        }
        r
    }

    /// Whether the offline (preprocessing) pass is running ([`Party::begin_offline`]).
    pub(crate) fn in_offline_pass(&self) -> bool {
        self.offline
    }

    /// The session configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The session's fixed-point format.
    pub fn fixed(&self) -> FixedPoint {
        self.config.fixed
    }

    /// Rounds and payload bytes so far, in total and per operation.
    pub fn stats(&self) -> &Stats {
        &self.ch.stats
    }

    /// Whole-frame traffic of the underlying transport.
    pub fn traffic(&self) -> TrafficSnapshot {
        self.ch.traffic()
    }

    /// Whether protocol steps run on shape-only placeholders here: always on the dealer, and on
    /// P0/P1 during the offline pass.
    pub fn placeholder(&self) -> bool {
        self.id.is_dealer() || self.offline
    }

    /// Starts the offline (preprocessing) pass. Run the program once after this call: every
    /// correlation it needs is fetched (the dealer generates and sends it; P0 and P1 expand
    /// their seeds and receive the dealer's corrections and keys) and stored in order, while
    /// shares are placeholders and nothing is opened or revealed. Then call
    /// [`Party::begin_online`] and run the **same** program again: it consumes the stored
    /// material and only its online traffic remains. All three parties must do the same.
    pub fn begin_offline(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let inner = std::mem::replace(&mut self.corr, Box::new(crate::correlations::Pool::empty()));
        self.corr = Box::new(crate::correlations::Pool::recording(inner));
        self.offline = true;
        Ok(())
    }

    /// Ends the offline pass: the program's second run replays the stored material. A request
    /// that differs from what was recorded (another op, another shape) is an
    /// [`Error::Desync`] with the dealer.
    pub fn begin_online(&mut self) -> Result<()> {
        if !self.offline {
            return Err(Error::InvalidInput("begin_online without begin_offline".into()));
        }
        self.corr.replay()?;
        self.offline = false;
        Ok(())
    }

    /// Whether an earlier error poisoned this party.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Aborts the session: tells the peers (best effort) and poisons this party.
    pub async fn abort(&mut self) {
        if !self.poisoned {
            self.poisoned = true;
            self.ch.send_abort().await;
        }
    }

    /// Starts a top-level protocol operation.
    pub(crate) fn begin(&mut self, op: &'static str) -> Result<bool> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        Ok(self.ch.stats.enter(op))
    }

    /// Ends an operation started with [`Party::begin`], poisoning the party on a transcript
    /// error.
    pub(crate) async fn finish<T>(&mut self, top: bool, r: Result<T>) -> Result<T> {
        self.ch.stats.exit(top);
        if let Err(e) = &r
            && e.poisons()
            && !self.poisoned
        {
            self.poisoned = true;
            self.ch.abort_after(e).await;
        }
        r
    }
}

fn describe_mismatch(mine: &SessionConfig, theirs: &SessionConfig) -> String {
    if mine.session != theirs.session {
        format!("session {} vs {}", mine.session, theirs.session)
    } else if mine.plan_hash != theirs.plan_hash {
        "plan hash differs: the parties would run different plans".into()
    } else if mine.comparisons != theirs.comparisons {
        format!("comparison settings {:?} vs {:?}", mine.comparisons, theirs.comparisons)
    } else {
        format!("fixed point {:?} vs {:?}", mine.fixed, theirs.fixed)
    }
}
