"""Networks made by `netctl network create`, attached with `netctl cni add`, and real
packets: what must flow (same network, gateway, outside through NAT) and what must not
(another network, the outside from an internal network, a sibling when icc=false).
Also the isolation plugin on its own, with hostile bridge names."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns
from tests.integration.test_network_cli import net_dir, netctl
from tests.traffic import connect, ping, server, wire_outside

pytestmark = pytest.mark.root


def create(host: Netns, root: Path, name: str, *args: str) -> dict[str, Any]:
    netctl(host, root, "network", "create", name, *args)
    return json.loads((net_dir(root) / f"{name}.conflist").read_text())


def attach(host: Netns, root: Path, network: str, c: Netns, cid: str) -> dict[str, str]:
    """`netctl cni add`; returns the container's addresses by family ("4", "6")."""
    res = json.loads(
        netctl(host, root, "cni", "add", network, "--netns", c.path, "--id", cid).stdout
    )
    out = {}
    for ip in res["ips"]:
        iface = ipaddress.ip_interface(ip["address"])
        out[str(iface.version)] = str(iface.ip)
    return out


def reach(src: Netns, dst: Netns, ip: str, port: int = 8080) -> tuple[bool, bool]:
    """(ping answered, TCP answered) from src to a server on dst's address ip."""
    with server(dst, ip, port, tag="pong"):
        tcp = connect(src, ip, port, timeout=1.0)
    return ping(src, ip), tcp is not None and tcp.startswith("pong")


def default_routes(c: Netns, family: str = "-4") -> list[dict]:
    return [r for r in c.ip_json(family, "route", "show") if r.get("dst") == "default"]


def test_attach_gets_an_address_and_the_default_route(host_ns, container_ns, tmp_path) -> None:
    c = container_ns()
    create(host_ns, tmp_path, "mybr0", "--subnet", "172.26.0.0/16", "--gateway", "172.26.0.1")
    res = json.loads(
        netctl(host_ns, tmp_path, "cni", "add", "mybr0", "--netns", c.path, "--id", "c1").stdout
    )
    [ipc] = res["ips"]
    assert ipaddress.ip_interface(ipc["address"]) in ipaddress.ip_network("172.26.0.0/16")
    assert ipc["gateway"] == "172.26.0.1"
    assert [r.get("gateway") for r in default_routes(c)] == ["172.26.0.1"]
    assert c.addrs("eth0")[0] == ipc["address"]
    assert ping(c, "172.26.0.1")
    netctl(host_ns, tmp_path, "cni", "check", "mybr0", "--netns", c.path, "--id", "c1")
    netctl(host_ns, tmp_path, "cni", "del", "mybr0", "--netns", c.path, "--id", "c1")
    assert c.link("eth0") is None


def test_networks_are_isolated_ipv4_and_ipv6(host_ns, container_ns, tmp_path) -> None:
    create(host_ns, tmp_path, "n1", "--subnet", "10.61.0.0/24", "--subnet", "fd00:61::/64")
    create(host_ns, tmp_path, "n2", "--subnet", "10.62.0.0/24", "--subnet", "fd00:62::/64")
    a1, a2, b1 = container_ns(), container_ns(), container_ns()
    ip_a1 = attach(host_ns, tmp_path, "n1", a1, "a1")
    ip_a2 = attach(host_ns, tmp_path, "n1", a2, "a2")
    ip_b1 = attach(host_ns, tmp_path, "n2", b1, "b1")
    for fam in ("4", "6"):
        assert reach(a1, a2, ip_a2[fam]) == (True, True), f"same network, IPv{fam}"
        assert reach(a1, b1, ip_b1[fam]) == (False, False), f"n1 -> n2, IPv{fam}"
        assert reach(b1, a2, ip_a2[fam]) == (False, False), f"n2 -> n1, IPv{fam}"
        assert reach(a2, a1, ip_a1[fam]) == (True, True)
    # the host itself still reaches both networks (that is not forwarded traffic)
    assert ping(host_ns, ip_b1["4"]) and ping(host_ns, ip_a1["6"])


