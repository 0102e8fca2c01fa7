"""The overlay's underlay UDP (VXLAN) bypasses conntrack, the containers' own connections
do not (`pycni.firewall.tunnel`, docs/overlay.md "Where the request rate goes")."""

# ruff: noqa: F811  (the fixtures shared with test_overlay.py are imported by name)
from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import traffic
from tests.conftest import Netns, short_id
from tests.integration.test_overlay import (  # noqa: F401
    add,
    cluster,
    hosts,
    overlay_conf,
    underlay,
    wait_for,
)
from tests.overlay_kit import EtcdCluster, Host, put_network

pytestmark = pytest.mark.root


def vteps(host: Host) -> list[list[object]]:
    """The elements of `table inet pycni_tunnel`'s set, as [address, port]."""
    out = host.ns.run("nft", "-j", "list", "set", "inet", "pycni_tunnel", "vteps4", check=False)
    if not out:
        return []
    for obj in json.loads(out)["nftables"]:
        if "set" in obj:
            return sorted(e["concat"] for e in obj["set"].get("elem", []))
    return []


def conntrack(host: Host, *args: str) -> str:
    return host.ns.run("conntrack", "-L", *args, check=False)


def test_vxlan_is_untracked_inner_connections_are_tracked(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    na, nb = f"ont{short_id(4)}", f"onu{short_id(4)}"
    put_network(cluster, na, "10.56.0.0/16", 56)
    put_network(cluster, nb, "10.57.0.0/16", 57)
    h1, h2 = hosts(), hosts()
    a1, b1, a2 = container_ns(), container_ns(), container_ns()
    _, ip_a1 = add(plugin_dir, h1, overlay_conf(cluster, na), a1)
    add(plugin_dir, h1, overlay_conf(cluster, nb), b1)  # a second VNI on h1, same VTEP
    _, ip_a2 = add(plugin_dir, h2, overlay_conf(cluster, na), a2)
    assert vteps(h1) == [[h1.ip, 4789]] and vteps(h2) == [[h2.ip, 4789]]

    wait_for(lambda: traffic.ping(a1, ip_a2), 5, "a1 -> a2 across hosts")
    for port in (8091, 8092, 8093):  # new connections: new outer source ports each
        with traffic.server(a2, ip_a2, port, "a2"):
            out = a1.run(traffic.PY, "-c", traffic._TCP_CLIENT, ip_a2, str(port), "3")
        assert out.strip() == f"a2 {ip_a1}", out
    for h in (h1, h2):
        assert "dport=4789" not in conntrack(h, "-p", "udp")  # the underlay: untracked
        inner = conntrack(h, "-p", "tcp", "--orig-dst", ip_a2)
        assert all(f"dport={p}" in inner for p in (8091, 8092, 8093)), inner  # still tracked

    # flushed by someone: the agents' re-programming (SIGHUP, as `netctl system reload`
    # sends) brings it back
    h1.ns.run("nft", "delete", "table", "inet", "pycni_tunnel")
    for pid in h1.agent_pids():
        os.kill(pid, signal.SIGHUP)
    wait_for(lambda: vteps(h1) == [[h1.ip, 4789]], 10, "the agents to ensure the table again")

    # the element is the address's, not one network's: it stays while a device uses it
    cluster.etcdctl("del", f"/pycni/overlay/networks/{nb}")
    wait_for(lambda: h1.ns.link("ovx57") is None, 15, "h1's agent to leave network B")
    assert vteps(h1) == [[h1.ip, 4789]]
    cluster.etcdctl("del", f"/pycni/overlay/networks/{na}")
    wait_for(lambda: h1.ns.link("ovx56") is None, 15, "h1's agent to leave network A")
    wait_for(lambda: vteps(h1) == [], 5, "h1's VTEP element to go with its last device")
