//! Models and private inference jobs on the node.
//!
//! * **Publishing** (Alice): `POST /v1/models` with a local ONNX path imports the model, keeps
//!   the file in Alice's store (`models/<name>`) and the public plan for batch 1 in
//!   `plans/<name>`; the response carries that plan. Alice sends it to the other two
//!   organisations, who register it on their nodes (`POST /v1/plans`): that is all Bob and the
//!   dealer ever learn of the model.
//! * **Predicting**: every node is given the same job (`kind = "predict"`, model name, batch);
//!   Bob also names his input file (.npy or .csv) and where to write the output. Each node
//!   derives the job's plan from the registered one; `Party::connect` checks that the three
//!   hashes agree before any share moves. Alice's weights are shared afresh in each job (no
//!   communication) and pre-opened in one round.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use mpc_ml::{LayerProfile, Model, OutputPolicy, Plan, npy, onnx};
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use crate::config::Role;
use crate::store::Store;

/// Largest batch a training job accepts.
pub const MAX_BATCH: usize = 4096;

/// Model and plan names: 1–64 of `a-z A-Z 0-9 - _ .`, not starting with a dot.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    ensure!(
        (1..=64).contains(&name.len())
            && !name.starts_with('.')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "model name {name:?}: use 1-64 letters, digits, '-', '_' or '.'"
    );
    Ok(())
}

/// `POST /v1/models` body (Alice).
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Name the other organisations will use.
    pub name: String,
    /// Path of the ONNX file on this machine.
    pub path: String,
    /// What Bob learns: `logits`, `probabilities` or `label`.
    #[serde(default)]
    pub output: Option<String>,
    /// Fixed-point fractional bits (default 16).
    #[serde(default)]
    pub frac_bits: Option<u32>,
    /// How comparisons (ReLU, max pooling, argmax, activations) run: `auto` (default: per
    /// layer, by the cost model on this node's `[link]`), `helper`, `fss` or `fss1`.
    #[serde(default)]
    pub nonlinear: Option<String>,
    /// The range `[lo, hi]` of every input value Bob will send. Narrows each comparison's
    /// window to what the weights imply (cheaper comparisons); Bob's node refuses inputs
    /// outside it. Default: none (widest windows).
    #[serde(default)]
    pub input_range: Option<[f64; 2]>,
    /// Who may request predictions, and how many ([`crate::service::ModelPolicy`]); the
    /// model is offered to the peers over the mesh. Omitted: the model serves only jobs every
    /// organisation submits by hand (`POST /v1/jobs`).
    #[serde(default)]
    pub policy: Option<crate::service::ModelPolicy>,
}

/// `POST /v1/plans` body (Bob, dealer): a plan published by Alice.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The model's name.
    pub name: String,
    /// The plan Alice's `publish` printed.
    #[schemars(with = "serde_json::Value")]
    pub plan: Plan,
}

