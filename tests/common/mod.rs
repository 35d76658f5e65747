//! What the ML integration tests share: the parties (three, or two without a dealer) running one
//! plan in memory.

#![allow(dead_code)]

use mpc_ml::{Inference, Model, OutputPolicy, Plan, infer};
use mpc_proto::{FixedPoint, PartyId};
use ndarray::ArrayD;

/// Runs the private inference of `plan` (of `model`, with the plan's fixed point) on `x`:
/// Alice holds the model, Bob the input. Returns Bob's result, after checking that only he
/// learns the output.
pub(crate) fn run_plan(model: &Model, x: &ArrayD<f64>, plan: &Plan) -> Inference {
    run_plan_in(mpc_proto::CorrelationMode::Dealer, model, x, plan)
}

/// [`run_plan`] in `mode`: with a dealer, or two parties and no dealer.
pub(crate) fn run_plan_in(mode: mpc_proto::CorrelationMode, model: &Model, x: &ArrayD<f64>, plan: &Plan) -> Inference {
    let mut cfg = mpc_proto::LocalConfig::new(3);
    cfg.fixed = plan.fixed;
    cfg.correlations = mode;
    let out = mpc_proto::run_in(cfg, |mut p| {
        let (plan, model, x) = (plan.clone(), model.clone(), x.clone());
        async move {
            let m = (p.id() == PartyId::P0).then_some(&model);
            let i = (p.id() == PartyId::P1).then_some(&x);
            Ok(infer(&mut p, &plan, m, i).await?)
        }
    })
    .unwrap();
    assert!(out.iter().enumerate().all(|(i, o)| (i == 1) == o.output.is_some()), "only Bob learns the output");
    out[1].clone()
}

/// [`run_plan`] of `model`'s plan for `x`'s batch under `policy` and `fx`; Bob's output.
pub(crate) fn private_output(model: &Model, x: &ArrayD<f64>, policy: OutputPolicy, fx: FixedPoint) -> ArrayD<f64> {
    let plan = model.plan(x.shape()[0], policy, fx).unwrap();
    run_plan(model, x, &plan).output.expect("Bob's output")
}

/// Largest absolute difference (the shapes must agree).
pub(crate) fn max_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}
