"""local_consortium leaves no process behind: on a normal exit, when the body raises, and when
the Python process that started it is killed outright."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import membrane
from conftest import pid_alive


def _gone(pids, within=15.0):
    deadline = time.monotonic() + within
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if pid_alive(p)]


def test_nodes_stop_when_the_body_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with membrane.local_consortium() as c:
            pids, directory = c.pids, c.dir
            assert len(pids) == 3 and all(pid_alive(p) for p in pids)
            assert c.bob.health()["mesh_ready"]
            raise RuntimeError("boom")
    assert _gone(pids, within=0.1) == []  # stopped and reaped before __exit__ returned
    assert not directory.exists()


def test_nodes_stop_when_the_parent_is_killed(tmp_path):
    script = textwrap.dedent(
        """
        import os, signal, sys, membrane
        c = membrane.local_consortium().start()
        print(c.dir, *c.pids, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no __exit__, no atexit, no finalizer
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    directory, *pids = out.stdout.split()
    pids = [int(p) for p in pids]
    assert len(pids) == 3
    try:
        assert _gone(pids) == [], "nodes outlived the process that started them"
    finally:
        shutil.rmtree(directory, ignore_errors=True)
