"""Import discipline on the plugin entry path (a plugin is exec'd per container start).

Two checks per plugin module, measured in a fresh `python -IS` exactly as the installed
executables run:
- no forbidden module is imported (deterministic: this is what catches regressions);
- the CPU time of the import stays under a budget (loose, for gross regressions such
  as pulling in pyroute2 or pydantic: ~250 ms and ~150 ms on CI machines).

Budget, from measurement on the 2-core CI machine (median of 5 fresh processes, CPU
time minus a bare interpreter's): loopback ~12 ms, bridge ~20 ms, host-local ~16 ms;
the budget is 60 ms, about 3x the heaviest, so noise does not fail the suite while
one heavy import does.
"""

from __future__ import annotations

import re
import resource
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
    """(modules imported, CPU ms the import took) in a fresh `python -IS`.

    CPU time (user + sys of the child, minus a bare interpreter's) rather than wall
    time: the suite runs in parallel, and wall time under load says more about the
    scheduler than about our imports."""
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); import {module}"
    proc = subprocess.run(
        [sys.executable, "-IS", "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = set()
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", line)
        if m:
            modules.add(m.group(1))
    return modules, _child_cpu_ms(code) - _child_cpu_ms("pass")


def _child_cpu_ms(code: str) -> float:
    samples = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-IS", "-c", code], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
    return statistics.median(samples)


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_entry_path_imports(name: str) -> None:
    module = PLUGINS[name]
    imported, cpu_ms = _import_profile(module)
    bad = sorted(imported & FORBIDDEN)
    assert not bad, f"{module} imports {bad} on the plugin entry path"
    assert cpu_ms < BUDGET_MS, (
        f"{module} takes {cpu_ms:.1f} ms of CPU to import (budget {BUDGET_MS} ms)"
    )


def test_version_path_imports_almost_nothing() -> None:
    baseline, _ = _import_profile("os")
    imported, _ = _import_profile("pycni.entry")
    assert imported - baseline <= {"pycni", "pycni.entry", "__future__"}, imported - baseline


def test_agent_client_path_imports_almost_nothing() -> None:
    """What a plugin forwarding to the agent imports: pycni.entry, the client and the
    `_socket` extension (not `socket`, which pulls in enum, selectors, ...)."""
    baseline, _ = _import_profile("os")
    imported, _ = _import_profile("pycni.agent_client")
    assert not imported & FORBIDDEN, imported & FORBIDDEN
    assert imported - baseline <= {"pycni", "pycni.agent_client", "__future__", "_socket"}, (
        imported - baseline
    )