/// Imports and stores a model (Alice). Returns the public plan for batch 1, whose comparison
/// settings assume `link`.
pub fn publish(
    store: &Store,
    role: Role,
    req: &PublishRequest,
    link: mpc_proto::compare::Link,
) -> anyhow::Result<Plan> {
    ensure!(role == Role::Alice, "only the model owner (alice) publishes models; this node is {role}");
    check_name(&req.name)?;
    // Weights kept beside the model (`model.onnx.data`) are read in, so the stored model is
    // self-contained.
    let bytes = onnx::read_model_file(std::path::Path::new(&req.path))
        .with_context(|| format!("reading the model file {}", req.path))?;
    let imported = onnx::import(&bytes).with_context(|| format!("importing {}", req.path))?;
    let policy: OutputPolicy = req.output.as_deref().unwrap_or("logits").parse().map_err(anyhow::Error::msg)?;
    // What the network's depth needs unless the owner asks: 16 for shallow networks, 20 for
    // deep ones (products truncate exactly, so more bits cost no corrupted rows).
    let frac = req.frac_bits.unwrap_or_else(|| mpc_ml::model::recommended_frac_bits(&imported.model));
    let fixed = mpc_proto::FixedPoint::new(frac, 47u32.saturating_sub(frac)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let options = plan_options(req.nonlinear.as_deref(), req.input_range, link, fixed)?;
    let plan = imported.model.plan_with(1, policy, fixed, options)?;
    store.put("models", &req.name, &bytes)?;
    store.put("plans", &req.name, &serde_json::to_vec(&plan)?)?;
    tracing::info!(model = %req.name, layers = plan.steps.len(), "model published");
    Ok(plan)
}

/// The plan options of a publish request: comparison policy, link, declared input range.
pub fn plan_options(
    nonlinear: Option<&str>,
    input_range: Option<[f64; 2]>,
    link: mpc_proto::compare::Link,
    fixed: mpc_proto::FixedPoint,
) -> anyhow::Result<mpc_ml::PlanOptions> {
    let comparisons: mpc_proto::compare::Policy = nonlinear.unwrap_or("auto").parse().map_err(anyhow::Error::msg)?;
    // The node makes dealer material on demand inside each job: plan for the whole job's time.
    let options = mpc_ml::PlanOptions { comparisons, link, ..Default::default() };
    Ok(match input_range {
        None => options,
        Some([lo, hi]) => {
            ensure!(
                lo.is_finite() && hi.is_finite() && lo <= hi,
                "input_range [{lo}, {hi}]: give two finite numbers, the lower first"
            );
            let max = fixed.max_value();
            ensure!(
                lo.abs() <= max && hi.abs() <= max,
                "input_range [{lo}, {hi}] exceeds what the fixed-point format encodes (±{max})"
            );
            options.with_input_range(lo, hi, fixed)
        }
    })
}

/// Registers a published plan (Bob, dealer).
pub fn register(store: &Store, role: Role, req: &RegisterRequest) -> anyhow::Result<()> {
    ensure!(
        role != Role::Alice,
        "alice publishes models (POST /v1/models); register plans on bob's and the dealer's nodes"
    );
    check_name(&req.name)?;
    req.plan.validate()?;
    ensure!(req.plan.batch() == 1, "register the batch-1 plan that `publish` printed");
    store.put("plans", &req.name, &serde_json::to_vec(&req.plan)?)?;
    tracing::info!(model = %req.name, "plan registered");
    Ok(())
}

/// The registered plans: `(name, plan)`.
pub fn list(store: &Store) -> anyhow::Result<Vec<(String, Plan)>> {
    let mut out = Vec::new();
    for name in store.list("plans")? {
        if let Some(b) = store.get("plans", &name)? {
            out.push((name.clone(), serde_json::from_slice(&b).with_context(|| format!("plan {name} is unreadable"))?));
        }
    }
    Ok(out)
}

/// The working set a micro-batch is sized for, when the memory budget allows more. Larger
/// micro-batches are slower, not faster: measured with `party-node bench --workload
/// mnist-cnn-3000` (2 vCPUs), 100–200 rows (≈65–130 MiB) ran 537 rows/s, 400 rows 460, 800 rows
/// 443 and 1,600 rows (1 GiB) 330–490 — tensors of tens of MiB are mapped and faulted in afresh
/// by every operation, and the per-row work is already in large GEMMs at 100 rows.
pub const MICRO_BATCH_SET: u64 = 128 << 20;

/// The hash the parties of a prediction of `rows` rows of `plan` agree on.
pub fn job_hash(plan: &Plan, rows: usize) -> [u8; 32] {
    mpc_ml::plan_hash("predict", &(plan.hash(), rows as u64))
}

/// Everything a node needs to run its part of a prediction of any number of rows: the job runs
/// as micro-batches against one loaded model, Bob's rows read and written a micro-batch at a
/// time.
pub struct Prepared {
    /// The published plan (batch 1); micro-batches run with its rebatches.
    pub plan: Plan,
    /// Rows in all.
    pub rows: usize,
    /// Alice: the model.
    pub model: Option<Model>,
    /// Bob: his input, checked in full (values, declared range) before the job starts.
    pub input: Option<crate::rows::RowReader>,
    /// Bob: the output, written to `<path>.partial` and renamed when complete.
    pub output: Option<crate::rows::RowWriter>,
    /// Bob, a privately trained model: the standardisation of its training features
    /// (`mean`, `std`), applied to his rows.
    pub standardize: Option<(ndarray::Array1<f64>, ndarray::Array1<f64>)>,
    /// A privately trained model: this party's shares of its weights (placeholders on the
    /// dealer). Nobody holds the weights in the clear.
    pub shared: Option<Vec<mpc_proto::AShare>>,
    /// The node's memory budget for the job in bytes (`[limits] memory_mib`).
    pub memory: u64,
    /// A cap on the micro-batch the job request gave.
    pub micro_batch_cap: Option<usize>,
}

impl Prepared {
    /// The hash the parties agree on: the published plan and the number of rows.
    pub fn session_hash(&self) -> [u8; 32] {
        job_hash(&self.plan, self.rows)
    }

    /// The micro-batch this node proposes (the job uses the smallest of the three): what its
    /// memory budget allows; on Bob's node (the rows are his) also at most the job request's
    /// `micro_batch`, or else [`MICRO_BATCH_SET`] worth of rows. At least 1 ([`prepare`]
    /// refused a budget smaller than one row), at most the job's rows.
    pub fn max_micro_batch(&self) -> usize {
        let per_row = self.plan.bytes_per_row().max(1);
        let memory = (self.memory / per_row) as usize;
        let wanted = match (&self.input, self.micro_batch_cap) {
            (Some(_), Some(cap)) => cap,
            (Some(_), None) => (MICRO_BATCH_SET / per_row) as usize,
            (None, _) => usize::MAX,
        };
        memory.min(wanted).clamp(1, self.rows)
    }
}

/// What every node keeps about a model trained privately (`store` namespace `trained`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct TrainedRecord {
    /// The training job (its shares are under `shares/<job>` at Alice's and Bob's nodes).
    pub job: String,
    /// Bob's node: the standardisation fitted on his training data, applied to his inputs.
    #[serde(default)]
    pub mean: Option<Vec<f64>>,
    /// See `mean`.
    #[serde(default)]
    pub std: Option<Vec<f64>>,
}

