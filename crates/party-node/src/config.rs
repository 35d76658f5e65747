//! The node's configuration file (TOML), its validation, and the loaded form the node runs on.
//!
//! ```toml
//! [node]
//! role = "alice"                 # alice = P0, bob = P1, dealer = P2
//! cert = "node.cert.pem"         # paths are relative to this file's directory
//! key = "node.key.pem"
//! data_dir = "data"
//!
//! [api]
//! listen = "127.0.0.1:7100"
//! token = "…"                    # bearer token of the control API
//!
//! [trust]
//! mode = "pinned"                # or "ca" with `ca = "consortium-ca.pem"`
//!
//! [consortium]                   # optional
//! mode = "dealer"                # or "2pc": two parties, no dealer (see [`Mode`])
//!
//! [[party]]                      # one entry per party: alice, bob and (mode "dealer") dealer
//! role = "alice"
//! name = "acme"
//! address = "127.0.0.1:7000"    # or a host name: "alice:7000", "node.acme.example:7000"
//! cert = "node.cert.pem"         # pinned mode: that party's certificate
//! ```
//!
//! A party's `address` is an IP socket address or `host:port`. Host names are resolved when
//! they are used — peers' on every connection attempt (so a peer whose address changes, e.g. a
//! restarted container, is found again), this node's own when it binds — because service
//! names (docker-compose, Kubernetes) only resolve once the service exists. A node whose own
//! address is a host name binds the unspecified address (`0.0.0.0:port`): the name may resolve
//! to an address the node does not own (a Kubernetes Service, a NAT); `[node] listen`
//! overrides the bind address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use mpc_proto::PartyId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::certs::{CertFile, CertInfo};
use crate::identity::check_name;

/// A party's role in the 2pc-dealer model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The model owner, P0.
    Alice,
    /// The data owner, P1 (learns outputs).
    Bob,
    /// The dealer, P2 (supplies correlated randomness).
    Dealer,
}

impl Role {
    /// All roles, in party order.
    pub const ALL: [Role; 3] = [Role::Alice, Role::Bob, Role::Dealer];

    /// The protocol party of this role.
    pub fn party(self) -> PartyId {
        match self {
            Role::Alice => PartyId::P0,
            Role::Bob => PartyId::P1,
            Role::Dealer => PartyId::P2,
        }
    }

    /// The role of a protocol party.
    pub fn of(p: PartyId) -> Role {
        Role::ALL[p.index()]
    }

    /// Lower-case name, as in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Alice => "alice",
            Role::Bob => "bob",
            Role::Dealer => "dealer",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a consortium makes the correlated randomness its jobs consume (`[consortium] mode`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum, schemars::JsonSchema,
)]
pub enum Mode {
    /// Three parties: a dealer node (P2) supplies it and helps with comparisons.
    #[default]
    #[serde(rename = "dealer")]
    #[value(name = "dealer")]
    Dealer,
    /// Two parties and no one else: Alice and Bob make it themselves with oblivious transfer and
    /// homomorphic encryption (`mpc_proto::TwoPartySource`). Slower and heavier on the wire; no
    /// third organisation.
    #[serde(rename = "2pc")]
    #[value(name = "2pc")]
    TwoParty,
}

