"""`netctl network create -d overlay` on one member; ls/inspect/rm on every member; the
conflist netctl writes is what any CNI runtime on a member uses; reload."""

# ruff: noqa: F811  (the fixtures shared with test_overlay.py are imported by name)
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import traffic
from tests.conftest import Netns, exec_plugin, short_id
from tests.integration.test_overlay import cluster, hosts, underlay, wait_for  # noqa: F401
from tests.overlay_kit import EtcdCluster, Host, netctl, write_daemon_json

pytestmark = pytest.mark.root


def conflist_plugin(host: Host, name: str) -> dict:
    path = host.netctl_root / "etc" / "netctl" / "net.d" / f"{name}.conflist"
    obj = json.loads(path.read_text())
    conf = dict(obj["plugins"][0])
    conf.update(cniVersion=obj["cniVersion"], name=obj["name"])
    return conf


def cni(plugin_dir: Path, host: Host, command: str, conf: dict, c: Netns, cid: str):
    return exec_plugin(
        plugin_dir / "overlay", command, conf, netns=c.path, container_id=cid, in_ns=host.ns,
        cni_path=f"{plugin_dir}:/usr/lib/cni", env_extra=host.env(),
    )  # fmt: skip


def test_create_on_one_member_seen_by_all_rm_refused_while_in_use(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    h1, h2 = hosts(), hosts()
    for h in (h1, h2):
        write_daemon_json(h, cluster)
    name = f"ovn{short_id(4)}"
    netctl(h1, "network", "create", "-d", "overlay", "--subnet", "10.56.0.0/16",
           "-o", "vxlan_id=5600", name)  # fmt: skip
    # every member lists it, with the same id, as a global overlay network
    rows = {}
    for h in (h1, h2):
        out = netctl(h, "network", "ls", "--format", "json").stdout
        nets = [json.loads(line) for line in out.splitlines() if line.strip()]
        row = next(n for n in nets if n["Name"] == name)
        assert row["Driver"] == "overlay" and row["Scope"] == "global"
        rows[h.ip] = row["ID"]
    assert len(set(rows.values())) == 1
    insp = json.loads(netctl(h2, "network", "inspect", name).stdout)[0]
    assert insp["Driver"] == "overlay"
    assert insp["IPAM"]["Config"][0]["Subnet"] == "10.56.0.0/16"
    assert insp["Options"]["vxlan_id"] == "5600"
    # a second create of the name, or of the VNI, is refused on any member
    dup = netctl(h2, "network", "create", "-d", "overlay", "--subnet", "10.57.0.0/16", name,
                 check=False)  # fmt: skip
    assert dup.returncode != 0 and "already exists" in dup.stderr
    dup = netctl(h2, "network", "create", "-d", "overlay", "--subnet", "10.57.0.0/16",
                 "-o", "vxlan_id=5600", f"{name}x", check=False)  # fmt: skip
    assert dup.returncode != 0 and "already used" in dup.stderr
    rng = netctl(h2, "network", "create", "-d", "overlay", "--subnet", "10.57.0.0/16",
                 "--ip-range", "10.57.1.0/24", f"{name}r", check=False)  # fmt: skip
    assert rng.returncode != 0 and "--ip-range is not supported" in rng.stderr, rng.stderr
    # the conflists netctl wrote on each member are what a CNI runtime runs
    c1, c2 = container_ns(), container_ns()
    r1 = cni(plugin_dir, h1, "ADD", conflist_plugin(h1, name), c1, "ctrn1")
    r2 = cni(plugin_dir, h2, "ADD", conflist_plugin(h2, name), c2, "ctrn2")
    assert r1.rc == 0 and r2.rc == 0, r1.stdout + r2.stdout
    ip2 = r2.json["ips"][0]["address"].split("/")[0]
    wait_for(lambda: traffic.ping(c1, ip2), 5, "c1 -> c2")
    assert c1.link("eth0")["mtu"] == 1450
    # rm on h2 is refused while h1 (or h2) has containers on the network
    counts = f"/pycni/overlay/endpoints/{name}/"
    wait_for(lambda: sorted(cluster.get_prefix(counts).values()) == ["1", "1"], 5,
             "endpoint counts published")  # fmt: skip
    rm = netctl(h2, "network", "rm", name, check=False)
    assert rm.returncode != 0 and "active endpoints" in rm.stderr, rm.stderr
    for h, c, cid in ((h1, c1, "ctrn1"), (h2, c2, "ctrn2")):
        assert cni(plugin_dir, h, "DEL", conflist_plugin(h, name), c, cid).rc == 0
    wait_for(lambda: sorted(cluster.get_prefix(counts).values()) == ["0", "0"], 5,
             "endpoint counts back to 0")  # fmt: skip
    # `system reload` re-programs from etcd: a peer entry flushed by hand comes back
    h1.ns.run("ip", "route", "flush", "dev", "ovx5600")
    assert "ovx5600" not in h1.ns.run("ip", "route")
    out = netctl(h1, "system", "reload").stdout
    assert name in out
    wait_for(lambda: "via" in h1.ns.run("ip", "route", "show", "dev", "ovx5600"), 5, "reload")
    # now rm works, on a member that did not create it; every member forgets it
    netctl(h2, "network", "rm", name)
    assert name not in netctl(h1, "network", "ls").stdout
    assert cluster.get_prefix(f"/pycni/overlay/networks/{name}") == {}
    # the agents leave the network (device gone) when told to reload or at their next renew
    netctl(h1, "system", "reload")
    wait_for(lambda: h1.ns.link("ovx5600") is None, 15, "h1's agent leaves the network")


SERVER = (
    "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
    " s.bind(('0.0.0.0', 8080)); s.listen(8)\n"
    "while True:\n c, a = s.accept(); c.sendall(('srv ' + a[0]).encode()); c.close()"
)
CLIENT = (
    "import socket, sys, time\n"
    "for _ in range(50):\n"
    " try:\n  s = socket.create_connection((sys.argv[1], 8080), 1); print(s.recv(100).decode()); break\n"
    " except OSError: time.sleep(0.1)"
)


def test_netctl_run_on_an_overlay_across_hosts(
    cluster: EtcdCluster, hosts: Callable[[], Host]
) -> None:
    """`netctl run --network <overlay>` on two members: the first container on each host
    starts that host's agent; a container on h1 talks TCP to one on h2 with its own
    address; `rm -f` releases everything."""
    h1, h2 = hosts(), hosts()
    for h in (h1, h2):
        write_daemon_json(h, cluster)
    name = f"ovr{short_id(4)}"
    netctl(h1, "network", "create", "-d", "overlay", "--subnet", "10.47.0.0/16", name)
    netctl(h2, "run", "-d", "--name", "srv", "--network", name, "--", "python3", "-c", SERVER)
    insp = json.loads(netctl(h2, "network", "inspect", name).stdout)[0]
    (srv,) = insp["Containers"].values()
    ip = srv["IPv4Address"].split("/")[0]
    out = netctl(h1, "run", "--rm", "--network", name, "--", "python3", "-c", CLIENT, ip).stdout
    assert out.startswith("srv 10.47."), out
    peer = out.split()[1]
    assert (
        peer != ip
        and peer.startswith("10.47.")
        and h1.lease(name)["subnet"].startswith(peer.rsplit(".", 1)[0])
    ), out  # no NAT across hosts: the server sees h1's container address
    netctl(h2, "rm", "-f", "srv")
    assert json.loads(netctl(h2, "network", "inspect", name).stdout)[0]["Containers"] == {}
    netctl(h1, "network", "rm", name)
