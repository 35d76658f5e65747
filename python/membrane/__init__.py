"""Membrane: machine learning on data and models their owners do not show each other.

A model owner (Alice) and a data owner (Bob) each run a party node; a third node (the dealer)
hands out correlated randomness. Models and data are split into secret shares and evaluated
jointly; only Bob learns outputs, and only what the model's output policy allows.

* :class:`Node` — a running node, through its control API (``Node.from_config("node.toml")``);
* :func:`local_consortium` — three nodes on this machine (processes, QUIC, mutual TLS);
* :func:`simulate` — the three parties in this process (no ports, no processes);
* exceptions in :mod:`membrane.errors`, all subclasses of :class:`MembraneError`.
"""

from __future__ import annotations

from .client import Job, Node, TrainResult
from .errors import (
    AuthError,
    Conflict,
    InvalidRequest,
    JobFailed,
    JobTimeout,
    MembraneError,
    NodeError,
    NotFound,
    PolicyRefused,
    Unavailable,
    Unreachable,
)
from .local import LocalConsortium, local_consortium
from .simulate import Simulation, simulate

__version__ = "0.1.0"

__all__ = [
    "Node",
    "Job",
    "TrainResult",
    "LocalConsortium",
    "local_consortium",
    "Simulation",
    "simulate",
    "MembraneError",
    "NodeError",
    "AuthError",
    "NotFound",
    "InvalidRequest",
    "PolicyRefused",
    "Conflict",
    "Unavailable",
    "Unreachable",
    "JobFailed",
    "JobTimeout",
]