impl Mode {
    /// The roles of a consortium in this mode, in party order.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Mode::Dealer => &Role::ALL,
            Mode::TwoParty => &Role::ALL[..2],
        }
    }

    /// The correlation source of this mode's sessions.
    pub fn correlations(self) -> mpc_proto::CorrelationMode {
        match self {
            Mode::Dealer => mpc_proto::CorrelationMode::Dealer,
            Mode::TwoParty => mpc_proto::CorrelationMode::TwoParty,
        }
    }

    /// As in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dealer => "dealer",
            Mode::TwoParty => "2pc",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[consortium]`: what every node of the consortium must agree on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsortiumSection {
    /// Where correlated randomness comes from, and so how many parties there are.
    pub mode: Mode,
}

impl ConsortiumSection {
    fn is_default(&self) -> bool {
        *self == ConsortiumSection::default()
    }
}

/// The config file as written on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// This node.
    pub node: NodeSection,
    /// The control API.
    pub api: ApiSection,
    /// How peers are authenticated.
    pub trust: TrustSection,
    /// The consortium's mode (optional: a dealer).
    #[serde(default, skip_serializing_if = "ConsortiumSection::is_default")]
    pub consortium: ConsortiumSection,
    /// The parties of the consortium (this node included).
    #[serde(default, rename = "party")]
    pub parties: Vec<PartySection>,
    /// Resource limits (all optional).
    #[serde(default, skip_serializing_if = "Limits::is_default")]
    pub limits: Limits,
    /// The network to the peers, for the comparison cost model (all optional).
    #[serde(default, skip_serializing_if = "LinkSection::is_default")]
    pub link: LinkSection,
    /// What this node agrees to when a peer proposes a job (all optional).
    #[serde(default, skip_serializing_if = "PolicySection::is_default")]
    pub policy: PolicySection,
}

/// How a node decides on a kind of job a peer proposes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// Accepted at once (if every other rule allows it).
    #[default]
    Auto,
    /// Held until this organisation runs `party-node approve ID` (or `refuse ID`).
    Manual,
    /// Always refused.
    Refuse,
}

impl std::fmt::Display for Approval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Approval::Auto => "auto",
            Approval::Manual => "manual",
            Approval::Refuse => "refuse",
        })
    }
}

impl std::str::FromStr for Approval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Approval::Auto),
            "manual" => Ok(Approval::Manual),
            "refuse" => Ok(Approval::Refuse),
            _ => Err(format!("approval {s:?}: use auto, manual or refuse")),
        }
    }
}

/// `[policy]`: what this node agrees to when a peer proposes a job (`party-node predict`,
/// `train`, `analyze` on another organisation's node). Which organisations may query which of
/// Alice's models, and their quotas, are set per model by `party-node publish` (`--allow`,
/// `--quota-rows`, …); these are the node-wide rules. Every field is optional.
///
/// ```toml
/// [policy]
/// serve = ["acme", "clinic"]  # organisations whose proposals this node considers (default: all peers)
/// train = "auto"              # training jobs a peer proposes: auto, manual (party-node approve) or refuse
/// analyze = "auto"            # statistics jobs; those that need this node's rows are always held
/// jobs_per_day = 1000         # budget: jobs per UTC day this node joins for its peers (the dealer's)
/// rows_per_day = 1000000      # budget: rows per UTC day (predictions) or samples (training)
/// hold_s = 3600               # a held proposal waits this long for approve/refuse, then is refused
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// Organisations (`[[party]] name`) whose proposals are considered; `None`: every peer.
    pub serve: Option<Vec<String>>,
    /// Training jobs proposed by a peer.
    pub train: Approval,
    /// Analytics jobs proposed by a peer.
    pub analyze: Approval,
    /// Jobs per UTC day joined for peers.
    pub jobs_per_day: Option<u64>,
    /// Rows per UTC day joined for peers.
    pub rows_per_day: Option<u64>,
    /// Seconds a held proposal waits for a decision.
    pub hold_s: u64,
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            serve: None,
            train: Approval::Auto,
            analyze: Approval::Auto,
            jobs_per_day: None,
            rows_per_day: None,
            hold_s: 3600,
        }
    }
}

impl PolicySection {
    fn is_default(&self) -> bool {
        *self == PolicySection::default()
    }

    fn check(&self, names: &[&str]) -> anyhow::Result<()> {
        for n in self.serve.iter().flatten() {
            ensure!(
                names.contains(&n.as_str()),
                "[policy] serve names {n:?}, which is not a [[party]] name (the parties are {})",
                names.join(", ")
            );
        }
        ensure!((1..=30 * 24 * 3600).contains(&self.hold_s), "[policy] hold_s must be between 1 s and 30 days");
        Ok(())
    }
}

/// `[link]`: what the comparison cost model assumes about the network between the parties
/// (`mpc_proto::compare::cost`). A model published here records it in its plan, so the choice
/// of comparison method per layer is the same on every node.
///
/// ```toml
/// [link]
/// rtt_ms = 20        # round-trip time to the peers; default: the mesh's measurement at
///                    # publish time (the largest over the peers), else 0.2 ms
/// mbit_s = 1000      # bandwidth per party; default 4000
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkSection {
    /// Round-trip time in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Bandwidth per party in Mbit/s.
    pub mbit_s: Option<u32>,
}

