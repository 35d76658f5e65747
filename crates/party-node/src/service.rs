//! The prediction service: models offered under a policy, jobs proposed over the mesh and
//! decided by each organisation's own rules, and an audit log of every decision.
//!
//! * **Publishing** (Alice): `party-node publish … --allow ORG` imports the model, stores it
//!   with its [`ModelPolicy`], and sends each peer an [`Offer`]: the public plan and, for Bob's
//!   organisation, its terms (may it query, quotas, largest batch, approval). Offers are sent
//!   again whenever a peer (re)connects, so a node that was down at publish time catches up.
//!   Bob's and the dealer's nodes store the plan unless Bob pinned another one by hash
//!   (`party-node register`).
//! * **Proposing** (Bob): `party-node predict --model wine --input x.npy --output y.npy` checks
//!   the input on Bob's node, records the job as `proposed` and sends each peer a
//!   [`Proposal`] — kind, model, rows, plan hash (no job id is ever copied between
//!   organisations). Each peer decides by its own policy: accepts, refuses naming the rule
//!   ("quota: 100 rows allowed, 80 used, 40 requested"), or holds it for its organisation's
//!   manual approval (`party-node approve ID` / `refuse ID --reason …`). When both have
//!   accepted, Bob's node tells them to start, quotas are charged, and the job runs as before.
//!   A refusal reaches Bob's job as state `refused` with the rule; nothing was shared.
//! * **Auditing**: every node appends one line per decision and per outcome to its
//!   [`crate::audit`] log.
//!
//! The requesting organisation is the authenticated peer of the mesh connection (its
//! certificate's name), never a field of the message.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use mpc_proto::PartyId;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditLog, Entry, now_ms};
use crate::config::{Approval, PolicySection, Role};
use crate::jobs::{
    AnalyzeJob, JobId, JobPlan, JobRecord, JobRequest, JobState, Jobs, PredictJob, PreparedJob, SubmitError, TrainJob,
};
use crate::mesh::{ControlHandler, Mesh};
use crate::store::Store;

/// How long a peer has to decide on a proposal (a held one answers at once, as held).
const DECIDE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an accepted proposal waits for the proposer's start before it is dropped.
const ACCEPTED_TTL: Duration = Duration::from_secs(300);
/// The wildcard of an allow list: every organisation.
pub const ANYONE: &str = "*";

/// Who may query a published model, and how much (Alice's node; set by `publish`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelPolicy {
    /// Organisations (`[[party]] name`) that may request predictions; `*` for any.
    pub allow: Vec<String>,
    /// Rows each organisation may predict in all.
    #[serde(default)]
    pub quota_rows: Option<u64>,
    /// Rows each organisation may predict per UTC day.
    #[serde(default)]
    pub quota_rows_per_day: Option<u64>,
    /// Most rows in one job.
    #[serde(default)]
    pub max_batch: Option<u64>,
    /// `auto`, or `manual`: every prediction waits for `party-node approve` on Alice's node.
    #[serde(default)]
    pub approval: Approval,
}

impl ModelPolicy {
    /// Whether `org` may query the model.
    pub fn allows(&self, org: &str) -> bool {
        self.allow.iter().any(|a| a == org || a == ANYONE)
    }

    /// Checks the policy's values.
    pub fn check(&self) -> anyhow::Result<()> {
        for a in &self.allow {
            anyhow::ensure!(
                a == ANYONE || crate::identity::check_name(a).is_ok(),
                "allow {a:?}: give organisation names (their [[party]] name) or \"*\""
            );
        }
        anyhow::ensure!(self.max_batch != Some(0), "max_batch must be at least 1");
        Ok(())
    }

    /// The terms `org` sees in its offer.
    pub fn terms_for(&self, org: &str) -> Terms {
        Terms {
            allowed: self.allows(org),
            quota_rows: self.quota_rows,
            quota_rows_per_day: self.quota_rows_per_day,
            max_batch: self.max_batch,
            approval: self.approval,
        }
    }
}

/// What one organisation may do with an offered model (its part of the [`ModelPolicy`]; other
/// organisations' names are not sent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Terms {
    /// Whether it may request predictions.
    pub allowed: bool,
    /// Rows in all.
    pub quota_rows: Option<u64>,
    /// Rows per UTC day.
    pub quota_rows_per_day: Option<u64>,
    /// Most rows per job.
    pub max_batch: Option<u64>,
    /// Whether each request waits for Alice's manual approval.
    pub approval: Approval,
}

/// A model as offered to a peer: the public plan and that peer's terms.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Offer {
    /// The model's name.
    pub name: String,
    /// The owner's organisation name.
    pub owner: String,
    /// The public plan (batch 1).
    pub plan: mpc_ml::Plan,
    /// Hex SHA-256 of the plan.
    pub plan_hash: String,
    /// The receiving organisation's terms (none for the dealer, which only serves).
    pub terms: Option<Terms>,
    /// When it was published, Unix milliseconds.
    pub published_unix_ms: u64,
}

/// A request this node's organisation makes (`POST /v1/requests`): it is proposed to the peers,
/// who decide by their policies; no job id is copied anywhere.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Request {
    /// Predictions of an offered model on Bob's rows.
    Predict(PredictRequest),
    /// Training on Bob's data (his training parameters and CSV).
    Train(crate::ml::TrainRequest),
    /// Statistics of Bob's rows.
    Analyze(crate::ml::AnalyzeRequest),
}

/// `POST /v1/requests` with `kind = "predict"`.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// The offered model's name.
    pub model: String,
    /// Input file (.npy or .csv) on this machine, batch first.
    pub input: String,
    /// Where to write the output (.npy or .csv).
    pub output: String,
    /// At most this many rows per micro-batch.
    #[serde(default)]
    pub micro_batch: Option<usize>,
}

/// A proposed job, as a peer receives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The job id the proposer drew.
    pub job: String,
    /// What to run.
    pub work: ProposedWork,
}

/// The public description of a proposed job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProposedWork {
    /// A prediction.
    Predict {
        /// Model name.
        model: String,
        /// Rows.
        rows: u64,
        /// Hex hash of the proposer's plan for the model (batch 1).
        plan_hash: String,
        /// Its fields, summarised ([`plan_fields`]): a mismatch names what differs.
        plan_fields: BTreeMap<String, String>,
    },
    /// Training (the public parameters: shapes included, no data).
    Train {
        /// The parameters each party's node needs.
        train: crate::ml::TrainRequest,
    },
    /// Statistics.
    Analyze {
        /// The public plan.
        #[schemars(with = "serde_json::Value")]
        plan: mpc_ml::analytics::AnalyticsPlan,
    },
}

impl ProposedWork {
    fn kind(&self) -> &'static str {
        match self {
            ProposedWork::Predict { .. } => "predict",
            ProposedWork::Train { .. } => "train",
            ProposedWork::Analyze { .. } => "analyze",
        }
    }

    fn model(&self) -> Option<String> {
        match self {
            ProposedWork::Predict { model, .. } => Some(model.clone()),
            ProposedWork::Train { train } => train.name.clone(),
            ProposedWork::Analyze { .. } => None,
        }
    }

    fn rows(&self) -> u64 {
        match self {
            ProposedWork::Predict { rows, .. } => *rows,
            ProposedWork::Train { train } => train.samples.unwrap_or(0) as u64,
            ProposedWork::Analyze { plan } => plan.n() as u64,
        }
    }
}

/// A peer's decision on a proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Decision {
    /// It will run the job when told to start.
    Accepted,
    /// It waits for its organisation's approval.
    Held {
        /// Which rule holds it, and how to approve.
        reason: String,
    },
    /// It will not run the job.
    Refused {
        /// The rule, with the numbers.
        reason: String,
    },
}

