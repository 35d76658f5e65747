//! Private analytics against the plain f64 statistics of the same (fixed-point-encoded) rows.

use std::path::Path;

use mpc_ml::analytics::{AnalyticsPlan, Histogram, Report, Stat, analyze, analyze_plain, check_data, parse_stats};
use mpc_ml::data::load_csv;
use mpc_proto::{CorrelationMode, FixedPoint, LocalConfig, PartyId, run_in, run_parties};
use ndarray::{Array2, Axis, s};

fn table(name: &str, label: &str) -> (Array2<f64>, Vec<String>) {
    let t = load_csv(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data").join(name), label).unwrap();
    // The label is a column like any other here.
    let x = ndarray::concatenate(Axis(1), &[t.x.view(), t.y.view().insert_axis(Axis(1))]).unwrap();
    let mut cols = t.features.clone();
    cols.push(label.to_string());
    (x, cols)
}

/// The values the parties actually share: rounded to the fixed-point grid.
fn quantize(x: &Array2<f64>, fx: FixedPoint) -> Array2<f64> {
    x.mapv(|v| fx.decode(fx.encode(v).unwrap()))
}

/// Runs the job with Alice contributing `alice` rows and Bob `bob`; returns Bob's report.
fn private(plan: &AnalyticsPlan, alice: Option<Array2<f64>>, bob: Option<Array2<f64>>) -> Report {
    private_in(CorrelationMode::Dealer, plan, alice, bob)
}

/// [`private`] in `mode` (with a dealer, or two parties and no dealer).
fn private_in(
    mode: CorrelationMode,
    plan: &AnalyticsPlan,
    alice: Option<Array2<f64>>,
    bob: Option<Array2<f64>>,
) -> Report {
    let out = run_in(LocalConfig { correlations: mode, ..LocalConfig::new(11) }, |mut p| {
        let (plan, alice, bob) = (plan.clone(), alice.clone(), bob.clone());
        async move {
            let mine = match p.id() {
                PartyId::P0 => alice,
                PartyId::P1 => bob,
                _ => None,
            };
            Ok(analyze(&mut p, &plan, mine.as_ref()).await?)
        }
    })
    .unwrap();
    assert!(out[0].is_none() && out.get(2).is_none_or(Option::is_none), "only Bob learns the statistics");
    out[1].clone().unwrap()
}

/// Relative-or-absolute closeness: the statistics are exact for the encoded data up to f64
/// rounding of the final divisions.
fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: private {x} vs plain {y}");
    }
}

fn compare(got: &Report, want: &Report) {
    assert_eq!(got.count, want.count);
    for (g, w, name) in [
        (&got.sum, &want.sum, "sum"),
        (&got.mean, &want.mean, "mean"),
        (&got.var, &want.var, "var"),
        (&got.std, &want.std, "std"),
        (&got.min, &want.min, "min"),
        (&got.max, &want.max, "max"),
    ] {
        assert_eq!(g.is_some(), w.is_some(), "{name} present in one report only");
        if let (Some(g), Some(w)) = (g, w) {
            close(g, w, 1e-9, name);
        }
    }
    if let (Some(g), Some(w)) = (&got.corr, &want.corr) {
        close(&g.concat(), &w.concat(), 1e-9, "corr");
    }
    assert_eq!(got.histograms, want.histograms);
}

#[test]
fn every_statistic_of_the_wine_data_held_by_bob() {
    let (x, cols) = table("wine.csv", "cultivar");
    let fx = FixedPoint::default();
    let plan = AnalyticsPlan {
        rows: [0, x.nrows()],
        columns: cols,
        stats: parse_stats("count,sum,mean,var,std,min,max,corr").unwrap(),
        histograms: vec!["alcohol:12,13,14".parse().unwrap(), "cultivar:0.5,1.5".parse().unwrap()],
        fixed: fx,
    };
    for mode in [CorrelationMode::Dealer, CorrelationMode::TwoParty] {
        let got = private_in(mode, &plan, None, Some(x.clone()));
        // Exact statistics of the encoded rows...
        compare(&got, &analyze_plain(&plan, &quantize(&x, fx)));
        // ...and within fixed-point rounding of the raw ones (values carry ≤ 2^-17 encoding error).
        let raw = analyze_plain(&plan, &x);
        assert!(got.max_abs_diff(&raw) < 1e-3, "{mode:?} vs raw data: {}", got.max_abs_diff(&raw));
        // Independent truths: 59/71/48 wines per cultivar; a correlation matrix's diagonal is 1.
        assert_eq!(got.histograms[1].counts, vec![59, 71, 48]);
        let corr = got.corr.unwrap();
        assert!(corr.iter().enumerate().all(|(i, r)| (r[i] - 1.0).abs() < 1e-12));
    }
}

