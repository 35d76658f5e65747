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

# Job states a job does not leave (`refused`: by a node's policy, the prediction service).
_FINAL = {"done", "failed", "interrupted", "refused"}


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
        # Nodes of the other organisations this client may submit to itself while the nodes
        # have no prediction service (the local consortium sets them): role -> Node.
        self._joiners: Dict[str, "Node"] = {}
        # Whether the node serves `POST /v1/requests` (None: not asked yet).
        self._service: Optional[bool] = None

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
        """The models this node knows (published here, or registered/trained): name, layers,
        input and output."""
        return self._call("GET", "/v1/models")["models"]

    def jobs(self) -> List[Dict[str, Any]]:
        """Every job record on this node."""
        return self._call("GET", "/v1/jobs")["jobs"]

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
        approval: Optional[bool] = None,
    ) -> Dict[str, Any]:
        """Alice: publishes ``model`` under ``name``; returns the node's answer (the public
        ``plan``: architecture and shapes, no weights).

        ``model`` is the path of an ONNX file or a ``torch.nn.Module`` (exported to ONNX for
        you from ``example``, an input batch; needs torch). ``output`` is what Bob learns:
        ``"logits"``, ``"probabilities"`` or ``"label"`` (argmax only). ``allow`` names the
        organisations that may use the model (``["*"]`` for any); it and the quota options are
        the node's request policy (the prediction service) and are sent only when given.
        ``frac_bits``, ``nonlinear`` (``auto``, ``helper``, ``fss``, ``fss1``) and
        ``input_range`` are as for ``party-node publish``.

        In a local consortium the plan is also registered on Bob's and the dealer's nodes.
        """
        path = _io.model_path(model, example, self._scratch(), name)
        base = {
            "name": name,
            "path": path,
            "output": output,
            "frac_bits": frac_bits,
            "nonlinear": nonlinear,
            "input_range": list(input_range) if input_range is not None else None,
        }
        body = json.loads(_native.encode("publish", json.dumps(base)))
        policy = {
            "allow": list(allow) if allow is not None else None,
            "quota_rows": quota_rows,
            "quota_rows_per_day": quota_rows_per_day,
            "max_batch": max_batch,
            "approval": approval,
        }
        body.update({k: v for k, v in policy.items() if v is not None})
        reply = self._call("POST", "/v1/models", json.dumps(body))
        for peer in self._joiners.values():
            peer.register(name, reply["plan"])
        return reply

    def register(self, name: str, plan: Dict[str, Any]) -> None:
        """Bob, dealer: registers the public ``plan`` Alice's :meth:`publish` returned."""
        self._call("POST", "/v1/plans", _native.encode("register", json.dumps({"name": name, "plan": plan})))

    # ------------------------------------------------------------------ Bob: predict

    def submit_predict(self, name: str, x: Any) -> "Job":
        """Bob: starts a private prediction of the rows ``x`` (numpy array, torch tensor or
        anything ``numpy.asarray`` takes; batch first) with the model ``name``; returns the
        :class:`Job` (``job.result()`` is the output array)."""
        xin, out = self._file(".npy"), self._file(".npy")
        rows = _io.write_array(x, xin)
        job = self._submit(
            {"kind": "predict", "model": name, "input": str(xin), "output": str(out)},
            {"model": name, "batch": rows},
        )
        job._files = [xin, out]
        job._decode = lambda record: _io.read_array(out)
        return job

    def predict(self, name: str, x: Any, timeout: Optional[float] = None) -> np.ndarray:
        """Bob: the model ``name`` evaluated privately on the rows ``x`` — logits,
        probabilities (``[rows, classes]``) or labels (``[rows]``) as the model's owner
        published it. Neither Alice nor the dealer sees ``x``; Bob never sees the weights."""
        return self.submit_predict(name, x).result(timeout)

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
        req = {
            "arch": model,
            "epochs": epochs,
            "batch": batch,
            "lr": lr,
            "seed": seed,
            "data": str(data),
            "label": label,
            "test_split": test_split,
            "reveal_to_bob": reveal,
            "report_loss": report_loss,
            "name": name,
            "export": str(export) if export else None,
        }
        req = json.loads(_native.encode("train", json.dumps(req)))
        samples, features, classes = _native.train_shape(str(data), label, model, test_split, seed)
        others = dict(req, data=None, label=None, export=None, samples=samples, features=features, classes=classes)
        job = self._submit(dict(req, kind="train"), {"train": others})
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
        req = json.loads(_native.encode("analyze", json.dumps(req)))
        job = self._submit(dict(req, kind="analyze"), None)
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

    def _submit(self, request: Dict[str, Any], joiner: Optional[Dict[str, Any]]) -> "Job":
        """Submits one request of Bob's — the only place jobs are submitted.

        First as the prediction service's ``POST /v1/requests`` (the node proposes the job to
        its peers, who accept, hold or refuse it by their policies). A node without the
        service answers 404 "no such route"; then the job is submitted to every node with the
        same id (``POST /v1/jobs``), Alice's and the dealer's through the nodes this client
        was given (a local consortium) with ``joiner``'s fields.
        """
        if self._service is not False:
            body = _native.encode("request", json.dumps(request))
            status, reply = self._request("POST", "/v1/requests", body)
            if 200 <= status < 300:
                self._service = True
                return Job(self, reply["id"], kind=request["kind"])
            if not (status == 404 and _message(reply).startswith("no such route")):
                raise self._refined(status, _message(reply), request)
            self._service = False
        return self._submit_jobs(request, joiner)

    def _submit_jobs(self, request: Dict[str, Any], joiner: Optional[Dict[str, Any]]) -> "Job":
        kind = request["kind"]
        others = [self._joiners[r] for r in ("alice", "dealer") if r in self._joiners]
        if len(others) < 2:
            raise MembraneError(
                f"this node ({self.api}) has no prediction service (POST /v1/requests), so every "
                f"organisation must submit the {kind} job itself; this client knows no other nodes "
                "(use membrane.local_consortium(), or submit with `party-node` on each node)"
            )
        fields = {k: v for k, v in request.items() if k != "kind"}
        job_id = secrets.token_hex(16)
        if kind == "predict":
            mine = {"id": job_id, "kind": kind, **fields}
        else:
            mine = {"id": job_id, "kind": kind, kind: fields}
        mine = json.loads(_native.encode("job", json.dumps(mine)))

        def join() -> None:
            extra = dict(joiner or {})
            if kind == "analyze":
                # Alice and the dealer join with the public plan Bob's node derived.
                extra = {"analyze": {"plan": self._call("GET", f"/v1/jobs/{job_id}")["plan"]["plan"]}}
            body = _native.encode("job", json.dumps({"id": job_id, "kind": kind, **extra}))
            for node in others:
                node._call("POST", "/v1/jobs", body)

        # Bob's node checks his request first (model known, input readable, data valid): a
        # refusal then names his problem, and nobody joins a job that cannot start. The others
        # join within the nodes' join timeout.
        self._submit_own(mine, request)
        join()
        return Job(self, job_id, kind=kind)

    def _submit_own(self, body: Dict[str, Any], request: Dict[str, Any]) -> None:
        status, reply = self._request("POST", "/v1/jobs", json.dumps(body))
        if not 200 <= status < 300:
            raise self._refined(status, _message(reply), request)

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
    def progress(self) -> Optional[float]:
        """How far the job is, from 0 to 1 (rows for a prediction, steps for training, else
        the job's steps); ``None`` before it starts."""
        return _progress(self.record)

    def wait(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Waits until the job is final; returns its record. Raises :class:`JobFailed`,
        :class:`PolicyRefused` or :class:`JobTimeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.01
        while True:
            r = self.record
            state = r["state"]
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


def _message(reply: Any) -> str:
    if isinstance(reply, dict) and isinstance(reply.get("error"), str):
        return reply["error"]
    return reply if isinstance(reply, str) else json.dumps(reply)


def _progress(r: Dict[str, Any]) -> Optional[float]:
    if r.get("state") == "done":
        return 1.0
    rows = r.get("rows")
    if rows and rows.get("total"):
        return rows["done"] / rows["total"]
    if r.get("progress"):
        done, total = r["progress"]
        return done / total if total else None
    if r.get("steps_total"):
        return r["steps_done"] / r["steps_total"]
    return None
