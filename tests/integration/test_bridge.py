"""bridge: kernel state, traffic, bad input and rollback, exec'd as a runtime does."""

from __future__ import annotations

import concurrent.futures
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns, PluginRun, short_id
from tests.traffic import connect, ping, server

pytestmark = pytest.mark.root


def bridge_conf(
    tmp: Path, version: str = "1.0.0", subnet: str = "10.66.0.0/24", **extra: Any
) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": version,
        "name": "tnet",
        "type": "bridge",
        "bridge": "pytbr0",
        "isDefaultGateway": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}]],
            "dataDir": str(tmp / "ipam"),
        },
    }
    conf.update(extra)
    return conf


class Bridge:
    """Runs the bridge plugin inside one throwaway host namespace."""

    def __init__(self, run_plugin, host: Netns, tmp: Path) -> None:
        self.run_plugin = run_plugin
        self.host = host
        self.tmp = tmp

    def add(
        self, conf: dict, ns: Netns, cid: str = "", ifname: str = "eth0", **kw: Any
    ) -> PluginRun:
        return self.run_plugin(
            "bridge",
            "ADD",
            conf,
            netns=ns.path,
            container_id=cid or ns.name[-8:],
            ifname=ifname,
            in_ns=self.host,
            **kw,
        )

    def delete(
        self, conf: dict, ns: Netns | None, cid: str, ifname: str = "eth0", **kw: Any
    ) -> PluginRun:
        return self.run_plugin(
            "bridge",
            "DEL",
            conf,
            netns=ns.path if ns else "",
            container_id=cid,
            ifname=ifname,
            in_ns=self.host,
            **kw,
        )

    def check(self, conf: dict, prev: dict, ns: Netns, cid: str, ifname: str = "eth0") -> PluginRun:
        return self.run_plugin(
            "bridge",
            "CHECK",
            dict(conf, prevResult=prev),
            netns=ns.path,
            container_id=cid,
            ifname=ifname,
            in_ns=self.host,
        )

    def leases(self) -> list[str]:
        d = self.tmp / "ipam" / "tnet"
        return (
            sorted(
                p.name
                for p in d.iterdir()
                if p.name != "lock" and not p.name.startswith("last_reserved")
            )
            if d.exists()
            else []
        )

    def host_veths(self) -> list[str]:
        return [link["ifname"] for link in self.host.ip_json("link", "show", "type", "veth")]