impl LinkSection {
    fn is_default(&self) -> bool {
        *self == LinkSection::default()
    }

    fn check(&self) -> anyhow::Result<()> {
        if let Some(r) = self.rtt_ms {
            ensure!(r.is_finite() && (0.0..=10_000.0).contains(&r), "[link] rtt_ms must be between 0 and 10000");
        }
        if let Some(b) = self.mbit_s {
            ensure!((1..=1_000_000).contains(&b), "[link] mbit_s must be between 1 and 1000000");
        }
        Ok(())
    }

    /// The link model: configured values first, then `measured_rtt_ms` (the mesh's estimate),
    /// then the defaults of [`mpc_proto::compare::Link`].
    pub fn link(&self, measured_rtt_ms: Option<f64>) -> mpc_proto::compare::Link {
        let d = mpc_proto::compare::Link::default();
        let rtt = self.rtt_ms.or(measured_rtt_ms).map_or(d.rtt_us, |ms| (ms * 1e3).round().clamp(0.0, 1e10) as u32);
        mpc_proto::compare::Link { rtt_us: rtt, mbit_s: self.mbit_s.unwrap_or(d.mbit_s) }
    }
}

/// `[limits]`: bounds the node enforces on its peers and its clients, each before the
/// allocation or work it guards. Every field is optional.
///
/// ```toml
/// [limits]
/// max_frame_mib = 512      # largest message accepted from a peer (checked on its length prefix)
/// frame_timeout_s = 300    # a peer silent this long in the middle of a job fails the job
/// join_timeout_s = 30      # the peers must join a job within this
/// max_job_s = 3600         # a job running longer is failed (and its peers see it abort)
/// max_active_jobs = 16     # further submissions get 503 until one finishes
/// memory_mib = 1024        # a prediction's working set: it runs as micro-batches that fit
/// pool_jobs = 4            # prediction jobs kept preprocessed ahead (0: no warm pool)
/// pool_rows = 64           # only jobs of at most this many rows are preprocessed ahead
/// ```
///
/// A prediction of any number of rows runs as micro-batches: each node divides `memory_mib` by
/// the model's estimated bytes per row ([`mpc_ml::Plan::bytes_per_row`]) and the three nodes
/// use the smallest result. Fixed bounds besides: control API bodies 16 KiB, matmul dimensions
/// 4096, training batch 4096 rows, analytics 10^7 rows and 1024 histogram edges.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest frame accepted from a peer, in MiB.
    pub max_frame_mib: u32,
    /// Seconds a peer may stay silent mid-job.
    pub frame_timeout_s: u64,
    /// Seconds to wait for the peers to join a job.
    pub join_timeout_s: u64,
    /// Seconds a job may run in all.
    pub max_job_s: u64,
    /// Jobs that may be in progress at once.
    pub max_active_jobs: usize,
    /// Memory a prediction job may use at this node, in MiB: it sets the micro-batch size.
    pub memory_mib: u64,
    /// Prediction jobs kept preprocessed ahead, across models ([`crate::pool`]); the three
    /// nodes keep a pool only if all three allow one.
    pub pool_jobs: usize,
    /// Largest job (rows) preprocessed ahead.
    pub pool_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_mib: 512,
            frame_timeout_s: 300,
            join_timeout_s: 30,
            max_job_s: 3600,
            max_active_jobs: 16,
            // A 2-core / 4 GiB node runs a prediction in 1 GiB and has room for others.
            memory_mib: 1024,
            pool_jobs: 4,
            pool_rows: 64,
        }
    }
}

impl Limits {
    fn is_default(&self) -> bool {
        *self == Limits::default()
    }

