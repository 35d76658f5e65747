"""The dealer-free two-party mode from Python: ``local_consortium(mode="2pc")`` starts Alice's
and Bob's nodes only, and a private prediction through them equals onnxruntime's.

Tolerance: 1e-3 absolute, the Rust suite's for both modes (tests/onnx_models.rs): truncation is
within one ulp per product there (docs/security.md, "The two-party mode")."""

from __future__ import annotations

import numpy as np
import pytest

import membrane
from conftest import fixture, pid_alive

TOL = 1e-3


def test_two_nodes_and_no_dealer_predict_like_onnxruntime():
    model, x, want = fixture("mnist_mlp")
    x, want = x[:4], want[:4]
    with membrane.local_consortium(mode="2pc") as c:
        assert c.dealer is None
        assert len(c.pids) == 2 and all(pid_alive(p) for p in c.pids)
        # Each node's mesh has the other node and nothing else.
        assert [p["role"] for p in c.alice.peers()] == ["bob"]
        assert [p["role"] for p in c.bob.peers()] == ["alice"]
        c.alice.publish(model, name="digits", output="logits")
        got = c.bob.predict("digits", x)
        pids = c.pids
    assert got.shape == want.shape
    err = np.abs(got - want).max()
    assert err <= TOL, f"max abs error {err} > {TOL}"
    assert not any(pid_alive(p) for p in pids), "the nodes stop with the consortium"


def test_an_unknown_mode_is_refused_before_anything_starts():
    with pytest.raises(membrane.MembraneError, match="valid are 'dealer' and '2pc'"):
        membrane.local_consortium(mode="3pc")
