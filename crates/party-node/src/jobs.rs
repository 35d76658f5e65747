//! Jobs: one MPC session each, run by all three nodes under the same random 128-bit id.
//!
//! Until the ML layer lands, a job is a core workload: Bob's private `m×k` matrix times Alice's
//! private `k×n` matrix, revealed to Bob only, with the dealer supplying the Beaver triple. Each
//! organisation submits the job to its own node (same id, same shapes; Alice and Bob add the
//! seed of their private input). The shapes form the public plan; its hash is checked by
//! `Party::connect` before any share moves, so nodes that disagree fail cleanly on every side.
//!
//! Records are kept in the [`Store`] (`jobs/<id>`), rewritten atomically at each state change;
//! a job that was running when the node stopped is reported as interrupted after a restart.
//! Computing parties keep their share of the product (`shares/<id>`), Bob the revealed product
//! (`results/<id>`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use mpc_proto::prg::Prg;
use mpc_proto::{Error as MpcError, FixedPoint, Party, PartyId, RingTensor, SessionConfig, SessionId};
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::config::Role;
use crate::mesh::{Mesh, StopNotice};
use crate::pool::{PoolKey, WarmPool};
use crate::store::Store;

/// Largest matrix side a job accepts.
pub const MAX_DIM: usize = 4096;

/// A job id: 128 random bits, written as 32 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u128);

impl JobId {
    /// A fresh random id.
    pub fn random() -> JobId {
        let mut b = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("OS randomness");
        JobId(u128::from_le_bytes(b))
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for JobId {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<JobId> {
        ensure!(s.len() == 32, "job id {s:?} must be 32 hex digits");
        Ok(JobId(u128::from_str_radix(s, 16).with_context(|| format!("job id {s:?} must be 32 hex digits"))?))
    }
}

/// What a job computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Bob's seeded m×k matrix times Alice's seeded k×n matrix, revealed to Bob.
    #[default]
    Matmul,
    /// Private inference of a published model on Bob's input.
    Predict,
    /// Private training on Bob's data (see `train`).
    Train,
    /// Statistics of Bob's (and Alice's) rows, revealed to Bob (see `analyze`).
    Analyze,
}

/// A job request as submitted to one node for the scripted path, where every organisation
/// submits the same job id to its own node (`POST /v1/jobs`). The prediction service
/// ([`crate::service`], `POST /v1/requests`) needs only the requesting organisation's request.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobRequest {
    /// Bob's seeded m×k matrix times Alice's seeded k×n matrix, revealed to Bob.
    Matmul(MatmulJob),
    /// Private inference of a published model on Bob's input.
    Predict(PredictJob),
    /// Private training on Bob's data.
    Train(TrainJob),
    /// Statistics of Bob's (and Alice's) rows, revealed to Bob.
    Analyze(AnalyzeJob),
}

/// A matmul job ([`JobRequest::Matmul`]).
#[derive(Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatmulJob {
    /// The job id (32 hex digits); omitted, the node draws one (give it to the other nodes).
    #[serde(default)]
    pub id: Option<String>,
    /// Rows of Bob's matrix.
    pub m: usize,
    /// Columns of Bob's matrix = rows of Alice's.
    pub k: usize,
    /// Columns of Alice's matrix.
    pub n: usize,
    /// Alice and Bob: seed of this party's private input matrix (secret; never logged or
    /// stored).
    #[serde(default)]
    pub seed: Option<u64>,
}

impl std::fmt::Debug for MatmulJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatmulJob")
            .field("id", &self.id)
            .field("shape", &(self.m, self.k, self.n))
            .finish_non_exhaustive()
    }
}

/// A prediction job ([`JobRequest::Predict`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictJob {
    /// The job id (see [`MatmulJob::id`]).
    #[serde(default)]
    pub id: Option<String>,
    /// The published model's name.
    pub model: String,
    /// Alice and the dealer: number of input rows (Bob's comes from his input file).
    #[serde(default)]
    pub batch: Option<usize>,
    /// Bob: input file (.npy or .csv) on Bob's machine.
    #[serde(default)]
    pub input: Option<String>,
    /// Bob: where to write the output (.npy or .csv).
    #[serde(default)]
    pub output: Option<String>,
    /// At most this many rows per micro-batch at this node (default: what `[limits]
    /// memory_mib` allows). The job uses the smallest of the three nodes' limits.
    #[serde(default)]
    pub micro_batch: Option<usize>,
}

/// A training job ([`JobRequest::Train`]).
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainJob {
    /// The job id (see [`MatmulJob::id`]).
    #[serde(default)]
    pub id: Option<String>,
    /// The training parameters.
    pub train: crate::ml::TrainRequest,
}

/// An analytics job ([`JobRequest::Analyze`]).
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeJob {
    /// The job id (see [`MatmulJob::id`]).
    #[serde(default)]
    pub id: Option<String>,
    /// The statistics and data.
    pub analyze: crate::ml::AnalyzeRequest,
}

impl JobRequest {
    /// A matmul request.
    pub fn matmul(id: Option<String>, m: usize, k: usize, n: usize, seed: Option<u64>) -> Self {
        JobRequest::Matmul(MatmulJob { id, m, k, n, seed })
    }

    /// The job id the request gives, if any.
    pub fn id(&self) -> Option<&str> {
        match self {
            JobRequest::Matmul(j) => j.id.as_deref(),
            JobRequest::Predict(j) => j.id.as_deref(),
            JobRequest::Train(j) => j.id.as_deref(),
            JobRequest::Analyze(j) => j.id.as_deref(),
        }
    }

    /// What it computes.
    pub fn kind(&self) -> JobKind {
        match self {
            JobRequest::Matmul(_) => JobKind::Matmul,
            JobRequest::Predict(_) => JobKind::Predict,
            JobRequest::Train(_) => JobKind::Train,
            JobRequest::Analyze(_) => JobKind::Analyze,
        }
    }
}

/// The public part of a job: what all three nodes must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Rows of Bob's matrix.
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of Alice's matrix.
    pub n: usize,
}

impl Plan {
    /// The plan's hash ([`mpc_ml::plan_hash()`], domain `matmul`).
    pub fn hash(&self) -> [u8; 32] {
        mpc_ml::plan_hash("matmul", self)
    }
}

/// The public description of a job, as reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobPlan {
    /// See [`JobKind::Matmul`].
    Matmul {
        /// Rows of Bob's matrix.
        m: usize,
        /// Inner dimension.
        k: usize,
        /// Columns of Alice's matrix.
        n: usize,
    },
    /// See [`JobKind::Predict`].
    Predict {
        /// Model name.
        model: String,
        /// Batch size.
        batch: usize,
        /// Hex SHA-256 of the plan the parties agreed on.
        plan_hash: String,
    },
    /// See [`JobKind::Train`].
    Train {
        /// The public training plan.
        #[schemars(with = "serde_json::Value")]
        plan: mpc_ml::train::TrainPlan,
        /// Hex SHA-256 of it.
        plan_hash: String,
    },
    /// See [`JobKind::Analyze`].
    Analyze {
        /// The public analytics plan (row counts, column names, statistics, bin edges).
        #[schemars(with = "serde_json::Value")]
        plan: mpc_ml::analytics::AnalyticsPlan,
        /// Hex SHA-256 of it.
        plan_hash: String,
    },
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Proposed to the peers ([`crate::service`]); waiting for their decisions.
    Proposed,
    /// A peer holds the proposal for its organisation's manual approval.
    Held,
    /// A peer refused the proposal; `error` names the rule.
    Refused,
    /// Waiting for the peers to join.
    Joining,
    /// Session set up; protocol running.
    Running,
    /// Finished.
    Done,
    /// Failed; see `error`.
    Failed,
    /// The node stopped while the job ran.
    Interrupted,
}

