"""Overlay networks are isolated from each other and from local bridge networks on the
same host, as Docker isolates its networks: real traffic (ping and TCP, both directions)
between containers on the same host and on different hosts, with a real 3-member etcd;
what is allowed still flows (same overlay across hosts, egress); the last DEL on a host
leaves no rule behind."""

# ruff: noqa: F811  (the fixtures shared with test_overlay.py are imported by name)
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pycni.firewall import replay
from tests import traffic
from tests.conftest import Netns, short_id
from tests.integration.test_firewall_support import in_ns
from tests.integration.test_network_traffic import reach
from tests.integration.test_overlay import (  # noqa: F401
    add,
    cluster,
    hosts,
    overlay_conf,
    run_overlay,
    underlay,
    wait_for,
)
from tests.overlay_kit import EtcdCluster, Host, netctl, put_network

pytestmark = pytest.mark.root


def isolation_table(host: Host) -> str:
    return host.ns.run("nft", "list", "table", "inet", "pycni_isolation", check=False)


def test_overlays_on_one_host_are_isolated_from_each_other_and_from_bridges(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    na, nb = f"oia{short_id(4)}", f"oib{short_id(4)}"
    put_network(cluster, na, "10.41.0.0/16", 41)
    put_network(cluster, nb, "10.42.0.0/16", 42)
    ca, cb = overlay_conf(cluster, na), overlay_conf(cluster, nb)
    h1, h2 = hosts(), hosts()  # both hosts are on both overlays
    a1, b1, a2, b2 = container_ns(), container_ns(), container_ns(), container_ns()
    cid_a1, ip_a1 = add(plugin_dir, h1, ca, a1)
    cid_b1, ip_b1 = add(plugin_dir, h1, cb, b1)
    _, ip_a2 = add(plugin_dir, h2, ca, a2)
    _, ip_b2 = add(plugin_dir, h2, cb, b2)
    # a local bridge network on h1, isolated as netctl's networks are
    local = f"lb{short_id(4)}"
    netctl(h1, "network", "create", "--subnet", "172.29.5.0/24", local)
    l1 = container_ns()
    res = json.loads(netctl(h1, "cni", "add", local, "--netns", l1.path, "--id", "ctrl1").stdout)
    ip_l1 = res["ips"][0]["address"].split("/")[0]

    # what must flow: the same overlay, across hosts, both ways
    wait_for(lambda: traffic.ping(a1, ip_a2), 5, "a1 -> a2")
    wait_for(lambda: traffic.ping(b1, ip_b2), 5, "b1 -> b2")
    assert reach(a1, a2, ip_a2) == (True, True)
    assert reach(a2, a1, ip_a1) == (True, True)
    assert reach(b2, b1, ip_b1) == (True, True)

    # what must not: A <-> B on the same host, A <-> B across hosts, overlay <-> bridge
    for src, dst, ip, what in (
        (a1, b1, ip_b1, "A on h1 -> B on h1"),
        (b1, a1, ip_a1, "B on h1 -> A on h1"),
        (a1, b2, ip_b2, "A on h1 -> B on h2"),
        (b2, a1, ip_a1, "B on h2 -> A on h1"),
        (a2, b1, ip_b1, "A on h2 -> B on h1"),
        (b1, a2, ip_a2, "B on h1 -> A on h2"),
        (l1, a1, ip_a1, "local bridge on h1 -> A on h1"),
        (a1, l1, ip_l1, "A on h1 -> local bridge on h1"),
        (l1, a2, ip_a2, "local bridge on h1 -> A on h2"),
        (a2, l1, ip_l1, "A on h2 -> local bridge on h1"),
    ):
        assert reach(src, dst, ip) == (False, False), what
    # the isolation did not break the overlay (checked again after the drops)
    assert reach(a1, a2, ip_a2) == (True, True)

    # someone deletes the table: `netctl system reload`'s firewall replay rebuilds it
    h1.ns.run("nft", "delete", "table", "inet", "pycni_isolation")
    assert reach(a1, b1, ip_b1) == (True, True)  # (what the rules were keeping apart)
    monkeypatch.setenv("PYCNI_STATE_DIR", str(h1.state_dir))
    lines = in_ns(h1.ns, replay)
    assert "isolation: re-applied 2 overlay network(s)" in lines, lines
    assert reach(a1, b1, ip_b1) == (False, False)
    assert reach(b2, a1, ip_a1) == (False, False)
    assert reach(a2, a1, ip_a1) == (True, True)

    # the last DEL of each overlay on h1 removes its rules and its record
    table = isolation_table(h1)
    bridge_a = h1.ns.link("ovbr41")["ifindex"]
    bridge_b = h1.ns.link("ovbr42")["ifindex"]
    assert f"ovl-{bridge_a}" in table and f"ovl-{bridge_b}" in table, table
    assert run_overlay(plugin_dir, h1, "DEL", ca, a1, cid_a1).rc == 0
    table = isolation_table(h1)
    assert f"ovl-{bridge_a}" not in table and f"ovl-{bridge_b}" in table, table
    assert run_overlay(plugin_dir, h1, "DEL", cb, b1, cid_b1).rc == 0
    table = isolation_table(h1)
    assert "ovl-" not in table, table
    # (nft names an element by its interface while that exists: none is left)
    assert "ovbr4" not in table and "ovx4" not in table, table
    records = h1.state_dir / "firewall" / ".isolation-overlay"
    assert not records.exists() or not list(records.iterdir())
    # the local bridge network keeps its own isolation
    assert "net-" in table
