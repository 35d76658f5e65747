"""A client of a running party node's control API: :class:`Node`, :class:`Job`,
:class:`TrainResult`."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from . import _io, _native
from .errors import (
    JobFailed,
    JobTimeout,
    MembraneError,
    NodeError,
    NotFound,
    PolicyRefused,
    from_status,
)

__all__ = ["Node", "Job", "TrainResult"]

# Job states a job does not leave (`refused`: by a peer's policy, see the node's service).
_FINAL = {"done", "failed", "interrupted", "refused"}
# The allow list publish() sends when none is given: every organisation. A consortium's mesh
# has three organisations and exactly one data owner (Bob, the only one that may propose
# jobs), so "*" offers the model to Bob's organisation and nobody else.
_DEFAULT_ALLOW = ("*",)


class Node:
    """One party node, driven through its control API (HTTP/JSON on 127.0.0.1, bearer token).

    Make one with :meth:`from_config` for a node running on this machine, or get the three of a
    :func:`membrane.local_consortium`. What a method does depends on the node's role: Alice
    (model owner) publishes, Bob (data owner) predicts, trains and analyses; the dealer only
    takes part.
    """

    def __init__(
        self,
        api: str,
        token: str,
        *,
        role: Optional[str] = None,
        name: Optional[str] = None,
        workdir: Optional[Union[str, "os.PathLike[str]"]] = None,
        timeout: float = 60.0,
    ) -> None:
        self.api = api
        self.role = role
        self.name = name
        self.timeout = timeout
        self._token = token
        self._workdir = Path(workdir) if workdir is not None else None

    def __repr__(self) -> str:
        return f"Node(role={self.role!r}, name={self.name!r}, api={self.api!r})"

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, path: Union[str, "os.PathLike[str]"], *, timeout: float = 60.0) -> "Node":
        """The node whose ``node.toml`` is at ``path`` (its API address and token are read
        from it; the config is checked as ``party-node run`` checks it)."""
        role, name, api, token, _data = _native.node_config(str(path))
        return cls(api, token, role=role, name=name, timeout=timeout)

    # ------------------------------------------------------------------ HTTP

    def _request(self, method: str, path: str, body: Optional[str] = None) -> "tuple[int, Any]":
        status, text = _native.call(self.api, self._token, method, path, body, self.timeout)
        try:
            reply = json.loads(text)
        except ValueError:
            reply = text
        return status, reply

    def _call(self, method: str, path: str, body: Optional[str] = None) -> Any:
        status, reply = self._request(method, path, body)
        if 200 <= status < 300:
            return reply
        raise from_status(status, _message(reply))

    # ------------------------------------------------------------------ inspection

    def health(self) -> Dict[str, Any]:
        """``GET /v1/health``: role, uptime, peers and their state, certificates."""
        return self._call("GET", "/v1/health")

    def peers(self) -> List[Dict[str, Any]]:
        """``GET /v1/peers``: each peer's state, RTT and last error."""
        return self._call("GET", "/v1/peers")["peers"]

    def models(self) -> List[Dict[str, Any]]:
        """``GET /v1/models``: the models this node can run, one dict each — ``name``,
        ``owner`` (an organisation; ``shared`` for a privately trained model), ``source``
        (``published`` on Alice's node, ``offered`` by Alice, ``registered`` by hand,
        ``trained``), ``output``, ``input`` (one row's shape), ``plan_hash``, ``layers``; and
        where they apply ``terms`` (Bob: his; Alice: for everyone), ``policy`` and ``usage``
        (Alice), ``remaining_rows`` and ``remaining_rows_today`` (Bob, under quotas)."""
        return self._call("GET", "/v1/models")["models"]

    def jobs(self) -> List[Dict[str, Any]]:
        """Every job record on this node."""
        return self._call("GET", "/v1/jobs")["jobs"]

    def proposals(self) -> List[Dict[str, Any]]:
        """``GET /v1/proposals``: the proposals this node holds for its organisation's
        approval, oldest first — ``job`` (the id to :meth:`approve` or :meth:`refuse`),
        ``peer`` and ``role`` (who asks), ``kind``, ``model``, ``rows``, ``reason`` (why it is
        held), ``since_unix_ms``, ``work`` (the public description of the job)."""
        return self._call("GET", "/v1/proposals")["proposals"]

    def approve(self, id: str, data: Any = None) -> Dict[str, Any]:
        """Approves the held proposal ``id`` (see :meth:`proposals`): this node accepts, and
        the job starts once every node has. ``data`` is Alice's rows when the statistics
        include them (a CSV path or a DataFrame). Raises :class:`InvalidRequest` if this node
        holds no such proposal."""
        body: Dict[str, Any] = {}
        if data is not None:
            if isinstance(data, (str, os.PathLike)):
                body["data"] = str(Path(data).resolve())
            else:
                path = self._file(".csv")
                _io.write_table(data, path)
                body["data"] = str(path)
        return self._call("POST", f"/v1/proposals/{id}/approve", _native.encode("approve", json.dumps(body)))

    def refuse(self, id: str, reason: Optional[str] = None) -> Dict[str, Any]:
        """Refuses the held proposal ``id``; the requester's job ends ``refused`` with
        ``reason`` (its :class:`PolicyRefused` says it)."""
        body = _native.encode("refuse", json.dumps({"reason": reason}))
        return self._call("POST", f"/v1/proposals/{id}/refuse", body)

    def audit(self) -> List[Dict[str, Any]]:
        """``GET /v1/audit``: this node's audit log, oldest first — one dict per decision on a
        peer's proposal and per outcome: ``time_unix_ms``, ``event`` (``proposed``,
        ``decided``, ``outcome``), ``job``, ``peer``, ``role``, ``kind``, ``model``, ``rows``,
        ``decision`` (``accepted``, ``refused``, ``held``, ``approved``, ``done``, ``failed``…),
        ``reason``, ``bytes``. It never holds a value, a path or a token."""
        return self._call("GET", "/v1/audit")["entries"]

    def job(self, id: str) -> "Job":
        """The job ``id`` on this node (raises :class:`NotFound` if it has none)."""
        self._call("GET", f"/v1/jobs/{id}")
        return Job(self, id, kind="unknown")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Waits until this node is connected to both peers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health().get("mesh_ready"):
                    return
            except _native.Unreachable:
                pass
            if time.monotonic() > deadline:
                who = self.role or "the"
                raise MembraneError(f"{who} node at {self.api} did not connect to its peers within {timeout} s")
            time.sleep(0.05)

    # ------------------------------------------------------------------ work files

    def _scratch(self) -> Path:
        """A directory on this machine the node can read from and write to."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="membrane-io-"))
            weakref.finalize(self, shutil.rmtree, str(self._workdir), True)
        self._workdir.mkdir(parents=True, exist_ok=True)
        return self._workdir

    def _file(self, suffix: str) -> Path:
        return self._scratch() / f"{secrets.token_hex(8)}{suffix}"

    # ------------------------------------------------------------------ Alice

    def publish(
        self,
        model: Any,
        name: str,
        output: str = "logits",
        allow: Optional[Sequence[str]] = None,
        example: Any = None,
        *,
        frac_bits: Optional[int] = None,
        nonlinear: Optional[str] = None,
        input_range: Optional["tuple[float, float]"] = None,
        quota_rows: Optional[int] = None,
        quota_rows_per_day: Optional[int] = None,
        max_batch: Optional[int] = None,
        approval: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Alice: publishes ``model`` under ``name`` and offers it to the other organisations
        under a policy; returns the node's answer: ``plan`` (public: architecture and shapes,
        no weights), ``plan_hash``, and ``offered`` (whether each peer's node stored the
        offer; a node that was down gets it when it reconnects).

        ``model`` is the path of an ONNX file or a ``torch.nn.Module`` (exported to ONNX for
        you from ``example``, an input batch; needs torch). ``output`` is what Bob learns:
        ``"logits"``, ``"probabilities"`` or ``"label"`` (argmax only). ``frac_bits``,
        ``nonlinear`` (``auto``, ``helper``, ``fss``, ``fss1``) and ``input_range`` are as for
        ``party-node publish``.

        The policy (``party-node publish --allow …``), checked by Alice's node on every
        request: ``allow`` names the organisations (their ``[[party]] name``) that may request
        predictions, ``"*"`` for any. Default ``["*"]``: in a consortium's mesh only the data
        owner (Bob) proposes jobs, so ``"*"`` means Bob's organisation. ``quota_rows`` (rows
        in all) and ``quota_rows_per_day`` (per UTC day) are per organisation; ``max_batch``
        is the most rows in one job; ``approval="manual"`` holds every request until Alice
        :meth:`approve`\s it (default ``"auto"``). A refused request raises
        :class:`PolicyRefused` at Bob naming the rule. Publishing again replaces the policy.
        """
        path = _io.model_path(model, example, self._scratch(), name)
        policy: Dict[str, Any] = {"allow": list(_DEFAULT_ALLOW) if allow is None else _names(allow)}
        options = {
            "quota_rows": quota_rows,
            "quota_rows_per_day": quota_rows_per_day,
            "max_batch": max_batch,
            "approval": approval,
        }
        policy.update({k: v for k, v in options.items() if v is not None})
        body = {
            "name": name,
            "path": path,
            "output": output,
            "frac_bits": frac_bits,
            "nonlinear": nonlinear,
            "input_range": list(input_range) if input_range is not None else None,
            "policy": policy,
        }
        return self._call("POST", "/v1/models", _native.encode("publish", json.dumps(body)))

    def register(self, name: str, plan: Dict[str, Any]) -> None:
        """Bob, dealer: pins the public ``plan`` Alice's :meth:`publish` returned (not
        needed to predict: the offer brings the plan). A pinned plan is kept: if Alice
        publishes another version, requests are refused naming the fields that differ."""
        self._call("POST", "/v1/plans", _native.encode("register", json.dumps({"name": name, "plan": plan})))

    # ------------------------------------------------------------------ Bob: predict

    def submit_predict(self, name: str, x: Any, *, micro_batch: Optional[int] = None) -> "Job":
        """Bob: proposes a private prediction of the rows ``x`` (numpy array, torch tensor or
        anything ``numpy.asarray`` takes; batch first) with the model ``name``; returns the
        :class:`Job` at once (``job.state`` is ``proposed``, then ``held`` while Alice's
        approval is pending, ``running``…; ``job.result()`` is the output array).
        ``micro_batch`` caps the rows per micro-batch at Bob's node."""
        xin, out = self._file(".npy"), self._file(".npy")
        _io.write_array(x, xin)
        request = {"kind": "predict", "model": name, "input": str(xin), "output": str(out), "micro_batch": micro_batch}
        try:
            job = self._submit(request)
        except BaseException:
            xin.unlink(missing_ok=True)
            raise
        job._files = [xin, out]
        job._decode = lambda record: _io.read_array(out)
        return job

    def predict(
        self, name: str, x: Any, timeout: Optional[float] = None, *, micro_batch: Optional[int] = None
    ) -> np.ndarray:
        """Bob: the model ``name`` evaluated privately on the rows ``x`` — logits,
        probabilities (``[rows, classes]``) or labels (``[rows]``) as the model's owner
        published it. Neither Alice nor the dealer sees ``x``; Bob never sees the weights.

        One call: Bob's node proposes the job to Alice's and the dealer's nodes, which decide
        by their policies. A refusal raises :class:`PolicyRefused` naming the rule (nothing
        was shared); a request held for Alice's approval waits (up to ``timeout``)."""
        return self.submit_predict(name, x, micro_batch=micro_batch).result(timeout)

    # ------------------------------------------------------------------ Bob: train

    def submit_train(
        self,
        df: Any,
        label: str,
        model: str = "logreg",
        epochs: int = 10,
        batch: int = 32,
        lr: float = 0.1,
        test_split: float = 0.2,
        seed: int = 1,
        *,
        reveal: bool = False,
        name: Optional[str] = None,
        report_loss: bool = False,
    ) -> "Job":
        """Bob: starts private training on ``df``; see :meth:`train`."""
        data = self._file(".csv")
        _io.write_table(df, data)
        export = self._file(".onnx") if reveal else None
        req = _io.train_request(
            model=model,
            epochs=epochs,
            batch=batch,
            lr=lr,
            seed=seed,
            data=data,
            label=label,
            test_split=test_split,
            reveal=reveal,
            report_loss=report_loss,
            name=name,
            export=export,
        )
        try:
            job = self._submit(dict(req, kind="train"))
        except BaseException:
            data.unlink(missing_ok=True)
            raise
        job._files = [data] + ([export] if export else [])

        def decode(record: Dict[str, Any]) -> TrainResult:
            metrics = dict(record.get("metrics") or {})
            if not reveal and "test_accuracy" not in metrics and "test_r2" not in metrics:
                metrics.update(self._score_served(metrics["model"], data, label, model, test_split, seed))
            return TrainResult(metrics, export if reveal else None)

        job._decode = decode
        return job

    def train(
        self,
        df: Any,
        label: str,
        model: str = "logreg",
        epochs: int = 10,
        batch: int = 32,
        lr: float = 0.1,
        test_split: float = 0.2,
        seed: int = 1,
        *,
        reveal: bool = False,
        name: Optional[str] = None,
        report_loss: bool = False,
        timeout: Optional[float] = None,
    ) -> "TrainResult":
        """Bob: trains ``model`` (``"logreg"``, ``"linreg"`` or ``"mlp:64,32"``) privately on
        the DataFrame ``df`` (numeric columns; ``label`` is the target), with the three nodes
        computing on secret shares. ``seed`` fixes the initial weights, batch order and the
        train/test split (public).

        The trained model stays secret-shared and serves predictions at once under
        ``result.model``. With ``reveal=True`` it is revealed to Bob (``result.export(path)``
        writes it as ONNX) and ``train_accuracy``/``test_accuracy`` are measured on it, as
        ``party-node local train --reveal-to bob`` does; without, ``test_accuracy`` is measured
        by a private prediction of the held-out rows through the shared model and
        ``train_accuracy`` is ``None``.
        """
        job = self.submit_train(
            df, label, model, epochs, batch, lr, test_split, seed, reveal=reveal, name=name, report_loss=report_loss
        )
        return job.result(timeout)

    def _score_served(self, name: str, data: Path, label: str, arch: str, split: float, seed: int) -> Dict[str, Any]:
        heldout = self._file(".csv")
        y = np.asarray(_native.write_heldout(str(data), label, split, seed, str(heldout)))
        if len(y) == 0:
            return {}
        try:
            rows = np.loadtxt(heldout, delimiter=",", ndmin=2)
        finally:
            heldout.unlink(missing_ok=True)
        out = self.predict(name, rows)
        if arch == "linreg":
            pred = out.reshape(-1)
            r2 = 1.0 - float(((pred - y) ** 2).sum()) / float(((y - y.mean()) ** 2).sum())
            return {"test_r2": r2}
        if out.ndim == 2 and out.shape[1] > 1:
            pred = out.argmax(axis=1)
        else:
            pred = (out.reshape(-1) >= 0.5).astype(np.float64)
        return {"test_accuracy": float((np.abs(pred - y) < 0.5).mean())}

    # ------------------------------------------------------------------ Bob: analyze

    def submit_analyze(
        self,
        df: Any,
        stats: Sequence[str] = ("count", "mean", "std", "min", "max"),
        hist: Optional[Dict[str, Sequence[float]]] = None,
        *,
        frac_bits: Optional[int] = None,
    ) -> "Job":
        """Bob: starts private statistics of ``df``; see :meth:`analyze`."""
        data = self._file(".csv")
        _io.write_table(df, data)
        req = {
            "stats": ",".join(stats) if stats else None,
            "histograms": _io.hist_specs(hist),
            "data": str(data),
            "frac_bits": frac_bits,
        }
        try:
            job = self._submit(dict(req, kind="analyze"))
        except BaseException:
            data.unlink(missing_ok=True)
            raise
        job._files = [data]
        wanted = list(stats)
        job._decode = lambda record: _io.report_frame(record["metrics"], wanted)
        return job

    def analyze(
        self,
        df: Any,
        stats: Sequence[str] = ("count", "mean", "std", "min", "max"),
        hist: Optional[Dict[str, Sequence[float]]] = None,
        *,
        frac_bits: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Bob: statistics of ``df`` computed on secret shares, revealed to Bob only, as a
        pandas DataFrame (statistics as rows — any of ``count, sum, mean, var, std, min, max``
        — columns as columns). ``stats`` may add ``"corr"`` (``result.attrs["corr"]``);
        ``hist={column: edges}`` adds histograms with those public bin edges
        (``result.attrs["histograms"][column]``: ``edges`` and ``edges + 1`` ``counts``).
        Variances are sample variances (``ddof=1``, as pandas)."""
        return self.submit_analyze(df, stats, hist, frac_bits=frac_bits).result(timeout)

    # ------------------------------------------------------------------ submission

    def _submit(self, request: Dict[str, Any]) -> "Job":
        """Submits one request of Bob's as ``POST /v1/requests`` (the node's service: it
        checks the request, proposes the job to its peers, and they accept, hold or refuse it
        by their policies) — the only place jobs are submitted. ``request`` is tagged by
        ``kind``; it is checked against the node's own request type first."""
        body = _native.encode("request", json.dumps({k: v for k, v in request.items() if v is not None}))
        status, reply = self._request("POST", "/v1/requests", body)
        if not 200 <= status < 300:
            raise self._refined(status, _message(reply), request)
        return Job(self, reply["id"], kind=request["kind"])

    def _refined(self, status: int, message: str, request: Dict[str, Any]) -> NodeError:
        """The exception for a refused submission: an unknown model is :class:`NotFound`
        whatever status the node used for it (it checks the model list, not the message)."""
        if request.get("kind") == "predict" and status in (400, 422):
            s, reply = self._request("GET", "/v1/models")
            if 200 <= s < 300 and request["model"] not in {m["name"] for m in reply["models"]}:
                return NotFound(message, status=status)
        return from_status(status, message)


