"""Typed exceptions carrying the node's message; request bodies checked against the node's own
types before they are sent. (Refusals by a policy: test_service.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

import membrane
from conftest import fixture


def test_bad_token_raises_auth_error(consortium):
    intruder = membrane.Node(consortium.bob.api, "not-the-token", role="bob")
    with pytest.raises(membrane.AuthError) as e:
        intruder.models()
    assert e.value.status == 401 and "wrong bearer token" in e.value.message
    assert isinstance(e.value, membrane.MembraneError)


def test_unknown_model_raises_not_found(consortium):
    with pytest.raises(membrane.NotFound) as e:
        consortium.bob.predict("no-such-model", np.zeros((2, 4)))
    assert "no-such-model" in e.value.message  # the node's own words


def test_bad_input_raises_invalid_request(consortium):
    model, x, _ = fixture("lenet5")
    consortium.alice.publish(model, name="lenet-errors")
    with pytest.raises(membrane.InvalidRequest) as e:
        consortium.bob.predict("lenet-errors", np.zeros((2, 5)))
    assert e.value.status == 422 and "expects" in e.value.message or "shape" in e.value.message
    with pytest.raises(membrane.InvalidRequest) as e:
        consortium.bob.predict("lenet-errors", np.full_like(x, np.nan))
    assert "NaN" in e.value.message


def test_only_alice_publishes(consortium):
    model, _, _ = fixture("lenet5")
    with pytest.raises(membrane.InvalidRequest) as e:
        consortium.bob.publish(model, name="x")
    assert "alice" in e.value.message


def test_unreachable_node():
    node = membrane.Node("127.0.0.1:9", "t", timeout=2)
    with pytest.raises(membrane.Unreachable):
        node.health()


def test_misspelt_field_is_refused_by_the_shared_request_type():
    from membrane import _native

    with pytest.raises(membrane.MembraneError, match="unknown field `ouput`"):
        _native.encode("publish", json.dumps({"name": "m", "path": "/m.onnx", "ouput": "label"}))
    with pytest.raises(membrane.MembraneError, match="unknown field `modle`"):
        _native.encode("request", json.dumps({"kind": "predict", "modle": "m", "input": "/a", "output": "/b"}))
    with pytest.raises(membrane.MembraneError, match="unknown field `quota`"):
        _native.encode("publish", json.dumps({"name": "m", "path": "/m.onnx", "policy": {"allow": ["*"], "quota": 5}}))
    with pytest.raises(membrane.MembraneError, match="unknown variant `later`"):
        _native.encode(
            "publish", json.dumps({"name": "m", "path": "/m.onnx", "policy": {"allow": [], "approval": "later"}})
        )
    with pytest.raises(membrane.MembraneError, match="unknown variant `fit`"):
        _native.encode("request", json.dumps({"kind": "fit", "data": "/d.csv"}))
    # The job type of POST /v1/jobs is tagged by kind too: a body without it is refused.
    with pytest.raises(membrane.MembraneError, match="missing field `kind`"):
        _native.encode("job", json.dumps({"model": "m", "batch": 3}))
    job = json.loads(_native.encode("job", json.dumps({"kind": "predict", "model": "m", "batch": 3})))
    assert job["kind"] == "predict" and job["batch"] == 3


def test_a_bad_policy_is_refused_by_alices_node(consortium):
    model, _, _ = fixture("lenet5")
    with pytest.raises(membrane.InvalidRequest, match="organisation names"):
        consortium.alice.publish(model, name="lenet-bad-policy", allow=["Not A Name"])
    with pytest.raises(membrane.InvalidRequest, match="max_batch"):
        consortium.alice.publish(model, name="lenet-bad-policy", max_batch=0)


def test_node_from_config(consortium):
    node = membrane.Node.from_config(consortium.configs[2])
    assert node.role == "dealer" and node.api == consortium.dealer.api
    assert node.health()["mesh_ready"] is True