def test_icc_false_blocks_siblings_but_the_gateway_answers(host_ns, container_ns, tmp_path) -> None:
    conf = create(
        host_ns,
        tmp_path,
        "quiet",
        "--subnet",
        "10.63.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
    )
    assert conf["plugins"][0]["portIsolation"] is True
    c1, c2 = container_ns(), container_ns()
    attach(host_ns, tmp_path, "quiet", c1, "c1")
    ip2 = attach(host_ns, tmp_path, "quiet", c2, "c2")
    assert reach(c1, c2, ip2["4"]) == (False, False)
    assert reach(c2, host_ns, "10.63.0.1") == (True, True)
    assert reach(c1, host_ns, "10.63.0.1") == (True, True)


def test_icc_false_cannot_be_bypassed_through_the_gateway(host_ns, container_ns, tmp_path) -> None:
    """A container that routes to its neighbour via the gateway (layer 3, which bridge
    port isolation does not see) is dropped on an icc=false network, IPv4 and IPv6, TCP
    and UDP; the gateway still answers."""
    create(
        host_ns,
        tmp_path,
        "quiet6",
        "--subnet",
        "10.66.0.0/24",
        "--subnet",
        "fd00:66::/64",
        "--ipv6",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
    )
    c1, c2 = container_ns(), container_ns()
    attach(host_ns, tmp_path, "quiet6", c1, "c1")
    ip2 = attach(host_ns, tmp_path, "quiet6", c2, "c2")
    c1.run("ip", "route", "add", f"{ip2['4']}/32", "via", "10.66.0.1")
    c1.run("ip", "-6", "route", "add", f"{ip2['6']}/128", "via", "fd00:66::1")
    for fam in ("4", "6"):
        assert reach(c1, c2, ip2[fam]) == (False, False), f"IPv{fam} through the gateway"
        with server(c2, ip2[fam], 5353, "dns", proto="udp"):
            assert connect(c1, ip2[fam], 5353, proto="udp", timeout=1) is None, f"UDP IPv{fam}"
    assert reach(c1, host_ns, "10.66.0.1") == (True, True)


def test_internal_network_has_no_way_out(host_ns, container_ns, tmp_path) -> None:
    outside = container_ns()
    wire_outside(host_ns, outside)
    conf = create(host_ns, tmp_path, "intnet", "--internal", "--subnet", "10.64.0.0/24")
    assert conf["plugins"][0]["isDefaultGateway"] is False and conf["plugins"][0]["ipMasq"] is False
    assert conf["plugins"][3] == {"type": "isolation", "internal": True, "icc": True}
    create(host_ns, tmp_path, "pubnet", "--subnet", "10.65.0.0/24")
    inner, inner2, pub = container_ns(), container_ns(), container_ns()
    ip_in = attach(host_ns, tmp_path, "intnet", inner, "in1")
    ip_in2 = attach(host_ns, tmp_path, "intnet", inner2, "in2")
    ip_pub = attach(host_ns, tmp_path, "pubnet", pub, "pub1")

    # A normal network reaches the outside, masqueraded behind the host.
    assert default_routes(pub)
    with server(outside, "198.18.0.2", 8081, tag="out"):
        assert connect(pub, "198.18.0.2", 8081) == "out 198.18.0.1"
        # The internal one has no default route, and even with one it gets nowhere.
        assert default_routes(inner) == []
        assert connect(inner, "198.18.0.2", 8081, timeout=1.0) is None
        inner.run("ip", "route", "add", "default", "via", "10.64.0.1")
        assert not ping(inner, "198.18.0.2")
        assert connect(inner, "198.18.0.2", 8081, timeout=1.0) is None
    # Nothing routed comes in either: not from the outside, not from another network.
    outside.run("ip", "route", "add", "10.64.0.0/24", "via", "198.18.0.1")
    assert not ping(outside, ip_in["4"])
    assert reach(pub, inner, ip_in["4"]) == (False, False)
    assert reach(inner, pub, ip_pub["4"]) == (False, False)
    # Inside the network, and with the gateway, everything works.
    assert reach(inner, inner2, ip_in2["4"]) == (True, True)
    assert ping(inner, "10.64.0.1")


HOSTILE = ["@bridges", "x*", '"q";drop', "{$v}#", "net-1"]