/// Messages between the nodes' services.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message {
    Offer { offer: Box<Offer> },
    Propose { proposal: Proposal },
    Decided { job: String, decision: Decision },
    Start { job: String },
    Cancel { job: String, reason: String },
    Usage { model: String },
    PlanOf { job: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
enum Answer {
    Ok,
    Decision { decision: Decision },
    Usage { usage: Option<Usage> },
    Plan { plan: Option<serde_json::Value> },
    Error { message: String },
}

/// What an organisation used of a model's quotas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Usage {
    /// Rows predicted in all.
    pub total: u64,
    /// The UTC day `today` counts (days since 1970-01-01).
    pub day: u64,
    /// Rows predicted that day.
    pub today: u64,
}

impl Usage {
    fn today_at(&self, day: u64) -> u64 {
        if self.day == day { self.today } else { 0 }
    }
}

/// The dealer's (any node's) daily budget for jobs it joins for its peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Budget {
    day: u64,
    jobs: u64,
    rows: u64,
}

fn today() -> u64 {
    now_ms() / 86_400_000
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

/// A plan's fields, each summarised (short values as they are, long ones by a hash): two
/// nodes' summaries name the fields in which their plans differ, without sending either plan.
pub fn plan_fields(plan: &mpc_ml::Plan) -> BTreeMap<String, String> {
    fn short(v: &serde_json::Value) -> String {
        let s = v.to_string();
        if s.len() <= 80 {
            s
        } else {
            format!("#{}", &hex(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())[..16])
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(plan) {
        for (k, v) in map {
            match v {
                serde_json::Value::Array(a) if a.iter().any(|e| e.is_object()) => {
                    out.insert(format!("{k}.len"), a.len().to_string());
                    for (i, e) in a.iter().enumerate() {
                        let label = e.get("kind").and_then(|k| {
                            k.as_str()
                                .map(str::to_string)
                                .or_else(|| k.as_object().and_then(|o| o.keys().next().cloned()))
                        });
                        let key = match label {
                            Some(l) => format!("{k}[{i}] ({l})"),
                            None => format!("{k}[{i}]"),
                        };
                        out.insert(key, short(e));
                    }
                }
                v => {
                    out.insert(k, short(&v));
                }
            }
        }
    }
    out
}

/// The fields in which two summaries differ, in words (at most `max`).
pub fn describe_differences(ours: &BTreeMap<String, String>, theirs: &BTreeMap<String, String>, max: usize) -> String {
    let mut diffs = Vec::new();
    let keys: std::collections::BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    for k in keys {
        let (a, b) = (ours.get(k), theirs.get(k));
        if a == b {
            continue;
        }
        let show = |v: Option<&String>| match v {
            None => "absent".to_string(),
            Some(s) if s.starts_with('#') => "…".to_string(),
            Some(s) => s.clone(),
        };
        let (a, b) = (show(a), show(b));
        diffs.push(if a == "…" && b == "…" { format!("{k} differs") } else { format!("{k}: {b} vs {a}") });
    }
    let n = diffs.len();
    if n > max {
        diffs.truncate(max);
        diffs.push(format!("and {} more", n - max));
    }
    diffs.join("; ")
}

/// A proposal a peer made to this node, not started yet.
struct Pending {
    from: PartyId,
    proposal: Proposal,
    held: bool,
    since: Instant,
    /// Wall-clock time it arrived (held proposals are listed with it).
    since_unix_ms: u64,
    /// The job, prepared when accepted (held ones are prepared when approved).
    job: Option<PreparedJob>,
    /// Why it is held.
    reason: Option<String>,
}

/// A held proposal as stored, so a restart keeps it.
#[derive(Serialize, Deserialize)]
struct HeldRecord {
    from: u8,
    proposal: Proposal,
    since_unix_ms: u64,
    reason: String,
}

/// A held proposal, as `party-node proposals` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HeldProposal {
    /// The job id.
    pub job: String,
    /// The organisation that asks.
    pub peer: String,
    /// Its role.
    pub role: Role,
    /// `predict`, `train` or `analyze`.
    pub kind: String,
    /// The model.
    pub model: Option<String>,
    /// Rows or samples.
    pub rows: u64,
    /// Why it is held.
    pub reason: String,
    /// When it arrived, Unix milliseconds.
    pub since_unix_ms: u64,
    /// The public description of the job.
    pub work: ProposedWork,
}

/// What the audit log needs to know about a job this node runs for the service.
#[derive(Clone)]
struct Tracked {
    peer: PartyId,
    kind: String,
    model: Option<String>,
    rows: u64,
    /// Alice: the organisation charged for the rows (refunded for rows not done on failure).
    charged: Option<String>,
}

/// A model as `party-node models` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ModelInfo {
    /// Name.
    pub name: String,
    /// The owner's organisation.
    pub owner: String,
    /// `published` (Alice's own), `offered` (sent by Alice), `registered` (pinned by hand),
    /// `trained` (trained privately; secret-shared).
    pub source: String,
    /// What Bob learns: logits, probabilities or label.
    #[schemars(with = "String")]
    pub output: mpc_ml::OutputPolicy,
    /// One row's shape.
    pub input: Vec<usize>,
    /// Hex SHA-256 of the plan this node runs.
    pub plan_hash: String,
    /// Layers.
    pub layers: Vec<String>,
    /// Bob: his terms; Alice: the policy's terms for everyone (allowed = any allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<Terms>,
    /// Alice: the whole policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<ModelPolicy>,
    /// Alice: each organisation's use; Bob: his own (asked of Alice's node live).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, Usage>,
    /// Bob: rows left in all and today, if quotas apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_rows: Option<u64>,
    /// See `remaining_rows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_rows_today: Option<u64>,
    /// A plan pinned with `register` that differs from the one Alice offers now: its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_plan_hash: Option<String>,
}

/// A publish's outcome at each peer.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Delivery {
    /// The peer's role.
    pub role: Role,
    /// Its organisation.
    pub name: String,
    /// Whether its node stored the offer.
    pub delivered: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The node's service.
pub struct Service {
    me: PartyId,
    /// The consortium's organisations, indexed by party id (two or three).
    names: Vec<String>,
    mesh: Arc<Mesh>,
    jobs: Arc<Jobs>,
    audit: AuditLog,
    policy: PolicySection,
    pending: Mutex<HashMap<JobId, Pending>>,
    /// Proposals this node made and waits on: held peers' decisions arrive here.
    waiting: Mutex<HashMap<JobId, tokio::sync::mpsc::UnboundedSender<(PartyId, Decision)>>>,
    tracked: Mutex<HashMap<JobId, Tracked>>,
    /// Serialises read-modify-write of usage and budget items.
    counters: Mutex<()>,
    /// Per peer: the connection for which offers were last sent.
    synced: Mutex<[Option<u64>; 3]>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Service({})", self.me)
    }
}

struct Handler(std::sync::Weak<Service>);

impl ControlHandler for Handler {
    fn handle(&self, from: PartyId, body: Vec<u8>) -> futures::future::BoxFuture<'static, Vec<u8>> {
        let svc = self.0.upgrade();
        Box::pin(async move {
            let answer = match (svc, serde_json::from_slice::<Message>(&body)) {
                (None, _) => Answer::Error { message: "the node is shutting down".into() },
                (_, Err(e)) => Answer::Error { message: format!("an unreadable request: {e}") },
                (Some(svc), Ok(msg)) => svc.handle(from, msg).await,
            };
            serde_json::to_vec(&answer).unwrap_or_default()
        })
    }
}

