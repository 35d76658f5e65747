"""The package README's example runs unchanged (from the repository root, as it says)."""

from __future__ import annotations

import os
import re

from conftest import ROOT


def test_readme_example_runs(monkeypatch):
    text = (ROOT / "python" / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    lines = [line[4:] for line in block.splitlines() if line.startswith(">>> ") and not line.startswith(">>> #")]
    assert len(lines) > 10
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    try:
        for line in lines:
            exec(compile(line, "README.md", "single"), scope)
    finally:
        if "c" in scope:
            scope["c"].stop()
    assert os.getcwd() == str(ROOT)