def test_hostile_bridge_names_are_never_nft_syntax(host_ns, container_ns, tmp_path) -> None:
    """Valid interface names that mean something to nft: a set reference, a wildcard,
    quotes and statements, braces and a comment sign, one of our chain names."""
    ips = {}
    conts = {}
    for n, bridge in enumerate(HOSTILE):
        extra = ["--internal"] if n == 3 else []
        create(
            host_ns,
            tmp_path,
            f"h{n}",
            "--subnet",
            f"10.70.{n}.0/24",
            "-o",
            f"com.docker.network.bridge.name={bridge}",
            *extra,
        )
        conts[n] = (container_ns(), container_ns())
        ips[n] = (
            attach(host_ns, tmp_path, f"h{n}", conts[n][0], f"a{n}"),
            attach(host_ns, tmp_path, f"h{n}", conts[n][1], f"b{n}"),
        )
        assert host_ns.link(bridge) is not None
    for n in range(len(HOSTILE)):
        a, _b = conts[n]
        assert ping(a, ips[n][1]["4"]), f"inside {HOSTILE[n]!r}"
        other = (n + 1) % len(HOSTILE)
        assert not ping(a, ips[other][0]["4"]), f"{HOSTILE[n]!r} -> {HOSTILE[other]!r}"
        netctl(host_ns, tmp_path, "cni", "check", f"h{n}", "--netns", a.path, "--id", f"a{n}")
    table = host_ns.run("nft", "-j", "list", "table", "inet", "pycni_isolation")
    chains = sorted(x["chain"]["name"] for x in json.loads(table)["nftables"] if "chain" in x)
    index = {b: host_ns.link(b)["ifindex"] for b in HOSTILE}
    assert chains == sorted(["forward", *(f"net-{i}" for i in index.values())])


def test_rm_releases_the_bridge_and_gc_its_rules(host_ns, container_ns, tmp_path) -> None:
    one = create(host_ns, tmp_path, "one", "--subnet", "10.66.0.0/24")
    two = create(host_ns, tmp_path, "two", "--subnet", "10.67.0.0/24")
    br1, br2 = one["plugins"][0]["bridge"], two["plugins"][0]["bridge"]
    c1, c2 = container_ns(), container_ns()
    attach(host_ns, tmp_path, "one", c1, "c1")
    ip2 = attach(host_ns, tmp_path, "two", c2, "c2")
    assert not ping(c1, ip2["4"])

    def chains() -> set[str]:
        table = json.loads(host_ns.run("nft", "-j", "list", "table", "inet", "pycni_isolation"))
        return {x["chain"]["name"] for x in table["nftables"] if "chain" in x}

    idx1, idx2 = (host_ns.link(b)["ifindex"] for b in (br1, br2))
    assert {f"net-{idx1}", f"net-{idx2}"} <= chains()
    netctl(host_ns, tmp_path, "cni", "del", "one", "--netns", c1.path, "--id", "c1")
    assert f"net-{idx1}" in chains()  # DEL leaves the network's rules alone
    assert netctl(host_ns, tmp_path, "network", "rm", "one").stdout == "one\n"
    assert host_ns.link(br1) is None and f"net-{idx1}" not in chains()
    assert f"net-{idx2}" in chains()
    assert not (tmp_path / "var/lib/netctl/networks/one").exists()

    # Someone deletes the other bridge under us: GC drops its rules.
    netctl(host_ns, tmp_path, "cni", "del", "two", "--netns", c2.path, "--id", "c2")
    host_ns.run("ip", "link", "del", br2)
    netctl(host_ns, tmp_path, "cni", "gc", "two")
    assert chains() == {"forward"}


def test_rm_leaves_a_bridge_that_still_has_ports(host_ns, container_ns, tmp_path) -> None:
    conf = create(host_ns, tmp_path, "busy", "--subnet", "10.68.0.0/24")
    c = container_ns()
    attach(host_ns, tmp_path, "busy", c, "c1")  # not a netctl container record: rm allows it
    res = netctl(host_ns, tmp_path, "network", "rm", "busy")
    bridge = conf["plugins"][0]["bridge"]
    assert res.stdout == "busy\n" and f"bridge {bridge} still has ports" in res.stderr
    assert host_ns.link(bridge) is not None


# -- the isolation plugin on its own ----------------------------------------------------------


def _conf(prev: dict | None, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": "1.1.0", "name": "iso", "type": "isolation", **extra}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def _prev(bridge: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": bridge, "mac": "02:00:00:00:00:01"},
            {"name": "veth1234", "mac": "02:00:00:00:00:02"},
            {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/var/run/netns/x"},
        ],
        "ips": [{"interface": 2, "address": "10.69.0.2/24", "gateway": "10.69.0.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.69.0.1"}],
        "dns": {"nameservers": ["10.69.0.1"]},
    }


