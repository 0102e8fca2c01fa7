"""The real host must not change: a snapshot of the machine's own network state taken
before a session and compared after it, and a check that no namespace of this run
outlives the module that made it.

Enabled for a whole suite with the ini option `pycni_host_check = true` (pycni's own
suite does); the plugin then registers this module's fixtures, which fail the session's last
teardown when the real host's links, addresses, routes, nft ruleset, iptables rules or
the CNI/netctl state directories differ.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: directories plugins and netctl must only ever write inside a test's sandbox
STATE_DIRS = (
    "/var/lib/pycni",
    "/var/lib/cni",
    "/var/lib/netctl",
    "/run/netctl",
    "/etc/netctl",
    "/run/pycni",
)


def _out(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return proc.stdout


def _strip_counters(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(("#", ":")))


def host_state() -> dict[str, str]:
    """The parts of the machine's own network state tests must never touch."""
    state = {
        "links": _out("ip", "-j", "link", "show"),
        "addrs": _out("ip", "-j", "addr", "show"),
        "routes4": _out("ip", "-j", "-4", "route", "show", "table", "all"),
        "routes6": _out("ip", "-j", "-6", "route", "show", "table", "all"),
    }
    if shutil.which("nft"):
        state["nft"] = _out("nft", "list", "ruleset")
    if shutil.which("iptables-save"):
        state["iptables"] = _strip_counters(_out("iptables-save"))
        state["ip6tables"] = _strip_counters(_out("ip6tables-save"))
    for d in STATE_DIRS:
        state[d] = (
            "\n".join(sorted(str(p) for p in Path(d).rglob("*"))) if os.path.exists(d) else "absent"
        )
    # Only link identity matters for links: counters and operstate of real NICs move.
    state["links"] = json.dumps(
        sorted(
            (x["ifname"], x.get("address"), x.get("mtu"), x.get("master"))
            for x in json.loads(state["links"])
        )
    )
    state["addrs"] = json.dumps(
        sorted(
            (a["ifname"], ai.get("local"), ai.get("prefixlen"))
            for a in json.loads(state["addrs"])
            for ai in a.get("addr_info", [])
        )
    )
    return state


def netns_names(netns_dir: str = "/run/netns") -> set[str]:
    try:
        return set(os.listdir(netns_dir))
    except FileNotFoundError:
        return set()


#: predicates naming namespaces a run owns (the kit's own tag, and whatever prefixes a
#: suite's own helpers use: `watch_namespaces`)
_owned: list[Callable[[str], bool]] = []


def watch_namespaces(owned: Callable[[str], bool]) -> None:
    """Have the per-module leak check also cover namespaces for which `owned(name)` is
    true (a suite's own namespace helpers)."""
    _owned.append(owned)


# The fixtures below are active only when the plugin registers this module as a plugin
# (ini `pycni_host_check = true`).


@pytest.fixture(scope="session", autouse=True)
def pycni_real_host_unchanged() -> Iterator[None]:
    if os.geteuid() != 0:
        yield
        return
    before = host_state()
    yield
    after = host_state()
    changed = [k for k in before if before[k] != after.get(k)]
    assert not changed, f"the test session changed the real host's network state: {changed}"


@pytest.fixture(scope="module", autouse=True)
def pycni_no_namespace_leaks() -> Iterator[None]:
    """After each module: no namespace this run owns is left behind (everything else a
    test makes lives in its namespaces and dies with them)."""
    from pycni.testing import runs

    tag = runs.current_tag()
    before = netns_names()
    yield
    if os.geteuid() != 0:
        return
    leaked = sorted(
        n
        for n in netns_names() - before
        if n.startswith(f"{tag}-") or any(owned(n) for owned in _owned)
    )
    for name in leaked:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    assert not leaked, f"namespaces leaked by this module: {leaked}"