impl Service {
    /// The service of a node: answers its peers' requests from now on, reloads held
    /// proposals, audits job outcomes, and keeps the peers' offers in sync.
    pub fn start(
        mesh: Arc<Mesh>,
        jobs: Arc<Jobs>,
        names: Vec<String>,
        policy: PolicySection,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Arc<Service>> {
        let audit = AuditLog::open(data_dir)?;
        let svc = Arc::new(Service {
            me: mesh.me(),
            names,
            mesh: mesh.clone(),
            jobs: jobs.clone(),
            audit,
            policy,
            pending: Mutex::default(),
            waiting: Mutex::default(),
            tracked: Mutex::default(),
            counters: Mutex::default(),
            synced: Mutex::default(),
        });
        svc.reload_held()?;
        mesh.set_control_handler(Arc::new(Handler(Arc::downgrade(&svc))));
        let weak = Arc::downgrade(&svc);
        jobs.on_finish(move |r| {
            if let Some(svc) = weak.upgrade() {
                svc.finished(r);
            }
        });
        let weak = Arc::downgrade(&svc);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(svc) = weak.upgrade() else { return };
                svc.housekeeping().await;
            }
        });
        Ok(svc)
    }

    fn store(&self) -> &Arc<Store> {
        self.jobs.store()
    }

    fn role(&self) -> Role {
        Role::of(self.me)
    }

    fn name_of(&self, p: PartyId) -> &str {
        &self.names[p.index()]
    }

    fn others(&self) -> Vec<PartyId> {
        self.mesh.others().collect()
    }

    fn who(&self, p: PartyId) -> String {
        format!("{} ({p}, {:?})", Role::of(p), self.name_of(p))
    }

    fn log(&self, entry: Entry) {
        if let Err(e) = self.audit.append(&entry) {
            tracing::error!(error = %format!("{e:#}"), "cannot write the audit log");
        }
    }

    fn entry(&self, event: &str, job: &str, peer: PartyId, work: &ProposedWork, decision: &str) -> Entry {
        Entry {
            time_unix_ms: now_ms(),
            event: event.into(),
            job: job.into(),
            peer: self.name_of(peer).into(),
            role: Role::of(peer).to_string(),
            kind: work.kind().into(),
            model: work.model(),
            rows: work.rows(),
            decision: decision.into(),
            reason: None,
            bytes: None,
        }
    }

    async fn ask(&self, p: PartyId, msg: &Message, timeout: Duration) -> anyhow::Result<Answer> {
        let body = serde_json::to_vec(msg)?;
        let raw = self.mesh.request(p, &body, timeout).await?;
        let answer: Answer = serde_json::from_slice(&raw)
            .with_context(|| format!("{}'s node answered something unreadable", Role::of(p)))?;
        Ok(answer)
    }

    async fn handle(self: Arc<Self>, from: PartyId, msg: Message) -> Answer {
        let r = match msg {
            Message::Offer { offer } => self.on_offer(from, *offer).map(|()| Answer::Ok),
            Message::Propose { proposal } => Ok(Answer::Decision { decision: self.on_propose(from, proposal) }),
            Message::Decided { job, decision } => self.on_decided(from, &job, decision).map(|()| Answer::Ok),
            Message::Start { job } => self.on_start(from, &job).map(|()| Answer::Ok),
            Message::Cancel { job, reason } => {
                self.on_cancel(from, &job, &reason);
                Ok(Answer::Ok)
            }
            Message::Usage { model } => Ok(Answer::Usage { usage: self.usage_of(&model, self.name_of(from)) }),
            Message::PlanOf { job } => {
                let plan = job.parse::<JobId>().ok().and_then(|id| self.jobs.get(id)).map(|r| r.plan);
                Ok(Answer::Plan { plan: plan.and_then(|p| serde_json::to_value(p).ok()) })
            }
        };
        r.unwrap_or_else(|e| Answer::Error { message: format!("{e:#}") })
    }

    // ---- publishing -------------------------------------------------------------------------

    /// Alice: stores `policy` for model `name` (already published) and sends the offer to both
    /// peers.
    pub async fn offer(&self, name: &str, policy: &ModelPolicy) -> anyhow::Result<Vec<Delivery>> {
        anyhow::ensure!(self.role() == Role::Alice, "only alice's node offers models");
        policy.check()?;
        self.store().put("policies", name, &serde_json::to_vec(policy)?)?;
        let mut out = Vec::new();
        for p in self.others() {
            let r = self.send_offer(p, name).await;
            out.push(Delivery {
                role: Role::of(p),
                name: self.name_of(p).into(),
                delivered: r.is_ok(),
                error: r.err().map(|e| format!("{e:#}")),
            });
        }
        Ok(out)
    }

    fn offer_for(&self, p: PartyId, name: &str) -> anyhow::Result<Option<Offer>> {
        let Some(raw) = self.store().get("plans", name)? else { return Ok(None) };
        let Some(praw) = self.store().get("policies", name)? else { return Ok(None) };
        let plan: mpc_ml::Plan = serde_json::from_slice(&raw)?;
        let policy: ModelPolicy = serde_json::from_slice(&praw)?;
        Ok(Some(Offer {
            name: name.into(),
            owner: self.name_of(self.me).into(),
            plan_hash: hex(&plan.hash()),
            plan,
            terms: (Role::of(p) == Role::Bob).then(|| policy.terms_for(self.name_of(p))),
            published_unix_ms: now_ms(),
        }))
    }

    async fn send_offer(&self, p: PartyId, name: &str) -> anyhow::Result<()> {
        let offer = self.offer_for(p, name)?.with_context(|| format!("no published model {name:?}"))?;
        match self.ask(p, &Message::Offer { offer: Box::new(offer) }, Duration::from_secs(30)).await? {
            Answer::Ok => Ok(()),
            Answer::Error { message } => anyhow::bail!("{}'s node did not store the offer: {message}", Role::of(p)),
            other => anyhow::bail!("{}'s node answered {other:?}", Role::of(p)),
        }
    }

    fn on_offer(&self, from: PartyId, offer: Offer) -> anyhow::Result<()> {
        anyhow::ensure!(Role::of(from) == Role::Alice, "only alice's node offers models; {} sent one", self.who(from));
        anyhow::ensure!(self.role() != Role::Alice, "alice's node takes no offers");
        crate::ml::check_name(&offer.name)?;
        offer.plan.validate()?;
        anyhow::ensure!(offer.plan.batch() == 1, "an offer's plan must be for batch 1");
        anyhow::ensure!(offer.plan_hash == hex(&offer.plan.hash()), "the offer's plan hash does not match its plan");
        let store = self.store();
        let pinned = store.get("pins", &offer.name)?.map(|b| String::from_utf8_lossy(&b).into_owned());
        if store.get("trained", &offer.name)?.is_some() {
            anyhow::bail!("{:?} names a privately trained model here; publish under another name", offer.name);
        }
        store.put("offers", &offer.name, &serde_json::to_vec(&offer)?)?;
        match pinned {
            Some(h) if h != offer.plan_hash => tracing::warn!(
                model = %offer.name, pinned = %h, offered = %offer.plan_hash,
                "alice offers another plan than the one pinned here (`register`); keeping the pinned plan"
            ),
            _ => {
                store.put("plans", &offer.name, &serde_json::to_vec(&offer.plan)?)?;
                self.jobs.plan_changed(&offer.name, &offer.plan);
                tracing::info!(model = %offer.name, plan_hash = %offer.plan_hash, "model offered");
            }
        }
        Ok(())
    }

    /// Bob, dealer: pins a plan registered by hand: offers of another plan under its name do not
    /// replace it.
    pub fn pin(&self, name: &str, plan: &mpc_ml::Plan) -> anyhow::Result<()> {
        self.store().put("pins", name, hex(&plan.hash()).as_bytes())
    }

    async fn housekeeping(&self) {
        // Held proposals past [policy] hold_s are refused; accepted ones never started dropped.
        let hold = Duration::from_secs(self.policy.hold_s);
        let expired: Vec<(JobId, bool)> = {
            let pending = self.pending.lock().expect("pending lock");
            pending
                .iter()
                .filter(|(_, p)| if p.held { p.since.elapsed() > hold } else { p.since.elapsed() > ACCEPTED_TTL })
                .map(|(id, p)| (*id, p.held))
                .collect()
        };
        for (id, held) in expired {
            if held {
                let reason = format!("not approved within {} s ([policy] hold_s)", self.policy.hold_s);
                let _ = self.decide_held(id, false, Some(reason), None).await;
            } else if let Some(p) = self.pending.lock().expect("pending lock").remove(&id) {
                let mut e = self.entry("decided", &p.proposal.job, p.from, &p.proposal.work, "expired");
                e.reason = Some("accepted, but the proposer never started it".into());
                self.log(e);
            }
        }
        // Alice: a peer that (re)connected gets every offer again.
        if self.role() != Role::Alice {
            return;
        }
        for p in self.others() {
            let Some(epoch) = self.mesh.connection_epoch(p) else { continue };
            if self.synced.lock().expect("synced lock")[p.index()] == Some(epoch) {
                continue;
            }
            let names = self.store().list("policies").unwrap_or_default();
            let mut ok = true;
            for name in &names {
                if let Err(e) = self.send_offer(p, name).await {
                    tracing::debug!(peer = %p, model = %name, error = %format!("{e:#}"), "offer not delivered");
                    ok = false;
                }
            }
            if ok {
                self.synced.lock().expect("synced lock")[p.index()] = Some(epoch);
            }
        }
    }

    // ---- proposing (the requesting node) ----------------------------------------------------

    /// Validates `req` on this node, records the job as proposed and proposes it to the peers;
    /// the job starts when both accept. Returns its id at once.
    pub fn request(self: &Arc<Self>, req: Request) -> Result<JobId, SubmitError> {
        if self.role() != Role::Bob {
            return Err(SubmitError::Invalid(format!(
                "only bob's node requests predictions, training and statistics (the rows are his); this is {}",
                self.role()
            )));
        }
        let (jr, train) = match req {
            Request::Predict(r) => (
                JobRequest::Predict(PredictJob {
                    id: None,
                    model: r.model,
                    batch: None,
                    input: Some(r.input),
                    output: Some(r.output),
                    micro_batch: r.micro_batch,
                }),
                None,
            ),
            Request::Train(t) => (JobRequest::Train(TrainJob { id: None, train: t.clone() }), Some(t)),
            Request::Analyze(a) => (JobRequest::Analyze(AnalyzeJob { id: None, analyze: a }), None),
        };
        let job = self.jobs.prepare(&jr)?;
        let work = match (&job.plan, job.predict(), job.train(), job.analyze()) {
            (JobPlan::Predict { model, .. }, Some(p), _, _) => ProposedWork::Predict {
                model: model.clone(),
                rows: p.rows as u64,
                plan_hash: hex(&p.plan.hash()),
                plan_fields: plan_fields(&p.plan),
            },
            (_, _, Some(p), _) => {
                let t = train.expect("a train request");
                let classes = match &p.plan.config.arch {
                    mpc_ml::train::Arch::Mlp { classes, .. } => *classes,
                    _ => 1,
                };
                ProposedWork::Train {
                    train: crate::ml::TrainRequest {
                        samples: Some(p.plan.samples),
                        features: Some(p.plan.features),
                        classes: Some(classes),
                        data: None,
                        label: None,
                        export: None,
                        ..t
                    },
                }
            }
            (_, _, _, Some(p)) => ProposedWork::Analyze { plan: p.plan.clone() },
            _ => return Err(SubmitError::Internal("an unexpected job kind".into())),
        };
        self.mesh.check_peers().map_err(|e| SubmitError::PeerDown(format!("{e:#}")))?;
        self.jobs.record(&job, JobState::Proposed)?;
        let id = job.id;
        let proposal = Proposal { job: id.to_string(), work };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.waiting.lock().expect("waiting lock").insert(id, tx);
        for p in self.others() {
            self.log(self.entry("proposed", &proposal.job, p, &proposal.work, "proposed"));
        }
        self.tracked.lock().expect("tracked lock").insert(
            id,
            Tracked {
                peer: self.me,
                kind: proposal.work.kind().into(),
                model: proposal.work.model(),
                rows: proposal.work.rows(),
                charged: None,
            },
        );
        tracing::info!(job = %id, kind = proposal.work.kind(), "job proposed to the peers");
        let svc = self.clone();
        tokio::spawn(async move {
            let outcome = svc.negotiate(&proposal, rx).await;
            svc.waiting.lock().expect("waiting lock").remove(&id);
            match outcome {
                Ok(decisions) => {
                    svc.jobs.set_pending(id, JobState::Joining, "join", None, &decisions);
                    if let Err(e) = svc.jobs.launch(svc.mesh.clone(), job) {
                        svc.jobs.set_pending(id, JobState::Failed, "start", Some(e.to_string()), &decisions);
                    }
                }
                Err((state, error, decisions)) => {
                    tracing::info!(job = %id, error = %error, "proposal not accepted");
                    svc.jobs.set_pending(id, state, "proposal", Some(error.clone()), &decisions);
                    let mut e = svc.entry(
                        "outcome",
                        &proposal.job,
                        svc.me,
                        &proposal.work,
                        &format!("{state:?}").to_lowercase(),
                    );
                    e.reason = Some(error);
                    svc.log(e);
                    svc.tracked.lock().expect("tracked lock").remove(&id);
                }
            }
        });
        Ok(id)
    }

    /// Proposes, waits for every peer's decision (held ones until decided), and tells both to
    /// start. On any refusal or failure the others are told to forget the job.
    async fn negotiate(
        &self,
        proposal: &Proposal,
        mut decided: tokio::sync::mpsc::UnboundedReceiver<(PartyId, Decision)>,
    ) -> Result<BTreeMap<String, String>, (JobState, String, BTreeMap<String, String>)> {
        let id: JobId = proposal.job.parse().expect("own id");
        let msg = Message::Propose { proposal: proposal.clone() };
        let peers = self.others();
        let answers = futures::future::join_all(peers.iter().map(|&p| self.ask(p, &msg, DECIDE_TIMEOUT))).await;
        let mut decisions = BTreeMap::new();
        let mut state: BTreeMap<PartyId, Decision> = BTreeMap::new();
        let mut failure: Option<(JobState, String)> = None;
        for (p, a) in peers.iter().copied().zip(answers) {
            let key = Role::of(p).to_string();
            match a {
                Ok(Answer::Decision { decision }) => {
                    decisions.insert(key, describe(&decision));
                    if let Decision::Refused { reason } = &decision {
                        failure.get_or_insert((JobState::Refused, format!("refused by {}: {reason}", self.who(p))));
                    }
                    state.insert(p, decision);
                }
                Ok(Answer::Error { message }) => {
                    decisions.insert(key, format!("error: {message}"));
                    failure.get_or_insert((JobState::Failed, format!("{} could not decide: {message}", self.who(p))));
                }
                Ok(other) => {
                    failure.get_or_insert((JobState::Failed, format!("{} answered {other:?}", self.who(p))));
                }
                Err(e) => {
                    decisions.insert(key, "no answer".into());
                    failure.get_or_insert((
                        JobState::Failed,
                        format!("the proposal did not reach {}: {e:#}", self.who(p)),
                    ));
                }
            }
        }
        if let Some((s, e)) = failure {
            self.cancel_all(proposal, &e).await;
            return Err((s, e, decisions));
        }
        let hold_limit = Duration::from_secs(self.policy.hold_s) + Duration::from_secs(60);
        let deadline = Instant::now() + hold_limit;
        while let Some((&p, Decision::Held { reason })) = state.iter().find(|(_, d)| matches!(d, Decision::Held { .. }))
        {
            let step = format!("held by {}: {reason}", self.who(p));
            self.jobs.set_pending(id, JobState::Held, &step, None, &decisions);
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, decided.recv()).await {
                Ok(Some((from, d))) if state.contains_key(&from) => {
                    decisions.insert(Role::of(from).to_string(), describe(&d));
                    if let Decision::Refused { reason } = &d {
                        let e = format!("refused by {}: {reason}", self.who(from));
                        self.cancel_all(proposal, &e).await;
                        return Err((JobState::Refused, e, decisions));
                    }
                    state.insert(from, d);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    let e = format!("{} did not decide within {} s", self.who(p), hold_limit.as_secs());
                    self.cancel_all(proposal, &e).await;
                    return Err((JobState::Failed, e, decisions));
                }
            }
        }
        self.jobs.set_pending(id, JobState::Proposed, "accepted by every peer; starting", None, &decisions);
        let start = Message::Start { job: proposal.job.clone() };
        let started = futures::future::join_all(peers.iter().map(|&p| self.ask(p, &start, DECIDE_TIMEOUT))).await;
        for (p, r) in peers.iter().copied().zip(started) {
            let problem = match r {
                Ok(Answer::Ok) => continue,
                Ok(Answer::Error { message }) => message,
                Ok(other) => format!("{other:?}"),
                Err(e) => format!("{e:#}"),
            };
            let e = format!("{} accepted but could not start the job: {problem}", self.who(p));
            self.cancel_all(proposal, &e).await;
            return Err((JobState::Failed, e, decisions));
        }
        Ok(decisions)
    }

    async fn cancel_all(&self, proposal: &Proposal, reason: &str) {
        let msg = Message::Cancel { job: proposal.job.clone(), reason: reason.into() };
        let _ = futures::future::join_all(self.others().into_iter().map(|p| self.ask(p, &msg, Duration::from_secs(5))))
            .await;
    }

    fn on_decided(&self, from: PartyId, job: &str, decision: Decision) -> anyhow::Result<()> {
        let id: JobId = job.parse()?;
        let waiting = self.waiting.lock().expect("waiting lock");
        let tx = waiting.get(&id).with_context(|| format!("no proposal {job} waits here"))?;
        let _ = tx.send((from, decision));
        Ok(())
    }

    // ---- deciding (the peers) ---------------------------------------------------------------

    fn on_propose(&self, from: PartyId, proposal: Proposal) -> Decision {
        let (decision, job) = self.decide(from, &proposal);
        let id: Option<JobId> = proposal.job.parse().ok();
        let word = match &decision {
            Decision::Accepted => "accepted",
            Decision::Held { .. } => "held",
            Decision::Refused { .. } => "refused",
        };
        let mut e = self.entry("decided", &proposal.job, from, &proposal.work, word);
        e.reason = match &decision {
            Decision::Held { reason } | Decision::Refused { reason } => Some(reason.clone()),
            Decision::Accepted => None,
        };
        // The decision is on disk before the proposer hears of it.
        if let Err(err) = self.audit.append(&e) {
            return Decision::Refused { reason: format!("this node cannot write its audit log: {err:#}") };
        }
        tracing::info!(job = %proposal.job, peer = %self.name_of(from), kind = proposal.work.kind(), decision = word, "proposal decided");
        let (Some(id), false) = (id, matches!(decision, Decision::Refused { .. })) else { return decision };
        let held = matches!(decision, Decision::Held { .. });
        let reason = match &decision {
            Decision::Held { reason } => Some(reason.clone()),
            _ => None,
        };
        if held {
            let rec = HeldRecord {
                from: from.0,
                proposal: proposal.clone(),
                since_unix_ms: now_ms(),
                reason: reason.clone().unwrap_or_default(),
            };
            if let Err(err) = serde_json::to_vec(&rec)
                .map_err(anyhow::Error::from)
                .and_then(|b| self.store().put("held", &proposal.job, &b))
            {
                return Decision::Refused { reason: format!("this node cannot store the held proposal: {err:#}") };
            }
        }
        self.pending
            .lock()
            .expect("pending lock")
            .insert(id, Pending { from, proposal, held, since: Instant::now(), since_unix_ms: now_ms(), job, reason });
        decision
    }

    /// The decision on a proposal, and the job prepared if it is accepted.
    fn decide(&self, from: PartyId, proposal: &Proposal) -> (Decision, Option<PreparedJob>) {
        let refuse = |reason: String| (Decision::Refused { reason }, None);
        let org = self.name_of(from).to_string();
        if let Some(serve) = &self.policy.serve
            && !serve.contains(&org)
        {
            return refuse(format!(
                "serve: {} serves only {} ([policy] serve); {org:?} is not among them",
                self.who(self.me),
                serve.join(", ")
            ));
        }
        if Role::of(from) != Role::Bob {
            return refuse(format!("only bob (the data owner) proposes jobs; {} did", self.who(from)));
        }
        let Ok(id) = proposal.job.parse::<JobId>() else { return refuse("an invalid job id".into()) };
        if self.jobs.get(id).is_some() || self.pending.lock().expect("pending lock").contains_key(&id) {
            return refuse(format!("job {id} already exists on {}", self.who(self.me)));
        }
        // The dealer's (any node's) daily budget for jobs it joins.
        if let Err(reason) = self.check_budget(proposal.work.rows(), false) {
            return refuse(reason);
        }
        let mut held: Option<String> = None;
        let req = match &proposal.work {
            ProposedWork::Predict { model, rows, plan_hash, plan_fields: theirs } => {
                if self.role() == Role::Alice {
                    match self.check_model_policy(&org, from, model, *rows) {
                        Ok(h) => held = h,
                        Err(reason) => return refuse(reason),
                    }
                }
                // The plan must be the one this node runs: name what differs.
                match self.store().get("plans", model) {
                    Ok(Some(raw)) => {
                        if let Ok(ours) = serde_json::from_slice::<mpc_ml::Plan>(&raw)
                            && hex(&ours.hash()) != *plan_hash
                        {
                            let diff = describe_differences(&plan_fields(&ours), theirs, 6);
                            return refuse(format!(
                                "plan: {}'s plan for {model:?} (hash {}) differs from the one on {} (hash {}): {diff}. \
                                 Bob pinned another version with `register`, or alice published again: `party-node \
                                 models` on bob's node shows the offered plan; register it again, or ask alice",
                                Role::of(from),
                                &plan_hash[..plan_hash.len().min(16)],
                                self.who(self.me),
                                &hex(&ours.hash())[..16]
                            ));
                        }
                    }
                    Ok(None) => {
                        return refuse(format!(
                            "no model {model:?} on {}{}",
                            self.who(self.me),
                            if self.role() == Role::Alice { "" } else { " (alice has not offered it to this node)" }
                        ));
                    }
                    Err(e) => return refuse(format!("this node cannot read its plans: {e:#}")),
                }
                JobRequest::Predict(PredictJob {
                    id: Some(proposal.job.clone()),
                    model: model.clone(),
                    batch: Some(*rows as usize),
                    ..Default::default()
                })
            }
            ProposedWork::Train { train } => {
                match self.policy.train {
                    Approval::Refuse => {
                        return refuse(format!(
                            "policy: {} takes no part in training ([policy] train = \"refuse\")",
                            self.who(self.me)
                        ));
                    }
                    Approval::Manual => {
                        held = Some(format!(
                            "training needs {}'s approval ([policy] train = \"manual\"): `party-node approve {}` on its node",
                            self.role(),
                            proposal.job
                        ))
                    }
                    Approval::Auto => {}
                }
                if train.data.is_some() || train.label.is_some() || train.export.is_some() {
                    return refuse("a training proposal carries no data, label or export path".into());
                }
                JobRequest::Train(TrainJob { id: Some(proposal.job.clone()), train: train.clone() })
            }
            ProposedWork::Analyze { plan } => {
                match self.policy.analyze {
                    Approval::Refuse => {
                        return refuse(format!(
                            "policy: {} computes no statistics for peers ([policy] analyze = \"refuse\")",
                            self.who(self.me)
                        ));
                    }
                    Approval::Manual => {
                        held = Some(format!(
                            "statistics need {}'s approval ([policy] analyze = \"manual\"): `party-node approve {}` on its node",
                            self.role(),
                            proposal.job
                        ))
                    }
                    Approval::Auto => {}
                }
                if self.role() == Role::Alice && plan.rows[0] > 0 {
                    held = Some(format!(
                        "the statistics include {} rows of alice's: `party-node approve {} --data FILE` on her node",
                        plan.rows[0], proposal.job
                    ));
                    // Prepared when approved, with her data.
                    return (Decision::Held { reason: held.expect("set") }, None);
                }
                JobRequest::Analyze(AnalyzeJob {
                    id: Some(proposal.job.clone()),
                    analyze: crate::ml::AnalyzeRequest { plan: Some(plan.clone()), ..Default::default() },
                })
            }
        };
        let job = match self.jobs.prepare(&req) {
            Ok(j) => j,
            Err(e) => return refuse(format!("{} cannot run it: {e}", self.who(self.me))),
        };
        match held {
            Some(reason) => (Decision::Held { reason }, Some(job)),
            None => (Decision::Accepted, Some(job)),
        }
    }

    /// Alice: whether `org` may predict `rows` rows of `model` now. `Ok(Some(reason))`: held
    /// for manual approval.
    fn check_model_policy(&self, org: &str, from: PartyId, model: &str, rows: u64) -> Result<Option<String>, String> {
        let store = self.store();
        if store.get("trained", model).map_err(|e| format!("{e:#}"))?.is_some() {
            // A model trained on Bob's data with Alice serves its trainer.
            return if Role::of(from) == Role::Bob { Ok(None) } else { Err(format!("{model:?} serves bob only")) };
        }
        let policy: ModelPolicy = match store.get("policies", model).map_err(|e| format!("{e:#}"))? {
            Some(raw) => {
                serde_json::from_slice(&raw).map_err(|e| format!("the policy of {model:?} is unreadable: {e}"))?
            }
            None => {
                return Err(format!(
                    "policy: alice has not offered {model:?} for requests (no policy; she publishes it with --allow)"
                ));
            }
        };
        if !policy.allows(org) {
            return Err(format!("allow: {model:?} is not offered to {org:?} (alice's publish --allow)"));
        }
        if let Some(max) = policy.max_batch
            && rows > max
        {
            return Err(format!("max batch: {rows} rows requested, at most {max} per job (split the input)"));
        }
        let usage = self.usage_of_model(model).get(org).copied().unwrap_or_default();
        check_quota(&policy, &usage, rows)?;
        Ok((policy.approval == Approval::Manual)
            .then(|| format!("alice approves each prediction of {model:?} by hand (publish --approval manual)")))
    }

    fn usage_of_model(&self, model: &str) -> BTreeMap<String, Usage> {
        match self.store().get("usage", model) {
            Ok(Some(raw)) => serde_json::from_slice(&raw).unwrap_or_default(),
            _ => BTreeMap::new(),
        }
    }

    fn usage_of(&self, model: &str, org: &str) -> Option<Usage> {
        if self.role() != Role::Alice || crate::ml::check_name(model).is_err() {
            return None;
        }
        Some(self.usage_of_model(model).get(org).copied().unwrap_or_default())
    }

    /// Adds `rows` (negative: a refund) to `org`'s use of `model`, on disk before it returns.
    fn charge(&self, model: &str, org: &str, rows: i64, check: Option<&ModelPolicy>) -> Result<(), String> {
        let _g = self.counters.lock().expect("counters lock");
        let mut all = self.usage_of_model(model);
        let u = all.entry(org.into()).or_default();
        if let Some(p) = check {
            check_quota(p, u, rows.max(0) as u64)?;
        }
        let day = today();
        if u.day != day {
            u.day = day;
            u.today = 0;
        }
        u.total = u.total.saturating_add_signed(rows);
        u.today = u.today.saturating_add_signed(rows);
        let bytes = serde_json::to_vec(&all).map_err(|e| e.to_string())?;
        self.store().put("usage", model, &bytes).map_err(|e| format!("cannot record the quota use: {e:#}"))
    }

    /// Checks (and with `charge`, counts) a job of `rows` rows against `[policy] jobs_per_day`
    /// and `rows_per_day`.
    fn check_budget(&self, rows: u64, charge: bool) -> Result<(), String> {
        if self.policy.jobs_per_day.is_none() && self.policy.rows_per_day.is_none() {
            return Ok(());
        }
        let _g = self.counters.lock().expect("counters lock");
        let mut b: Budget = match self.store().get("budget", "daily") {
            Ok(Some(raw)) => serde_json::from_slice(&raw).unwrap_or_default(),
            _ => Budget::default(),
        };
        if b.day != today() {
            b = Budget { day: today(), jobs: 0, rows: 0 };
        }
        let who = self.who(self.me);
        if let Some(max) = self.policy.jobs_per_day
            && b.jobs + 1 > max
        {
            return Err(format!(
                "budget: {who} joins {max} jobs a day ([policy] jobs_per_day), {} joined today",
                b.jobs
            ));
        }
        if let Some(max) = self.policy.rows_per_day
            && b.rows + rows > max
        {
            return Err(format!(
                "budget: {who} serves {max} rows a day ([policy] rows_per_day), {} used today, {rows} requested",
                b.rows
            ));
        }
        if charge {
            b.jobs += 1;
            b.rows += rows;
            let bytes = serde_json::to_vec(&b).map_err(|e| e.to_string())?;
            self.store().put("budget", "daily", &bytes).map_err(|e| format!("cannot record the budget: {e:#}"))?;
        }
        Ok(())
    }

    fn on_start(&self, from: PartyId, job: &str) -> anyhow::Result<()> {
        let id: JobId = job.parse()?;
        let p = {
            let mut pending = self.pending.lock().expect("pending lock");
            match pending.get(&id) {
                Some(p) if p.from == from && !p.held && p.job.is_some() => pending.remove(&id).expect("present"),
                Some(p) if p.held => anyhow::bail!("job {job} is still held for approval here"),
                _ => anyhow::bail!("no accepted proposal {job} from {} here (expired?)", Role::of(from)),
            }
        };
        let org = self.name_of(from).to_string();
        let rows = p.proposal.work.rows();
        let mut charged = None;
        if let (Role::Alice, ProposedWork::Predict { model, .. }) = (self.role(), &p.proposal.work)
            && self.store().get("trained", model)?.is_none()
        {
            let policy: Option<ModelPolicy> =
                self.store().get("policies", model)?.map(|r| serde_json::from_slice(&r)).transpose()?;
            let policy = policy.context("the model's policy vanished")?;
            if let Err(reason) = self.charge(model, &org, rows as i64, Some(&policy)) {
                anyhow::bail!("{reason}");
            }
            charged = Some(org.clone());
        }
        self.check_budget(rows, true).map_err(anyhow::Error::msg)?;
        let job = p.job.expect("checked");
        let tracked = Tracked {
            peer: from,
            kind: p.proposal.work.kind().into(),
            model: p.proposal.work.model(),
            rows,
            charged: charged.clone(),
        };
        let r = self.jobs.record(&job, JobState::Joining).map_err(anyhow::Error::from).and_then(|()| {
            self.tracked.lock().expect("tracked lock").insert(id, tracked);
            self.jobs.launch(self.mesh.clone(), job).map_err(anyhow::Error::from)
        });
        if let Err(e) = r {
            if let (Some(org), ProposedWork::Predict { model, .. }) = (charged, &p.proposal.work) {
                let _ = self.charge(model, &org, -(rows as i64), None);
            }
            return Err(e);
        }
        tracing::info!(job = %id, peer = %org, "proposed job started");
        Ok(())
    }

    fn on_cancel(&self, from: PartyId, job: &str, reason: &str) {
        let Ok(id) = job.parse::<JobId>() else { return };
        let removed = {
            let mut pending = self.pending.lock().expect("pending lock");
            match pending.get(&id) {
                Some(p) if p.from == from => pending.remove(&id),
                _ => None,
            }
        };
        if let Some(p) = removed {
            if p.held {
                let _ = self.remove_held(job);
            }
            let mut e = self.entry("decided", job, from, &p.proposal.work, "cancelled");
            e.reason = Some(reason.chars().take(300).collect());
            self.log(e);
        }
    }

    fn remove_held(&self, job: &str) -> anyhow::Result<()> {
        // The store has no delete: an empty item marks a decided proposal.
        self.store().put("held", job, b"")
    }

    fn reload_held(&self) -> anyhow::Result<()> {
        for name in self.store().list("held")? {
            let Some(raw) = self.store().get("held", &name)? else { continue };
            if raw.is_empty() {
                continue;
            }
            let rec: HeldRecord = serde_json::from_slice(&raw).with_context(|| format!("held/{name} is unreadable"))?;
            let Ok(id) = rec.proposal.job.parse::<JobId>() else { continue };
            let elapsed = Duration::from_millis(now_ms().saturating_sub(rec.since_unix_ms));
            let since = Instant::now().checked_sub(elapsed).unwrap_or_else(Instant::now);
            self.pending.lock().expect("pending lock").insert(
                id,
                Pending {
                    from: PartyId(rec.from),
                    proposal: rec.proposal,
                    held: true,
                    since,
                    since_unix_ms: rec.since_unix_ms,
                    job: None,
                    reason: Some(rec.reason),
                },
            );
        }
        Ok(())
    }

    /// The proposals held here for approval.
    pub fn held(&self) -> Vec<HeldProposal> {
        let pending = self.pending.lock().expect("pending lock");
        let mut v: Vec<HeldProposal> = pending
            .values()
            .filter(|p| p.held)
            .map(|p| HeldProposal {
                job: p.proposal.job.clone(),
                peer: self.name_of(p.from).into(),
                role: Role::of(p.from),
                kind: p.proposal.work.kind().into(),
                model: p.proposal.work.model(),
                rows: p.proposal.work.rows(),
                reason: p.reason.clone().unwrap_or_default(),
                since_unix_ms: p.since_unix_ms,
                work: p.proposal.work.clone(),
            })
            .collect();
        v.sort_by_key(|h| h.since_unix_ms);
        v
    }

    /// Approves (`approve`) or refuses a held proposal and tells the proposer. `data`: Alice's
    /// rows for statistics that include them.
    pub async fn decide_held(
        &self,
        id: JobId,
        approve: bool,
        reason: Option<String>,
        data: Option<String>,
    ) -> anyhow::Result<()> {
        let (from, proposal) = {
            let pending = self.pending.lock().expect("pending lock");
            let p =
                pending.get(&id).filter(|p| p.held).with_context(|| format!("no held proposal {id} on this node"))?;
            (p.from, p.proposal.clone())
        };
        let decision = if approve {
            // Prepared now: the node's state (plans, memory) may have changed since it arrived.
            let req = match &proposal.work {
                ProposedWork::Predict { model, rows, .. } => JobRequest::Predict(PredictJob {
                    id: Some(proposal.job.clone()),
                    model: model.clone(),
                    batch: Some(*rows as usize),
                    ..Default::default()
                }),
                ProposedWork::Train { train } => {
                    JobRequest::Train(TrainJob { id: Some(proposal.job.clone()), train: train.clone() })
                }
                ProposedWork::Analyze { plan } => {
                    anyhow::ensure!(
                        data.is_some() || self.role() != Role::Alice || plan.rows[0] == 0,
                        "these statistics include {} rows of alice's: give them with --data FILE",
                        plan.rows[0]
                    );
                    JobRequest::Analyze(AnalyzeJob {
                        id: Some(proposal.job.clone()),
                        analyze: crate::ml::AnalyzeRequest {
                            plan: Some(plan.clone()),
                            data: data.clone(),
                            ..Default::default()
                        },
                    })
                }
            };
            let prepared = self.jobs.prepare(&req).map_err(anyhow::Error::from)?;
            let mut pending = self.pending.lock().expect("pending lock");
            let p = pending.get_mut(&id).context("the proposal was cancelled meanwhile")?;
            p.held = false;
            p.job = Some(prepared);
            p.since = Instant::now();
            Decision::Accepted
        } else {
            self.pending.lock().expect("pending lock").remove(&id);
            Decision::Refused {
                reason: format!("refused by hand: {}", reason.clone().unwrap_or_else(|| "no reason given".into())),
            }
        };
        self.remove_held(&proposal.job)?;
        let mut e =
            self.entry("decided", &proposal.job, from, &proposal.work, if approve { "approved" } else { "refused" });
        if let Decision::Refused { reason } = &decision {
            e.reason = Some(reason.clone());
        }
        self.audit.append(&e)?;
        let msg = Message::Decided { job: proposal.job.clone(), decision };
        match self.ask(from, &msg, Duration::from_secs(30)).await? {
            Answer::Ok => Ok(()),
            Answer::Error { message } => anyhow::bail!("{} did not take the decision: {message}", self.who(from)),
            other => anyhow::bail!("{} answered {other:?}", self.who(from)),
        }
    }

    /// Writes the outcome of a service job to the audit log; refunds rows not predicted.
    fn finished(&self, r: &JobRecord) {
        let Ok(id) = r.id.parse::<JobId>() else { return };
        let Some(t) = self.tracked.lock().expect("tracked lock").remove(&id) else { return };
        let ok = r.state == JobState::Done;
        if !ok && let (Some(org), Some(model)) = (&t.charged, &t.model) {
            let done = r.rows.map_or(0, |p| p.done);
            let refund = t.rows.saturating_sub(done);
            if refund > 0 {
                let _ = self.charge(model, org, -(refund as i64), None);
            }
        }
        self.log(Entry {
            time_unix_ms: now_ms(),
            event: "outcome".into(),
            job: r.id.clone(),
            peer: self.name_of(t.peer).into(),
            role: Role::of(t.peer).to_string(),
            kind: t.kind,
            model: t.model,
            rows: t.rows,
            decision: if ok { "done".into() } else { "failed".into() },
            reason: if ok { None } else { r.error.as_ref().map(|e| e.chars().take(300).collect()) },
            bytes: Some(r.wire_sent + r.wire_recv),
        });
    }

    // ---- the catalogue ----------------------------------------------------------------------

    /// The models this node knows, with terms and use; Bob's node asks Alice's for his use.
    pub async fn models(&self) -> anyhow::Result<Vec<ModelInfo>> {
        let store = self.store();
        let mut out = Vec::new();
        for (name, plan) in crate::ml::list(store)? {
            let plan_hash = hex(&plan.hash());
            let offer: Option<Offer> = store.get("offers", &name)?.and_then(|r| serde_json::from_slice(&r).ok());
            let policy: Option<ModelPolicy> =
                store.get("policies", &name)?.and_then(|r| serde_json::from_slice(&r).ok());
            let trained = store.get("trained", &name)?.is_some();
            let pinned = store.get("pins", &name)?.is_some();
            let source = if trained {
                "trained"
            } else if self.role() == Role::Alice {
                "published"
            } else if pinned {
                "registered"
            } else if offer.is_some() {
                "offered"
            } else {
                "registered"
            };
            let owner = if trained { "shared".into() } else { self.name_of(PartyId::P0).to_string() };
            let mut info = ModelInfo {
                name: name.clone(),
                owner,
                source: source.into(),
                output: plan.output,
                input: plan.input[1..].to_vec(),
                plan_hash: plan_hash.clone(),
                layers: plan.steps.iter().map(|s| s.kind.name().to_string()).collect(),
                terms: None,
                policy: None,
                usage: BTreeMap::new(),
                remaining_rows: None,
                remaining_rows_today: None,
                offered_plan_hash: offer.as_ref().filter(|o| o.plan_hash != plan_hash).map(|o| o.plan_hash.clone()),
            };
            if self.role() == Role::Alice {
                info.usage = self.usage_of_model(&name);
                info.policy = policy;
            } else if let Some(o) = &offer {
                info.terms = o.terms.clone();
            }
            out.push(info);
        }
        if self.role() == Role::Bob {
            let me = self.name_of(self.me).to_string();
            let asks = out.iter().map(|m| {
                let ask = m.terms.is_some().then(|| Message::Usage { model: m.name.clone() });
                async move {
                    match ask {
                        Some(msg) => self.ask(PartyId::P0, &msg, Duration::from_secs(3)).await.ok(),
                        None => None,
                    }
                }
            });
            let answers = futures::future::join_all(asks).await;
            for (m, a) in out.iter_mut().zip(answers) {
                if let (Some(Answer::Usage { usage: Some(u) }), Some(t)) = (a, &m.terms) {
                    let today_used = u.today_at(today());
                    m.remaining_rows = t.quota_rows.map(|q| q.saturating_sub(u.total));
                    m.remaining_rows_today = t.quota_rows_per_day.map(|q| q.saturating_sub(today_used));
                    m.usage.insert(me.clone(), u);
                }
            }
        }
        Ok(out)
    }
}

