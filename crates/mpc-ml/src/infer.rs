//! Private inference: the three parties run a [`Plan`] over secret shares.
//!
//! The model owner (P0) shares its weights with zero communication and pre-opens all linear and
//! convolution weights in one round; the data owner (P1) shares its input; every layer then runs
//! on shares, and only P1 learns the output, in the form the plan's [`OutputPolicy`] allows.

use std::time::Instant;

use crate::backend::Backend;
use mpc_proto::correlations::Bilinear;
use mpc_proto::{AShare, OpStats, PartyId, PreopenedWeights, RingTensor};
use ndarray::{ArrayD, IxDyn};

use crate::error::ModelError;
use crate::model::{Model, OutputPolicy, Plan};
use crate::op::{Op, Operator, PrivateCx, Runs};
use crate::ops;

/// Time and traffic of one stage of an inference, as seen by one party.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerProfile {
    /// Stage name: `weights` (sharing and pre-opening), a layer kind, or `output`.
    pub name: String,
    /// Wall time in seconds at this party.
    pub seconds: f64,
    /// Rounds and bytes.
    pub stats: OpStats,
}

/// What one party gets from [`infer`].
#[derive(Clone, Debug)]
pub struct Inference {
    /// The revealed output (P1 only): logits or probabilities `[batch, …]`, or class labels
    /// `[batch]` under [`OutputPolicy::Label`].
    pub output: Option<ArrayD<f64>>,
    /// Per-stage profile.
    pub profile: Vec<LayerProfile>,
}

/// A unit of the private evaluation's schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Batch {
    /// Linear/convolution steps of one depth: their inputs open in one message.
    Bilinear(Vec<usize>),
    /// ReLU steps of one depth with the same comparison settings: one comparison layer.
    Relu(Vec<usize>),
    /// One step on its own.
    One(usize),
}

/// Whether a step sends anything online (else it is local).
fn talks(kind: &Op) -> bool {
    kind.runs() != Runs::Local
}

/// The order the parties evaluate a plan in (a public function of the plan): by depth — a
/// step's depth is its inputs' deepest plus one if it talks — and within a depth, first the
/// steps that talk (linear and convolution steps together in one round, ReLUs with equal
/// settings together in one comparison layer, the rest one by one), then the local steps in
/// step order. For a chain this is the step order.
pub(crate) fn schedule(plan: &Plan) -> Vec<Batch> {
    let mut depth = vec![0usize; plan.steps.len() + 1];
    for (k, st) in plan.steps.iter().enumerate() {
        depth[k + 1] = st.inputs.iter().map(|&t| depth[t]).max().unwrap_or(0) + usize::from(talks(&st.kind));
    }
    let deepest = depth.iter().copied().max().unwrap_or(0);
    let mut at: Vec<Vec<usize>> = vec![vec![]; deepest + 1];
    for k in 0..plan.steps.len() {
        at[depth[k + 1]].push(k);
    }
    let mut out = Vec::with_capacity(plan.steps.len());
    for level in at {
        let talking: Vec<usize> = level.iter().copied().filter(|&k| talks(&plan.steps[k].kind)).collect();
        let bilinear: Vec<usize> =
            talking.iter().copied().filter(|&k| matches!(plan.steps[k].kind.runs(), Runs::Bilinear(_))).collect();
        if !bilinear.is_empty() {
            out.push(Batch::Bilinear(bilinear));
        }
        let mut relus: Vec<(Option<crate::bounds::CompareSpec>, Vec<usize>)> = vec![];
        for &k in talking.iter().filter(|&&k| plan.steps[k].kind.runs() == Runs::Relu) {
            let c = plan.steps[k].compare;
            match relus.iter_mut().find(|(s, _)| *s == c) {
                Some((_, v)) => v.push(k),
                None => relus.push((c, vec![k])),
            }
        }
        out.extend(relus.into_iter().map(|(_, v)| Batch::Relu(v)));
        for &k in &talking {
            if plan.steps[k].kind.runs() == Runs::Talks {
                out.push(Batch::One(k));
            }
        }
        out.extend(level.iter().copied().filter(|&k| !talks(&plan.steps[k].kind)).map(Batch::One));
    }
    out
}