/// Reads this party's stored shares of a trained model, shaped as the plan's weights.
fn load_shares(store: &Store, role: Role, job: &str, plan: &Plan) -> anyhow::Result<Vec<mpc_proto::AShare>> {
    let shapes = mpc_ml::shared_weight_shapes(plan);
    if role == Role::Dealer {
        return Ok(shapes.iter().map(|s| mpc_proto::AShare::dealer(s)).collect());
    }
    let raw = store.get("shares", job)?.with_context(|| format!("this node has no shares of training job {job}"))?;
    let total: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    ensure!(
        raw.len() == 8 * total,
        "the stored shares of job {job} have {} bytes, the model needs {}",
        raw.len(),
        8 * total
    );
    let mut words = raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
    shapes
        .iter()
        .map(|s| {
            let n = s.iter().product();
            Ok(mpc_proto::AShare::from_share(mpc_proto::RingTensor::from_vec(s, words.by_ref().take(n).collect())?))
        })
        .collect()
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("steps", &self.plan.steps.len()).finish_non_exhaustive()
    }
}

/// Validates a prediction request on this node and loads what it needs (before the job starts,
/// so a bad request is a 4xx, not a failed job): Bob's whole input is checked (finite values,
/// inside the declared range, the right width) and room for the whole output is made sure
/// of; every node checks that one row fits its memory budget `memory` (bytes). `rows` is the
/// number of rows (Alice and the dealer must give it; Bob's input gives it).
pub fn prepare(
    store: &Store,
    role: Role,
    model: &str,
    rows: Option<usize>,
    input: Option<&str>,
    output: Option<&str>,
    memory: u64,
) -> anyhow::Result<Prepared> {
    check_name(model)?;
    let raw = store
        .get("plans", model)?
        .with_context(|| format!("no model named {model:?} on this node (publish or register it first)"))?;
    let plan: Plan = serde_json::from_slice(&raw).context("the stored plan is unreadable")?;
    ensure!(plan.batch() == 1, "the stored plan of {model:?} is not a batch-1 plan");
    let trained: Option<TrainedRecord> = match store.get("trained", model)? {
        Some(b) => Some(serde_json::from_slice(&b).context("the trained-model record is unreadable")?),
        None => None,
    };
    let per_row = plan.bytes_per_row();
    ensure!(
        per_row <= memory,
        "one row of {model:?} needs about {} MiB and this node's [limits] memory_mib is {}: raise it",
        per_row.div_ceil(1 << 20),
        memory >> 20
    );
    let standardize = match &trained {
        Some(TrainedRecord { mean: Some(mean), std: Some(std), .. }) if role == Role::Bob => {
            Some((ndarray::Array1::from(mean.clone()), ndarray::Array1::from(std.clone())))
        }
        _ => None,
    };
    let (input, output, rows) = match role {
        Role::Bob => {
            let path = Path::new(input.context("bob's prediction needs `input` (a .npy or .csv file)")?);
            let out = output.context("bob's prediction needs `output` (a .npy or .csv path)")?;
            let per_sample = &plan.input[1..];
            let range = plan.options.input_range_real(plan.fixed);
            let n = crate::rows::scan(path, per_sample, range, plan.fixed)?;
            if let Some(b) = rows {
                ensure!(b == n, "{b} rows given, but the input has {n}");
            }
            if let Some((mean, _)) = &standardize {
                ensure!(
                    per_sample == [mean.len()],
                    "input rows of {per_sample:?} values, the model takes {}",
                    mean.len()
                );
            }
            let out_shape = plan.output_shape()[1..].to_vec();
            let out_shape = if plan.output == OutputPolicy::Label { vec![] } else { out_shape };
            let writer = crate::rows::RowWriter::create(Path::new(out), n, &out_shape)?;
            (Some(crate::rows::RowReader::open(path, per_sample)?), Some(writer), n)
        }
        _ => {
            ensure!(input.is_none() && output.is_none(), "only bob gives `input` and `output`");
            let n = rows.context("give `batch`: the number of rows in bob's input")?;
            ensure!(n >= 1, "a prediction needs at least one row");
            (None, None, n)
        }
    };
    let mut prepared =
        Prepared { plan, rows, model: None, input, output, standardize, shared: None, memory, micro_batch_cap: None };
    if let Some(t) = &trained {
        prepared.shared = Some(load_shares(store, role, &t.job, &prepared.plan)?);
    } else if role == Role::Alice {
        let bytes =
            store.get("models", model)?.with_context(|| format!("model {model:?} has a plan but no ONNX file here"))?;
        let m = onnx::import(&bytes)?.model;
        let p = &prepared.plan;
        ensure!(
            m.plan_with(1, p.output, p.fixed, p.options)? == *p,
            "the stored model does not match its published plan"
        );
        prepared.model = Some(m);
    }
    Ok(prepared)
}