impl JobState {
    /// Whether the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Interrupted | JobState::Refused)
    }
}

/// Counters of one operation, from `party.stats()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpCounters {
    /// Top-level calls.
    pub calls: u64,
    /// Online rounds.
    pub rounds: u64,
    /// Online payload bytes sent.
    pub online_sent: u64,
    /// Online payload bytes received.
    pub online_recv: u64,
    /// Dealer-material bytes sent.
    pub offline_sent: u64,
    /// Dealer-material bytes received.
    pub offline_recv: u64,
}

impl From<mpc_proto::OpStats> for OpCounters {
    fn from(s: mpc_proto::OpStats) -> Self {
        OpCounters {
            calls: s.calls,
            rounds: s.rounds,
            online_sent: s.online_sent,
            online_recv: s.online_recv,
            offline_sent: s.offline_sent,
            offline_recv: s.offline_recv,
        }
    }
}

/// How far a prediction is, in rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RowProgress {
    /// Rows done.
    pub done: u64,
    /// Rows in all.
    pub total: u64,
    /// Rows per micro-batch (the smallest the three nodes' memory budgets allow).
    pub micro_batch: u64,
    /// Rows per second so far (from the first micro-batch's start).
    pub per_second: f64,
    /// Seconds left at that rate.
    pub eta_s: f64,
    /// Rows served by a job preprocessed ahead ([`crate::pool`]): the job ran only its online
    /// pass for them.
    #[serde(default)]
    pub from_pool: u64,
}

/// What the node reports about a job.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobRecord {
    /// Job id.
    pub id: String,
    /// The public plan.
    pub plan: JobPlan,
    /// State.
    pub state: JobState,
    /// Steps done out of `steps_total`.
    pub steps_done: u32,
    /// Number of steps.
    pub steps_total: u32,
    /// The step in progress or last done.
    pub step: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Submission time, Unix milliseconds.
    pub created_unix_ms: u64,
    /// End time, Unix milliseconds.
    pub finished_unix_ms: Option<u64>,
    /// Totals over the session.
    pub total: OpCounters,
    /// Per top-level operation.
    pub ops: BTreeMap<String, OpCounters>,
    /// Whole-frame bytes sent and received on the transport (framing included).
    pub wire_sent: u64,
    /// See `wire_sent`.
    pub wire_recv: u64,
    /// Predict: per-layer time, rounds and bytes at this node.
    #[serde(default)]
    pub layers: Vec<crate::ml::LayerRecord>,
    /// Train, Bob with `report_loss`: the loss estimate after each epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loss: Vec<f64>,
    /// Train: steps done and in all, for progress bars.
    #[serde(default)]
    pub progress: Option<[u64; 2]>,
    /// Predict: rows done, throughput and time left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<RowProgress>,
    /// Train, Bob: metrics of the trained model (only if it was revealed to him). Analyze,
    /// Bob: the statistics.
    #[serde(default)]
    pub metrics: Option<serde_json::Value>,
    /// Seconds from submission at this node to the job's end (microsecond resolution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// A job this node proposed: each peer's decision (`accepted`, `held: …`, `refused: …`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub decisions: BTreeMap<String, String>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The node's jobs.
pub struct Jobs {
    me: PartyId,
    store: Arc<Store>,
    records: Mutex<BTreeMap<JobId, JobRecord>>,
    limits: crate::config::Limits,
    /// The consortium's mode: where each session's correlations come from.
    mode: crate::config::Mode,
    pool: WarmPool,
    /// When each unfinished job's record was last written, in which state.
    persisted: Mutex<std::collections::HashMap<JobId, (JobState, std::time::Instant)>>,
    /// Called with each job's final record ([`Jobs::on_finish`]).
    finished: std::sync::OnceLock<FinishHook>,
}

type FinishHook = Box<dyn Fn(&JobRecord) + Send + Sync>;

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Jobs({})", self.me)
    }
}

/// Working set (plan estimate) up to which a prediction runs as a runtime task.
const SMALL_JOB_BYTES: u64 = 16 << 20;

const STEPS: [&str; 4] = ["join", "session setup", "matmul", "reveal"];
const PREDICT_STEPS: [&str; 4] = ["join", "session setup", "inference", "output written"];
const TRAIN_STEPS: [&str; 4] = ["join", "session setup", "training", "model stored"];
const ANALYZE_STEPS: [&str; 4] = ["join", "session setup", "computing", "result stored"];

/// A job's input matrix from its owner's seed: small signed integers (exact in the ring).
pub fn seeded_matrix(seed: u64, rows: usize, cols: usize) -> RingTensor {
    let mut g = Prg::from_u64(seed);
    let v = (0..rows * cols).map(|_| ((g.next_u64() % 201) as i64 - 100) as u64).collect();
    RingTensor::from_vec(&[rows, cols], v).expect("shape matches length")
}

impl Jobs {
    /// Loads the records in `store`; jobs that were not final are now interrupted.
    pub fn load(me: PartyId, store: Arc<Store>) -> anyhow::Result<Jobs> {
        let mut records = BTreeMap::new();
        for name in store.list("jobs")? {
            let id: JobId =
                name.parse().with_context(|| format!("unexpected file jobs/{name} in the data directory"))?;
            let raw = store.get("jobs", &name)?.context("listed item vanished")?;
            let mut r: JobRecord =
                serde_json::from_slice(&raw).with_context(|| format!("job record jobs/{name} is unreadable"))?;
            if !r.state.is_final() {
                r.state = JobState::Interrupted;
                r.error = Some("the node stopped while the job ran".into());
                store.put("jobs", &name, &serde_json::to_vec(&r)?)?;
            }
            records.insert(id, r);
        }
        let limits = crate::config::Limits::default();
        let pool = WarmPool::new(limits.pool_jobs, limits.pool_rows);
        Ok(Jobs {
            me,
            store,
            records: Mutex::new(records),
            limits,
            mode: crate::config::Mode::default(),
            pool,
            persisted: Mutex::default(),
            finished: std::sync::OnceLock::new(),
        })
    }

    /// Applies the node's `[limits]` (active jobs, job time, memory, warm pool).
    pub fn with_limits(mut self, limits: crate::config::Limits) -> Self {
        self.limits = limits;
        self.pool = WarmPool::new(limits.pool_jobs, limits.pool_rows);
        self
    }