    fn check(&self) -> anyhow::Result<()> {
        ensure!((1..=4095).contains(&self.max_frame_mib), "[limits] max_frame_mib must be between 1 and 4095");
        for (v, name) in [
            (self.frame_timeout_s, "frame_timeout_s"),
            (self.join_timeout_s, "join_timeout_s"),
            (self.max_job_s, "max_job_s"),
        ] {
            ensure!((1..=7 * 24 * 3600).contains(&v), "[limits] {name} must be between 1 s and a week");
        }
        ensure!((1..=1024).contains(&self.max_active_jobs), "[limits] max_active_jobs must be between 1 and 1024");
        ensure!((16..=1 << 20).contains(&self.memory_mib), "[limits] memory_mib must be between 16 and 1048576");
        ensure!(self.pool_jobs <= 1024, "[limits] pool_jobs must be between 0 and 1024");
        ensure!((1..=1 << 20).contains(&self.pool_rows), "[limits] pool_rows must be between 1 and 1048576");
        Ok(())
    }

    /// The mesh options these limits imply.
    pub fn mesh_options(&self) -> crate::mesh::MeshOptions {
        crate::mesh::MeshOptions {
            frame_deadline: std::time::Duration::from_secs(self.frame_timeout_s),
            join_timeout: std::time::Duration::from_secs(self.join_timeout_s),
            max_frame: (self.max_frame_mib as usize) << 20,
            ..Default::default()
        }
    }
}

/// `[node]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's role.
    pub role: Role,
    /// UDP address to bind (default: this party's `address` if it is an IP address, else
    /// `0.0.0.0` and its port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// This node's certificate (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Where shares and job records are kept.
    pub data_dir: PathBuf,
}

/// `[api]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Listen address; must be a loopback address.
    pub listen: SocketAddr,
    /// Bearer token clients must present.
    pub token: String,
}

impl std::fmt::Debug for ApiSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSection").field("listen", &self.listen).field("token", &"<secret>").finish()
    }
}

/// `[trust]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// `pinned` or `ca`.
    pub mode: TrustMode,
    /// The consortium CA certificate (mode `ca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// How peers are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustMode {
    /// Each party's exact certificate is listed.
    Pinned,
    /// Certificates signed by the consortium CA, valid for the party's name.
    Ca,
}

/// `[[party]]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartySection {
    /// The party's role.
    pub role: Role,
    /// Organisation name (the certificate's DNS name).
    pub name: String,
    /// UDP address of its node (`ip:port` or `host:port`).
    pub address: PeerAddr,
    /// Its certificate (required in pinned mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
}

/// A validated configuration with every file loaded.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// This node's party.
    pub me: PartyId,
    /// The consortium's mode.
    pub mode: Mode,
    /// The parties, indexed by party id: three, or two in mode "2pc".
    pub parties: Vec<Peer>,
    /// This node's certificate chain.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// Every certificate file in use: this node's (first), the pinned peers' or the CA's.
    pub certificates: Vec<CertFile>,
    /// This node's private key.
    pub key: Secret<PrivateKeyDer<'static>>,
    /// How peers are authenticated.
    pub trust: Trust,
    /// Data directory (absolute or relative to the working directory).
    pub data_dir: PathBuf,
    /// UDP address this node binds (see [`NodeSection::listen`]).
    pub listen: SocketAddr,
    /// Control API listen address.
    pub api_listen: SocketAddr,
    /// Control API bearer token.
    pub api_token: Secret<String>,
    /// Resource limits.
    pub limits: Limits,
    /// The network to the peers as configured (`[link]`).
    pub link: LinkSection,
    /// `[policy]`.
    pub policy: PolicySection,
}

/// A value that must never be printed.
pub struct Secret<T>(pub T);

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// One party as the node sees it.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its party id.
    pub id: PartyId,
    /// Organisation name.
    pub name: String,
    /// UDP address.
    pub address: PeerAddr,
    /// Its pinned certificate (pinned mode).
    pub cert: Option<CertificateDer<'static>>,
}

/// Loaded trust anchors.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Peers' exact certificates (in [`Config::parties`]).
    Pinned,
    /// The consortium CA certificate.
    Ca(CertificateDer<'static>),
}

/// Reads one PEM certificate (the first in the file); `what` names the setting in errors.
pub fn read_cert(path: &Path, what: &str) -> anyhow::Result<CertificateDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    let mut certs = crate::certs::pem_certs(&pem).with_context(|| format!("{what} {}", path.display()))?;
    Ok(certs.remove(0))
}

