"""Shared fixtures: the repository's committed ONNX models and data, one local consortium per
test session (starting three nodes takes about a second; each test publishes what it needs)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import membrane

ROOT = Path(__file__).resolve().parents[2]
ONNX = ROOT / "fixtures" / "onnx"
DATA = ROOT / "fixtures" / "data"


def fixture(name: str):
    """(model path, input, onnxruntime's reference output) of a committed fixture."""
    return (
        ONNX / f"{name}.onnx",
        np.load(ONNX / f"{name}.input.npy"),
        np.load(ONNX / f"{name}.logits.npy"),
    )


@pytest.fixture(scope="session")
def consortium():
    with membrane.local_consortium() as c:
        yield c


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="session")
def party_node_cli():
    """The party-node binary for comparisons with the CLI: $MEMBRANE_PARTY_NODE (CI sets it
    to the binary it built); skipped where it is not set."""
    path = os.environ.get("MEMBRANE_PARTY_NODE")
    if not path:
        pytest.skip("set MEMBRANE_PARTY_NODE to a party-node binary to compare with the CLI")
    assert Path(path).is_file(), f"MEMBRANE_PARTY_NODE={path} does not exist"
    return path