/// Reads Bob's input: `.npy` (one of [`crate::rows::NPY_DTYPES`], batch first) or `.csv`
/// (numbers only, an optional header row), reshaped to `[rows, per_sample…]` when the sizes
/// agree.
pub fn read_input(path: &Path, per_sample: &[usize]) -> anyhow::Result<ArrayD<f64>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let a = match ext {
        "npy" => crate::rows::read_npy(path)?,
        "csv" => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let mut rows: Vec<Vec<f64>> = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let cells: Result<Vec<f64>, _> = line.split(',').map(|c| c.trim().parse::<f64>()).collect();
                match cells {
                    Ok(r) => rows.push(r),
                    Err(_) if i == 0 => continue, // header
                    Err(_) => bail!("{}: row {} has a cell that is not a number", path.display(), i + 1),
                }
            }
            ensure!(!rows.is_empty(), "{}: no data rows", path.display());
            let w = rows[0].len();
            ensure!(rows.iter().all(|r| r.len() == w), "{}: rows have different lengths", path.display());
            ArrayD::from_shape_vec(IxDyn(&[rows.len(), w]), rows.concat())?
        }
        _ => bail!("{}: input must be a .npy or .csv file", path.display()),
    };
    ensure!(a.ndim() >= 1 && a.shape()[0] > 0, "{}: empty input", path.display());
    if let Some((i, v)) = a.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let per_row = a.len() / a.shape()[0];
        bail!(
            "{}: the value at row {}, column {} is {v}: NaN and infinite values are refused",
            path.display(),
            i / per_row,
            i % per_row
        );
    }
    let n = a.shape()[0];
    let per: usize = per_sample.iter().product();
    ensure!(
        a.len() == n * per,
        "{}: input of shape {:?}, the model expects [batch, {}]",
        path.display(),
        a.shape(),
        per_sample.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
    );
    let mut shape = vec![n];
    shape.extend_from_slice(per_sample);
    Ok(a.into_shape_with_order(IxDyn(&shape))?)
}

