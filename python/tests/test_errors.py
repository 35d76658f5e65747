"""Typed exceptions carrying the node's message; the prediction-service contract (issue 17)
against a stand-in server, including the fallback when a node lacks the service."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


def test_node_from_config(consortium):
    node = membrane.Node.from_config(consortium.configs[2])
    assert node.role == "dealer" and node.api == consortium.dealer.api
    assert node.health()["mesh_ready"] is True


# ---------------------------------------------------------------- the service contract


class _Service(BaseHTTPRequestHandler):
    """The prediction service as announced for issue 17: POST /v1/requests (tagged by kind)
    answers 201 {"id"}; GET /v1/jobs/{id} shows the job. Requests for model "quota" are
    refused by a policy rule; others are done with output = 2 * input."""

    jobs: dict = {}
    bodies: list = []

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.bodies.append(body)
        if self.headers.get("authorization") != "Bearer tok":
            return self._send(401, {"error": "wrong bearer token"})
        if self.path != "/v1/requests":
            return self._send(404, {"error": "no such route"})
        if body.get("model") == "missing":
            return self._send(404, {"error": 'no model named "missing"'})
        job = f"{len(self.jobs):032x}"
        if body["model"] == "quota":
            self.jobs[job] = {"id": job, "state": "refused", "error": "quota: 100 rows allowed, 80 used, 40 requested"}
        else:
            np.save(body["output"], 2 * np.load(body["input"]))
            self.jobs[job] = {"id": job, "state": "done", "error": None}
        self._send(201, {"id": job})

    def do_GET(self):
        job = self.jobs.get(self.path.rsplit("/", 1)[-1])
        self._send(200, job) if job else self._send(404, {"error": "no job"})


@pytest.fixture
def service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Service.bodies.clear()
    yield membrane.Node(f"127.0.0.1:{server.server_address[1]}", "tok", role="bob")
    server.shutdown()


def test_service_request_predicts_in_one_call(service):
    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(service.predict("wine", x), 2 * x)
    (body,) = _Service.bodies
    assert body["kind"] == "predict" and body["model"] == "wine"
    assert body["input"].startswith("/") and body["output"].endswith(".npy")


def test_refused_request_raises_policy_refused(service):
    with pytest.raises(membrane.PolicyRefused, match="quota: 100 rows allowed"):
        service.predict("quota", np.zeros((40, 2)))


def test_unknown_model_on_the_service_is_not_a_fallback(service):
    with pytest.raises(membrane.NotFound, match="missing"):
        service.predict("missing", np.zeros((1, 2)))


def test_node_without_the_service_falls_back_to_joint_jobs(consortium):
    model, x, want = fixture("lenet5")
    consortium.alice.publish(model, name="lenet-fallback")
    bob = consortium.bob
    bob._service = None  # ask again
    y = bob.predict("lenet-fallback", x)
    # Today's nodes answer 404 "no such route" to POST /v1/requests: the client submitted the
    # joint job instead, and remembers it.
    assert bob._service is False
    assert np.abs(y - want).max() <= 1e-3


def test_a_lone_node_without_the_service_says_who_must_join(consortium):
    model, x, _ = fixture("lenet5")
    consortium.alice.publish(model, name="lenet-lone")
    bob = membrane.Node.from_config(consortium.configs[1])  # knows no other node
    with pytest.raises(membrane.MembraneError, match="every organisation must submit"):
        bob.predict("lenet-lone", x)
