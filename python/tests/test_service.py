"""The prediction service end to end on three real nodes: Alice's policy refuses by its rules
(the refusal names the rule and its numbers), a manual approval holds Bob's request until
Alice approves or refuses it, and every decision is in Alice's audit log."""

from __future__ import annotations

import time

import numpy as np
import pytest

import membrane
from conftest import fixture

TOL = 1e-3


def _until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _decided(alice, job):
    """Alice's audit lines deciding on the proposal ``job``."""
    return [e for e in alice.audit() if e["job"] == job and e["event"] == "decided"]


def test_default_policy_offers_the_model_to_bob(consortium):
    model, x, want = fixture("lenet5")
    reply = consortium.alice.publish(model, name="lenet-offered")
    assert all(d["delivered"] for d in reply["offered"]), reply["offered"]
    (mine,) = [m for m in consortium.alice.models() if m["name"] == "lenet-offered"]
    assert mine["source"] == "published" and mine["policy"]["allow"] == ["*"]
    (offer,) = [m for m in consortium.bob.models() if m["name"] == "lenet-offered"]
    assert offer["source"] == "offered" and offer["owner"] == consortium.alice.name
    assert offer["plan_hash"] == reply["plan_hash"] and offer["input"] == list(x.shape[1:])
    assert offer["terms"]["allowed"] is True and offer["terms"]["approval"] == "auto"


def test_allow_list_refuses_other_organisations(consortium):
    model, x, _ = fixture("lenet5")
    consortium.alice.publish(model, name="lenet-elsewhere", allow=["someone-else"])
    with pytest.raises(membrane.PolicyRefused) as e:
        consortium.bob.predict("lenet-elsewhere", x[:2])
    msg = e.value.message
    assert "allow:" in msg and consortium.bob.name in msg, msg
    assert e.value.job and consortium.bob.job(e.value.job).state == "refused"
    (line,) = _decided(consortium.alice, e.value.job)
    assert line["decision"] == "refused" and line["reason"].startswith("allow:")
    assert line["peer"] == consortium.bob.name and line["model"] == "lenet-elsewhere" and line["rows"] == 2


def test_quota_refuses_rows_beyond_it_and_models_show_what_is_left(consortium):
    model, x, want = fixture("lenet5")
    consortium.alice.publish(model, name="lenet-quota", quota_rows=5)
    with pytest.raises(membrane.PolicyRefused, match=r"quota: 5 rows allowed, 0 used, 8 requested"):
        consortium.bob.predict("lenet-quota", x[:8])
    y = consortium.bob.predict("lenet-quota", x[:3])
    assert np.abs(y - want[:3]).max() <= TOL
    (offer,) = [m for m in consortium.bob.models() if m["name"] == "lenet-quota"]
    assert offer["remaining_rows"] == 2 and offer["terms"]["quota_rows"] == 5
    with pytest.raises(membrane.PolicyRefused, match=r"quota: 5 rows allowed, 3 used, 3 requested"):
        consortium.bob.predict("lenet-quota", x[:3])


def test_max_batch_refuses_a_larger_job(consortium):
    model, x, _ = fixture("lenet5")
    consortium.alice.publish(model, name="lenet-batch", max_batch=4)
    with pytest.raises(membrane.PolicyRefused, match=r"max batch: 8 rows requested, at most 4 per job"):
        consortium.bob.predict("lenet-batch", x[:8])


def test_manual_approval_holds_until_alice_approves(consortium):
    model, x, want = fixture("lenet5")
    consortium.alice.publish(model, name="lenet-manual", approval="manual")
    job = consortium.bob.submit_predict("lenet-manual", x)
    assert job.wait(timeout=60, until="held")["state"] == "held"
    assert job.progress is None and "by hand" in job.step
    (held,) = [p for p in consortium.alice.proposals() if p["job"] == job.id]
    assert held["kind"] == "predict" and held["model"] == "lenet-manual" and held["rows"] == len(x)
    assert held["peer"] == consortium.bob.name and held["role"] == "bob"
    # Held is not final: a short wait times out, and the job is still held.
    with pytest.raises(membrane.JobTimeout, match="still held"):
        job.wait(timeout=0.2)
    consortium.alice.approve(job.id)
    assert job.id not in [p["job"] for p in consortium.alice.proposals()]
    y = job.result(timeout=120)
    assert job.state == "done" and np.abs(y - want).max() <= TOL
    decisions = [e["decision"] for e in _decided(consortium.alice, job.id)]
    assert decisions == ["held", "approved"], decisions
    outcomes = [e for e in consortium.alice.audit() if e["job"] == job.id and e["event"] == "outcome"]
    assert [e["decision"] for e in outcomes] == ["done"]


def test_manual_approval_refused_by_alice_names_her_reason(consortium):
    model, x, _ = fixture("lenet5")
    consortium.alice.publish(model, name="lenet-manual-no", approval="manual")
    job = consortium.bob.submit_predict("lenet-manual-no", x[:2])
    _until(lambda: any(p["job"] == job.id for p in consortium.alice.proposals()))
    consortium.alice.refuse(job.id, reason="not this week")
    with pytest.raises(membrane.PolicyRefused, match="not this week"):
        job.result(timeout=60)
    assert job.state == "refused"
    assert [e["decision"] for e in _decided(consortium.alice, job.id)] == ["held", "refused"]
    # Nothing is held any more: approving it now is an error naming the job.
    with pytest.raises(membrane.InvalidRequest, match="no held proposal"):
        consortium.alice.approve(job.id)


def test_audit_lists_every_decision_without_values_or_paths(consortium):
    model, x, _ = fixture("lenet5")
    consortium.alice.publish(model, name="lenet-audit")
    consortium.bob.predict("lenet-audit", x[:2])
    lines = [e for e in consortium.alice.audit() if e.get("model") == "lenet-audit"]
    assert [(e["event"], e["decision"]) for e in lines] == [("decided", "accepted"), ("outcome", "done")]
    assert all(e["peer"] == consortium.bob.name and e["rows"] == 2 for e in lines)
    assert lines[1]["bytes"] > 0
    # Bob's own log has his proposal; the dealer's its decision.
    assert any(e["event"] == "proposed" and e.get("model") == "lenet-audit" for e in consortium.bob.audit())
    assert any(e["event"] == "decided" and e.get("model") == "lenet-audit" for e in consortium.dealer.audit())
    text = repr(consortium.alice.audit()) + repr(consortium.bob.audit())
    assert str(consortium.dir) not in text  # no path of an input, output or config