    /// Sets the consortium's mode (`[consortium] mode`; the default: a dealer).
    pub fn with_mode(mut self, mode: crate::config::Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Calls `hook` with the final record of every job that ends from now on (once; later
    /// calls are ignored). The prediction service audits outcomes with it.
    pub fn on_finish(&self, hook: impl Fn(&JobRecord) + Send + Sync + 'static) {
        let _ = self.finished.set(Box::new(hook));
    }

    /// The warm pool of preprocessed prediction jobs.
    pub fn pool(&self) -> &WarmPool {
        &self.pool
    }

    /// A model was published or registered (again) with `plan`: preprocessed jobs for another
    /// plan of that name are discarded.
    pub fn plan_changed(&self, model: &str, plan: &mpc_ml::Plan) {
        self.pool.discard_model(model, Some(&|k: &PoolKey| k.job_hash == crate::ml::job_hash(plan, k.rows)));
    }

    /// All records, oldest first.
    pub fn list(&self) -> Vec<JobRecord> {
        let mut v: Vec<JobRecord> = self.records.lock().expect("jobs lock").values().cloned().collect();
        v.sort_by_key(|r| r.created_unix_ms);
        v
    }

    /// One record.
    pub fn get(&self, id: JobId) -> Option<JobRecord> {
        self.records.lock().expect("jobs lock").get(&id).cloned()
    }

    /// Bob's revealed result of a finished job: `{"shape": [...], "values": [...]}` (signed
    /// integers for matmul jobs, reals for predictions).
    pub fn result(&self, id: JobId) -> anyhow::Result<Option<serde_json::Value>> {
        let Some(raw) = self.store.get("results", &id.to_string())? else { return Ok(None) };
        let v: serde_json::Value = serde_json::from_slice(&raw).context("result record is unreadable")?;
        Ok(Some(match v {
            // Tensors are stored as [shape, values]; analytics reports as {"statistics": …}.
            serde_json::Value::Array(a) if a.len() == 2 => serde_json::json!({ "shape": a[0], "values": a[1] }),
            other => other,
        }))
    }

    /// The node's store (models and plans live there too).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn update(&self, id: JobId, f: impl FnOnce(&mut JobRecord)) {
        let snapshot = {
            let mut records = self.records.lock().expect("jobs lock");
            let Some(r) = records.get_mut(&id) else { return };
            f(r);
            r.clone()
        };
        // Persist state changes at once and progress at most once a second (each write is two
        // fsyncs: a 1-row prediction would spend more time writing its record than computing).
        // A failure to write is logged, the job record stays in memory.
        {
            let mut p = self.persisted.lock().expect("persisted lock");
            let now = std::time::Instant::now();
            let due = match p.get(&id) {
                Some((state, t)) => {
                    *state != snapshot.state || now.duration_since(*t) >= std::time::Duration::from_secs(1)
                }
                None => true,
            };
            if snapshot.state.is_final() {
                p.remove(&id);
            } else if due {
                p.insert(id, (snapshot.state, now));
            } else {
                return;
            }
        }
        match serde_json::to_vec(&snapshot) {
            Ok(bytes) => {
                if let Err(e) = self.store.put("jobs", &id.to_string(), &bytes) {
                    tracing::error!(job = %id, error = %format!("{e:#}"), "cannot persist the job record");
                }
            }
            Err(e) => tracing::error!(job = %id, error = %e, "cannot encode the job record"),
        }
    }

    /// Validates `req`, records the job and starts it on its own thread. Returns its id.
    pub fn submit(self: &Arc<Self>, mesh: Arc<Mesh>, req: JobRequest) -> Result<JobId, SubmitError> {
        let job = self.prepare(&req)?;
        if self.records.lock().expect("jobs lock").contains_key(&job.id) {
            return Err(SubmitError::Duplicate(job.id));
        }
        // Every job needs both peers: one that is down (not (re)connecting) fails the job now,
        // naming it, rather than after the join timeout.
        mesh.check_peers().map_err(|e| SubmitError::PeerDown(format!("{e:#}")))?;
        let id = job.id;
        self.record(&job, JobState::Joining)?;
        tracing::info!(job = %id, kind = ?req.kind(), "job submitted");
        self.launch(mesh, job)
    }

    /// Validates `req` on this node and loads what the job needs, without recording or starting
    /// it: a bad request is refused here, before anything is sent.
    pub fn prepare(&self, req: &JobRequest) -> Result<PreparedJob, SubmitError> {
        let role = Role::of(self.me);
        let invalid = |e: anyhow::Error| SubmitError::Invalid(format!("{e:#}"));
        let work = match req {
            JobRequest::Matmul(r) => {
                let plan = Plan { m: r.m, k: r.k, n: r.n };
                for (v, name) in [(plan.m, "m"), (plan.k, "k"), (plan.n, "n")] {
                    if !(1..=MAX_DIM).contains(&v) {
                        return Err(SubmitError::Invalid(format!("{name} = {v} must be between 1 and {MAX_DIM}")));
                    }
                }
                let seed = match (role, r.seed) {
                    (Role::Dealer, Some(_)) => {
                        return Err(SubmitError::Invalid("the dealer has no input: omit `seed`".into()));
                    }
                    (Role::Alice | Role::Bob, None) => {
                        return Err(SubmitError::Invalid(format!("{role} provides an input matrix: give its `seed`")));
                    }
                    (_, s) => s,
                };
                Work::Matmul(plan, seed)
            }
            JobRequest::Predict(r) => {
                let mut prepared = crate::ml::prepare(
                    &self.store,
                    role,
                    &r.model,
                    r.batch,
                    r.input.as_deref(),
                    r.output.as_deref(),
                    self.limits.memory_mib << 20,
                )
                .map_err(invalid)?;
                if let Some(b) = r.micro_batch {
                    if b == 0 {
                        return Err(SubmitError::Invalid("micro_batch must be at least 1".into()));
                    }
                    prepared.micro_batch_cap = Some(b);
                }
                Work::Predict(r.model.clone(), Box::new(prepared))
            }
            JobRequest::Train(r) => Work::Train(Box::new(crate::ml::prepare_train(role, &r.train).map_err(invalid)?)),
            JobRequest::Analyze(r) => {
                Work::Analyze(Box::new(crate::ml::prepare_analyze(role, &r.analyze).map_err(invalid)?))
            }
        };
        let id = match req.id() {
            Some(s) => s.parse::<JobId>().map_err(|e| SubmitError::Invalid(e.to_string()))?,
            None => JobId::random(),
        };
        let (plan, steps) = match &work {
            Work::Matmul(p, _) => (JobPlan::Matmul { m: p.m, k: p.k, n: p.n }, STEPS.len()),
            Work::Predict(model, prep) => (
                JobPlan::Predict { model: model.clone(), batch: prep.rows, plan_hash: hex(&prep.session_hash()) },
                PREDICT_STEPS.len(),
            ),
            Work::Train(prep) => {
                (JobPlan::Train { plan: prep.plan.clone(), plan_hash: hex(&prep.plan.hash()) }, TRAIN_STEPS.len())
            }
            Work::Analyze(prep) => {
                (JobPlan::Analyze { plan: prep.plan.clone(), plan_hash: hex(&prep.plan.hash()) }, ANALYZE_STEPS.len())
            }
        };
        Ok(PreparedJob { id, plan, steps: steps as u32, work })
    }

    /// Records a prepared job in `state` (persisted at once). Refuses a duplicate id and a
    /// job beyond `[limits] max_active_jobs`.
    pub fn record(&self, job: &PreparedJob, state: JobState) -> Result<(), SubmitError> {
        let id = job.id;
        {
            let mut records = self.records.lock().expect("jobs lock");
            if records.contains_key(&id) {
                return Err(SubmitError::Duplicate(id));
            }
            if records.values().filter(|r| !r.state.is_final()).count() >= self.limits.max_active_jobs {
                return Err(SubmitError::Busy(self.limits.max_active_jobs));
            }
            records.insert(
                id,
                JobRecord {
                    id: id.to_string(),
                    plan: job.plan.clone(),
                    state,
                    steps_done: 0,
                    steps_total: job.steps,
                    step: match state {
                        JobState::Proposed => "proposed to the peers".into(),
                        _ => STEPS[0].into(),
                    },
                    error: None,
                    created_unix_ms: now_ms(),
                    finished_unix_ms: None,
                    total: OpCounters::default(),
                    ops: BTreeMap::new(),
                    wire_sent: 0,
                    wire_recv: 0,
                    layers: vec![],
                    progress: None,
                    rows: None,
                    loss: vec![],
                    metrics: None,
                    seconds: None,
                    decisions: BTreeMap::new(),
                },
            );
        }
        self.update(id, |_| {});
        Ok(())
    }

    /// Changes a recorded job that has not started: its state, step text, error and the
    /// peers' decisions so far.
    pub fn set_pending(
        &self,
        id: JobId,
        state: JobState,
        step: &str,
        error: Option<String>,
        decisions: &BTreeMap<String, String>,
    ) {
        self.update(id, |r| {
            r.state = state;
            r.step = step.into();
            r.decisions = decisions.clone();
            if let Some(e) = error {
                r.error = Some(e);
            }
            if state.is_final() {
                r.finished_unix_ms = Some(now_ms());
                r.seconds = Some(now_ms().saturating_sub(r.created_unix_ms) as f64 / 1e3);
            }
        });
    }

    /// Starts a recorded job on its own thread (or task). Returns its id.
    pub fn launch(self: &Arc<Self>, mesh: Arc<Mesh>, job: PreparedJob) -> Result<JobId, SubmitError> {
        let (id, work) = (job.id, job.work);
        self.update(id, |r| {
            r.state = JobState::Joining;
            r.step = STEPS[0].into();
        });
        let jobs = self.clone();
        let rt = tokio::runtime::Handle::current();
        let started = std::time::Instant::now();
        // A small prediction (a few MiB of working set: every local step well under a
        // millisecond) runs as a task on the runtime, next to quinn's drivers: each of its
        // rounds then costs no wake-up of a parked thread (tens of µs on a VM, and a 1-row CNN
        // has ~30 rounds). Its offline passes for the warm pool run on a thread.
        let work = match work {
            Work::Predict(model, prep) if prep.rows as u64 * prep.plan.bytes_per_row() <= SMALL_JOB_BYTES => {
                tokio::spawn(async move {
                    let mut prep = prep;
                    let r = jobs.bounded(&mesh, id, jobs.execute_predict(&mesh, id, &model, &mut prep)).await;
                    let (result, party) = match r {
                        Ok(party) => (Ok(()), party),
                        Err(e) => (Err(e), None),
                    };
                    jobs.finish(id, result, started);
                    if let Some(party) = party {
                        let spawned = std::thread::Builder::new().name(format!("pool-{id}")).spawn(move || {
                            rt.block_on(jobs.refill(&mesh, id, &model, &prep, party));
                        });
                        if let Err(e) = spawned {
                            tracing::warn!(job = %id, error = %e, "cannot start the warm-pool refill");
                        }
                    }
                });
                return Ok(id);
            }
            w => w,
        };
        // Local GEMMs are CPU-bound: run the job on its own thread so it never stalls the
        // runtime's workers (quinn's drivers, the API).
        std::thread::Builder::new()
            .name(format!("job-{id}"))
            .spawn(move || {
                let result = match work {
                    Work::Matmul(plan, seed) => {
                        rt.block_on(jobs.bounded(&mesh, id, jobs.execute(&mesh, id, plan, seed)))
                    }
                    Work::Predict(model, mut prep) => {
                        let r =
                            rt.block_on(jobs.bounded(&mesh, id, jobs.execute_predict(&mesh, id, &model, &mut prep)));
                        let (result, party) = match r {
                            Ok(party) => (Ok(()), party),
                            Err(e) => (Err(e), None),
                        };
                        jobs.finish(id, result, started);
                        // Idle time after the job: preprocess the next ones (the job's
                        // session stays open for the agreement, then closes).
                        if let Some(party) = party {
                            rt.block_on(jobs.refill(&mesh, id, &model, &prep, party));
                        }
                        return;
                    }
                    Work::Train(prep) => rt.block_on(jobs.bounded(&mesh, id, jobs.execute_train(&mesh, id, *prep))),
                    Work::Analyze(prep) => rt.block_on(jobs.bounded(&mesh, id, jobs.execute_analyze(&mesh, id, *prep))),
                };
                jobs.finish(id, result, started);
            })
            .map_err(|e| SubmitError::Internal(format!("cannot start the job thread: {e}")))?;
        Ok(id)
    }

    /// Runs a job within `[limits] max_job_s`; past it the job's session is dropped (its peers
    /// see the streams close) and the job fails. Then attributes a failure ([`Jobs::settle`]).
    async fn bounded<T>(
        &self,
        mesh: &Mesh,
        id: JobId,
        job: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let limit = std::time::Duration::from_secs(self.limits.max_job_s);
        let r = match tokio::time::timeout(limit, job).await {
            Ok(r) => r,
            Err(_) => Err(public(
                format!("it ran longer than its [limits] max_job_s = {} s", self.limits.max_job_s),
                anyhow::anyhow!("the job ran longer than [limits] max_job_s = {} s", self.limits.max_job_s),
            )),
        };
        self.settle(mesh, id, r).await
    }

    /// Who failed first, and why, on every node. A job that failed because a peer ended its
    /// session (the peer aborted, or was lost) takes the reason that peer's node sent — it
    /// sends it right after its own failure, so a connected peer's notice is awaited briefly —
    /// and says "ROLE (Pn) stopped the job: REASON" instead of naming the messenger. A job that
    /// failed on its own tells the peers why, in public words ([`public_reason`]).
    async fn settle<T>(&self, mesh: &Mesh, id: JobId, r: anyhow::Result<T>) -> anyhow::Result<T> {
        let e = match r {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let session = SessionId(id.0);
        let stopped = e.chain().find_map(|c| c.downcast_ref::<PeerStopped>()).map(|s| (s.connected, s.from));
        if let Some((connected, from)) = stopped {
            // A peer this node saw lost explains nothing more (this node's own words are the
            // most precise); a peer that ended the job while connected may say why — only that
            // peer's notice is taken, never another's about something else.
            if !connected {
                return Err(e);
            }
            return match mesh.stop_notice(session, NOTICE_WAIT).await.filter(|n| n.origin == from.0) {
                Some(n) => {
                    let origin = PartyId(n.origin);
                    Err(anyhow::anyhow!("{} ({origin}) stopped the job: {}", Role::of(origin), n.reason))
                }
                None => Err(e),
            };
        }
        let step = self.get(id).map(|r| r.step).unwrap_or_default();
        let reason = format!("{} (at step \"{step}\"; its job record has the details)", public_reason(&e));
        mesh.send_stop_notice(session, &StopNotice { origin: self.me.0, reason }).await;
        Err(e)
    }

    /// Train: open the session, train on shares, store this party's share of the model, and
    /// reveal it to Bob if the job says so (then Bob's node reports held-out metrics).
    async fn execute_train(&self, mesh: &Mesh, id: JobId, prep: crate::ml::PreparedTrain) -> anyhow::Result<()> {
        let plan_hash = prep.plan.hash();
        let mut party =
            self.join(mesh, id, plan_hash, FixedPoint::default(), "training parameters", &TRAIN_STEPS).await?;
        let data = prep.train.as_ref().map(|(x, y)| (x, y));
        let progress = |p: mpc_ml::train::TrainProgress| {
            self.update(id, |r| {
                r.step =
                    format!("training: epoch {}/{}, step {}/{}", p.epoch, prep.plan.config.epochs, p.step, p.steps);
                r.progress = Some([p.step as u64, p.steps as u64]);
                if let Some(l) = p.loss {
                    r.loss.push(l);
                }
            });
        };
        let shared = mpc_ml::train::train(&mut party, &prep.plan, data, progress)
            .await
            .map_err(|e| self.model_error(mesh, e))?;
        self.progress_in(id, 3, Some(&party), &TRAIN_STEPS);
        if !party.is_dealer() {
            let mut bytes = Vec::new();
            for (w, b) in shared.layers() {
                for t in [w, b] {
                    bytes.extend(t.expose_share()?.as_slice().iter().flat_map(|v| v.to_le_bytes()));
                }
            }
            self.store.put("shares", &id.to_string(), &bytes).context("storing this party's share of the model")?;
        }
        // The model stays shared and serves predictions under its name on all three nodes.
        let name = prep.name.clone().unwrap_or_else(|| format!("trained-{id}"));
        let policy = match prep.plan.config.arch {
            mpc_ml::train::Arch::LinReg => mpc_ml::OutputPolicy::Logits,
            _ => mpc_ml::OutputPolicy::Probabilities,
        };
        let serving = prep.plan.inference_plan(1, policy, party.fixed())?;
        let record = crate::ml::TrainedRecord {
            job: id.to_string(),
            mean: prep.standardizer.as_ref().map(|s| s.mean.to_vec()),
            std: prep.standardizer.as_ref().map(|s| s.std.to_vec()),
        };
        self.store.put("plans", &name, &serde_json::to_vec(&serving)?)?;
        self.store.put("trained", &name, &serde_json::to_vec(&record)?)?;
        tracing::info!(job = %id, model = %name, "trained model serves predictions (secret-shared)");
        self.update(id, |r| r.metrics = Some(serde_json::json!({ "model": name })));
        if prep.reveal {
            let model = shared.reveal_to(&mut party, PartyId::P1).await.map_err(|e| self.model_error(mesh, e))?;
            if let (Some(m), Some((xt, yt)), Some((x, y))) = (model, &prep.test, &prep.train) {
                use mpc_ml::train::{Arch, accuracy, r2};
                let metrics = match prep.plan.config.arch {
                    Arch::LinReg => serde_json::json!({"train_r2": r2(&m, x, y), "test_r2": r2(&m, xt, yt)}),
                    _ => {
                        serde_json::json!({"train_accuracy": accuracy(&m, x, y), "test_accuracy": accuracy(&m, xt, yt)})
                    }
                };
                let weights: Vec<serde_json::Value> = m
                    .layers
                    .iter()
                    .filter(|l| matches!(l.op, mpc_ml::Op::Linear(_)))
                    .map(|l| {
                        let (weight, bias) = (&l.weights[0], l.weights.get(1));
                        serde_json::json!({
                            "weight_shape": weight.shape(), "weight": weight.iter().collect::<Vec<_>>(),
                            "bias": bias.map(|b| b.iter().copied().collect::<Vec<_>>()),
                        })
                    })
                    .collect();
                self.store.put("models", &format!("trained-{id}"), &serde_json::to_vec(&weights)?)?;
                if let (Some(path), Some(s)) = (&prep.export, &prep.standardizer) {
                    let mut raw = m.clone();
                    s.fold_into(&mut raw)?;
                    let bytes = mpc_ml::onnx::export(&raw)?;
                    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
                }
                self.update(id, |r| {
                    let mut all = metrics;
                    all["model"] = serde_json::json!(name);
                    r.metrics = Some(all);
                });
            }
        }
        self.progress_in(id, 4, Some(&party), &TRAIN_STEPS);
        Ok(())
    }

    /// Analyze: open the session, compute the statistics, record them at Bob's node.
    async fn execute_analyze(&self, mesh: &Mesh, id: JobId, prep: crate::ml::PreparedAnalyze) -> anyhow::Result<()> {
        let mut party =
            self.join(mesh, id, prep.plan.hash(), prep.plan.fixed, "analytics plan", &ANALYZE_STEPS).await?;
        let report = mpc_ml::analytics::analyze(&mut party, &prep.plan, prep.data.as_ref())
            .await
            .map_err(|e| self.model_error(mesh, e))?;
        self.progress_in(id, 3, Some(&party), &ANALYZE_STEPS);
        if let Some(r) = report {
            let v = serde_json::to_value(&r)?;
            let stored = serde_json::json!({ "statistics": v });
            self.store
                .put("results", &id.to_string(), &serde_json::to_vec(&stored)?)
                .context("storing the statistics")?;
            self.update(id, |rec| rec.metrics = Some(v));
        }
        self.progress_in(id, 4, Some(&party), &ANALYZE_STEPS);
        Ok(())
    }

    /// Predict: open the session, agree on the micro-batch size, load the model once, then run
    /// the rows a micro-batch at a time (Bob reads and writes them as they go).
    /// Runs a prediction: on a preprocessed session from the warm pool if the three nodes hold
    /// the same one for this model and size, else in a fresh session with material made on
    /// demand. Returns the job's party when the warm pool may be refilled afterwards.
    async fn execute_predict(
        &self,
        mesh: &Mesh,
        id: JobId,
        model: &str,
        prep: &mut crate::ml::Prepared,
    ) -> anyhow::Result<Option<Party>> {
        let poolable = prep.shared.is_none();
        let key = PoolKey { model: model.to_string(), rows: prep.rows, job_hash: prep.session_hash() };
        // The job's own session first, always: the pool decision is made over it, so every
        // node ends up in the same session whatever its pool holds.
        let mut party =
            self.join(mesh, id, prep.session_hash(), prep.plan.fixed, "model and rows", &PREDICT_STEPS).await?;
        if poolable {
            let entry = self.pool.take(&key);
            let tag = mpc_ml::plan_hash("pool-entry", &(id.0, key.job_hash, entry.as_ref().map_or(0, |e| e.id)));
            let same = party.agree_equal(tag).await.map_err(|e| self.explain(mesh, e))?;
            match entry {
                Some(entry) if same => {
                    let (entry_id, mut pooled) = (entry.id, entry.party);
                    pooled.begin_online().map_err(|e| self.explain(mesh, e))?;
                    self.progress_in(id, 2, Some(&pooled), &PREDICT_STEPS);
                    tracing::info!(job = %id, entry = %format!("{entry_id:032x}"), "serving from the warm pool");
                    self.predict_rows(mesh, id, &mut pooled, prep, prep.rows, true).await?;
                    // The job's session, still in step, agrees on the refill.
                    return Ok(Some(party));
                }
                Some(entry) => {
                    tracing::info!(job = %id, "the peers hold another warm-pool entry, or none yet; running on demand");
                    self.pool.restore(key.clone(), entry);
                }
                None => {}
            }
        }
        let b = party.agree_min(prep.max_micro_batch() as u64).await.map_err(|e| self.explain(mesh, e))? as usize;
        self.predict_rows(mesh, id, &mut party, prep, b, false).await?;
        Ok(poolable.then_some(party))
    }

    /// The rows of a prediction in micro-batches of `b`, on a party ready for its online pass.
    async fn predict_rows(
        &self,
        mesh: &Mesh,
        id: JobId,
        party: &mut Party,
        prep: &mut crate::ml::Prepared,
        b: usize,
        pooled: bool,
    ) -> anyhow::Result<()> {
        let rows = prep.rows;
        let from_pool = if pooled { rows as u64 } else { 0 };
        let plan_b = prep.plan.rebatch(b)?;
        let loaded = match &prep.shared {
            Some(w) => mpc_ml::LoadedModel::load_shared(party, &plan_b, w).await,
            None => mpc_ml::LoadedModel::load_checked(party, &plan_b, prep.model.as_ref()).await,
        }
        .map_err(|e| self.model_error(mesh, e))?;
        let mut layers: Vec<crate::ml::LayerRecord> = vec![(&loaded.profile).into()];
        let started = std::time::Instant::now();
        let mut done = 0;
        self.update(id, |r| {
            r.rows = Some(RowProgress { total: rows as u64, micro_batch: b as u64, from_pool, ..Default::default() })
        });
        while done < rows {
            let n = b.min(rows - done);
            let plan_n = if n == b { plan_b.clone() } else { plan_b.rebatch(n)? };
            let x = match prep.input.as_mut() {
                Some(reader) => {
                    let x = reader
                        .next(n)
                        .and_then(|x| x.context("the input ended early"))
                        .map_err(|e| public("its input file could not be read", e))?;
                    Some(match &prep.standardize {
                        Some((mean, std)) => {
                            let x2 = x.into_dimensionality::<ndarray::Ix2>().context("a tabular input")?;
                            ((&x2 - mean) / std).into_dyn()
                        }
                        None => x,
                    })
                }
                None => None,
            };
            let inference = loaded.run(party, &plan_n, x.as_ref()).await.map_err(|e| self.model_error(mesh, e))?;
            if let (Some(out), Some(w)) = (&inference.output, prep.output.as_mut()) {
                w.write(out).map_err(|e| public("its output file could not be written", e))?;
            }
            crate::ml::add_profile(&mut layers, &inference.profile);
            done += n;
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let per_second = done as f64 / secs;
            self.update(id, |r| {
                r.rows = Some(RowProgress {
                    done: done as u64,
                    total: rows as u64,
                    micro_batch: b as u64,
                    per_second,
                    eta_s: (rows - done) as f64 / per_second,
                    from_pool,
                });
                r.layers = layers.clone();
                r.step = format!("inference: {done} of {rows} rows");
            });
            self.progress_in(id, 2, Some(party), &PREDICT_STEPS);
        }
        self.progress_in(id, 3, Some(party), &PREDICT_STEPS);
        if let Some(w) = prep.output.take() {
            w.finish().map_err(|e| public("its output file could not be written", e))?;
            self.store.put("results", &id.to_string(), &serde_json::to_vec(&serde_json::json!({ "rows": rows }))?)?;
        }
        self.progress_in(id, 4, Some(party), &PREDICT_STEPS);
        Ok(())
    }

    /// After a prediction: the three nodes agree (on the job's session) how many jobs of the
    /// same model and size to preprocess — the fewest any of them wants — and run their offline
    /// passes, each in a fresh session, parking the results in the warm pool. Failures only
    /// cost the pool an entry: they are logged, never reported on the finished job.
    async fn refill(&self, mesh: &Mesh, id: JobId, model: &str, prep: &crate::ml::Prepared, mut party: Party) {
        let key = PoolKey { model: model.to_string(), rows: prep.rows, job_hash: prep.session_hash() };
        // One preprocessed job holds the material of a whole job at once: only jobs that run
        // as one micro-batch within this node's memory budget, a share of it per entry.
        let fits = prep.rows as u64 * prep.plan.bytes_per_row() * self.limits.pool_jobs.max(1) as u64
            <= self.limits.memory_mib << 20;
        let mine = if fits && prep.rows <= prep.max_micro_batch() { self.pool.wanted(&key, prep.rows) } else { 0 };
        let want = match party.agree_min(mine as u64).await {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(job = %id, error = %e, "no warm-pool refill");
                return;
            }
        };
        drop(party);
        for i in 0..want {
            let h = mpc_ml::plan_hash("pool-session", &(id.0, i));
            let sid = u128::from_le_bytes(h[..16].try_into().expect("16 bytes"));
            match self.preplay(mesh, sid, &key, prep).await {
                Ok(p) => {
                    self.pool.put(key.clone(), crate::pool::Entry::new(sid, prep.rows, p));
                    tracing::info!(model, rows = prep.rows, held = self.pool.len(), "preprocessed a job ahead");
                }
                Err(e) => {
                    tracing::warn!(model, error = %format!("{e:#}"), "preprocessing ahead failed");
                    return;
                }
            }
        }
    }

    /// The offline pass of a prediction of `key.rows` rows in session `sid`: every correlation
    /// it needs fetched and stored, nothing opened; the party is left ready for its online pass.
    async fn preplay(
        &self,
        mesh: &Mesh,
        sid: u128,
        key: &PoolKey,
        prep: &crate::ml::Prepared,
    ) -> anyhow::Result<Party> {
        let session = SessionId(sid);
        let transport = mesh.open_session(session).await?;
        let config = SessionConfig::with_fixed(session, key.job_hash, prep.plan.fixed);
        let mut seed_bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed_bytes).expect("OS randomness");
        let mut rng = rand_chacha::ChaCha12Rng::from_seed(seed_bytes);
        let connect = Party::connect(Arc::new(transport), config, self.mode.correlations().source(), &mut rng);
        let mut party = tokio::time::timeout(mesh.join_timeout(), connect)
            .await
            .map_err(|_| anyhow::anyhow!("the peers did not join the preprocessing session"))?
            .map_err(|e| self.explain(mesh, e))?;
        party.begin_offline()?;
        let plan = prep.plan.rebatch(key.rows)?;
        // Bob's rows are not known yet: the offline pass runs on placeholders anyway.
        let x = (self.me == PartyId::P1).then(|| ndarray::ArrayD::<f64>::zeros(plan.input.clone()));
        let loaded = mpc_ml::LoadedModel::load_checked(&mut party, &plan, prep.model.as_ref())
            .await
            .map_err(|e| self.model_error(mesh, e))?;
        loaded.run(&mut party, &plan, x.as_ref()).await.map_err(|e| self.model_error(mesh, e))?;
        Ok(party)
    }