/// `p` from a config at `config`: relative paths resolve against the config file's directory
/// (not the working directory).
pub fn resolve(config: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { config.parent().unwrap_or(Path::new(".")).join(p) }
}

impl ConfigFile {
    /// Reads and parses the config at `path` without validating it or reading the files it
    /// names: what `cert request` and `cert show` need, on a config that may not load yet (a node
    /// still listing only itself, or halfway to CA trust).
    pub fn read(path: &Path) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {} (create one with `party-node init`)", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config {} is invalid: {}", path.display(), describe_toml_error(&text, &e)))
    }

    /// This node's own `[[party]]` entry (the one with `[node] role`).
    pub fn own_party(&self) -> Option<&PartySection> {
        self.parties.iter().find(|p| p.role == self.node.role)
    }
}

/// Refuses a control API address that is not loopback (`run` and `init` say the same):
/// the API holds the node's bearer token and starts jobs, so it serves only this machine.
/// `what` names the setting (`[api] listen =`, `--api`).
pub fn check_api_listen(what: &str, addr: SocketAddr) -> anyhow::Result<()> {
    ensure!(
        addr.ip().is_loopback(),
        "{what} {addr} is not a loopback address: the control API serves only this machine; use 127.0.0.1:{port} \
         (or [::1]:{port}), and from elsewhere reach it over SSH (ssh -L {port}:127.0.0.1:{port} …; docs/deploy.md \
         section 2)",
        port = addr.port()
    );
    Ok(())
}

