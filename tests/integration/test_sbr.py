"""sbr as a chained plugin, exec'd as a runtime does, in real namespaces: a container
with two interfaces, each towards its own router namespace, and the same far address
behind both routers; traffic from each source address must leave through its own
interface. Routes the reference drops are kept; rules and DEL interoperate with the
reference plugin."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Netns, PluginRun
from tests.traffic import connect, server

pytestmark = pytest.mark.root

FAR4, FAR6 = "192.0.2.1", "fd99::1"


@dataclass
class World:
    c: Netns
    r1: Netns
    r2: Netns
    prev0: dict[str, Any]  # eth0 -> r1: IPAM routes only, no gateway in ips (plugins#893)
    prev1: dict[str, Any]  # eth1 -> r2: a gateway in ips, no routes


def build(container_ns: Callable[[], Netns]) -> World:
    c, r1, r2 = container_ns(), container_ns(), container_ns()
    for n, (r, ifname) in enumerate(((r1, "eth0"), (r2, "eth1")), start=1):
        c.run("ip", "link", "add", ifname, "type", "veth", "peer", "name", "r0", "netns", r.name)
        r.run("ip", "addr", "add", f"10.8{n}.0.1/24", "dev", "r0")
        r.run("ip", "addr", "add", f"{FAR4}/32", "dev", "lo")
        r.run("ip", "link", "set", "r0", "up")
        c.run("ip", "addr", "add", f"10.8{n}.0.5/24", "dev", ifname)
        c.run("ip", "link", "set", ifname, "up")
    r1.run("ip", "addr", "add", "fd81::1/64", "dev", "r0", "nodad")
    r1.run("ip", "addr", "add", "fe80::1/64", "dev", "r0", "nodad")
    r1.run("ip", "addr", "add", f"{FAR6}/128", "dev", "lo")
    c.run("ip", "addr", "add", "fd81::5/64", "dev", "eth0", "nodad")
    # what the interface plugin did with its IPAM routes
    c.run("ip", "route", "add", "default", "via", "10.81.0.1", "dev", "eth0")
    c.run("ip", "route", "add", "198.51.100.0/24", "via", "10.81.0.1", "dev", "eth0")
    c.run("ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
    prev0 = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": c.path}],
        "ips": [
            {"address": "10.81.0.5/24", "interface": 0},
            {"address": "fd81::5/64", "interface": 0},
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.81.0.1"},
            {"dst": "198.51.100.0/24", "gw": "10.81.0.1"},
            {"dst": "::/0", "gw": "fe80::1"},
        ],
    }
    prev1 = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth1", "sandbox": c.path}],
        "ips": [{"address": "10.82.0.5/24", "gateway": "10.82.0.1", "interface": 0}],
    }
    return World(c, r1, r2, prev0, prev1)


def sbr_conf(prev: dict[str, Any] | None, **keys: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "sbrnet", "type": "sbr"}
    conf.update(keys)
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def run(runner, w: World, verb: str, ifname: str, prev, **keys: Any) -> PluginRun:
    return runner("sbr", verb, sbr_conf(prev, **keys), netns=w.c.path, ifname=ifname,
                  container_id="sbr1")  # fmt: skip


def rules(ns: Netns) -> list[tuple[str, int]]:
    out = []
    for fam in ("-4", "-6"):
        for r in ns.ip_json(fam, "rule", "show"):
            if "src" in r and r["src"] != "all":
                table = r["table"]
                out.append((r["src"], int(table) if table.isdigit() else table))
    return sorted(out)


def table(ns: Netns, fam: str, t: int | str) -> set[tuple[str, str]]:
    return {
        (r["dst"], r.get("gateway", "") or r.get("prefsrc", ""))
        for r in ns.ip_json(fam, "route", "show", "table", str(t))
        if r.get("type", "unicast") == "unicast"
    }


def dev_of(ns: Netns, dst: str, src: str) -> str:
    return ns.ip_json("route", "get", dst, "from", src)[0]["dev"]


def test_routes_by_source_and_traffic(run_plugin, container_ns) -> None:
    w = build(container_ns)
    for ifname, prev in (("eth0", w.prev0), ("eth1", w.prev1)):
        r = run(run_plugin, w, "ADD", ifname, prev)
        assert r.rc == 0, r.stdout + r.stderr
        assert {k: v for k, v in r.json.items() if k != "dns"} == prev  # passthrough
    assert rules(w.c) == [("10.81.0.5", 100), ("10.82.0.5", 102), ("fd81::5", 101)]
    assert table(w.c, "-4", 100) == {
        ("default", "10.81.0.1"),
        ("198.51.100.0/24", "10.81.0.1"),
        ("10.81.0.0/24", "10.81.0.5"),
    }
    # the default route via a link-local gateway matches no subnet: the reference
    # drops it, we keep it
    assert ("default", "fe80::1") in table(w.c, "-6", 101)
    assert {"fd81::/64", "fe80::/64"} <= {d for d, _ in table(w.c, "-6", 101)}
    assert table(w.c, "-4", 102) == {("default", "10.82.0.1"), ("10.82.0.0/24", "10.82.0.5")}
    main4 = w.c.ip_json("-4", "route", "show")
    assert main4 == [], main4
    # eth1 has no IPv6 address here: its link-local route stays in main
    main6 = {(r["dst"], r["dev"]) for r in w.c.ip_json("-6", "route", "show")}
    assert ("fe80::/64", "eth1") in main6 and ("fe80::/64", "eth0") not in main6

    # the kernel's choice, and real packets: the same far address answers differently
    # through each router
    assert dev_of(w.c, FAR4, "10.81.0.5") == "eth0"
    assert dev_of(w.c, FAR4, "10.82.0.5") == "eth1"
    with server(w.r1, FAR4, 7001, "r1"), server(w.r2, FAR4, 7001, "r2"):
        assert connect(w.c, FAR4, 7001, source="10.81.0.5") == "r1 10.81.0.5"
        assert connect(w.c, FAR4, 7001, source="10.82.0.5") == "r2 10.82.0.5"
    with server(w.r1, FAR6, 7002, "r1"):
        assert connect(w.c, FAR6, 7002, source="fd81::5") == "r1 fd81::5"

    for ifname, prev in (("eth0", w.prev0), ("eth1", w.prev1)):
        chk = run(run_plugin, w, "CHECK", ifname, prev)
        assert chk.rc == 0, chk.stdout + chk.stderr
    d = run(run_plugin, w, "DEL", "eth0", w.prev0)
    assert d.rc == 0, d.stdout + d.stderr
    assert rules(w.c) == [("10.82.0.5", 102)]
    chk = run(run_plugin, w, "CHECK", "eth0", w.prev0)
    assert "no rule from 10.81.0.5" in chk.error["msg"]
    d = run(run_plugin, w, "DEL", "eth1", w.prev1)
    assert d.rc == 0 and rules(w.c) == []
    again = run(run_plugin, w, "DEL", "eth1", None)
    assert again.rc == 0, again.stdout + again.stderr


def test_reference_drops_what_we_keep(run_reference, container_ns) -> None:
    """The same ADD by the reference 1.1.1 loses the IPv6 default route via fe80::1 (it
    is in no table afterwards): what test_routes_by_source_and_traffic keeps is real."""
    w = build(container_ns)
    r = run(run_reference, w, "ADD", "eth0", w.prev0)
    assert r.rc == 0, r.stdout + r.stderr
    everywhere = {
        (x["dst"], x.get("gateway", "")) for x in w.c.ip_json("-6", "route", "show", "table", "all")
    }
    assert ("default", "fe80::1") not in everywhere


def test_cross_del_with_reference(run_plugin, run_reference, container_ns) -> None:
    for adder, deleter in ((run_plugin, run_reference), (run_reference, run_plugin)):
        w = build(container_ns)
        r = run(adder, w, "ADD", "eth1", w.prev1)
        assert r.rc == 0, r.stdout + r.stderr
        assert rules(w.c) == [("10.82.0.5", 100)]
        assert table(w.c, "-4", 100) == {("default", "10.82.0.1"), ("10.82.0.0/24", "10.82.0.5")}
        d = run(deleter, w, "DEL", "eth1", w.prev1)
        assert d.rc == 0, d.stdout + d.stderr
        assert rules(w.c) == []


def test_fixed_table_moves_nothing(run_plugin, container_ns) -> None:
    w = build(container_ns)
    before = w.c.ip_json("route", "show")
    r = run(run_plugin, w, "ADD", "eth0", w.prev0, table=500)
    assert r.rc == 0, r.stdout + r.stderr
    assert rules(w.c) == [("10.81.0.5", 500), ("fd81::5", 500)]
    assert w.c.ip_json("route", "show") == before
    chk = run(run_plugin, w, "CHECK", "eth0", w.prev0, table=500)
    assert chk.rc == 0, chk.stdout + chk.stderr
    d = run(run_plugin, w, "DEL", "eth0", w.prev0, table=500)
    assert d.rc == 0 and rules(w.c) == []


def test_static_gateway_and_source_hints(run_plugin, container_ns) -> None:
    w = build(container_ns)
    r = run(run_plugin, w, "ADD", "eth1", w.prev1, gateways=["10.82.0.1"], addSourceHints=True)
    assert r.rc == 0, r.stdout + r.stderr
    assert ("default", "10.82.0.1") in table(w.c, "-4", 100)
    main = {(x["dst"], x.get("prefsrc", ""), x["dev"]) for x in w.c.ip_json("-4", "route", "show")}
    # eth0's routes are not ours to touch; eth1's subnet route stays in main with src
    assert ("10.82.0.0/24", "10.82.0.5", "eth1") in main
    assert not [m for m in main if m[2] == "eth1" and m[0] == "default"]


@pytest.mark.parametrize(
    ("keys", "needle"),
    [
        ({"gateways": ["10.82.0.1", "10.82.0.2"]}, "multiple IPv4"),
        ({"gateways": ["a", "b", "c"]}, "more than 2"),
        ({"gateways": ["not-an-ip"]}, "invalid static gateway"),
        ({"gateways": "10.82.0.1"}, "gateways"),
        ({"table": "main"}, "table"),
        ({"table": 0}, "table"),
        ({"addSourceHints": "yes"}, "addSourceHints"),
    ],
)
def test_bad_input(run_plugin, container_ns, keys: dict[str, Any], needle: str) -> None:
    w = build(container_ns)
    before = (rules(w.c), w.c.ip_json("route", "show", "table", "all"))
    r = run(run_plugin, w, "ADD", "eth1", w.prev1, **keys)
    err = r.error
    assert err["code"] == 7 and needle in err["msg"] + err.get("details", ""), err
    assert (rules(w.c), w.c.ip_json("route", "show", "table", "all")) == before


def test_not_chained_no_ips_and_gone_netns(run_plugin, container_ns) -> None:
    w = build(container_ns)
    r = run(run_plugin, w, "ADD", "eth1", None)
    assert r.error["code"] == 7 and "chained plugin" in r.error["msg"]
    r = run(run_plugin, w, "ADD", "eth1", {"cniVersion": "1.0.0", "ips": []})
    assert r.error["code"] == 7 and "No IP addresses" in r.error["msg"]
    assert rules(w.c) == []
    ok = run(run_plugin, w, "ADD", "eth1", w.prev1)
    assert ok.rc == 0, ok.stdout + ok.stderr
    path = w.c.path
    subprocess.run(["ip", "netns", "del", w.c.name], check=True)
    d = run_plugin("sbr", "DEL", sbr_conf(w.prev1), netns=path, ifname="eth1", container_id="x")
    assert d.rc == 0, d.stdout + d.stderr


def second_address(w: World, gateway: str) -> dict[str, Any]:
    """eth1 gets 10.82.0.6/24 too; prevResult lists both, the second with `gateway`."""
    w.c.run("ip", "addr", "add", "10.82.0.6/24", "dev", "eth1")
    return {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth1", "sandbox": w.c.path}],
        "ips": [
            {"address": "10.82.0.5/24", "gateway": "10.82.0.1", "interface": 0},
            {"address": "10.82.0.6/24", "gateway": gateway, "interface": 0},
        ],
    }


def test_two_addresses_in_one_subnet(run_plugin, container_ns) -> None:
    """Each address gets its own table, and both tables get the subnet's routes (main
    is emptied only after every address took its copy)."""
    w = build(container_ns)
    prev = second_address(w, "10.82.0.1")
    r = run(run_plugin, w, "ADD", "eth1", prev)
    assert r.rc == 0, r.stdout + r.stderr
    assert rules(w.c) == [("10.82.0.5", 100), ("10.82.0.6", 101)]
    for t in (100, 101):
        assert {d for d, _ in table(w.c, "-4", t)} == {"default", "10.82.0.0/24"}
    with server(w.r2, FAR4, 7003, "r2"):
        for src in ("10.82.0.5", "10.82.0.6"):
            assert connect(w.c, FAR4, 7003, source=src) == f"r2 {src}"
    d = run(run_plugin, w, "DEL", "eth1", prev)
    assert d.rc == 0 and rules(w.c) == []


def test_unreachable_gateway_undoes_everything(run_plugin, container_ns) -> None:
    """The second address's gateway is not on the link: ADD fails after the first
    address's rule and table were made, and takes them back; main is untouched."""
    w = build(container_ns)
    prev = second_address(w, "10.99.0.1")
    before = (rules(w.c), w.c.ip_json("route", "show", "table", "all"))
    err = run(run_plugin, w, "ADD", "eth1", prev).error
    assert err["code"] == 7 and "not reachable" in err["msg"], err
    assert (rules(w.c), w.c.ip_json("route", "show", "table", "all")) == before