    fn progress(&self, id: JobId, done: u32, party: Option<&Party>) {
        self.progress_in(id, done, party, &STEPS)
    }

    fn progress_in(&self, id: JobId, done: u32, party: Option<&Party>, steps: &[&str]) {
        self.update(id, |r| {
            r.steps_done = done;
            r.step = steps[(done as usize).min(steps.len() - 1)].into();
            if done >= 1 {
                r.state = JobState::Running;
            }
            if let Some(p) = party {
                let s = p.stats();
                r.total = s.total.into();
                r.ops = s.per_op.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
                let t = p.traffic();
                r.wire_sent = t.sent_bytes.iter().sum();
                r.wire_recv = t.recv_bytes.iter().sum();
            }
        });
    }

    async fn execute(&self, mesh: &Mesh, id: JobId, plan: Plan, seed: Option<u64>) -> anyhow::Result<()> {
        let mut party = self.join(mesh, id, plan.hash(), FixedPoint::default(), "shapes", &STEPS).await?;
        let me = party.id();
        let x = (me == PartyId::P1).then(|| seeded_matrix(seed.expect("Bob has a seed"), plan.m, plan.k));
        let w = (me == PartyId::P0).then(|| seeded_matrix(seed.expect("Alice has a seed"), plan.k, plan.n));
        let xs = party.share_input(PartyId::P1, &[plan.m, plan.k], x.as_ref()).map_err(|e| self.explain(mesh, e))?;
        let ws = party.share_input(PartyId::P0, &[plan.k, plan.n], w.as_ref()).map_err(|e| self.explain(mesh, e))?;
        let y = party.matmul(&xs, &ws).await.map_err(|e| self.explain(mesh, e))?;
        self.progress(id, 3, Some(&party));
        if !party.is_dealer() {
            let share = y.expose_share()?.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
            self.store.put("shares", &id.to_string(), &share).context("storing this party's share of the product")?;
        }
        let out = party.reveal_to(PartyId::P1, &y).await.map_err(|e| self.explain(mesh, e))?;
        if let Some(out) = out {
            let values: Vec<i64> = out.as_slice().iter().map(|&v| v as i64).collect();
            let bytes = serde_json::to_vec(&(out.shape(), values))?;
            self.store.put("results", &id.to_string(), &bytes).context("storing the result")?;
        }
        self.progress(id, 4, Some(&party));
        Ok(())
    }

