"""Overlay networks across hosts: a real 3-member etcd, "hosts" as namespaces on an
underlay bridge (each with its own PYCNI_STATE_DIR), the real `overlay` plugin exec'd
in each host's namespace, the per-host agent it starts on demand, real packets between
containers on different hosts over VXLAN."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import traffic
from tests.conftest import Netns, PluginRun, exec_plugin, short_id
from tests.overlay_kit import (
    EtcdCluster,
    Host,
    Underlay,
    make_host,
    put_network,
    start_etcd,
)

pytestmark = pytest.mark.root

TTL = 3  # short leases so expiry is testable in seconds


@pytest.fixture
def underlay() -> Iterator[Underlay]:
    u = Underlay.create()
    yield u
    u.destroy()


@pytest.fixture
def cluster(underlay: Underlay, tmp_path: Path) -> Iterator[EtcdCluster]:
    c = start_etcd(underlay, tmp_path)
    yield c
    c.destroy()


@pytest.fixture
def hosts(underlay: Underlay, tmp_path: Path) -> Iterator[Callable[[], Host]]:
    made: list[Host] = []

    def make() -> Host:
        h = make_host(underlay, tmp_path, len(made) + 1)
        made.append(h)
        return h

    yield make
    for h in made:
        h.kill_agents()


def overlay_conf(cluster: EtcdCluster, name: str, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "overlay",
        "clusterStore": cluster.endpoints,
        "clusterAdvertise": "ul0",
        "leaseTTL": TTL,
    }
    conf.update(extra)
    return conf


def run_overlay(plugin_dir: Path, host: Host, command: str, conf: dict[str, Any],
                netns: Netns | None, cid: str, **kw: Any) -> PluginRun:  # fmt: skip
    return exec_plugin(
        plugin_dir / "overlay", command, conf, netns=netns.path if netns else "",
        container_id=cid, in_ns=host.ns, cni_path=f"{plugin_dir}:/usr/lib/cni",
        env_extra=host.env(), **kw,
    )  # fmt: skip


def add(plugin_dir: Path, host: Host, conf: dict[str, Any], c: Netns) -> tuple[str, str]:
    cid = f"ctr{short_id(8)}"
    r = run_overlay(plugin_dir, host, "ADD", conf, c, cid)
    assert r.rc == 0, r.stdout + r.stderr
    ip = r.json["ips"][0]["address"].split("/")[0]
    return cid, ip


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_etcd_cluster_is_real(cluster: EtcdCluster) -> None:
    members = cluster.etcdctl("member", "list")
    assert members.count("started") == 3
    cluster.etcdctl("put", "/k", "v")
    assert cluster.get_prefix("/k") == {"/k": "v"}


def test_two_hosts_containers_reach_each_other(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    net = f"ov{short_id(4)}"
    put_network(cluster, net, "10.50.0.0/16", 42)
    h1, h2 = hosts(), hosts()
    c1, c2 = container_ns(), container_ns()
    conf = overlay_conf(cluster, net)
    cid1, ip1 = add(plugin_dir, h1, conf, c1)
    cid2, ip2 = add(plugin_dir, h2, conf, c2)
    l1, l2 = h1.lease(net), h2.lease(net)
    assert l1["subnet"] != l2["subnet"]
    assert ipaddress.ip_address(ip1) in ipaddress.ip_network(l1["subnet"])
    # the leases are in etcd, each under a TTL lease, naming the host's underlay address
    leases = cluster.get_prefix(f"/pycni/overlay/subnets/{net}/")
    assert sorted(json.loads(v)["PublicIP"] for v in leases.values()) == [h1.ip, h2.ip]
    # MTU leaves room for VXLAN
    assert c1.link("eth0")["mtu"] == 1450
    # VXLAN device with the other host programmed
    fdb = json.loads(h1.ns.run("bridge", "-j", "fdb", "show", "dev", "ovx42"))
    assert any(f.get("dst") == h2.ip for f in fdb)
    wait_for(lambda: traffic.ping(c1, ip2), 5, "c1 -> c2 across hosts")
    assert traffic.ping(c2, ip1)
    with traffic.server(c2, ip2, 8080, "h2"):
        out = c1.run(traffic.PY, "-c", traffic._TCP_CLIENT, ip2, "8080", "3")
    assert out.strip() == f"h2 {ip1}"  # no NAT between hosts: the peer sees c1's address
    # DEL cleans up; a second DEL is a success
    for h, cid, c in ((h1, cid1, c1), (h2, cid2, c2)):
        r = run_overlay(plugin_dir, h, "DEL", conf, c, cid)
        assert r.rc == 0, r.stdout + r.stderr
        r = run_overlay(plugin_dir, h, "DEL", conf, c, cid)
        assert r.rc == 0, r.stdout + r.stderr
    assert c1.link("eth0") is None
