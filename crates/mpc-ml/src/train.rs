//! Private training by minibatch SGD on secret shares.
//!
//! The data owner (P1) secret-shares its features and labels once; every step then runs
//! forward, backward and the SGD update entirely on shares. What is public: the architecture,
//! the number of samples and features, epochs, batch size, learning rate, the seed (which fixes
//! the initial weights and the batch order). The trained model stays shared until someone is
//! explicitly given it ([`SharedModel::reveal_to`]).
//!
//! [`train_plain`] is the same algorithm in `f64` with the same initial weights and batches:
//! the reference the private training is compared with.
//!
//! Fixed-point care: features should be standardised (|x| of order 1); [`check_settings`]
//! refuses settings that would overflow the fixed-point range or make updates vanish.

use ndarray::{Array1, Array2, ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use mpc_proto::prg::Prg;
use mpc_proto::{AShare, PartyId, RingTensor};

use crate::error::ModelError;
use crate::model::{Layer, Model};
use crate::plain;

/// What to train.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arch {
    /// Linear regression (squared error); one output.
    LinReg,
    /// Logistic regression (cross-entropy); labels 0/1.
    LogReg,
    /// ReLU MLP with softmax cross-entropy; labels are class indices.
    Mlp {
        /// Hidden layer widths.
        hidden: Vec<usize>,
        /// Number of classes.
        classes: usize,
    },
}

impl std::str::FromStr for Arch {
    type Err = String;
    /// `linreg`, `logreg`, or `mlp:64,32` (hidden widths; classes come from the labels).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "linreg" => Ok(Arch::LinReg),
            "logreg" => Ok(Arch::LogReg),
            _ => {
                let rest = s
                    .strip_prefix("mlp:")
                    .ok_or_else(|| format!("unknown model {s:?}: linreg, logreg or mlp:H1,H2,…"))?;
                let hidden = rest
                    .split(',')
                    .map(|h| h.trim().parse::<usize>().map_err(|_| format!("bad hidden width {h:?} in {s:?}")))
                    .collect::<Result<Vec<_>, _>>()?;
                if hidden.contains(&0) {
                    return Err("hidden widths must be positive".into());
                }
                Ok(Arch::Mlp { hidden, classes: 0 })
            }
        }
    }
}

/// Public hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Architecture.
    pub arch: Arch,
    /// Passes over the data.
    pub epochs: usize,
    /// Minibatch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Seed of the initial weights and of the batch order.
    pub seed: u64,
    /// Reveal to the data owner (P1 only), at the end of each epoch, the mean squared error
    /// of the last minibatch's predictions — a loss estimate to watch training by. Costs one
    /// product and one reveal per epoch; nobody else learns it.
    #[serde(default)]
    pub report_loss: bool,
}

/// The public description of a training job (what the parties agree on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    /// Hyperparameters.
    pub config: TrainConfig,
    /// Number of training samples.
    pub samples: usize,
    /// Number of features.
    pub features: usize,
}

impl TrainPlan {
    /// The plan's hash ([`crate::plan_hash()`], domain `training`): the parties compare it when
    /// they connect.
    pub fn hash(&self) -> [u8; 32] {
        crate::plan_hash("training", self)
    }