    /// Session setup with fresh OS randomness, bounded by the mesh's join timeout: a peer whose
    /// node accepted the stream but whose organisation never submitted the job would otherwise
    /// hold this one for the whole frame deadline. `agree_on` names what must match in the error.
    async fn connect(
        &self,
        mesh: &Mesh,
        id: JobId,
        transport: crate::transport::QuicTransport,
        config: SessionConfig,
        agree_on: &str,
    ) -> anyhow::Result<Party> {
        let mut seed_bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed_bytes).expect("OS randomness");
        let mut rng = rand_chacha::ChaCha12Rng::from_seed(seed_bytes);
        let connect = Party::connect(Arc::new(transport), config, self.mode.correlations().source(), &mut rng);
        let r = tokio::time::timeout(mesh.join_timeout(), connect).await.map_err(|_| {
            anyhow::anyhow!(
                "session setup did not complete within {:?}: did every organisation submit job {id} with the same \
                 {agree_on}?",
                mesh.join_timeout()
            )
        })?;
        let e = match r {
            Ok(p) => return Ok(p),
            Err(e) => e,
        };
        // The plans are public: ask the peers' nodes for their plans of this job and name what
        // differs (batch 10 vs 100, samples 24 vs 30, …) — whichever party noticed first (a
        // peer's stop notice can arrive before the hello this node would have refused).
        let ours = self.get(id).and_then(|r| serde_json::to_value(r.plan).ok());
        let mismatched = match &e {
            MpcError::ConfigMismatch { peer, .. } => vec![*peer],
            _ => vec![],
        };
        // Only when the setup failed over the configuration (a refused hello, or a peer that
        // stopped during it), not over a lost connection or a timeout.
        let about_config = matches!(e, MpcError::ConfigMismatch { .. } | MpcError::PeerAborted(_));
        let others = mesh.others().filter(|_| about_config);
        let peers = mismatched.iter().copied().chain(others);
        let mut checked = Vec::new();
        for peer in peers {
            if checked.contains(&peer) {
                continue;
            }
            checked.push(peer);
            let Some(ours) = &ours else { break };
            let Some(theirs) = crate::service::peer_job_plan(mesh, peer, id).await else { continue };
            let diff = crate::service::job_plan_differences(ours, &theirs, 6);
            if !diff.is_empty() {
                let role = Role::of(peer);
                return Err(public(
                    format!("its {agree_on} differ from {role}'s ({peer})"),
                    anyhow::anyhow!(
                        "this node's {agree_on} differ from {role}'s ({peer}) for job {id}; this node's vs \
                         {role}'s: {}. Submit the job again with the same values on every node",
                        diff.join("; ")
                    ),
                ));
            }
        }
        match e {
            MpcError::ConfigMismatch { peer, detail } => Err(public(
                format!("its {agree_on} differ from {}'s ({peer})", Role::of(peer)),
                anyhow::Error::new(MpcError::ConfigMismatch { peer, detail }),
            )),
            e => Err(self.explain(mesh, e)),
        }
    }

    /// Joins job `id`'s session: opens its streams and agrees with the peers on the plan hash
    /// and fixed point (steps 1 and 2 of `steps`).
    async fn join(
        &self,
        mesh: &Mesh,
        id: JobId,
        plan_hash: [u8; 32],
        fixed: FixedPoint,
        agree_on: &str,
        steps: &[&str],
    ) -> anyhow::Result<Party> {
        let session = SessionId(id.0);
        let transport = mesh
            .open_session(session)
            .await
            .map_err(|e| public("it could not open the job's session with both peers", e))?;
        self.progress_in(id, 1, None, steps);
        let config = SessionConfig::with_fixed(session, plan_hash, fixed);
        let party = self.connect(mesh, id, transport, config, agree_on).await?;
        self.progress_in(id, 2, Some(&party), steps);
        Ok(party)
    }

    /// A model-layer error, with MPC failures explained as [`Jobs::explain`] does.
    fn model_error(&self, mesh: &Mesh, e: mpc_ml::ModelError) -> anyhow::Error {
        match e {
            mpc_ml::ModelError::Mpc(e) => self.explain(mesh, e),
            e => e.into(),
        }
    }

    /// Turns "peer aborted" into the reason the connection dropped, when the mesh knows it.
    /// Either way the error is a [`PeerStopped`]: [`Jobs::settle`] then names whoever failed
    /// first, if its node said so.
    fn explain(&self, mesh: &Mesh, e: MpcError) -> anyhow::Error {
        let stopped = |message: String, connected: bool, from: PartyId| {
            anyhow::Error::new(PeerStopped { message, connected, from })
        };
        match &e {
            MpcError::PeerAborted(p) => match mesh.down_reason(*p) {
                Some(why) => stopped(format!("lost the connection to {} ({p}): {why}", Role::of(*p)), false, *p),
                None => stopped(format!("{} ({p}) aborted the job", Role::of(*p)), true, *p),
            },
            // Another peer saw the loss first and said so: name the lost one, not the messenger.
            MpcError::PeerLost { reporter, lost } => match mesh.down_reason(*lost) {
                Some(why) => {
                    stopped(format!("lost the connection to {} ({lost}): {why}", Role::of(*lost)), false, *lost)
                }
                None => stopped(
                    format!(
                        "lost the connection to {} ({lost}): the {} ({reporter}) lost it first and ended the job",
                        Role::of(*lost),
                        Role::of(*reporter)
                    ),
                    true,
                    // Still connected: it ended the session itself and may say why.
                    *lost,
                ),
            },
            _ => anyhow::Error::new(e),
        }
    }

    fn finish(&self, id: JobId, result: anyhow::Result<()>, started: std::time::Instant) {
        match &result {
            Ok(()) => tracing::info!(job = %id, "job done"),
            Err(e) => tracing::warn!(job = %id, error = %format!("{e:#}"), "job failed"),
        }
        self.update(id, |r| {
            r.finished_unix_ms = Some(now_ms());
            r.seconds = Some(started.elapsed().as_secs_f64());
            match result {
                Ok(()) => r.state = JobState::Done,
                Err(e) => {
                    r.state = JobState::Failed;
                    r.error = Some(format!("{e:#}"));
                }
            }
        });
        if let (Some(hook), Some(r)) = (self.finished.get(), self.get(id)) {
            hook(&r);
        }
    }
}

