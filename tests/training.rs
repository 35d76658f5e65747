//! Private training on real data against the same SGD in plain f64 (same seed, initial weights,
//! batches and hyperparameters).

use std::path::Path;

use mpc_ml::data::{Standardizer, load_csv, split};
use mpc_ml::train::{Arch, TrainConfig, TrainPlan, accuracy, r2, train, train_plain};
use mpc_ml::{Model, ModelError};
use mpc_proto::{CorrelationMode, LocalConfig, PartyId, run_in, run_parties};
use ndarray::{Array1, Array2};

fn data(name: &str, label: &str, test: f64) -> (Array2<f64>, Array1<f64>, Array2<f64>, Array1<f64>) {
    let t = load_csv(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data").join(name), label).unwrap();
    let (tr, te) = split(&t, test, 42);
    let s = Standardizer::fit(&tr.x);
    (s.apply(&tr.x), tr.y, s.apply(&te.x), te.y)
}

/// Trains privately; returns the model revealed to Bob.
fn train_private(plan: &TrainPlan, x: &Array2<f64>, y: &Array1<f64>) -> Model {
    train_in(CorrelationMode::Dealer, plan, x, y)
}

/// [`train_private`] in `mode` (with a dealer, or two parties and no dealer).
fn train_in(mode: CorrelationMode, plan: &TrainPlan, x: &Array2<f64>, y: &Array1<f64>) -> Model {
    let cfg = LocalConfig { correlations: mode, ..LocalConfig::new(7) };
    let out = run_in(cfg, |mut p| {
        let (plan, x, y) = (plan.clone(), x.clone(), y.clone());
        async move {
            let d = (p.id() == PartyId::P1).then_some((&x, &y));
            let m = train(&mut p, &plan, d, |_| {}).await?;
            Ok(m.reveal_to(&mut p, PartyId::P1).await?)
        }
    })
    .unwrap();
    assert!(out[0].is_none() && out.get(2).is_none_or(Option::is_none), "only Bob learns the model");
    out[1].clone().unwrap()
}

#[test]
fn logistic_regression_on_breast_cancer() {
    let (x, y, xt, yt) = data("breast_cancer.csv", "malignant", 0.2);
    // Both modes; the two-party one (every product's triple made by OT between the parties)
    // for fewer epochs, to bound the test's time.
    for (mode, epochs) in [(CorrelationMode::Dealer, 10), (CorrelationMode::TwoParty, 3)] {
        let plan = TrainPlan {
            config: TrainConfig { arch: Arch::LogReg, epochs, batch: 32, lr: 0.5, seed: 1, report_loss: false },
            samples: x.nrows(),
            features: x.ncols(),
        };
        let private = train_in(mode, &plan, &x, &y);
        let plain = train_plain(&plan, &x, &y);
        let (ap, aq) = (accuracy(&private, &xt, &yt), accuracy(&plain, &xt, &yt));
        eprintln!("breast cancer logreg, {mode:?}: private {ap:.4}, plain {aq:.4}");
        assert!((ap - aq).abs() <= 0.01 + 1e-9, "{mode:?}: private {ap} vs plain {aq}");
        assert!(aq > 0.93, "the plain model should be good: {aq}");
    }
}

#[test]
fn linear_regression_on_diabetes() {
    let (x, y, xt, yt) = data("diabetes.csv", "progression", 0.2);
    // Targets in hundreds: scale to units of 100 so products stay small in fixed point.
    let (ys, yts) = (&y / 100.0, &yt / 100.0);
    let plan = TrainPlan {
        config: TrainConfig { arch: Arch::LinReg, epochs: 20, batch: 32, lr: 0.05, seed: 2, report_loss: false },
        samples: x.nrows(),
        features: x.ncols(),
    };
    let private = train_private(&plan, &x, &ys);
    let plain = train_plain(&plan, &x, &ys);
    let (rp, rq) = (r2(&private, &xt, &yts), r2(&plain, &xt, &yts));
    eprintln!("diabetes linreg: private R² {rp:.4}, plain {rq:.4}");
    assert!((rp - rq).abs() <= 0.01, "private {rp} vs plain {rq}");
    assert!(rq > 0.3, "{rq}");
}

#[test]
fn mlp_on_mnist_subset() {
    let (x, y, xt, yt) = data("mnist_1000.csv", "digit", 0.2);
    let plan = TrainPlan {
        config: TrainConfig {
            arch: Arch::Mlp { hidden: vec![32], classes: 10 },
            epochs: 3,
            batch: 50,
            lr: 0.1,
            seed: 3,
            report_loss: false,
        },
        samples: x.nrows(),
        features: x.ncols(),
    };
    let private = train_private(&plan, &x, &y);
    let plain = train_plain(&plan, &x, &y);
    let (ap, aq) = (accuracy(&private, &xt, &yt), accuracy(&plain, &xt, &yt));
    eprintln!("mnist mlp: private {ap:.4}, plain {aq:.4}");
    assert!((ap - aq).abs() <= 0.01 + 1e-9, "private {ap} vs plain {aq}");
    assert!(aq > 0.75, "{aq}");
}

#[test]
fn unusable_settings_are_refused_before_anything_runs() {
    let x = Array2::from_elem((10, 2), 1000.0);
    let y = Array1::zeros(10);
    let plan = TrainPlan {
        config: TrainConfig { arch: Arch::LogReg, epochs: 1, batch: 5, lr: 0.1, seed: 1, report_loss: false },
        samples: 10,
        features: 2,
    };
    let e = mpc_ml::train::check_settings(&plan, &x, &y).unwrap_err();
    assert!(e.to_string().contains("standardise"), "{e}");
    let tiny = TrainPlan { config: TrainConfig { lr: 1e-5, ..plan.config.clone() }, ..plan.clone() };
    assert!(matches!(mpc_ml::train::check_settings(&tiny, &(&x / 1000.0), &y), Err(ModelError::Invalid(_))));
    let labels = Array1::from_elem(10, 2.0);
    assert!(mpc_ml::train::check_settings(&plan, &(&x / 1000.0), &labels).is_err());
}

/// The trained model stays secret-shared and serves predictions at once: nobody ever holds its
/// weights, yet Bob's predictions equal those of the (separately revealed) model in plaintext.
#[test]
fn a_shared_trained_model_serves_predictions_without_being_revealed() {
    use mpc_ml::{OutputPolicy, infer_shared};
    let (x, y, xt, _) = data("breast_cancer.csv", "malignant", 0.2);
    let plan = TrainPlan {
        config: TrainConfig { arch: Arch::LogReg, epochs: 3, batch: 32, lr: 0.5, seed: 4, report_loss: false },
        samples: x.nrows(),
        features: x.ncols(),
    };
    let fx = mpc_proto::FixedPoint::default();
    let iplan = plan.inference_plan(xt.nrows(), OutputPolicy::Probabilities, fx).unwrap();
    let out = run_parties(8, |mut p| {
        let (plan, iplan, x, y, xt) = (plan.clone(), iplan.clone(), x.clone(), y.clone(), xt.clone().into_dyn());
        async move {
            let bob = p.id() == PartyId::P1;
            let m = train(&mut p, &plan, bob.then_some((&x, &y)), |_| {}).await?;
            let served = infer_shared(&mut p, &iplan, &m.weight_shares(), bob.then_some(&xt)).await?;
            // Revealed only to check against: a deployment would not.
            let model = m.reveal_to(&mut p, PartyId::P1).await?;
            Ok((served.output, model))
        }
    })
    .unwrap();
    assert!(out[0].0.is_none() && out[2].0.is_none(), "only Bob learns predictions");
    let (probs, model) = (out[1].0.clone().unwrap(), out[1].1.clone().unwrap());
    let want = model.eval_plain(&xt.clone().into_dyn());
    let err = probs.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    // Sigmoid spline 5·10^-4 plus fixed-point rounding of 30 products.
    assert!(err < 2e-3, "max |served − plaintext| = {err}");
    // A plan whose shapes do not match the shared weights is refused.
    let wrong = TrainPlan { features: 5, ..plan.clone() }.inference_plan(1, OutputPolicy::Probabilities, fx).unwrap();
    let r = run_parties(9, |mut p| {
        let (plan, wrong, x, y) = (plan.clone(), wrong.clone(), x.clone(), y.clone());
        async move {
            let bob = p.id() == PartyId::P1;
            let m = train(&mut p, &plan, bob.then_some((&x, &y)), |_| {}).await?;
            let input = ndarray::ArrayD::zeros(ndarray::IxDyn(&[1, 5]));
            Ok(infer_shared(&mut p, &wrong, &m.weight_shares(), bob.then_some(&input)).await?.output)
        }
    });
    let e = format!("{:?}", r.unwrap_err());
    assert!(e.contains("shared weights of shapes"), "{e}");
}

/// A revealed model exports as ONNX that loads back (float32 weights) with the same outputs,
/// and layers the exporter does not write are refused by name.
#[test]
fn trained_models_export_to_onnx() {
    let (x, y, xt, _) = data("wine.csv", "cultivar", 0.2);
    for arch in [Arch::LogReg, "mlp:16,8".parse::<Arch>().unwrap()] {
        let arch = match arch {
            Arch::Mlp { hidden, .. } => Arch::Mlp { hidden, classes: 3 },
            a => a,
        };
        let y2 = if arch == Arch::LogReg { y.mapv(|v| f64::from(v > 0.5)) } else { y.clone() };
        let plan = TrainPlan {
            config: TrainConfig { arch, epochs: 2, batch: 16, lr: 0.2, seed: 3, report_loss: false },
            samples: x.nrows(),
            features: x.ncols(),
        };
        let m = train_plain(&plan, &x, &y2);
        let bytes = mpc_ml::onnx::export(&m).unwrap();
        let back = mpc_ml::onnx::import(&bytes).unwrap();
        assert_eq!(back.opset, 13);
        let (a, b) = (m.eval_plain(&xt.clone().into_dyn()), back.model.eval_plain(&xt.clone().into_dyn()));
        assert_eq!(a.shape(), b.shape());
        let err = a.iter().zip(b.iter()).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
        // float32 weights: relative 6·10^-8 per weight over ≤ 13 + 16 + 8 terms.
        assert!(err < 1e-5, "{:?}: round trip error {err}", plan.config.arch);
    }
    let conv = mpc_ml::onnx::import_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/onnx/mnist_cnn.onnx"))
        .unwrap()
        .model;
    // Graphs of any registered operator export too: the CNN round-trips through our importer.
    let bytes = mpc_ml::onnx::export(&conv).unwrap();
    let back = mpc_ml::onnx::import(&bytes).unwrap().model;
    let mut g = mpc_proto::prg::Prg::from_u64(9);
    let x = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[3, 1, 28, 28]), |_| {
        (g.next_u64() >> 40) as f64 / 2f64.powi(24)
    });
    let (a, b) = (conv.eval_plain(&x), back.eval_plain(&x));
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = a.iter().zip(b.iter()).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
    assert!(err <= 1e-5 * scale.max(1.0), "CNN round trip error {err} at scale {scale}");
    // An operator without an opset-13 form is refused with its place and reason.
    let gelu = mpc_ml::Model::chain(vec![4], vec![mpc_ml::Layer::of(mpc_ml::model::Act::Gelu)]);
    let e = mpc_ml::onnx::export(&gelu).unwrap_err().to_string();
    assert!(e.contains("layer 0 (gelu) cannot be exported: GELU needs opset 20"), "{e}");
}

