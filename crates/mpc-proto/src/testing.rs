//! Running the parties in one process.
//!
//! [`run_parties`] starts P0, P1 and the dealer P2 as three threads over a
//! [`MemoryTransport`] mesh, runs session setup, and calls the same program on each party's
//! [`Party`] — exactly what `party-node` does over QUIC, minus the network. Use it to test a
//! protocol and to prototype new ones against the public API. [`run_two_parties`] does the
//! same for a dealer-free two-party session, and [`run_in`] runs either, by the config's mode.

use std::future::Future;
use std::sync::Arc;

use rand_chacha::ChaCha12Rng;
use rand_core::SeedableRng;

use crate::compare::Comparisons;
use crate::error::{Error, Result};
use crate::fixed::FixedPoint;
use crate::party::{CorrelationMode, Party, SessionConfig, SessionId};
use crate::transport::{MemoryTransport, Transport};

/// Options for [`run_parties_with`].
#[derive(Clone, Copy, Debug)]
pub struct LocalConfig {
    /// Seeds each party's session-setup RNG (so runs are reproducible).
    pub seed: u64,
    /// Fixed-point format.
    pub fixed: FixedPoint,
    /// Correlation source; [`CorrelationMode::Dealer`] by default.
    pub correlations: CorrelationMode,
    /// Comparison settings; `None`: the defaults for `fixed` ([`Comparisons::for_fixed`]).
    pub comparisons: Option<Comparisons>,
}

impl LocalConfig {
    /// Defaults with the given seed.
    pub fn new(seed: u64) -> Self {
        Self { seed, fixed: FixedPoint::default(), correlations: CorrelationMode::Dealer, comparisons: None }
    }
}

/// Runs `program` on all three parties (dealer-backed correlations, default fixed point) and
/// returns their results in party order. If any party fails, returns the root-cause error (a
/// failure other than "a peer aborted" when there is one).
pub fn run_parties<F, Fut, T>(seed: u64, program: F) -> Result<[T; 3]>
where
    F: Fn(Party) -> Fut + Sync,
    Fut: Future<Output = Result<T>>,
    T: Send,
{
    run_parties_with(LocalConfig::new(seed), program)
}

/// [`run_parties`] with options.
pub fn run_parties_with<F, Fut, T>(cfg: LocalConfig, program: F) -> Result<[T; 3]>
where
    F: Fn(Party) -> Fut + Sync,
    Fut: Future<Output = Result<T>>,
    T: Send,
{
    run_parties_on(memory_mesh(3), cfg, program)
}

/// Runs `program` on three parties over the given transports (index = party id).
pub fn run_parties_on<F, Fut, T>(transports: Vec<Arc<dyn Transport>>, cfg: LocalConfig, program: F) -> Result<[T; 3]>
where
    F: Fn(Party) -> Fut + Sync,
    Fut: Future<Output = Result<T>>,
    T: Send,
{
    assert_eq!(transports.len(), 3, "run_parties_on: one transport per party");
    if cfg.correlations.parties() != 3 {
        return Err(Error::InvalidInput(format!(
            "{:?} correlations make a two-party session: use run_two_parties",
            cfg.correlations
        )));
    }
    let oks = run_on(transports, cfg, program)?;
    Ok(oks.try_into().map_err(|_| ()).expect("three results"))
}

/// Runs `program` on P0 and P1 of a two-party session (no dealer: the
/// [`TwoPartySource`](crate::correlations::TwoPartySource)'s OT-made correlations), as threads
/// over an in-memory pair, and returns their results in party order. `cfg.correlations` is
/// ignored.
pub fn run_two_parties<F, Fut, T>(cfg: LocalConfig, program: F) -> Result<[T; 2]>
where
    F: Fn(Party) -> Fut + Sync,
    Fut: Future<Output = Result<T>>,
    T: Send,
{
    run_two_parties_on(memory_mesh(2), cfg, program)
}