    /// Layer widths `[features, h1, …, outputs]`.
    pub fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.features];
        match &self.config.arch {
            Arch::LinReg | Arch::LogReg => w.push(1),
            Arch::Mlp { hidden, classes } => {
                w.extend(hidden);
                w.push(*classes);
            }
        }
        w
    }

    /// The seeded initial weights (public: they depend only on the seed and the shapes).
    pub fn initial_weights(&self) -> Vec<(Array2<f64>, Array1<f64>)> {
        let mut g = Prg::from_u64(self.config.seed ^ 0x5eed_1417);
        let w = self.widths();
        w.windows(2)
            .map(|p| {
                let (i, o) = (p[0], p[1]);
                if matches!(self.config.arch, Arch::LinReg | Arch::LogReg) {
                    return (Array2::zeros((i, o)), Array1::zeros(o));
                }
                // He-uniform for ReLU layers.
                let r = (6.0 / i as f64).sqrt();
                let mut u = || ((g.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * r;
                (Array2::from_shape_simple_fn((i, o), &mut u), Array1::zeros(o))
            })
            .collect()
    }

    /// The batches of every epoch (seeded shuffles of the sample indices).
    pub fn batches(&self) -> Vec<Vec<usize>> {
        let mut g = Prg::from_u64(self.config.seed ^ 0x0ba7_c4e5);
        let mut out = Vec::new();
        let mut idx: Vec<usize> = (0..self.samples).collect();
        for _ in 0..self.config.epochs {
            for i in (1..idx.len()).rev() {
                let j = (g.next_u64() % (i as u64 + 1)) as usize;
                idx.swap(i, j);
            }
            out.extend(idx.chunks(self.config.batch.max(1)).map(<[usize]>::to_vec));
        }
        out
    }

    /// The model that a set of weights forms (for revealing and exporting).
    pub fn model(&self, weights: Vec<(Array2<f64>, Array1<f64>)>) -> Model {
        let n = weights.len();
        let mut layers = Vec::new();
        for (i, (w, b)) in weights.into_iter().enumerate() {
            layers.push(Layer::linear(w.into_dyn(), Some(b.into_dyn())));
            if i + 1 < n {
                layers.push(Layer::of(crate::op::Relu));
            }
        }
        if self.config.arch == Arch::LogReg {
            layers.push(Layer::of(crate::op::Sigmoid));
        }
        Model::chain(vec![self.features], layers)
    }
}

impl TrainPlan {
    /// The public inference plan of the trained model for `batch` rows: what a prediction job
    /// on the secret-shared model runs ([`crate::infer_shared`]). Linear and logistic
    /// regression output the prediction and the probability; an MLP outputs what `policy` says.
    pub fn inference_plan(
        &self,
        batch: usize,
        policy: crate::OutputPolicy,
        fixed: mpc_proto::FixedPoint,
    ) -> Result<crate::Plan, ModelError> {
        let zeros = self.initial_weights().into_iter().map(|(w, b)| (w * 0.0, b * 0.0)).collect();
        self.model(zeros).plan(batch, policy, fixed)
    }
}

/// Refuses settings that fixed point cannot train well, before anything runs.
///
/// * features must be of moderate size (|x| ≤ 64: standardise them), labels of a regression
///   within ±10^4;
/// * the learning rate must be positive and `lr / batch ≥ 2^-12` (smaller updates drown in the
///   2^-16 resolution) and `lr ≤ 10`.
pub fn check_settings(plan: &TrainPlan, x: &Array2<f64>, y: &Array1<f64>) -> Result<(), ModelError> {
    let c = &plan.config;
    if plan.samples == 0 || c.batch == 0 || c.epochs == 0 {
        return Err(ModelError::Invalid("samples, batch size and epochs must be positive".into()));
    }
    if !(c.lr > 0.0 && c.lr <= 10.0) {
        return Err(ModelError::Invalid(format!("learning rate {} outside (0, 10]", c.lr)));
    }
    if c.lr / (c.batch as f64) < 1.0 / 4096.0 {
        return Err(ModelError::Invalid(format!(
            "lr / batch = {:.2e} is below 2^-12: updates would vanish in 16-bit fixed point; raise lr or lower the batch",
            c.lr / c.batch as f64
        )));
    }
    let xmax = x.iter().fold(0f64, |m, v| m.max(v.abs()));
    if xmax > 64.0 || !xmax.is_finite() {
        return Err(ModelError::Invalid(format!(
            "features up to {xmax:.3e} in magnitude: standardise them (|x| ≤ 64) to stay inside fixed point"
        )));
    }
    match &c.arch {
        Arch::LogReg if y.iter().any(|&v| v != 0.0 && v != 1.0) => {
            Err(ModelError::Invalid("logistic regression needs labels 0 or 1".into()))
        }
        Arch::Mlp { classes, .. } if y.iter().any(|&v| v < 0.0 || v >= *classes as f64 || v.fract() != 0.0) => {
            Err(ModelError::Invalid(format!("MLP labels must be class indices in 0..{classes}")))
        }
        Arch::LinReg if y.iter().any(|v| v.abs() > 1e4) => {
            Err(ModelError::Invalid("regression targets beyond ±10^4: scale them".into()))
        }
        _ => Ok(()),
    }
}

fn targets(plan: &TrainPlan, y: &Array1<f64>) -> Array2<f64> {
    match &plan.config.arch {
        Arch::Mlp { classes, .. } => {
            Array2::from_shape_fn((y.len(), *classes), |(i, c)| if y[i] as usize == c { 1.0 } else { 0.0 })
        }
        _ => y.clone().insert_axis(Axis(1)),
    }
}

/// The same SGD in plain `f64`: same initial weights, batches and formulas.
pub fn train_plain(plan: &TrainPlan, x: &Array2<f64>, y: &Array1<f64>) -> Model {
    let t = targets(plan, y);
    let mut ws = plan.initial_weights();
    let last = ws.len() - 1;
    for batch in plan.batches() {
        let xb = x.select(Axis(0), &batch);
        let yb = t.select(Axis(0), &batch);
        // Forward, remembering each layer's input and pre-activation.
        let mut acts = vec![xb];
        let mut pre = vec![];
        for (i, (w, b)) in ws.iter().enumerate() {
            let z = acts[i].dot(w) + b;
            pre.push(z.clone());
            if i < last {
                acts.push(z.mapv(|v| v.max(0.0)));
            }
        }
        let z = pre[last].clone().into_dyn();
        let p = match plan.config.arch {
            Arch::LinReg => z,
            Arch::LogReg => plain::sigmoid(&z),
            Arch::Mlp { .. } => plain::softmax(&z),
        };
        let mut dz = p.into_dimensionality::<ndarray::Ix2>().expect("2-D") - &yb;
        let step = plan.config.lr / batch.len() as f64;
        for i in (0..=last).rev() {
            let dw = acts[i].t().dot(&dz);
            let db = dz.sum_axis(Axis(0));
            let da = dz.dot(&ws[i].0.t());
            ws[i].0 = &ws[i].0 - &(dw * step);
            ws[i].1 = &ws[i].1 - &(db * step);
            if i > 0 {
                dz = da * pre[i - 1].mapv(|v| if v >= 0.0 { 1.0 } else { 0.0 });
            }
        }
    }
    plan.model(ws)
}

/// A model whose weights are secret-shared between P0 and P1 (placeholders on the dealer).
#[derive(Debug)]
pub struct SharedModel {
    plan: TrainPlan,
    layers: Vec<(AShare, AShare)>,
}

fn rows(x: &AShare, idx: &[usize]) -> Result<AShare, ModelError> {
    let cols = x.shape()[1];
    Ok(x.map_linear(
        |_| Ok(vec![idx.len(), cols]),
        |t| {
            RingTensor::from_vec(
                &[idx.len(), cols],
                idx.iter().flat_map(|&r| t.as_slice()[r * cols..(r + 1) * cols].to_vec()).collect(),
            )
        },
    )?)
}

fn transpose(x: &AShare) -> Result<AShare, ModelError> {
    let s = x.shape();
    let (r, c) = (s[0], s[1]);
    Ok(x.map_linear(|_| Ok(vec![c, r]), RingTensor::transpose)?)
}

fn add_row(x: &AShare, b: &AShare) -> Result<AShare, ModelError> {
    Ok(match (x.expose_share(), b.expose_share()) {
        (Ok(xv), Ok(bv)) => AShare::from_share(xv.add_row_broadcast(bv)?),
        _ => AShare::dealer(x.shape()),
    })
}

/// Progress of a training job, reported after every step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainProgress {
    /// Steps done.
    pub step: usize,
    /// Steps in all.
    pub steps: usize,
    /// Current epoch (from 1).
    pub epoch: usize,
    /// P1, with [`TrainConfig::report_loss`], at the end of an epoch: the mean squared error of
    /// the epoch's last minibatch (`‖p − y‖² / rows`).
    pub loss: Option<f64>,
}

