//! The standard workloads (`shared/bench/workloads.md`): seeded data, each party's program over
//! `mpc-proto`/`mpc-ml`, and the f64 plaintext evaluation the output is checked against.
//!
//! Every party builds the same [`Data`] from the seed and uses only its own part: P0 the
//! weights, P1 the inputs; the dealer neither. Outputs are revealed to P1.

use std::fmt;
use std::str::FromStr;

use anyhow::Context;
use mpc_ml::op::{Flatten, MaxPool, Relu};
use mpc_ml::train::{Arch, TrainConfig, TrainPlan};
use mpc_ml::{Layer, LayerProfile, Model, OutputPolicy, Plan, PlanOptions};
use mpc_proto::compare::cost::{self, OpShape};
use mpc_proto::compare::{Comparisons, Policy};
use mpc_proto::prg::Prg;
use mpc_proto::{AShare, FixedPoint, Party, PartyId};
use ndarray::{Array1, Array2, ArrayD, IxDyn};

/// One benchmark workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Secret `[128 × 784] · [784 × 128]` (P1's by P0's), fixed point with truncation.
    MatMul,
    /// 1,000,000 elementwise secret × secret fixed-point multiplications.
    Mul1m,
    /// 100,000 ReLUs.
    Relu100k,
    /// 100,000 comparisons `x > 0` (output: the bits).
    Cmp100k,
    /// Network A (FC 784-128-128-10, ReLU) at this batch size.
    MlpA(usize),
    /// LeNet-5 at this batch size.
    Lenet5(usize),
    /// ResNet-20 (CIFAR, 3×32×32; `fixtures/onnx/arch/resnet20_ts.onnx`) at this batch size.
    Resnet20(usize),
    /// MobileNetV2 (width 0.35, CIFAR-sized; `fixtures/onnx/arch/mobilenetv2_ts.onnx`).
    MobileNetV2(usize),
    /// Logistic regression training: 1000 × 13 synthetic, 10 epochs, batch 100.
    LogregTrain,
}

/// The standard set, in the order `bench` runs it by default.
pub const STANDARD: [Workload; 11] = [
    Workload::MatMul,
    Workload::Mul1m,
    Workload::Relu100k,
    Workload::Cmp100k,
    Workload::MlpA(1),
    Workload::MlpA(128),
    Workload::Lenet5(1),
    Workload::Lenet5(64),
    Workload::Resnet20(1),
    Workload::MobileNetV2(1),
    Workload::LogregTrain,
];

/// What `--workload` accepts (for error messages).
pub const VALID: &str = "matmul, mul-1m, relu-100k, cmp-100k, mlp-a-b<N>, lenet5-b<N>, resnet20-b<N>, \
                         mobilenetv2-b<N>, logreg-train (N: batch size, \
                         e.g. mlp-a-b128), all; through three daemons: mnist-cnn-<ROWS> (throughput, e.g. \
                         mnist-cnn-10k), pool-lenet5-b1, pool-mlp-a-b1 (latency with a warm pool)";

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::MatMul => write!(f, "matmul"),
            Workload::Mul1m => write!(f, "mul-1m"),
            Workload::Relu100k => write!(f, "relu-100k"),
            Workload::Cmp100k => write!(f, "cmp-100k"),
            Workload::MlpA(b) => write!(f, "mlp-a-b{b}"),
            Workload::Lenet5(b) => write!(f, "lenet5-b{b}"),
            Workload::Resnet20(b) => write!(f, "resnet20-b{b}"),
            Workload::MobileNetV2(b) => write!(f, "mobilenetv2-b{b}"),
            Workload::LogregTrain => write!(f, "logreg-train"),
        }
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let batch = |rest: &str| -> Result<usize, String> {
            match rest.parse::<usize>() {
                Ok(b) if (1..=4096).contains(&b) => Ok(b),
                _ => Err(format!("bad batch size in workload {s:?}: 1 to 4096")),
            }
        };
        Ok(match s {
            "matmul" => Workload::MatMul,
            "mul-1m" => Workload::Mul1m,
            "relu-100k" => Workload::Relu100k,
            "cmp-100k" => Workload::Cmp100k,
            "logreg-train" => Workload::LogregTrain,
            _ => {
                if let Some(b) = s.strip_prefix("mlp-a-b") {
                    Workload::MlpA(batch(b)?)
                } else if let Some(b) = s.strip_prefix("lenet5-b") {
                    Workload::Lenet5(batch(b)?)
                } else if let Some(b) = s.strip_prefix("resnet20-b") {
                    Workload::Resnet20(batch(b)?)
                } else if let Some(b) = s.strip_prefix("mobilenetv2-b") {
                    Workload::MobileNetV2(batch(b)?)
                } else {
                    return Err(format!("unknown workload {s:?}; valid: {VALID}"));
                }
            }
        })
    }
}