impl Config {
    /// Loads and validates the config at `path`, reading every file it names.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let file = ConfigFile::read(path)?;
        Self::from_file(file, path).with_context(|| format!("config {}", path.display()))
    }

    /// Validates a parsed config; relative paths are resolved against `path`'s directory.
    pub fn from_file(file: ConfigFile, path: &Path) -> anyhow::Result<Config> {
        let at = |p: &Path| resolve(path, p);
        check_api_listen("[api] listen =", file.api.listen)?;
        ensure!(file.api.token.len() >= 16, "[api] token must be at least 16 characters (`party-node init` makes one)");

        let mode = file.consortium.mode;
        let roles = mode.roles();
        let mut slots: [Option<&PartySection>; 3] = [None, None, None];
        for p in &file.parties {
            check_name(&p.name).with_context(|| format!("[[party]] {}", p.role))?;
            ensure!(
                roles.contains(&p.role),
                "[[party]] {} is listed, but [consortium] mode = \"{mode}\" has no {}: the two parties make their \
                 correlations themselves. Remove that entry (or set [consortium] mode = \"dealer\")",
                p.role,
                p.role
            );
            let slot = &mut slots[p.role.party().index()];
            ensure!(slot.is_none(), "[[party]] role {} is listed twice: each role appears exactly once", p.role);
            *slot = Some(p);
        }
        ensure!(
            roles.contains(&file.node.role),
            "[node] role = \"{}\", but [consortium] mode = \"{mode}\" has only alice and bob",
            file.node.role
        );
        let missing: Vec<&str> =
            roles.iter().filter(|r| slots[r.party().index()].is_none()).map(|r| r.as_str()).collect();
        ensure!(
            missing.is_empty(),
            "no [[party]] entry for {}: list all {} parties (role, name, address{}), exchanging certificates \
             with the other organisations",
            missing.join(" and "),
            if roles.len() == 2 { "two" } else { "three" },
            if file.trust.mode == TrustMode::Pinned { ", cert" } else { "" }
        );
        let slots: Vec<&PartySection> =
            slots.into_iter().take(roles.len()).map(|s| s.expect("checked above")).collect();
        for (i, a) in slots.iter().enumerate() {
            for b in &slots[i + 1..] {
                ensure!(a.name != b.name, "parties {} and {} share the name {:?}", a.role, b.role, a.name);
                ensure!(a.address != b.address, "parties {} and {} share the address {}", a.role, b.role, a.address);
            }
        }

        let me = file.node.role.party();
        let cert_path = at(&file.node.cert);
        let own_cert = read_cert(&cert_path, "[node] cert")?;
        let key_path = at(&file.node.key);
        let key_pem =
            std::fs::read(&key_path).with_context(|| format!("cannot read [node] key {}", key_path.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| anyhow::anyhow!("[node] key {} is not a PEM private key: {e}", key_path.display()))?;
        ensure!(
            crate::identity::key_matches(&key, &own_cert) != Some(false),
            "[node] cert {} does not belong to [node] key {}: the certificate was made for another key. Install the \
             certificate issued for this node's request (`party-node cert request --config {}` makes it from this \
             key), or point [node] cert and key at a matching pair",
            cert_path.display(),
            key_path.display(),
            path.display()
        );
        let own_name = &slots[me.index()].name;
        let mut certificates =
            vec![CertFile { what: "[node] cert".into(), path: cert_path.clone(), cert: own_cert.clone() }];

        let mut parties = Vec::with_capacity(slots.len());
        for s in slots {
            let cert = match (&file.trust.mode, &s.cert) {
                (TrustMode::Pinned, Some(c)) => {
                    let what = format!("[[party]] {} cert", s.role);
                    let cert = read_cert(&at(c), &what)?;
                    certificates.push(CertFile { what, path: at(c), cert: cert.clone() });
                    // Peers are authenticated as the organisation named here: the pinned
                    // certificate must be issued for that name.
                    ensure!(
                        crate::tls::cert_is_for(&cert, &s.name),
                        "[[party]] {} is named {:?}, but its certificate {} is issued for {:?} (fingerprint {}): \
                         use the name in the certificate, or the certificate of {:?}",
                        s.role,
                        s.name,
                        at(c).display(),
                        crate::tls::cert_dns_names(&cert),
                        crate::tls::fingerprint(&cert),
                        s.name
                    );
                    Some(cert)
                }
                (TrustMode::Pinned, None) => {
                    bail!("[[party]] {} has no cert: pinned trust needs every party's certificate file", s.role)
                }
                (TrustMode::Ca, Some(c)) => bail!(
                    "[[party]] {} has cert = {:?}, but [trust] mode = \"ca\": peers are authenticated by the \
                     consortium CA ([trust] ca) and the name in their certificate, not by pinned files. Remove the \
                     `cert` line of every [[party]] entry (or set [trust] mode = \"pinned\")",
                    s.role,
                    c.display()
                ),
                (TrustMode::Ca, None) => None,
            };
            parties.push(Peer { id: s.role.party(), name: s.name.clone(), address: s.address.clone(), cert });
        }

        let trust = match file.trust.mode {
            TrustMode::Pinned => {
                let pinned = parties[me.index()].cert.as_ref().expect("pinned mode has certs");
                ensure!(
                    *pinned == own_cert,
                    "[node] cert {} is not the certificate pinned for {} in its [[party]] entry: this node's own \
                     certificate must be listed (is [node] role right?)",
                    cert_path.display(),
                    file.node.role
                );
                for (i, a) in parties.iter().enumerate() {
                    for b in &parties[i + 1..] {
                        ensure!(
                            a.cert != b.cert,
                            "parties {} and {} pin the same certificate",
                            Role::of(a.id),
                            Role::of(b.id)
                        );
                    }
                }
                Trust::Pinned
            }
            TrustMode::Ca => {
                let ca_path =
                    file.trust.ca.as_ref().context("[trust] mode = \"ca\" needs `ca = \"<CA certificate>\"`")?;
                // (In pinned mode the name is checked with the pinned certificates above.)
                if !crate::tls::cert_is_for(&own_cert, own_name) {
                    let names = crate::tls::cert_dns_names(&own_cert);
                    let is_for = if names.is_empty() {
                        "names no organisation (it has no subjectAltName DNS:<name>, which `party-node cert request` \
                         asks for and `party-node ca sign` always writes)"
                            .to_string()
                    } else {
                        format!("is issued for {names:?}")
                    };
                    bail!(
                        "[node] cert {} {is_for} (fingerprint {}), not for this node's name {own_name:?} (the \
                         [[party]] entry of [node] role = {}): install this node's own certificate, or correct the \
                         name or the role",
                        cert_path.display(),
                        crate::tls::fingerprint(&own_cert),
                        file.node.role
                    );
                }
                let ca_file = at(ca_path);
                let ca = read_cert(&ca_file, "[trust] ca")?;
                check_own_ca_cert(&ca, &ca_file, &own_cert, &cert_path, own_name, path)?;
                certificates.push(CertFile { what: "[trust] ca".into(), path: ca_file, cert: ca.clone() });
                Trust::Ca(ca)
            }
        };
        let listen = file.node.listen.unwrap_or_else(|| parties[me.index()].address.bind_addr());
        file.limits.check()?;
        file.link.check()?;
        file.policy.check(&parties.iter().map(|p| p.name.as_str()).collect::<Vec<_>>())?;
        Ok(Config {
            path: path.to_path_buf(),
            me,
            mode,
            listen,
            parties,
            cert_chain: vec![own_cert],
            certificates,
            key: Secret(key),
            trust,
            data_dir: at(&file.node.data_dir),
            api_listen: file.api.listen,
            api_token: Secret(file.api.token),
            limits: file.limits,
            link: file.link,
            policy: file.policy,
        })
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        Role::of(self.me)
    }
}

