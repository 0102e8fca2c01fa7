"""The firewall's network-level isolation verbs, called as the isolation plugin and
`netctl` call them: ensure, check, remove, GC, replay after a flush."""

from __future__ import annotations

import pytest

from pycni.firewall import get_backend, replay
from pycni.firewall.base import Isolation
from pycni.firewall.store import Records
from tests.integration.test_firewall_support import in_ns

pytestmark = pytest.mark.root


def _chains(host_ns) -> str:
    return host_ns.run("nft", "list", "table", "inet", "pycni_isolation")


def test_isolation_verbs(host_ns, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYCNI_STATE_DIR", str(tmp_path))
    for name in ("pytisoa0", "pytisob0"):
        host_ns.run("ip", "link", "add", name, "type", "bridge")
    a = Isolation("neta", "pytisoa0", icc=False)
    b = Isolation("netb", "pytisob0", internal=True)
    index_a = host_ns.link("pytisoa0")["ifindex"]
    index_b = host_ns.link("pytisob0")["ifindex"]
    fw = get_backend(None)
    in_ns(host_ns, fw.ensure_isolation, a)
    in_ns(host_ns, fw.ensure_isolation, b)
    assert in_ns(host_ns, fw.check_isolation, a) == []
    assert in_ns(host_ns, fw.check_isolation, b) == []
    assert Records("isolation").networks() == ["neta", "netb"]

    host_ns.run("nft", "flush", "ruleset")
    assert in_ns(host_ns, fw.check_isolation, a) == ["table inet pycni_isolation does not exist"]
    assert "isolation: re-applied 2 network(s)" in in_ns(host_ns, replay)
    assert in_ns(host_ns, fw.check_isolation, a) == []
    assert in_ns(host_ns, fw.check_isolation, b) == []

    in_ns(host_ns, fw.remove_isolation, "neta")
    assert f"net-{index_a}" not in _chains(host_ns)
    assert f"net-{index_b}" in _chains(host_ns)
    assert Records("isolation").networks() == ["netb"]
    in_ns(host_ns, fw.remove_isolation, "neta")  # already gone: success

    host_ns.run("ip", "link", "del", "pytisob0")
    assert in_ns(host_ns, fw.gc_isolation) == [index_b]
    assert f"net-{index_b}" not in _chains(host_ns)
    assert Records("isolation").networks() == []
    host_ns.run("ip", "link", "del", "pytisoa0")