class Job:
    """A job on a node: ``id``, ``state``, ``progress``, ``record``; :meth:`result` waits."""

    def __init__(self, node: Node, id: str, kind: str) -> None:
        self.node = node
        self.id = id
        self.kind = kind
        self._files: List[Path] = []
        self._decode: Callable[[Dict[str, Any]], Any] = lambda record: record

    def __repr__(self) -> str:
        return f"Job({self.kind}, {self.id})"

    @property
    def record(self) -> Dict[str, Any]:
        """The node's job record (state, step, progress, rows, per-layer profile, metrics)."""
        return self.node._call("GET", f"/v1/jobs/{self.id}")

    @property
    def state(self) -> str:
        """``proposed``, ``held``, ``joining``, ``running``, ``done``, ``failed``,
        ``interrupted`` or ``refused``."""
        return self.record["state"]

    @property
    def step(self) -> str:
        """What the job is doing, in the node's words (e.g. ``held by alice (…): alice
        approves each prediction of "m" by hand``)."""
        return self.record["step"]

    @property
    def progress(self) -> Optional[float]:
        """How far the job is, from 0 to 1 (rows for a prediction, steps for training, else
        the job's steps); ``None`` before it starts (``proposed``, ``held``: see
        :attr:`state` and :attr:`step`)."""
        return _progress(self.record)

    def wait(
        self, timeout: Optional[float] = None, *, until: Union[str, Sequence[str], None] = None
    ) -> Dict[str, Any]:
        """Waits until the job is final (through ``proposed``, ``held``, ``joining``,
        ``running``); returns its record. Raises :class:`PolicyRefused` (state ``refused``: a
        node's policy, or a person on a node, refused it; the message names the rule),
        :class:`JobFailed` or :class:`JobTimeout`.

        ``until`` names states to stop at as well (``"held"``: until the job waits for a
        person's approval); the record is then returned, whatever the state."""
        stop = {until} if isinstance(until, str) else set(until or ())
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.01
        while True:
            r = self.record
            state = r["state"]
            if state in stop:
                return r
            if state == "done":
                return r
            if state == "refused":
                raise PolicyRefused(r.get("error") or "refused by a node's policy", job=self.id)
            if state in _FINAL:
                raise JobFailed(r.get("error") or f"the job {state}", job=self.id)
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeout(f"job {self.id} is still {state} after {timeout} s")
            time.sleep(pause)
            pause = min(pause * 1.5, 0.25)

    def result(self, timeout: Optional[float] = None) -> Any:
        """Waits for the job and returns its result: the output array of a prediction, a
        :class:`TrainResult`, or the statistics DataFrame. The job's work files are removed
        once it is final (not on :class:`JobTimeout`: the job may still be reading them, and
        ``result()`` may be called again)."""
        try:
            record = self.wait(timeout)
        except JobTimeout:
            raise
        except BaseException:
            self._remove_files()
            raise
        try:
            return self._decode(record)
        finally:
            self._remove_files()

    def _remove_files(self) -> None:
        for f in self._files:
            if f.suffix != ".onnx":  # a revealed model, for TrainResult.export
                f.unlink(missing_ok=True)