/// CA mode: this node's certificate must be issued by the consortium CA for `name`. Each way a
/// node can be halfway to CA trust gets its own message, naming the files and the fix. The
/// certificate's dates are not checked here (`party-node run` does, see [`crate::certs`]), so
/// that the thin clients (`status`, `jobs`) still work while a certificate is being renewed.
fn check_own_ca_cert(
    ca: &CertificateDer<'static>,
    ca_file: &Path,
    own: &CertificateDer<'static>,
    own_file: &Path,
    name: &str,
    config: &Path,
) -> anyhow::Result<()> {
    let ca_info = CertInfo::parse(ca).with_context(|| format!("[trust] ca {}", ca_file.display()))?;
    ensure!(
        ca_info.is_ca,
        "[trust] ca {} is not a CA certificate (it is {}'s, {}): point [trust] ca at the consortium CA's certificate \
         (the ca.cert.pem of `party-node ca init`), which the CA operator sends every organisation",
        ca_file.display(),
        ca_info.dns_names.first().map_or(ca_info.subject.as_str(), String::as_str),
        ca_info.fingerprint
    );
    let own_info = CertInfo::parse(own).with_context(|| format!("[node] cert {}", own_file.display()))?;
    // Checked as of a moment inside the certificate's validity: its dates are not this check's.
    let at = crate::certs::now().clamp(own_info.not_before, own_info.not_after).max(0) as u64;
    let at = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(at));
    let Err(e) = crate::tls::check_ca_issued(ca, own, name, at) else { return Ok(()) };
    let how = format!(
        "get this node's certificate issued by the consortium CA: `party-node cert request --config {}`, send the \
         request to the CA operator (`party-node ca sign`) and install the certificate they return as {} (keep \
         [node] key)",
        config.display(),
        own_file.display()
    );
    if own_info.self_signed() {
        bail!(
            "[node] cert {} is self-signed ({}), so it is not issued by the consortium CA {} ({}), but [trust] mode = \
             \"ca\": {how}",
            own_file.display(),
            own_info.subject,
            ca_file.display(),
            ca_info.subject
        );
    }
    if own_info.issuer != ca_info.subject {
        bail!(
            "[node] cert {} is not issued by the consortium CA: its issuer is {}, the CA in [trust] ca {} is {}. \
             Either [trust] ca names the wrong file, or {how}",
            own_file.display(),
            own_info.issuer,
            ca_file.display(),
            ca_info.subject
        );
    }
    Err(e).with_context(|| {
        format!(
            "[node] cert {} is not valid for this node ({name}) under the consortium CA [trust] ca {}; {how}",
            own_file.display(),
            ca_file.display()
        )
    })
}

/// A party's UDP address: an IP socket address, or a host name and port resolved when used.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PeerAddr {
    /// An IP address and port (`192.0.2.1:7000`, `[2001:db8::1]:7000`).
    Ip(SocketAddr),
    /// A host name and port (`alice:7000`, `node.acme.example:7000`).
    Host {
        /// The host name (a DNS name: letters, digits, '-', '.', '_').
        host: String,
        /// The UDP port.
        port: u16,
    },
}