/// Parses a comma-separated list (`all` = the standard set).
pub fn parse_list(s: &str) -> Result<Vec<Workload>, String> {
    let mut out = Vec::new();
    for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if w == "all" {
            out.extend(STANDARD);
        } else {
            out.push(w.parse()?);
        }
    }
    if out.is_empty() {
        return Err(format!("no workload given; valid: {VALID}"));
    }
    Ok(out)
}

impl Workload {
    /// Bytes the two-party mode moves between the parties to make this workload's correlations,
    /// estimated: a network's from its plan (`mpc_ml::Plan::two_party_bytes`: each product by
    /// the route and layout the session picks, HE or OT vector products, and each comparison's
    /// triples), a matrix product likewise (`triple_bytes`), an elementwise product 2568
    /// bytes, a comparison or ReLU on these workloads' windows about 2.35 KB (measured
    /// 2026-12-01), the training sigmoid about 170 KB (measured). `None` if the network
    /// cannot be built.
    pub fn two_party_bytes(&self) -> Option<u64> {
        use mpc_proto::correlations::Bilinear;
        use mpc_proto::correlations::two_party::{HE_KEY_BYTES, triple_bytes};
        const CMP: u64 = 2_340;
        const MUL: u64 = 2_568;
        let matmul = |m: usize, k: usize, n: usize| {
            triple_bytes(Bilinear::MatMul, &[m, k], &[k, n], false).expect("the workloads' shapes are valid")
        };
        let bytes: u64 = match *self {
            Workload::MatMul => HE_KEY_BYTES + matmul(128, 784, 128),
            Workload::Mul1m => 1_000_000 * MUL,
            Workload::Relu100k => 100_000 * 2_360,
            Workload::Cmp100k => 100_000 * CMP,
            Workload::MlpA(_) | Workload::Lenet5(_) | Workload::Resnet20(_) | Workload::MobileNetV2(_) => {
                match self.data(0, Comparisons::default(), true) {
                    Ok(Data::Network { plan, .. }) => plan.two_party_bytes(),
                    _ => return None,
                }
            }
            // 10 epochs of 10 steps of 100 samples: a forward and a gradient product per step,
            // and the sigmoid of every sample.
            Workload::LogregTrain => {
                let (n, d) = (100, LOGREG_FEATURES);
                100 * (matmul(n, d, 1) + matmul(d, n, 1) + n as u64 * 170_000)
            }
        };
        Some(bytes)
    }
}

/// The most the two-party bench runs: 4 GB between the parties (a minute or more per run on
/// loopback here).
pub const TWO_PARTY_LIMIT: u64 = 4_000_000_000;

/// The declared range of the comparison workloads' inputs, `[−100, 100]`: like the networks'
/// declared [0, 1], it sets the comparison window (`mpc_ml::bounds::window_for`: 25 bits).
pub const INPUT_BOUND: f64 = 100.0;

const LOGREG_SAMPLES: usize = 1000;
const LOGREG_FEATURES: usize = 13;