/// How long a job that a peer ended waits for that peer's [`StopNotice`] (it is sent right
/// after the peer's own failure; on a LAN it arrives within milliseconds).
const NOTICE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A job error caused by a peer ending the session: it aborted (`connected`: its node is up and
/// may say why) or its connection was lost.
#[derive(Debug)]
struct PeerStopped {
    message: String,
    connected: bool,
    /// The peer whose stop notice may explain it.
    from: PartyId,
}

impl std::fmt::Display for PeerStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PeerStopped {}

/// An error with words this node may send its peers when it stops a job ([`public_reason`]);
/// shown as the error it wraps.
#[derive(Debug)]
struct Public {
    reason: String,
    inner: anyhow::Error,
}

impl std::fmt::Display for Public {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The wrapped error's own message; its causes follow as this error's sources.
        write!(f, "{}", self.inner)
    }
}

impl std::error::Error for Public {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// `e`, with `reason` as what the peers are told if it stops the job.
fn public(reason: impl Into<String>, e: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Public { reason: reason.into(), inner: e })
}

/// What this node tells its peers about a failure of its own: a category, never the error's
/// text, which can hold Bob's values, file paths or other private details (it stays in this
/// node's job record).
fn public_reason(e: &anyhow::Error) -> String {
    if let Some(p) = e.chain().find_map(|c| c.downcast_ref::<Public>()) {
        return p.reason.clone();
    }
    let mpc = e.chain().find_map(|c| c.downcast_ref::<MpcError>()).or_else(|| {
        match e.chain().find_map(|c| c.downcast_ref::<mpc_ml::ModelError>()) {
            Some(mpc_ml::ModelError::Mpc(m)) => Some(m),
            _ => None,
        }
    });
    if let Some(m) = mpc {
        return match m {
            MpcError::EncodeOverflow { .. } => "a value did not fit the plan's fixed point".into(),
            MpcError::ShapeMismatch { .. } | MpcError::InvalidInput(_) => "its input did not match the plan".into(),
            MpcError::Desync { peer, .. } => {
                format!("a protocol message from {} ({peer}) was not the one expected", Role::of(*peer))
            }
            MpcError::ConfigMismatch { peer, .. } => {
                format!("its session configuration differs from {}'s ({peer})", Role::of(*peer))
            }
            MpcError::Transport(_) => "a transport error".into(),
            _ => "a protocol error".into(),
        };
    }
    if e.chain().any(|c| c.downcast_ref::<mpc_ml::ModelError>().is_some()) {
        return "the model did not fit its input".into();
    }
    if let Some(io) = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>()) {
        return format!("an I/O error on its machine ({})", io.kind());
    }
    "an error on its node".into()
}

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The request is unusable (the client's fault).
    #[error("{0}")]
    Invalid(String),
    /// A job with this id exists on this node.
    #[error("job {0} already exists on this node")]
    Duplicate(JobId),
    /// Too many jobs are active on this node.
    #[error("this node already runs {0} jobs ([limits] max_active_jobs); retry when one has finished")]
    Busy(usize),
    /// A peer the job needs is down (not connected, and not reconnecting).
    #[error("job not started: {0}")]
    PeerDown(String),
    /// The node could not start it.
    #[error("{0}")]
    Internal(String),
}