/// The public plan `peer`'s node recorded for job `job`, if it has one (asked over the mesh).
pub async fn peer_job_plan(mesh: &Mesh, peer: PartyId, job: JobId) -> Option<serde_json::Value> {
    let body = serde_json::to_vec(&Message::PlanOf { job: job.to_string() }).ok()?;
    let raw = mesh.request(peer, &body, Duration::from_secs(3)).await.ok()?;
    match serde_json::from_slice(&raw).ok()? {
        Answer::Plan { plan } => plan,
        _ => None,
    }
}

/// The fields in which two public job plans differ, as `field: ours vs theirs` (nested fields
/// joined with dots; at most `max`).
pub fn job_plan_differences(ours: &serde_json::Value, theirs: &serde_json::Value, max: usize) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value::Object;
        match (a, b) {
            (Object(x), Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    let null = serde_json::Value::Null;
                    walk(&name, x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), out);
                }
            }
            _ if a != b => {
                let show = |v: &serde_json::Value| {
                    let s = v.to_string();
                    if s.len() > 60 {
                        format!("{}…", &s[..s.char_indices().nth(57).map_or(s.len(), |(i, _)| i)])
                    } else {
                        s
                    }
                };
                out.push(format!("{prefix} {} vs {}", show(a), show(b)));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", ours, theirs, &mut out);
    let n = out.len();
    if n > max {
        out.truncate(max);
        out.push(format!("and {} more", n - max));
    }
    out
}