/// A workload's seeded data (every party builds the same; each uses its own part).
pub enum Data {
    /// Two operands: `x` is P1's, `y` P0's (`y` empty for unary workloads).
    Tensors {
        /// P1's input.
        x: ArrayD<f64>,
        /// P0's input.
        y: ArrayD<f64>,
    },
    /// A network, its plan and P1's input.
    Network {
        /// P0's model.
        model: Box<Model>,
        /// The public plan.
        plan: Box<Plan>,
        /// P1's input.
        x: ArrayD<f64>,
    },
    /// Training data (P1's) and the public plan.
    Train {
        /// The public training plan.
        plan: TrainPlan,
        /// Features.
        x: Array2<f64>,
        /// Labels.
        y: Array1<f64>,
    },
}

fn uniform(shape: &[usize], lo: f64, hi: f64, g: &mut Prg) -> ArrayD<f64> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || lo + (g.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo))
}

/// PyTorch-style uniform init in ±1/sqrt(fan_in).
fn init(shape: &[usize], fan_in: usize, g: &mut Prg) -> ArrayD<f64> {
    let r = 1.0 / (fan_in as f64).sqrt();
    uniform(shape, -r, r, g)
}

fn linear(i: usize, o: usize, g: &mut Prg) -> Layer {
    Layer::linear(init(&[i, o], i, g), Some(init(&[o], i, g)))
}

fn conv(c: usize, o: usize, k: usize, g: &mut Prg) -> Layer {
    let fan = c * k * k;
    Layer::conv2d(init(&[o, c, k, k], fan, g), Some(init(&[o], fan, g)), (1, 1), (0, 0), (1, 1), 1)
}

/// "Network A" (SecureML): FC 784-128-128-10 with ReLU.
pub fn network_a(seed: u64) -> Model {
    let g = &mut Prg::from_u64(seed);
    Model::chain(
        vec![784],
        vec![linear(784, 128, g), Layer::of(Relu), linear(128, 128, g), Layer::of(Relu), linear(128, 10, g)],
    )
}

/// LeNet-5 of the workloads. ReLU follows max pooling (the same function, 4× fewer gates), as
/// the ONNX importer arranges it for `fixtures/onnx/lenet5.onnx`.
pub fn lenet5(seed: u64) -> Model {
    let g = &mut Prg::from_u64(seed);
    let pool = Layer::of(MaxPool { kernel: (2, 2), stride: (2, 2), padding: (0, 0), ceil_mode: false });
    Model::chain(
        vec![1, 28, 28],
        vec![
            conv(1, 6, 5, g),
            pool.clone(),
            Layer::of(Relu),
            conv(6, 16, 5, g),
            pool,
            Layer::of(Relu),
            Layer::of(Flatten),
            linear(256, 120, g),
            Layer::of(Relu),
            linear(120, 84, g),
            Layer::of(Relu),
            linear(84, 10, g),
        ],
    )
}

/// The CIFAR-sized architecture fixtures, embedded so that `bench` runs anywhere.
const RESNET20_ONNX: &[u8] = include_bytes!("../../../../fixtures/onnx/arch/resnet20_ts.onnx");
const MOBILENETV2_ONNX: &[u8] = include_bytes!("../../../../fixtures/onnx/arch/mobilenetv2_ts.onnx");

impl Workload {
    /// The session's fixed point: the networks' recommended one (20 fractional bits for the
    /// deep CIFAR networks, [`mpc_ml::model::recommended_frac_bits`]), else the default.
    pub fn fixed(&self) -> FixedPoint {
        match self {
            Workload::Resnet20(_) | Workload::MobileNetV2(_) => FixedPoint::new(20, 27).expect("valid"),
            _ => FixedPoint::default(),
        }
    }

