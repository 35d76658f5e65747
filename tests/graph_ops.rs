//! Graph models and the operators beyond the chain: every layer kind privately against the
//! plaintext f64 reference on random and edge inputs, with the tolerance each one states.

mod common;

use common::max_diff;
use mpc_ml::model::{Act, PubF64};
use mpc_ml::{Layer, Model, OutputPolicy, op};
use mpc_proto::FixedPoint;
use mpc_proto::prg::Prg;
use ndarray::{ArrayD, IxDyn};

fn private(model: &Model, x: &ArrayD<f64>, policy: OutputPolicy) -> ArrayD<f64> {
    let plan = model.plan(x.shape()[0], policy, FixedPoint::default()).unwrap();
    plan.validate().unwrap();
    common::run_plan(model, x, &plan).output.unwrap()
}

/// Bob's per-stage profile of `model` on `x` (logits), with the plan.
fn profile(model: &Model, x: &ArrayD<f64>) -> (Vec<mpc_ml::LayerProfile>, mpc_ml::Plan) {
    let plan = model.plan(x.shape()[0], OutputPolicy::Logits, FixedPoint::default()).unwrap();
    (common::run_plan(model, x, &plan).profile, plan)
}

/// Uniform in [-a, a).
fn random(shape: &[usize], a: f64, g: &mut Prg) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| (g.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 * a - a)
}

fn conv(o: usize, c: usize, k: usize, g: &mut Prg) -> Layer {
    Layer::conv2d(
        random(&[o, c, k, k], 1.0 / (c * k * k) as f64, g),
        Some(random(&[o], 0.1, g)),
        (1, 1),
        (k / 2, k / 2),
        (1, 1),
        1,
    )
}

fn check(name: &str, model: &Model, x: &ArrayD<f64>, tol: f64) {
    let want = model.eval_plain(x);
    let got = private(model, x, OutputPolicy::Logits);
    let err = max_diff(&got, &want);
    eprintln!("{name}: max |private − plaintext| = {err:.2e} (tolerance {tol:.0e})");
    assert!(err <= tol, "{name}: {err} > {tol}");
}

#[test]
fn residual_and_concat_graph() {
    let g = &mut Prg::from_u64(7);
    // Tensor 0 is the input [2, 6, 6]; tensor i + 1 is layer i's output.
    let layers = vec![
        conv(4, 2, 3, g),                                            // t1
        Layer::of(op::Relu),                                         // t2
        conv(4, 4, 3, g),                                            // t3
        conv(4, 2, 1, g),                                            // t4: 1×1 shortcut from the input
        Layer::of(op::Add),                                          // t5: residual t3 + t4
        Layer::of(op::Relu),                                         // t6
        Layer::of(op::Concat { axis: 0 }),                           // t7: [8, 6, 6] from t6 and t2
        Layer::of(op::Slice { axis: 0, start: 1, end: 2, step: 1 }), // t8: [1, 6, 6]
        Layer::of(op::Sub),                                          // t9: t7 − t8 broadcast
        Layer::of(op::GlobalAvgPool),                                // t10
        Layer::of(op::Flatten),                                      // t11
    ];
    let wires = vec![
        vec![0],
        vec![1],
        vec![2],
        vec![0],
        vec![3, 4],
        vec![5],
        vec![6, 2],
        vec![7],
        vec![7, 8],
        vec![9],
        vec![10],
    ];
    let model = Model { input_shape: vec![2, 6, 6], layers, wires };
    let x = random(&[3, 2, 6, 6], 2.0, g);
    check("residual+concat+slice+sub", &model, &x, 1e-3);
    // The shortcut (t4) reads the input, as the first conv (t1) does: the parties schedule by
    // depth, so the two open their inputs together, one round for both (and their products'
    // exact truncation one more, together); and the plan counts the rounds the parties make.
    let (bob, plan) = profile(&model, &x);
    let rounds: u64 = bob.iter().map(|p| p.stats.rounds).sum();
    assert_eq!(rounds, plan.online_rounds());
    let convs: Vec<u64> = bob.iter().filter(|p| p.name == "conv2d").map(|p| p.stats.rounds).collect();
    assert_eq!(convs, [2, 0, 2], "the first conv and the shortcut share their rounds");
}

