"""``python -m membrane._node run --config node.toml``: runs a party node in this process.

The node is ``party-node run`` linked into the native module, so installing the package is all
a machine needs. Used by :func:`membrane.local_consortium`, which passes ``--watch-stdin``: the
node then also stops when its standard input closes — when the Python process that started it
is gone, even if that process was killed and never stopped it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from . import _native


def _stop_when_stdin_closes() -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    # The same graceful stop as `kill -TERM` (the node handles SIGTERM).
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(prog="python -m membrane._node", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the node of a config until SIGTERM/SIGINT")
    run.add_argument("--config", required=True, help="the node's node.toml")
    run.add_argument(
        "--watch-stdin",
        action="store_true",
        help="also stop when standard input closes (the parent process is gone)",
    )
    args = p.parse_args(argv)
    if args.watch_stdin:
        threading.Thread(target=_stop_when_stdin_closes, daemon=True).start()
    try:
        _native.run_node(args.config)
    except _native.MembraneError as e:
        print(f"membrane node: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