    /// Builds the workload's seeded data; networks are planned with the run's comparison
    /// settings and their inputs' declared range, [0, 1].
    pub fn data(&self, seed: u64, cmp: Comparisons, declared: bool) -> anyhow::Result<Data> {
        let g = &mut Prg::from_u64(seed ^ 0xbe7c_0000);
        let fx = self.fixed();
        Ok(match *self {
            Workload::MatMul => {
                Data::Tensors { x: uniform(&[128, 784], -1.0, 1.0, g), y: uniform(&[784, 128], -1.0, 1.0, g) }
            }
            Workload::Mul1m => {
                Data::Tensors { x: uniform(&[1_000_000], -4.0, 4.0, g), y: uniform(&[1_000_000], -4.0, 4.0, g) }
            }
            Workload::Relu100k | Workload::Cmp100k => {
                Data::Tensors { x: uniform(&[100_000], -INPUT_BOUND, INPUT_BOUND, g), y: ArrayD::zeros(IxDyn(&[0])) }
            }
            Workload::MlpA(b) | Workload::Lenet5(b) | Workload::Resnet20(b) | Workload::MobileNetV2(b) => {
                let model = match self {
                    Workload::MlpA(_) => network_a(seed),
                    Workload::Lenet5(_) => lenet5(seed),
                    Workload::Resnet20(_) => mpc_ml::onnx::import(RESNET20_ONNX).context("resnet20 fixture")?.model,
                    _ => mpc_ml::onnx::import(MOBILENETV2_ONNX).context("mobilenetv2 fixture")?.model,
                };
                let mut shape = vec![b];
                shape.extend(&model.input_shape);
                let mut options = PlanOptions {
                    comparisons: cmp.policy,
                    link: cmp.link,
                    objective: cmp.objective,
                    ..Default::default()
                };
                if declared {
                    options = options.with_input_range(0.0, 1.0, fx);
                }
                let plan = model.plan_with(b, OutputPolicy::Logits, fx, options).context("planning the network")?;
                Data::Network { x: uniform(&shape, 0.0, 1.0, g), plan: Box::new(plan), model: Box::new(model) }
            }
            Workload::LogregTrain => {
                let (n, d) = (LOGREG_SAMPLES, LOGREG_FEATURES);
                let s3 = 3f64.sqrt(); // unit variance
                let x = uniform(&[n, d], -s3, s3, g).into_dimensionality().expect("2-D");
                let w = uniform(&[d], -1.0, 1.0, g);
                let noise = uniform(&[n], -0.5, 0.5, g);
                let y = Array1::from_shape_fn(n, |i| {
                    let z: f64 = (0..d).map(|j| x[[i, j]] * w[j]).sum::<f64>() + noise[i];
                    f64::from(z > 0.0)
                });
                let plan = TrainPlan {
                    config: TrainConfig {
                        arch: Arch::LogReg,
                        epochs: 10,
                        batch: 100,
                        lr: 0.5,
                        seed,
                        report_loss: false,
                    },
                    samples: n,
                    features: d,
                };
                Data::Train { plan, x, y }
            }
        })
    }

    /// The session's comparison settings for this workload: the comparison workloads compare
    /// inputs of a declared range, so their window is the range's; the others keep `cmp`'s.
    pub fn comparisons(&self, cmp: Comparisons, declared: bool) -> Comparisons {
        match self {
            Workload::Relu100k | Workload::Cmp100k if declared => {
                Comparisons { bits: mpc_ml::bounds::window_for(INPUT_BOUND, FixedPoint::default()), ..cmp }
            }
            _ => cmp,
        }
    }

    /// The comparison methods the run uses, per comparison-based step (networks) or for the
    /// workload's one comparison layer, as `"name:method/k"` strings.
    pub fn methods(&self, data: &Data, cmp: Comparisons) -> Vec<String> {
        let one = |relu: bool, n: usize| {
            let op = OpShape { elements: n, points: 1, relu, bits: u32::from(cmp.bits), sequential: 1 };
            let m = match cmp.policy {
                Policy::Fixed(m) => m,
                Policy::Auto => cost::choose_one(&cmp.link, cmp.objective, &op),
            };
            vec![format!("{}:{m}/{}", if relu { "relu" } else { "cmp" }, cmp.bits)]
        };
        match (self, data) {
            (Workload::Relu100k, Data::Tensors { x, .. }) => one(true, x.len()),
            (Workload::Cmp100k, Data::Tensors { x, .. }) => one(false, x.len()),
            (_, Data::Network { plan, .. }) => plan
                .steps
                .iter()
                .filter_map(|s| s.compare.map(|c| format!("{}:{}/{}", s.kind.name(), c.method, c.bits)))
                .collect(),
            _ => vec![],
        }
    }