/// Checks `rows` more rows against a policy's quotas given the use so far.
fn check_quota(policy: &ModelPolicy, usage: &Usage, rows: u64) -> Result<(), String> {
    if let Some(q) = policy.quota_rows
        && usage.total + rows > q
    {
        return Err(format!("quota: {q} rows allowed, {} used, {rows} requested", usage.total));
    }
    if let Some(q) = policy.quota_rows_per_day {
        let used = usage.today_at(today());
        if used + rows > q {
            return Err(format!("daily quota: {q} rows a day allowed, {used} used today (UTC), {rows} requested"));
        }
    }
    Ok(())
}

fn describe(d: &Decision) -> String {
    match d {
        Decision::Accepted => "accepted".into(),
        Decision::Held { reason } => format!("held: {reason}"),
        Decision::Refused { reason } => format!("refused: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_name_the_rule_with_the_numbers() {
        let p = ModelPolicy { allow: vec!["bob".into()], quota_rows: Some(100), ..Default::default() };
        let u = Usage { total: 80, day: today(), today: 80 };
        assert_eq!(check_quota(&p, &u, 20), Ok(()));
        assert_eq!(check_quota(&p, &u, 40).unwrap_err(), "quota: 100 rows allowed, 80 used, 40 requested");
        let p = ModelPolicy { quota_rows_per_day: Some(50), ..p };
        let e = check_quota(&p, &Usage { total: 10, day: today(), today: 30 }, 21).unwrap_err();
        assert!(e.starts_with("daily quota: 50 rows a day allowed, 30 used today"), "{e}");
        // Yesterday's use does not count today.
        assert_eq!(check_quota(&p, &Usage { total: 10, day: today() - 1, today: 50 }, 50), Ok(()));
        assert!(p.allows("bob") && !p.allows("carol"));
        assert!(ModelPolicy { allow: vec![ANYONE.into()], ..Default::default() }.allows("carol"));
    }

    #[test]
    fn plan_differences_are_named() {
        use mpc_ml::{Layer, Model, op::act::Relu};
        let w = |r: usize, c: usize| ndarray::ArrayD::from_elem(ndarray::IxDyn(&[r, c]), 0.5);
        let net =
            Model::chain(vec![4], vec![Layer::linear(w(4, 3), None), Layer::of(Relu), Layer::linear(w(3, 2), None)]);
        let a = net.plan(1, mpc_ml::OutputPolicy::Logits, mpc_proto::FixedPoint::default()).unwrap();
        let b = net.plan(1, mpc_ml::OutputPolicy::Logits, mpc_proto::FixedPoint::new(20, 27).unwrap()).unwrap();
        let d = describe_differences(&plan_fields(&a), &plan_fields(&b), 6);
        assert!(d.contains("fixed"), "{d}");
        assert_eq!(describe_differences(&plan_fields(&a), &plan_fields(&a), 6), "");
    }
}
