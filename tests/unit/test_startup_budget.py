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
    "ctypes",  # ~3 ms: C calls go through pycni.ffi (`_ctypes` only)
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


PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/var/run/netns/x"}],
    "ips": [{"interface": 1, "address": "10.88.0.5/16", "gateway": "10.88.0.1"}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {},
}


def _portmap_add(
    conf: dict[str, object], command: str = "ADD", state_dir: str = ""
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    import json

    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from pycni.entry import main; main('portmap', 'pycni.plugins.portmap', 'local')"
    )
    env = {
        "CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x",
        "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "PYCNI_AGENT": "0",
    }  # fmt: skip
    if state_dir:
        env["PYCNI_STATE_DIR"] = state_dir
    proc = subprocess.run(
        [sys.executable, "-IS", "-X", "importtime", "-c", code],
        input=json.dumps(conf), capture_output=True, text=True, env=env,
    )  # fmt: skip
    modules = {
        m.group(1)
        for line in proc.stderr.splitlines()
        if (m := re.match(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", line))
    }
    return proc, modules


def test_portmap_with_nothing_to_publish_passes_prev_result_on_as_it_came() -> None:
    """Most pods publish no port: portmap then costs an interpreter start and little
    more (no result or address machinery), and prints prevResult unchanged."""
    import json

    conf = {"cniVersion": "1.0.0", "name": "n", "type": "portmap", "prevResult": PREV,
            "runtimeConfig": {"portMappings": []}}  # fmt: skip
    proc, modules = _portmap_add(conf)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == PREV
    assert not modules & {"ipaddress", "pycni.result", "pycni.firewall"}, modules
    # a malformed prevResult still gets the parser's error, not a pass-through
    bad = dict(conf, prevResult=dict(PREV, ips="nope"))
    proc, _ = _portmap_add(bad)
    assert proc.returncode != 0 and json.loads(proc.stdout)["code"] in (6, 7), proc.stdout
    # another version: parsed and converted as before
    old = dict(conf, cniVersion="0.4.0", prevResult=dict(PREV, cniVersion="0.4.0"))
    proc, modules = _portmap_add(old)
    assert proc.returncode == 0 and json.loads(proc.stdout)["cniVersion"] == "0.4.0"


def test_portmap_del_of_an_attachment_that_published_nothing_skips_the_firewall(
    tmp_path: Path,
) -> None:
    """Its ADD never called the firewall and nothing is saved for it: DEL answers at
    once, without probing nftables or searching the kernel for the attachment's tag
    (which cost ~20 ms per DEL), and without importing ipaddress."""
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "portmap",
            "runtimeConfig": {"portMappings": []}}  # fmt: skip
    proc, modules = _portmap_add(conf, "DEL", str(tmp_path))
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
    assert not modules & {"ipaddress", "pycni.firewall.nftables", "pycni.firewall.iptables"}, (
        modules
    )


def test_loopback_imports_no_address_or_result_machinery() -> None:
    """loopback ADD prints its result without pycni.result and ipaddress (~3 ms of
    functools and collections, more than the verb): tests/unit/test_exec_path.py
    checks that the result is the same; the exec'd verb is checked in
    tests/integration/test_loopback.py."""
    imported, _ = _import_profile("pycni.plugins.loopback")
    assert not imported & {"ipaddress", "functools", "pycni.result", "ctypes"}, imported
