"""``membrane.local_consortium()``: the nodes of a consortium on this machine, one per organisation
(three with a dealer; two in the dealer-free ``mode="2pc"``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, List, Optional, Type

from . import _native
from .client import Node
from .errors import MembraneError

__all__ = ["LocalConsortium", "local_consortium"]

_ROLES = ("alice", "bob", "dealer")
_MODES = ("dealer", "2pc")


class LocalConsortium:
    """Three party nodes — ``alice``, ``bob``, ``dealer``, each a :class:`~membrane.Node` — as
    separate processes talking QUIC with mutual TLS on loopback (free ports, pinned
    self-signed certificates, a temporary directory). With ``mode="2pc"`` only ``alice`` and
    ``bob`` run (``dealer`` is ``None``): they make every correlation themselves by oblivious
    transfer (docs/security.md, "The two-party mode").

    Use it as a context manager: the nodes start on entry and are stopped on exit, also when
    the body raises. Each node runs ``python -m membrane._node run --config …`` (the node is
    linked into the package's native module) and also stops by itself if this process dies
    without stopping it (it watches its standard input).
    """

    def __init__(
        self,
        *,
        keep: bool = False,
        timeout: float = 30.0,
        log_level: Optional[str] = None,
        mode: str = "dealer",
    ) -> None:
        if mode not in _MODES:
            raise MembraneError(f"mode {mode!r}: valid are 'dealer' and '2pc'")
        self.mode = mode
        self.roles = _ROLES if mode == "dealer" else _ROLES[:2]
        self.dir = Path(tempfile.mkdtemp(prefix="membrane-local-"))
        self.keep = keep
        self.timeout = timeout
        self.log_level = log_level
        self.procs: List[subprocess.Popen] = []
        self.configs: List[str] = []
        self._logs: List[IO[bytes]] = []
        self.alice: Node
        self.bob: Node
        self.dealer: Optional[Node] = None
        # Stops the nodes even if the consortium is dropped without __exit__ (or at exit).
        self._finalizer = weakref.finalize(self, _stop, self.procs, self._logs, self.dir, keep)

    def __repr__(self) -> str:
        return f"LocalConsortium({self.dir}, pids={self.pids})"

    @property
    def pids(self) -> List[int]:
        """The nodes' process ids (alice, bob, and the dealer's in the dealer mode)."""
        return [p.pid for p in self.procs]

    def start(self) -> "LocalConsortium":
        """Writes the configs, starts the nodes and waits until their mesh is up."""
        try:
            self.configs = _native.write_consortium(str(self.dir), self.mode)
            env = dict(os.environ)
            if self.log_level:
                env["MEMBRANE_LOG"] = self.log_level
            for role, cfg in zip(self.roles, self.configs):
                log = open(self.dir / f"{role}.log", "wb")
                self._logs.append(log)
                proc = subprocess.Popen(
                    [sys.executable, "-m", "membrane._node", "run", "--config", cfg, "--watch-stdin"],
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    # Not in the caller's process group: a Ctrl-C in a notebook interrupts the
                    # cell, and the consortium (not the signal) stops the nodes.
                    start_new_session=True,
                )
                self.procs.append(proc)
            nodes = []
            for role, cfg in zip(self.roles, self.configs):
                _r, name, api, token, data = _native.node_config(cfg)
                nodes.append(Node(api, token, role=role, name=name, workdir=self.dir / "io"))
            self.alice, self.bob = nodes[0], nodes[1]
            self.dealer = nodes[2] if len(nodes) > 2 else None
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        for role, proc, node in zip(self.roles, self.procs, (self.alice, self.bob, self.dealer)):
            while True:
                code = proc.poll()
                if code is not None:
                    raise MembraneError(f"the {role} node exited with status {code}:\n{self.log_tail(role)}")
                try:
                    if node.health().get("mesh_ready"):
                        break
                except _native.Unreachable:
                    pass
                if time.monotonic() > deadline:
                    raise MembraneError(
                        f"the local nodes did not connect within {self.timeout} s; {role}'s log:\n{self.log_tail(role)}"
                    )
                time.sleep(0.05)

    def log_tail(self, role: str, lines: int = 20) -> str:
        """The last ``lines`` lines of a node's log."""
        try:
            text = (self.dir / f"{role}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stops the nodes (SIGTERM, then SIGKILL after 10 s) and removes the directory unless
        ``keep``. Safe to call twice."""
        self._finalizer()

    def __enter__(self) -> "LocalConsortium":
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()


def _stop(procs: List[subprocess.Popen], logs: List[IO[bytes]], directory: Path, keep: bool) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10.0
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stdin:
            p.stdin.close()
    for log in logs:
        log.close()
    if not keep:
        shutil.rmtree(directory, ignore_errors=True)


def local_consortium(
    *, keep: bool = False, timeout: float = 30.0, log_level: Optional[str] = None, mode: str = "dealer"
) -> LocalConsortium:
    """Local nodes for trying Membrane on one machine::

        with membrane.local_consortium() as c:
            c.alice.publish("model.onnx", name="digits", output="label")
            labels = c.bob.predict("digits", images)

    The nodes start on entering the ``with`` block and stop when it ends (also on an
    exception). ``keep=True`` keeps the directory (configs, logs, stores) for inspection;
    ``log_level`` sets the nodes' ``MEMBRANE_LOG`` (e.g. ``"debug"``). ``mode="2pc"`` starts
    only Alice's and Bob's nodes, with no dealer: slower, and heavier on the loopback link.
    """
    return LocalConsortium(keep=keep, timeout=timeout, log_level=log_level, mode=mode)
