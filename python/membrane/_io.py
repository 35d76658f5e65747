"""Arrays, DataFrames and models to and from the files the nodes read and write.

Large data never travels in a JSON body: arrays are written as ``.npy`` and tables as ``.csv``
in a work directory on the node's machine (the control API is loopback-only), and the node is
given their absolute paths.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

# What a node reads from .npy without conversion (see party-node's README: Bob's input).
_NODE_DTYPES = {np.dtype("<f4"), np.dtype("<f8"), np.dtype("<i4"), np.dtype("<i8"), np.dtype("u1")}


def is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def is_torch_module(m: Any) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(m, torch.nn.Module)


def as_array(x: Any) -> np.ndarray:
    """A numpy array from an array-like or a torch tensor, batch first."""
    if is_torch_tensor(x):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim == 0:
        raise ValueError("predict needs a batch of rows (an array with at least one dimension)")
    if a.dtype not in _NODE_DTYPES:
        if a.dtype.kind not in "biuf":
            raise ValueError(f"input of dtype {a.dtype}: give numbers (float or integer)")
        # Exact for bool, small ints, float16 and big-endian numbers; float64 keeps every
        # value the fixed point can encode.
        a = a.astype("<f8")
    return np.ascontiguousarray(a)


def write_array(x: Any, path: Path) -> int:
    """Writes ``x`` as a C-order .npy the node reads; returns the number of rows."""
    a = as_array(x)
    np.save(path, a, allow_pickle=False)
    return int(a.shape[0])


def read_array(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


Table = Any  # a pandas DataFrame, or a mapping of column name to 1-D array


def columns_of(df: Table) -> List[str]:
    if hasattr(df, "columns"):
        return [str(c) for c in df.columns]
    return [str(c) for c in df.keys()]


def write_table(df: Table, path: Path) -> None:
    """Writes a DataFrame (or a mapping of column -> values) as a CSV with a header row, every
    column numeric, as the nodes read it."""
    if hasattr(df, "to_csv"):
        bad = [str(c) for c, t in df.dtypes.items() if t.kind not in "biuf"]
        if bad:
            raise ValueError(f"columns {bad} are not numeric: encode them as numbers first")
        df.to_csv(path, index=False, float_format="%.17g")
        return
    if not isinstance(df, Mapping):
        raise TypeError("give a pandas DataFrame or a mapping of column name to values")
    names = columns_of(df)
    cols = [np.asarray(df[k], dtype=np.float64).reshape(-1) for k in df.keys()]
    if not cols or len({len(c) for c in cols}) != 1:
        raise ValueError("every column needs the same number of values")
    for n in names:
        if "," in n:
            raise ValueError(f"column name {n!r} contains a comma")
    data = np.column_stack(cols)
    np.savetxt(path, data, delimiter=",", header=",".join(names), comments="", fmt="%.17g")


def export_torch(model: Any, example: Any, path: Path) -> None:
    """Exports a ``torch.nn.Module`` to ONNX for publishing (needs the ``torch`` extra)."""
    import torch

    if example is None:
        raise ValueError("publishing a torch.nn.Module needs `example=`: an input batch of the right shape")
    if not is_torch_tensor(example):
        example = torch.as_tensor(np.asarray(example, dtype=np.float32))
    model = model.eval()
    # The TorchScript exporter: no onnxscript needed, and the graphs it writes are the ones the
    # importer is tested on most (fixtures/onnx: both exporters). Newer torch warns about it.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (example,), str(path), input_names=["input"], output_names=["output"], opset_version=17, dynamo=False
        )


def model_path(model: Union[str, "os.PathLike[str]", Any], example: Any, workdir: Path, name: str) -> str:
    """An absolute ONNX path for ``model``: a path as given, or a torch module exported."""
    if isinstance(model, (str, os.PathLike)):
        p = Path(model).expanduser().resolve()
        if not p.is_file():
            raise FileNotFoundError(f"model file {p} not found")
        return str(p)
    if is_torch_module(model):
        out = workdir / f"{name}.onnx"
        export_torch(model, example, out)
        return str(out)
    raise TypeError("model must be the path of an ONNX file or a torch.nn.Module")


def hist_specs(hist: Optional[Mapping[str, Sequence[float]]]) -> List[str]:
    return [f"{col}:{','.join(repr(float(e)) for e in edges)}" for col, edges in (hist or {}).items()]


def report_frame(report: Dict[str, Any], stats: Sequence[str]) -> Any:
    """Bob's analytics report as a DataFrame: one row per statistic, one column per column.
    ``attrs["corr"]`` holds the correlation matrix (if asked), ``attrs["histograms"]`` maps a
    column to ``{"edges": […], "counts": […]}``."""
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("analyze() returns a pandas DataFrame: pip install pandas (or the [pandas] extra)") from e
    cols = report["columns"]
    rows = {}
    for s in stats:
        if s == "count":
            rows["count"] = [float(report["count"])] * len(cols)
        elif s in report and s != "corr":
            rows[s] = report[s]
    # + 0.0: a statistic that rounds to zero from below shows as 0, not -0.
    df = pd.DataFrame.from_dict(rows, orient="index", columns=cols) + 0.0
    if report.get("corr") is not None:
        df.attrs["corr"] = pd.DataFrame(report["corr"], index=cols, columns=cols)
    df.attrs["histograms"] = {
        h["column"]: {"edges": list(h["edges"]), "counts": list(h["counts"])} for h in report.get("histograms", [])
    }
    df.attrs["count"] = report["count"]
    return df


def train_request(
    *,
    model: str,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    data: Path,
    label: str,
    test_split: float,
    reveal: bool,
    report_loss: bool,
    name: Optional[str],
    export: Optional[Path],
) -> Dict[str, Any]:
    """Bob's training parameters as party-node's ``TrainRequest`` (the node and the in-process
    simulation take the same body)."""
    return {
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
