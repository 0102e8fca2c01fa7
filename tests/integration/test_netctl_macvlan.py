"""netctl's macvlan and ipvlan drivers, end to end: `network create -d macvlan|ipvlan
-o parent=...` as Docker spells it, the conflist it writes (run by the reference
plugins too: any CNI runtime can use it), `netctl run --network` on it with real
packets to the parent's LAN, and the refusals. netctl runs inside a throwaway node
namespace whose `mst0` (a veth end) is the parent; its peer sits in an "outside"
namespace at 10.94.0.1/24."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REFERENCE_DIR, _delete_netns, _make_netns, exec_plugin
from tests.integration.sublinks import kernel_has
from tests.integration.test_netctl_run import Netctl
from tests.traffic import server

pytestmark = pytest.mark.root
OUTSIDE = "10.94.0.1"


@pytest.fixture
def nc(tmp_path: Path) -> Iterator[Netctl]:
    node, out = _make_netns("n"), _make_netns("o")
    node.run("ip", "link", "add", "mst0", "type", "veth", "peer", "name", "up0",
             "netns", out.name)  # fmt: skip
    node.run("ip", "link", "set", "mst0", "up")
    out.run("ip", "addr", "add", f"{OUTSIDE}/24", "dev", "up0")
    out.run("ip", "link", "set", "up0", "up")
    n = Netctl(node, tmp_path)
    n.outside = out  # type: ignore[attr-defined]
    yield n
    for rec in n("ps", "-a", "-q", check=False).stdout.split():
        n("rm", "-f", rec, check=False)
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if str(tmp_path) in line.split()[4]
    ]
    for m in mounts:
        subprocess.run(["umount", "-l", m], check=False)
    _delete_netns(node)
    _delete_netns(out)
    assert not mounts, f"mounts left behind: {mounts}"


def conflist(nc: Netctl, name: str) -> dict[str, Any]:
    return json.loads((nc.root / "etc/netctl/net.d" / f"{name}.conflist").read_text())


def test_macvlan_network_create_run_inspect_rm(nc: Netctl, tmp_path: Path) -> None:
    nc("network", "create", "-d", "macvlan", "-o", "parent=mst0", "--subnet", "10.94.0.0/24",
       "--gateway", OUTSIDE, "-o", "macvlan_mode=bridge", "lan0")  # fmt: skip
    conf = conflist(nc, "lan0")
    [plugin] = conf["plugins"]
    assert plugin["type"] == "macvlan" and plugin["master"] == "mst0"
    assert plugin["mode"] == "bridge" and plugin["capabilities"] == {"mac": True}
    assert plugin["ipam"]["type"] == "host-local"
    assert plugin["ipam"]["routes"] == [{"dst": "0.0.0.0/0", "gw": OUTSIDE}]
    [insp] = json.loads(nc("network", "inspect", "lan0").stdout)
    assert insp["Driver"] == "macvlan" and insp["Options"]["parent"] == "mst0"
    assert insp["IPAM"]["Config"] == [{"Subnet": "10.94.0.0/24", "Gateway": OUTSIDE}]
    assert "macvlan" in nc("network", "ls").stdout

    # any CNI runtime can use it: the reference plugins run the conflist's plugin as is
    c = nc.node
    cont = _make_netns("c")
    try:
        ref = {**plugin, "cniVersion": conf["cniVersion"], "name": conf["name"]}
        ref["cniVersion"] = "1.0.0"  # the reference 1.1.1 speaks up to 1.0.0
        r = exec_plugin(REFERENCE_DIR / "macvlan", "ADD", ref, netns=cont.path,
                        container_id="refc", cni_path=str(REFERENCE_DIR), in_ns=c)  # fmt: skip
        assert r.rc == 0, r.stdout + r.stderr
        cont.run("ping", "-c", "1", "-W", "2", OUTSIDE)  # raises when it gets no answer
        d = exec_plugin(REFERENCE_DIR / "macvlan", "DEL", ref, netns=cont.path,
                        container_id="refc", cni_path=str(REFERENCE_DIR), in_ns=c)  # fmt: skip
        assert d.rc == 0, d.stdout + d.stderr
    finally:
        _delete_netns(cont)

    # netctl run on it: a macvlan child of mst0 with a LAN address, real packets out
    client = (f"import socket; s = socket.create_connection(('{OUTSIDE}', 8080), 3); "
              "print(s.recv(100).decode())")  # fmt: skip
    with server(nc.outside, OUTSIDE, 8080, "lan"):  # type: ignore[attr-defined]
        out = nc("run", "--rm", "--network", "lan0", "--mac-address", "02:42:0a:5e:00:09",
                 "--", "sh", "-c", "ip -d -o link show eth0; ip -4 -o addr show eth0; "
                 f"ip route; {sys.executable} -c \"{client}\"").stdout  # fmt: skip
    assert "macvlan mode bridge" in out and "02:42:0a:5e:00:09" in out
    assert "inet 10.94.0." in out and f"default via {OUTSIDE} dev eth0" in out
    assert "lan 10.94.0." in out  # the outside saw the container's own LAN address
    assert nc.leases() == [] and nc.netns_files() == []
    assert [x["ifname"] for x in nc.node.ip_json("link", "show")] == ["lo", "mst0"]
    # --ip picks the LAN address (host-local's IP argument, as on bridge networks)
    out = nc("run", "--rm", "--network", "lan0", "--ip", "10.94.0.77", "--", "ip", "-4", "-o",
             "addr", "show", "eth0").stdout  # fmt: skip
    assert "inet 10.94.0.77/24" in out and nc.leases() == []
    # a second network on the same parent is refused, as Docker does
    res = nc("network", "create", "-d", "macvlan", "-o", "parent=mst0", "--subnet",
             "10.95.0.0/24", "lan1", check=False)  # fmt: skip
    assert res.returncode == 125 and "already using parent interface mst0" in res.stderr
    nc("network", "rm", "lan0")
    assert not (nc.root / "etc/netctl/net.d/lan0.conflist").exists()


def test_ipvlan_network_and_run(nc: Netctl) -> None:
    nc("network", "create", "-d", "ipvlan", "-o", "parent=mst0", "-o", "ipvlan_mode=l3",
       "--subnet", "10.94.0.0/24", "ipv0")  # fmt: skip
    [plugin] = conflist(nc, "ipv0")["plugins"]
    assert plugin["type"] == "ipvlan" and plugin["mode"] == "l3" and plugin["master"] == "mst0"
    assert "capabilities" not in plugin
    res = nc("run", "--rm", "--network", "ipv0", "--", "ip", "-d", "-o", "link", "show",
             "eth0", check=False)  # fmt: skip
    if not kernel_has("ipvlan"):
        # the kernel has no ipvlan: the run fails with the plugin's words, nothing stays
        assert res.returncode != 0
        assert "no ipvlan support" in res.stderr and "ipvlan" in res.stderr, res.stderr
        assert nc.leases() == [] and nc.netns_files() == []
        assert nc("ps", "-a", "-q").stdout.strip() == ""
    else:
        assert res.returncode == 0, res.stderr
        assert "ipvlan" in res.stdout and "l3" in res.stdout
        assert nc.leases() == [] and nc.netns_files() == []
    nc("network", "rm", "ipv0")


BAD = [
    (["-d", "macvlan", "x1"], "the macvlan driver needs a parent interface"),
    (["-d", "macvlan", "-o", "parent=nosuch0", "x1"],
     "-o parent interface was not found on the host: nosuch0"),
    (["-d", "macvlan", "-o", "parent=mst0", "-o", "macvlan_mode=l2", "x1"],
     'the requested macvlan mode "l2" is not valid'),
    (["-d", "ipvlan", "-o", "parent=mst0", "-o", "ipvlan_mode=bridge", "x1"],
     'the requested ipvlan mode "bridge" is not valid'),
    (["-d", "ipvlan", "-o", "parent=mst0", "-o", "ipvlan_flag=private", "x1"],
     'ipvlan flag "private" is not supported'),
    (["-d", "macvlan", "-o", "parent=mst0", "-o", "com.docker.network.bridge.name=x", "x1"],
     'unknown option "com.docker.network.bridge.name" for driver macvlan'),
    (["-d", "macvlan", "-o", "parent=a/b", "x1"], "an interface name has 1-15 characters"),
    (["-d", "macvlan", "-o", "parent=mst0", "--mtu", "20", "x1"], "the MTU must be between"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_options_write_nothing(nc: Netctl, args: list[str], message: str) -> None:
    res = nc("network", "create", *args, check=False)
    assert res.returncode == 125 and message in res.stderr, res.stderr
    assert res.stdout == "" and not (nc.root / "etc/netctl/net.d/x1.conflist").exists()


def test_vlan_parent_is_created_or_refused(nc: Netctl) -> None:
    """Docker's `-o parent=eth0.10`: VLAN 10 of eth0 made for the network (and removed
    with it); a kernel without 802.1q gets a refusal that names the module."""
    args = ["network", "create", "-d", "macvlan", "-o", "parent=mst0.10", "--subnet",
            "10.96.0.0/24", "v10"]  # fmt: skip
    res = nc(*args, check=False)
    if not kernel_has("vlan", "id", "5"):
        assert res.returncode == 125 and "kernel module 8021q" in res.stderr, res.stderr
        assert nc.node.link("mst0.10") is None
        assert not (nc.root / "etc/netctl/net.d/v10.conflist").exists()
        return
    assert res.returncode == 0, res.stderr
    link = nc.node.link("mst0.10")
    assert link is not None and link["linkinfo"]["info_data"]["id"] == 10
    nc("network", "rm", "v10")
    assert nc.node.link("mst0.10") is None


def test_auto_subnet_and_internal(nc: Netctl) -> None:
    nc("network", "create", "-d", "macvlan", "-o", "parent=mst0", "--internal", "auto0")
    [plugin] = conflist(nc, "auto0")["plugins"]
    [[rng]] = plugin["ipam"]["ranges"]
    assert rng["subnet"].startswith("172.") and "routes" not in plugin["ipam"]
    [insp] = json.loads(nc("network", "inspect", "auto0").stdout)
    assert insp["Internal"] is True and insp["Driver"] == "macvlan"
    out = nc("run", "--rm", "--network", "auto0", "--", "ip", "route").stdout
    assert "default" not in out and "dev eth0" in out
    nc("network", "rm", "auto0")
    assert nc.leases() == []


def test_detached_container_inspect_and_rm_in_use(nc: Netctl) -> None:
    nc("network", "create", "-d", "macvlan", "-o", "parent=mst0", "-o", "macvlan_mode=private",
       "--subnet", "10.94.0.0/24", "lan2")  # fmt: skip
    nc("run", "-d", "--name", "m1", "--network", "lan2", "--", "sleep", "60")
    [insp] = json.loads(nc("network", "inspect", "lan2").stdout)
    [entry] = insp["Containers"].values()
    assert entry["Name"] == "m1" and entry["IPv4Address"].startswith("10.94.0.")
    assert entry["MacAddress"]
    res = nc("network", "rm", "lan2", check=False)
    assert res.returncode == 125 and "has active endpoints" in res.stderr
    nc("rm", "-f", "m1")
    assert nc.leases() == [] and nc.netns_files() == []
    nc("network", "rm", "lan2")


def test_multus_style_chain(nc: Netctl, tmp_path: Path) -> None:
    """macvlan + static IPAM + tuning + sbr, the chain Multus users write, run by
    `netctl cni` (libcni's order and cache) with our plugins only: the address, the
    tuned sysctl and the source-based routing rule are there; DEL removes them all."""
    netdir = tmp_path / "chains"
    netdir.mkdir()
    (netdir / "lanchain.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "lanchain",
        "plugins": [
            {"type": "macvlan", "master": "mst0", "mode": "bridge",
             "ipam": {"type": "static",
                      "addresses": [{"address": "10.94.0.50/24", "gateway": OUTSIDE}],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.eth1.arp_announce": "2"},
             "dataDir": str(tmp_path / "tuning")},
            {"type": "sbr"},
        ],
    }))  # fmt: skip
    cont = _make_netns("c")
    try:
        out = nc("cni", "add", "lanchain", "--conf-dir", str(netdir), "--netns", cont.path,
                 "--id", "chain1", "--ifname", "eth1").stdout  # fmt: skip
        result = json.loads(out)
        assert result["ips"][0]["address"] == "10.94.0.50/24"
        assert cont.link("eth1")["linkinfo"]["info_kind"] == "macvlan"
        assert cont.sysctl("net.ipv4.conf.eth1.arp_announce") == "2"
        rules = cont.ip_json("rule", "show")
        assert any(r.get("src") == "10.94.0.50" for r in rules), rules
        # sbr moved the routes to a table of their own, reached from the address
        cont.run("ping", "-c", "1", "-W", "2", "-I", "10.94.0.50", OUTSIDE)
        nc("cni", "check", "lanchain", "--conf-dir", str(netdir), "--netns", cont.path,
           "--id", "chain1", "--ifname", "eth1")  # fmt: skip
        nc("cni", "del", "lanchain", "--conf-dir", str(netdir), "--netns", cont.path,
           "--id", "chain1", "--ifname", "eth1")  # fmt: skip
        assert cont.link("eth1") is None
        assert not any(r.get("src") == "10.94.0.50" for r in cont.ip_json("rule", "show"))
    finally:
        _delete_netns(cont)