/// With `report_loss`, Bob (and only Bob) sees a loss estimate per epoch, and it falls.
#[test]
fn the_loss_estimate_reaches_bob_only() {
    let (x, y, _, _) = data("breast_cancer.csv", "malignant", 0.2);
    let plan = TrainPlan {
        // 455 rows in 7 batches of 65; a slow learning rate so that the fall shows past batch noise.
        config: TrainConfig { arch: Arch::LogReg, epochs: 4, batch: 65, lr: 0.02, seed: 5, report_loss: true },
        samples: x.nrows(),
        features: x.ncols(),
    };
    let out = run_parties(12, |mut p| {
        let (plan, x, y) = (plan.clone(), x.clone(), y.clone());
        async move {
            let bob = p.id() == PartyId::P1;
            let mut losses = vec![];
            train(&mut p, &plan, bob.then_some((&x, &y)), |s| losses.extend(s.loss)).await?;
            Ok(losses)
        }
    })
    .unwrap();
    assert!(out[0].is_empty() && out[2].is_empty(), "only Bob learns the loss");
    let l = &out[1];
    assert_eq!(l.len(), 4, "one estimate per epoch: {l:?}");
    eprintln!("loss per epoch: {l:?}");
    // Squared errors of probabilities lie in [0, 1]; a learning model's fall (noisy, one batch).
    // The initial model predicts 0.5 everywhere: a loss of 0.25 before any step.
    assert!(l.iter().all(|v| (0.0..0.25).contains(v)), "{l:?}");
    assert!(l.windows(2).all(|w| w[1] < w[0]), "{l:?}");
}

