"""The plugin path without an agent (issue 12): the Python executables `netctl plugins
install` writes without a C compiler, exec'd with PYCNI_AGENT=0, under `-X importtime`,
doing real verbs in throwaway namespaces. What each verb imports is deterministic, so
these hold the start-up work that was cut (the timings are in docs/performance.md)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pycni.plugins import PLUGINS
from pycni.runtime import install
from tests.conftest import Netns, PluginRun, exec_plugin
from tests.integration.test_bridge import bridge_conf

pytestmark = pytest.mark.root


def launchers(tmp_path: Path) -> Path:
    """bin/<plugin>: the installed Python launcher, run with -X importtime."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("bridge", "host-local", "loopback", "portmap"):
        script = tmp_path / f"{name}.py"
        script.write_text(install._script(name, PLUGINS[name]))
        wrapper = directory / name
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -X importtime -IS {script} "$@"\n')
        wrapper.chmod(0o755)
    return directory


def imported(run: PluginRun) -> set[str]:
    return {
        m.group(1)
        for line in run.stderr.splitlines()
        if (m := re.match(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", line))
    }


@pytest.fixture
def run(tmp_path: Path, state_dir: Path) -> Callable[..., PluginRun]:
    bindir = launchers(tmp_path)

    def call(name: str, command: str, conf: dict[str, object], **kw: object) -> PluginRun:
        env = {"PYCNI_STATE_DIR": str(state_dir), "PYCNI_AGENT": "0"}
        return exec_plugin(bindir / name, command, conf, cni_path=str(bindir), env_extra=env, **kw)  # type: ignore[arg-type]

    return call


def test_loopback_add_loads_no_address_machinery_and_no_ctypes(
    run: Callable[..., PluginRun], container_ns: Callable[[], Netns]
) -> None:
    ns = container_ns()
    conf = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
    res = run("loopback", "ADD", conf, netns=ns.path, container_id="c1", ifname="lo")
    assert res.rc == 0, res.stdout + res.stderr
    assert res.json == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": ns.path}],
        "ips": [
            {"interface": 0, "address": "127.0.0.1/8"},
            {"interface": 0, "address": "::1/128"},
        ],
        "dns": {},
    }
    modules = imported(res)
    assert "_ctypes" in modules  # setns, through pycni.ffi
    assert not modules & {"ctypes", "ipaddress", "functools", "pycni.result"}, modules


def test_the_no_port_chain_loads_no_ctypes_and_portmap_no_firewall(
    run: Callable[..., PluginRun],
    host_ns: Netns,
    container_ns: Callable[[], Netns],
    tmp_path: Path,
) -> None:
    ns = container_ns()
    bridge = bridge_conf(tmp_path, subnet="10.67.0.0/24", ipMasq=True)
    kw = {"netns": ns.path, "container_id": "c1", "in_ns": host_ns}
    add = run("bridge", "ADD", bridge, **kw)
    assert add.rc == 0, add.stdout + add.stderr
    modules = imported(add)
    assert {"pycni.firewall.nftables", "_ctypes"} <= modules, modules  # masquerade via libnftables
    assert "ctypes" not in modules
    pm = {
        "cniVersion": "1.0.0",
        "name": bridge["name"],
        "type": "portmap",
        "runtimeConfig": {"portMappings": []},
        "prevResult": add.json,
    }
    pm_add = run("portmap", "ADD", pm, **kw)
    assert pm_add.rc == 0 and pm_add.json == add.json, pm_add.stdout + pm_add.stderr
    assert not {m for m in imported(pm_add) if m.startswith("pycni.firewall")}
    # DEL: the bridge's masquerade record exists, but no ports part: nothing to remove
    pm_del = run("portmap", "DEL", pm, **kw)
    assert pm_del.rc == 0 and pm_del.stdout == "", pm_del.stdout + pm_del.stderr
    assert not imported(pm_del) & {"ipaddress", "pycni.firewall.nftables"}
    br_del = run("bridge", "DEL", dict(bridge, prevResult=add.json), **kw)
    assert br_del.rc == 0, br_del.stdout + br_del.stderr
    assert "ctypes" not in imported(br_del)
    assert not host_ns.ip_json("link", "show", "type", "veth")
    listing = host_ns.run("nft", "list", "ruleset")
    assert "10.67.0." not in listing  # the masquerade entry went with the DEL
