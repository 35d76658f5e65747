//! Private inference of whole networks against the plaintext f64 evaluation of the same model.

mod common;

use mpc_ml::{Backend, Inference, Layer, LoadedModel, Model, OutputPolicy, PlanOptions, infer, op};
use mpc_proto::approx::Spline;
use mpc_proto::compare::{Comparisons, Method, Policy};
use mpc_proto::correlations::Bilinear;
use mpc_proto::prg::Prg;
use mpc_proto::transport::BoxFuture;
use mpc_proto::{AShare, FixedPoint, Party, PartyId, PreopenedWeights, RingTensor, run_parties};
use ndarray::{ArrayD, IxDyn};

/// PyTorch-style uniform init in ±1/sqrt(fan_in), seeded.
fn init(shape: &[usize], fan_in: usize, g: &mut Prg) -> ArrayD<f64> {
    let r = 1.0 / (fan_in as f64).sqrt();
    ArrayD::from_shape_simple_fn(IxDyn(shape), || ((g.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * r)
}

fn linear(i: usize, o: usize, g: &mut Prg) -> Layer {
    Layer::linear(init(&[i, o], i, g), Some(init(&[o], i, g)))
}

fn conv(c: usize, o: usize, k: usize, pad: usize, g: &mut Prg) -> Layer {
    let fan = c * k * k;
    Layer::conv2d(init(&[o, c, k, k], fan, g), Some(init(&[o], fan, g)), (1, 1), (pad, pad), (1, 1), 1)
}

/// "Network A" (SecureML): FC 784-128-128-10 with ReLU.
fn network_a(seed: u64) -> Model {
    let g = &mut Prg::from_u64(seed);
    Model::chain(
        vec![784],
        vec![linear(784, 128, g), Layer::of(op::Relu), linear(128, 128, g), Layer::of(op::Relu), linear(128, 10, g)],
    )
}

/// LeNet-5 as in the benchmark workloads.
fn lenet5(seed: u64) -> Model {
    let g = &mut Prg::from_u64(seed);
    let pool = Layer::of(op::MaxPool { kernel: (2, 2), stride: (2, 2), padding: (0, 0), ceil_mode: false });
    Model::chain(
        vec![1, 28, 28],
        vec![
            conv(1, 6, 5, 0, g),
            Layer::of(op::Relu),
            pool.clone(),
            conv(6, 16, 5, 0, g),
            Layer::of(op::Relu),
            pool,
            Layer::of(op::Flatten),
            linear(256, 120, g),
            Layer::of(op::Relu),
            linear(120, 84, g),
            Layer::of(op::Relu),
            linear(84, 10, g),
        ],
    )
}

/// Every layer kind at least once.
fn kitchen_sink(seed: u64) -> Model {
    let g = &mut Prg::from_u64(seed);
    let scale = init(&[4, 12, 12], 1, g).mapv(|v| 1.0 + 0.5 * v);
    let shift = init(&[4, 12, 12], 1, g).mapv(|v| 0.1 * v);
    Model::chain(
        vec![2, 12, 12],
        vec![
            conv(2, 4, 3, 1, g),
            Layer::affine(scale, shift),
            Layer::of(op::Relu),
            Layer::of(op::MaxPool { kernel: (3, 3), stride: (2, 2), padding: (1, 1), ceil_mode: false }),
            Layer::of(op::AvgPool {
                kernel: (3, 3),
                stride: (1, 1),
                padding: (1, 1),
                count_include_pad: false,
                ceil_mode: false,
            }),
            Layer::of(op::AvgPool {
                kernel: (2, 2),
                stride: (1, 1),
                padding: (0, 0),
                count_include_pad: true,
                ceil_mode: false,
            }),
            Layer::of(op::Reshape { shape: vec![4, 5, 5] }),
            Layer::of(op::GlobalAvgPool),
            Layer::of(op::Flatten),
            linear(4, 3, g),
            Layer::of(op::Sigmoid),
            linear(3, 5, g),
            Layer::of(op::Softmax),
        ],
    )
}

fn inputs(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut g = Prg::from_u64(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || (g.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
}

/// Runs the private inference of `model` on `x` and returns P1's result.
fn run(model: &Model, x: &ArrayD<f64>, policy: OutputPolicy) -> Inference {
    common::run_plan(model, x, &model.plan(x.shape()[0], policy, FixedPoint::default()).unwrap())
}

fn rounds_of(m: mpc_proto::compare::Method) -> u64 {
    mpc_proto::compare::cost::rounds(m) as u64
}

fn max_err(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn argmax_rows(a: &ArrayD<f64>) -> Vec<usize> {
    let c = *a.shape().last().unwrap();
    a.as_slice().unwrap().chunks(c).map(|r| r.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0).collect()
}

#[test]
fn network_a_logits_match_plaintext() {
    let m = network_a(1);
    let x = inputs(&[8, 784], 2);
    let r = run(&m, &x, OutputPolicy::Logits);
    let want = m.eval_plain(&x);
    let err = max_err(r.output.as_ref().unwrap(), &want);
    assert!(err <= 1e-3, "max logit error {err}");
    // Rounds: pre-open 1, three linear layers 2 each (the product, then its exact truncation),
    // two ReLU layers by their methods, reveal 1 (+ setup 1 is not in the profile).
    let plan = m.plan(8, OutputPolicy::Logits, FixedPoint::default()).unwrap();
    let relu: u64 = plan.steps.iter().filter_map(|s| s.compare).map(|c| rounds_of(c.method)).sum();
    let rounds: u64 = r.profile.iter().map(|p| p.stats.rounds).sum();
    assert_eq!(rounds, 1 + 3 * 2 + relu + 1);
    assert_eq!(rounds, plan.online_rounds());
    let names: Vec<&str> = r.profile.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["weights", "linear", "relu", "linear", "relu", "linear", "output"]);
}

#[test]
fn lenet5_labels_and_probabilities_match_plaintext() {
    let m = lenet5(3);
    let x = inputs(&[4, 1, 28, 28], 4);
    let want = m.eval_plain(&x);
    let logits = run(&m, &x, OutputPolicy::Logits);
    let err = max_err(logits.output.as_ref().unwrap(), &want);
    assert!(err <= 1e-3, "max logit error {err}");
    let labels = run(&m, &x, OutputPolicy::Label).output.unwrap();
    let want_labels: Vec<f64> = argmax_rows(&want).into_iter().map(|i| i as f64).collect();
    assert_eq!(labels.as_slice().unwrap(), want_labels.as_slice());
    let probs = run(&m, &x, OutputPolicy::Probabilities).output.unwrap();
    let err = max_err(&probs, &mpc_ml::plain::softmax(&want));
    assert!(err <= 1e-3, "max probability error {err}");
}

#[test]
fn every_comparison_method_and_narrowed_windows_give_plaintext_labels() {
    // LeNet-5 with inputs declared in [0, 1]: every comparison step gets a window from the
    // weights' bounds, far narrower than the widest (49 bits), and each method (and the cost
    // model's mix) gives the plaintext labels and logits within 10^-3.
    let fx = FixedPoint::default();
    let m = lenet5(3);
    let x = inputs(&[6, 1, 28, 28], 4);
    let want = m.eval_plain(&x);
    let want_labels: Vec<f64> = argmax_rows(&want).into_iter().map(|i| i as f64).collect();
    for policy in [Policy::Fixed(Method::Helper), Policy::Fixed(Method::Fss), Policy::Fixed(Method::Fss1), Policy::Auto]
    {
        let options = PlanOptions { comparisons: policy, ..PlanOptions::default() }.with_input_range(0.0, 1.0, fx);
        for output in [OutputPolicy::Logits, OutputPolicy::Label] {
            let plan = m.plan_with(6, output, fx, options).unwrap();
            plan.validate().unwrap();
            let windows: Vec<u8> = plan.steps.iter().filter_map(|s| s.compare.map(|c| c.bits)).collect();
            assert!(windows.iter().all(|&k| k < Comparisons::default_bits(fx)), "{policy}: windows {windows:?}");
            if let Policy::Fixed(method) = policy {
                assert!(plan.steps.iter().filter_map(|s| s.compare).all(|c| c.method == method));
            }
            let r = common::run_plan(&m, &x, &plan);
            let rounds: u64 = r.profile.iter().map(|p| p.stats.rounds).sum();
            assert_eq!(rounds, plan.online_rounds(), "{policy} {output:?}: rounds counted vs the plan's");
            match output {
                OutputPolicy::Label => assert_eq!(r.output.unwrap().as_slice().unwrap(), want_labels.as_slice()),
                _ => {
                    let err = max_err(r.output.as_ref().unwrap(), &want);
                    assert!(err <= 1e-3, "{policy}: max logit error {err}");
                }
            }
        }
    }
}

#[test]
fn one_load_serves_micro_batches_of_any_size() {
    // The weights are shared and pre-opened once; batches of 5, 5 and 2 rows then run against
    // them, each equal to the plaintext rows it covers; a plan of another model is refused.
    let m = lenet5(7);
    let fx = FixedPoint::default();
    let x = inputs(&[12, 1, 28, 28], 8);
    let want = m.eval_plain(&x);
    let options = PlanOptions::default().with_input_range(0.0, 1.0, fx);
    let plan = m.plan_with(5, OutputPolicy::Logits, fx, options).unwrap();
    let other = lenet5(8).plan_with(5, OutputPolicy::Label, fx, options).unwrap();
    let out = run_parties(6, |mut p| {
        let (plan, other, m, x) = (plan.clone(), other.clone(), m.clone(), x.clone());
        async move {
            let me = p.id();
            let loaded = LoadedModel::load(&mut p, &plan, (me == PartyId::P0).then_some(&m)).await?;
            let load_rounds = p.stats().total.rounds;
            let mut rows = vec![];
            for (start, n) in [(0, 5), (5, 5), (10, 2)] {
                let batch = plan.rebatch(n)?;
                let xb = x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(start..start + n)).to_owned();
                let r = loaded.run(&mut p, &batch, (me == PartyId::P1).then_some(&xb)).await?;
                assert_eq!(r.profile.first().map(|l| l.name.as_str()), Some("conv2d"), "no weights stage per batch");
                rows.push(r.output);
            }
            assert_eq!(p.stats().op("preopen").calls, 1, "the weights are pre-opened once");
            let refused = loaded.run(&mut p, &other, None).await;
            Ok((rows, load_rounds, refused.is_err()))
        }
    })
    .unwrap();
    let (rows, load_rounds, refused) = &out[1];
    assert!(*refused, "another model's plan is refused");
    assert_eq!(*load_rounds, 2, "session setup and the pre-opening");
    let got: Vec<f64> = rows.iter().flat_map(|r| r.as_ref().unwrap().iter().copied()).collect();
    let err = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert_eq!(got.len(), want.len());
    assert!(err <= 1e-3, "max logit error {err}");
}

#[test]
fn every_layer_kind_matches_plaintext() {
    let m = kitchen_sink(5);
    let x = inputs(&[3, 2, 12, 12], 6);
    let r = run(&m, &x, OutputPolicy::Probabilities);
    let err = max_err(r.output.as_ref().unwrap(), &m.eval_plain(&x));
    assert!(err <= 1e-3, "max probability error {err}");
}

#[test]
fn binary_labels_threshold_the_sigmoid() {
    let g = &mut Prg::from_u64(8);
    let m = Model::chain(vec![30], vec![linear(30, 1, g), Layer::of(op::Sigmoid)]);
    let x = inputs(&[40, 30], 9).mapv(|v| 6.0 * v - 3.0);
    let want = m.eval_plain(&x);
    let got = run(&m, &x, OutputPolicy::Label).output.unwrap();
    for (p, l) in want.iter().zip(got.iter()) {
        if (p - 0.5).abs() > 1e-3 {
            assert_eq!(*l, if *p >= 0.5 { 1.0 } else { 0.0 }, "p = {p}");
        }
    }
}

#[test]
fn mismatched_model_or_input_is_refused() {
    let m = network_a(1);
    let plan = m.plan(2, OutputPolicy::Logits, FixedPoint::default()).unwrap();
    let other = network_a(2).plan(3, OutputPolicy::Logits, FixedPoint::default()).unwrap();
    assert_ne!(plan.hash(), other.hash());
    assert_eq!(plan.hash(), m.plan(2, OutputPolicy::Logits, FixedPoint::default()).unwrap().hash());
    // The data owner and the dealer re-derive any batch from the published batch-1 plan.
    let published = m.plan(1, OutputPolicy::Logits, FixedPoint::default()).unwrap();
    assert_eq!(published.rebatch(2).unwrap(), plan);
    plan.validate().unwrap();
    let mut broken = plan.clone();
    broken.steps[1].input = vec![2, 7];
    assert!(broken.validate().is_err());
    // Comparison settings are checked too: a method other than the options give, a bad window.
    let mut other_method = plan.clone();
    let c = other_method.steps[1].compare.as_mut().unwrap();
    c.method = if c.method == Method::Helper { Method::Fss } else { Method::Helper };
    assert!(other_method.validate().unwrap_err().to_string().contains("methods differ"));
    let mut bad_window = plan.clone();
    bad_window.steps[1].compare.as_mut().unwrap().bits = 1;
    assert!(bad_window.validate().is_err());
    // Bob's input of the wrong shape: a clean error, no hang.
    let r = run_parties(2, |mut p| {
        let (plan, m) = (plan.clone(), m.clone());
        async move {
            let bad = ArrayD::zeros(IxDyn(&[2, 783]));
            let mm = (p.id() == PartyId::P0).then_some(&m);
            let i = (p.id() == PartyId::P1).then_some(&bad);
            Ok(infer(&mut p, &plan, mm, i).await?)
        }
    });
    let e = r.unwrap_err().to_string();
    assert!(e.contains("input of shape [2, 783]"), "{e}");
}

/// Large products at 20 fractional bits (|x·W| ≈ 2^10, so ≈ 2^50 before truncation): local
/// truncation's wrap (probability ≈ |z|·2^-63 per value) corrupts some of 131,072 outputs by
/// about 2^44 ulps; exact truncation (the default) keeps every one within 1 ulp plus the
/// inputs' rounding, in both modes.
#[test]
fn exact_truncation_never_corrupts_an_output() {
    let fx = FixedPoint::new(20, 27).unwrap();
    let mut g = Prg::from_u64(21);
    let mut uniform = |shape: &[usize], a: f64| {
        ArrayD::from_shape_simple_fn(IxDyn(shape), || {
            ((g.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * a
        })
    };
    let m = Model::chain(vec![64], vec![Layer::linear(uniform(&[64, 2048], 200.0), None)]);
    let x = uniform(&[64, 64], 1.0);
    let want = m.eval_plain(&x);
    // Rounding of x (2^-21) over 64 terms of |w| ≤ 200 is below 7·10^-3; a wrap is ~2^24 off.
    let bad = |got: &ArrayD<f64>| got.iter().zip(&want).filter(|(a, b)| (*a - *b).abs() > 1e-2).count();
    let exact = m.plan(64, OutputPolicy::Logits, fx).unwrap();
    assert_eq!(exact.options.truncation, mpc_proto::Truncation::Exact, "exact is the default");
    // With the dealer's truncation pairs, and in a two-party session by the known top bit.
    for mode in [mpc_proto::CorrelationMode::Dealer, mpc_proto::CorrelationMode::TwoParty] {
        let got = common::run_plan_in(mode, &m, &x, &exact).output.unwrap();
        assert_eq!(bad(&got), 0, "{mode:?} exact truncation: largest error {}", max_err(&got, &want));
    }
    let options = PlanOptions { truncation: mpc_proto::Truncation::Local, ..PlanOptions::default() };
    let local = m.plan_with(64, OutputPolicy::Logits, fx, options).unwrap();
    let wrapped = bad(&common::run_plan(&m, &x, &local).output.unwrap());
    eprintln!("local truncation corrupted {wrapped} of {} outputs", want.len());
    // What makes the exact check meaningful: the same products do wrap under local truncation.
    assert!(wrapped > 0, "local truncation did not wrap: the test's values are too small");
}

/// Another engine behind the [`Backend`] seam: this one forwards to a [`Party`] and logs every
/// interactive call, as an instrumented or alternative backend would. The model code runs on it
/// unchanged and gives the plaintext answer; the log shows that every interactive step went
/// through the seam.
struct Logged<'a> {
    inner: &'a mut Party,
    log: Vec<&'static str>,
}

impl Logged<'_> {
    fn note(&mut self, op: &'static str) -> &mut Party {
        self.log.push(op);
        self.inner
    }
}

type Fut<'a, T> = BoxFuture<'a, mpc_proto::Result<T>>;

impl Backend for Logged<'_> {
    fn id(&self) -> PartyId {
        self.inner.id()
    }
    fn fixed(&self) -> FixedPoint {
        self.inner.fixed()
    }
    fn stats(&self) -> &mpc_proto::Stats {
        self.inner.stats()
    }
    fn placeholder(&self) -> bool {
        self.inner.placeholder()
    }
    fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }
    fn abort(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.note("abort").abort())
    }
    fn comparisons(&self) -> Comparisons {
        self.inner.comparisons()
    }
    fn set_comparisons(&mut self, c: Comparisons) -> mpc_proto::Result<()> {
        self.inner.set_comparisons(c)
    }
    fn truncation(&self) -> mpc_proto::Truncation {
        self.inner.truncation()
    }
    fn set_truncation(&mut self, t: mpc_proto::Truncation) {
        self.inner.set_truncation(t)
    }
    fn share_input(&mut self, owner: PartyId, shape: &[usize], v: Option<&RingTensor>) -> mpc_proto::Result<AShare> {
        self.note("share_input").share_input(owner, shape, v)
    }
    fn reveal_to<'a>(&'a mut self, to: PartyId, x: &'a AShare) -> Fut<'a, Option<RingTensor>> {
        Box::pin(self.note("reveal_to").reveal_to(to, x))
    }
    fn add_public(&self, x: &AShare, c: &RingTensor) -> mpc_proto::Result<AShare> {
        self.inner.add_public(x, c)
    }
    fn mul_const(&self, x: &AShare, k: f64) -> mpc_proto::Result<AShare> {
        self.inner.mul_const(x, k)
    }
    fn trunc(&self, x: &AShare, bits: u32) -> AShare {
        self.inner.trunc(x, bits)
    }
    fn one_minus(&self, b: &AShare) -> mpc_proto::Result<AShare> {
        self.inner.one_minus(b)
    }
    fn sum_pool2d(&self, x: &AShare, k: Pair, s: Pair, p: Pair) -> mpc_proto::Result<AShare> {
        self.inner.sum_pool2d(x, k, s, p)
    }
    fn avg_pool2d(&self, x: &AShare, k: Pair, s: Pair, p: Pair) -> mpc_proto::Result<AShare> {
        self.inner.avg_pool2d(x, k, s, p)
    }
    fn mul<'a>(&'a mut self, x: &'a AShare, y: &'a AShare) -> Fut<'a, AShare> {
        Box::pin(self.note("mul").mul(x, y))
    }
    fn mul_fixed<'a>(&'a mut self, x: &'a AShare, y: &'a AShare) -> Fut<'a, AShare> {
        Box::pin(self.note("mul_fixed").mul_fixed(x, y))
    }
    fn matmul<'a>(&'a mut self, x: &'a AShare, y: &'a AShare) -> Fut<'a, AShare> {
        Box::pin(self.note("matmul").matmul(x, y))
    }
    fn matmul_fixed<'a>(&'a mut self, x: &'a AShare, y: &'a AShare) -> Fut<'a, AShare> {
        Box::pin(self.note("matmul_fixed").matmul_fixed(x, y))
    }
    fn preopen_many<'a>(&'a mut self, items: &'a [(Bilinear, &'a AShare)]) -> Fut<'a, Vec<PreopenedWeights>> {
        Box::pin(self.note("preopen_many").preopen_many(items))
    }
    fn apply_preopened<'a>(&'a mut self, x: &'a AShare, w: &'a PreopenedWeights, t: bool) -> Fut<'a, AShare> {
        Box::pin(self.note("apply_preopened").apply_preopened(x, w, t))
    }
    fn apply_preopened_many<'a>(
        &'a mut self,
        items: &'a [(&'a AShare, &'a PreopenedWeights)],
        t: bool,
    ) -> Fut<'a, Vec<AShare>> {
        Box::pin(self.note("apply_preopened_many").apply_preopened_many(items, t))
    }
    fn lt_public<'a>(&'a mut self, x: &'a AShare, c: &'a RingTensor) -> Fut<'a, AShare> {
        Box::pin(self.note("lt_public").lt_public(x, c))
    }
    fn relu<'a>(&'a mut self, x: &'a AShare) -> Fut<'a, AShare> {
        Box::pin(self.note("relu").relu(x))
    }
    fn relu_with_bit<'a>(&'a mut self, x: &'a AShare) -> Fut<'a, (AShare, AShare)> {
        Box::pin(self.note("relu_with_bit").relu_with_bit(x))
    }
    fn spline<'a>(&'a mut self, x: &'a AShare, s: &'a Spline) -> Fut<'a, AShare> {
        Box::pin(self.note("spline").spline(x, s))
    }
    fn sigmoid<'a>(&'a mut self, x: &'a AShare) -> Fut<'a, AShare> {
        Box::pin(self.note("sigmoid").sigmoid(x))
    }
    fn softmax<'a>(&'a mut self, x: &'a AShare) -> Fut<'a, AShare> {
        Box::pin(self.note("softmax").softmax(x))
    }
    fn max<'a>(&'a mut self, x: &'a AShare, axis: usize) -> Fut<'a, AShare> {
        Box::pin(self.note("max").max(x, axis))
    }
    fn argmax<'a>(&'a mut self, x: &'a AShare) -> Fut<'a, AShare> {
        Box::pin(self.note("argmax").argmax(x))
    }
    fn maxpool2d_ceil<'a>(&'a mut self, x: &'a AShare, k: Pair, s: Pair, p: Pair, ceil: bool) -> Fut<'a, AShare> {
        Box::pin(self.note("maxpool2d_ceil").maxpool2d_ceil(x, k, s, p, ceil))
    }
}

