//! `party-node`: the daemon each organisation runs, and its CLI.
//!
//! `party-node init` makes a node's identity and config, `party-node run` runs it, `status` and
//! `jobs` are thin clients of its control API, and `demo` runs the three parties in one process.
#![deny(unsafe_code)]

/// The protocols allocate and free many multi-megabyte tensors: mimalloc keeps them mapped
/// instead of returning each to the OS (a third of the time of a large multiplication).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod compose;
mod demo;
mod local;
mod throughput;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use party_node::client;
use party_node::config::{Config, ConfigFile, Mode, Role, random_token, resolve};
use party_node::identity;
use party_node::jobs::{JobRequest, check_request};
use party_node::testbed;
use serde_json::json;

/// Membrane party node.
#[derive(Parser)]
#[command(version, about = "Membrane: private inference and training across organisations")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main demo: three local nodes (Alice, Bob, dealer) over QUIC; Alice publishes a
    /// bundled MNIST CNN, Bob gets private predictions for bundled test images.
    Demo {
        /// How many of the 100 bundled test images Bob classifies.
        #[arg(long, default_value_t = 24)]
        images: usize,
    },
    /// Create this node's key pair, self-signed certificate and config.
    Init {
        /// This node's role.
        #[arg(long)]
        role: Role,
        /// Organisation name (a-z, 0-9, '-'); it becomes the certificate's DNS name.
        #[arg(long)]
        name: String,
        /// Directory to write node.key.pem, node.cert.pem and node.toml into.
        #[arg(long)]
        out: PathBuf,
        /// UDP address the node listens on for its peers (ip:port or host:port).
        #[arg(long, default_value = "127.0.0.1:7000")]
        listen: party_node::config::PeerAddr,
        /// Control API address: a loopback address (the API serves only this machine); nodes
        /// sharing a machine need one port each (127.0.0.1:7100, 127.0.0.1:7101, …).
        #[arg(long, default_value = "127.0.0.1:7100")]
        api: SocketAddr,
        /// The consortium's mode: `dealer` (three organisations) or `2pc` (alice and bob only,
        /// no dealer). Every node of a consortium uses the same.
        #[arg(long, value_enum, default_value_t = Mode::Dealer)]
        mode: Mode,
    },
    /// Create a complete consortium on this machine (to try the node): DIR/alice, DIR/bob and
    /// (mode dealer) DIR/dealer, each with its identity and config.
    InitLocal {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// First UDP port (nodes use this and the next ones; the APIs use +100).
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
        /// `dealer`: three nodes, a dealer supplies correlated randomness; `2pc`: alice and bob
        /// only, making it themselves with OT and HE (slower, no third organisation).
        #[arg(long, value_enum, default_value_t = Mode::Dealer)]
        mode: Mode,
    },
    /// Alice: publish an ONNX model and offer it to the organisations she admits: her node
    /// shares nothing but the public plan, which it sends to Bob's and the dealer's nodes over
    /// the mesh. Bob then predicts with one command (`party-node predict`); publishing again
    /// replaces the model and its policy.
    Publish {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
        /// The ONNX file (exported by PyTorch, opset ≥ 13).
        #[arg(long)]
        model: PathBuf,
        /// Name the other organisations will use.
        #[arg(long)]
        name: String,
        /// What Bob learns: label (argmax only), probabilities or logits.
        #[arg(long, default_value = "logits")]
        output: String,
        /// Fixed-point fractional bits (default: 16 for networks with at most 4 weighted layers
        /// on a path, 20 for deeper ones, whose logits 16 bits leave ~10^-2 off; see
        /// docs/security.md).
        #[arg(long)]
        frac_bits: Option<u32>,
        #[command(flatten)]
        compare: CompareArgs,
        /// Also write the public plan here (for `register`, pinning it by hand).
        #[arg(long)]
        plan_out: Option<PathBuf>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// The models this node can run: name, owner, what Bob learns, input shape, plan hash and
    /// (on Bob's node) his terms and remaining quota; on Alice's, each organisation's use.
    Models {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Proposals from peers held here for this organisation's approval.
    Proposals {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Approve a held proposal: the job starts once every party has accepted it.
    Approve {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
        /// The job id (`party-node proposals` lists them).
        id: String,
        /// Alice, statistics that include her rows: her CSV file.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Refuse a held proposal; the requester sees the reason.
    Refuse {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
        /// The job id.
        id: String,
        /// Told to the requester.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print this node's audit log: one line per decision on a peer's request and per outcome
    /// (reads the log file; the node need not run).
    Audit {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
        /// Print the JSON lines as stored.
        #[arg(long)]
        json: bool,
    },
    /// Bob, dealer: register a plan that Alice published.
    Register {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
        /// The model's name.
        #[arg(long)]
        name: String,
        /// The plan file Alice's `publish` wrote.
        #[arg(long)]
        plan: PathBuf,
    },
    /// Bob: private predictions of a model Alice offers, in one command — proposed to Alice's
    /// and the dealer's nodes, which decide by their policies; waits (progress bar) and writes
    /// the output. Exit status 1 if refused or failed. (By hand instead: every organisation
    /// submits the same --id, Alice and the dealer with --batch.)
    Predict {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
        /// The published model's name.
        #[arg(long)]
        model: String,
        /// By hand: the job id (32 hex digits) from the first submission.
        #[arg(long)]
        id: Option<String>,
        /// By hand: submit to this node only and print the job id for the other organisations,
        /// instead of proposing the job.
        #[arg(long)]
        by_hand: bool,
        /// Bob: input, batch first: .npy of float32, float64, int32, int64 (values below 2^53
        /// in magnitude, converted exactly) or uint8 — other dtypes are refused — or .csv.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Bob: where to write the output (.npy or .csv).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Alice, dealer: number of rows in Bob's input (any number: the job runs as
        /// micro-batches that fit [limits] memory_mib).
        #[arg(long)]
        batch: Option<usize>,
        /// At most this many rows per micro-batch (default: what [limits] memory_mib allows).
        #[arg(long)]
        micro_batch: Option<usize>,
        /// Wait for the job (progress bar) and print its profile; `--wait false` prints the
        /// job id and returns at once.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        wait: bool,
    },
    /// Bob: private training on his CSV, proposed to Alice's and the dealer's nodes (which
    /// decide by their [policy] train). By hand instead: Bob adds --by-hand and gives the job
    /// id to the others; Alice and the dealer give --samples/--features (and --classes for an
    /// MLP) and that --id.
    Train {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
        /// By hand: the job id from the first submission.
        #[arg(long)]
        id: Option<String>,
        /// By hand: submit to this node only and print the job id.
        #[arg(long)]
        by_hand: bool,
        #[command(flatten)]
        args: TrainArgs,
        /// Alice, dealer: training rows.
        #[arg(long)]
        samples: Option<usize>,
        /// Alice, dealer: feature columns.
        #[arg(long)]
        features: Option<usize>,
        /// Alice, dealer: classes (MLP).
        #[arg(long, default_value_t = 1)]
        classes: usize,
        /// Wait for the job, with a progress bar, and print its metrics.
        #[arg(long)]
        wait: bool,
    },
    /// Statistics of Bob's rows (and Alice's, if she contributes), revealed to Bob only,
    /// proposed to the other nodes (Alice approves jobs that need her rows with `approve ID
    /// --data FILE`). By hand instead: Bob adds --by-hand and gets the job id and the public
    /// plan; Alice and the dealer join with --id and --plan (Alice adds --data if the plan has
    /// her rows).
    Analyze {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
        /// By hand: the job id from Bob's submission.
        #[arg(long)]
        id: Option<String>,
        /// By hand: submit to this node only and print the job id and plan.
        #[arg(long)]
        by_hand: bool,
        #[command(flatten)]
        args: AnalyzeArgs,
        /// Bob: rows Alice contributes (she gives --data with them).
        #[arg(long, default_value_t = 0)]
        alice_rows: usize,
        /// Alice, dealer: the plan file Bob's submission wrote.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Bob: write the public plan here for Alice and the dealer.
        #[arg(long)]
        plan_out: Option<PathBuf>,
        /// Bob: wait for the job and print the statistics.
        #[arg(long)]
        wait: bool,
    },
    /// Try it on one machine: three local nodes over QUIC on loopback.
    Local {
        #[command(subcommand)]
        action: LocalAction,
    },
    /// Run the node.
    Run {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
    },
    /// This node's certificate: a request for the consortium CA (`request`), or what a
    /// certificate or a node's certificates say (`show`).
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// For whoever runs the consortium CA: create it (`init`), issue node certificates from the
    /// organisations' requests (`sign`).
    Ca {
        #[command(subcommand)]
        action: CaAction,
    },
    /// Show the node's health and its peers.
    Status {
        /// The node's config (for the API address and token).
        #[arg(long)]
        config: PathBuf,
    },
    /// Submit and inspect jobs.
    Jobs {
        /// The node's config (for the API address and token).
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        action: JobsAction,
    },
    /// Containers: make a consortium addressed by host names (`init`), or drive one party's
    /// node through the docker-compose demo (`demo`); see deploy/.
    Compose {
        #[command(subcommand)]
        action: compose::ComposeAction,
    },
    /// Benchmark the standard workloads end to end: three party processes over QUIC on
    /// loopback, optionally through an emulated WAN (--rtt, --rate); one JSON line per workload.
    Bench(party_node::bench::BenchArgs),
    #[command(hide = true, name = "store-torture")]
    /// Test aid: write store items forever (a test kills it and checks the store).
    StoreTorture {
        #[arg(long)]
        dir: PathBuf,
    },
    #[command(hide = true, name = "check-args")]
    /// Test aid: parse ARGS as a `party-node` command line, run nothing, and print `ok` or the
    /// kind of parse error (tests/docs.rs checks every command the docs show this way).
    CheckArgs {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Who may use a published model, and how much.
#[derive(clap::Args, Clone)]
struct PolicyArgs {
    /// Organisations (their [[party]] name) that may request predictions, comma-separated;
    /// `*` for any organisation of the consortium.
    #[arg(long, value_delimiter = ',', required = true)]
    allow: Vec<String>,
    /// Rows each organisation may predict in all (kept across restarts).
    #[arg(long)]
    quota_rows: Option<u64>,
    /// Rows each organisation may predict per UTC day.
    #[arg(long)]
    quota_rows_per_day: Option<u64>,
    /// Most rows in one job.
    #[arg(long)]
    max_batch: Option<u64>,
    /// `auto`, or `manual`: every request waits for `party-node approve ID` on this node.
    #[arg(long, default_value = "auto")]
    approval: String,
}

impl PolicyArgs {
    fn policy(&self) -> anyhow::Result<party_node::service::ModelPolicy> {
        let approval = self.approval.parse().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(approval != party_node::config::Approval::Refuse, "--approval: use auto or manual");
        let p = party_node::service::ModelPolicy {
            allow: self.allow.iter().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect(),
            quota_rows: self.quota_rows,
            quota_rows_per_day: self.quota_rows_per_day,
            max_batch: self.max_batch,
            approval,
        };
        p.check()?;
        Ok(p)
    }
}

/// Training parameters shared by `train` and `local train`.
#[derive(clap::Args, Clone)]
struct TrainArgs {
    /// Bob: CSV file with a header row (every column numeric).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Bob: the label column.
    #[arg(long)]
    label: Option<String>,
    /// linreg, logreg or mlp:H1,H2,… (hidden widths).
    #[arg(long)]
    model: String,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Minibatch size.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Seed of the initial weights, batch order and train/test split (public).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Held-out fraction for test metrics.
    #[arg(long, default_value_t = 0.2)]
    test_split: f64,
    /// Who learns the trained model: `bob` (omit to keep it secret-shared).
    #[arg(long)]
    reveal_to: Option<String>,
    /// Bob: show a loss estimate (revealed to him only) after each epoch.
    #[arg(long)]
    report_loss: bool,
    /// Name under which the trained model serves predictions, still secret-shared
    /// (default trained-<job id>): `party-node predict --model NAME`.
    #[arg(long)]
    name: Option<String>,
    /// Bob, with --reveal-to bob: write the trained model as ONNX (for onnxruntime, PyTorch).
    #[arg(long)]
    export: Option<PathBuf>,
}

impl TrainArgs {
    fn request(&self, shape: Option<(usize, usize, usize)>) -> anyhow::Result<party_node::ml::TrainRequest> {
        let reveal_to_bob = match self.reveal_to.as_deref() {
            None => false,
            Some("bob") => true,
            Some(other) => bail!("--reveal-to {other}: only bob (the data owner) may learn the model"),
        };
        let abs = |p: &Path| std::fs::canonicalize(p).with_context(|| format!("{} not found", p.display()));
        Ok(party_node::ml::TrainRequest {
            arch: self.model.clone(),
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            seed: self.seed,
            samples: shape.map(|s| s.0),
            features: shape.map(|s| s.1),
            classes: shape.map(|s| s.2),
            data: self.data.as_deref().map(abs).transpose()?.map(|p| p.display().to_string()),
            label: self.label.clone(),
            test_split: Some(self.test_split),
            reveal_to_bob,
            report_loss: self.report_loss,
            name: self.name.clone(),
            export: self
                .export
                .as_ref()
                .map(|p| if p.is_absolute() { Ok(p.clone()) } else { std::env::current_dir().map(|d| d.join(p)) })
                .transpose()?
                .map(|p| p.display().to_string()),
        })
    }
}

/// Parameters of an analytics job (Bob's side; Alice gives only --data).
#[derive(clap::Args, Clone)]
struct AnalyzeArgs {
    /// CSV file with a header row; every column numeric.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Statistics: count,sum,mean,var,std,min,max,corr.
    #[arg(long)]
    stats: Option<String>,
    /// A histogram with public bin edges, COLUMN:EDGE,EDGE,… (repeatable).
    #[arg(long = "hist")]
    histograms: Vec<String>,
    /// End with one JSON line of the statistics.
    #[arg(long)]
    json: bool,
    /// Fixed-point fractional bits (default 16); fewer bits widen the range var/std/corr accept
    /// (sums of squares up to 2^(61 − 2·bits) per contributor) at coarser input resolution.
    #[arg(long)]
    frac_bits: Option<u32>,
}

impl AnalyzeArgs {
    fn request(&self, alice_rows: usize) -> anyhow::Result<party_node::ml::AnalyzeRequest> {
        let data = match &self.data {
            Some(p) => Some(std::fs::canonicalize(p).with_context(|| format!("{} not found", p.display()))?),
            None => None,
        };
        Ok(party_node::ml::AnalyzeRequest {
            plan: None,
            stats: self.stats.clone(),
            histograms: self.histograms.clone(),
            alice_rows,
            data: data.map(|p| p.display().to_string()),
            frac_bits: self.frac_bits,
        })
    }
}

/// How a published model's comparisons run (`publish`, `local predict`).
#[derive(clap::Args, Clone, Debug, Default)]
struct CompareArgs {
    /// Comparison method for ReLU, max pooling, argmax and activations: auto (per layer, by the
    /// cost model on the node's [link]), helper (the dealer helps online: least dealer
    /// material, 3 messages), fss (compact keys, 2 rounds) or fss1 (one round, largest keys).
    #[arg(long, default_value = "auto")]
    nonlinear: String,
    /// The range of every input value, `LO,HI` (e.g. 0,1 for images scaled to [0, 1]):
    /// narrows every comparison to the bound the weights imply; inputs outside it are refused.
    #[arg(long, value_parser = parse_range)]
    input_range: Option<[f64; 2]>,
}

fn parse_range(s: &str) -> Result<[f64; 2], String> {
    let bad = || format!("input range {s:?}: give LO,HI, e.g. 0,1");
    let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
    let (lo, hi): (f64, f64) = (lo.trim().parse().map_err(|_| bad())?, hi.trim().parse().map_err(|_| bad())?);
    if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
        return Err(bad());
    }
    Ok([lo, hi])
}

#[derive(Subcommand)]
enum LocalAction {
    /// Private inference: Alice's model, Bob's input, three processes over QUIC; writes Bob's
    /// output (float64 .npy, batch first) and prints the per-layer profile.
    Predict {
        /// The ONNX model.
        #[arg(long)]
        model: PathBuf,
        /// The input, batch first: .npy of float32, float64, int32, int64 (values below 2^53 in
        /// magnitude, converted exactly) or uint8 — other dtypes are refused — or .csv.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the output (.npy or .csv).
        #[arg(long)]
        output: PathBuf,
        /// What Bob learns: logits, probabilities or label.
        #[arg(long, default_value = "logits")]
        output_policy: String,
        /// Also evaluate in plain f64 here and report the difference.
        #[arg(long)]
        verify: bool,
        /// Fixed-point fractional bits (default: 16 for networks with at most 4 weighted layers
        /// on a path, 20 for deeper ones, whose logits 16 bits leave ~10^-2 off; see
        /// docs/security.md).
        #[arg(long)]
        frac_bits: Option<u32>,
        #[command(flatten)]
        compare: CompareArgs,
        /// At most this many rows per micro-batch (default: what the nodes' memory allows).
        #[arg(long)]
        micro_batch: Option<usize>,
        /// Then predict the same input this many more times, each once the nodes' warm pools
        /// hold a preprocessed job, and print every job's latency (cold, then warm).
        #[arg(long, default_value_t = 0)]
        repeat: usize,
        /// Keep the temporary consortium directory (configs, logs, stores).
        #[arg(long)]
        keep: bool,
        /// `dealer`: three nodes; `2pc`: alice and bob only, no dealer process.
        #[arg(long, value_enum, default_value_t = Mode::Dealer)]
        mode: Mode,
    },
    /// Private training on Bob's CSV with local nodes over QUIC.
    Train {
        #[command(flatten)]
        args: TrainArgs,
        /// `dealer`: three nodes; `2pc`: alice and bob only, no dealer process.
        #[arg(long, value_enum, default_value_t = Mode::Dealer)]
        mode: Mode,
        /// Also train in plain f64 with the same seed, batches and hyperparameters.
        #[arg(long)]
        verify: bool,
        /// End with one JSON line of the metrics.
        #[arg(long)]
        json: bool,
    },
    /// Private analytics of Bob's CSV (optionally pooled with Alice's rows) with three
    /// processes over QUIC; the statistics are revealed to Bob only.
    Analyze {
        #[command(flatten)]
        args: AnalyzeArgs,
        /// Rows Alice contributes: a CSV with the same columns.
        #[arg(long)]
        alice_data: Option<PathBuf>,
        /// `dealer`: three nodes; `2pc`: alice and bob only, no dealer process.
        #[arg(long, value_enum, default_value_t = Mode::Dealer)]
        mode: Mode,
        /// Also compute the statistics in plain f64 and report the largest difference.
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Subcommand)]
enum CertAction {
    /// Make a certificate request (CSR) from this node's key ([node] key) for its organisation
    /// name (subjectAltName DNS:<name>); send it to the consortium CA operator (`ca sign`).
    Request {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
        /// Where to write the request (default: node.csr.pem beside the config).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show a certificate file, or every certificate a node's config uses (its own, the pinned
    /// peers' or the CA's): name, fingerprint, issuer, validity, days left.
    Show {
        /// A node's config: show its certificates and check them as `run` would.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        config: Option<PathBuf>,
        /// A PEM certificate file.
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CaAction {
    /// Create a consortium CA in DIR: ca.key.pem (secret, mode 0600) and ca.cert.pem (every
    /// organisation's [trust] ca). Refuses a directory that already holds a CA.
    Init {
        /// Directory for the CA's files (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// The CA's name (its certificate's common name).
        #[arg(long, default_value = "Membrane consortium CA")]
        name: String,
        /// Days the CA certificate is valid.
        #[arg(long, default_value_t = identity::CA_DAYS)]
        days: u32,
    },
    /// Issue a node certificate from an organisation's request (`party-node cert request`): the
    /// request must name exactly one organisation (subjectAltName DNS:<name>) and be signed by
    /// the key it carries.
    Sign {
        /// The CA's directory (`ca init --dir`).
        #[arg(long)]
        dir: PathBuf,
        /// The request the organisation sent.
        #[arg(long)]
        csr: PathBuf,
        /// Where to write the certificate (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate is valid (at most until the CA certificate ends).
        #[arg(long, default_value_t = identity::NODE_DAYS)]
        days: u32,
    },
}

#[derive(Subcommand)]
enum JobsAction {
    /// List the node's jobs.
    List,
    /// Submit a job (secure matmul of Bob's m×k by Alice's k×n, revealed to Bob). Every node
    /// must be given the same id and shapes; omit --id on the first to draw one.
    Submit {
        /// Job id (32 hex digits) from the first submission.
        #[arg(long)]
        id: Option<String>,
        /// Rows of Bob's matrix.
        #[arg(long)]
        m: usize,
        /// Columns of Bob's matrix, rows of Alice's.
        #[arg(long)]
        k: usize,
        /// Columns of Alice's matrix.
        #[arg(long)]
        n: usize,
        /// Alice and Bob: the seed of this party's private input.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Show one job.
    Show {
        /// Job id.
        id: String,
    },
    /// Wait until a job is done or failed (exit status 1 if it failed).
    Wait {
        /// Job id.
        id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Bob: print the revealed result of a job.
    Result {
        /// Job id.
        id: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { images } => demo::run(images),
        Command::Init { role, name, out, listen, api, mode } => init(role, &name, &out, listen, api, mode),
        Command::InitLocal { out, base_port, mode } => init_local(&out, base_port, mode),
        Command::Publish { config, model, name, output, frac_bits, compare, plan_out, policy } => {
            let policy = policy.policy()?;
            runtime()?.block_on(publish(
                &config,
                &model,
                &name,
                &output,
                frac_bits,
                &compare,
                plan_out.as_deref(),
                policy,
            ))
        }
        Command::Models { config, json } => runtime()?.block_on(models(&config, json)),
        Command::Proposals { config } => runtime()?.block_on(proposals(&config)),
        Command::Approve { config, id, data } => runtime()?.block_on(decide(&config, &id, true, data, None)),
        Command::Refuse { config, id, reason } => runtime()?.block_on(decide(&config, &id, false, None, reason)),
        Command::Audit { config, json } => audit(&config, json),
        Command::Register { config, name, plan } => runtime()?.block_on(register(&config, &name, &plan)),
        Command::Predict { config, model, id, by_hand, input, output, batch, micro_batch, wait } => {
            let by_hand = by_hand || id.is_some() || batch.is_some();
            runtime()?.block_on(predict(&config, &model, id, by_hand, input, output, batch, micro_batch, wait))
        }
        Command::Local {
            action:
                LocalAction::Predict {
                    model,
                    input,
                    output,
                    output_policy,
                    verify,
                    frac_bits,
                    compare,
                    micro_batch,
                    repeat,
                    keep,
                    mode,
                },
        } => local_predict(
            &model,
            &input,
            &output,
            &output_policy,
            verify,
            frac_bits,
            &compare,
            micro_batch,
            repeat,
            keep,
            mode,
        ),
        Command::Local { action: LocalAction::Train { args, verify, json, mode } } => {
            local_train(&args, verify, json, mode)
        }
        Command::Local { action: LocalAction::Analyze { args, alice_data, verify, mode } } => {
            local_analyze(&args, alice_data.as_deref(), verify, mode)
        }
        Command::Analyze { config, id, by_hand, args, alice_rows, plan, plan_out, wait } => {
            runtime()?.block_on(analyze_submit(
                &config,
                id.clone(),
                by_hand || plan.is_some() || id.is_some(),
                &args,
                alice_rows,
                plan.as_deref(),
                plan_out.as_deref(),
                wait,
            ))
        }
        Command::Train { config, id, by_hand, args, samples, features, classes, wait } => {
            let shape = match (samples, features) {
                (Some(s), Some(f)) => Some((s, f, classes)),
                (None, None) => None,
                _ => bail!("give both --samples and --features"),
            };
            let by_hand = by_hand || id.is_some() || shape.is_some();
            runtime()?.block_on(train_submit(&config, id, by_hand, &args, shape, wait))
        }
        Command::Run { config } => {
            init_logging();
            let cfg = Config::load(&config)?;
            runtime()?.block_on(party_node::node::run(cfg))
        }
        Command::Cert { action: CertAction::Request { config, out } } => cert_request(&config, out.as_deref()),
        Command::Cert { action: CertAction::Show { config, file } } => cert_show(config.as_deref(), file.as_deref()),
        Command::Ca { action: CaAction::Init { dir, name, days } } => ca_init(&dir, &name, days),
        Command::Ca { action: CaAction::Sign { dir, csr, out, days } } => ca_sign(&dir, &csr, &out, days),
        Command::Status { config } => runtime()?.block_on(status(&config)),
        Command::Jobs { config, action } => runtime()?.block_on(jobs(&config, action)),
        Command::StoreTorture { dir } => store_torture(&dir),
        Command::CheckArgs { args } => {
            match Cli::try_parse_from(std::iter::once("party-node".to_string()).chain(args)) {
                Ok(_) => println!("ok"),
                Err(e) => println!("{:?}\n{}", e.kind(), e.render()),
            }
            Ok(())
        }
        Command::Compose { action } => compose::run(action),
        Command::Bench(args) => bench(args),
    }
}

/// `party-node bench`: the in-session workloads (`party_node::bench`), then the workloads
/// through daemons (`throughput`): throughput (`mnist-cnn-N`) and warm-pool latency
/// (`pool-lenet5-b1`, `pool-mlp-a-b1`).
fn bench(mut args: party_node::bench::BenchArgs) -> anyhow::Result<()> {
    let (mut throughput, mut pooled, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    for w in args.workload.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if let Some(rows) = throughput::parse(w) {
            throughput.push((w.to_string(), rows?));
        } else if let Some(fixture) = throughput::parse_pool(w) {
            pooled.push((w.to_string(), fixture));
        } else {
            rest.push(w.to_string());
        }
    }
    if args.child_config.is_some() || !rest.is_empty() || (throughput.is_empty() && pooled.is_empty()) {
        args.workload = rest.join(",");
        party_node::bench::main(args.clone())?;
    }
    let sweep: Vec<usize> = args
        .sweep
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().ok().filter(|&b| b > 0).with_context(|| format!("--sweep: bad micro-batch {s:?}")))
        .collect::<anyhow::Result<_>>()?;
    for (name, rows) in throughput {
        throughput::run(&name, rows, &sweep, args.json_out.as_deref(), args.mode)?;
    }
    for (name, fixture) in pooled {
        throughput::pool_latency(&name, fixture, args.runs.max(5) * 4, args.json_out.as_deref(), args.mode)?;
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEMBRANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn init(
    role: Role,
    name: &str,
    out: &Path,
    listen: party_node::config::PeerAddr,
    api: SocketAddr,
    mode: Mode,
) -> anyhow::Result<()> {
    identity::check_name(name)?;
    anyhow::ensure!(
        mode.roles().contains(&role),
        "--role {role} with --mode {mode}: a two-party consortium has only alice and bob (no dealer)"
    );
    // `run` would refuse it: say so before writing anything.
    party_node::config::check_api_listen("--api", api)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let id = identity::self_signed(name)?;
    identity::write_new(&out.join("node.key.pem"), &id.key_pem, true)?;
    identity::write_new(&out.join("node.cert.pem"), &id.cert_pem, false)?;
    let others: Vec<Role> = mode.roles().iter().copied().filter(|&r| r != role).collect();
    let template = |r: Role| {
        format!(
            "# [[party]]\n# role = \"{r}\"\n# name = \"<their organisation name>\"\n# address = \"<their UDP address>\"\n\
             # cert = \"{r}.cert.pem\"            # pinned trust only: the node.cert.pem they send you\n"
        )
    };
    let text = format!(
        "# Membrane node config ({role}). Paths are relative to this file.\n\
         [node]\nrole = \"{role}\"\ncert = \"node.cert.pem\"\nkey = \"node.key.pem\"\ndata_dir = \"data\"\n\n\
         [api]\nlisten = \"{api}\"\ntoken = \"{token}\"\n\n\
         [trust]\nmode = \"pinned\"    # or \"ca\" with ca = \"ca.cert.pem\" and no [[party]] cert lines (docs/deploy.md)\n\n\
         {consortium}\
         [[party]]\nrole = \"{role}\"\nname = \"{name}\"\naddress = \"{listen}\"\ncert = \"node.cert.pem\"\n\n\
         # Add the other {n} with the certificates they send you (send them node.cert.pem):\n{}",
        others.iter().map(|&r| template(r)).collect::<Vec<_>>().join("\n"),
        consortium = match mode {
            Mode::Dealer => String::new(),
            Mode::TwoParty => "[consortium]\nmode = \"2pc\"    # alice and bob only: no dealer\n\n".to_string(),
        },
        n = if others.len() == 1 { "party" } else { "two parties," },
        token = random_token(),
    );
    identity::write_new(&out.join("node.toml"), &text, true)?;
    println!("wrote {0}/node.key.pem (secret), {0}/node.cert.pem, {0}/node.toml", out.display());
    let n = if others.len() == 1 {
        "organisation and add its [[party]] entry"
    } else {
        "two organisations and add their [[party]] entries"
    };
    println!("next, with pinned certificates: exchange node.cert.pem with the other {n};");
    println!("with a consortium CA: `party-node cert request --config {}/node.toml`", out.display());
    println!("(docs/deploy.md). Then `party-node run --config {}/node.toml`", out.display());
    Ok(())
}

fn init_local(out: &Path, base: u16, mode: Mode) -> anyhow::Result<()> {
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let addrs = testbed::Addrs {
        udp: [at(base), at(base + 1), at(base + 2)],
        api: [at(base + 100), at(base + 101), at(base + 102)],
    };
    let paths = testbed::write_mode(out, addrs, None, testbed::NAMES, mode)?;
    for p in paths {
        println!("party-node run --config {}", p.display());
    }
    Ok(())
}

fn cert_request(config: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let file = ConfigFile::read(config)?;
    let me = file.own_party().with_context(|| {
        format!(
            "config {} has no [[party]] entry for role {} (this node): the request is for the name in that entry; \
             add it (role, name, address)",
            config.display(),
            file.node.role
        )
    })?;
    let key_path = resolve(config, &file.node.key);
    let key_pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read [node] key {} (named in {})", key_path.display(), config.display()))?;
    let csr = identity::request(&me.name, &key_pem).with_context(|| format!("[node] key {}", key_path.display()))?;
    let out = out.map_or_else(|| resolve(config, Path::new("node.csr.pem")), Path::to_path_buf);
    std::fs::write(&out, csr).with_context(|| format!("writing {}", out.display()))?;
    let cert_path = resolve(config, &file.node.cert);
    println!(
        "wrote {}: a certificate request for {:?} (subjectAltName DNS:{}) from [node] key {} (the key stays here)",
        out.display(),
        me.name,
        me.name,
        key_path.display()
    );
    println!("next:");
    println!("  1. send {} to the consortium CA operator, who runs", out.display());
    println!(
        "       party-node ca sign --dir <CA dir> --csr {} --out {}.cert.pem",
        out.file_name().map_or_else(|| out.display().to_string(), |f| f.to_string_lossy().into_owned()),
        me.name
    );
    println!("     and sends back {0}.cert.pem, and ca.cert.pem (the CA's certificate) if you lack it;", me.name);
    println!("  2. install {}.cert.pem as {} ([node] cert; [node] key stays as it is),", me.name, cert_path.display());
    println!("     and ca.cert.pem beside {};", config.display());
    println!(
        "  3. in {}: [trust] mode = \"ca\", ca = \"ca.cert.pem\", and no `cert` line in any [[party]];",
        config.display()
    );
    println!("  4. check: party-node cert show --config {}", config.display());
    Ok(())
}

fn cert_show(config: Option<&Path>, file: Option<&Path>) -> anyhow::Result<()> {
    use party_node::certs::{self, CertInfo};
    let now = certs::now();
    let Some(config) = config else {
        let f = file.context("give a certificate file or --config")?;
        let all = certs::read_pem_certs(f)?;
        for (i, c) in all.iter().enumerate() {
            let n = if all.len() > 1 { format!(" (certificate {} of {})", i + 1, all.len()) } else { String::new() };
            println!("{}{n}", f.display());
            print!("{}", CertInfo::parse(c).with_context(|| f.display().to_string())?.describe(now));
        }
        return Ok(());
    };
    let file = ConfigFile::read(config)?;
    // Every certificate file the config names, once each (a node's own certificate is usually
    // also pinned in its own [[party]] entry), with who it should belong to.
    let mut files: Vec<(String, PathBuf, Option<String>)> = Vec::new();
    let mut add = |what: String, path: PathBuf, name: Option<String>| match files.iter_mut().find(|f| f.1 == path) {
        Some(f) => f.0 = format!("{}, {what}", f.0),
        None => files.push((what, path, name)),
    };
    let own_name = file.own_party().map(|p| p.name.clone());
    add(format!("[node] cert (this node, {})", file.node.role), resolve(config, &file.node.cert), own_name);
    for p in &file.parties {
        if let Some(c) = &p.cert {
            add(format!("[[party]] {} cert", p.role), resolve(config, c), Some(p.name.clone()));
        }
    }
    if let Some(ca) = &file.trust.ca {
        add("[trust] ca".into(), resolve(config, ca), None);
    }
    println!("{}: [trust] mode = {:?}", config.display(), format!("{:?}", file.trust.mode).to_lowercase());
    for (what, path, name) in &files {
        println!("\n{what}: {}", path.display());
        match certs::read_pem_certs(path).and_then(|c| CertInfo::parse(&c[0])) {
            Ok(info) => {
                print!("{}", info.describe(now));
                if let Some(name) = name
                    && !info.dns_names.iter().any(|n| n == name)
                {
                    println!(
                        "  problem:     the config names this party {name:?}, the certificate is for another name"
                    );
                }
            }
            Err(e) => println!("  problem:     {e:#}"),
        }
    }
    // The checks `run` makes, so that a half-done switch shows here rather than at start.
    let cfg = Config::load(config).context("the config does not load (`party-node run` would refuse it)")?;
    party_node::certs::check_at_start(&cfg).context("`party-node run` would refuse to start")?;
    println!("\nconfig check: ok");
    Ok(())
}

fn ca_init(dir: &Path, name: &str, days: u32) -> anyhow::Result<()> {
    let ca = identity::Ca::init(dir, name, days)?;
    let info = ca.info();
    println!("created the consortium CA {name:?} in {}:", dir.display());
    println!(
        "  {}  secret (mode 0600): keep it offline; whoever holds it can admit any organisation name",
        dir.join(identity::CA_KEY).display()
    );
    println!(
        "  {}  fingerprint {}, valid until {}: send it to every organisation ([trust] ca)",
        dir.join(identity::CA_CERT).display(),
        info.fingerprint,
        party_node::certs::format_time(info.not_after)
    );
    println!("next: each organisation runs `party-node cert request --config node.toml` and sends you the request;");
    println!(
        "      issue its certificate with `party-node ca sign --dir {} --csr <request> --out <name>.cert.pem`",
        dir.display()
    );
    Ok(())
}

fn ca_sign(dir: &Path, csr: &Path, out: &Path, days: u32) -> anyhow::Result<()> {
    let ca = identity::Ca::load(dir)?;
    let pem = std::fs::read(csr).with_context(|| format!("cannot read the certificate request {}", csr.display()))?;
    let issued =
        ca.sign_request(&pem, days).with_context(|| format!("refused the certificate request {}", csr.display()))?;
    identity::write_new(out, &issued.cert.pem(), false)?;
    let info = party_node::certs::CertInfo::parse(issued.cert.der())?;
    let now = party_node::certs::now();
    println!("issued {} for {:?}", out.display(), issued.name);
    println!("  name:        {}", issued.name);
    println!("  fingerprint: {}", info.fingerprint);
    println!(
        "  expires:     {} ({} days){}",
        party_node::certs::format_time(info.not_after),
        info.days_left(now),
        if issued.capped { ", cut to the CA certificate's own end" } else { "" }
    );
    println!(
        "check that {:?} is the organisation that sent {}: every node accepts this certificate as that party.",
        issued.name,
        csr.display()
    );
    println!(
        "next: send {} (and {} if they lack it) back; they install it as their [node] cert.",
        out.display(),
        dir.join(identity::CA_CERT).display()
    );
    Ok(())
}

async fn api_call(
    cfg: &Config,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    client::call(cfg.api_listen, Some(&cfg.api_token.0), method, path, body).await?.ok()
}

async fn status(config: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    // (A node started a moment ago may not listen yet: the client waits a few seconds.)
    let h = api_call(&cfg, "GET", "/v1/health", None).await?;
    println!("node: {} (P{}), up {} s", h["role"].as_str().unwrap_or("?"), h["party"], h["uptime_s"]);
    let p = api_call(&cfg, "GET", "/v1/peers", None).await?;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let ago = |ms: &serde_json::Value| {
        ms.as_u64().map_or_else(
            || "-".to_string(),
            |t| format!("{} ago", party_node::mesh::human(Duration::from_millis(now_ms.saturating_sub(t)))),
        )
    };
    println!(
        "{:<8} {:<16} {:<22} {:<10} {:>9}  {:<12}  error (while not connected)",
        "peer", "name", "address", "state", "rtt", "last failed"
    );
    for peer in p["peers"].as_array().into_iter().flatten() {
        let rtt = peer["rtt_ms"].as_f64().map(|r| format!("{r:.2} ms")).unwrap_or_else(|| "-".into());
        println!(
            "{:<8} {:<16} {:<22} {:<10} {:>9}  {:<12}  {}",
            peer["role"].as_str().unwrap_or("?"),
            peer["name"].as_str().unwrap_or("?"),
            peer["address"].as_str().unwrap_or("?"),
            peer["state"].as_str().unwrap_or("?"),
            rtt,
            ago(&peer["last_failed_unix_ms"]),
            peer["last_error"].as_str().unwrap_or("")
        );
    }
    for r in p["refused_certificates"].as_array().into_iter().flatten() {
        println!(
            "refused certificate {} (for {}) {} times, last {}: {}",
            r["fingerprint"].as_str().unwrap_or("?"),
            r["names"].as_array().map_or("?".into(), |n| n
                .iter()
                .filter_map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")),
            r["count"],
            ago(&r["last_unix_ms"]),
            r["reason"].as_str().unwrap_or("?")
        );
    }
    for c in h["certificates"].as_array().into_iter().flatten() {
        if let Some(w) = c["warning"].as_str() {
            println!("warning: certificate {w}");
        }
    }
    Ok(())
}

async fn jobs(config: &Path, action: JobsAction) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    match action {
        JobsAction::List => {
            let v = api_call(&cfg, "GET", "/v1/jobs", None).await?;
            for j in v["jobs"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<11} {}/{} {:<14} {}",
                    j["id"].as_str().unwrap_or("?"),
                    j["state"].as_str().unwrap_or("?"),
                    j["steps_done"],
                    j["steps_total"],
                    j["step"].as_str().unwrap_or(""),
                    j["error"].as_str().unwrap_or("")
                );
            }
        }
        JobsAction::Submit { id, m, k, n, seed } => {
            let req = JobRequest::matmul(id, m, k, n, seed);
            check_request(&req)?;
            let v = api_call(&cfg, "POST", "/v1/jobs", Some(serde_json::to_value(&req)?)).await?;
            println!("{}", v["id"].as_str().unwrap_or("?"));
        }
        JobsAction::Show { id } => {
            let v = api_call(&cfg, "GET", &format!("/v1/jobs/{id}"), None).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        JobsAction::Wait { id, timeout } => {
            wait_job(&cfg, &id, Duration::from_secs(timeout), |_| {}).await?;
            println!("done");
        }
        JobsAction::Result { id } => {
            let v = api_call(&cfg, "GET", &format!("/v1/jobs/{id}/result"), None).await?;
            println!("{}", json!(v));
        }
    }
    Ok(())
}

fn store_torture(dir: &Path) -> anyhow::Result<()> {
    let store = party_node::store::Store::open(dir)?;
    // Item i holds i repeated; each size differs so a torn write could not pass as another.
    // Resume after the highest `done` of an earlier (killed) run, so `done ≤ item` per slot
    // holds across runs too.
    let mut start = 0u64;
    for name in store.list("done")? {
        if let Some(d) = store.get("done", &name)? {
            start = start.max(u64::from_le_bytes(d[..8].try_into().context("done item of 8 bytes")?) + 1);
        }
    }
    for i in start.. {
        let payload: Vec<u8> = std::iter::repeat_n(i.to_le_bytes(), 1 + (i as usize % 4096)).flatten().collect();
        store.put("items", &format!("{:08}", i % 50), &payload)?;
        store.put("done", &format!("{:08}", i % 50), &i.to_le_bytes())?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one per command-line option
async fn publish(
    config: &Path,
    model: &Path,
    name: &str,
    output: &str,
    frac_bits: Option<u32>,
    compare: &CompareArgs,
    plan_out: Option<&Path>,
    policy: party_node::service::ModelPolicy,
) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let path = std::fs::canonicalize(model).with_context(|| format!("{} not found", model.display()))?;
    let req = party_node::ml::PublishRequest {
        name: name.into(),
        path: path.display().to_string(),
        output: Some(output.into()),
        frac_bits,
        nonlinear: Some(compare.nonlinear.clone()),
        input_range: compare.input_range,
        policy: Some(policy),
    };
    let v = api_call(&cfg, "POST", "/v1/models", Some(serde_json::to_value(&req)?)).await?;
    let published: party_node::api::Published = serde_json::from_value(v).context("the node's answer")?;
    if let Some(p) = plan_out {
        let plan = serde_json::to_string_pretty(&published.plan)?;
        std::fs::write(p, &plan).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote the public plan to {}", p.display());
    }
    println!("published {name:?} (plan {})", &published.plan_hash[..16]);
    let mut missed = false;
    for d in &published.offered {
        match &d.error {
            None => println!("  offered to {} ({:?}): stored", d.role, d.name),
            Some(e) => {
                missed = true;
                println!("  offered to {} ({:?}): NOT delivered yet: {e}", d.role, d.name);
            }
        }
    }
    if missed {
        println!("  (a node that was down gets the offer when it reconnects; `party-node models` there shows it)");
    }
    Ok(())
}

async fn models(config: &Path, json_out: bool) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let v = api_call(&cfg, "GET", "/v1/models", None).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let models: party_node::api::Models = serde_json::from_value(v).context("the node's answer")?;
    if models.models.is_empty() {
        println!("no models on this node yet (alice publishes them: `party-node publish`)");
        return Ok(());
    }
    println!("{:<20} {:<12} {:<10} {:<13} {:<14} {:<16} terms", "name", "owner", "source", "output", "input", "plan");
    for m in &models.models {
        let output = serde_json::to_value(m.output)?.as_str().unwrap_or("?").to_string();
        let input = format!("{:?}", m.input);
        let mut terms = Vec::new();
        if let Some(t) = &m.terms {
            terms.push(if t.allowed { "you may request".to_string() } else { "NOT offered to you".to_string() });
            if let Some(q) = t.quota_rows {
                terms.push(match m.remaining_rows {
                    Some(r) => format!("{r} of {q} rows left"),
                    None => format!("quota {q} rows"),
                });
            }
            if let Some(q) = t.quota_rows_per_day {
                terms.push(match m.remaining_rows_today {
                    Some(r) => format!("{r} of {q} rows left today"),
                    None => format!("{q} rows a day"),
                });
            }
            if let Some(b) = t.max_batch {
                terms.push(format!("at most {b} rows a job"));
            }
            if t.approval == party_node::config::Approval::Manual {
                terms.push("each request approved by hand".into());
            }
        }
        if let Some(p) = &m.policy {
            terms.push(format!("allow {}", p.allow.join(",")));
            if let Some(q) = p.quota_rows {
                terms.push(format!("quota {q}"));
            }
            if let Some(q) = p.quota_rows_per_day {
                terms.push(format!("{q}/day"));
            }
            if let Some(b) = p.max_batch {
                terms.push(format!("max batch {b}"));
            }
            if p.approval == party_node::config::Approval::Manual {
                terms.push("manual approval".into());
            }
            for (org, u) in &m.usage {
                terms.push(format!("{org} used {}", u.total));
            }
        }
        if let Some(h) = &m.offered_plan_hash {
            terms.push(format!("alice now offers plan {} (pinned plan kept)", &h[..16]));
        }
        println!(
            "{:<20} {:<12} {:<10} {:<13} {:<14} {:<16} {}",
            m.name,
            m.owner,
            m.source,
            output,
            input,
            &m.plan_hash[..16],
            terms.join("; ")
        );
    }
    Ok(())
}

async fn proposals(config: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let v = api_call(&cfg, "GET", "/v1/proposals", None).await?;
    let p: party_node::api::Proposals = serde_json::from_value(v).context("the node's answer")?;
    if p.proposals.is_empty() {
        println!("no proposals held for approval");
    }
    for h in &p.proposals {
        println!(
            "{}  {} ({}) asks: {} {}{} rows — held: {}",
            h.job,
            h.peer,
            h.role,
            h.kind,
            h.model.as_deref().map(|m| format!("{m}, ")).unwrap_or_default(),
            h.rows,
            h.reason
        );
    }
    if !p.proposals.is_empty() {
        println!("decide with `party-node approve ID --config …` or `party-node refuse ID --reason … --config …`");
    }
    Ok(())
}

async fn decide(
    config: &Path,
    id: &str,
    approve: bool,
    data: Option<PathBuf>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    id.parse::<party_node::jobs::JobId>()?;
    let (path, body) = if approve {
        let data = data
            .map(|d| std::fs::canonicalize(&d).with_context(|| format!("{} not found", d.display())))
            .transpose()?
            .map(|p| p.display().to_string());
        (format!("/v1/proposals/{id}/approve"), json!({ "data": data }))
    } else {
        (format!("/v1/proposals/{id}/refuse"), json!({ "reason": reason }))
    };
    api_call(&cfg, "POST", &path, Some(body)).await?;
    println!("{} {id}", if approve { "approved" } else { "refused" });
    Ok(())
}

fn audit(config: &Path, json_out: bool) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let entries = party_node::audit::AuditLog::read(&cfg.data_dir)?;
    for e in &entries {
        if json_out {
            println!("{}", serde_json::to_string(e)?);
            continue;
        }
        let secs = (e.time_unix_ms / 1000) as i64;
        let t = time::OffsetDateTime::from_unix_timestamp(secs).map_or_else(
            |_| e.time_unix_ms.to_string(),
            |t| {
                format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            },
        );
        let detail = match (&e.reason, e.bytes) {
            (Some(r), _) => r.clone(),
            (None, Some(b)) => format!("{b} bytes"),
            _ => String::new(),
        };
        println!(
            "{t}  {:<8} {}  {:<10} {:<7} {:<8} {:<12} {:>7}  {:<9} {detail}",
            e.event,
            &e.job[..e.job.len().min(8)],
            e.peer,
            e.role,
            e.kind,
            e.model.as_deref().unwrap_or("-"),
            e.rows,
            e.decision
        );
    }
    if entries.is_empty() {
        println!("the audit log is empty ({})", cfg.data_dir.join(party_node::audit::FILE).display());
    }
    Ok(())
}

async fn register(config: &Path, name: &str, plan: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let text = std::fs::read_to_string(plan).with_context(|| format!("reading {}", plan.display()))?;
    let plan: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not a plan (JSON)", plan.display()))?;
    api_call(&cfg, "POST", "/v1/plans", Some(json!({"name": name, "plan": plan}))).await?;
    eprintln!("registered {name:?}");
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one per command-line option
async fn predict(
    config: &Path,
    model: &str,
    id: Option<String>,
    by_hand: bool,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    batch: Option<usize>,
    micro_batch: Option<usize>,
    wait: bool,
) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let abs = |p: Option<PathBuf>, must_exist: bool| -> anyhow::Result<Option<String>> {
        p.map(|p| {
            let p = if must_exist {
                std::fs::canonicalize(&p).with_context(|| format!("{} not found", p.display()))?
            } else if p.is_absolute() {
                p
            } else {
                std::env::current_dir()?.join(p)
            };
            Ok(p.display().to_string())
        })
        .transpose()
    };
    let output_shown = output.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let (route, req) = if by_hand {
        let job = party_node::jobs::PredictJob {
            id,
            model: model.into(),
            batch,
            input: abs(input, true)?,
            output: abs(output, false)?,
            micro_batch,
        };
        ("/v1/jobs", serde_json::to_value(party_node::jobs::JobRequest::Predict(job))?)
    } else {
        let (Some(input), Some(output)) = (abs(input, true)?, abs(output, false)?) else {
            bail!(
                "give --input and --output (bob's rows and where his predictions go); alice and the dealer do                  nothing per prediction: their nodes decide on bob's request by their policies"
            );
        };
        let req = party_node::service::PredictRequest { model: model.into(), input, output, micro_batch };
        ("/v1/requests", serde_json::to_value(party_node::service::Request::Predict(req))?)
    };
    let v = api_call(&cfg, "POST", route, Some(req)).await?;
    let id = v["id"].as_str().unwrap_or("?").to_string();
    if by_hand || !wait {
        println!("{id}");
    } else {
        eprintln!("job {id}: proposed to alice's and the dealer's nodes");
    }
    if !wait {
        return Ok(());
    }
    let bar = local::rows_bar();
    let mut last_state = String::new();
    let watch = |r: &serde_json::Value| {
        let state = r["state"].as_str().unwrap_or("").to_string();
        if state != last_state {
            // Waiting on a person is worth a line even without a terminal for the bar.
            if state == "held" {
                bar.suspend(|| eprintln!("job {id}: {}", r["step"].as_str().unwrap_or("held")));
            } else if last_state == "held" {
                bar.suspend(|| eprintln!("job {id}: approved; running"));
            }
            last_state = state;
        }
        local::follow(&bar, r)
    };
    let r = wait_job(&cfg, &id, Duration::from_secs(7 * 24 * 3600), watch).await;
    bar.finish_and_clear();
    let r = r?;
    if let Some(rows) = r["rows"]["total"].as_u64() {
        eprintln!(
            "job {id}: {rows} rows predicted in {:.2} s; output written to {}",
            r["seconds"].as_f64().unwrap_or(0.0),
            output_shown
        );
    }
    for l in r["layers"].as_array().into_iter().flatten() {
        eprintln!(
            "  {:<14} {:>8.1} ms {:>4} rounds {:>12} B online",
            l["name"].as_str().unwrap_or("?"),
            l["seconds"].as_f64().unwrap_or(0.0) * 1e3,
            l["rounds"],
            l["online_sent"]
        );
    }
    Ok(())
}

/// Number of rows of Bob's input for a model with this per-sample shape.
fn read_input_rows(path: &Path, per_sample: &[usize]) -> anyhow::Result<usize> {
    Ok(party_node::ml::read_input(path, per_sample)?.shape()[0])
}

/// Reads an output file written by a prediction job.
fn ml_read_output(path: &Path) -> anyhow::Result<ndarray::ArrayD<f64>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => Ok(mpc_ml::npy::read(path)?),
        _ => {
            let text = std::fs::read_to_string(path)?;
            let rows: Vec<Vec<f64>> = text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| l.split(',').map(|c| c.parse::<f64>()).collect::<Result<_, _>>())
                .collect::<Result<_, _>>()?;
            let w = rows.first().map(Vec::len).unwrap_or(0);
            Ok(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[rows.len(), w]), rows.concat())?)
        }
    }
}

#[allow(clippy::too_many_arguments)] // one per command-line option
fn local_predict(
    model: &Path,
    input: &Path,
    output: &Path,
    policy: &str,
    verify: bool,
    frac_bits: Option<u32>,
    compare: &CompareArgs,
    micro_batch: Option<usize>,
    repeat: usize,
    keep: bool,
    mode: Mode,
) -> anyhow::Result<()> {
    let policy: mpc_ml::OutputPolicy = policy.parse().map_err(anyhow::Error::msg)?;
    // Check the model and input before starting anything.
    let imported = mpc_ml::onnx::import_file(model)?;
    party_node::ml::read_input(input, &imported.model.input_shape)?;
    let mut c = local::Consortium::start(keep, mode)?;
    let opts = local::PublishOptions {
        frac_bits,
        nonlinear: Some(compare.nonlinear.clone()),
        input_range: compare.input_range,
        micro_batch,
    };
    let rt = runtime()?;
    let r = rt.block_on(local::predict(&mut c, model, input, output, policy, &opts))?;
    local::print_profile(&r);
    if repeat > 0 {
        rt.block_on(local::repeat_predict(&mut c, input, output, &r, repeat))?;
    }
    if verify {
        let want = local::plaintext(model, input, policy)?;
        let err = r.output.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        println!(
            "
verify: max |private − plaintext| = {err:.3e} over {} values",
            want.len()
        );
    }
    Ok(())
}

async fn train_submit(
    config: &Path,
    id: Option<String>,
    by_hand: bool,
    args: &TrainArgs,
    shape: Option<(usize, usize, usize)>,
    wait: bool,
) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let v = if by_hand {
        let req = party_node::jobs::JobRequest::Train(party_node::jobs::TrainJob { id, train: args.request(shape)? });
        api_call(&cfg, "POST", "/v1/jobs", Some(serde_json::to_value(req)?)).await?
    } else {
        let req = party_node::service::Request::Train(args.request(None)?);
        api_call(&cfg, "POST", "/v1/requests", Some(serde_json::to_value(req)?)).await?
    };
    let id = v["id"].as_str().unwrap_or("?").to_string();
    println!("{id}");
    if !wait {
        return Ok(());
    }
    let bar = local::progress_bar();
    let r = wait_job(&cfg, &id, Duration::from_secs(7 * 24 * 3600), |r| local::follow(&bar, r)).await;
    match r {
        Ok(r) => {
            bar.finish_and_clear();
            println!("{}", r["metrics"]);
            Ok(())
        }
        Err(e) => {
            bar.abandon();
            Err(e)
        }
    }
}

/// Polls job `id` on this node until it ends; returns its record if done, its reason if not.
/// `watch` sees the record while the job runs.
async fn wait_job(
    cfg: &Config,
    id: &str,
    limit: Duration,
    mut watch: impl FnMut(&serde_json::Value),
) -> anyhow::Result<serde_json::Value> {
    let t0 = Instant::now();
    loop {
        let r = api_call(cfg, "GET", &format!("/v1/jobs/{id}"), None).await?;
        match r["state"].as_str() {
            Some("done") => return Ok(r),
            Some(s @ ("failed" | "interrupted" | "refused")) => {
                bail!("job {id} {s}: {}", r["error"].as_str().unwrap_or("?"))
            }
            _ if t0.elapsed() > limit => bail!("job {id} not done after {limit:?}"),
            _ => watch(&r),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("membrane-{}-{}", std::process::id(), party_node::jobs::JobId::random()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn local_train(args: &TrainArgs, verify: bool, json_out: bool, mode: Mode) -> anyhow::Result<()> {
    let data = args.data.as_deref().context("local train needs --data")?;
    let label = args.label.as_deref().context("local train needs --label")?;
    if verify && args.reveal_to.is_none() {
        bail!("--verify compares the trained model's metrics with plaintext training: add --reveal-to bob");
    }
    // Everything is checked on Bob's side before a node starts.
    let bob_req = args.request(None)?;
    let prepared = party_node::ml::prepare_train(party_node::config::Role::Bob, &bob_req)?;
    let mut c = local::Consortium::start(false, mode)?;
    let rt = runtime()?;
    let (metrics, secs) = rt.block_on(local::train(&mut c, &bob_req))?;
    let mut out = serde_json::Map::new();
    out.insert("seconds".into(), json!(secs));
    if let Some(m) = metrics.as_object() {
        out.extend(m.clone());
    }
    println!("trained privately in {secs:.2} s: {}", serde_json::Value::Object(out.clone()));
    // The model stays secret-shared and serves predictions at once: Bob's held-out rows (raw
    // features; his node standardises them as in training) through a predict job.
    let name = metrics["model"].as_str().context("the training job recorded no model name")?.to_string();
    let (_, test) = mpc_ml::data::split(&mpc_ml::data::load_csv(data, label)?, args.test_split, args.seed);
    if test.x.nrows() > 0 {
        let dir = tempfile_dir()?;
        let (input, output) = (dir.join("heldout.csv"), dir.join("served.csv"));
        let rows: Vec<String> =
            test.x.outer_iter().map(|r| r.iter().map(|v| format!("{v:e}")).collect::<Vec<_>>().join(",")).collect();
        std::fs::write(&input, rows.join("\n") + "\n")?;
        let r = rt.block_on(local::run_predict(&mut c, &name, &input.display().to_string(), &output, None))?;
        let served = match prepared.plan.config.arch {
            mpc_ml::train::Arch::LinReg => {
                let mean = test.y.mean().unwrap_or(0.0);
                let ss_res: f64 = r.output.iter().zip(&test.y).map(|(p, t)| (p - t).powi(2)).sum();
                let ss_tot: f64 = test.y.iter().map(|t| (t - mean).powi(2)).sum();
                json!({"served_test_r2": 1.0 - ss_res / ss_tot})
            }
            _ => {
                let preds = mpc_ml::train::predictions(&r.output);
                let acc = preds.iter().zip(&test.y).filter(|(p, y)| (**p - **y).abs() < 0.5).count() as f64
                    / test.y.len() as f64;
                json!({"served_test_accuracy": acc})
            }
        };
        println!(
            "served {} held-out predictions from the secret-shared model {name:?} in {:.2} s: {served}",
            test.x.nrows(),
            r.seconds
        );
        if let Some(m) = served.as_object() {
            out.extend(m.clone());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    if verify {
        use mpc_ml::train::{Arch, accuracy, r2, train_plain};
        let ((x, y), (xt, yt)) = (prepared.train.expect("bob has data"), prepared.test.expect("bob has data"));
        let m = train_plain(&prepared.plan, &x, &y);
        let plain = match prepared.plan.config.arch {
            Arch::LinReg => json!({"plain_train_r2": r2(&m, &x, &y), "plain_test_r2": r2(&m, &xt, &yt)}),
            _ => json!({"plain_train_accuracy": accuracy(&m, &x, &y), "plain_test_accuracy": accuracy(&m, &xt, &yt)}),
        };
        println!("plaintext training, same seed and batches: {plain}");
        if let Some(p) = plain.as_object() {
            out.extend(p.clone());
        }
    }
    if json_out {
        println!("{}", serde_json::Value::Object(out));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one per command-line option
async fn analyze_submit(
    config: &Path,
    id: Option<String>,
    by_hand: bool,
    args: &AnalyzeArgs,
    alice_rows: usize,
    plan: Option<&Path>,
    plan_out: Option<&Path>,
    wait: bool,
) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let mut req = args.request(alice_rows)?;
    if let Some(p) = plan {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        req.plan =
            Some(serde_json::from_str(&text).with_context(|| format!("{} is not an analytics plan", p.display()))?);
    }
    let v = if by_hand {
        let req = party_node::jobs::JobRequest::Analyze(party_node::jobs::AnalyzeJob { id, analyze: req });
        api_call(&cfg, "POST", "/v1/jobs", Some(serde_json::to_value(req)?)).await?
    } else {
        let req = party_node::service::Request::Analyze(req);
        api_call(&cfg, "POST", "/v1/requests", Some(serde_json::to_value(req)?)).await?
    };
    let id = v["id"].as_str().unwrap_or("?").to_string();
    println!("{id}");
    if let Some(out) = plan_out {
        let rec = api_call(&cfg, "GET", &format!("/v1/jobs/{id}"), None).await?;
        let plan = serde_json::to_string_pretty(&rec["plan"]["plan"])?;
        std::fs::write(out, plan).with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "wrote the public plan to {0}; alice and the dealer run: party-node analyze --config … --id {id} --plan {0}",
            out.display()
        );
    }
    if !wait {
        return Ok(());
    }
    let r = wait_job(&cfg, &id, Duration::from_secs(3600), |_| {}).await?;
    if r["metrics"].is_null() {
        eprintln!("done (the statistics are revealed to bob only)");
    } else {
        let report: mpc_ml::analytics::Report = serde_json::from_value(r["metrics"].clone())?;
        local::print_report(&report);
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}

fn local_analyze(args: &AnalyzeArgs, alice_data: Option<&Path>, verify: bool, mode: Mode) -> anyhow::Result<()> {
    use mpc_ml::analytics::analyze_plain;
    use party_node::config::Role;
    args.data.as_deref().context("local analyze needs --data (bob's CSV)")?;
    // Alice's rows: counted here, checked by her node; everything is validated before a node starts.
    let alice = match alice_data {
        Some(p) => {
            let abs = std::fs::canonicalize(p).with_context(|| format!("{} not found", p.display()))?;
            Some((abs.display().to_string(), mpc_ml::data::load_matrix(&abs)?))
        }
        None => None,
    };
    let bob_req = args.request(alice.as_ref().map(|(_, (_, x))| x.nrows()).unwrap_or(0))?;
    let bob = party_node::ml::prepare_analyze(Role::Bob, &bob_req)?;
    if let Some((path, (cols, _))) = &alice {
        ensure_columns(cols, &bob.plan.columns, path)?;
        let req = party_node::ml::AnalyzeRequest {
            plan: Some(bob.plan.clone()),
            data: Some(path.clone()),
            ..Default::default()
        };
        party_node::ml::prepare_analyze(Role::Alice, &req)?;
    }
    let mut c = local::Consortium::start(false, mode)?;
    let (report, secs) =
        runtime()?.block_on(local::analyze(&mut c, &bob_req, alice.as_ref().map(|(p, _)| p.clone())))?;
    drop(c);
    println!("statistics revealed to bob, computed on shares in {secs:.2} s:");
    local::print_report(&report);
    if verify {
        let all = match &alice {
            Some((_, (_, xa))) => {
                ndarray::concatenate(ndarray::Axis(0), &[xa.view(), bob.data.as_ref().expect("bob has data").view()])?
            }
            None => bob.data.clone().expect("bob has data"),
        };
        let plain = analyze_plain(&bob.plan, &all);
        println!("\nverify: max |private − plaintext f64| = {:.3e} over every figure", report.max_abs_diff(&plain));
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

fn ensure_columns(got: &[String], want: &[String], path: &str) -> anyhow::Result<()> {
    if got != want {
        bail!("{path}: columns {} differ from bob's {}", got.join(", "), want.join(", "));
    }
    Ok(())
}