#[test]
fn secret_products_broadcast_like_squeeze_excitation() {
    let g = &mut Prg::from_u64(8);
    let layers = vec![
        conv(4, 3, 3, g),             // 1: x
        Layer::of(op::GlobalAvgPool), // 2: [4, 1, 1]
        conv(4, 4, 1, g),             // 3
        Layer::of(Act::Sigmoid),      // 4: gate
        Layer::of(op::Mul),           // 5: x · gate (broadcast)
        Layer::of(Act::Silu),         // 6
        Layer::of(op::Mul),           // 7: x·x elementwise (a square)
    ];
    let wires = vec![vec![0], vec![1], vec![2], vec![3], vec![1, 4], vec![5], vec![6, 6]];
    let model = Model { input_shape: vec![3, 5, 5], layers, wires };
    let x = random(&[2, 3, 5, 5], 3.0, g);
    check("squeeze-excitation products", &model, &x, 2e-3);
    // Splines and secret products add their exact truncation's round: the plan counts them.
    let (bob, plan) = profile(&model, &x);
    assert_eq!(bob.iter().map(|p| p.stats.rounds).sum::<u64>(), plan.online_rounds());
}

#[test]
fn activations_exact_and_fitted_on_edges() {
    let g = &mut Prg::from_u64(9);
    // Random values plus the edges: breakpoints, zero, far tails.
    let mut v: Vec<f64> = random(&[200], 12.0, g).iter().copied().collect();
    v.extend([0.0, 6.0, -6.0, 3.0, -3.0, 2.5, -2.5, 1e-4, -1e-4, 30.0, -30.0, 100.0, -100.0, 0.5, -0.5, 8.0]);
    let n = v.len();
    let x = ArrayD::from_shape_vec(IxDyn(&[1, n]), v).unwrap();
    for act in [
        Act::Clip { lo: PubF64(0.0), hi: PubF64(6.0) },
        Act::Clip { lo: PubF64(-1.0), hi: PubF64(f64::INFINITY) },
        Act::LeakyRelu { alpha: PubF64(0.01) },
        Act::LeakyRelu { alpha: PubF64(0.2) },
        Act::HardSigmoid { alpha: PubF64(0.2), beta: PubF64(0.5) },
        Act::HardSwish,
        Act::Tanh,
        Act::Sigmoid,
        Act::Silu,
        Act::Gelu,
        Act::Erf,
        Act::Elu { alpha: PubF64(1.0) },
    ] {
        let model = Model::chain(vec![n], vec![Layer::of(act)]);
        // The spline's own bound, the slope rounding over |x| ≤ 100 (2^-17 per unit), the
        // breakpoint rounding and one truncation.
        let tol = act.error_bound() + 100.0 * 2f64.powi(-17) + 2f64.powi(-14);
        check(act.name(), &model, &x, tol);
    }
    // ReLU6 needs no truncation (integer slopes), LeakyReLU's spline one exact truncation: the
    // plan counts what the parties do.
    let chain = Model::chain(
        vec![n],
        vec![
            Layer::of(Act::Clip { lo: PubF64(0.0), hi: PubF64(6.0) }),
            Layer::of(Act::LeakyRelu { alpha: PubF64(0.1) }),
        ],
    );
    let (bob, plan) = profile(&chain, &x);
    assert_eq!(bob.iter().map(|p| p.stats.rounds).sum::<u64>(), plan.online_rounds());
    let stage = |name: &str| bob.iter().find(|p| p.name == name).unwrap().stats.rounds;
    assert_eq!(stage("leakyrelu"), stage("clip") + 1, "only the fractional slope truncates");
    // PReLU: a secret per-channel slope.
    let model = Model::chain(vec![4, 3], vec![Layer::prelu(random(&[4, 3], 0.5, g))]);
    check("prelu", &model, &random(&[2, 4, 3], 5.0, g), 1e-3);
}