    /// Whether the program runs under the preprocessing pool (`Party::begin_offline`): every
    /// standard workload does.
    pub fn supports_pool(&self) -> bool {
        true
    }

    /// What the parties agree on (the session's plan hash, [`mpc_ml::plan_hash()`] domain
    /// `bench`): the workload and its seed.
    pub fn plan_hash(&self, seed: u64) -> [u8; 32] {
        mpc_ml::plan_hash("bench", &(self.to_string(), seed))
    }

    /// The f64 plaintext evaluation of the same workload (P1's expected output).
    pub fn plaintext(&self, data: &Data) -> ArrayD<f64> {
        match (self, data) {
            (Workload::MatMul, Data::Tensors { x, y }) => mpc_ml::plain::matmul(x, y),
            (Workload::Mul1m, Data::Tensors { x, y }) => mpc_ml::plain::mul(x, y),
            (Workload::Relu100k, Data::Tensors { x, .. }) => mpc_ml::plain::relu(x),
            (Workload::Cmp100k, Data::Tensors { x, .. }) => x.mapv(|v| f64::from(v > 0.0)),
            (_, Data::Network { model, x, .. }) => model.eval_plain(x),
            (_, Data::Train { plan, x, y }) => flatten_model(&mpc_ml::train::train_plain(plan, x, y)),
            _ => unreachable!("data built for another workload"),
        }
    }

    /// Runs this party's program; P1 gets the output (and, for networks, the per-layer profile).
    pub async fn run(&self, p: &mut Party, data: &Data) -> anyhow::Result<RunOutput> {
        let fx = p.fixed();
        let me = p.id();
        let input = |p: &mut Party, owner: PartyId, v: &ArrayD<f64>| -> anyhow::Result<AShare> {
            let enc = if me == owner { Some(fx.encode_array(v)?) } else { None };
            Ok(p.share_input(owner, v.shape(), enc.as_ref())?)
        };
        let decode = |t: Option<mpc_proto::RingTensor>| t.map(|t| fx.decode_tensor(&t));
        Ok(match (self, data) {
            (Workload::MatMul | Workload::Mul1m, Data::Tensors { x, y }) => {
                let xs = input(p, PartyId::P1, x)?;
                let ys = input(p, PartyId::P0, y)?;
                let z = if *self == Workload::MatMul {
                    p.matmul_fixed(&xs, &ys).await?
                } else {
                    p.mul_fixed(&xs, &ys).await?
                };
                RunOutput { output: decode(p.reveal_to(PartyId::P1, &z).await?), layers: vec![] }
            }
            (Workload::Relu100k, Data::Tensors { x, .. }) => {
                let xs = input(p, PartyId::P1, x)?;
                let z = p.relu(&xs).await?;
                RunOutput { output: decode(p.reveal_to(PartyId::P1, &z).await?), layers: vec![] }
            }
            (Workload::Cmp100k, Data::Tensors { x, .. }) => {
                let xs = input(p, PartyId::P1, x)?;
                let bit = p.ltz(&xs.neg()).await?; // x > 0  ⇔  −x < 0
                let out = p.reveal_to(PartyId::P1, &bit).await?;
                let output = out.map(|t| {
                    let v: Vec<f64> = t.as_slice().iter().map(|&b| b as f64).collect();
                    ArrayD::from_shape_vec(IxDyn(t.shape()), v).expect("same shape")
                });
                RunOutput { output, layers: vec![] }
            }
            (_, Data::Network { model, plan, x }) => {
                let m = (me == PartyId::P0).then_some(&**model);
                let i = (me == PartyId::P1).then_some(x);
                let r = mpc_ml::infer(p, plan, m, i).await?;
                RunOutput { output: r.output, layers: r.profile }
            }
            (_, Data::Train { plan, x, y }) => {
                let d = (me == PartyId::P1).then_some((x, y));
                let shared = mpc_ml::train::train(p, plan, d, |_| {}).await?;
                let m = shared.reveal_to(p, PartyId::P1).await?;
                RunOutput { output: m.as_ref().map(flatten_model), layers: vec![] }
            }
            _ => unreachable!("data built for another workload"),
        })
    }
}