/// Writes Bob's output as `.npy` (float64, batch first) or `.csv`.
pub fn write_output(path: &Path, a: &ArrayD<f64>) -> anyhow::Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "npy" => npy::write(path, a).with_context(|| format!("writing {}", path.display())),
        "csv" => {
            let n = a.shape().first().copied().unwrap_or(1);
            let w = a.len() / n.max(1);
            let mut s = String::new();
            for row in a.as_standard_layout().as_slice().expect("standard layout").chunks(w.max(1)) {
                s.push_str(&row.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(","));
                s.push('\n');
            }
            std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
        }
        _ => bail!("{}: output must end in .npy or .csv", path.display()),
    }
}

/// Adds a micro-batch's per-stage profile to a job's (stages matched by position: every
/// micro-batch runs the same stages).
pub fn add_profile(total: &mut Vec<LayerRecord>, batch: &[mpc_ml::LayerProfile]) {
    for (i, l) in batch.iter().enumerate() {
        let r: LayerRecord = l.into();
        match total.get_mut(i + 1) {
            Some(t) if t.name == r.name => {
                t.seconds += r.seconds;
                t.rounds += r.rounds;
                t.online_sent += r.online_sent;
                t.offline_bytes += r.offline_bytes;
            }
            _ => total.push(r),
        }
    }
}

/// One stage of the per-layer profile, as stored on the job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct LayerRecord {
    /// Stage name.
    pub name: String,
    /// Seconds at this node.
    pub seconds: f64,
    /// Online rounds.
    pub rounds: u64,
    /// Online bytes sent by this node.
    pub online_sent: u64,
    /// Dealer-material bytes received (P0/P1) or sent (dealer).
    pub offline_bytes: u64,
}

impl From<&LayerProfile> for LayerRecord {
    fn from(p: &LayerProfile) -> Self {
        LayerRecord {
            name: p.name.clone(),
            seconds: p.seconds,
            rounds: p.stats.rounds,
            online_sent: p.stats.online_sent,
            offline_bytes: p.stats.offline_recv + p.stats.offline_sent,
        }
    }
}

/// Training parameters of a job request (all public; Bob's node also reads the data).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// `linreg`, `logreg` or `mlp:H1,H2,…`.
    pub arch: String,
    /// Epochs.
    pub epochs: usize,
    /// Minibatch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Seed of the initial weights, batch order and train/test split.
    #[serde(default)]
    pub seed: u64,
    /// Training samples (Alice and the dealer; Bob's node derives it from the file).
    #[serde(default)]
    pub samples: Option<usize>,
    /// Features (Alice and the dealer).
    #[serde(default)]
    pub features: Option<usize>,
    /// Classes for an MLP (Alice and the dealer).
    #[serde(default)]
    pub classes: Option<usize>,
    /// Bob: the CSV file.
    #[serde(default)]
    pub data: Option<String>,
    /// Bob: the label column.
    #[serde(default)]
    pub label: Option<String>,
    /// Bob: held-out fraction for the test metrics (default 0.2).
    #[serde(default)]
    pub test_split: Option<f64>,
    /// Reveal the trained model to Bob (default: it stays secret-shared, each node storing its
    /// share).
    #[serde(default)]
    pub reveal_to_bob: bool,
    /// Reveal a loss estimate to Bob at the end of each epoch (shown on his job's progress).
    #[serde(default)]
    pub report_loss: bool,
    /// Name under which the trained (secret-shared) model serves predictions; default
    /// `trained-<job id>`. The same on every node.
    #[serde(default)]
    pub name: Option<String>,
    /// Bob, with `reveal_to_bob`: write the revealed model here as ONNX (taking raw, not
    /// standardised, features).
    #[serde(default)]
    pub export: Option<String>,
}

