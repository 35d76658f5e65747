"""Private training equals the Rust CLI's for the same seed; private statistics equal pandas'."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest

import membrane
from conftest import DATA

# Training on shares rounds each product to 16 fractional bits; the Rust suite allows the
# private model's accuracy to differ from plaintext training by one held-out row (0.01 on
# breast cancer's 114 test rows), and so do these comparisons.
ROW = 0.01 + 1e-9
TRAIN = dict(label="malignant", model="logreg", epochs=5, batch=16, lr=0.5, seed=1)


@pytest.fixture(scope="module")
def breast_cancer():
    return pd.read_csv(DATA / "breast_cancer.csv")


def test_train_equals_the_cli(consortium, breast_cancer, party_node_cli, tmp_path):
    r = consortium.bob.train(breast_cancer, reveal=True, **TRAIN)
    out = subprocess.run(
        [
            party_node_cli,
            "local",
            "train",
            "--data",
            str(DATA / "breast_cancer.csv"),
            "--label",
            "malignant",
            "--model",
            "logreg",
            "--epochs",
            "5",
            "--batch",
            "16",
            "--lr",
            "0.5",
            "--seed",
            "1",
            "--reveal-to",
            "bob",
            "--verify",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    cli = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(r.train_accuracy - cli["train_accuracy"]) <= ROW
    assert abs(r.test_accuracy - cli["test_accuracy"]) <= ROW
    assert abs(r.test_accuracy - cli["plain_test_accuracy"]) <= ROW
    assert r.test_accuracy > 0.85


def test_train_revealed_exports_and_shared_model_serves(consortium, breast_cancer, tmp_path):
    r = consortium.bob.train(breast_cancer, reveal=True, name="bc-revealed", **TRAIN)
    assert r.model == "bc-revealed" and r.test_accuracy > 0.85 and r.train_accuracy > 0.85
    onnx = r.export(tmp_path / "bc.onnx")
    assert onnx.stat().st_size > 0
    # The exported model (raw features in) serves the same rows as a published model.
    consortium.alice.publish(onnx, name="bc-exported", output="probabilities", frac_bits=20)
    x = breast_cancer.drop(columns="malignant").to_numpy()[:10]
    p = consortium.bob.predict("bc-exported", x)
    assert p.shape == (10, 1) and np.all((p >= 0) & (p <= 1))

    shared = consortium.bob.train(breast_cancer, **TRAIN)
    assert shared.train_accuracy is None
    assert abs(shared.test_accuracy - r.test_accuracy) <= ROW
    with pytest.raises(membrane.PolicyRefused):
        shared.export(tmp_path / "no.onnx")
    # Still secret-shared, it serves predictions under its name.
    probs = consortium.bob.predict(shared.model, x)
    assert probs.shape == (10, 1)


def test_simulated_training_equals_the_nodes(consortium, breast_cancer):
    nodes = consortium.bob.train(breast_cancer, reveal=True, **TRAIN)
    with membrane.simulate() as sim:
        sim_r = sim.train(breast_cancer, reveal=True, **TRAIN)
    assert abs(sim_r.test_accuracy - nodes.test_accuracy) <= ROW
    assert abs(sim_r.train_accuracy - nodes.train_accuracy) <= ROW


def _pandas_stats(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"count": df.count(), "mean": df.mean(), "var": df.var(), "std": df.std(), "min": df.min(), "max": df.max()}
    ).T.astype(float)


# 16 fractional bits: each value is rounded to 2^-16 ≈ 1.5e-5 when shared; the statistics are
# exact sums of those (var and std through a revealed sum of squares), so they agree with
# pandas to ~1e-4 relative; min and max are exact up to that rounding.
RTOL, ATOL = 1e-4, 1e-4


def test_analyze_equals_pandas(consortium):
    df = pd.read_csv(DATA / "wine.csv")[["alcohol", "malic_acid", "ash", "hue", "cultivar"]]
    edges = [12.0, 13.0, 14.0]
    got = consortium.bob.analyze(
        df, stats=["count", "mean", "var", "std", "min", "max", "corr"], hist={"alcohol": edges}
    )
    want = _pandas_stats(df)
    assert list(got.index) == ["count", "mean", "var", "std", "min", "max"]
    assert list(got.columns) == list(df.columns)
    pd.testing.assert_frame_equal(got, want.loc[got.index], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got.attrs["corr"].to_numpy(), df.corr().to_numpy(), atol=1e-3)
    h = got.attrs["histograms"]["alcohol"]
    bins = np.digitize(df["alcohol"].to_numpy(), edges)  # bin k: edges[k-1] <= v < edges[k]
    assert h["counts"] == np.bincount(bins, minlength=len(edges) + 1).tolist()


def test_simulated_analyze_equals_pandas():
    df = pd.read_csv(DATA / "diabetes.csv")
    with membrane.simulate() as sim:
        got = sim.analyze(df, stats=["mean", "std", "min", "max"])
    want = _pandas_stats(df)
    pd.testing.assert_frame_equal(got, want.loc[got.index], rtol=RTOL, atol=ATOL)