#[test]
fn pooled_rows_from_alice_and_bob() {
    let (x, cols) = table("breast_cancer.csv", "malignant");
    let fx = FixedPoint::default();
    // Area columns are in the thousands: scaled down so that sums of squares fit (see the bounds).
    let mut x = x;
    for (j, c) in cols.iter().enumerate() {
        if c.contains("area") {
            x.column_mut(j).mapv_inplace(|v| v / 100.0);
        }
    }
    let (a, b) = (x.slice(s![..200, ..]).to_owned(), x.slice(s![200.., ..]).to_owned());
    let plan = AnalyticsPlan {
        rows: [a.nrows(), b.nrows()],
        columns: cols,
        stats: vec![Stat::Mean, Stat::Std, Stat::Min, Stat::Max, Stat::Corr],
        histograms: vec![Histogram { column: "malignant".into(), edges: vec![0.5] }],
        fixed: fx,
    };
    let got = private(&plan, Some(a), Some(b));
    compare(&got, &analyze_plain(&plan, &quantize(&x, fx)));
    // 212 malignant of 569 in the scikit-learn data set.
    assert_eq!(got.histograms[0].counts, vec![357, 212]);
}

#[test]
fn bounds_are_checked_with_errors_naming_the_column() {
    let (x, cols) = table("breast_cancer.csv", "malignant");
    let plan = AnalyticsPlan {
        rows: [0, x.nrows()],
        columns: cols.clone(),
        stats: vec![Stat::Var],
        histograms: vec![],
        fixed: FixedPoint::default(),
    };
    let e = check_data(&plan, PartyId::P1, &x).unwrap_err().to_string();
    assert!(e.contains("worst_area") && e.contains("scale the column down"), "{e}");
    // Sums and extremes have no such bound.
    let plan2 = AnalyticsPlan { stats: vec![Stat::Mean, Stat::Max], ..plan.clone() };
    check_data(&plan2, PartyId::P1, &x).unwrap();
    // A wrong shape, a histogram of a missing column, decreasing edges, an unknown statistic.
    let e = check_data(&plan2, PartyId::P1, &x.slice(s![..10, ..]).to_owned()).unwrap_err().to_string();
    assert!(e.contains("10 × 31"), "{e}");
    let bad = AnalyticsPlan { histograms: vec!["age:1,2".parse().unwrap()], ..plan2.clone() };
    assert!(bad.validate().unwrap_err().to_string().contains("\"age\": no such column"));
    let bad = AnalyticsPlan { histograms: vec!["mean_radius:2,1".parse().unwrap()], ..plan2.clone() };
    assert!(bad.validate().unwrap_err().to_string().contains("increasing"));
    assert!(parse_stats("mean,median").unwrap_err().contains("unknown statistic \"median\""));
    assert!("radius".parse::<Histogram>().unwrap_err().contains("COLUMN:EDGE"));
    // The private job refuses the same data before anything is sent.
    let r = run_parties(1, |mut p| {
        let (plan, x) = (plan.clone(), x.clone());
        async move {
            let mine = (p.id() == PartyId::P1).then_some(x);
            Ok(analyze(&mut p, &plan, mine.as_ref()).await?)
        }
    });
    assert!(r.is_err());
}

#[test]
fn counted_rounds_and_what_each_party_sends() {
    // Sums only: zero products, one reveal round; P0 sends its d sums to Bob, Bob sends nothing.
    let (x, cols) = table("wine.csv", "cultivar");
    let d = cols.len();
    let plan = AnalyticsPlan {
        rows: [0, x.nrows()],
        columns: cols,
        stats: vec![Stat::Sum],
        histograms: vec![],
        fixed: FixedPoint::default(),
    };
    let out = run_parties(3, |mut p| {
        let (plan, x) = (plan.clone(), x.clone());
        async move {
            let mine = (p.id() == PartyId::P1).then_some(x);
            let before = p.stats().total;
            analyze(&mut p, &plan, mine.as_ref()).await?;
            Ok(p.stats().total.since(&before))
        }
    })
    .unwrap();
    assert_eq!(out[0].online_sent, 8 * d as u64);
    assert_eq!(out[1].online_sent, 0);
    assert_eq!(out[1].rounds, 1);
    assert_eq!(out[2].offline_sent, 0, "no correlations needed");
}
