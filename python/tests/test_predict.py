"""Private predictions through three local nodes equal onnxruntime's on the committed fixtures.

Tolerance: 1e-3 absolute on every output, as the Rust suite's (tests/onnx_models.rs): at the
nodes' default 16 fractional bits these models' logits measure within ~5e-4 of plaintext; the
breast-cancer model takes raw features up to ~4,000 against weights of ~1e-3 and is published
with 20 bits (its output is a sigmoid probability).
"""

from __future__ import annotations

import numpy as np
import pytest

import membrane
from conftest import fixture

TOL = 1e-3

CASES = [
    # (fixture, rows used, output policy, fractional bits)
    ("mnist_mlp", 100, "logits", None),
    ("lenet5", 8, "logits", None),
    ("breast_cancer_logreg", 114, "probabilities", 20),
]


@pytest.mark.parametrize("name,rows,policy,frac", CASES)
def test_predictions_equal_onnxruntime(consortium, name, rows, policy, frac):
    model, x, want = fixture(name)
    x, want = x[:rows], want[:rows]
    reply = consortium.alice.publish(model, name=name, output=policy, frac_bits=frac)
    assert reply["plan"]["input"][1:] == list(x.shape[1:])
    got = consortium.bob.predict(name, x)
    assert got.shape == want.shape
    err = np.abs(got - want).max()
    assert err <= TOL, f"{name}: max abs error {err} > {TOL}"


def test_label_policy_and_float32_input(consortium):
    model, x, want = fixture("mnist_mlp")
    consortium.alice.publish(model, name="mlp-label", output="label")
    labels = consortium.bob.predict("mlp-label", x[:20].astype(np.float32))
    assert labels.shape == (20,)
    # Where the top two logits are further apart than the error bound, the label is exact.
    top2 = np.sort(want[:20], axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * TOL
    assert clear.sum() >= 15
    np.testing.assert_array_equal(labels[clear], want[:20].argmax(axis=1)[clear])


def test_submit_predict_reports_progress(consortium):
    model, x, want = fixture("lenet5")
    consortium.alice.publish(model, name="lenet-job")
    job = consortium.bob.submit_predict("lenet-job", x)
    assert len(job.id) == 32
    y = job.result(timeout=120)
    assert job.state == "done" and job.progress == 1.0
    assert np.abs(y - want).max() <= TOL
    rec = job.record
    assert rec["rows"]["total"] == len(x)


def test_simulation_gives_the_same_predictions():
    model, x, want = fixture("lenet5")
    with membrane.simulate(seed=3) as sim:
        sim.publish(model, name="lenet5")
        got = sim.predict("lenet5", x)
        assert sim.last_stats["rows"] == len(x) and sim.last_stats["rounds"] > 0
    assert np.abs(got - want).max() <= TOL


def test_a_timed_out_result_can_be_waited_for_again(consortium):
    model, x, want = fixture("mnist_cnn")
    consortium.alice.publish(model, name="cnn-timeout")
    job = consortium.bob.submit_predict("cnn-timeout", x)
    with pytest.raises(membrane.JobTimeout):
        job.result(timeout=0)
    # The input is still there for the running job, and the result comes on the second wait.
    y = job.result(timeout=120)
    assert np.abs(y - want).max() <= TOL