/// Checks a submitted request's basic shape without a node (used by the CLI before sending).
pub fn check_request(req: &JobRequest) -> anyhow::Result<()> {
    if let Some(id) = req.id() {
        id.parse::<JobId>()?;
    }
    match req {
        JobRequest::Matmul(r) if r.m == 0 || r.k == 0 || r.n == 0 => bail!("m, k and n must be positive"),
        JobRequest::Predict(r) if r.model.is_empty() => bail!("a predict job needs a model name"),
        _ => Ok(()),
    }
}

/// A job validated on this node, with what it needs loaded, not yet started
/// ([`Jobs::prepare`], [`Jobs::launch`]).
pub struct PreparedJob {
    /// Its id.
    pub id: JobId,
    /// Its public plan.
    pub plan: JobPlan,
    steps: u32,
    work: Work,
}

impl std::fmt::Debug for PreparedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedJob").field("id", &self.id).field("plan", &self.plan).finish_non_exhaustive()
    }
}

impl PreparedJob {
    /// A prediction's prepared state (plan, rows, Bob's input).
    pub fn predict(&self) -> Option<&crate::ml::Prepared> {
        match &self.work {
            Work::Predict(_, p) => Some(p),
            _ => None,
        }
    }

    /// A training job's prepared state.
    pub fn train(&self) -> Option<&crate::ml::PreparedTrain> {
        match &self.work {
            Work::Train(p) => Some(p),
            _ => None,
        }
    }

