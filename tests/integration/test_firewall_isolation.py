"""The firewall's network-level isolation verbs, called as the isolation plugin and
`netctl` call them: ensure, check, remove, GC, replay after a flush."""

from __future__ import annotations

import os

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
    # every container's ADD ensures its network again: the record is rewritten only
    # when the network's isolation changed
    path = Records("isolation").network_path("neta")
    before = os.stat(path).st_ino
    in_ns(host_ns, fw.ensure_isolation, a)
    assert os.stat(path).st_ino == before
    in_ns(host_ns, fw.ensure_isolation, Isolation("neta", "pytisoa0", icc=True))
    assert os.stat(path).st_ino != before
    in_ns(host_ns, fw.ensure_isolation, a)

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


def test_overlay_isolation_of_a_vanished_bridge_is_collected(host_ns, tmp_path, monkeypatch):
    """An overlay whose bridge was deleted without a DEL: GC drops its chain, exactly
    its map and set elements (also the live VXLAN device's) and its record, and leaves
    a live overlay and a bridge network alone."""
    monkeypatch.setenv("PYCNI_STATE_DIR", str(tmp_path))
    for n in (1, 2):
        host_ns.run("ip", "link", "add", f"pytovbr{n}", "type", "bridge")
        host_ns.run("ip", "link", "add", f"pytovx{n}", "type", "vxlan", "id", str(4200 + n),
                    "dstport", "4789", "local", f"10.99.0.{n}")  # fmt: skip
    host_ns.run("ip", "link", "add", "pytisoc0", "type", "bridge")
    idx = {n: host_ns.link(n)["ifindex"] for n in ("pytovbr1", "pytovx1", "pytovbr2", "pytovx2")}
    fw = get_backend(None)
    in_ns(host_ns, fw.ensure_overlay_isolation, "ovl1", "pytovbr1", "pytovx1", False)
    in_ns(host_ns, fw.ensure_overlay_isolation, "ovl2", "pytovbr2", "pytovx2", True)
    in_ns(host_ns, fw.ensure_isolation, Isolation("netc", "pytisoc0"))
    assert f"ovl-{idx['pytovbr1']}" in _chains(host_ns)
    assert in_ns(host_ns, fw.gc_isolation) == []  # everything alive: nothing to collect

    host_ns.run("ip", "link", "del", "pytovbr1")
    assert in_ns(host_ns, fw.gc_isolation) == [idx["pytovbr1"]]
    table = host_ns.nft_json()["nftables"]
    chains = {x["chain"]["name"] for x in table if "chain" in x}
    assert f"ovl-{idx['pytovbr1']}" not in chains
    assert f"ovl-{idx['pytovbr2']}" in chains and any(c.startswith("net-") for c in chains)
    networks = next(x["map"] for x in table if x.get("map", {}).get("name") == "networks")
    # nft prints a key as the interface's name while the interface exists
    jumps = sorted((str(e[0]), e[1]["jump"]["target"]) for e in networks["elem"])
    ovl2 = f"ovl-{idx['pytovbr2']}"
    assert [j for j in jumps if j[1].startswith("ovl-")] == [("pytovbr2", ovl2), ("pytovx2", ovl2)]
    bridges = next(x["set"] for x in table if x.get("set", {}).get("name") == "bridges")
    assert str(idx["pytovbr1"]) not in [str(e) for e in bridges.get("elem", [])]
    assert Records("isolation-overlay").networks() == ["ovl2"]
    assert in_ns(host_ns, fw.gc_isolation) == []  # collected once
    # and the overlay's own removal after its bridge vanished (nft then prints the
    # vanished index in digits): it drops the chain rather than failing "busy"
    host_ns.run("ip", "link", "del", "pytovbr2")
    in_ns(host_ns, fw.remove_overlay_isolation, "ovl2")
    assert ovl2 not in _chains(host_ns)
    assert Records("isolation-overlay").networks() == []
    for n in ("pytovx1", "pytovx2", "pytisoc0"):
        host_ns.run("ip", "link", "del", n)