#[test]
fn shape_operators_move_shares_exactly() {
    let g = &mut Prg::from_u64(10);
    let x = random(&[2, 3, 4, 5], 4.0, g);
    for layer in [
        Layer::of(op::Transpose { perm: vec![2, 0, 1] }),
        Layer::of(op::Pad { begin: vec![0, 1, 2], end: vec![1, 0, 2], dilate: vec![1, 1, 1], value: PubF64(0.75) }),
        Layer::of(op::Pad { begin: vec![0, 2, 2], end: vec![0, 3, 2], dilate: vec![1, 2, 3], value: PubF64(0.0) }),
        Layer::of(op::Slice { axis: 2, start: 1, end: 5, step: 2 }),
        Layer::of(op::Reshape { shape: vec![12, 5] }),
        Layer::of(op::GlobalSumPool),
    ] {
        let name = layer.name();
        let model = Model::chain(vec![3, 4, 5], vec![layer]);
        check(name, &model, &x, 2f64.powi(-15));
    }
}

#[test]
fn pooling_with_ceil_mode_and_padding_rules() {
    let g = &mut Prg::from_u64(11);
    let x = random(&[2, 2, 7, 7], 3.0, g);
    for (k, s, p, ceil) in
        [((3, 3), (2, 2), (0, 0), true), ((2, 2), (2, 2), (1, 1), true), ((3, 3), (2, 2), (1, 1), false)]
    {
        let model = Model::chain(
            vec![2, 7, 7],
            vec![Layer::of(op::MaxPool { kernel: k, stride: s, padding: p, ceil_mode: ceil })],
        );
        check("maxpool", &model, &x, 2f64.powi(-15));
        for count_include_pad in [false, true] {
            let model = Model::chain(
                vec![2, 7, 7],
                vec![Layer::of(op::AvgPool { kernel: k, stride: s, padding: p, count_include_pad, ceil_mode: ceil })],
            );
            check("avgpool", &model, &x, 1e-4);
        }
    }
}

#[test]
fn grouped_dilated_and_depthwise_convolutions() {
    let g = &mut Prg::from_u64(12);
    let x = random(&[2, 4, 9, 9], 2.0, g);
    for (o, groups, dilation, stride) in [(4, 4, (1, 1), (1, 1)), (6, 2, (2, 2), (1, 1)), (8, 4, (1, 2), (2, 2))] {
        let layer = Layer::conv2d(
            random(&[o, 4 / groups, 3, 3], 0.5, g),
            Some(random(&[o], 0.1, g)),
            stride,
            (1, 1),
            dilation,
            groups,
        );
        let model = Model::chain(vec![4, 9, 9], vec![layer]);
        check("conv (groups, dilation)", &model, &x, 1e-3);
    }
}

#[test]
fn final_log_softmax_reveals_log_probabilities() {
    let g = &mut Prg::from_u64(13);
    let model = Model::chain(
        vec![6],
        vec![Layer::linear(random(&[6, 5], 1.0, g), Some(random(&[5], 0.5, g))), Layer::of(op::LogSoftmax)],
    );
    check("log-softmax", &model, &random(&[4, 6], 3.0, g), 1e-3);
    // Only as the last layer.
    let bad = Model::chain(vec![6], vec![Layer::of(op::LogSoftmax), Layer::of(op::Relu)]);
    assert!(bad.plan(1, OutputPolicy::Logits, FixedPoint::default()).is_err());
}