@pytest.fixture
def br(run_plugin, host_ns, tmp_path) -> Bridge:
    return Bridge(run_plugin, host_ns, tmp_path)


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_check_del(version: str, br: Bridge, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = bridge_conf(tmp_path, version)
    res = br.add(conf, c, cid="c1")
    assert res.rc == 0, res.stdout + res.stderr
    out = res.json
    assert out["cniVersion"] == version
    names = [i["name"] for i in out["interfaces"]]
    assert (
        names[0] == "pytbr0"
        and names[1].startswith("veth")
        and len(names[1]) == 12
        and names[2] == "eth0"
    )
    assert out["interfaces"][2]["sandbox"] == c.path and "sandbox" not in out["interfaces"][0]
    ip = out["ips"][0]
    assert ip["interface"] == 2 and ip["address"] == "10.66.0.2/24" and ip["gateway"] == "10.66.0.1"
    if version < "1.0.0":
        assert ip["version"] == "4"
    assert {"dst": "0.0.0.0/0", "gw": "10.66.0.1"} in out["routes"]
    # kernel state, read back with iproute2
    bridge = br.host.link("pytbr0")
    assert (
        bridge["linkinfo"]["info_kind"] == "bridge"
        and bridge["address"] == out["interfaces"][0]["mac"]
    )
    assert "10.66.0.1/24" in br.host.addrs("pytbr0")
    veth = br.host.link(names[1])
    assert veth["master"] == "pytbr0" and "UP" in veth["flags"]
    assert br.host.sysctl(f"net/ipv6/conf/{names[1]}/accept_ra") == "0"
    assert br.host.sysctl("net/ipv6/conf/pytbr0/accept_ra") == "0"
    assert br.host.sysctl("net/ipv4/ip_forward") == "1"
    eth0 = c.link("eth0")
    assert (
        eth0["linkinfo"]["info_kind"] == "veth" and eth0["address"] == out["interfaces"][2]["mac"]
    )
    assert "10.66.0.2/24" in c.addrs("eth0")
    assert any(r["dst"] == "default" and r["gateway"] == "10.66.0.1" for r in c.routes())
    assert c.sysctl("net/ipv4/conf/eth0/arp_notify") == "1"
    assert br.leases() == ["10.66.0.2"]
    if version >= "0.4.0":
        chk = br.check(conf, out, c, "c1")
        assert chk.rc == 0, chk.stdout
    assert ping(c, "10.66.0.1")
    # DEL, twice, and once more without a netns: all succeed, nothing left
    for netns in (c, c, None):
        res = br.delete(conf, netns, "c1")
        assert res.rc == 0 and res.stdout == "", res.stdout
    assert c.link("eth0") is None and br.host_veths() == [] and br.leases() == []
    if version >= "0.4.0":
        chk = br.check(conf, out, c, "c1")
        assert chk.rc != 0 and ("eth0" in chk.error["msg"] or "c1" in chk.error["msg"])


def test_check_reports_what_is_missing(br: Bridge, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = bridge_conf(tmp_path)
    out = br.add(conf, c, cid="c1").json
    c.run("ip", "route", "del", "default")
    br.host.run("ip", "link", "set", out["interfaces"][1]["name"], "nomaster")
    msg = br.check(conf, out, c, "c1").error["msg"]
    assert "route 0.0.0.0/0 via 10.66.0.1 missing" in msg
    assert f"host end {out['interfaces'][1]['name']} is not attached to bridge pytbr0" in msg
    chk = br.run_plugin("bridge", "CHECK", conf, netns=c.path, container_id="c1", in_ns=br.host)
    assert chk.error["msg"] == "Required prevResult missing"


def test_containers_talk_over_the_bridge(br: Bridge, container_ns, tmp_path) -> None:
    a, b = container_ns(), container_ns()
    conf = bridge_conf(tmp_path)
    ip_a = br.add(conf, a, cid="a").json["ips"][0]["address"].split("/")[0]
    ip_b = br.add(conf, b, cid="b").json["ips"][0]["address"].split("/")[0]
    assert ip_a != ip_b
    with server(b, ip_b, 8080, "b"):
        assert connect(a, ip_b, 8080) == f"b {ip_a}"
    with server(None if False else br.host, "10.66.0.1", 9000, "gw"):
        assert connect(a, "10.66.0.1", 9000) == f"gw {ip_a}"


def test_dual_stack_and_ipv6(br: Bridge, container_ns, tmp_path) -> None:
    a, b = container_ns(), container_ns()
    conf = bridge_conf(tmp_path)
    conf["ipam"]["ranges"] = [[{"subnet": "10.67.0.0/24"}], [{"subnet": "fd66:1::/64"}]]
    out_a = br.add(conf, a, cid="a").json
    br.add(conf, b, cid="b")
    assert [ip["address"] for ip in out_a["ips"]] == ["10.67.0.2/24", "fd66:1::2/64"]
    assert {"dst": "::/0", "gw": "fd66:1::1"} in out_a["routes"]
    assert "fd66:1::1/64" in br.host.addrs("pytbr0")
    assert br.host.sysctl("net/ipv6/conf/all/forwarding") == "1"
    # no DAD wait without enabledad: the address is usable at once
    assert "tentative" not in a.run("ip", "-6", "addr", "show", "dev", "eth0")
    with server(b, "fd66:1::3", 8080, "b6"):
        assert connect(a, "fd66:1::3", 8080) == "b6 fd66:1::2"
    assert ping(a, "fd66:1::1")
    chk = br.check(conf, out_a, a, "a")
    assert chk.rc == 0, chk.stdout


def test_link_options(br: Bridge, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = bridge_conf(
        tmp_path,
        mtu=1400,
        hairpinMode=True,
        portIsolation=True,
        runtimeConfig={"mac": "02:42:0a:42:00:09"},
    )
    out = br.add(conf, c, cid="c1").json
    host_veth = out["interfaces"][1]["name"]
    assert c.link("eth0")["mtu"] == 1400 and c.link("eth0")["address"] == "02:42:0a:42:00:09"
    assert out["interfaces"][2]["mac"] == "02:42:0a:42:00:09"
    info = br.host.link(host_veth)
    assert info["mtu"] == 1400
    slave = info["linkinfo"]["info_slave_data"]
    assert slave["hairpin"] is True and slave["isolated"] is True
    assert br.host.link("pytbr0")["mtu"] == 1400
    c2 = container_ns()
    br.add(bridge_conf(tmp_path, bridge="pytbr1", promiscMode=True), c2, cid="c2")
    assert "PROMISC" in br.host.link("pytbr1")["flags"]


def test_mac_from_cni_args_and_args_cni(br: Bridge, container_ns, tmp_path) -> None:
    a, b = container_ns(), container_ns()
    res = br.add(bridge_conf(tmp_path), a, cid="a", args="IgnoreUnknown=1;MAC=02:42:0a:42:00:0a")
    assert a.link("eth0")["address"] == "02:42:0a:42:00:0a", res.stdout
    br.add(
        bridge_conf(tmp_path, args={"cni": {"mac": "02:42:0a:42:00:0b"}}),
        b,
        cid="b",
        args="IgnoreUnknown=1;MAC=02:42:0a:42:00:0c",
    )
    assert b.link("eth0")["address"] == "02:42:0a:42:00:0b"


def test_gateway_not_default(br: Bridge, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = bridge_conf(tmp_path, isDefaultGateway=False, isGateway=True)
    out = br.add(conf, c, cid="c1").json
    assert "routes" not in out and not any(r["dst"] == "default" for r in c.routes())
    assert "10.66.0.1/24" in br.host.addrs("pytbr0")
    c2 = container_ns()
    br.add(bridge_conf(tmp_path, bridge="pytbr1", isDefaultGateway=False), c2, cid="c2")
    # not a gateway: the bridge carries no address of the subnet
    assert not any(a.startswith("10.66.") for a in br.host.addrs("pytbr1"))


def _no_state(br: Bridge, c: Netns, theirs: tuple[str, ...] = ()) -> None:
    assert br.leases() == [], br.leases()
    assert [v for v in br.host_veths() if v not in theirs] == []
    assert c.link("eth0") is None


def test_existing_non_bridge_is_refused(br: Bridge, container_ns, tmp_path) -> None:
    c = container_ns()
    br.host.run("ip", "link", "add", "pytbr0", "type", "veth", "peer", "name", "pytbr0p")
    err = br.add(bridge_conf(tmp_path), c, cid="c1").error
    assert err["code"] == 7 and err["msg"] == "'pytbr0' already exists but is not a bridge"
    _no_state(br, c, theirs=("pytbr0", "pytbr0p"))


def test_bridge_with_another_address(br: Bridge, container_ns, tmp_path) -> None:
    c = container_ns()
    br.host.run("ip", "link", "add", "pytbr0", "type", "bridge")
    br.host.run("ip", "addr", "add", "10.99.0.1/24", "dev", "pytbr0")
    err = br.add(bridge_conf(tmp_path), c, cid="c1").error
    assert (
        err["code"] == 7
        and err["msg"] == "'pytbr0' already has an IP address different from 10.66.0.1/24"
    )
    _no_state(br, c)
    res = br.add(bridge_conf(tmp_path, forceAddress=True), c, cid="c1")
    assert res.rc == 0, res.stdout
    assert br.host.addrs("pytbr0") == ["10.66.0.1/24"] or "10.99.0.1/24" not in br.host.addrs(
        "pytbr0"
    )


def test_ifname_already_in_container(br: Bridge, container_ns, tmp_path) -> None:
    c = container_ns()
    c.run("ip", "link", "add", "eth0", "type", "bridge")
    err = br.add(bridge_conf(tmp_path), c, cid="c1").error
    assert err["code"] == 4 and "eth0" in err["msg"] and "already exists" in err["msg"]
    assert br.leases() == [] and br.host_veths() == []
    assert c.link("eth0")["linkinfo"]["info_kind"] == "bridge"  # theirs, untouched


@pytest.mark.parametrize("point", ["after-ipam", "after-veth", "after-addresses", "after-routes"])
def test_failure_after_ipam_rolls_everything_back(
    point: str, br: Bridge, container_ns, tmp_path
) -> None:
    c = container_ns()
    res = br.add(bridge_conf(tmp_path), c, cid="c1", env_extra={"PYCNI_FAULT": f"fail:{point}"})
    assert res.error["msg"] == f"injected failure at {point}"
    _no_state(br, c)
    # and the plugin works again at once (no stale lock, no stale lease)
    res = br.add(bridge_conf(tmp_path), c, cid="c2")
    assert res.rc == 0 and len(br.leases()) == 1


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"bridge": 5}, "bridge"),
        ({"bridge": "a" * 16}, "bridge"),
        ({"bridge": "br/0"}, "bridge"),
        ({"isGateway": "yes"}, "isGateway"),
        ({"ipMasq": 1}, "ipMasq"),
        ({"mtu": "1500"}, "mtu"),
        ({"mtu": 70000}, "mtu"),
        ({"mtu": 10}, "mtu"),
        ({"vlan": 5000}, "vlan"),
        ({"vlan": -1}, "vlan"),
        ({"hairpinMode": True, "promiscMode": True}, "hairpin"),
        ({"ipMasqBackend": "pf"}, "ipMasqBackend"),
        ({"runtimeConfig": {"mac": "zz:zz"}}, "MAC"),
        ({"runtimeConfig": {"mac": "01:00:5e:00:00:01"}}, "multicast"),
        ({"ipam": "host-local"}, "ipam"),
        ({"ipam": {"type": "../../bin/sh"}}, "invalid plugin name"),
        ({"ipam": {"type": "no-such-ipam"}}, "failed to find plugin"),
        ({"disableContainerInterface": True}, "disableContainerInterface"),
        ({"dns": {"nameservers": "1.1.1.1"}}, "nameservers"),
    ],
)
def test_bad_config(extra: dict, key: str, br: Bridge, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = bridge_conf(tmp_path, **extra)
    before = br.host.ip_json("link", "show")
    res = br.add(conf, c, cid="c1")
    err = res.error
    assert err["code"] in (6, 7), err
    assert key.lower() in (err["msg"] + err.get("details", "")).lower(), err
    assert br.host.ip_json("link", "show") == before
    _no_state(br, c)


def test_unknown_cni_args_need_ignore_unknown(br: Bridge, container_ns, tmp_path) -> None:
    c = container_ns()
    err = br.add(bridge_conf(tmp_path), c, cid="c1", args="FOO=bar").error
    assert err["code"] == 4 and 'unknown args ["FOO=bar"]' in err["msg"]
    _no_state(br, c)
    assert br.add(bridge_conf(tmp_path), c, cid="c1", args="FOO=bar;IgnoreUnknown=1").rc == 0


def test_vlan(br: Bridge, container_ns, tmp_path) -> None:
    """VLAN tagging needs CONFIG_BRIDGE_VLAN_FILTERING. Where the kernel has it, the
    port gets the VLAN as PVID/untagged; where it does not (this CI's kernel), ADD
    fails cleanly with a message saying so, and leaves nothing behind."""
    c = container_ns()
    res = br.add(bridge_conf(tmp_path, vlan=42), c, cid="c1")
    if res.rc == 0:
        veth = res.json["interfaces"][1]["name"]
        assert '"vlan":42' in br.host.run("bridge", "-j", "vlan", "show", "dev", veth).replace(
            " ", ""
        )
    else:
        err = res.error
        assert err["code"] == 7 and "VLAN" in err["msg"]
        _no_state(br, c)


def test_parallel_adds(br: Bridge, container_ns, tmp_path) -> None:
    conf = bridge_conf(tmp_path, subnet="10.68.0.0/24")
    nss = [container_ns() for _ in range(32)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda n: br.add(conf, n[1], cid=f"p{n[0]}"), enumerate(nss)))
    assert all(r.rc == 0 for r in results), [r.stdout for r in results if r.rc]
    addrs = [r.json["ips"][0]["address"] for r in results]
    assert len(set(addrs)) == 32
    assert len(br.host_veths()) == 32
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        dels = list(pool.map(lambda n: br.delete(conf, n[1], f"p{n[0]}"), enumerate(nss)))
    assert all(r.rc == 0 for r in dels)
    assert br.leases() == [] and br.host_veths() == []


