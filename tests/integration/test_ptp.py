"""ptp: kernel state, traffic, cross-DEL with the reference, bad input and rollback,
exec'd as a runtime does inside a throwaway host namespace."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns, PluginRun
from tests.traffic import connect, ping, server, wire_outside

pytestmark = pytest.mark.root


def ptp_conf(tmp: Path, version: str = "1.0.0", ranges: Any = None, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": version,
        "name": "pnet",
        "type": "ptp",
        "ipam": {
            "type": "host-local",
            "ranges": ranges or [[{"subnet": "10.77.0.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": str(tmp / "ipam"),
        },
    }
    conf.update(extra)
    return conf


class Ptp:
    def __init__(self, run_plugin, run_reference, host: Netns, tmp: Path) -> None:
        self.run_plugin, self.run_reference, self.host, self.tmp = (
            run_plugin, run_reference, host, tmp,
        )  # fmt: skip

    def run(self, verb: str, conf: dict, ns: Netns | None, cid: str, ref: bool = False,
            netns: str | None = None, **kw: Any) -> PluginRun:  # fmt: skip
        runner = self.run_reference if ref else self.run_plugin
        path = netns if netns is not None else (ns.path if ns else "")
        return runner("ptp", verb, conf, netns=path, container_id=cid, in_ns=self.host, **kw)

    def add(self, conf: dict, ns: Netns, cid: str, **kw: Any) -> dict[str, Any]:
        res = self.run("ADD", conf, ns, cid, **kw)
        assert res.rc == 0, res.stdout + res.stderr
        return res.json

    def leases(self) -> list[str]:
        d = self.tmp / "ipam" / "pnet"
        if not d.exists():
            return []
        return sorted(p.name for p in d.iterdir()
                      if p.name != "lock" and not p.name.startswith(("last_reserved", ".")))  # fmt: skip

    def veths(self) -> list[str]:
        return [x["ifname"] for x in self.host.ip_json("link", "show", "type", "veth")]

    def records(self, state_dir: Path) -> list[str]:
        d = state_dir / "ptp" / "pnet"
        return sorted(os.listdir(d)) if d.exists() else []


@pytest.fixture
def ptp(run_plugin, run_reference, host_ns, tmp_path) -> Ptp:
    return Ptp(run_plugin, run_reference, host_ns, tmp_path)


def _host_view(p: Ptp, veth: str) -> tuple[list[str], list[tuple[str, str]]]:
    addrs = [a for a in p.host.addrs(veth) if not a.startswith("fe80")]
    routes = sorted((r["dst"], r.get("dev", "")) for fam in ("-4", "-6")
                    for r in p.host.ip_json(fam, "route", "show", "dev", veth)
                    if not r["dst"].startswith(("fe80", "multicast")))  # fmt: skip
    return addrs, routes


def _cont_routes(c: Netns, fam: str = "-4") -> set[tuple[str, str, str]]:
    return {(r["dst"], r.get("gateway", ""), r.get("prefsrc", ""))
            for r in c.ip_json(fam, "route", "show")}  # fmt: skip


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_check_del_kernel_state(version: str, ptp: Ptp, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = ptp_conf(tmp_path, version, mtu=1400)
    out = ptp.add(conf, c, "c1")
    assert out["cniVersion"] == version
    host_if, cont_if = out["interfaces"]
    assert host_if["name"].startswith("veth") and "sandbox" not in host_if
    assert cont_if == {"name": "eth0", "mac": c.link("eth0")["address"], "sandbox": c.path}
    assert out["ips"][0]["address"] == "10.77.0.2/24" and out["ips"][0]["gateway"] == "10.77.0.1"
    assert out["ips"][0]["interface"] == 1
    # the container: its address, no kernel subnet route, gw/32 on link, subnet via gw
    link = c.link("eth0")
    assert link["linkinfo"]["info_kind"] == "veth" and link["mtu"] == 1400
    assert c.addrs("eth0") == ["10.77.0.2/24"] or "10.77.0.2/24" in c.addrs("eth0")
    routes = _cont_routes(c)
    assert routes == {
        ("10.77.0.1", "", "10.77.0.2"),
        ("10.77.0.0/24", "10.77.0.1", "10.77.0.2"),
        ("default", "10.77.0.1", ""),
    }, routes
    # the host: the gateway /32 on the host end, a /32 route to the container
    hl = ptp.host.link(host_if["name"])
    assert hl["mtu"] == 1400 and hl["address"] == host_if["mac"] and "UP" in hl["flags"]
    assert _host_view(ptp, host_if["name"]) == (["10.77.0.1/32"], [("10.77.0.2", "")])
    assert ptp.host.sysctl("net.ipv4.ip_forward") == "1"
    assert ptp.leases() == ["10.77.0.2"]
    if version != "0.3.1":
        # the reference binary here speaks up to 1.0.0
        for ref in (False, True) if version != "1.1.0" else (False,):
            chk = ptp.run("CHECK", dict(conf, prevResult=out), c, "c1", ref=ref)
            assert chk.rc == 0, (ref, chk.stdout + chk.stderr)
    d = ptp.run("DEL", conf, c, "c1")
    assert d.rc == 0, d.stdout + d.stderr
    assert c.link("eth0") is None and ptp.veths() == [] and ptp.leases() == []
    assert ptp.run("DEL", conf, c, "c1").rc == 0  # twice: nothing to delete is success


def test_traffic_between_containers_and_host(ptp: Ptp, container_ns, tmp_path) -> None:
    a, b = container_ns(), container_ns()
    conf = ptp_conf(tmp_path)
    ptp.add(conf, a, "a")
    ptp.add(conf, b, "b")
    assert ping(a, "10.77.0.1") and ping(a, "10.77.0.3")  # b is routed by the host
    with server(b, "10.77.0.3", 7200, "b"):
        assert connect(a, "10.77.0.3", 7200) == "b 10.77.0.2"
    with server(ptp.host, "10.77.0.1", 7201, "h"):
        assert connect(b, "10.77.0.1", 7201) == "h 10.77.0.3"
    # the host reaches each container by its /32 route; neighbours are learnt on the
    # host ends only (no ARP between the containers: they never share a link)
    assert ping(ptp.host, "10.77.0.2")
    neigh = a.ip_json("neigh", "show", "dev", "eth0")
    assert {n["dst"] for n in neigh} <= {"10.77.0.1"}


def test_dual_stack(ptp: Ptp, container_ns, tmp_path) -> None:
    a, b = container_ns(), container_ns()
    conf = ptp_conf(tmp_path, ranges=[[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd77::/64"}]])
    conf["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    out = ptp.add(conf, a, "a")
    ptp.add(conf, b, "b")
    assert [i["address"] for i in out["ips"]] == ["10.77.0.2/24", "fd77::2/64"]
    assert "fd77::2/64" in a.addrs("eth0")
    r6 = _cont_routes(a, "-6")
    assert ("fd77::1", "", "fd77::2") in r6 and ("fd77::/64", "fd77::1", "fd77::2") in r6
    assert ("default", "fd77::1", "") in r6
    assert not [r for r in r6 if r[0] == "fd77::/64" and not r[1]], r6  # no kernel route
    host_veth = out["interfaces"][0]["name"]
    addrs, routes = _host_view(ptp, host_veth)
    assert sorted(addrs) == ["10.77.0.1/32", "fd77::1/128"]
    assert ("fd77::2", "") in routes
    assert ptp.host.sysctl("net.ipv6.conf.all.forwarding") == "1"
    assert ping(a, "fd77::1") and ping(a, "fd77::3")
    with server(b, "fd77::3", 7202, "b6"):
        assert connect(a, "fd77::3", 7202) == "b6 fd77::2"
    chk = ptp.run("CHECK", dict(conf, prevResult=out), a, "a")
    assert chk.rc == 0, chk.stdout
    assert ptp.run("DEL", conf, a, "a").rc == 0 and ptp.run("DEL", conf, b, "b").rc == 0
    assert ptp.veths() == [] and ptp.leases() == []


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_ip_masq(backend: str, ptp: Ptp, container_ns, tmp_path) -> None:
    outside, c = container_ns(), container_ns()
    wire_outside(ptp.host, outside)
    conf = ptp_conf(tmp_path, ipMasq=True, ipMasqBackend=backend)
    out = ptp.add(conf, c, "m1")
    with server(outside, "198.18.0.2", 7300, "o"):
        assert connect(c, "198.18.0.2", 7300) == "o 198.18.0.1"  # masqueraded to the node
    with server(ptp.host, "10.77.0.1", 7301, "gw"):
        assert connect(c, "10.77.0.1", 7301) == "gw 10.77.0.2"  # not inside its own subnet
    assert ptp.run("CHECK", dict(conf, prevResult=out), c, "m1").rc == 0
    assert ptp.run("DEL", conf, None, "m1").rc == 0  # without netns: masquerade still removed
    ptp.run("DEL", conf, c, "m1")
    ptp.add(ptp_conf(tmp_path), c, "m2")  # the same address, no ipMasq
    with server(outside, "198.18.0.2", 7302, "o"):
        assert connect(c, "198.18.0.2", 7302, timeout=1) is None  # no NAT: no way back


def test_check_reports_drift(ptp: Ptp, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = ptp_conf(tmp_path, "1.0.0")
    out = ptp.add(conf, c, "c1")
    c.run("ip", "route", "del", "10.77.0.0/24")
    err = ptp.run("CHECK", dict(conf, prevResult=out), c, "c1").error
    assert "route 10.77.0.0/24 via 10.77.0.1 missing" in err["msg"], err
    ptp.host.run("ip", "addr", "del", "10.77.0.1/32", "dev", out["interfaces"][0]["name"])
    err = ptp.run("CHECK", dict(conf, prevResult=out), c, "c1").error
    assert "gateway 10.77.0.1/32 missing" in err["msg"], err
    c.run("ip", "link", "del", "eth0")
    err = ptp.run("CHECK", dict(conf, prevResult=out), c, "c1").error
    assert "not found" in err["msg"]
    other = ptp.run("CHECK", dict(conf, prevResult=out), c, "zz")
    assert other.error["code"] == 3  # never added
    nores = ptp.run("CHECK", conf, c, "c1").error
    assert nores["code"] == 7 and "prevResult" in nores["msg"]


def test_cross_del_with_the_reference(ptp: Ptp, container_ns, tmp_path, state_dir) -> None:
    a, b = container_ns(), container_ns()
    conf = ptp_conf(tmp_path, "1.0.0")
    ours = ptp.add(conf, a, "a")
    theirs = ptp.add(conf, b, "b", ref=True)
    # the same layout from both
    assert _cont_routes(a) == {(x.replace(".3", ".2"), y, z.replace(".3", ".2"))
                               for x, y, z in _cont_routes(b)}  # fmt: skip
    assert _host_view(ptp, theirs["interfaces"][0]["name"]) == (
        ["10.77.0.1/32"],
        [("10.77.0.3", "")],
    )
    assert ptp.leases() == ["10.77.0.2", "10.77.0.3"]
    # our CHECK of theirs, their DEL of ours, our DEL of theirs
    assert ptp.run("CHECK", dict(conf, prevResult=theirs), b, "b").rc == 0
    d = ptp.run("DEL", conf, a, "a", ref=True)
    assert d.rc == 0, d.stdout
    assert a.link("eth0") is None and ptp.leases() == ["10.77.0.3"]
    d = ptp.run("DEL", conf, b, "b")
    assert d.rc == 0, d.stdout
    assert b.link("eth0") is None and ptp.veths() == [] and ptp.leases() == []
    assert ours["interfaces"][0]["name"] not in ptp.veths()
    # our record of the attachment the reference removed goes at GC
    gc = dict(conf, cniVersion="1.1.0")
    gc["cni.dev/valid-attachments"] = []
    assert ptp.run_plugin("ptp", "GC", gc, in_ns=ptp.host).rc == 0
    assert ptp.records(state_dir) == []


def test_del_after_the_netns_is_gone(ptp: Ptp, container_ns, tmp_path, state_dir) -> None:
    c = container_ns()
    conf = ptp_conf(tmp_path)
    ptp.add(conf, c, "c1")
    path = c.path
    os.system(f"ip netns del {c.name}")
    d = ptp.run("DEL", conf, None, "c1", netns=path)
    assert d.rc == 0, d.stdout
    assert ptp.leases() == [] and ptp.veths() == [] and ptp.records(state_dir) == []


def test_gc_removes_unknown_attachments(ptp: Ptp, container_ns, tmp_path, state_dir) -> None:
    a, b = container_ns(), container_ns()
    conf = ptp_conf(tmp_path, "1.1.0", ipMasq=True)
    ptp.add(conf, a, "a")
    out_b = ptp.add(conf, b, "b")
    # b's runtime forgot it and b's namespace is kept alive elsewhere: GC removes the
    # host end (the container end with it), its address and its masquerade
    gc = dict(conf)
    gc["cni.dev/valid-attachments"] = [{"containerID": "a", "ifname": "eth0"}]
    res = ptp.run_plugin("ptp", "GC", gc, in_ns=ptp.host)
    assert res.rc == 0, res.stdout
    assert ptp.leases() == ["10.77.0.2"] and len(ptp.veths()) == 1
    assert b.link("eth0") is None and ptp.records(state_dir) == ["a-eth0.json"]
    err = ptp.run("CHECK", dict(conf, prevResult=out_b), b, "b").error
    assert err["code"] in (3, 999)
    assert ptp.run_plugin("ptp", "STATUS", conf, in_ns=ptp.host).rc == 0


@pytest.mark.parametrize("point", ["after-ipam", "after-veth", "after-addresses", "after-routes",
                                   "after-firewall"])  # fmt: skip
def test_failed_add_rolls_back(point: str, ptp: Ptp, container_ns, tmp_path, state_dir) -> None:
    c = container_ns()
    conf = ptp_conf(tmp_path, ipMasq=True)
    res = ptp.run("ADD", conf, c, "c1", env_extra={"PYCNI_FAULT": f"fail:{point}"})
    assert res.error["msg"] == f"injected failure at {point}"
    assert ptp.leases() == [] and ptp.veths() == [] and c.link("eth0") is None
    assert ptp.records(state_dir) == []
    nft = ptp.host.nft_json()["nftables"]
    assert not any("10.77.0.2" in str(x) for x in nft if "element" in x or "rule" in x)
    ptp.add(conf, c, "c2")  # works at once: no stale lock, lease or record
    assert len(ptp.leases()) == 1


def test_existing_ifname_is_refused(ptp: Ptp, container_ns, tmp_path) -> None:
    c = container_ns()
    c.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "x0")
    err = ptp.run("ADD", ptp_conf(tmp_path), c, "c1").error
    assert err["code"] == 4 and "already exists" in err["msg"]
    assert ptp.leases() == [] and ptp.veths() == []


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"ipMasq": 1}, "ipMasq"),
        ({"ipMasq": "true"}, "ipMasq"),
        ({"ipMasqBackend": "pf"}, "ipMasqBackend"),
        ({"ipMasqBackend": 3}, "ipMasqBackend"),
        ({"mtu": "1500"}, "mtu"),
        ({"mtu": 70000}, "mtu"),
        ({"mtu": 10}, "mtu"),
        ({"mtu": -1}, "mtu"),
        ({"ipam": None}, "IPAM"),
        ({"ipam": "host-local"}, "ipam"),
        ({"ipam": {"type": 5}}, "ipam.type"),
        ({"ipam": {"type": "../../bin/sh"}}, "invalid plugin name"),
        ({"ipam": {"type": "no-such-ipam"}}, "failed to find plugin"),
        ({"dns": {"nameservers": "1.1.1.1"}}, "nameservers"),
        ({"dns": "x"}, "dns"),
        ({"ipam": {"type": "static", "addresses": [{"address": "10.77.0.9/24"}]}}, "gateway"),
        ({"ipam": {"type": "static", "addresses": [{"address": "10.77.0.9/24",
                                                    "gateway": "10.77.0.9"}]}}, "own address"),
    ],
)  # fmt: skip
def test_bad_config(extra: dict, key: str, ptp: Ptp, container_ns, tmp_path, state_dir) -> None:
    c = container_ns()
    conf = ptp_conf(tmp_path, **extra)
    if conf["ipam"] is None:
        del conf["ipam"]
    before = ptp.host.ip_json("link", "show")
    err = ptp.run("ADD", conf, c, "c1").error
    assert err["code"] in (6, 7), err
    assert key.lower() in (err["msg"] + err.get("details", "")).lower(), err
    assert ptp.host.ip_json("link", "show") == before and c.link("eth0") is None
    assert ptp.leases() == [] and ptp.records(state_dir) == []


def test_bad_environment(ptp: Ptp, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = ptp_conf(tmp_path)
    assert ptp.run("ADD", conf, c, "c1", args="FOO=bar").error["code"] == 4
    err = ptp.run("ADD", conf, None, "c1", netns="/var/run/netns/pyt-no-such").error
    assert err["code"] == 3 and "does not exist" in err["msg"], err
    err = ptp.run("ADD", conf, None, "c1", netns="/etc/hostname").error
    assert err["code"] == 4, err
    assert ptp.leases() == [] and ptp.veths() == []
    assert ptp.run("ADD", b"{not json", c, "c1").error["code"] == 6


@pytest.mark.parametrize("point", ["after-veth", "after-routes", "after-firewall"])
def test_killed_add_is_cleaned_by_del(
    point: str, ptp: Ptp, container_ns, tmp_path, state_dir
) -> None:
    c = container_ns()
    conf = ptp_conf(tmp_path, ipMasq=True)
    res = ptp.run("ADD", conf, c, "k1", env_extra={"PYCNI_FAULT": point})  # SIGKILL there
    assert res.rc in (-9, 137), res
    assert ptp.veths() and ptp.leases() and ptp.records(state_dir)
    d = ptp.run("DEL", conf, None, "k1")  # without the netns: the record names the veth
    assert d.rc == 0, d.stdout
    assert ptp.veths() == [] and ptp.leases() == [] and ptp.records(state_dir) == []
    nft = ptp.host.nft_json()["nftables"]
    assert not any("10.77.0.2" in str(x) for x in nft if "element" in x or "rule" in x)