/// Trains privately. P1 passes its data (`x` `[samples, features]`, `y` `[samples]`), the
/// others `None`. Rounds per step: forward 2 per layer (matmul, activation; the output
/// activation costs 1 for sigmoid and ⌈log2 C⌉ + 6 for softmax), backward 2 per layer (two
/// matmuls) plus 1 per hidden layer (ReLU derivative).
pub async fn train(
    party: &mut dyn Backend,
    plan: &TrainPlan,
    data: Option<(&Array2<f64>, &Array1<f64>)>,
    mut progress: impl FnMut(TrainProgress),
) -> Result<SharedModel, ModelError> {
    let fx = party.fixed();
    let me = party.id();
    let ycols = match &plan.config.arch {
        Arch::Mlp { classes, .. } => *classes,
        _ => 1,
    };
    let (xv, yv) = match data {
        Some((x, y)) if me == PartyId::P1 => {
            if x.shape() != [plan.samples, plan.features] || y.len() != plan.samples {
                return Err(ModelError::Invalid(format!(
                    "data of shape {:?} and {} labels, the plan says {} × {}",
                    x.shape(),
                    y.len(),
                    plan.samples,
                    plan.features
                )));
            }
            check_settings(plan, x, y)?;
            (Some(fx.encode_array(&x.clone().into_dyn())?), Some(fx.encode_array(&targets(plan, y).into_dyn())?))
        }
        _ => (None, None),
    };
    let x = party.share_input(PartyId::P1, &[plan.samples, plan.features], xv.as_ref())?;
    let y = party.share_input(PartyId::P1, &[plan.samples, ycols], yv.as_ref())?;
    // Public initial weights: P0 holds them, P1 holds zeros.
    let mut ws: Vec<(AShare, AShare)> = Vec::new();
    for (w, b) in plan.initial_weights() {
        let zero_w = AShare::from_share(RingTensor::zeros(&[w.nrows(), w.ncols()]));
        let zero_b = AShare::from_share(RingTensor::zeros(&[b.len()]));
        if party.placeholder() {
            ws.push((AShare::dealer(&[w.nrows(), w.ncols()]), AShare::dealer(&[b.len()])));
        } else {
            let wp = party.add_public(&zero_w, &fx.encode_array(&w.into_dyn())?)?;
            let bp = party.add_public(&zero_b, &fx.encode_array(&b.into_dyn())?)?;
            ws.push((wp, bp));
        }
    }
    let last = ws.len() - 1;
    let batches = plan.batches();
    let per_epoch = batches.len() / plan.config.epochs.max(1);
    for (s, batch) in batches.iter().enumerate() {
        let xb = rows(&x, batch)?;
        let yb = rows(&y, batch)?;
        let mut acts = vec![xb];
        let mut bits = vec![];
        let mut z_last = None;
        for (i, (w, b)) in ws.iter().enumerate() {
            let z = add_row(&party.matmul_fixed(&acts[i], w).await?, b)?;
            if i < last {
                let (a, bit) = party.relu_with_bit(&z).await?;
                acts.push(a);
                bits.push(bit);
            } else {
                z_last = Some(z);
            }
        }
        let z = z_last.expect("at least one layer");
        let p = match plan.config.arch {
            Arch::LinReg => z,
            Arch::LogReg => party.sigmoid(&z).await?,
            Arch::Mlp { .. } => party.softmax(&z).await?,
        };
        let mut dz = p.sub(&yb)?;
        let epoch_end = (s + 1) % per_epoch.max(1) == 0 || s + 1 == batches.len();
        let mut loss = None;
        if plan.config.report_loss && epoch_end {
            let sq = party.mul_fixed(&dz, &dz).await?;
            let total = sq.reshape(&[sq.len()])?.sum_axis(0)?;
            if let Some(v) = party.reveal_to(PartyId::P1, &total).await? {
                loss = Some(fx.decode_tensor(&v).iter().sum::<f64>() / batch.len() as f64);
            }
        }
        let step = plan.config.lr / batch.len() as f64;
        for i in (0..=last).rev() {
            let dw = party.matmul_fixed(&transpose(&acts[i])?, &dz).await?;
            let db = dz.sum_axis(0)?;
            let da = if i > 0 { Some(party.matmul_fixed(&dz, &transpose(&ws[i].0)?).await?) } else { None };
            let (w, b) = &ws[i];
            let nw = w.sub(&party.mul_const(&dw, step)?)?;
            let nb = b.sub(&party.mul_const(&db, step)?)?;
            ws[i] = (nw, nb);
            if let Some(da) = da {
                dz = party.mul(&da, &bits[i - 1]).await?;
            }
        }
        progress(TrainProgress { step: s + 1, steps: batches.len(), epoch: s / per_epoch.max(1) + 1, loss });
    }
    Ok(SharedModel { plan: plan.clone(), layers: ws })
}

