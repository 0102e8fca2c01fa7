"""Import discipline on the plugin entry path (a plugin is exec'd per container start).

Two checks per plugin module, measured in a fresh `python -IS` exactly as the installed
executables run:
- no forbidden module is imported (deterministic: this is what catches regressions);
- the cumulative import time stays under a budget (loose, for gross regressions such
  as pulling in pyroute2 or pydantic: ~250 ms and ~150 ms on CI machines).

Budget, from measurement on the 2-core CI machine (median of 5 fresh processes):
loopback imports in ~14 ms; the budget is 60 ms, about 4x that, so scheduler noise
does not fail the suite while one heavy import does.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from pycni.plugins import PLUGINS

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "re",
    "json",
    "typing",
    "subprocess",
    "dataclasses",
    "enum",
    "socket",
    "asyncio",
    "pyroute2",
    "pydantic",
    "netaddr",
    "inspect",
    "logging",
}
BUDGET_MS = 60.0


def _import_profile(module: str) -> tuple[set[str], float]:
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); import {module}"
    proc = subprocess.run(
        [sys.executable, "-IS", "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    modules, total = set(), 0.0
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if not m:
            continue
        modules.add(m.group(3))
        if m.group(3) == module:
            total = int(m.group(1)) / 1000
    return modules, total


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_entry_path_imports(name: str) -> None:
    module = PLUGINS[name]
    profiles = [_import_profile(module) for _ in range(5)]
    imported = profiles[0][0]
    bad = sorted(imported & FORBIDDEN)
    assert not bad, f"{module} imports {bad} on the plugin entry path"
    median_ms = statistics.median(p[1] for p in profiles)
    assert median_ms < BUDGET_MS, (
        f"{module} takes {median_ms:.1f} ms to import (budget {BUDGET_MS} ms)"
    )


def test_version_path_imports_almost_nothing() -> None:
    baseline, _ = _import_profile("os")
    imported, _ = _import_profile("pycni.entry")
    assert imported - baseline <= {"pycni", "pycni.entry", "__future__"}, imported - baseline
