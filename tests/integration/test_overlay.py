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
    netctl,
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
        # a test that failed midway leaves its detached containers (and their
        # supervisors) behind: remove them the supported way, then the agents
        left = netctl(h, "ps", "-aq", check=False).stdout.split()
        if left:
            netctl(h, "rm", "-f", *left, check=False)
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
    kw.setdefault("cni_path", f"{plugin_dir}:/usr/lib/cni")
    return exec_plugin(
        plugin_dir / "overlay", command, conf, netns=netns.path if netns else "",
        container_id=cid, in_ns=host.ns, env_extra={**host.env(), **kw.pop("env_extra", {})}, **kw,
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


def fdb_dsts(host: Host, vni: int) -> set[str]:
    out = host.ns.run("bridge", "-j", "fdb", "show", "dev", f"ovx{vni}", check=False)
    return {f["dst"] for f in json.loads(out or "[]") if f.get("dst")}


def test_dead_host_lease_expires_and_is_reused(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    net = f"ov{short_id(4)}"
    put_network(cluster, net, "10.51.0.0/16", 51)
    conf = overlay_conf(cluster, net)
    h1, h2 = hosts(), hosts()
    add(plugin_dir, h1, conf, container_ns())
    add(plugin_dir, h2, conf, container_ns())
    sub1 = h1.lease(net)["subnet"]
    wait_for(lambda: h1.ip in fdb_dsts(h2, 51), 5, "h2 programs h1")
    # h1 dies: its agent stops renewing; after the TTL its lease is gone from etcd and
    # from h2's forwarding table (a host not in etcd gets no traffic)
    h1.kill_agents()
    t = wait_for(lambda: h1.ip not in fdb_dsts(h2, 51), TTL + 5, "h2 forgets h1")
    assert t >= TTL - 1.5, f"forgotten after {t:.1f}s, before the TTL ({TTL}s)"
    assert not any(
        json.loads(v)["PublicIP"] == h1.ip
        for v in cluster.get_prefix(f"/pycni/overlay/subnets/{net}/").values()
    )
    assert not [r for r in h2.ns.routes("dev", "ovx51") if r["dst"] == sub1]
    # a new host gets the freed subnet (lowest free first), and h2 forwards it to h3
    h3 = hosts()
    c3 = container_ns()
    add(plugin_dir, h3, conf, c3)
    assert h3.lease(net)["subnet"] == sub1
    wait_for(lambda: h3.ip in fdb_dsts(h2, 51), 5, "h2 programs h3")


def test_agent_restart_within_ttl_keeps_subnet_and_traffic(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    net = f"ov{short_id(4)}"
    put_network(cluster, net, "10.52.0.0/16", 52)
    conf = overlay_conf(cluster, net, leaseTTL=10)
    h1, h2 = hosts(), hosts()
    c1, c2 = container_ns(), container_ns()
    _, ip1 = add(plugin_dir, h1, conf, c1)
    _, ip2 = add(plugin_dir, h2, conf, c2)
    sub1 = h1.lease(net)["subnet"]
    wait_for(lambda: traffic.ping(c1, ip2), 5, "c1 -> c2")
    pid = h1.agent_pids()
    h1.kill_agents()  # kill -9: no goodbye to etcd
    # running containers keep forwarding while no agent runs
    assert traffic.ping(c2, ip1)
    # the next ADD on h1 starts a new agent, which takes its own subnet back
    mac_before = h1.ns.link("ovbr52")["address"]
    _, ip1b = add(plugin_dir, h1, conf, container_ns())
    print("bridge MAC", mac_before, "->", h1.ns.link("ovbr52")["address"])
    assert h1.agent_pids() and h1.agent_pids() != pid
    assert h1.lease(net)["subnet"] == sub1
    leases = cluster.get_prefix(f"/pycni/overlay/subnets/{net}/")
    assert len(leases) == 2
    # (waits: a new port with a lower MAC changes the bridge's MAC, and c1's ARP entry
    # for its gateway goes stale for a moment; the bridge plugin's doing, not the overlay's)
    t = wait_for(lambda: traffic.ping(c2, ip1), 10, "c2 -> c1 after the restart")
    print(f"c2 -> c1 again after {t:.2f}s")
    wait_for(lambda: traffic.ping(c2, ip1b), 5, "c2 -> the new container on h1")


def test_quorum_loss_code_11_fast_then_recovery(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    net = f"ov{short_id(4)}"
    put_network(cluster, net, "10.53.0.0/16", 53)
    conf = overlay_conf(cluster, net, leaseTTL=30)
    h1, h2 = hosts(), hosts()
    c1, c2 = container_ns(), container_ns()
    _, ip1 = add(plugin_dir, h1, conf, c1)
    _, ip2 = add(plugin_dir, h2, conf, c2)
    wait_for(lambda: traffic.ping(c1, ip2), 5, "c1 -> c2")
    # two of three members down: no quorum
    cluster.stop(cluster.members[1])
    cluster.stop(cluster.members[2])
    h3 = hosts()
    t0 = time.monotonic()
    r = run_overlay(plugin_dir, h3, "ADD", conf, container_ns(), "ctrq1")
    took = time.monotonic() - t0
    assert r.error["code"] == 11, r.stdout
    assert "unavailable" in r.error["msg"] or "cannot lease" in r.error["msg"]
    assert took < 10, f"ADD took {took:.1f}s to fail"
    print(f"overlay ADD on a new host without quorum: code 11 in {took:.2f}s")
    # running containers keep forwarding; hosts with a live lease still ADD (no etcd
    # round trip on the ADD path, the lease is within its TTL)
    assert traffic.ping(c1, ip2) and traffic.ping(c2, ip1)
    _, ip1b = add(plugin_dir, h1, conf, container_ns())
    assert traffic.ping(c2, ip1b)
    # quorum back: the agent h3's failed ADD started gets its lease without a restart
    cluster.start(cluster.members[1], state="existing")
    cluster.start(cluster.members[2], state="existing")
    cluster.wait_healthy()
    c3 = container_ns()
    wait_for(lambda: run_overlay(plugin_dir, h3, "ADD", conf, c3, "ctrq2").rc == 0, 20, "h3 ADD")
    ip3 = h3.lease(net)["subnet"]
    assert ip3 not in (h1.lease(net)["subnet"], h2.lease(net)["subnet"])
    wait_for(lambda: h3.ip in fdb_dsts(h1, 53) and h3.ip in fdb_dsts(h2, 53), 5, "h3 known")


def test_networks_on_different_vnis_are_separate(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    na, nb = f"ova{short_id(4)}", f"ovb{short_id(4)}"
    put_network(cluster, na, "10.54.0.0/16", 54)
    put_network(cluster, nb, "10.55.0.0/16", 55)
    h1, h2 = hosts(), hosts()
    a1, a2, b2 = container_ns(), container_ns(), container_ns()
    add(plugin_dir, h1, overlay_conf(cluster, na), a1)
    _, ipa2 = add(plugin_dir, h2, overlay_conf(cluster, na), a2)
    _, ipb2 = add(plugin_dir, h2, overlay_conf(cluster, nb), b2)
    wait_for(lambda: traffic.ping(a1, ipa2), 5, "a1 -> a2 on network A")
    # h1 is not on B: nothing on h1 forwards into B, and VNI 54 frames are not VNI 55's
    assert not traffic.ping(a1, ipb2)
    assert h1.ns.link("ovx55") is None
    assert fdb_dsts(h2, 55) == set()  # h2 is B's only host: no peer programmed


def test_watch_behind_compaction_relists(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    import os
    import signal

    net = f"ov{short_id(4)}"
    put_network(cluster, net, "10.58.0.0/16", 58)
    conf = overlay_conf(cluster, net, leaseTTL=6)
    h1, h2 = hosts(), hosts()
    add(plugin_dir, h1, conf, container_ns())
    add(plugin_dir, h2, conf, container_ns())
    wait_for(lambda: h2.ip in fdb_dsts(h1, 58), 5, "h1 programs h2")
    (agent,) = h1.agent_pids()
    os.kill(agent, signal.SIGSTOP)  # h1's agent falls behind...
    try:
        # ...its watch stream breaks (the member it watches through goes away) before h3
        # joins, and everything up to h3's lease is compacted before it watches again
        cluster.stop(cluster.members[0])
        h3 = hosts()
        add(plugin_dir, h3, conf, container_ns())
        for i in range(20):
            cluster.etcdctl("put", f"/noise/{i}", "x")
        rev = json.loads(cluster.etcdctl("get", "/noise/19", "-w", "json"))["header"]["revision"]
        cluster.etcdctl("compact", str(rev))
    finally:
        os.kill(agent, signal.SIGCONT)
    wait_for(lambda: h3.ip in fdb_dsts(h1, 58), 10, "h1 re-lists and programs h3")
    log = next(h1.state_dir.glob(f"overlay/{net}/agent.log")).read_text()
    assert "watch fell behind compaction: re-listing" in log, log
    cluster.start(cluster.members[0], state="existing")
    cluster.wait_healthy()


def test_tls_cluster_store(
    plugin_dir: Path, underlay: Underlay, tmp_path: Path, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    """etcd with client-certificate auth (a CA made by the test with openssl): the agent
    uses cluster-store-opts; a wrong CA is refused with code 11 naming the TLS failure."""
    tls_cluster = start_etcd(underlay, tmp_path, tls=True)
    try:
        net = f"ovt{short_id(4)}"
        put_network(tls_cluster, net, "10.59.0.0/16", 59)
        conf = overlay_conf(tls_cluster, net, clusterStoreOpts=tls_cluster.store_opts())
        h1, h2 = hosts(), hosts()
        c1, c2 = container_ns(), container_ns()
        add(plugin_dir, h1, conf, c1)
        _, ip2 = add(plugin_dir, h2, conf, c2)
        wait_for(lambda: traffic.ping(c1, ip2), 5, "c1 -> c2 with etcd over TLS")
        # a host that does not trust the cluster's CA gets no lease: code 11, why in details
        h3 = hosts()
        bad = dict(conf, clusterStoreOpts=dict(tls_cluster.store_opts()))
        bad["clusterStoreOpts"]["kv.cacertfile"] = "/etc/ssl/certs/ca-certificates.crt"
        r = run_overlay(plugin_dir, h3, "ADD", bad, container_ns(), "ctrtls")
        assert r.error["code"] == 11, r.stdout
        assert "TLS" in r.error["msg"] and "certificate" in r.error["details"], r.stdout
    finally:
        tls_cluster.destroy()


def test_reference_bridge_as_the_delegate(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    """The delegate is whatever `bridge` CNI_PATH finds: ours runs in-process, the
    reference one is exec'd; hosts using either reach each other, and DEL cleans up."""
    net = f"ov{short_id(4)}"
    put_network(cluster, net, "10.49.0.0/16", 49)
    conf = overlay_conf(cluster, net)
    h1, h2 = hosts(), hosts()
    c1, c2 = container_ns(), container_ns()
    _, ip1 = add(plugin_dir, h1, conf, c1)
    ref_path = f"/usr/lib/cni:{plugin_dir}"  # the reference bridge and host-local first
    r = run_overlay(plugin_dir, h2, "ADD", conf, c2, "ctrref", cni_path=ref_path)
    assert r.rc == 0, r.stdout + r.stderr
    ip2 = r.json["ips"][0]["address"].split("/")[0]
    wait_for(lambda: traffic.ping(c1, ip2), 5, "ours -> reference-bridged container")
    assert traffic.ping(c2, ip1)
    assert run_overlay(plugin_dir, h2, "DEL", conf, c2, "ctrref", cni_path=ref_path).rc == 0
    assert c2.link("eth0") is None


def test_agent_killed_mid_allocation_leaves_no_duplicate(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    """The agent is killed -9 right after its subnet key is written: the ADD answers 11
    at once (not after its timeout), and the next ADD's agent takes that same key back:
    one key per host, no second subnet, nothing left to expire elsewhere."""
    net = f"ov{short_id(4)}"
    put_network(cluster, net, "10.48.0.0/16", 48)
    conf = overlay_conf(cluster, net, leaseTTL=30)
    h1 = hosts()
    t0 = time.monotonic()
    r = run_overlay(plugin_dir, h1, "ADD", conf, container_ns(), "ctrk1",
                    env_extra={"PYCNI_FAULT": "after-subnet-lease"})  # fmt: skip
    assert r.error["code"] == 11 and "exited" in r.error["msg"], r.stdout
    assert time.monotonic() - t0 < 8
    held = cluster.get_prefix(f"/pycni/overlay/subnets/{net}/")
    assert len(held) == 1  # written, then its agent died
    add(plugin_dir, h1, conf, container_ns())
    again = cluster.get_prefix(f"/pycni/overlay/subnets/{net}/")
    assert list(again) == list(held)
    assert json.loads(next(iter(again.values())))["PublicIP"] == h1.ip


def test_plugin_killed_mid_add_then_gc_leaves_nothing(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    """The plugin is killed -9 after host-local leased an address (bridge's after-ipam
    point, the bridge running in the overlay plugin's process): CNI GC with the valid
    attachments releases the lease and forgets the attachment."""
    net = f"ov{short_id(4)}"
    put_network(cluster, net, "10.45.0.0/16", 45)
    conf = overlay_conf(cluster, net)
    h1 = hosts()
    _, ip_keep = add(plugin_dir, h1, conf, container_ns())
    keep_cid = next(
        p.name.removesuffix("-eth0.json")
        for p in (h1.state_dir / "overlay" / net / "containers").iterdir()
    )
    r = run_overlay(plugin_dir, h1, "ADD", conf, container_ns(), "ctrdead",
                    env_extra={"PYCNI_FAULT": "after-ipam"})  # fmt: skip
    assert r.rc != 0
    ipam_dir = h1.state_dir / "overlay" / net / "ipam" / net
    leased = sorted(p.name for p in ipam_dir.iterdir() if p.name[0].isdigit())
    assert len(leased) == 2, leased  # the killed ADD's lease is still there
    gc = dict(conf, cniVersion="1.1.0")
    gc["cni.dev/valid-attachments"] = [{"containerID": keep_cid, "ifname": "eth0"}]
    g = run_overlay(plugin_dir, h1, "GC", gc, None, "")
    assert g.rc == 0, g.stdout + g.stderr
    assert sorted(p.name for p in ipam_dir.iterdir() if p.name[0].isdigit()) == [ip_keep]
    saved = [p.name for p in (h1.state_dir / "overlay" / net / "containers").iterdir()]
    assert saved == [f"{keep_cid}-eth0.json"]
    add(plugin_dir, h1, conf, container_ns())  # (host-local hands out round robin, as ever)


def test_internal_overlay_and_its_mtu_option(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    """--internal: no default route in the container, a route to the overlay only;
    an MTU stored with the network is the containers' MTU."""
    net = f"ovi{short_id(4)}"
    spec = {"Name": net, "Network": "10.44.0.0/16", "SubnetLen": 24, "VNI": 44, "MTU": 1400,
            "Internal": True, "IPRange": ""}  # fmt: skip
    cluster.etcdctl("put", f"/pycni/overlay/networks/{net}", json.dumps(spec))
    h1, h2 = hosts(), hosts()
    c1, c2 = container_ns(), container_ns()
    add(plugin_dir, h1, overlay_conf(cluster, net), c1)
    _, ip2 = add(plugin_dir, h2, overlay_conf(cluster, net), c2)
    routes = {r["dst"] for r in c1.routes()}
    assert "default" not in routes and "10.44.0.0/16" in routes, routes
    assert c1.link("eth0")["mtu"] == 1400
    wait_for(lambda: traffic.ping(c1, ip2), 5, "c1 -> c2 on an internal overlay")


def test_egress_is_masqueraded_overlay_traffic_is_not(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    """A container reaches "the outside" (a namespace wired to its host) with the host's
    address, and a container on another host with its own; DEL removes the entry."""
    net = f"ove{short_id(4)}"
    put_network(cluster, net, "10.43.0.0/16", 43)
    conf = overlay_conf(cluster, net)
    h1, h2 = hosts(), hosts()
    outside = container_ns()
    traffic.wire_outside(h1.ns, outside)
    c1, c2 = container_ns(), container_ns()
    cid1, ip1 = add(plugin_dir, h1, conf, c1)
    _, ip2 = add(plugin_dir, h2, conf, c2)
    with traffic.server(outside, "198.18.0.2", 8081, "out"):
        out = c1.run(traffic.PY, "-c", traffic._TCP_CLIENT, "198.18.0.2", "8081", "3")
    assert out.strip() == "out 198.18.0.1", out  # masqueraded to the host's address
    wait_for(lambda: traffic.ping(c1, ip2), 5, "c1 -> c2")
    with traffic.server(c2, ip2, 8082, "h2"):
        out = c1.run(traffic.PY, "-c", traffic._TCP_CLIENT, ip2, "8082", "3")
    assert out.strip() == f"h2 {ip1}", out  # across hosts: no NAT
    assert ip1 in h1.ns.run("nft", "list", "ruleset")
    assert run_overlay(plugin_dir, h1, "DEL", conf, c1, cid1).rc == 0
    assert ip1 not in h1.ns.run("nft", "list", "ruleset")


def test_malformed_leases_in_etcd_do_not_stop_the_agents(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    """Keys under the subnets prefix that no agent wrote (an operator's etcdctl put, a
    tool gone wrong): a value that is not JSON, JSON that is not a lease, bytes that are
    not UTF-8, a key that names no subnet. The agents used to crash on them when taking
    a lease (every ADD on the network then failed on every host); now such a key is
    skipped, its subnet (if it names one) counted as taken."""
    net = f"ov{short_id(4)}"
    put_network(cluster, net, "10.53.0.0/16", 53)
    prefix = f"/pycni/overlay/subnets/{net}/"
    cluster.etcdctl("put", prefix + "10.53.0.0-24", "{not json")
    cluster.etcdctl("put", prefix + "10.53.1.0-24", "[1]")
    cluster.etcdctl("put", prefix + "10.53.2.0-24", "\udcff\udcfe")
    cluster.etcdctl("put", prefix + "junk", "x")
    h1, h2 = hosts(), hosts()
    conf = overlay_conf(cluster, net)
    c1, c2 = container_ns(), container_ns()
    _, ip1 = add(plugin_dir, h1, conf, c1)
    _, ip2 = add(plugin_dir, h2, conf, c2)
    assert {h1.lease(net)["subnet"], h2.lease(net)["subnet"]} == {"10.53.3.0/24", "10.53.4.0/24"}
    wait_for(lambda: traffic.ping(c1, ip2), 5, "c1 -> c2 across hosts")
    assert traffic.ping(c2, ip1)


def test_a_lease_lost_before_a_container_came_is_taken_again(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    """The agent's etcd lease ends behind its back (etcd unreachable for longer than the
    TTL; here it is revoked) and a container is added on the host before the agent's
    next renewal: the agent takes a lease again. It used to publish the new container
    count under the dead lease, get 'requested lease not found' (read as etcd being
    unavailable) and retry that forever without renewing, so the host stayed out of the
    overlay (no lease in etcd, no forwarding to it from the others) with its status
    'unavailable'."""
    net = f"ov{short_id(4)}"
    put_network(cluster, net, "10.54.0.0/16", 54)
    conf = overlay_conf(cluster, net, leaseTTL=60)  # renewals 20 s apart: the ADD is first
    h1, h2 = hosts(), hosts()
    c2 = container_ns()
    add(plugin_dir, h1, conf, container_ns())
    add(plugin_dir, h2, conf, c2)
    prefix = f"/pycni/overlay/subnets/{net}/"
    key = prefix + h1.lease(net)["subnet"].replace("/", "-")
    lease = json.loads(cluster.etcdctl("get", key, "-w", "json"))["kvs"][0]["lease"]
    cluster.etcdctl("lease", "revoke", f"{lease:x}")
    _, ip1 = add(plugin_dir, h1, conf, container_ns())

    def h1_in_etcd() -> bool:
        return any(json.loads(v)["PublicIP"] == h1.ip for v in cluster.get_prefix(prefix).values())

    status = h1.state_dir / "overlay" / net / "status.json"
    wait_for(h1_in_etcd, 15, f"h1's lease back in etcd (status: {status.read_text()})")
    wait_for(lambda: json.loads(status.read_text())["state"] == "ready", 10, "h1's agent ready")
    wait_for(lambda: traffic.ping(c2, ip1), 10, "h2 -> the new container on h1")
