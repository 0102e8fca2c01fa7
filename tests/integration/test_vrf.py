"""vrf as a chained plugin, exec'd as a runtime does, in real namespaces. Kernels
without VRF support (ours: "Unknown device type") must get a clean refusal naming the
module and no change; where the kernel has it, the real behaviour is tested. One test
covers both, so the suite never skips."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Netns, short_id

pytestmark = pytest.mark.root


def vrf_supported() -> bool:
    ns = f"pytvrfprobe{short_id(6)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        proc = subprocess.run(
            ["ip", "-n", ns, "link", "add", "probe", "type", "vrf", "table", "10"],
            capture_output=True,
        )
        return proc.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def build(container_ns: Callable[[], Netns]) -> tuple[Netns, Netns, dict[str, Any]]:
    c, r = container_ns(), container_ns()
    for n, ifname in ((0, "eth0"), (1, "eth1")):
        c.run("ip", "link", "add", ifname, "type", "veth", "peer", "name", f"r{n}", "netns", r.name)
        r.run("ip", "addr", "add", f"10.8{3 + n}.0.1/24", "dev", f"r{n}")
        r.run("ip", "link", "set", f"r{n}", "up")
        c.run("ip", "addr", "add", f"10.8{3 + n}.0.5/24", "dev", ifname)
        c.run("ip", "link", "set", ifname, "up")
    c.run("ip", "addr", "add", "fd83::5/64", "dev", "eth0", "nodad")
    c.run("ip", "route", "add", "default", "via", "10.83.0.1", "dev", "eth0")
    c.run("ip", "route", "add", "198.51.100.0/24", "via", "10.83.0.1", "dev", "eth0")
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": c.path}],
        "ips": [
            {"address": "10.83.0.5/24", "gateway": "10.83.0.1", "interface": 0},
            {"address": "fd83::5/64", "interface": 0},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.83.0.1"}, {"dst": "198.51.100.0/24", "gw": "10.83.0.1"}],
    }  # fmt: skip
    return c, r, prev


def vrf_conf(prev: dict[str, Any] | None, **keys: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "vrfnet", "type": "vrf"}
    conf.update(keys)
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def state(c: Netns) -> Any:
    """Links and masters, addresses, routes (link-local IPv6 left out: it comes and goes
    with DAD on its own)."""
    return (
        sorted((x["ifname"], x.get("master")) for x in c.ip_json("link", "show")),
        sorted(
            (x["ifname"], a["local"], a["prefixlen"])
            for x in c.ip_json("addr", "show")
            for a in x.get("addr_info", [])
            if not a["local"].startswith("fe80")
        ),
        sorted(
            (r.get("table", "main"), r["dst"], r.get("gateway", ""), r.get("dev", ""))
            for fam in ("-4", "-6")
            for r in c.ip_json(fam, "route", "show", "table", "all")
            if not r["dst"].startswith(("fe80", "ff00", "multicast"))
        ),
    )


def test_vrf_add_check_del_or_clean_refusal(run_plugin, run_reference, container_ns) -> None:
    c, _r, prev = build(container_ns)

    def run(runner, verb: str, ifname: str = "eth0", p: Any = prev, **keys: Any):
        keys.setdefault("vrfname", "blue")
        return runner("vrf", verb, vrf_conf(p, **keys), netns=c.path, ifname=ifname,
                      container_id="v1")  # fmt: skip

    if not vrf_supported():
        before = state(c)
        for keys in ({}, {"table": 42}):
            err = run(run_plugin, "ADD", **keys).error
            assert err["code"] == 7, err
            assert "no VRF support" in err["msg"] and "modprobe vrf" in err["details"], err
            assert state(c) == before  # nothing created, nothing moved
        d = run(run_plugin, "DEL")
        assert d.rc == 0, d.stdout + d.stderr
        return

    # -- the kernel has VRFs: the real behaviour --
    a = run(run_plugin, "ADD")
    assert a.rc == 0, a.stdout + a.stderr
    assert {k: v for k, v in a.json.items() if k != "dns"} == prev
    vrf = c.link("blue")
    assert vrf is not None and vrf["linkinfo"]["info_kind"] == "vrf"
    table = vrf["linkinfo"]["info_data"]["table"]
    assert table == 1  # the first table no other VRF uses
    assert c.link("eth0")["master"] == "blue"
    assert "fd83::5/64" in c.addrs("eth0")  # the global IPv6 address survived
    routes = {(x["dst"], x.get("gateway")) for x in c.ip_json("route", "show", "table", str(table))}
    assert {("default", "10.83.0.1"), ("198.51.100.0/24", "10.83.0.1")} <= routes
    assert c.ip_json("route", "get", "198.51.100.7", "vrf", "blue")[0]["dev"] == "eth0"
    # real packets through the VRF (the socket bound to it, as `ping -I blue` does)
    c.run("ping", "-c", "1", "-W", "2", "-I", "blue", "10.83.0.1")
    chk = run(run_plugin, "CHECK")
    assert chk.rc == 0, chk.stdout + chk.stderr
    ref_chk = run(run_reference, "CHECK")
    assert ref_chk.rc == 0, ref_chk.stdout + ref_chk.stderr

    # an existing VRF with another table is refused; eth1 stays out
    err = run(run_plugin, "ADD", "eth1", table=table + 7).error
    assert err["code"] == 7 and "different routing table" in err["msg"]
    assert c.link("eth1").get("master") is None
    # the same VRF is reused for a second interface
    a2 = run(run_plugin, "ADD", "eth1", table=table)
    assert a2.rc == 0, a2.stdout + a2.stderr
    assert c.link("eth1")["master"] == "blue"
    # DEL of the first interface keeps the VRF (eth1 is still in it); the reference's
    # DEL of our second ADD removes it
    d = run(run_plugin, "DEL")
    assert d.rc == 0 and c.link("eth0").get("master") is None and c.link("blue") is not None
    d = run(run_reference, "DEL", "eth1")
    assert d.rc == 0, d.stdout + d.stderr
    assert c.link("blue") is None
    # and ours removes the reference's
    a3 = run(run_reference, "ADD", table=5)
    assert a3.rc == 0, a3.stdout + a3.stderr
    d = run(run_plugin, "DEL", table=5)
    assert d.rc == 0 and c.link("blue") is None


@pytest.mark.parametrize(
    ("keys", "needle"),
    [
        ({}, "vrf name"),
        ({"vrfname": ""}, "vrf name"),
        ({"vrfname": "a/b"}, "vrfname"),
        ({"vrfname": "x" * 16}, "vrfname"),
        ({"vrfname": "blue", "table": -1}, "table"),
        ({"vrfname": "blue", "table": "one"}, "table"),
        ({"vrfname": "eth1"}, "is not a VRF"),
    ],
)
def test_bad_input(run_plugin, container_ns, keys: dict[str, Any], needle: str) -> None:
    c, _r, prev = build(container_ns)
    before = state(c)
    res = run_plugin("vrf", "ADD", vrf_conf(prev, **keys), netns=c.path, container_id="v2")
    err = res.error
    assert err["code"] == 7 and needle in err["msg"] + err.get("details", ""), err
    assert state(c) == before


def test_not_chained_and_del_without_anything(run_plugin, container_ns) -> None:
    c, _r, _prev = build(container_ns)
    r = run_plugin("vrf", "ADD", vrf_conf(None, vrfname="blue"), netns=c.path, container_id="v3")
    assert r.error["code"] == 7 and "chained plugin" in r.error["msg"]
    d = run_plugin("vrf", "DEL", vrf_conf(None, vrfname="blue"), netns=c.path, container_id="v3")
    assert d.rc == 0, d.stdout + d.stderr
    d = run_plugin(
        "vrf", "DEL", vrf_conf(None, vrfname="blue"), netns="/var/run/netns/pyt-gone-vrf",
        container_id="v3",
    )  # fmt: skip
    assert d.rc == 0, d.stdout + d.stderr