impl SharedModel {
    /// Reveals the trained weights to `to` only (an explicit decision of the job); returns the
    /// model there and `None` elsewhere. One round.
    pub async fn reveal_to(&self, party: &mut dyn Backend, to: PartyId) -> Result<Option<Model>, ModelError> {
        let fx = party.fixed();
        let mut out = Vec::new();
        for (w, b) in &self.layers {
            let wv = party.reveal_to(to, w).await?;
            let bv = party.reveal_to(to, b).await?;
            if let (Some(wv), Some(bv)) = (wv, bv) {
                let w2 = fx.decode_tensor(&wv).into_dimensionality().map_err(|e| ModelError::Invalid(e.to_string()))?;
                let b1 = fx.decode_tensor(&bv).into_dimensionality().map_err(|e| ModelError::Invalid(e.to_string()))?;
                out.push((w2, b1));
            }
        }
        Ok((party.id() == to && !party.placeholder()).then(|| self.plan.model(out)))
    }

    /// The shares as a [`Model`]-shaped list for private inference: this party's weight shares.
    pub fn layers(&self) -> &[(AShare, AShare)] {
        &self.layers
    }

    /// This party's shares in the order [`crate::infer_shared`] takes them (weight, bias per
    /// layer).
    pub fn weight_shares(&self) -> Vec<AShare> {
        self.layers.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect()
    }