class TrainResult:
    """What private training returns: ``model`` (the name the secret-shared model serves
    predictions under), ``train_accuracy``, ``test_accuracy`` (``train_r2``/``test_r2`` for
    linreg; ``None`` where not measured), ``metrics`` (everything the node recorded)."""

    def __init__(self, metrics: Dict[str, Any], export: Optional[Path]) -> None:
        self.metrics = metrics
        self.model: str = metrics.get("model", "")
        self.train_accuracy: Optional[float] = metrics.get("train_accuracy")
        self.test_accuracy: Optional[float] = metrics.get("test_accuracy", metrics.get("served_test_accuracy"))
        self.train_r2: Optional[float] = metrics.get("train_r2")
        self.test_r2: Optional[float] = metrics.get("test_r2", metrics.get("served_test_r2"))
        self._export = export

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.metrics.items() if k != "seconds"}
        return f"TrainResult({shown})"

    def export(self, path: Union[str, "os.PathLike[str]"]) -> Path:
        """Writes the trained model as ONNX (raw features in, as the training data) — only if
        it was revealed to Bob (``train(..., reveal=True)``)."""
        if self._export is None or not Path(self._export).exists():
            raise PolicyRefused("the trained model stays secret-shared: train with reveal=True to export it")
        dest = Path(path)
        shutil.copyfile(self._export, dest)
        return dest


def _names(allow: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(allow, str):  # allow="bob-clinic" means one organisation, not its letters
        return [allow]
    return [str(a) for a in allow]


def _message(reply: Any) -> str:
    if isinstance(reply, dict) and isinstance(reply.get("error"), str):
        return reply["error"]
    return reply if isinstance(reply, str) else json.dumps(reply)


def _progress(r: Dict[str, Any]) -> Optional[float]:
    if r.get("state") == "done":
        return 1.0
    if r.get("state") in ("proposed", "held", "refused"):
        return None
    rows = r.get("rows")
    if rows and rows.get("total"):
        return rows["done"] / rows["total"]
    if r.get("progress"):
        done, total = r["progress"]
        return done / total if total else None
    if r.get("steps_total"):
        return r["steps_done"] / r["steps_total"]
    return None