/// What a node needs to run its part of a training job.
pub struct PreparedTrain {
    /// The public plan.
    pub plan: mpc_ml::train::TrainPlan,
    /// Bob: standardised training data.
    pub train: Option<(ndarray::Array2<f64>, ndarray::Array1<f64>)>,
    /// Bob: standardised test data.
    pub test: Option<(ndarray::Array2<f64>, ndarray::Array1<f64>)>,
    /// Whether Bob learns the model.
    pub reveal: bool,
    /// Bob: the standardisation of his features.
    pub standardizer: Option<mpc_ml::data::Standardizer>,
    /// The serving name, if given (else `trained-<job id>`).
    pub name: Option<String>,
    /// Bob: ONNX export path.
    pub export: Option<PathBuf>,
}

impl std::fmt::Debug for PreparedTrain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedTrain").field("samples", &self.plan.samples).finish_non_exhaustive()
    }
}

/// The public shape of Bob's training data: `(samples, features, classes)` after the split.
pub fn train_shape(
    path: &Path,
    label: &str,
    arch: &str,
    test_split: f64,
    seed: u64,
) -> anyhow::Result<(usize, usize, usize)> {
    let t = mpc_ml::data::load_csv(path, label)?;
    let (tr, _) = mpc_ml::data::split(&t, test_split, seed);
    let classes = if arch.starts_with("mlp") { t.y.iter().fold(0f64, |m, &v| m.max(v)) as usize + 1 } else { 1 };
    Ok((tr.x.nrows(), tr.x.ncols(), classes))
}

/// Validates a training request on this node and loads Bob's data.
pub fn prepare_train(role: Role, req: &TrainRequest) -> anyhow::Result<PreparedTrain> {
    use mpc_ml::train::{Arch, TrainConfig, TrainPlan};
    let mut arch: Arch = req.arch.parse().map_err(anyhow::Error::msg)?;
    ensure!((1..=1000).contains(&req.epochs), "epochs must be between 1 and 1000");
    ensure!((1..=MAX_BATCH).contains(&req.batch), "batch must be between 1 and {MAX_BATCH}");
    let split = req.test_split.unwrap_or(0.2);
    ensure!((0.0..0.9).contains(&split), "test_split must be in [0, 0.9)");
    let (train, test, samples, features, classes, standardizer) = if role == Role::Bob {
        let path = req.data.as_deref().context("bob's training job needs `data` (a CSV file)")?;
        let label = req.label.as_deref().context("bob's training job needs `label` (the label column)")?;
        let t = mpc_ml::data::load_csv(Path::new(path), label)?;
        let (tr, te) = mpc_ml::data::split(&t, split, req.seed);
        // Bob owns all the data, so he standardises locally (it is the same as doing it under
        // MPC and reveals nothing to anyone).
        let s = mpc_ml::data::Standardizer::fit(&tr.x);
        let classes =
            if matches!(arch, Arch::Mlp { .. }) { t.y.iter().fold(0f64, |m, &v| m.max(v)) as usize + 1 } else { 1 };
        let (n, d) = (tr.x.nrows(), tr.x.ncols());
        (Some((s.apply(&tr.x), tr.y)), Some((s.apply(&te.x), te.y)), n, d, classes, Some(s))
    } else {
        ensure!(req.data.is_none() && req.label.is_none(), "only bob gives `data` and `label`");
        let n = req.samples.context("give `samples` (bob's number of training rows)")?;
        let d = req.features.context("give `features` (bob's number of feature columns)")?;
        ensure!(req.export.is_none(), "only bob, who learns the model, exports it");
        (None, None, n, d, req.classes.unwrap_or(1), None)
    };
    if let Some(name) = &req.name {
        check_name(name)?;
    }
    ensure!(req.export.is_none() || req.reveal_to_bob, "exporting the model needs `reveal_to_bob`");
    if let Arch::Mlp { classes: c, .. } = &mut arch {
        ensure!(classes >= 2, "an MLP needs at least two classes");
        *c = classes;
    }
    let plan = TrainPlan {
        config: TrainConfig {
            arch,
            epochs: req.epochs,
            batch: req.batch,
            lr: req.lr,
            seed: req.seed,
            report_loss: req.report_loss,
        },
        samples,
        features,
    };
    if let Some((x, y)) = &train {
        mpc_ml::train::check_settings(&plan, x, y)?;
    }
    Ok(PreparedTrain {
        plan,
        train,
        test,
        reveal: req.reveal_to_bob,
        standardizer,
        name: req.name.clone(),
        export: req.export.as_ref().map(PathBuf::from),
    })
}