    /// The training plan.
    pub fn plan(&self) -> &TrainPlan {
        &self.plan
    }
}

/// Fraction of rows where the predicted class equals the label (binary models threshold at 0.5).
pub fn accuracy(model: &Model, x: &Array2<f64>, y: &Array1<f64>) -> f64 {
    let out = model.eval_plain(&x.clone().into_dyn());
    let preds = predictions(&out);
    preds.iter().zip(y).filter(|(p, y)| (**p - **y).abs() < 0.5).count() as f64 / y.len().max(1) as f64
}

/// Class predictions from outputs `[n, c]` (argmax) or `[n, 1]` (probability ≥ 0.5).
pub fn predictions(out: &ArrayD<f64>) -> Vec<f64> {
    let c = out.shape()[1];
    let out = out.view().into_shape_with_order(IxDyn(&[out.shape()[0], c])).expect("2-D");
    out.outer_iter()
        .map(|r| {
            if c == 1 {
                f64::from(r[0] >= 0.5)
            } else {
                r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as f64).unwrap_or(0.0)
            }
        })
        .collect()
}

/// Coefficient of determination of a regression model.
pub fn r2(model: &Model, x: &Array2<f64>, y: &Array1<f64>) -> f64 {
    let out = model.eval_plain(&x.clone().into_dyn());
    let mean = y.mean().unwrap_or(0.0);
    let ss_res: f64 = out.iter().zip(y).map(|(p, t)| (p - t).powi(2)).sum();
    let ss_tot: f64 = y.iter().map(|t| (t - mean).powi(2)).sum();
    1.0 - ss_res / ss_tot
}