#[test]
fn malformed_graphs_are_refused_with_a_reason() {
    let cases = [
        (Model { input_shape: vec![4], layers: vec![Layer::of(op::Relu)], wires: vec![vec![1]] }, "reads tensors"),
        (Model { input_shape: vec![4], layers: vec![Layer::of(op::Add)], wires: vec![vec![0]] }, "reads 1 tensors"),
        (
            Model {
                input_shape: vec![4],
                layers: vec![Layer::of(op::Relu), Layer::of(op::Relu)],
                wires: vec![vec![0]],
            },
            "wire lists",
        ),
        (
            Model {
                input_shape: vec![4],
                layers: vec![Layer::of(op::Relu), Layer::of(op::Concat { axis: 1 })],
                wires: vec![vec![0], vec![0, 1]],
            },
            "axis 1",
        ),
    ];
    for (m, want) in cases {
        let e = m.plan(1, OutputPolicy::Logits, FixedPoint::default()).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should mention {want:?}");
    }
    // A received plan whose step reads a later tensor fails validation.
    let m = Model::chain(vec![4], vec![Layer::of(op::Relu), Layer::of(op::Relu)]);
    let mut plan = m.plan(1, OutputPolicy::Logits, FixedPoint::default()).unwrap();
    plan.steps[0].inputs = vec![2];
    assert!(plan.validate().unwrap_err().to_string().contains("not all computed before it"));
}

#[test]
fn parallel_branches_share_their_rounds() {
    // A SqueezeNet fire module: squeeze 1×1 → ReLU → (expand 1×1 → ReLU, expand 3×3 → ReLU) →
    // concat. The exporter's order interleaves the branches; the parties run the two expand
    // convolutions in one round and their two ReLUs in one comparison layer.
    let g = &mut Prg::from_u64(14);
    let layers = vec![
        conv(2, 3, 1, g),                  // t1 squeeze
        Layer::of(op::Relu),               // t2
        conv(4, 2, 1, g),                  // t3 expand 1×1
        Layer::of(op::Relu),               // t4
        conv(4, 2, 3, g),                  // t5 expand 3×3
        Layer::of(op::Relu),               // t6
        Layer::of(op::Concat { axis: 0 }), // t7
        Layer::of(op::GlobalAvgPool),      // t8
        Layer::of(op::Flatten),            // t9
    ];
    let wires = vec![vec![0], vec![1], vec![2], vec![3], vec![2], vec![5], vec![4, 6], vec![7], vec![8]];
    let model = Model { input_shape: vec![3, 6, 6], layers, wires };
    let x = random(&[2, 3, 6, 6], 2.0, g);
    check("fire module", &model, &x, 1e-3);
    let (bob, plan) = profile(&model, &x);
    let rounds: u64 = bob.iter().map(|p| p.stats.rounds).sum();
    assert_eq!(rounds, plan.online_rounds());
    let stage = |name: &str| -> Vec<u64> { bob.iter().filter(|p| p.name == name).map(|p| p.stats.rounds).collect() };
    assert_eq!(stage("conv2d")[1..], [2, 0], "the expand convolutions share their rounds");
    let relus = stage("relu");
    assert!(relus[1] > 0 && relus[2] == 0, "the expand ReLUs share a comparison layer: {relus:?}");
}

/// A spline over more element-points than one comparison layer holds runs in chunks (bounded
/// material), one comparison layer each, then one truncation; values and rounds as planned.
#[test]
fn large_splines_run_in_chunks() {
    let g = &mut Prg::from_u64(31);
    let act = Act::Gelu;
    let points = act.spline().breaks.len();
    let n = 2 * mpc_proto::protocol::spline_chunk_len(points) + 17;
    assert_eq!(mpc_proto::protocol::spline_chunks(n, points), 3);
    let model = Model::chain(vec![n], vec![Layer::of(act)]);
    let x = random(&[1, n], 6.0, g);
    check("chunked gelu", &model, &x, act.error_bound() + 6.0 * 2f64.powi(-17) + 2f64.powi(-14));
    let (bob, plan) = profile(&model, &x);
    assert_eq!(bob.iter().map(|p| p.stats.rounds).sum::<u64>(), plan.online_rounds());
    let one = plan.steps[0].compare.map(|c| mpc_proto::compare::cost::rounds(c.method) as u64).unwrap();
    let gelu = bob.iter().find(|p| p.name == "gelu").unwrap().stats.rounds;
    assert_eq!(gelu, 3 * one + 1, "three comparison layers and one exact truncation");
}