/// Runs `plan` as party `party`.
///
/// * P0 passes its `model` (checked against the plan), P1 its `input` (shape `plan.input`),
///   the dealer neither.
/// * Rounds: 1 to pre-open the weights, then per layer: linear/conv 1, ReLU one comparison
///   layer (1, 2 or 3 rounds by the step's method), max pool ⌈log2 k²⌉ comparison layers,
///   softmax ⌈log2 L⌉ + 3 comparison layers and 3 products, sigmoid one comparison layer,
///   average pooling 0, plus 1 to reveal. Each comparison-based step runs with the method and
///   window its plan step records ([`crate::bounds`]).
///
/// The same as [`LoadedModel::load`] then one [`LoadedModel::run`].
pub async fn infer(
    party: &mut dyn Backend,
    plan: &Plan,
    model: Option<&Model>,
    input: Option<&ArrayD<f64>>,
) -> Result<Inference, ModelError> {
    let r = async {
        let loaded = LoadedModel::load(party, plan, model).await?;
        loaded.run_inner(party, plan, input).await
    }
    .await;
    abort_on_refusal(party, r).await
}

/// Runs `plan` on a model whose weights are already secret-shared between P0 and P1 — a model
/// trained privately ([`crate::train::SharedModel`]) that nobody has seen. `weights` holds this
/// party's shares in the plan's sharing order: per linear or convolution step its weight, then
/// its bias if any (the dealer passes placeholders, [`AShare::dealer`]). P1 passes its input.
/// Costs as [`infer`].
pub async fn infer_shared(
    party: &mut dyn Backend,
    plan: &Plan,
    weights: &[AShare],
    input: Option<&ArrayD<f64>>,
) -> Result<Inference, ModelError> {
    let r = async {
        let loaded = LoadedModel::load_shared(party, plan, weights).await?;
        loaded.run_inner(party, plan, input).await
    }
    .await;
    abort_on_refusal(party, r).await
}

/// A local refusal (bad model or input) tells the peers instead of leaving them waiting.
async fn abort_on_refusal<T>(party: &mut dyn Backend, r: Result<T, ModelError>) -> Result<T, ModelError> {
    if r.is_err() && !party.is_poisoned() {
        party.abort().await;
    }
    r
}

/// The public shapes of a plan's weight tensors, in the order [`infer_shared`] takes them.
pub fn shared_weight_shapes(plan: &Plan) -> Vec<Vec<usize>> {
    plan.steps.iter().flat_map(step_shapes).collect()
}

fn step_shapes(step: &crate::model::Step) -> Vec<Vec<usize>> {
    step.kind.weight_shapes(&step.input[1..])
}

