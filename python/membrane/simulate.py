"""``membrane.simulate()``: the three parties inside this process, for notebooks and tests."""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, Optional, Sequence, Type

import numpy as np

from . import _io, _native
from .client import TrainResult
from .errors import NotFound

__all__ = ["Simulation", "simulate"]


class Simulation:
    """Alice, Bob and the dealer run in this process over an in-memory transport: no ports,
    no processes, no certificates. The same protocols, plans and input checks as the nodes, so
    the same results (up to the fixed-point rounding the protocols randomise); a run is
    reproducible for a given ``seed``.

    It has the calls of the three nodes in one object: :meth:`publish` (Alice's),
    :meth:`predict`, :meth:`train` and :meth:`analyze` (Bob's). What it does not have: the
    nodes' policies, warm pools and job records, and trained models serving predictions (train
    with ``reveal=True`` and publish ``result.export(…)`` instead).
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.dir = Path(tempfile.mkdtemp(prefix="membrane-sim-"))
        self._models: Dict[str, Dict[str, Any]] = {}
        self.last_stats: Dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Simulation(seed={self.seed}, models={sorted(self._models)})"

    def _file(self, suffix: str) -> Path:
        return self.dir / f"{secrets.token_hex(8)}{suffix}"

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
    ) -> None:
        """Alice's :meth:`membrane.Node.publish`, in process (``allow`` and the other policy
        options are accepted and ignored: a simulation has one user and no policies)."""
        # An ONNX file is read where it is (weights kept beside it, `model.onnx.data`, too);
        # a torch module is exported into the simulation's directory.
        self._models[name] = {
            "model": _io.model_path(model, example, self.dir, name),
            "policy": output,
            "frac_bits": frac_bits,
            "nonlinear": nonlinear,
            "input_range": list(input_range) if input_range is not None else None,
        }

    def predict(self, name: str, x: Any) -> np.ndarray:
        """Bob's :meth:`membrane.Node.predict`, in process. ``last_stats`` then holds Bob's
        rounds and bytes."""
        if name not in self._models:
            raise NotFound(f"no model named {name!r} in this simulation (publish it first)")
        xin, out = self._file(".npy"), self._file(".npy")
        try:
            _io.write_array(x, xin)
            stats = _native.simulate_predict(input=str(xin), output=str(out), seed=self.seed, **self._models[name])
            self.last_stats = json.loads(stats)
            return _io.read_array(out)
        finally:
            xin.unlink(missing_ok=True)
            out.unlink(missing_ok=True)

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
    ) -> TrainResult:
        """Bob's :meth:`membrane.Node.train`, in process: the same metrics (revealed:
        ``train_accuracy``/``test_accuracy`` of the revealed model; shared:
        ``test_accuracy`` of a private prediction of the held-out rows)."""
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
            metrics = json.loads(_native.simulate_train(_native.encode("train", json.dumps(req)), self.seed))
        finally:
            data.unlink(missing_ok=True)
        metrics.setdefault("model", name or "simulated")
        return TrainResult(metrics, export)

    def analyze(
        self,
        df: Any,
        stats: Sequence[str] = ("count", "mean", "std", "min", "max"),
        hist: Optional[Dict[str, Sequence[float]]] = None,
        *,
        frac_bits: Optional[int] = None,
        alice_df: Any = None,
    ) -> Any:
        """Bob's :meth:`membrane.Node.analyze`, in process; ``alice_df`` pools Alice's rows
        (same columns) into the statistics."""
        data = self._file(".csv")
        _io.write_table(df, data)
        alice = None
        if alice_df is not None:
            alice = self._file(".csv")
            _io.write_table(alice_df, alice)
        req = {
            "stats": ",".join(stats) if stats else None,
            "histograms": _io.hist_specs(hist),
            "data": str(data),
            "frac_bits": frac_bits,
            "alice_rows": 0 if alice_df is None else len(alice_df),
        }
        try:
            body = _native.encode("analyze", json.dumps(req))
            report = json.loads(_native.simulate_analyze(body, str(alice) if alice else None, self.seed))
        finally:
            data.unlink(missing_ok=True)
            if alice:
                alice.unlink(missing_ok=True)
        return _io.report_frame(report, list(stats))

    def close(self) -> None:
        """Removes the simulation's work files."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Simulation":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


def simulate(seed: int = 0) -> Simulation:
    """An in-process consortium (see :class:`Simulation`)::

    with membrane.simulate() as sim:
        sim.publish("model.onnx", name="m")
        y = sim.predict("m", x)
    """
    return Simulation(seed)