/// All weights and biases of a model, flattened in layer order.
fn flatten_model(m: &Model) -> ArrayD<f64> {
    let mut v = Vec::new();
    for l in &m.layers {
        if matches!(l.op, mpc_ml::Op::Linear(_)) {
            v.extend(l.weights.iter().flat_map(|w| w.iter()));
        }
    }
    ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).expect("1-D")
}

/// What a party's program returns.
pub struct RunOutput {
    /// P1's revealed output (`None` elsewhere and in the offline pass).
    pub output: Option<ArrayD<f64>>,
    /// Per-stage profile (networks).
    pub layers: Vec<LayerProfile>,
}

/// Largest absolute difference (infinite when the shapes differ).
pub fn max_abs_err(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    if a.shape() != b.shape() {
        return f64::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_party_mode_runs_the_workloads_whose_traffic_fits() {
        let runs: Vec<String> = STANDARD
            .iter()
            .filter(|w| w.two_party_bytes().is_some_and(|b| b <= TWO_PARTY_LIMIT))
            .map(Workload::to_string)
            .collect();
        assert_eq!(
            runs,
            STANDARD.iter().map(Workload::to_string).collect::<Vec<_>>(),
            "every standard workload runs in 2pc"
        );
        // A large batch is refused, with its estimate.
        assert!(Workload::Lenet5(1000).two_party_bytes().unwrap() > TWO_PARTY_LIMIT);
        // Against the bytes measured (2026-12-01, both parties): within 20 %.
        for (w, measured) in [
            (Workload::MatMul, 90.9e6),
            (Workload::MlpA(1), 12.87e6),
            (Workload::MlpA(128), 199.5e6),
            (Workload::Lenet5(1), 28.19e6),
            (Workload::Lenet5(64), 804.6e6),
            (Workload::Relu100k, 235.6e6),
            (Workload::LogregTrain, 1872.8e6),
            (Workload::Resnet20(1), 1279.9e6),
            (Workload::MobileNetV2(1), 547.6e6),
        ] {
            let est = w.two_party_bytes().unwrap() as f64;
            assert!((est / measured - 1.0).abs() < 0.2, "{w}: estimate {est}, measured {measured}");
        }
    }

    #[test]
    fn names_round_trip_and_bad_names_list_the_valid_ones() {
        for w in STANDARD {
            assert_eq!(w.to_string().parse::<Workload>(), Ok(w));
        }
        assert_eq!("mlp-a-b32".parse::<Workload>(), Ok(Workload::MlpA(32)));
        let e = "resnet".parse::<Workload>().unwrap_err();
        assert!(e.contains("mul-1m") && e.contains("lenet5-b<N>"), "{e}");
        assert!("lenet5-b0".parse::<Workload>().is_err());
        assert_eq!(parse_list("all").unwrap().len(), STANDARD.len());
        assert_eq!(parse_list("matmul, relu-100k").unwrap(), vec![Workload::MatMul, Workload::Relu100k]);
        assert!(parse_list(" ").is_err());
    }

    #[test]
    fn data_is_seeded() {
        let (Data::Tensors { x: a, .. }, Data::Tensors { x: b, .. }) = (
            Workload::MatMul.data(3, Comparisons::default(), true).unwrap(),
            Workload::MatMul.data(3, Comparisons::default(), true).unwrap(),
        ) else {
            panic!("tensors expected")
        };
        assert_eq!(a, b);
    }
}