def test_isolation_plugin_verbs(run_plugin, host_ns, container_ns) -> None:
    c = container_ns()
    kw = {"in_ns": host_ns, "netns": c.path, "container_id": "c1"}
    host_ns.run("ip", "link", "add", "pytiso0", "type", "bridge")
    bad = [
        (_conf(None), 7, "isolation: missing prevResult"),
        (_conf(_prev("lo")), 7, "is a device, not a bridge"),
        (_conf(_prev("pytnone0")), 7, "bridge pytnone0 (prevResult.interfaces[0]) not found"),
        (_conf(_prev("pytiso0"), internal="yes"), 7, "'internal' must be true or false"),
        (_conf(_prev("pytiso0"), directRouting4=1), 7, "'directRouting4' must be true or false"),
        (
            _conf({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}]}),
            7,
            "not a host bridge",
        ),
    ]
    for conf, code, msg in bad:
        err = run_plugin("isolation", "ADD", conf, **kw).error
        assert err["code"] == code and msg in err["msg"], err
    assert host_ns.run("nft", "list", "ruleset") == ""  # nothing was touched

    prev = _prev("pytiso0")
    first = run_plugin("isolation", "ADD", _conf(prev), **kw)
    assert first.rc == 0 and first.json == prev  # prevResult passes through unchanged
    ruleset = host_ns.run("nft", "list", "ruleset")
    assert run_plugin("isolation", "ADD", _conf(prev), **kw).rc == 0
    assert host_ns.run("nft", "list", "ruleset") == ruleset  # idempotent
    assert run_plugin("isolation", "CHECK", _conf(prev), **kw).rc == 0
    index = host_ns.link("pytiso0")["ifindex"]
    host_ns.run("nft", "flush", "chain", "inet", "pycni_isolation", f"net-{index}")
    err = run_plugin("isolation", "CHECK", _conf(prev), **kw).error
    assert f"chain net-{index} does not hold the 3 drop rule(s)" in err["msg"]
    # internal flips the network's rules in place
    assert run_plugin("isolation", "ADD", _conf(prev, internal=True), **kw).rc == 0
    assert run_plugin("isolation", "CHECK", _conf(prev, internal=True), **kw).rc == 0
    assert run_plugin("isolation", "DEL", _conf(None), **kw).rc == 0
    assert run_plugin("isolation", "CHECK", _conf(prev, internal=True), **kw).rc == 0
    for verb in ("STATUS", "GC"):
        res = run_plugin(
            "isolation", verb, _conf(None, **{"cni.dev/valid-attachments": []}), in_ns=host_ns
        )
        assert res.rc == 0 and res.stdout == "", res.stdout
    assert f"net-{index}" in host_ns.run("nft", "list", "table", "inet", "pycni_isolation")
    host_ns.run("ip", "link", "del", "pytiso0")
    assert run_plugin("isolation", "GC", _conf(None), in_ns=host_ns).rc == 0
    assert f"net-{index}" not in host_ns.run("nft", "list", "table", "inet", "pycni_isolation")


def test_netctl_networks_guard_against_spoofing_by_default(host_ns, container_ns, tmp_path) -> None:
    """Every container of a netctl network sends only as itself: the spoof check is on
    without asking (a workload with CAP_NET_RAW cannot poison the gateway's ARP cache to
    take over a neighbour's traffic, icc=false or not)."""
    create(host_ns, tmp_path, "guarded", "--subnet", "10.63.0.0/24")
    attacker, victim = container_ns(), container_ns()
    attach(host_ns, tmp_path, "guarded", attacker, "att")
    v_ip = attach(host_ns, tmp_path, "guarded", victim, "vic")["4"]
    guarded = host_ns.run("nft", "-j", "list", "set", "bridge", "pycni_spoof", "guarded")
    elems = json.loads(guarded)["nftables"][1]["set"]["elem"]
    assert len(elems) == 2
    assert ping(host_ns, v_ip)
    v_mac = victim.link("eth0")["address"]
    a_mac = attacker.link("eth0")["address"]
    from tests.integration.test_security import scapy

    scapy(
        attacker,
        f"sendp(Ether(src='{a_mac}', dst='ff:ff:ff:ff:ff:ff') / ARP(op=2, hwsrc='{a_mac}', "
        f"psrc='{v_ip}', pdst='10.63.0.1'), iface='eth0', count=3)",
    )
    neigh = host_ns.run("ip", "neigh", "show", v_ip)
    assert v_mac in neigh and a_mac not in neigh, neigh
    assert reach(host_ns, victim, v_ip) == (True, True)