type Pair = (usize, usize);

#[test]
fn model_code_runs_unchanged_on_another_backend() {
    let m = network_a(4);
    let x = inputs(&[4, 784], 5);
    let plan = m.plan(4, OutputPolicy::Logits, FixedPoint::default()).unwrap();
    let out = run_parties(13, |mut p| {
        let (m, x, plan) = (m.clone(), x.clone(), plan.clone());
        async move {
            let me = p.id();
            let mut logged = Logged { inner: &mut p, log: vec![] };
            let r =
                infer(&mut logged, &plan, (me == PartyId::P0).then_some(&m), (me == PartyId::P1).then_some(&x)).await?;
            Ok((r.output, logged.log))
        }
    })
    .unwrap();
    let err = max_err(out[1].0.as_ref().unwrap(), &m.eval_plain(&x));
    assert!(err <= 1e-3, "max logit error {err}");
    for (i, (_, log)) in out.iter().enumerate() {
        // Weights and input in, weights pre-opened once, one product per linear layer, one
        // ReLU per activation, the logits out to Bob.
        let relus = log.iter().filter(|op| **op == "relu").count();
        let products = log.iter().filter(|op| op.starts_with("apply_preopened")).count();
        assert_eq!((relus, products), (2, 3), "P{i}: {log:?}");
        assert_eq!(log.first(), Some(&"share_input"), "P{i}: {log:?}");
        assert_eq!(log.last(), Some(&"reveal_to"), "P{i}: {log:?}");
    }
}