/// Why a string is not a [`PeerAddr`].
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an address: expected ip:port or host:port (e.g. 203.0.113.7:7000, alice:7000)")]
pub struct BadAddr(String);

impl std::str::FromStr for PeerAddr {
    type Err = BadAddr;

    fn from_str(s: &str) -> Result<PeerAddr, BadAddr> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(PeerAddr::Ip(a));
        }
        let bad = || BadAddr(s.to_string());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(bad());
        }
        // All-numeric dotted names are malformed IP addresses, not host names.
        if host.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
            return Err(bad());
        }
        Ok(PeerAddr::Host { host: host.to_string(), port })
    }
}

impl TryFrom<String> for PeerAddr {
    type Error = BadAddr;

    fn try_from(s: String) -> Result<PeerAddr, BadAddr> {
        s.parse()
    }
}

impl From<PeerAddr> for String {
    fn from(a: PeerAddr) -> String {
        a.to_string()
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> PeerAddr {
        PeerAddr::Ip(a)
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddr::Ip(a) => a.fmt(f),
            PeerAddr::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl PeerAddr {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            PeerAddr::Ip(a) => a.port(),
            PeerAddr::Host { port, .. } => *port,
        }
    }

    /// The address a node with this address binds: the IP address itself, or `0.0.0.0:port`
    /// for a host name (see the module documentation).
    pub fn bind_addr(&self) -> SocketAddr {
        match self {
            PeerAddr::Ip(a) => *a,
            PeerAddr::Host { port, .. } => SocketAddr::from(([0, 0, 0, 0], *port)),
        }
    }

    /// Resolves the address now (DNS for a host name), preferring addresses of the family
    /// `ipv4` selects (a socket bound to an IPv4 address cannot reach IPv6 ones).
    pub async fn resolve(&self, ipv4: bool) -> std::io::Result<SocketAddr> {
        let (host, port) = match self {
            PeerAddr::Ip(a) => return Ok(*a),
            PeerAddr::Host { host, port } => (host.as_str(), *port),
        };
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        found
            .iter()
            .find(|a| a.is_ipv4() == ipv4)
            .or(found.first())
            .copied()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} has no address")))
    }
}

/// A TOML error as `line L, column C: message`, without the parser's quote of the offending
/// line — that line may hold the API token, and a typo next to it must not print it. On the
/// token's own line even the message is withheld (it can quote the value: "invalid type:
/// string \"…\"").
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else { return "the file is not valid TOML".to_string() };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let source = text.lines().nth(line - 1).unwrap_or("");
    if source.to_ascii_lowercase().contains("token") {
        return format!(
            "line {line}, column {column}: the [api] token line is malformed (expected token = \"<at least 16 \
             characters>\"; the line is not shown because it holds the token)"
        );
    }
    format!("line {line}, column {column}: {}", e.message().trim())
}

/// A fresh random API token (32 hex characters).
pub fn random_token() -> String {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("OS randomness");
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_on_the_token_line_does_not_print_the_token() {
        let token = "f00dfeedcafe0123456789abcdef4242";
        for line in [
            format!("token = \"{token}"),         // unterminated string
            format!("token = {token}"),           // unquoted
            format!("token = \"{token}\" extra"), // trailing garbage
            format!("tokn = \"{token}\""),        // misspelt key (unknown field)
        ] {
            let text = format!("[api]\nlisten = \"127.0.0.1:7100\"\n{line}\n");
            let e = toml::from_str::<ConfigFile>(&text).unwrap_err();
            let msg = describe_toml_error(&text, &e);
            assert!(!msg.contains(token) && !msg.contains(&token[..12]), "{line}: {msg}");
            assert!(msg.starts_with("line 3"), "{line}: {msg}");
        }
        // Elsewhere the parser's message stays.
        let text = "[api]\nlisten = 7100\n";
        let e = toml::from_str::<ConfigFile>(text).unwrap_err();
        assert!(describe_toml_error(text, &e).contains("line 2"), "{}", describe_toml_error(text, &e));
    }
}