def _lan(host: Netns, outside: Netns, subnet4: str, subnet6: str) -> None:
    """The outside namespace becomes a LAN neighbour with routes to the container
    subnets via the node (as an attacker on the LAN would add)."""
    outside.run("ip", "route", "add", subnet4, "via", "198.18.0.1")
    outside.run("ip", "-6", "route", "add", subnet6, "via", "fd18::1")
    host.run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")


@pytest.mark.parametrize("mode", ["nat", "routed"])
def test_lan_reaches_only_published_ports(host_ns, container_ns, tmp_path, mode) -> None:
    """A LAN neighbour with a route to the container subnet via the node reaches a
    container only through what it published (IPv4 and IPv6), a container published on
    127.0.0.1 only not at all, while the container's own connections out still work;
    gateway_mode_ipvN=routed lets an administrator route to containers on purpose."""
    outside = container_ns()
    wire_outside(host_ns, outside, host_ip6="fd18::1/64", outside_ip6="fd18::2/64")
    opts = []
    if mode == "routed":
        opts = [
            "-o", "com.docker.network.bridge.gateway_mode_ipv4=routed",
            "-o", "com.docker.network.bridge.gateway_mode_ipv6=routed",
        ]  # fmt: skip
    create(
        host_ns, tmp_path, "lanet", "--subnet", "10.68.0.0/24", "--subnet", "fd00:68::/64",
        "--ipv6", *opts,
    )  # fmt: skip
    _lan(host_ns, outside, "10.68.0.0/24", "fd00:68::/64")
    c, local = container_ns(), container_ns()
    caps = {"portMappings": [{"hostPort": 18680, "containerPort": 8080, "protocol": "tcp"}]}
    res = netctl(
        host_ns, tmp_path, "cni", "add", "lanet", "--netns", c.path, "--id", "pub",
        "--cap-args", json.dumps(caps),
    )  # fmt: skip
    ips = {
        str(ipaddress.ip_interface(i["address"]).version): str(
            ipaddress.ip_interface(i["address"]).ip
        )
        for i in json.loads(res.stdout)["ips"]
    }
    caps_local = {
        "portMappings": [
            {"hostPort": 18681, "containerPort": 8080, "protocol": "tcp", "hostIP": "127.0.0.1"}
        ]
    }
    res = netctl(
        host_ns, tmp_path, "cni", "add", "lanet", "--netns", local.path, "--id", "loc",
        "--cap-args", json.dumps(caps_local),
    )  # fmt: skip
    local_ip = next(
        str(ipaddress.ip_interface(i["address"]).ip)
        for i in json.loads(res.stdout)["ips"]
        if ":" not in i["address"]
    )
    direct = mode == "routed"
    with server(c, ips["4"], 8080, "pub"), server(c, ips["4"], 8000, "unpub"):
        assert connect(outside, "198.18.0.1", 18680) == "pub 198.18.0.2"  # published
        got = connect(outside, ips["4"], 8000, timeout=1)
        assert (got == "unpub 198.18.0.2") is direct, got  # never published
    # IPv6 works through the node for what is published (ND warmed up first)
    assert ping(c, "fd00:68::1") and ping(outside, "fd18::1")
    with server(c, ips["6"], 8080, "pub6"), server(c, ips["6"], 8000, "unpub6"):
        assert connect(outside, "fd18::1", 18680, timeout=3) == "pub6 fd18::2"
        got = connect(outside, ips["6"], 8000, timeout=2)
        assert (got == "unpub6 fd18::2") is direct, got
    with server(local, local_ip, 8080, "local"):
        got = connect(outside, local_ip, 8080, timeout=1)
        assert (got is not None) is direct, got  # published on 127.0.0.1 only
        assert (connect(host_ns, "127.0.0.1", 18681) or "").startswith("local ")
    # the container's own connections out (and their replies) are not affected
    with server(outside, "198.18.0.2", 9000, "lan"):
        assert connect(c, "198.18.0.2", 9000) is not None
    with server(outside, "fd18::2", 9000, "lan6"):
        assert connect(c, "fd18::2", 9000) is not None