    /// An analytics job's prepared state.
    pub fn analyze(&self) -> Option<&crate::ml::PreparedAnalyze> {
        match &self.work {
            Work::Analyze(p) => Some(p),
            _ => None,
        }
    }
}

/// What a job thread runs.
enum Work {
    Matmul(Plan, Option<u64>),
    Predict(String, Box<crate::ml::Prepared>),
    Train(Box<crate::ml::PreparedTrain>),
    Analyze(Box<crate::ml::PreparedAnalyze>),
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_running_when_the_node_stopped_is_reloaded_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let id = JobId::random();
        let record = |state| JobRecord {
            id: id.to_string(),
            plan: JobPlan::Matmul { m: 1, k: 2, n: 3 },
            state,
            steps_done: 2,
            steps_total: 4,
            step: "matmul".into(),
            error: None,
            created_unix_ms: 1,
            finished_unix_ms: None,
            total: OpCounters::default(),
            ops: BTreeMap::new(),
            wire_sent: 0,
            wire_recv: 0,
            layers: vec![],
            progress: None,
            rows: None,
            loss: vec![],
            metrics: None,
            seconds: None,
            decisions: BTreeMap::new(),
        };
        store.put("jobs", &id.to_string(), &serde_json::to_vec(&record(JobState::Running)).unwrap()).unwrap();
        let done = JobId::random();
        let mut r = record(JobState::Done);
        r.id = done.to_string();
        store.put("jobs", &done.to_string(), &serde_json::to_vec(&r).unwrap()).unwrap();
        let jobs = Jobs::load(PartyId::P1, store.clone()).unwrap();
        assert_eq!(jobs.get(id).unwrap().state, JobState::Interrupted);
        assert_eq!(jobs.get(done).unwrap().state, JobState::Done);
        // The new state is on disk too.
        let again = Jobs::load(PartyId::P1, store).unwrap();
        assert_eq!(again.get(id).unwrap().state, JobState::Interrupted);
    }

    #[test]
    fn what_peers_are_told_is_a_category_never_the_details() {
        // The wrapped error reads as before on this node, causes included.
        let inner = anyhow::anyhow!("disk on fire").context("reading /home/bob/patients.npy");
        let e = public("its input file could not be read", inner);
        assert_eq!(format!("{e:#}"), "reading /home/bob/patients.npy: disk on fire");
        assert_eq!(public_reason(&e), "its input file could not be read");
        // Core errors: their kind only — an overflowing value is Bob's data.
        let e = anyhow::Error::new(MpcError::EncodeOverflow { value: 123456789.5, int_bits: 31, frac_bits: 16 })
            .context("sharing the input");
        let told = public_reason(&e);
        assert_eq!(told, "a value did not fit the plan's fixed point");
        let e = anyhow::Error::new(std::io::Error::new(std::io::ErrorKind::StorageFull, "/data/bob: no space"));
        assert_eq!(public_reason(&e), "an I/O error on its machine (no storage space)");
        assert_eq!(public_reason(&anyhow::anyhow!("secret value 42 at /x")), "an error on its node");
    }

    #[test]
    fn job_ids_and_plans() {
        let id = JobId::random();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        assert!("xyz".parse::<JobId>().is_err() && "0".repeat(33).parse::<JobId>().is_err());
        let p = Plan { m: 2, k: 3, n: 4 };
        assert_ne!(p.hash(), Plan { m: 3, k: 2, n: 4 }.hash());
        assert_eq!(p.hash(), Plan { m: 2, k: 3, n: 4 }.hash());
    }
}