/// Analytics parameters of a job request. Bob's node builds the public plan from his CSV and
/// these fields; Alice and the dealer submit that plan (`plan`), which Bob's job record shows.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeRequest {
    /// Alice, dealer: the public plan from Bob's job record.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub plan: Option<mpc_ml::analytics::AnalyticsPlan>,
    /// Bob: statistics, comma-separated (`count,sum,mean,var,std,min,max,corr`).
    #[serde(default)]
    pub stats: Option<String>,
    /// Bob: histograms, each `COLUMN:EDGE,EDGE,…`.
    #[serde(default)]
    pub histograms: Vec<String>,
    /// Bob: rows Alice contributes (default 0: only Bob's rows).
    #[serde(default)]
    pub alice_rows: usize,
    /// Bob, and Alice if she contributes rows: the CSV file (header row, numeric columns).
    #[serde(default)]
    pub data: Option<String>,
    /// Bob: fixed-point fractional bits (default 16).
    #[serde(default)]
    pub frac_bits: Option<u32>,
}

/// What a node needs to run its part of an analytics job.
pub struct PreparedAnalyze {
    /// The public plan.
    pub plan: mpc_ml::analytics::AnalyticsPlan,
    /// This party's rows, if it contributes any.
    pub data: Option<ndarray::Array2<f64>>,
}

impl std::fmt::Debug for PreparedAnalyze {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedAnalyze").field("rows", &self.plan.rows).finish_non_exhaustive()
    }
}

/// Largest number of rows of an analytics job.
pub const MAX_ANALYZE_ROWS: usize = 10_000_000;

/// Validates an analytics request on this node and loads this party's rows (checked against
/// the plan's bounds before anything is sent).
pub fn prepare_analyze(role: Role, req: &AnalyzeRequest) -> anyhow::Result<PreparedAnalyze> {
    use mpc_ml::analytics::{AnalyticsPlan, Histogram, check_data, parse_stats};
    let load = |path: &str| mpc_ml::data::load_matrix(Path::new(path));
    let (plan, data) = match role {
        Role::Bob => {
            ensure!(req.plan.is_none(), "bob's node builds the plan: give `stats`/`histograms` and `data`, not `plan`");
            let path = req.data.as_deref().context("bob's analytics job needs `data` (a CSV file)")?;
            let (columns, x) = load(path)?;
            let stats = match req.stats.as_deref() {
                Some(s) => parse_stats(s).map_err(anyhow::Error::msg)?,
                None => vec![],
            };
            let histograms = req
                .histograms
                .iter()
                .map(|h| h.parse::<Histogram>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let fixed = mpc_proto::FixedPoint::new(req.frac_bits.unwrap_or(16), 31)?;
            let plan = AnalyticsPlan { rows: [req.alice_rows, x.nrows()], columns, stats, histograms, fixed };
            (plan, Some(x))
        }
        Role::Alice | Role::Dealer => {
            ensure!(
                req.stats.is_none() && req.histograms.is_empty() && req.alice_rows == 0 && req.frac_bits.is_none(),
                "{role} submits the plan from bob's job record (`plan`), not its parts"
            );
            let plan = req.plan.clone().context("give `plan`: the public plan from bob's job record")?;
            let data = match (role, plan.rows[0], req.data.as_deref()) {
                (Role::Dealer, _, Some(_)) => bail!("the dealer contributes no rows: omit `data`"),
                (Role::Alice, 0, Some(_)) => bail!("the plan has no rows from alice: omit `data`"),
                (Role::Alice, n, None) if n > 0 => bail!("the plan has {n} rows from alice: give `data`"),
                (_, _, Some(path)) => {
                    let (columns, x) = load(path)?;
                    ensure!(
                        columns == plan.columns,
                        "alice's columns ({}) differ from the plan's ({})",
                        columns.join(", "),
                        plan.columns.join(", ")
                    );
                    Some(x)
                }
                _ => None,
            };
            (plan, data)
        }
    };
    ensure!(plan.n() <= MAX_ANALYZE_ROWS, "{} rows in all; at most {MAX_ANALYZE_ROWS}", plan.n());
    plan.validate()?;
    if let Some(x) = &data {
        check_data(&plan, role.party(), x)?;
    }
    Ok(PreparedAnalyze { plan, data })
}