/// Training runs under the preprocessing pool: an offline pass fetches every correlation, the
/// online pass then trains with no dealer traffic, to the same model.
#[test]
fn training_runs_under_the_preprocessing_pool() {
    let (x, y, _, _) = data("breast_cancer.csv", "malignant", 0.2);
    let plan = TrainPlan {
        config: TrainConfig { arch: Arch::LogReg, epochs: 1, batch: 64, lr: 0.5, seed: 6, report_loss: true },
        samples: x.nrows(),
        features: x.ncols(),
    };
    let direct = train_private(&plan, &x, &y);
    let pooled = run_parties(7, |mut p| {
        let (plan, x, y) = (plan.clone(), x.clone(), y.clone());
        async move {
            let bob = p.id() == PartyId::P1;
            p.begin_offline()?;
            let m = train(&mut p, &plan, bob.then_some((&x, &y)), |_| {}).await?;
            assert!(m.reveal_to(&mut p, PartyId::P1).await?.is_none(), "nothing is revealed offline");
            let offline = p.stats().total;
            p.begin_online()?;
            let m = train(&mut p, &plan, bob.then_some((&x, &y)), |_| {}).await?;
            let model = m.reveal_to(&mut p, PartyId::P1).await?;
            Ok((model, p.stats().total.since(&offline)))
        }
    })
    .unwrap();
    for (i, (_, online)) in pooled.iter().enumerate() {
        assert_eq!((online.offline_recv, online.offline_sent), (0, 0), "P{i}: dealer traffic online");
    }
    assert_eq!(pooled[1].0.as_ref().unwrap(), &direct, "same model with and without preprocessing");
}