def test_del_without_netns_releases_the_address(br: Bridge, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = bridge_conf(tmp_path)
    br.add(conf, c, cid="c1")
    os.system(f"ip netns del {c.name}")
    assert br.delete(conf, None, "c1").rc == 0
    assert br.leases() == [] and br.host_veths() == []


def test_del_removes_the_links_when_ipam_fails(br: Bridge, container_ns, tmp_path) -> None:
    """The links go in a thread of their own while IPAM is released: a failed IPAM DEL
    (its lock held) is reported with its code, the links are gone all the same, and a
    second DEL finishes the job."""
    import fcntl

    c = container_ns()
    conf = bridge_conf(tmp_path)
    br.add(conf, c, cid="c1")
    assert br.leases() == ["10.66.0.2"] and len(br.host_veths()) == 1
    fd = os.open(tmp_path / "ipam" / "tnet" / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        res = br.delete(conf, c, "c1", env_extra={"PYCNI_IPAM_LOCK_TIMEOUT": "0.2"})
    finally:
        os.close(fd)
    assert res.rc != 0 and res.error["code"] == 11, res.stdout
    assert "IPAM lock" in res.error["msg"]
    assert br.host_veths() == [] and c.link("eth0") is None
    assert br.leases() == ["10.66.0.2"]
    assert br.delete(conf, c, "c1").rc == 0
    assert br.leases() == []


def test_gc_and_status(br: Bridge, container_ns, tmp_path) -> None:
    conf = bridge_conf(tmp_path, "1.1.0")
    a, b = container_ns(), container_ns()
    br.add(conf, a, cid="a")
    br.add(conf, b, cid="b")
    gc = dict(conf)
    gc["cni.dev/valid-attachments"] = [{"containerID": "a", "ifname": "eth0"}]
    res = br.run_plugin("bridge", "GC", gc, in_ns=br.host)
    assert res.rc == 0, res.stdout
    assert br.leases() == ["10.66.0.2"]
    res = br.run_plugin("bridge", "STATUS", conf, in_ns=br.host)
    assert res.rc == 0, res.stdout


def test_result_is_valid_json_for_every_version(br: Bridge, container_ns, tmp_path) -> None:
    for version in ("0.2.0", "0.1.0"):
        c = container_ns()
        out = br.add(
            bridge_conf(tmp_path, version, subnet="10.69.0.0/24", bridge=f"pytb{short_id(4)}"),
            c,
            cid=f"v{version[2]}",
        ).json
        assert out["ip4"]["ip"].startswith("10.69.0.") and out["ip4"]["gateway"] == "10.69.0.1"
        json.dumps(out)


def test_enabledad_waits_for_dad_and_address_is_usable(br: Bridge, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = bridge_conf(tmp_path, enabledad=True)
    conf["ipam"]["ranges"] = [[{"subnet": "fd6a::/64"}]]
    res = br.add(conf, c, cid="d1")
    assert res.rc == 0, res.stdout
    assert c.sysctl("net/ipv6/conf/eth0/accept_dad") == "1"
    shown = c.run("ip", "-6", "addr", "show", "dev", "eth0")
    assert "fd6a::2/64" in shown and "tentative" not in shown  # DAD finished before ADD returned


def test_disable_container_interface_is_l2_only(br: Bridge, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = bridge_conf(tmp_path, disableContainerInterface=True)
    del conf["ipam"]
    conf["isDefaultGateway"] = False
    out = br.add(conf, c, cid="l2").json
    assert "ips" not in out
    link = c.link("eth0")
    assert link is not None and "UP" not in link["flags"]
    assert c.addrs("eth0") == [] or all(a.startswith("fe80") for a in c.addrs("eth0"))
    assert br.host.link(out["interfaces"][1]["name"])["master"] == "pytbr0"


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_ip_masq_both_backends(backend: str, br: Bridge, container_ns, tmp_path) -> None:
    from tests.traffic import wire_outside

    outside, c = container_ns(), container_ns()
    wire_outside(br.host, outside)
    conf = bridge_conf(tmp_path, ipMasq=True, ipMasqBackend=backend)
    out = br.add(conf, c, cid="m1").json
    with server(outside, "198.18.0.2", 7100, "o"):
        assert connect(c, "198.18.0.2", 7100) == "o 198.18.0.1"  # masqueraded to the node
    with server(br.host, "10.66.0.1", 7101, "gw"):
        assert connect(c, "10.66.0.1", 7101) == "gw 10.66.0.2"  # not inside its own subnet
    assert br.check(conf, out, c, "m1").rc == 0
    assert br.delete(conf, None, "m1").rc == 0  # DEL without netns still removes the masquerade
    with server(outside, "198.18.0.2", 7102, "o"):
        # the route back to 10.66.0.0/24 does not exist outside: without NAT, no answer
        assert connect(c, "198.18.0.2", 7102, timeout=1) is None


def test_reference_firewall_plugin_after_our_bridge(
    br: Bridge, run_reference, container_ns, tmp_path
) -> None:
    c = container_ns()
    conf = bridge_conf(tmp_path)
    prev = br.add(conf, c, cid="f1").json
    fw = {
        "cniVersion": "1.0.0",
        "name": "tnet",
        "type": "firewall",
        "backend": "iptables",
        "prevResult": prev,
    }
    res = run_reference("firewall", "ADD", fw, netns=c.path, container_id="f1", in_ns=br.host)
    assert res.rc == 0, res.stdout + res.stderr
    assert "CNI-FORWARD" in br.host.run("iptables-save", "-t", "filter")
    with server(br.host, "10.66.0.1", 7200, "gw"):
        assert connect(c, "10.66.0.1", 7200) == "gw 10.66.0.2"
    assert (
        run_reference("firewall", "DEL", fw, netns=c.path, container_id="f1", in_ns=br.host).rc == 0
    )
    assert br.delete(conf, c, "f1").rc == 0


def test_check_after_netns_or_bridge_deleted(br: Bridge, container_ns, tmp_path) -> None:
    a, b = container_ns(), container_ns()
    conf = bridge_conf(tmp_path)
    out_a = br.add(conf, a, cid="a").json
    out_b = br.add(conf, b, cid="b").json
    br.host.run("ip", "link", "del", "pytbr0")  # someone deletes the bridge
    msg = br.check(conf, out_a, a, "a").error["msg"]
    assert "bridge pytbr0 not found" in msg
    os.system(f"ip netns del {b.name}")  # the namespace disappears under a live attachment
    err = br.check(conf, out_b, b, "b").error
    assert err["code"] == 3 and b.path in err["msg"]  # container unknown: nothing left to check
    # DEL still succeeds for both and releases everything
    assert br.delete(conf, a, "a").rc == 0 and br.delete(conf, b, "b").rc == 0
    assert br.leases() == [] and br.host_veths() == []


@pytest.mark.parametrize("ipam_path", ["exec-ours", "reference"])
def test_ipam_by_exec_gives_the_same_result(
    ipam_path: str, br: Bridge, container_ns, tmp_path, plugin_dir
) -> None:
    """In-process IPAM (our host-local found in CNI_PATH) and exec'd IPAM (forced, or the
    reference host-local first in CNI_PATH) give identical results and leases."""
    from tests.conftest import REFERENCE_DIR

    c1, c2 = container_ns(), container_ns()
    conf = bridge_conf(tmp_path)
    inproc = br.add(conf, c1, cid="p1").json
    kw: dict[str, Any] = (
        {"env_extra": {"PYCNI_IPAM_EXEC": "1"}}
        if ipam_path == "exec-ours"
        else {"cni_path": f"{REFERENCE_DIR}:{plugin_dir}"}
    )
    other = br.add(conf, c2, cid="p2", **kw).json
    strip = lambda r: {k: v for k, v in r.items() if k != "interfaces"}  # noqa: E731
    assert strip(inproc)["routes"] == strip(other)["routes"]
    assert (
        inproc["ips"][0]["address"] == "10.66.0.2/24"
        and other["ips"][0]["address"] == "10.66.0.3/24"
    )
    assert (tmp_path / "ipam/tnet/10.66.0.3").read_bytes() == b"p2\r\neth0"
    assert br.delete(conf, c2, "p2", **kw).rc == 0 and br.leases() == ["10.66.0.2"]