/// [`run_two_parties`] over the given transports (index = party id), e.g. recording ones.
pub fn run_two_parties_on<F, Fut, T>(
    transports: Vec<Arc<dyn Transport>>,
    cfg: LocalConfig,
    program: F,
) -> Result<[T; 2]>
where
    F: Fn(Party) -> Fut + Sync,
    Fut: Future<Output = Result<T>>,
    T: Send,
{
    assert_eq!(transports.len(), 2, "run_two_parties_on: one transport per party");
    let cfg = LocalConfig { correlations: CorrelationMode::TwoParty, ..cfg };
    let oks = run_on(transports, cfg, program)?;
    Ok(oks.try_into().map_err(|_| ()).expect("two results"))
}

/// Runs `program` on every party of a session with `cfg.correlations` — three parties with a
/// dealer, two without — and returns their results in party order (P0 at 0, P1 at 1). Lets one
/// test body cover every mode.
pub fn run_in<F, Fut, T>(cfg: LocalConfig, program: F) -> Result<Vec<T>>
where
    F: Fn(Party) -> Fut + Sync,
    Fut: Future<Output = Result<T>>,
    T: Send,
{
    run_on(memory_mesh(cfg.correlations.parties()), cfg, program)
}

/// Runs `program` on one party per transport (index = party id); the results in party order, or
/// the root-cause error.
// A test harness: the parties run as threads (clippy.toml allows it here only).
#[allow(clippy::disallowed_methods)]
fn run_on<F, Fut, T>(transports: Vec<Arc<dyn Transport>>, cfg: LocalConfig, program: F) -> Result<Vec<T>>
where
    F: Fn(Party) -> Fut + Sync,
    Fut: Future<Output = Result<T>>,
    T: Send,
{
    let session = SessionConfig {
        session: SessionId(u128::from(cfg.seed) << 64 | 0x6d656d62),
        plan_hash: [0; 32],
        fixed: cfg.fixed,
        comparisons: cfg.comparisons.unwrap_or_else(|| Comparisons::for_fixed(cfg.fixed)),
    };
    let results: Vec<Result<T>> = std::thread::scope(|s| {
        let handles: Vec<_> = transports
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let program = &program;
                s.spawn(move || {
                    futures::executor::block_on(async move {
                        let mut rng = ChaCha12Rng::seed_from_u64(cfg.seed.wrapping_mul(3).wrapping_add(i as u64));
                        let party = Party::connect(t, session, cfg.correlations.source(), &mut rng).await?;
                        program(party).await
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("party thread panicked")).collect()
    });
    let mut first_err: Option<Error> = None;
    let mut oks = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(v) => oks.push(v),
            Err(e) => {
                let relayed = |e: &Error| matches!(e, Error::PeerAborted(_) | Error::PeerLost { .. });
                let root = !relayed(&e);
                if first_err.as_ref().is_none_or(|f| root && relayed(f)) {
                    first_err = Some(e);
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(oks),
    }
}

/// `n` connected in-memory transports (index = party id).
fn memory_mesh(n: usize) -> Vec<Arc<dyn Transport>> {
    MemoryTransport::mesh(n).into_iter().map(|t| Arc::new(t) as Arc<dyn Transport>).collect()
}

/// A channel on an unconnected in-memory endpoint, for calling a correlation source that needs
/// no traffic (the [`crate::TestDealer`]) outside a session.
#[doc(hidden)]
pub fn detached_channel() -> crate::transport::Channel {
    let t = MemoryTransport::mesh(1).pop().expect("one endpoint");
    crate::transport::Channel::new(Arc::new(t), SessionId(0))
}

/// Two connected channels (P0's and P1's) of session `session` over the in-memory transport,
/// for running two-party sub-protocols such as [`crate::ot`] outside a three-party session.
pub fn channel_pair(session: SessionId) -> (crate::transport::Channel, crate::transport::Channel) {
    let mut ts = MemoryTransport::mesh(2);
    let t1 = ts.pop().expect("two endpoints");
    let t0 = ts.pop().expect("two endpoints");
    (crate::transport::Channel::new(Arc::new(t0), session), crate::transport::Channel::new(Arc::new(t1), session))
}