#[test]
fn networks_run_in_the_two_party_mode_with_plaintext_results() {
    // No dealer: every triple and comparison gate made by P0 and P1 with OT. Small networks
    // (a matrix triple costs m·k·n OT products here).
    let g = &mut Prg::from_u64(17);
    let mlp = Model::chain(
        vec![64],
        vec![linear(64, 32, g), Layer::of(op::Relu), linear(32, 16, g), Layer::of(op::Relu), linear(16, 10, g)],
    );
    let pool = Layer::of(op::MaxPool { kernel: (2, 2), stride: (2, 2), padding: (0, 0), ceil_mode: false });
    let cnn = Model::chain(
        vec![1, 8, 8],
        vec![conv(1, 4, 3, 1, g), Layer::of(op::Relu), pool, Layer::of(op::Flatten), linear(64, 10, g)],
    );
    for (name, m, shape) in [("mlp", mlp, vec![3, 64]), ("cnn", cnn, vec![3, 1, 8, 8])] {
        let x = inputs(&shape, 18);
        let plan = m.plan(3, OutputPolicy::Logits, FixedPoint::default()).unwrap();
        let out = mpc_proto::run_two_parties(mpc_proto::LocalConfig::new(19), |mut p| {
            let (m, x, plan) = (m.clone(), x.clone(), plan.clone());
            async move {
                let me = p.id();
                Ok(infer(&mut p, &plan, (me == PartyId::P0).then_some(&m), (me == PartyId::P1).then_some(&x)).await?)
            }
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = m.eval_plain(&x);
        let got = out[1].output.as_ref().expect("Bob gets the output");
        let err = max_err(got, &want);
        assert!(err <= 1e-2, "{name}: max logit error {err}");
        assert_eq!(argmax_rows(got), argmax_rows(&want), "{name}: labels");
        assert!(out[0].output.is_none(), "{name}: Alice learns nothing");
    }
}