/// Where the weights come from.
enum Weights<'a> {
    /// P0 holds them in the clear (`None` elsewhere) and shares them.
    Owner(Option<&'a Model>),
    /// As `Owner`, the model already matched to the plan by the caller.
    Checked(Option<&'a Model>),
    /// Already shared.
    Shared(&'a [AShare]),
}

/// A model loaded into a session: its weights secret-shared and its linear and convolution
/// weights pre-opened (one round), ready to run any number of batches of any size — the
/// micro-batches of a large prediction job share one load. Holds this party's shares (the
/// dealer, placeholders); `Debug` prints the layer count only.
pub struct LoadedModel {
    /// The plan it was loaded for; batches run with its rebatches.
    plan: Plan,
    shares: Vec<Vec<AShare>>,
    opened: Vec<PreopenedWeights>,
    /// Time, rounds and bytes of the load at this party.
    pub profile: LayerProfile,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedModel({} steps, ..)", self.plan.steps.len())
    }
}

impl LoadedModel {
    /// Loads `model` (P0; `None` elsewhere) for `plan`: shares its weights (no communication)
    /// and pre-opens the linear and convolution weights (one round, `8·|W|` bytes per party).
    pub async fn load(party: &mut dyn Backend, plan: &Plan, model: Option<&Model>) -> Result<Self, ModelError> {
        Self::load_from(party, plan, Weights::Owner(model)).await
    }

    /// [`LoadedModel::load`] for a model the caller has already matched to the plan
    /// (`model.plan_with(1, …) == plan.rebatch(1)`, as a node does once when a job is
    /// submitted): skips repeating that check, which re-runs the plan's bound analysis (about
    /// a millisecond for LeNet-5, on the critical path of a warm one-row prediction).
    pub async fn load_checked(party: &mut dyn Backend, plan: &Plan, model: Option<&Model>) -> Result<Self, ModelError> {
        Self::load_from(party, plan, Weights::Checked(model)).await
    }

    /// [`LoadedModel::load`] for weights already secret-shared (see [`infer_shared`]).
    pub async fn load_shared(party: &mut dyn Backend, plan: &Plan, weights: &[AShare]) -> Result<Self, ModelError> {
        Self::load_from(party, plan, Weights::Shared(weights)).await
    }

    /// Runs one batch: `plan` must be the loaded plan at some batch size
    /// ([`Plan::rebatch`]); P1 passes its input of shape `plan.input`. Costs as [`infer`]
    /// without the pre-opening round; the profile has no `weights` stage.
    pub async fn run(
        &self,
        party: &mut dyn Backend,
        plan: &Plan,
        input: Option<&ArrayD<f64>>,
    ) -> Result<Inference, ModelError> {
        let r = async {
            if plan.rebatch(self.plan.batch())? != self.plan {
                return Err(ModelError::Invalid("the batch's plan is not the loaded model's".into()));
            }
            let mut inf = self.run_inner(party, plan, input).await?;
            inf.profile.remove(0);
            Ok(inf)
        }
        .await;
        abort_on_refusal(party, r).await
    }

    async fn load_from(party: &mut dyn Backend, plan: &Plan, weights: Weights<'_>) -> Result<Self, ModelError> {
        let started = (Instant::now(), party.stats().total);
        let model = match weights {
            Weights::Owner(m) | Weights::Checked(m) => m,
            Weights::Shared(_) => None,
        };
        let fx = party.fixed();
        if fx != plan.fixed {
            return Err(ModelError::Invalid(format!(
                "session fixed point {fx:?} differs from the plan's {:?}",
                plan.fixed
            )));
        }
        let me = party.id();
        if let Weights::Shared(w) = weights {
            let want = shared_weight_shapes(plan);
            let got: Vec<Vec<usize>> = w.iter().map(|t| t.shape().to_vec()).collect();
            if got != want {
                return Err(ModelError::Invalid(format!("shared weights of shapes {got:?}, the plan needs {want:?}")));
            }
        } else if me == PartyId::P0 {
            let m = model.ok_or_else(|| ModelError::Invalid("the model owner must supply the model".into()))?;
            if matches!(weights, Weights::Owner(_))
                && &m.plan_with(plan.batch(), plan.output, plan.fixed, plan.options)? != plan
            {
                return Err(ModelError::Invalid("the model does not match the agreed plan".into()));
            }
        }
        // P0 shares every tensor (no communication); linear and conv weights are pre-opened
        // together in one round.
        let mut shares: Vec<Vec<AShare>> = Vec::with_capacity(plan.steps.len());
        let mut given = match weights {
            Weights::Shared(w) => Some(w.iter()),
            Weights::Owner(_) | Weights::Checked(_) => None,
        };
        for (i, step) in plan.steps.iter().enumerate() {
            if let Some(it) = given.as_mut() {
                shares.push(step_shapes(step).iter().map(|_| it.next().expect("shapes checked").clone()).collect());
                continue;
            }
            let values: Vec<Option<RingTensor>> = match model.map(|m| &m.layers[i]) {
                Some(layer) if me == PartyId::P0 => {
                    layer.weights.iter().map(|w| fx.encode_array(w).map(Some)).collect::<Result<_, _>>()?
                }
                _ => vec![None; step_shapes(step).len()],
            };
            let shapes = step_shapes(step);
            let mut layer_shares = Vec::with_capacity(shapes.len());
            for (shape, v) in shapes.iter().zip(values) {
                layer_shares.push(party.share_input(PartyId::P0, shape, v.as_ref())?);
            }
            shares.push(layer_shares);
        }
        let mut to_open: Vec<(Bilinear, &AShare)> = Vec::new();
        for (step, s) in plan.steps.iter().zip(&shares) {
            if let Runs::Bilinear(b) = step.kind.runs() {
                to_open.push((b, &s[0]));
            }
        }
        let opened = party.preopen_many(&to_open).await?;
        let now = (Instant::now(), party.stats().total);
        let profile = LayerProfile {
            name: "weights".into(),
            seconds: (now.0 - started.0).as_secs_f64(),
            stats: now.1.since(&started.1),
        };
        Ok(LoadedModel { plan: plan.clone(), shares, opened, profile })
    }

    /// One batch, with the load's profile as its first stage (`weights`).
    async fn run_inner(
        &self,
        party: &mut dyn Backend,
        plan: &Plan,
        input: Option<&ArrayD<f64>>,
    ) -> Result<Inference, ModelError> {
        let fx = party.fixed();
        let me = party.id();
        if me == PartyId::P1 {
            let x = input.ok_or_else(|| ModelError::Invalid("the data owner must supply the input".into()))?;
            if x.shape() != plan.input.as_slice() {
                return Err(ModelError::Invalid(format!(
                    "input of shape {:?}, the plan expects {:?}",
                    x.shape(),
                    plan.input
                )));
            }
        }
        let mut profile = vec![self.profile.clone()];
        let mut mark = (Instant::now(), party.stats().total);
        let mut record = |party: &dyn Backend, name: &str, profile: &mut Vec<LayerProfile>| {
            let now = (Instant::now(), party.stats().total);
            profile.push(LayerProfile {
                name: name.into(),
                seconds: (now.0 - mark.0).as_secs_f64(),
                stats: now.1.since(&mark.1),
            });
            mark = now;
        };

        let shares = &self.shares;
        let mut opened = self.opened.iter();
        let x_enc = match input {
            Some(x) if me == PartyId::P1 => Some(fx.encode_array(x)?),
            _ => None,
        };
        let x0 = party.share_input(PartyId::P1, &plan.input, x_enc.as_ref())?;
        // (Sharing the input costs nothing: it opens the first layer's stage.)
        let mut tensors: Vec<Option<AShare>> = Vec::with_capacity(plan.steps.len() + 1);
        tensors.push(Some(x0));

        let session_comparisons = party.comparisons();
        let session_truncation = party.truncation();
        party.set_truncation(plan.options.truncation);
        // Preopened weights by step, and how many readers each tensor has left (the schedule
        // is not step order, so a tensor is freed when its last reader has run).
        let mut opened_at = vec![None; plan.steps.len()];
        for (k, st) in plan.steps.iter().enumerate() {
            if matches!(st.kind.runs(), Runs::Bilinear(_)) {
                opened_at[k] = Some(opened.next().expect("one pre-opened tensor per linear or conv layer"));
            }
        }
        let mut readers = vec![0usize; plan.steps.len() + 1];
        for st in &plan.steps {
            for &t in &st.inputs {
                readers[t] += 1;
            }
        }
        tensors.resize(plan.steps.len() + 1, None);
        let release = |tensors: &mut Vec<Option<AShare>>, readers: &mut Vec<usize>, inputs: &[usize]| {
            for &t in inputs {
                readers[t] -= 1;
                if readers[t] == 0 {
                    tensors[t] = None;
                }
            }
        };
        fn take(tensors: &[Option<AShare>], t: usize) -> Result<&AShare, ModelError> {
            tensors[t].as_ref().ok_or_else(|| ModelError::Invalid(format!("tensor {t} is not computed")))
        }
        for batch in schedule(plan) {
            match batch {
                Batch::Bilinear(ks) => {
                    // Independent linear/conv steps of one depth: their inputs open together.
                    let xs: Vec<&AShare> =
                        ks.iter().map(|&k| take(&tensors, plan.steps[k].inputs[0])).collect::<Result<_, _>>()?;
                    let items: Vec<(&AShare, &PreopenedWeights)> =
                        ks.iter().zip(xs).map(|(&k, x)| (x, opened_at[k].expect("a weighted step"))).collect();
                    let ys = party.apply_preopened_many(&items, true).await?;
                    for (&k, y) in ks.iter().zip(ys) {
                        let st = &plan.steps[k];
                        let y = st.kind.finish_bilinear(y, &shares[k], &st.output)?;
                        tensors[k + 1] = Some(y);
                        release(&mut tensors, &mut readers, &st.inputs);
                        record(party, st.kind.name(), &mut profile);
                    }
                }
                Batch::Relu(ks) => {
                    // ReLUs of one depth with the same comparison settings: one comparison layer.
                    if let Some(c) = plan.steps[ks[0]].compare {
                        party.set_comparisons(c.comparisons(plan.options.link))?;
                    }
                    let xs: Vec<&AShare> =
                        ks.iter().map(|&k| take(&tensors, plan.steps[k].inputs[0])).collect::<Result<_, _>>()?;
                    let shapes: Vec<Vec<usize>> = xs.iter().map(|x| x.shape().to_vec()).collect();
                    let y = if xs.len() == 1 {
                        party.relu(xs[0]).await?
                    } else {
                        party.relu(&ops::concat_flat(&xs)?).await?
                    };
                    let lens: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
                    let parts = if ks.len() == 1 { vec![y] } else { ops::split_flat(&y, &lens)? };
                    for ((&k, part), shape) in ks.iter().zip(parts).zip(&shapes) {
                        let st = &plan.steps[k];
                        tensors[k + 1] = Some(part.reshape(shape)?);
                        release(&mut tensors, &mut readers, &st.inputs);
                        record(party, st.kind.name(), &mut profile);
                    }
                }
                Batch::One(i) => {
                    let (step, s) = (&plan.steps[i], &shares[i]);
                    if let Some(c) = step.compare {
                        party.set_comparisons(c.comparisons(plan.options.link))?;
                    }
                    let ins: Vec<&AShare> = step.inputs.iter().map(|&t| take(&tensors, t)).collect::<Result<_, _>>()?;
                    let mut cx = PrivateCx { party, step, opened: opened_at[i] };
                    let y = step.kind.eval_private(&mut cx, &ins, s).await?;
                    tensors[i + 1] = Some(y);
                    release(&mut tensors, &mut readers, &step.inputs);
                    record(party, step.kind.name(), &mut profile);
                }
            }
        }
        let x = tensors.pop().flatten().expect("the last step's output");

        // Output policy.
        if let Some(c) = plan.output_compare {
            party.set_comparisons(c.comparisons(plan.options.link))?;
        }
        let out_shape = plan.output_shape().to_vec();
        let classes = *out_shape.last().unwrap_or(&1);
        let ends_in_prob = matches!(plan.steps.last().map(|s| &s.kind), Some(Op::Softmax(_) | Op::Sigmoid(_)));
        let ends_in_log_softmax = matches!(plan.steps.last().map(|s| &s.kind), Some(Op::LogSoftmax(_)));
        let output = match plan.output {
            OutputPolicy::Logits if ends_in_log_softmax => party
                .reveal_to(PartyId::P1, &x)
                .await?
                .map(|t| fx.decode_tensor(&t))
                .map(|centred| crate::plain::softmax(&centred).mapv(f64::ln)),
            OutputPolicy::Logits => party.reveal_to(PartyId::P1, &x).await?.map(|t| fx.decode_tensor(&t)),
            OutputPolicy::Probabilities => {
                let p = if ends_in_prob {
                    x
                } else if classes == 1 {
                    party.sigmoid(&x).await?
                } else {
                    party.softmax(&x).await?
                };
                party.reveal_to(PartyId::P1, &p).await?.map(|t| fx.decode_tensor(&t))
            }
            OutputPolicy::Label => {
                let n = out_shape[0];
                let label = if classes == 1 {
                    // Binary: threshold the probability at 1/2 (or the logit at 0).
                    let t = if ends_in_prob { fx.encode(0.5)? } else { 0 };
                    let lt = party.lt_public(&x.reshape(&[n])?, &RingTensor::filled(&[n], t)).await?;
                    party.one_minus(&lt)?
                } else {
                    let flat = x.reshape(&[n, classes])?;
                    let hot = party.argmax(&flat).await?;
                    let idx = RingTensor::from_vec(&[classes, 1], (0..classes as u64).collect())?;
                    hot.matmul_public(&idx)?.reshape(&[n])?
                };
                party
                    .reveal_to(PartyId::P1, &label)
                    .await?
                    .map(|t| ArrayD::from_shape_vec(IxDyn(&[n]), t.as_slice().iter().map(|&v| v as f64).collect()))
                    .transpose()
                    .map_err(|e| ModelError::Invalid(e.to_string()))?
            }
        };
        record(party, "output", &mut profile);
        party.set_comparisons(session_comparisons)?;
        party.set_truncation(session_truncation);
        Ok(Inference { output, profile })
    }
}
